"""Chapter 6 (softmax vs Gaussian attention, GDD): identities, the H D >= N n threshold, the
linear rate, joint and Q/K-only training, the labelled stand-ins and the Markov bridge."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .. import analysis, gdd
from ..claims import Claim, claims_of
from ..experiments import gdd as E
from ..experiments.base import get, stored_cost
from ..kernels import GaussianKernel, NormalizedGaussianKernel, SoftmaxKernel

CH = 6
DATA = Path("book/data")


@claims_of(CH)
def identities(root: Path | None = None) -> list[Claim]:
    """Row-normalised Gaussian = softmax of (2 q.k - |k|^2) / tau; = softmax when keys have equal
    norms and c = 2; the unnormalised kernel's rows do not sum to one."""
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=gen).unbind(0)
    out = []
    for c in (0.5, 2.0, 4.0):
        tau = c * math.sqrt(4)
        shifted = ((2 * q @ k.transpose(-1, -2) - (k * k).sum(-1)[:, None, :]) / tau).softmax(-1)
        diff = (NormalizedGaussianKernel(c).weights(q, k, causal=False) - shifted).abs().max()
        out.append(Claim(CH, f"c = {c}: max |row-normalised Gaussian - softmax((2qk - |k|^2)/tau)|",
                         diff, 0.0, tol=1e-12, source="[derived]"))  # fmt: skip
    k_eq = k / k.norm(dim=-1, keepdim=True)
    diff = NormalizedGaussianKernel(2.0).weights(q, k_eq) - SoftmaxKernel().weights(q, k_eq)
    rows = GaussianKernel(2.0).weights(q, k, causal=False).sum(-1)
    return out + [
        Claim(CH, "c = 2, keys of equal norm: max |row-normalised Gaussian - softmax|",
              diff.abs().max(), 0.0, tol=1e-12, source="[derived]"),
        Claim(CH, "unnormalised Gaussian: spread of its row sums", rows.max() - rows.min(),
              (0.1, None), digits=2),
    ]  # fmt: skip


@claims_of(CH)
def threshold(root: Path | None = None, sweep: dict | None = None) -> list[Claim]:
    """W_V-only training: rank B = min(HD, Nn); below the threshold B B^T is singular and a random
    target keeps about 1 - HD/(Nn) of its loss; from it on the optimum is 0 and lambda_B > 0."""
    sweep = E.threshold_sweep() if sweep is None else sweep
    ratio, rows = sweep["ratio"], sweep["rows"]
    above = ratio >= 1
    seeds = f"{sweep['softmax']['rank'].shape[1]} draws per H"
    out = []
    for kern in ("softmax", "gaussian"):
        d = sweep[kern]
        want = np.minimum(np.round(ratio * rows), rows)[:, None]
        gap = np.abs(d["optimum"][~above].mean(1) - sweep["expected_optimum"][~above]).max()
        out += [
            Claim(CH, f"{kern}: draws with rank B != min(HD, Nn)", (d["rank"] != want).sum(), 0,
                  seeds=seeds, source="[derived]"),
            Claim(CH, f"{kern}: smallest lambda_B at or above the threshold",
                  d["lambda_B"][above].min(), (1e-8, None), digits=2, style="e", seeds=seeds,
                  source="[derived]"),
            Claim(CH, f"{kern}: largest |eig_min(BB^T)| / eig_max below the threshold",
                  np.abs(d["gram_min"][~above]).max(), (None, 0.0), tol=1e-13,
                  seeds=seeds, source="[derived]"),
            Claim(CH, f"{kern}: smallest W_V-only optimum below the threshold (of f(0))",
                  d["optimum"][~above].min(), (0.05, None), seeds=seeds, digits=3,
                  source="[derived]", tuned=True),
            Claim(CH, f"{kern}: largest W_V-only optimum at or above the threshold",
                  d["optimum"][above].max(), 0.0, tol=1e-12, seeds=seeds, source="[derived]"),
            Claim(CH, f"{kern}: largest gap of the mean optimum to 1 - HD/(Nn) below it", gap,
                  0.0, tol=0.08, seeds=seeds, source="[derived]", tuned=True),
        ]  # fmt: skip
    return out


@claims_of(CH)
def linear_rate(root: Path | None = None, rate_runs: list | None = None) -> list[Claim]:
    """f_t <= (1 - eta omega^2 lambda_B^2)^(2t) f_0 along W_V-only GD, with the contraction
    alpha = omega^2 lambda_B^2 equal to the smallest eigenvalue of A A^* (omega = 1 here)."""
    rate_runs = rate_runs or [E.rate_run("softmax"), E.rate_run("gaussian")]
    out = []
    for r in rate_runs:
        name = r["kernel"]
        excess, bound = r["loss"] - r["optimum"], r["bound"] - r["optimum"]
        decrease = 1 - excess[-1] / excess[-2]
        out += [
            Claim(CH, f"{name}: steps where f_t exceeds the bound",
                  (excess > bound * (1 + 1e-9) + 1e-12).sum(), 0, seeds="seed 0",
                  source="[derived]"),
            Claim(CH, f"{name}: omega^2 lambda_B^2 (SVD of B) vs eig_min(AA*)", r["alpha"],
                  r["mu_min"], tol=1e-9, seeds="seed 0", source="[derived]"),
            Claim(CH, f"{name}: last-step decrease / 1 - (1 - eta lambda_B^2)^2",
                  decrease / (1 - r["asymptotic"]), 1.0, tol=0.5, digits=2, seeds="seed 0",
                  source="[derived]", tuned=True),
        ]  # fmt: skip
    return out


def joint_summary(root: Path = DATA) -> dict:
    """The stored gdd-joint draws as :func:`markovformer.experiments.gdd.joint_table`."""
    results, jobs = get("gdd-joint").load(root)
    return E.joint_table(results, jobs)


def joint_cost(root: Path = DATA) -> dict:
    """Computing time and machine of the stored gdd-joint draws (see ``base.stored_cost``)."""
    return stored_cost(get("gdd-joint").jobs(None, None), root)


@claims_of(CH)
def joint_training(root: Path = DATA, table: dict | None = None) -> list[Claim]:
    """Below H D = N n, training every block ends below the best W_V-only loss in every draw,
    typically several times below; single draws are chaotic (a 1e-12 change of the start moves
    them), the distribution over draws is not."""
    table = joint_summary(root) if table is None else table
    out = []
    for kern, arms in table.items():
        r, pert = arms["exact"], arms["perturbed"]
        n = len(r["ratio"])
        seeds = f"{n} draws"
        out += [
            Claim(CH, f"{kern}: draws ending below their best W_V-only loss", (r["ratio"] < 1).sum(),
                  n, seeds=seeds),
            Claim(CH, f"{kern}: median over draws of (all blocks) / (best W_V-only)",
                  np.median(r["ratio"]), (None, 1 / 3), digits=2, seeds=seeds),
            Claim(CH, f"{kern}: largest (all blocks) / (best W_V-only)", r["ratio"].max(),
                  (None, 0.5), digits=2, seeds=seeds),
            Claim(CH, f"{kern}, start moved by 1e-12: largest change of one draw's ratio",
                  np.abs(pert["ratio"] - r["ratio"]).max(), (0.01, None), digits=2, seeds=seeds),
            Claim(CH, f"{kern}, start moved by 1e-12: change of the median ratio",
                  abs(np.median(pert["ratio"]) - np.median(r["ratio"])), (None, 0.02), digits=3,
                  seeds=seeds),
        ]  # fmt: skip
    soft, gauss = (np.median(table[k]["exact"]["ratio"]) for k in ("softmax", "gaussian"))
    out.append(Claim(CH, "median ratio, Gaussian / softmax", gauss / soft, (None, 0.6), digits=2,
                     seeds=f"{len(table['softmax']['exact']['ratio'])} draws each"))  # fmt: skip
    return out


def qk_summary(root: Path = DATA) -> dict:
    """The best learning rate per arm of the stored gdd-qk runs (see ``gdd.qk_best``)."""
    results, jobs = get("gdd-qk").load(root)
    return E.qk_best(E.qk_table(results, jobs))


@claims_of(CH)
def qk_training(root: Path = DATA, best: dict | None = None) -> list[Claim]:
    """Q/K-only training (teacher-student): the wide Gaussian kernel reaches the minimum in more
    seeds than softmax; a saturated Gaussian kernel (c = 2) in none."""
    best = qk_summary(root) if best is None else best
    soft, wide, narrow = best["softmax"], best["gaussian c=16"], best["gaussian c=2"]
    seeds = f"{soft['runs']} seeds per arm"
    return [
        Claim(CH, "seeds reaching 1e-3: wide Gaussian (c = 16) minus softmax",
              wide["solved"] - soft["solved"], (5, None), seeds=seeds),
        Claim(CH, "seeds reaching 1e-3: saturated Gaussian (c = 2)", narrow["solved"], 0,
              seeds=seeds),
        Claim(CH, "median final loss, saturated Gaussian / softmax",
              narrow["median_final"] / soft["median_final"], (10.0, None), digits=1, seeds=seeds),
    ]  # fmt: skip


def saturation(c: float, qk_scale: float = 4.0, seeds: int = 10) -> float:
    """Mean fraction of Gaussian-kernel entries below 1e-6 at the Q/K-only initialisation."""
    cfg = gdd.LayerConfig(8, 6, 4, 1, kernel="gaussian", kernel_options=(("c", c),))
    fractions = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        X, _ = gdd.random_data(cfg, g)
        S = gdd.attention_weights(gdd.init_params(cfg, g, qk_scale=qk_scale), X, cfg)
        fractions.append(float((S < 1e-6).double().mean()))
    return float(np.mean(fractions))


@claims_of(CH)
def kernel_saturation(root: Path | None = None, fractions: dict | None = None) -> list[Claim]:
    """The narrow kernel (c = 2) starts saturated, the wide one (c = 16) does not."""
    fractions = fractions or {c: saturation(c) for c in (2.0, 16.0)}
    return [
        Claim(CH, "c = 2: fraction of kernel entries below 1e-6 at init", fractions[2.0],
              (0.5, None), digits=2, seeds="seeds 0-9"),
        Claim(CH, "c = 16: fraction of kernel entries below 1e-6 at init", fractions[16.0],
              (None, 0.5), digits=2, seeds="seeds 0-9"),
    ]  # fmt: skip


def standin_summary(root: Path = DATA) -> dict:
    """Final test accuracy, sharpness and the counting task's no-negation baseline."""
    results, jobs = get("gdd-standins").load(root)
    table = E.standin_table(results, jobs)
    _, (x_test, y_test), _, _ = E.standin_data(jobs[0][0].config)
    count_only = (((x_test == 1).sum(1) > (x_test == 2).sum(1)).long() == y_test).double()
    return {
        "table": table,
        "acc": {(t, k): table[t][k]["test_acc"][:, -1] for t in table for k in table[t]},
        "sharp": {(t, k): table[t][k]["sharpness"] for t in table for k in table[t]},
        "count_only": float(count_only.mean()),
    }


@claims_of(CH)
def standins(root: Path = DATA, summary: dict | None = None) -> list[Claim]:
    """The labelled stand-ins for IMDb and Pathfinder (NOT the paper's data)."""
    s = standin_summary(root) if summary is None else summary
    acc, sharp = s["acc"], s["sharp"]
    n = len(acc[("counting", "softmax")])
    seeds = f"{n} seeds per kernel"
    best_counting = max(acc[("counting", k)].max() for k in E.STANDIN_KERNELS)
    spread = [sharp[("pathfinder", k)].max() / sharp[("pathfinder", k)].min()
              for k in E.STANDIN_KERNELS]  # fmt: skip
    return [
        Claim(CH, "counting: best accuracy minus counting without negation",
              best_counting - s["count_only"], 0.0, tol=0.02, digits=3, seeds=seeds),
        Claim(CH, "counting: |mean accuracy softmax - Gaussian|",
              abs(acc[("counting", "softmax")].mean() - acc[("counting", "gaussian")].mean()),
              0.0, tol=0.02, digits=3, seeds=seeds),
        Claim(CH, "pathfinder: mean accuracy softmax - Gaussian",
              acc[("pathfinder", "softmax")].mean() - acc[("pathfinder", "gaussian")].mean(),
              (0.1, None), digits=3, seeds=seeds),
        Claim(CH, "pathfinder: lowest accuracy of any run (chance 0.5)",
              min(acc[("pathfinder", k)].min() for k in E.STANDIN_KERNELS), (0.53, None),
              digits=3, seeds=seeds),
        Claim(CH, "counting: flattest softmax minus sharpest Gaussian solution (sharpness)",
              sharp[("counting", "softmax")].min() - sharp[("counting", "gaussian")].max(),
              (0.0, None), digits=2, seeds=seeds),
        Claim(CH, "pathfinder: smallest max/min sharpness ratio over seeds, either kernel",
              min(spread), (2.0, None), digits=1, seeds=seeds),
    ]  # fmt: skip


@claims_of(CH)
def uniform_at_init(root: Path | None = None) -> list[Claim]:
    """At the standard init every normalised kernel attends uniformly over the prefix."""
    from ..init import initialise
    from ..model import MarkovTransformer, TransformerConfig

    x = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 1] * 8])
    n = x.shape[-1]
    uniform = torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None]
    out = []
    for kern in E.BRIDGE_KERNELS:
        cfg = TransformerConfig(
            d=8, seq_len=128, kernel=kern, kernel_options=E.kernel_options(kern)
        )
        model = MarkovTransformer(cfg)
        initialise(model, [0], "gaussian")
        with torch.no_grad():
            S = model(x[None], return_attention=True)[1][0][0, 0]
        dev = float((S - uniform).abs().max())
        label = f"{E.KERNEL_LABELS[kern]}: max |S - prefix average| at init"
        expected = (0.5, None) if kern == "gaussian" else (None, 1e-3)
        out.append(Claim(CH, label, dev, expected, digits=4, seeds="seed 0"))
    return out


def bridge_escapes(bt: dict) -> dict:
    """Escape steps per (kernel, p, q) of the gdd-bridge runs (None: never escaped)."""
    return {
        (kern, p, q): [analysis.escape_step(c, d["unigram"], d["rate"]) for c in d["curves"]]
        for kern, by_chain in bt.items()
        for (p, q), d in by_chain.items()
    }


def bridge(root: Path = DATA) -> dict:
    """gdd-bridge: ``E.bridge_table`` of the stored runs."""
    return E.bridge_table(*get("gdd-bridge").load(root))


@claims_of(CH)
def markov_bridge(root: Path = DATA, bt: dict | None = None) -> list[Claim]:
    """The tied Markov transformer with each kernel: all learn (0.2, 0.3); at (0.5, 0.8) all fall
    onto the unigram plateau; the row-normalised Gaussian leaves it with exactly the seeds of
    softmax; the raw Gaussian leaves it before any softmax run does."""
    bt = bridge(root) if bt is None else bt
    esc = bridge_escapes(bt)
    n = bt["softmax"][(0.2, 0.3)]["runs"]
    seeds = f"seeds 0-{n - 1} per kernel, N = 128"
    plateau = max(
        float(np.abs(d[(0.5, 0.8)]["curves"][:, 140:160].mean(1) - d[(0.5, 0.8)]["unigram"]).max())
        for d in bt.values()
    )
    same = sum((a is None) == (b is None) for a, b in
               zip(esc["softmax", 0.5, 0.8], esc["gaussian-rownorm", 0.5, 0.8], strict=True))  # fmt: skip
    soft = [s for s in esc["softmax", 0.5, 0.8] if s is not None]
    raw = [s for s in esc["gaussian", 0.5, 0.8] if s is not None]
    out = [
        Claim(CH, f"{E.KERNEL_LABELS[k]}: runs at the bigram loss, (0.2, 0.3)",
              bt[k][(0.2, 0.3)]["reached"], n, seeds=seeds)
        for k in bt
    ]  # fmt: skip
    return out + [
        Claim(CH, "(0.5, 0.8), all kernels: max |loss - unigram| over steps 141-160", plateau,
              0.0, tol=0.005, digits=4, seeds=seeds),
        Claim(CH, "(0.5, 0.8): seeds escaping with one normalised kernel only", n - same, 0,
              seeds=seeds),
        Claim(CH, "(0.5, 0.8): last raw-Gaussian escape minus first softmax escape (steps)",
              max(raw) - min(soft), (None, 0), seeds=seeds),
    ]  # fmt: skip
