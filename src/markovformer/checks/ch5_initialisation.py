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
from ..markov import BinaryChain, symmetric_chain
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
              (None, 0.003), digits=4, seeds=seeds, tuned=True),
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


def scale(root: Path = DATA) -> dict:
    """l2g-scale: ``guide.scale_table`` and the curves at s = 1."""
    res, jobs = get("l2g-scale").load(root)
    big = {(sp.chain["p"], sp.chain["q"]): stack(r, "exact_loss")
           for r, (sp, _) in zip(res, jobs, strict=True)
           if dict(sp.init_kwargs).get("std") == 1.0}  # fmt: skip
    return {"table": guide.scale_table(res, jobs), "big": big}


@claims_of(CH)
def scale_claims(root: Path = DATA, sc: dict | None = None) -> list[Claim]:
    """Init scale against success: for p + q > 1 moderate scales (0.1 to 0.5) succeed far more
    often than the canonical basins predict, because Adam's drift along the unigram line is faster
    for larger weights; at s = 1 no run reaches the entropy rate in 1000 steps, in either regime."""
    sc = scale(root) if sc is None else sc
    t = sc["table"]
    sw, st = t[(0.5, 0.8)], t[(0.2, 0.3)]
    idx = {s: i for i, s in enumerate(sw["scale"])}
    n = sw["runs"][0]
    seeds = f"seeds 0-{n - 1} per scale, N = 128"
    med = {s: (sw["median_escape_step"][idx[s]] or np.inf) for s in (0.02, 0.1)}
    out = [
        Claim(CH, f"(0.5, 0.8), s = {s:g}: success minus canonical prediction",
              sw["success"][idx[s]] - sw["canonical"][idx[s]], (0.5, None), digits=2,
              seeds=seeds)
        for s in (0.1, 0.3, 0.5)
    ]  # fmt: skip
    out += [
        Claim(CH, "(0.5, 0.8): median escape step at s = 0.1 / at s = 0.02 (Kaplan-Meier)",
              med[0.1] / med[0.02], (None, 0.5), digits=2, seeds=seeds),
        Claim(CH, "s = 1: runs reaching the entropy rate, both chains",
              round(n * (sw["success"][idx[1.0]] + st["success"][idx[1.0]])), 0, seeds=seeds),
    ]  # fmt: skip
    first = min(float(c[:, 0].mean()) for c in sc["big"].values())
    out.append(Claim(CH, "s = 1: smallest mean loss at step 1 (nats)", first, (10.0, None),
                     digits=1, seeds=seeds))  # fmt: skip
    return out


def grid(root: Path = DATA) -> dict:
    """l2g-grid: the success maps, the (p, q) meshes, the gap between the two loss levels per
    cell, and the final losses of every run by (init, p, q)."""
    res, jobs = get("l2g-grid").load(root)
    P, Q = np.meshgrid(guide.GRID, guide.GRID)
    chains = [[BinaryChain(float(p), float(q)) for p in guide.GRID] for q in guide.GRID]
    levels = np.array([[c.unigram_loss - c.entropy_rate for c in row] for row in chains])
    finals = {(sp.init, sp.chain["p"], sp.chain["q"]): analysis.final_loss(stack(r, "exact_loss"))
              for r, (sp, _) in zip(res, jobs, strict=True)}  # fmt: skip
    return {"maps": guide.success_maps(res, jobs), "P": P, "Q": Q, "level_gap": levels,
            "finals": finals, "seeds": len(jobs[0][1])}  # fmt: skip


@claims_of(CH)
def grid_claims(root: Path = DATA, g: dict | None = None) -> list[Claim]:
    """Over the (p, q) grid at N = 128: both inits learn every sticky cell with every seed; above
    the diagonal the standard init fails in most runs and succeeds mainly far from it, while the
    guideline learns every switching cell with every seed except where the two loss levels are
    within 0.01 nats (there "learned" is hard to tell from the unigram solution)."""
    g = grid(root) if g is None else g
    std, gl, P, Q = g["maps"]["gaussian"], g["maps"]["guideline"], g["P"], g["Q"]
    sw, st = P + Q > 1.0001, P + Q < 0.9999
    most, few = sw & (std >= 2 / 3), sw & (std <= 1 / 3)
    seeds = f"{g['seeds']} seeds per cell, N = 128"
    out = [
        Claim(CH, "sticky cells learned by every seed: standard", int((std[st] == 1).sum()),
              int(st.sum()), seeds=seeds, source="[paper]"),
        Claim(CH, "sticky cells learned by every seed: guideline", int((gl[st] == 1).sum()),
              int(st.sum()), seeds=seeds),
        Claim(CH, "switching cells: fraction of standard runs reaching the rate",
              float(np.mean(std[sw])), (None, 0.5), digits=2, seeds=seeds, tuned=True),
        Claim(CH, "switching cells the guideline misses where the levels are > 0.01 apart",
              int(np.sum(sw & (gl < 1) & (g["level_gap"] >= 0.01))), 0, seeds=seeds),
    ]  # fmt: skip
    if most.any() and few.any():
        out.append(Claim(CH, "standard, p + q > 1: mean p + q, cells learned by most seeds "
                         "minus by few", float(np.mean(P[most] + Q[most])
                         - np.mean(P[few] + Q[few])), (0.2, None), digits=2, seeds=seeds))  # fmt: skip
    return out


def inits(root: Path = DATA) -> dict:
    """l2g-inits: final losses and step-1 losses by (p, init)."""
    res, jobs = get("l2g-inits").load(root)
    out = {}
    for r, (sp, _) in zip(res, jobs, strict=True):
        c = stack(r, "exact_loss")
        out[(sp.chain["p"], sp.chain["q"], sp.init)] = {"final": analysis.final_loss(c),
                                                        "first": c[:, 0]}  # fmt: skip
    return out


@claims_of(CH)
def inits_claims(root: Path = DATA, table: dict | None = None) -> list[Claim]:
    """The guideline learns both chains in every run; the authors' constant init starts with a
    loss of tens of nats and ends past the midpoint of the two levels, but on average more than
    0.005 above the entropy rate after 1000 steps."""
    table = inits(root) if table is None else table
    out = []
    for p, q in guide.SCALE_CHAINS:
        ch = BinaryChain(p, q)
        g, a = table[(p, q, "guideline")]["final"], table[(p, q, "authors_good")]["final"]
        mid = (ch.unigram_loss + ch.entropy_rate) / 2
        seeds = f"seeds 0-{len(g) - 1}, N = 128"
        out += [
            Claim(CH, f"({p}, {q}) guideline: runs within 0.005 of the rate",
                  (g <= ch.entropy_rate + 0.005).sum(), len(g), seeds=seeds),
            Claim(CH, f"({p}, {q}) authors' init: worst final loss minus the midpoint",
                  a.max() - mid, (None, 0.0), digits=4, seeds=seeds),
            Claim(CH, f"({p}, {q}) authors' init: mean final loss minus the rate",
                  a.mean() - ch.entropy_rate, (0.005, None), digits=4, seeds=seeds),
        ]  # fmt: skip
    return out


@claims_of(CH)
def depth_claims(root: Path = DATA, summary: dict | None = None) -> list[Claim]:
    """AwM-5 (N = 512, 500 steps): depth 1 sticks at the unigram loss, depths 4 and 8 reach the
    entropy rate in every run."""
    s = get("awm-5").summary(*get("awm-5").load(root)) if summary is None else summary
    seeds = "seeds 0-2, N = 512, 500 steps"
    return [
        Claim(CH, "depth 1: runs at the unigram loss", s["depth 1"]["at_unigram"],
              s["depth 1"]["runs"], seeds=seeds, source="[paper]"),
        Claim(CH, "depth 4 and 8: runs reaching the entropy rate",
              s["depth 4"]["reached_bigram"] + s["depth 8"]["reached_bigram"],
              s["depth 4"]["runs"] + s["depth 8"]["runs"], seeds=seeds, source="[paper]"),
    ]  # fmt: skip


def five_states(root: Path = DATA) -> dict:
    """AwM-6: final losses and the loss over steps 101-300, by (p, arm)."""
    res, jobs = get("awm-6").load(root)
    out = {}
    for r, (sp, _) in zip(res, jobs, strict=True):
        c = stack(r, "exact_loss")
        out[(sp.chain["p"], "tied" if sp.model.tied else "untied")] = {
            "final": analysis.final_loss(c), "early": c[:, 100:300].mean(1)}  # fmt: skip
    return out


@claims_of(CH)
def five_state_claims(root: Path = DATA, table: dict | None = None) -> list[Claim]:
    """AwM-6: every arm reaches the entropy rate except the tied model at p = 0.9, which sits on
    the unigram plateau for hundreds of steps and then stalls between the two levels."""
    table = five_states(root) if table is None else table
    seeds = "seeds 0-1, N = 256"
    worst = max(float(np.abs(v["final"] - symmetric_chain(5, p).entropy_rate).max())
                for (p, arm), v in table.items() if (p, arm) != (0.9, "tied"))  # fmt: skip
    ch9, t9 = symmetric_chain(5, 0.9), table[(0.9, "tied")]
    return [
        Claim(CH, "entropy rate, 5 states, p = 0.1", symmetric_chain(5, 0.1).entropy_rate,
              0.4637, tol=5e-5, source="[code]"),
        Claim(CH, "other arms: worst |final loss - entropy rate|", worst, 0.0, tol=0.005,
              digits=4, seeds=seeds),
        Claim(CH, "p = 0.9, tied: smallest final loss minus the rate", t9["final"].min() -
              ch9.entropy_rate, (0.02, None), digits=4, seeds=seeds),
        Claim(CH, "p = 0.9, tied: largest final loss below the unigram loss by",
              ch9.unigram_loss - t9["final"].max(), (0.005, None), digits=4, seeds=seeds),
        Claim(CH, "p = 0.9, tied: max |loss - unigram| over steps 101-300",
              np.abs(t9["early"] - ch9.unigram_loss).max(), 0.0, tol=0.002, digits=4,
              seeds=seeds),
    ]  # fmt: skip
