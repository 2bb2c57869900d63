"""The stored data that chapters hand to their live figures, loaded here the way the chapters
load it (from the committed artifacts in book/data), so that the browser test can compare a live
figure with what the package computes from the same artifacts."""

from __future__ import annotations

import functools
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "book" / "data"


@functools.cache
def grid() -> tuple[dict, list[float]]:
    """Chapter 2: the mean exact-loss curve per cell of the AwM-4 grid it shows, and the grid."""
    from markovformer import experiments
    from markovformer.checks.ch2_transformer import GRID_ID

    results, jobs = experiments.get(GRID_ID).load(DATA)
    return experiments.awm.grid_curves(results, jobs), list(experiments.awm.GRID)


@functools.cache
def runs() -> list[dict]:
    """Chapter 4: the rows of the L2G-T trajectory table."""
    from markovformer import experiments
    from markovformer.experiments import l2g

    results, jobs = experiments.get("l2g-t").load(DATA)
    return l2g.trajectory_table(results, jobs)


@functools.cache
def measured() -> dict:
    """Chapter 5: full-transformer success fractions against the init scale, by regime."""
    from markovformer import experiments
    from markovformer.experiments import guide

    results, jobs = experiments.get("l2g-scale").load(DATA)
    table = guide.scale_table(results, jobs, n_canonical=100)
    return {
        ("switching" if p + q > 1 else "sticky"): {"scale": row["scale"], "success": row["success"]}
        for (p, q), row in table.items()
    }


@functools.cache
def icl_runs() -> list[dict]:
    """Chapter 8: the step explorer data of every two-layer ICL-MC run."""
    from markovformer import experiments
    from markovformer.experiments import icl

    results, jobs = experiments.get("icl-mc").load(DATA)
    res = next(r for r, (sp, _) in zip(results, jobs, strict=True) if sp.model.depth == 2)
    return [icl.step_explorer_data(results, jobs, depth=2, seed=s) for s in sorted(res)]


@functools.cache
def plateau_runs() -> list[dict]:
    """Chapter 9: the explorer data of every (arm, seed) its live figure offers."""
    from markovformer.experiments import plateau

    results, jobs = plateau.load(DATA)
    return plateau.explorer_runs(results, jobs)
