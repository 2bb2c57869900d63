"""The experiment registry, and the artifacts the chapters load from book/data."""

import json
from pathlib import Path

import pytest

from markovformer import experiments
from markovformer.artifacts import canonical_json

DATA = Path(__file__).resolve().parents[1] / "book" / "data"

#: ids whose runs are committed under book/data (the chapters load them)
COMMITTED = [
    "awm-1", "awm-2", "awm-3", "awm-4-reduced", "awm-plateau", "awm-5", "awm-6",
    "l2g-a1", "l2g-a2", "l2g-t", "l2g-4", "l2g-schedule", "l2g-escape", "l2g-scale", "l2g-grid", "l2g-inits",
    "gdd-qk", "gdd-standins", "gdd-landscape", "gdd-bridge",
]  # fmt: skip


def test_registry_is_consistent():
    exps = experiments.all_experiments()
    ids = [e.id for e in exps]
    assert len(ids) == len(set(ids))
    for e in exps:
        assert e.description and e.chapter, e.id
        jobs = e.jobs(None, None)
        for spec, seeds in jobs:
            assert seeds, e.id
            json.loads(canonical_json(spec.identity()))  # JSON-able
        if jobs:
            assert max(len(s) for _, s in jobs) == e.default_seeds or e.id in (
                "l2g-t",
                "l2g-schedule",
            ), e.id
    with pytest.raises(ValueError, match="unknown experiment id 'nope'; known ids"):
        experiments.get("nope")


def test_steps_and_seeds_options_change_the_jobs():
    jobs = experiments.get("awm-1").jobs(2, 50)
    assert [len(s) for _, s in jobs] == [2, 2]
    assert all(sp.train.steps == 50 for sp, _ in jobs)
    assert all(max(sp.train.probe_steps) <= 50 for sp, _ in jobs)
    with pytest.raises(ValueError, match="number of seeds must be >= 1"):
        experiments.get("awm-1").jobs(0, None)


@pytest.mark.parametrize("exp_id", COMMITTED)
def test_committed_artifacts_load_and_verify(exp_id):
    """Every committed run is found under the current configuration hash and passes its sha256."""
    exp = experiments.get(exp_id)
    results, jobs = exp.load(DATA)
    for (spec, seeds), res in zip(jobs, results, strict=True):
        assert sorted(res) == sorted(seeds)
        assert spec.store(DATA).verify() == []
    summary = exp.summary(results, jobs)
    assert summary
    json.dumps(summary)  # `markovformer report` prints it as JSON
