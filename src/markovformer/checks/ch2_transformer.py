"""Chapter 2 (the transformer, Attention with Markov): the model's size, tying against no tying
(AwM-1, AwM-2, AwM-3), the (p, q) grid (AwM-4) and the length of the unigram plateau."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import analysis
from ..claims import Claim, claims_of
from ..experiments import awm
from ..experiments.base import get
from ..markov import BinaryChain
from ..model import MarkovTransformer, TransformerConfig
from ..train import TrainConfig, train

CH = 2
DATA = Path("book/data")
SWITCHING = BinaryChain(0.5, 0.8)


@claims_of(CH)
def model_size(root: Path | None = None) -> list[Claim]:
    """N d + 12 d^2 + d + 1 parameters for the tied model (d = 8, N = 1024)."""
    d, N = 8, 1024
    n = MarkovTransformer(TransformerConfig(d=d, seq_len=N, tied=True)).num_parameters_per_run()
    return [Claim(CH, "parameters of the tied model vs N d + 12 d^2 + d + 1", n,
                  N * d + 12 * d * d + d + 1, source="[derived]")]  # fmt: skip


def quick_runs(
    seeds=(0, 1, 2), steps: int = 400, seq_len: int = 128, lr: float = 2e-3, chain=SWITCHING
) -> dict[str, np.ndarray]:
    """The chapter's live experiment: tied and untied exact-loss curves, by default at (0.5, 0.8),
    N = 128, 400 steps, the paper's optimiser."""
    tc = TrainConfig(steps=steps, batch_size=16, lr=lr)
    out = {}
    for tied in (True, False):
        res = train(TransformerConfig(d=8, seq_len=seq_len, tied=tied), tc, list(seeds), chain)
        out["tied" if tied else "untied"] = res.metrics["exact_loss"]
    return out


@claims_of(CH)
def quick(root: Path | None = None, curves: dict | None = None) -> list[Claim]:
    """Live, at N = 128 and 400 steps: tied runs on the unigram plateau, untied at the rate."""
    curves = quick_runs() if curves is None else curves
    n = curves["tied"].shape[0]
    tied_at_uni = np.abs(analysis.final_loss(curves["tied"]) - SWITCHING.unigram_loss) < 0.005
    untied_ok = analysis.succeeded(curves["untied"], SWITCHING.entropy_rate)
    seeds = f"seeds 0-{n - 1}, N = 128, 400 steps"
    return [
        Claim(CH, "live: tied runs within 0.005 of the unigram loss", tied_at_uni.sum(), n,
              seeds=seeds, source="[paper]"),
        Claim(CH, "live: untied runs within 0.005 of the entropy rate", untied_ok.sum(), n,
              seeds=seeds, source="[paper]"),
    ]  # fmt: skip


def tying(root: Path = DATA) -> dict:
    """AwM-1 and AwM-2: the stored runs and their summaries."""
    out = {}
    for exp_id in ("awm-1", "awm-2"):
        results, jobs = get(exp_id).load(root)
        out[exp_id] = {"results": results, "jobs": jobs,
                       "summary": awm.tying_summary(results, jobs),
                       "panel": awm.tying_panel(results, jobs)}  # fmt: skip
    return out


@claims_of(CH)
def tying_claims(root: Path = DATA, runs: dict | None = None) -> list[Claim]:
    """At the paper's settings: both arms learn the sticky chain; on the switching chain the untied
    model learns at once and the tied one only after a long unigram plateau."""
    runs = tying(root) if runs is None else runs
    s1, s2 = runs["awm-1"]["summary"], runs["awm-2"]["summary"]
    n = s1["tied"]["runs"]
    seeds = f"seeds 0-{n - 1}, paper settings"
    curves = runs["awm-2"]["panel"]["curves"]
    esc = {arm: [analysis.escape_step(c, SWITCHING.unigram_loss, SWITCHING.entropy_rate)
                 for c in curves[arm]] for arm in ("tied", "untied")}  # fmt: skip
    first_tied = min((s for s in esc["tied"] if s is not None), default=np.inf)
    return [
        Claim(CH, "(0.2, 0.3): tied runs reaching the entropy rate", s1["tied"]["reached_bigram"],
              n, seeds=seeds, source="[paper]"),
        Claim(CH, "(0.2, 0.3): untied runs reaching the entropy rate",
              s1["untied"]["reached_bigram"], n, seeds=seeds, source="[paper]"),
        Claim(CH, "(0.5, 0.8): untied runs reaching the entropy rate",
              s2["untied"]["reached_bigram"], n, seeds=seeds, source="[paper]"),
        Claim(CH, "(0.5, 0.8): first tied escape / last untied escape (steps)",
              first_tied / max(esc["untied"]), (5.0, None), digits=1, seeds=seeds),
    ]  # fmt: skip


def probes(root: Path = DATA) -> dict:
    """AwM-3: the mean predicted Pr(1 | x_n) after position 100, per chain, arm and step."""
    return get("awm-3").summary(*get("awm-3").load(root))


@claims_of(CH)
def probe_claims(root: Path = DATA, summary: dict | None = None) -> list[Claim]:
    """On the plateau the tied model predicts pi_1 after either bit; a model that learned the
    chain predicts p after a 0 and 1 - q after a 1."""
    s = probes(root) if summary is None else summary
    plateau = s["(p, q) = (0.5, 0.8), step 500 tied"]
    out = [
        Claim(CH, f"tied (0.5, 0.8), step 500: Pr(1 | x_n = {bit}) vs pi_1",
              plateau[f"Pr(1|x_n={bit}), positions > 100"], plateau["pi_1"], tol=0.02,
              seeds="3 seeds", source="[paper]")
        for bit in (0, 1)
    ]  # fmt: skip
    for name in ("(p, q) = (0.5, 0.8), step 500 untied", "(p, q) = (0.2, 0.3), step 1000 tied"):
        v = s[name]
        short = name.replace("(p, q) = ", "")
        out += [
            Claim(CH, f"{short}: Pr(1 | 0) vs p", v["Pr(1|x_n=0), positions > 100"], v["p"],
                  tol=0.02, seeds="3 seeds", source="[paper]"),
            Claim(CH, f"{short}: Pr(1 | 1) vs 1 - q", v["Pr(1|x_n=1), positions > 100"],
                  v["1-q"], tol=0.02, seeds="3 seeds", source="[paper]"),
        ]  # fmt: skip
    return out


GRID_ID = "awm-4-reduced"  # the grid the chapter shows: N = 128, 3 seeds per cell


def grid_stuck(root: Path = DATA, exp_id: str = GRID_ID) -> dict:
    """AwM-4: per arm, the number of grid cells whose final loss (mean over seeds) keeps more
    than half of the unigram-bigram gap, among switching (p + q > 1) and sticky (p + q < 1)
    cells."""
    maps = awm.grid_maps(*get(exp_id).load(root))
    P, Q = np.meshgrid(awm.GRID, awm.GRID)
    regions = {"switching": P + Q > 1.0001, "sticky": P + Q < 0.9999,
               "next to the diagonal (p + q = 1.1)": np.abs(P + Q - 1.1) < 1e-6,
               "strongly switching (p + q >= 1.7)": P + Q > 1.6999}  # fmt: skip
    out = {arm: {name: int(np.sum(maps[arm][r] > 0.5)) for name, r in regions.items()}
           for arm in maps}  # fmt: skip
    out["cells"] = {name: int(r.sum()) for name, r in regions.items()}
    out["maps"] = maps
    return out


@claims_of(CH)
def grid_claims(root: Path = DATA, stuck: dict | None = None) -> list[Claim]:
    """The tied model's failures are confined to p + q > 1, in a band along the diagonal (every
    cell with p + q = 1.1 stuck, none with p + q >= 1.7); the untied model fails nowhere."""
    stuck = grid_stuck(root) if stuck is None else stuck
    seeds = "3 seeds per cell, N = 128"
    out = [
        Claim(CH, "untied: grid cells stuck (gap fraction > 0.5)",
              stuck["untied"]["switching"] + stuck["untied"]["sticky"], 0, seeds=seeds,
              source="[paper]"),
        Claim(CH, "tied: stuck cells with p + q < 1", stuck["tied"]["sticky"], 0, seeds=seeds,
              source="[paper]"),
        Claim(CH, "tied: stuck cells with p + q > 1", stuck["tied"]["switching"], (1, None),
              seeds=seeds, source="[paper]"),
    ]  # fmt: skip
    for name in ("next to the diagonal (p + q = 1.1)", "strongly switching (p + q >= 1.7)"):
        n = stuck["cells"][name]
        out.append(Claim(CH, f"tied: stuck cells {name}, of {n}", stuck["tied"][name],
                         n if "diagonal" in name else 0, seeds=seeds))  # fmt: skip
    return out


def grid_disagreement(paper: dict, reduced: dict, arm: str = "tied") -> dict:
    """Cells of the (p, q) grid that are stuck (gap fraction > 0.5) at one scale and not at the
    other: ``cells`` lists (p, q, fraction at N = 1024, fraction at N = 128)."""
    a, b = paper[arm], reduced[arm]
    cells = []
    for i, q in enumerate(awm.GRID):
        for j, p in enumerate(awm.GRID):
            if np.isnan(a[i, j]) or np.isnan(b[i, j]):
                continue
            if (a[i, j] > 0.5) != (b[i, j] > 0.5):
                cells.append((round(float(p), 1), round(float(q), 1), round(float(a[i, j]), 2),
                              round(float(b[i, j]), 2)))  # fmt: skip
    return {"cells": cells}


@claims_of(CH)
def paper_grid_claims(root: Path = DATA, stuck: dict | None = None) -> list[Claim]:
    """AwM-4 at the paper's scale (N = 1024, one run per cell): the failure region of the
    paper (tied model, p + q > 1 only; untied nowhere), and the band along the diagonal that
    the reduced grid shows: more than half of the cells with p + q = 1.1 stuck (one run per cell
    either escapes or not; threshold ours), none with p + q >= 1.7."""
    stuck = grid_stuck(root, exp_id="awm-4") if stuck is None else stuck
    seeds = "1 run per cell (seed 0), N = 1024"
    near, far = "next to the diagonal (p + q = 1.1)", "strongly switching (p + q >= 1.7)"
    band = [
        Claim(CH, f"N = 1024, tied: stuck cells {near}, of {stuck['cells'][near]}",
              stuck["tied"][near], (stuck["cells"][near] // 2 + 1, None), seeds=seeds, tuned=True),
        Claim(CH, f"N = 1024, tied: stuck cells {far}, of {stuck['cells'][far]}",
              stuck["tied"][far], 0, seeds=seeds),
    ]  # fmt: skip
    return band + [
        Claim(CH, "N = 1024, untied: grid cells stuck (gap fraction > 0.5)",
              stuck["untied"]["switching"] + stuck["untied"]["sticky"], 0, seeds=seeds,
              source="[paper]"),
        Claim(CH, "N = 1024, tied: stuck cells with p + q < 1", stuck["tied"]["sticky"], 0,
              seeds=seeds, source="[paper]"),
        Claim(CH, "N = 1024, tied: stuck cells with p + q > 1", stuck["tied"]["switching"],
              (1, None), seeds=seeds, source="[paper]"),
    ]  # fmt: skip


def plateau(root: Path = DATA) -> dict:
    """awm-plateau: the stored curves, the summary and the Kaplan-Meier estimate."""
    results, jobs = get("awm-plateau").load(root)
    curves = np.stack([results[0][s]["exact_loss"] for s in sorted(results[0])])
    return {
        "results": results,
        "jobs": jobs,
        "summary": awm.plateau_summary(results, jobs),
        "survival": analysis.plateau_survival(
            curves, SWITCHING.unigram_loss, SWITCHING.entropy_rate
        ),
    }


@claims_of(CH)
def plateau_claims(root: Path = DATA, pl: dict | None = None) -> list[Claim]:
    """The tied model's unigram plateau at the paper's settings lasts hundreds of steps; it is a
    plateau, not a trap: by step 1000 most runs have escaped (censored Kaplan-Meier median)."""
    pl = plateau(root) if pl is None else pl
    km = pl["survival"]
    seeds = f"seeds 0-{km.runs - 1}, paper settings"
    return [
        Claim(CH, "tied runs still on the plateau at step 300", km.at(300), (0.75, None),
              digits=2, seeds=seeds, tuned=True),
        Claim(CH, "Kaplan-Meier median escape step (censored at 1000)",
              km.median if km.median is not None else np.inf, (300, None), digits=0,
              seeds=seeds),
        Claim(CH, "tied runs escaped by step 1000 (fraction)", 1 - km.at(1000), (0.5, None),
              digits=2, seeds=seeds),
    ]  # fmt: skip
