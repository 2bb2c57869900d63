"""Chapter 9 (local to global, in context): what decides the in-context plateau. Escape from the
plateau as censored data, arm against arm (init scale, the prior, a planted previous-token head),
the levels of the doubly stochastic prior and the distance of its add-alpha reference from the
Bayes predictor. Every threshold is ours, chosen from the runs; the chapter states the margin
the runs have over each."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..claims import Claim, claims_of
from ..experiments import plateau

CH = 9
DATA = Path("book/data")
SEEDS = f"seeds 0-{plateau.PLATEAU_SEEDS - 1} per arm"
MAPS_STEP = 150  # the step of the attention maps of the chapter (planted against standard)

#: thresholds (ours, set from the runs; the chapter states the margin over each)
P_STRONG = 0.01  # a log-rank p-value this small counts as a difference
P_NONE = 0.05  # a p-value above this: no difference shown at ten seeds


@functools.lru_cache(maxsize=2)
def _stored(root: str) -> tuple[dict, dict]:
    res, jobs = plateau.load(root)
    table = plateau.escape_table(res, jobs)
    tests = plateau.logrank_table(res, jobs, plateau.COMPARISONS["all"])
    return table, tests


def _get(root, table, tests):
    if table is None or tests is None:
        table, tests = _stored(str(root))
    return table, tests


def _median(row: dict) -> float:
    return np.inf if row["median"] is None else float(row["median"])


def _p(tests, a, b) -> float:
    return tests[(a, b)].pvalue


@claims_of(CH)
def scale_claims(root: Path = DATA, table=None, tests=None) -> list[Claim]:
    """Init scale: placeholder until the runs are in."""
    table, tests = _get(root, table, tests)
    return [
        Claim(CH, "one layer: runs escaped by the last step", table["one layer"]["escaped"], 0,
              seeds=SEEDS),
    ]  # fmt: skip


def levels_claims(root: Path = DATA, levels=None) -> list[Claim]:
    """Placeholder."""
    return []


def ds_gap_claims(root: Path = DATA, gap=None) -> list[Claim]:
    """Placeholder."""
    return []


def prior_claims(root: Path = DATA, table=None, tests=None) -> list[Claim]:
    """Placeholder."""
    return []


def circuit_claims(root: Path = DATA, table=None, tests=None) -> list[Claim]:
    """Placeholder."""
    return []
