"""Chapter 4 (the loss landscape and gradient flow of the canonical model, L2G)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import canonical as C
from ..claims import Claim, claims_of
from ..experiments import l2g
from ..experiments.base import get

CH = 4
DATA = Path("book/data")
STICKY, SWITCHING = (0.2, 0.3), (0.5, 0.8)
#: Monte-Carlo probability that (e0, w0) ~ N(0, s^2 I) lies in the global basin (SPEC section 3)
SPEC_BASINS = {0.02: (0.000, 1.000), 0.1: (0.000, 1.000), 0.5: (0.189, 0.969),
               1.0: (0.381, 0.887), 2.0: (0.465, 0.817), 3.0: (0.485, 0.791)}  # fmt: skip


@claims_of(CH)
def profile(root: Path | None = None) -> list[Claim]:
    """G(A) = min_b L: G(0) = unigram loss, G(A*) = entropy rate, G'(0) in closed form, convex."""
    A = np.linspace(-4, 4, 401)
    out = []
    for p, q in (STICKY, SWITCHING):
        land = C.CanonicalLandscape(p, q)
        name = f"({p:g}, {q:g})"
        slope = (land.profile(1e-6) - land.profile(-1e-6)) / 2e-6
        out += [
            Claim(CH, f"{name} G(0) vs unigram loss", land.profile(0.0), land.unigram_loss,
                  tol=1e-12, source="[derived]"),
            Claim(CH, f"{name} G(A*) vs entropy rate", land.profile(land.a_star), land.entropy_rate,
                  tol=1e-12, source="[derived]"),
            Claim(CH, f"{name} G'(0) by differences vs pq(p+q-1)/(p+q)^2", slope,
                  p * q * (p + q - 1) / (p + q) ** 2, tol=1e-8, source="[derived]"),
            Claim(CH, f"{name} smallest second difference of G on [-4, 4]",
                  np.diff(land.profile(A), 2).min(), (0.0, None), tol=1e-12, source="[derived]"),
        ]  # fmt: skip
    return out


@claims_of(CH)
def energy_conservation(root: Path | None = None) -> list[Claim]:
    """E(e, w) = e^2 - w^2 - sign(w) ln|w| is constant along the gradient flow (b at its optimum)."""
    rng = np.random.default_rng(0)
    drift, n = 0.0, 0
    for pq in (STICKY, SWITCHING):
        land = C.CanonicalLandscape(*pq)
        for e0, w0 in rng.uniform(-2.5, 2.5, size=(40, 2)):
            flow = C.gradient_flow(land, e0, w0)
            drift = max(drift, float(np.ptp(C.energy(*flow.y.T))))
            n += 1
    return [Claim(CH, f"largest energy drift along {n} flows", drift, 0.0, tol=1e-6,
                  seeds="starts U(-2.5, 2.5)^2, seed 0", source="[derived]")]  # fmt: skip


@claims_of(CH)
def critical_points(root: Path | None = None) -> list[Claim]:
    """The global-minimum curve A(e, w) = A* is critical and lies on the side of the saddle
    w = -1/sqrt 2 that the sign of p + q - 1 predicts; the saddle's energy."""
    w = np.linspace(-3, 3, 601)
    out = []
    for pq in ((0.1, 0.1), (0.9, 0.9), STICKY, SWITCHING):
        land = C.CanonicalLandscape(*pq)
        e_star = land.global_minimum_curve(w)
        ok = np.isfinite(e_star)
        g = max(np.abs(v).max() for v in land.grad(e_star[ok], w[ok]))
        right_side = np.all(w[ok] > C.W_SADDLE) == (sum(pq) < 1)
        name = f"({pq[0]:g}, {pq[1]:g})"
        out += [
            Claim(CH, f"{name}: max |grad L| on the global-minimum curve", g, 0.0, tol=1e-9,
                  source="[derived]"),
            Claim(CH, f"{name}: curve on the predicted side of w = -1/sqrt 2", int(right_side),
                  1, source="[derived]"),
        ]  # fmt: skip
    out.append(Claim(CH, "energy of the saddle vs -(1 + ln 2)/2", C.energy(0.0, C.W_SADDLE),
                     -(1 + np.log(2)) / 2, tol=1e-12, source="[derived]"))  # fmt: skip
    return out


@claims_of(CH)
def basin_table(root: Path | None = None, prob: dict | None = None) -> list[Claim]:
    """Monte-Carlo probability that (e0, w0) ~ N(0, s^2 I) lies in the global basin."""
    prob = l2g.basin_probabilities(n=1_000_000) if prob is None else prob
    out = []
    for s, a, b in zip(prob["scale"], prob["switching"], prob["sticky"], strict=True):
        ra, rb = SPEC_BASINS[float(s)]
        for name, got, want in (("p + q > 1", a, ra), ("p + q < 1", b, rb)):
            out.append(Claim(CH, f"Pr(global basin), s = {float(s):g}, {name}", got, want,
                             tol=0.005, seeds="1e6 samples, seed 0", source="[derived]"))  # fmt: skip
    return out


@claims_of(CH)
def small_starts(root: Path | None = None) -> list[Claim]:
    """Flows from N(0, 0.02^2 I): all reach the global minimum for p + q < 1, none for p + q > 1."""
    starts = np.random.default_rng(1).normal(0, 0.02, size=(200, 2))
    out = []
    for pq, want in ((STICKY, 200), (SWITCHING, 0)):
        land = C.CanonicalLandscape(*pq)
        hits = sum(C.gradient_flow(land, e0, w0, t_max=1e6).label for e0, w0 in starts)
        out.append(Claim(CH, f"({pq[0]:g}, {pq[1]:g}): flows from N(0, 0.02^2 I) that reach "
                         "the global minimum", hits, want, seeds="200 starts, seed 1",
                         source="[paper]"))  # fmt: skip
    return out


@claims_of(CH)
def loss_3d(root: Path | None = None) -> list[Claim]:
    """Our 3-D (e, w, a) population loss against Monte Carlo on the canonical model."""
    land = C.CanonicalLandscape(*SWITCHING)
    x = land.chain.sample(64, 4096, generator=torch.Generator().manual_seed(5))
    out = []
    for e, w, a in ((1.0, 0.6, 0.8), (1.2, -1.1, -0.7), (0.9, 0.3, 1.5)):
        b = float(land.bias_3d(e, w, a))
        model = C.CanonicalModel(1, attention=True).double().set_(e, w, b, a)
        with torch.no_grad():
            logits = model(x[None])[0]
        mc = land.chain.exact_conditional_loss(x[:, 2048:], logits=logits[:, 2048:]).item()
        out.append(Claim(CH, f"(e, w, a) = ({e}, {w}, {a}): Monte Carlo vs closed form", mc,
                         land.loss_3d(e, w, a), tol=3e-3, seeds="seed 5", source="[derived]"))  # fmt: skip
    return out


@claims_of(CH)
def flow_3d_zoom(root: Path | None = None, zoom: dict | None = None) -> list[Claim]:
    """Near the origin the 3-D flow goes to the global minimum for p + q < 1, to the unigram
    line for p + q > 1 (starts N(0, 0.05^2 I))."""
    zoom = l2g.flows_3d(scale=0.05, n=30, seed=1) if zoom is None else zoom
    return [
        Claim(CH, f"({pq[0]:g}, {pq[1]:g}): 3-D flows from N(0, 0.05^2 I) reaching the "
              "global minimum", sum(lab for _, lab in zoom[pq]), want, seeds="30 starts, seed 1",
              source="[paper]")
        for pq, want in ((STICKY, 30), (SWITCHING, 0))
    ]  # fmt: skip


def trajectories(root: Path = DATA) -> list[dict]:
    """The L2G-T runs: one row per run (``l2g.trajectory_table``)."""
    return l2g.trajectory_table(*get("l2g-t").load(root))


#: a projected path has "fallen onto the unigram line" when e drops below this
ON_LINE_E = 0.05


@claims_of(CH)
def trained_paths(root: Path = DATA, rows: list | None = None) -> list[Claim]:
    """L2G-T at the paper's settings: every run whose projected start lies in the global basin
    ends at the entropy rate; of those predicted to end on the unigram line, the standard runs
    fall onto it and then leave it past the saddle, the rank-one starts never reach it."""
    rows = trajectories(root) if rows is None else rows
    glob = [r for r in rows if r["predicted"] == "global"]
    uni = [r for r in rows if r["predicted"] == "unigram"]
    std_sw = [r for r in uni if r["init"] == "standard"]
    r1_uni = [r for r in uni if r["init"] != "standard"]
    past_saddle = []
    for r in std_sw:
        k = np.flatnonzero(r["e"] > 0.2)
        past_saddle.append(bool(k.size) and float(r["w"][k[0]]) < C.W_SADDLE)
    (via,) = [r for r in rows if r["chain"] == SWITCHING and r["init"] == "rank-one 1, 0.8"]
    seeds = "paper settings, 14 runs"
    return [
        Claim(CH, "runs predicted global that end at the entropy rate",
              sum(r["outcome"] == "global" for r in glob), len(glob), seeds=seeds,
              source="[paper]"),
        Claim(CH, "runs predicted to stay on the unigram line that left it",
              sum(r["outcome"] != "unigram" for r in uni), len(uni), seeds=seeds),
        Claim(CH, f"standard runs on (0.5, 0.8) whose e fell below {ON_LINE_E}",
              sum(float(r["e"].min()) < ON_LINE_E for r in std_sw), len(std_sw),
              seeds="seeds 0-2", source="[paper]"),
        Claim(CH, "of those, runs whose e regrew (> 0.2) only past w = -1/sqrt 2",
              sum(past_saddle), len(std_sw), seeds="seeds 0-2"),
        Claim(CH, "rank-one starts predicted unigram: smallest e along any path",
              min(float(r["e"].min()) for r in r1_uni), (ON_LINE_E, None), digits=3,
              seeds=f"{len(r1_uni)} runs"),
        Claim(CH, "run (1, 0.8) on (0.5, 0.8): final |w| (MLP switched off)",
              abs(float(via["w"][-1])), (None, 0.05), digits=3, seeds="seed 0"),
        Claim(CH, "run (1, 0.8) on (0.5, 0.8): final |W_Q| |W_K|", via["qk_norm"],
              (10.0, None), digits=1, seeds="seed 0"),
    ]  # fmt: skip
