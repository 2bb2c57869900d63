"""Tests of results on disk, batched resumable execution and the command line."""

import json
import os

import numpy as np
import pytest

from markovformer import artifacts, cli, experiments
from markovformer.artifacts import ArtifactError, ArtifactStore, atomic_write, load_or_run
from markovformer.experiments import base as exp_base
from markovformer.experiments.awm import binary_spec

CONFIG = {"model": {"d": 8}, "chain": {"p": 0.5, "q": 0.8}}


def record(seed: int) -> dict:
    return {"exact_loss": np.linspace(0.7, 0.6, 5) + seed, "failed_step": np.asarray(-1)}


def test_save_and_load_roundtrip(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG, slug="p0.5 q0.8")
    assert store.dir.name.startswith("p0.5_q0.8-") and store.hash in store.dir.name
    store.save(3, record(3), {"device": "cpu"})
    store.save(1, record(1))
    assert store.seeds() == [1, 3]
    loaded = store.load(3)
    np.testing.assert_array_equal(loaded["exact_loss"], record(3)["exact_loss"])
    assert store.info(3)["device"] == "cpu" and "torch" in store.info(3)["versions"]
    assert json.loads((store.dir / "config.json").read_text()) == CONFIG
    assert set(json.loads((store.dir / "versions.json").read_text())) >= {
        "python",
        "torch",
        "numpy",
    }
    assert store.verify() == []
    assert not [p for p in os.listdir(store.dir) if p.endswith(".tmp")]


def test_config_hash_is_order_independent():
    a = artifacts.config_hash({"a": 1, "b": [1, 2]})
    b = artifacts.config_hash({"b": [1, 2], "a": 1})
    assert a == b and len(a) == 12
    assert artifacts.config_hash({"a": 2, "b": [1, 2]}) != a


def test_corrupt_and_missing_files_are_refused(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    path = store.save(0, record(0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt: its sha256 does not match"):
        store.load(0)
    assert store.verify() == [path.name]
    with pytest.raises(ArtifactError, match="no stored result for seed 7"):
        store.load(7)
    path.unlink()
    with pytest.raises(ArtifactError, match="listed in the manifest but missing"):
        store.load(0)


def test_foreign_config_is_refused(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    store.save(0, record(0))
    (store.dir / "config.json").write_text(json.dumps({"other": 1}))
    with pytest.raises(ArtifactError, match="holds another configuration"):
        store.save(1, record(1))


def test_bad_records_and_names(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    with pytest.raises(ValueError, match="numeric arrays, got object arrays for \\['x'\\]"):
        store.save(0, {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        store.save(-1, record(0))
    with pytest.raises(ValueError, match="experiment must be a non-empty name"):
        ArtifactStore(tmp_path, "a/b", CONFIG)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_load_or_run_computes_only_missing_seeds_and_resumes(tmp_path):
    store = ArtifactStore(tmp_path, "exp", CONFIG)
    calls = []

    def run(chunk):
        calls.append(list(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted in the second chunk
        return [(record(s), {"n": len(chunk)}) for s in chunk]

    with pytest.raises(KeyboardInterrupt):
        load_or_run(store, [0, 1, 2, 3], run, chunk_size=2)
    assert store.seeds() == [0, 1]  # the finished chunk was kept
    calls.clear()

    def resume(chunk):
        calls.append(list(chunk))
        return [(record(s), {}) for s in chunk]

    out = load_or_run(store, [0, 1, 2, 3], resume)
    assert calls == [[2, 3]]
    assert sorted(out) == [0, 1, 2, 3]
    np.testing.assert_array_equal(out[2]["exact_loss"], record(2)["exact_loss"])


def test_run_specs_batches_chains_and_reuses_stored_runs(tmp_path, monkeypatch):
    calls = []
    real_train = exp_base.train

    def counting_train(*args, **kwargs):
        calls.append(args[2])  # the seeds
        return real_train(*args, **kwargs)

    monkeypatch.setattr(exp_base, "train", counting_train)
    specs = [binary_spec(p, q, steps=3, seq_len=32) for p, q in ((0.2, 0.3), (0.5, 0.8))]
    jobs = [(specs[0], [0, 1]), (specs[1], [0])]
    res = exp_base.run_specs(jobs, tmp_path)
    assert calls == [[0, 1, 0]]  # one batched program for two chains
    assert sorted(res[0]) == [0, 1] and sorted(res[1]) == [0]
    assert res[0][0]["exact_loss"].shape == (3,) and res[0][0]["exact_loss"].dtype == np.float32
    # the same runs are found again; asking for one more seed computes only that one
    calls.clear()
    exp_base.run_specs(jobs, tmp_path)
    assert calls == []
    exp_base.run_specs([(specs[1], [0, 5])], tmp_path)
    assert calls == [[5, 5 + 2**31]]  # a lone run trains beside a phantom (batched bits)
    info = specs[1].store(tmp_path).info(5)
    assert info["device"] == "cpu" and info["runs_in_batch"] == 1
    with pytest.raises(ArtifactError, match="no stored results for seeds \\[9\\]"):
        exp_base.load_specs([(specs[0], [9])], tmp_path)


def test_spec_identity_is_stable():
    """Committed artifacts are found by this hash: a change here orphans book/data."""
    spec = binary_spec(0.5, 0.8, tied=True)
    assert spec.store("x").hash == artifacts.config_hash(spec.identity())
    assert spec.identity()["model"]["kernel_options"] == ()
    assert spec.slug() == "binary-p0.5-q0.8_tied_L1_d8_N1024_T1000_gaussian"


def test_cli_list_and_errors(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for e in experiments.all_experiments():
        assert e.id in out
    with pytest.raises(SystemExit) as err:
        cli.main(["reproduce", "no-such-figure"])
    assert err.value.code == 2
    assert "unknown figure id(s) no-such-figure; known ids:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "awm-1", "--device", "tpu"])
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "awm-1", "--seeds", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_cli_reproduce_then_report(tmp_path, capsys):
    args = ["awm-1", "--steps", "3", "--seeds", "1", "--out", str(tmp_path)]
    assert cli.main(["report", *args]) == 1
    assert "no stored results" in capsys.readouterr().err
    assert cli.main(["reproduce", *args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "figures" / "awm-1.png").stat().st_size > 1000
    assert '"reached_bigram"' in out
    assert cli.main(["report", *args]) == 0
    summary = capsys.readouterr().out
    assert '"tied"' in summary and '"untied"' in summary


def test_cli_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in ("/proc/x", str(blocker / "runs")):
        assert cli.main(["reproduce", "awm-1", "--steps", "2", "--out", out, "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"markovformer: error: cannot write results to '{out}': ")
        assert "\n" not in err and "Traceback" not in err


def test_cli_claims_reports_and_fails_on_a_failed_claim(tmp_path, capsys, monkeypatch):
    from markovformer import claims

    fake = [
        claims.Claim(1, "a derived value", 0.61901, 0.619, tol=0.001, source="[derived]"),
        claims.Claim(5, "runs that escaped", 3, (4, None), seeds="0-4"),
    ]
    monkeypatch.setattr(claims, "collect", lambda root, chapters=None: fake)
    assert cli.main(["claims", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "a derived value" in out and "0.6190" in out and "pass" in out
    assert ">= 4" in out and "FAIL" in out
    assert "2 claims: 1 pass, 1 fail" in out
    assert cli.main(["claims", "--out", str(tmp_path / "missing")]) == 1
    assert "no results directory" in capsys.readouterr().err
