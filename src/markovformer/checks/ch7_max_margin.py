"""Chapter 7 (max-margin next-token prediction, NTP): realisable data, the max-margin targets
(closed form and numerical QP), the rates of Algorithm 1, dataset shift, joint training and the
bridge to Markov data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import ntp
from ..claims import Claim, claims_of
from ..experiments import ntp as ntpx
from ..markov import BinaryChain

CH = 7
#: the chapter's Figure-2 run (|V| = d = 20; the CLI's ntp-2 runs stage 2 ten times longer)
FIG2 = {"n_tokens": 20, "n_sentences": 200, "min_len": 2, "max_len": 8, "steps0": 1000,
        "steps": 3000, "seed": 0}  # fmt: skip


def small_dataset() -> ntp.NTPDataset:
    return ntp.make_dataset(n_tokens=8, n_sentences=6, min_len=2, max_len=6, seed=6)


def _refused(fn) -> int:
    """1 if ``fn()`` raises ValueError (the data are refused), else 0."""
    try:
        fn()
    except ValueError:
        return 1
    return 0


@claims_of(CH)
def realisability(root: Path | None = None) -> list[Claim]:
    """Optimal tokens are recovered from the next tokens; contradictory orders are refused."""
    small = small_dataset()
    opt = ntp.check_realisable(small.tokens, small.next_tokens, small.collocation, 8, small.lengths)
    cyclic = ([[0, 1, 2], [1, 0, 2]], [1, 2], [1, 2, 0], 3)  # query 2: 0 > 1 and 1 > 0
    return [
        Claim(CH, "generated data: fraction of optimal tokens recovered",
              np.mean(opt == small.optimal), 1.0, digits=0, seeds="seed 6"),
        Claim(CH, "data with a cycle in one query's order refused",
              _refused(lambda: ntp.check_realisable(*cyclic)), 1),
    ]  # fmt: skip


def binary_path(n: int = 40) -> np.ndarray:
    """A path of BinaryChain(0.5, 0.8), seed 0."""
    return BinaryChain(0.5, 0.8).sample(1, n, generator=torch.Generator().manual_seed(0))[0].numpy()


@claims_of(CH)
def noisy_chain_refused(root: Path | None = None) -> list[Claim]:
    """A sample path of a noisy binary chain is not realisable NTP data."""
    x = binary_path()
    return [Claim(CH, "a path of the (0.5, 0.8) chain refused as NTP data",
                  _refused(lambda: ntp.check_realisable(x[:-1, None], x[1:], [0, 1], 2)), 1,
                  seeds="seed 0")]  # fmt: skip


def figure2_run() -> dict:
    """The chapter's run of Algorithm 1 (cached by ``experiments.ntp``)."""
    return ntpx.figure2_run(**FIG2)


@claims_of(CH)
def max_margin(root: Path | None = None, run: dict | None = None) -> list[Claim]:
    """W_ov* (closed form) and W_kq* (NNLS route) against a general QP solver, and their margins."""
    run = figure2_run() if run is None else run
    data, W_ov, W_kq = run["data"], run["W_ov*"], run["W_kq*"]
    K = data.n_tokens
    _, info = ntp.wkq_max_margin(data.tokens, data.lengths, data.optimal, K)
    W_ov_qp = ntp.wov_max_margin_qp(data.collocation, K)
    W_kq_qp = ntp.wkq_max_margin_qp(data.tokens, data.lengths, data.optimal, K)
    margins = np.array([W_ov[data.collocation[x], x] - np.delete(W_ov[:, x], data.collocation[x])
                        for x in range(K)])  # fmt: skip
    seeds = f"seed {FIG2['seed']}"
    return [
        Claim(CH, "max |W_ov* closed form - QP solution|", np.abs(W_ov - W_ov_qp).max(), 0.0,
              tol=1e-8, seeds=seeds, source="[derived]"),
        Claim(CH, "||W_ov*||_F vs sqrt(K (K-1)/K), K = 20", np.linalg.norm(W_ov),
              np.sqrt(K - 1), tol=1e-12, source="[derived]"),
        Claim(CH, "smallest and largest margin of W_ov*: max |margin - 1|",
              np.abs(margins - 1).max(), 0.0, tol=1e-12, source="[derived]"),
        Claim(CH, "max |W_kq* (NNLS) - QP solution|", np.abs(W_kq - W_kq_qp).max(), 0.0,
              tol=1e-6, seeds=seeds, source="[derived]"),
        Claim(CH, "smallest ranking margin of W_kq*",
              min(v["margins"].min() for v in info.values()), 1.0, tol=1e-9, seeds=seeds,
              source="[derived]"),
        Claim(CH, "complementary slackness max |lambda (margin - 1)|",
              max(np.abs(v["multipliers"] * (v["margins"] - 1)).max() for v in info.values()),
              0.0, tol=1e-9, seeds=seeds, source="[derived]"),
    ]  # fmt: skip


@claims_of(CH)
def margin_ray(root: Path | None = None, run: dict | None = None) -> list[Claim]:
    """Far out along the max-margin ray the loss above its floor decays like exp(-c/|W_kq*|)."""
    run = figure2_run() if run is None else run
    return [Claim(CH, "slope of ln(L - L*) x |W_kq*| on the ray, c in [150, 300]",
                  ray_slope(run), -1.0, tol=0.01, seeds=f"seed {FIG2['seed']}",
                  source="[derived]")]  # fmt: skip


def ray_slope(run: dict, lo: float = 150.0, hi: float = 300.0) -> float:
    """Slope of ln(L - L*) along c W_kq*/|W_kq*| for c in [lo, hi], times |W_kq*|."""
    unit = run["W_kq*"] / np.linalg.norm(run["W_kq*"])
    cs = np.linspace(lo, hi, 7)
    excess = [ntp.excess_loss(run["W_ov"], c * unit, run["data"]) for c in cs]
    return ntpx.fit_log_linear(cs, excess, lo, hi)["rate"] * np.linalg.norm(run["W_kq*"])


@claims_of(CH)
def algorithm1(root: Path | None = None, run: dict | None = None) -> list[Claim]:
    """The rates of two-stage normalised GD (the paper's Figure 2)."""
    run = figure2_run() if run is None else run
    rates = ntpx.figure2_rates(run)
    h1, h2 = run["stage1"], run["stage2"]
    late = np.diff(h2["cos_kq"][h2["step"] >= 300])
    seeds = f"seed {FIG2['seed']}"
    out = [
        Claim(
            CH,
            "stage 1: fitted L0 rate / -eta0/|W_ov*|",
            rates["L0"]["rate"] / rates["L0_predicted_rate"],
            1.0,
            tol=0.03,
            seeds=seeds,
            source="[paper]",
            tuned=True,
        ),
        Claim(
            CH,
            "stage 1: slope of |W_ov| / eta0",
            rates["norm_ov"]["slope"] / run["eta0"],
            1.0,
            tol=0.01,
            seeds=seeds,
            source="[paper]",
            tuned=True,
        ),
        Claim(
            CH,
            "stage 1: cos(W_ov, W_ov*) at step 1000",
            h1["cos_ov"][-1],
            1.0,
            tol=1e-4,
            seeds=seeds,
            source="[paper]",
            tuned=True,
        ),
        Claim(
            CH,
            "stage 2: R^2 of the geometric fit of L - L*",
            rates["excess"]["r2"],
            1.0,
            tol=0.01,
            seeds=seeds,
            source="[paper]",
            tuned=True,
        ),
        Claim(
            CH,
            "stage 2: slope of |W_kq| / eta",
            rates["norm_kq"]["slope"] / run["eta"],
            1.0,
            tol=0.05,
            seeds=seeds,
            source="[paper]",
            tuned=True,
        ),
        Claim(
            CH,
            f"stage 2: cos(W_kq, W_kq*) at step {int(h2['step'][-1])}",
            h2["cos_kq"][-1],
            (0.95, None),
            digits=4,
            seeds=seeds,
            tuned=True,
        ),
        Claim(
            CH,
            "stage 2: steps after 300 where cos(W_kq, W_kq*) falls",
            (late <= 0).sum(),
            0,
            seeds=seeds,
        ),
    ]
    for m in ("ov", "kq"):
        f = rates[f"dir_{m}"]
        out.append(Claim(CH, f"direction of W_{m}: R^2 power law minus R^2 geometric",
                         f["r2"] - f["r2_geometric"], (0.0, None), digits=3, seeds=seeds,
                         source="[paper]"))  # fmt: skip
    return out  # fmt: skip


@claims_of(CH)
def dataset_shift(root: Path | None = None, shift: dict | None = None) -> list[Claim]:
    """Trained on lengths 2..8, tested on 9..16."""
    shift = shift or ntpx.shift_eval(figure2_run(), n_test=2000, min_len=9, max_len=16, seed=1)
    return [
        Claim(CH, "test sentences whose closure's top token is the optimal one",
              shift["closure_top_is_optimal"], 1.0, digits=0, seeds="test seed 1"),
        Claim(CH, "accuracy on test sentences the training orders determine",
              shift["accuracy_determined"], 1.0, tol=0.01, seeds="test seed 1", source="[paper]"),
        Claim(CH, "accuracy on all test sentences / chance", shift["accuracy"] / shift["chance"],
              (5.0, None), digits=1, seeds="test seed 1"),
    ]  # fmt: skip


@claims_of(CH)
def joint_vs_two_stage(root: Path | None = None, jr: dict | None = None) -> list[Claim]:
    """Joint normalised GD also converges in direction, to a lower loss."""
    jr = jr or ntpx.joint_run(n_tokens=20, n_sentences=200, steps0=1000, steps=3000, seed=0)
    two, joint = jr["two_stage_final"], jr["joint_final"]
    return [
        Claim(CH, "joint: cos(W_ov, W_ov*)", joint["cos_ov"], (0.99, None), digits=4, seeds="seed 0"),
        Claim(CH, "joint: cos(W_kq, W_kq*)", joint["cos_kq"], (0.95, None), digits=4, seeds="seed 0"),
        Claim(CH, "two-stage minus joint cos(W_ov, W_ov*)", two["cos_ov"] - joint["cos_ov"],
              (0.0, None), digits=4, seeds="seed 0"),
        Claim(CH, "joint L / two-stage L", joint["L"] / two["L"], (None, 1.0), digits=3,
              seeds="seed 0"),
    ]  # fmt: skip


def cycle_run() -> dict:
    """Algorithm 1 on the deterministic 8-cycle (permutation seed 0): data, W_kq* and the run."""
    cycle = np.random.default_rng(0).permutation(8)
    det = ntp.cyclic_chain_dataset(cycle, max_len=8)
    W_kq, _ = ntp.wkq_max_margin(det.tokens, det.lengths, det.optimal, 8)
    eta0, eta = ntpx.steps_sizes(8)
    res = ntp.two_stage_ngd(det, eta0=eta0, eta=eta, steps0=500, steps=2000, record_every=100,
                            targets=(ntp.wov_max_margin(det.collocation, 8), W_kq))  # fmt: skip
    return {"data": det, "W_kq*": W_kq, "run": res}


@claims_of(CH)
def deterministic_chain(root: Path | None = None, cyc: dict | None = None) -> list[Claim]:
    """A deterministic chain is realisable: W_kq* = I - 1/K and Algorithm 1 converges to it."""
    cyc = cycle_run() if cyc is None else cyc
    return [
        Claim(CH, "deterministic 8-cycle: max |W_kq* - (I - 1/K)|",
              np.abs(cyc["W_kq*"] - (np.eye(8) - 1 / 8)).max(), 0.0, tol=1e-10,
              source="[derived]"),
        Claim(CH, "8-cycle: cos(W_kq, I - 1/K) after 2000 stage-2 steps",
              cyc["run"]["stage2"]["cos_kq"][-1], 1.0, tol=0.01),
    ]  # fmt: skip


def bridge() -> dict:
    """Plain GD on the deterministic alternating chain and on BinaryChain(0.5, 0.8)."""
    return ntpx.bridge_run(p=0.5, q=0.8, max_len=6, steps=5000, lr=1.0)


@claims_of(CH)
def markov_bridge(root: Path | None = None, br: dict | None = None) -> list[Claim]:
    """The deterministic chain's loss goes to 0 like 1/t with growing W_ov; the (0.5, 0.8) chain
    stops at the entropy rate with W_ov at its finite optimum."""
    br = bridge() if br is None else br
    hd, hb = br["deterministic"]["history"], br["binary"]["history"]
    i = int(np.searchsorted(hd["step"], 1000))
    W_b = br["binary"]["W_ov"]
    dist = np.linalg.norm(W_b - W_b.mean(axis=0, keepdims=True) - br["W_ov_opt"])
    return [
        Claim(CH, "binary chain: final loss - entropy rate", hb["loss"][-1] - br["entropy_rate"],
              0.0, tol=1e-3),
        Claim(CH, "binary chain: |W_ov (centred) - W_ov^opt|", dist, 0.0, tol=0.05, digits=3),
        Claim(CH, "binary chain: |W_ov^opt| vs sqrt(2) ln 2", np.linalg.norm(br["W_ov_opt"]),
              np.sqrt(2) * np.log(2), tol=1e-12, source="[derived]"),
        Claim(CH, "deterministic: loss(1000) / loss(5000) (1/t decay: 5)",
              hd["loss"][i] / hd["loss"][-1], 5.0, tol=0.5, digits=2),
        Claim(CH, "deterministic: growth of |W_ov| from step 1000 to 5000",
              hd["norm_ov"][-1] - hd["norm_ov"][i], (1.0, None), digits=2),
    ]  # fmt: skip
