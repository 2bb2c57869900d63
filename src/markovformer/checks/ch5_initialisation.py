"""Chapter 5 (initialisation, L2G): where the named inits start, L2G-4, the escape from the
plateau as censored data, the end of the schedule, the init scale, the (p, q) grid, the authors'
init, depth (AwM-5) and five states (AwM-6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import analysis
from .. import canonical as C
from ..claims import Claim, claims_of
from ..experiments import guide
from ..experiments.base import get, stack
from ..init import canonical_coordinates, initialise
from ..markov import BinaryChain
from ..model import MarkovTransformer, TransformerConfig
from ..train import TrainConfig, train

CH = 5
DATA = Path("book/data")
CHAIN = BinaryChain(0.5, 0.8)
RATE, UNI = CHAIN.entropy_rate, CHAIN.unigram_loss


def init_points(seeds=(0, 1, 2)) -> dict[str, list[tuple[float, float]]]:
    """Projected (e, w) of the four named inits on the paper's model (d = 8, N = 1024)."""
    cfg, points = TransformerConfig(d=8, seq_len=1024), {}
    for name in ("gaussian", "rank_one", "guideline", "authors_good"):
        model = MarkovTransformer(cfg, len(seeds))
        initialise(model, list(seeds), name, **({"e": 0.8, "w": 0.6} if name == "rank_one" else {}))
        for r in range(len(seeds)):
            cc = canonical_coordinates(model.run_state(r))
            points.setdefault(name, []).append((cc["e"], cc["w"]))
    return points


@claims_of(CH)
def starts(root: Path | None = None, points: dict | None = None) -> list[Claim]:
    """The guideline and the authors' constant start in the global basin of a switching chain;
    the standard init starts next to the origin, in the unigram basin."""
    points = init_points() if points is None else points
    basin = {k: sum(C.basin_label(e, w, switching=True) for e, w in v) for k, v in points.items()}
    e_g = [e for e, _ in points["gaussian"]]
    n = len(e_g)
    return [
        Claim(CH, "guideline: e", points["guideline"][0][0], 1.0, tol=1e-6, source="[derived]"),
        Claim(CH, "guideline: w", points["guideline"][0][1], -1.0, tol=1e-6, source="[derived]"),
        Claim(CH, "authors' init: e vs sqrt 2", points["authors_good"][0][0], math.sqrt(2),
              tol=1e-6, source="[derived]"),
        Claim(CH, "authors' init: w vs -8", points["authors_good"][0][1], -8.0, tol=1e-5,
              source="[derived]"),
        Claim(CH, "rank_one at (0.8, 0.6): w", points["rank_one"][0][1], 0.6, tol=1e-6,
              source="[derived]"),
        Claim(CH, "standard init: largest e over 3 seeds", max(e_g), (None, 0.15), digits=3,
              seeds="seeds 0-2"),
        Claim(CH, "starts in the global basin (p + q > 1): guideline + authors'",
              basin["guideline"] + basin["authors_good"], 2 * n, seeds="seeds 0-2"),
        Claim(CH, "starts in the global basin (p + q > 1): standard", basin["gaussian"], 0,
              seeds="seeds 0-2", source="[paper]"),
    ]  # fmt: skip


def l2g4(root: Path = DATA) -> dict[str, np.ndarray]:
    """L2G-4 curves by init name."""
    res, jobs = get("l2g-4").load(root)
    return {sp.init: stack(r, "exact_loss") for r, (sp, _) in zip(res, jobs, strict=True)}


@claims_of(CH)
def l2g4_claims(root: Path = DATA, arms: dict | None = None) -> list[Claim]:
    """L2G-4 at the paper's settings: the guideline reaches the entropy rate within 100 steps;
    the standard runs are all on the unigram plateau at step 300, then escape late."""
    arms = l2g4(root) if arms is None else arms
    g, s = arms["guideline"], arms["gaussian"]
    reach = analysis.first_within(g, RATE)
    at300 = np.abs(s[:, 280:300].mean(1) - UNI)
    km = analysis.plateau_survival(s, UNI, RATE)
    seeds = f"seeds 0-{len(g) - 1}, paper settings"
    return [
        Claim(CH, "guideline runs within 0.005 of the entropy rate at step 1000",
              analysis.succeeded(g, RATE).sum(), len(g), seeds=seeds, source="[paper]"),
        Claim(CH, "guideline: last run to get within 0.005 of the rate (step)",
              max(r if r is not None else np.inf for r in reach), (None, 100), seeds=seeds),
        Claim(CH, "standard: largest |loss - unigram loss| over steps 281-300", at300.max(),
              (None, 0.003), digits=4, seeds=seeds, source="[paper]"),
        Claim(CH, "standard: Kaplan-Meier median escape step",
              km.median if km.median is not None else np.inf, (300, None), seeds=seeds),
    ]  # fmt: skip


def quick_runs(seeds=tuple(range(8)), steps: int = 300, seq_len: int = 64) -> dict:
    """The chapter's live L2G-4: N = 64, 300 steps, standard vs guideline, 8 seeds."""
    out = {}
    for init in ("gaussian", "guideline"):
        res = train(TransformerConfig(d=8, seq_len=seq_len), TrainConfig(steps=steps, batch_size=16),
                    list(seeds), CHAIN, init=init)  # fmt: skip
        out[init] = res.metrics["exact_loss"]
    return out


@claims_of(CH)
def quick(root: Path | None = None, curves: dict | None = None) -> list[Claim]:
    """Live: after 300 steps at N = 64, every guideline run is at the entropy rate and every
    standard run still at the unigram loss."""
    curves = quick_runs() if curves is None else curves
    end = {k: v[:, -20:].mean(1) for k, v in curves.items()}
    n = len(end["guideline"])
    seeds = f"seeds 0-{n - 1}, N = 64, 300 steps"
    return [
        Claim(CH, "live: guideline runs within 0.005 of the entropy rate",
              (np.abs(end["guideline"] - RATE) <= 0.005).sum(), n, seeds=seeds),
        Claim(CH, "live: standard runs within 0.005 of the unigram loss",
              (np.abs(end["gaussian"] - UNI) <= 0.005).sum(), n, seeds=seeds, source="[paper]"),
    ]  # fmt: skip


def escape(root: Path = DATA) -> dict:
    """l2g-escape (N = 128, 40 seeds): summary and Kaplan-Meier estimate."""
    res, jobs = get("l2g-escape").load(root)
    curves = stack(res[0], "exact_loss")
    return {"curves": curves, "summary": guide.escape_summary(res, jobs),
            "survival": analysis.plateau_survival(curves, UNI, RATE)}  # fmt: skip


@claims_of(CH)
def escape_claims(root: Path = DATA, esc: dict | None = None) -> list[Claim]:
    """At N = 128 no run escapes before step 300; the Kaplan-Meier median escape step lies in the
    second half of training, and a quarter or more of the runs are censored at step 1000."""
    esc = escape(root) if esc is None else esc
    km = esc["survival"]
    seeds = f"seeds 0-{km.runs - 1}, N = 128"
    return [
        Claim(CH, "N = 128: runs still on the plateau at step 300 (fraction)", km.at(300), 1.0,
              digits=2, seeds=seeds),
        Claim(CH, "N = 128: Kaplan-Meier median escape step",
              km.median if km.median is not None else np.inf, (500, None), seeds=seeds),
        Claim(CH, "N = 128: runs not escaped by step 1000 (fraction)", km.at(1000), (0.1, None),
              digits=2, seeds=seeds),
    ]  # fmt: skip


def schedule(root: Path = DATA) -> dict:
    """l2g-schedule: the table of guide.schedule_table."""
    return guide.schedule_table(*get("l2g-schedule").load(root))


@claims_of(CH)
def schedule_claims(root: Path = DATA, table: dict | None = None) -> list[Claim]:
    """Ending the schedule at 0.1 x instead of 0.2 x the peak slows the escape (fewer runs out by
    step 1000, in both settings); the difference is not significant at these sample sizes."""
    table = schedule(root) if table is None else table
    out = []
    for row in table.values():
        a, b = row["authors"]["survival"], row["tenth"]["survival"]
        seeds = f"seeds 0-{row['seeds'] - 1} per end, N = {row['N']}"
        out += [
            Claim(CH, f"N = {row['N']}: escaped by step 1000, 0.2 x minus 0.1 x peak (runs)",
                  a.escaped - b.escaped, (0, None), seeds=seeds),
            Claim(CH, f"N = {row['N']}: log-rank p-value, 0.2 x vs 0.1 x peak",
                  row["log-rank p"], (0.05, None), digits=2, seeds=seeds),
        ]  # fmt: skip
    return out
