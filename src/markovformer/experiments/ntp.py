"""Experiments of *Non-asymptotic Convergence of Training Transformers for Next-token Prediction*
(NTP), chapter 7.

No transformer runs are needed: every figure trains the one-layer model of
:mod:`markovformer.ntp` in float64 numpy within seconds, so ``jobs`` is empty and ``figure``
computes and draws (results are cached per process, so ``figure`` and ``summary`` share them).

* ntp-2: the paper's Figure 2 (six panels: L_0, direction and norm of W_ov in stage 1;
  L - L*, direction and norm of W_kq in stage 2) at |V| = d = 20, eta_0 = 0.2/sqrt(d),
  eta = 0.05/sqrt(d), with fitted rates;
* ntp-shift: dataset shift (train on lengths 2..8, test on 9..16) and the transitive closure;
* ntp-joint: joint normalised GD against the two-stage algorithm;
* ntp-markov: the bridge to Markov chains (deterministic chain vs BinaryChain(0.5, 0.8)).

The paper's settings are tagged [paper] in the book's SPEC (section 6); the sentence count and
lengths of the training set, the step counts, the initial scale of W_ov and the seeds are ours.
"""

from __future__ import annotations

import functools
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from .. import ntp
from ..markov import BinaryChain
from ..plotting import COLUMN, SMALL
from .base import Experiment, register

__all__ = [
    "PAPER",
    "fit_log_linear",
    "fit_linear",
    "fit_power",
    "figure2_run",
    "figure2_rates",
    "plot_figure2",
    "shift_eval",
    "plot_shift",
    "joint_run",
    "plot_joint",
    "bridge_run",
    "plot_bridge",
    "plot_dataset_schematic",
]

#: settings of the paper's Figure 2 [paper]; the square root in the steps is our reading
PAPER = {"n_tokens": 20, "eta0_scale": 0.2, "eta_scale": 0.05}
#: our choices for the training set and the runs
DEFAULTS = {
    "n_sentences": 200,
    "min_len": 2,
    "max_len": 8,
    "steps0": 1000,
    "steps": 3000,
    "seed": 0,
    "init_scale": 0.02,
}
CLI_STEPS = 30_000  # `markovformer reproduce ntp-2` runs stage 2 ten times longer than the book

STAGE1_COLOR = "#1f77b4"
STAGE2_COLOR = "#d62728"
JOINT_COLOR = "#9467bd"
FIT_STYLE = {"color": "k", "ls": "--", "lw": 1.0}


def _cached(fn):
    """Cache on the bound arguments, so that f(), f(20) and f(n_tokens=20) share one entry."""
    sig = inspect.signature(fn)
    inner = functools.lru_cache(maxsize=8)(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return inner(*bound.args)

    wrapper.cache_clear = inner.cache_clear
    return wrapper


# --------------------------------------------------------------------------------------------
# Rate fits
# --------------------------------------------------------------------------------------------


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3:
        raise ValueError(f"a fit needs at least 3 points, got {x.size}")
    slope, icpt = np.polyfit(x, y, 1)
    resid = y - (slope * x + icpt)
    r2 = 1.0 - resid.var() / y.var() if y.var() > 0 else 1.0
    return float(slope), float(icpt), float(r2)


def _window(t: np.ndarray, y: np.ndarray, lo: float, hi: float, positive: bool = False):
    sel = (t >= lo) & (t <= hi) & np.isfinite(y)
    if positive:
        sel &= y > 0
    return t[sel], y[sel]


def fit_log_linear(t: np.ndarray, y: np.ndarray, lo: float, hi: float) -> dict:
    """Fit ``ln y = a + r t`` on ``lo <= t <= hi``: geometric (linear on a log scale) decay.

    Returns ``{"rate": r (per step), "intercept": a, "r2"}``.
    """
    x, v = _window(np.asarray(t), np.asarray(y), lo, hi, positive=True)
    r, a, r2 = _fit(x, np.log(v))
    return {"rate": r, "intercept": a, "r2": r2}


def fit_linear(t: np.ndarray, y: np.ndarray, lo: float, hi: float) -> dict:
    """Fit ``y = a + s t`` on ``lo <= t <= hi``. Returns ``{"slope", "intercept", "r2"}``."""
    x, v = _window(np.asarray(t), np.asarray(y), lo, hi)
    s, a, r2 = _fit(x, v)
    return {"slope": s, "intercept": a, "r2": r2}


def fit_power(t: np.ndarray, y: np.ndarray, lo: float, hi: float) -> dict:
    """Fit ``y = c t^(-alpha)`` on ``lo <= t <= hi`` (a line on log-log axes).

    Returns ``{"alpha", "intercept" (ln c), "r2", "r2_geometric"}``; the last is the R^2 of a
    geometric fit on the same window, to tell polynomial (sub-linear) from geometric decay.
    """
    x, v = _window(np.asarray(t), np.asarray(y), max(lo, 1), hi, positive=True)
    s, a, r2 = _fit(np.log(x), np.log(v))
    _, _, r2g = _fit(x, np.log(v))
    return {"alpha": -s, "intercept": a, "r2": r2, "r2_geometric": r2g}


# --------------------------------------------------------------------------------------------
# ntp-2: the paper's Figure 2
# --------------------------------------------------------------------------------------------


def steps_sizes(n_tokens: int) -> tuple[float, float]:
    """``(eta_0, eta) = (0.2, 0.05) / sqrt(d)`` with ``d = K`` [paper; sqrt our reading]."""
    d = n_tokens
    return PAPER["eta0_scale"] / math.sqrt(d), PAPER["eta_scale"] / math.sqrt(d)


@_cached
def figure2_run(
    n_tokens: int = 20,
    n_sentences: int = 200,
    min_len: int = 2,
    max_len: int = 8,
    steps0: int = 1000,
    steps: int = 3000,
    seed: int = 0,
    init_scale: float = 0.02,
    record_every: int = 10,
) -> dict:
    """Algorithm 1 on a random realisable dataset, with the max-margin targets.

    The dataset and ``W_ov``'s start use ``seed``; returns ``{"data", "W_ov*", "W_kq*",
    "eta0", "eta", "W_ov", "W_kq", "stage1", "stage2", "settings"}`` (cached: do not modify).
    """
    data = ntp.make_dataset(n_tokens, n_sentences, min_len, max_len, seed)
    w_ov = ntp.wov_max_margin(data.collocation, n_tokens)
    w_kq, _ = ntp.wkq_max_margin(data.tokens, data.lengths, data.optimal, n_tokens)
    eta0, eta = steps_sizes(n_tokens)
    res = ntp.two_stage_ngd(
        data, eta0=eta0, eta=eta, steps0=steps0, steps=steps, init_scale=init_scale,
        seed=seed, record_every=record_every, targets=(w_ov, w_kq),
    )  # fmt: skip
    settings = {
        "n_tokens": n_tokens, "n_sentences": n_sentences, "min_len": min_len,
        "max_len": max_len, "steps0": steps0, "steps": steps, "seed": seed,
        "init_scale": init_scale,
    }  # fmt: skip
    return {"data": data, "W_ov*": w_ov, "W_kq*": w_kq, "eta0": eta0, "eta": eta, **res,
            "settings": settings}  # fmt: skip


def figure2_rates(run: dict) -> dict:
    """The rates read off Figure 2, each by a fit (windows: the last half of stage 1, the last
    two thirds of stage 2 for losses and norms; from a tenth of each stage on for directions).

    Also returns the asymptotic loss rates ``eta_0 / ||W_ov*||`` and ``eta / ||W_kq*||``
    [derived]: once a matrix points along its target, its smallest margin grows by
    ``step / ||target||`` per step and the loss above its floor falls like ``exp(-margin)``.
    """
    h1, h2 = run["stage1"], run["stage2"]
    T0, T = int(h1["step"][-1]), int(h2["step"][-1])
    return {
        "L0": fit_log_linear(h1["step"], h1["loss"], T0 / 2, T0),
        "L0_predicted_rate": -run["eta0"] / float(np.linalg.norm(run["W_ov*"])),
        "norm_ov": fit_linear(h1["step"], h1["norm_ov"], T0 / 2, T0),
        "dir_ov": fit_power(h1["step"], h1["dist_ov"], T0 / 10, T0),
        "excess": fit_log_linear(h2["step"], h2["excess"], T / 3, T),
        "excess_predicted_rate": -run["eta"] / float(np.linalg.norm(run["W_kq*"])),
        "norm_kq": fit_linear(h2["step"], h2["norm_kq"], T / 3, T),
        "dir_kq": fit_power(h2["step"], h2["dist_kq"], T / 10, T),
    }


def _fit_line(ax, t, fit: dict, kind: str, label: str) -> None:
    t = np.asarray(t, dtype=float)
    if kind == "log":
        ax.plot(t, np.exp(fit["intercept"] + fit["rate"] * t), **FIT_STYLE, label=label)
    elif kind == "linear":
        ax.plot(t, fit["intercept"] + fit["slope"] * t, **FIT_STYLE, label=label)
    else:
        ax.plot(t, np.exp(fit["intercept"]) * t ** (-fit["alpha"]), **FIT_STYLE, label=label)


def plot_figure2(run: dict, rates: dict | None = None) -> Figure:
    """The six panels of the paper's Figure 2, (a)-(c) stage 1 (left column) and (d)-(f)
    stage 2 (right column): loss, direction, norm from top to bottom (the paper's rows are
    columns here, so that the figure fits the book's text column)."""
    rates = rates or figure2_rates(run)
    h1, h2 = run["stage1"], run["stage2"]
    fig, axes = plt.subplots(3, 2, figsize=(COLUMN, 9.6), layout="constrained")
    rows = [
        (h1, "ov", STAGE1_COLOR, "stage 1", "$L_0$", "L0", run["eta0"], r"\eta_0"),
        (h2, "kq", STAGE2_COLOR, "stage 2", "$L - L^*$", "excess", run["eta"], r"\eta"),
    ]
    for r, (h, m, col, stage, lname, lkey, step, sname) in enumerate(rows):
        t = h["step"]
        T = t[-1]
        lo_loss = T / 2 if r == 0 else T / 3
        ax = axes[0, r]
        y = h["loss"] if r == 0 else h["excess"]
        ax.semilogy(t, np.where(y > 0, y, np.nan), color=col, lw=1.6)
        tt = t[t >= lo_loss]
        _fit_line(ax, tt, rates[lkey], "log", f"fit: rate {rates[lkey]['rate']:.2e} / step")
        ax.set_title(f"({'ad'[r]}) {stage}: loss {lname}")
        ax.set_ylabel(lname + " (nats)")
        ax.legend(loc="upper right")
        ax = axes[1, r]
        ok = t >= 1
        ax.loglog(t[ok], h[f"dist_{m}"][ok], color=col, lw=1.6)
        fit = rates[f"dir_{m}"]
        tt = t[t >= T / 10]
        _fit_line(ax, tt, fit, "power", f"fit: $t^{{-{fit['alpha']:.2f}}}$")
        W = "W_{ov}" if m == "ov" else "W_{kq}"
        ax.set_title(
            f"({'be'[r]}) direction of ${W}$:\ncos = {h[f'cos_{m}'][-1]:.4f} at step {int(T)}"
        )
        ax.set_ylabel(f"normalised distance to ${W}^*$")
        ax.legend(loc="lower left")
        ax = axes[2, r]
        ax.plot(t, h[f"norm_{m}"], color=col, lw=1.6, label=rf"$\|{W}\|_F$")
        ax.plot(t, step * t, color="0.6", lw=1, ls=":", label=rf"${sname} t$ (steps aligned)")
        fit = rates[f"norm_{m}"]
        ax.set_title(f"({'cf'[r]}) norm of ${W}$:\nslope {fit['slope']:.4f} / step")
        ax.set_ylabel("Frobenius norm")
        ax.legend(loc="upper left")
        axes[2, r].set_xlabel(f"{stage} step $t$")
        for ax in (axes[0, r], axes[2, r]):
            ax.xaxis.set_major_locator(MaxNLocator(5))
    return fig


def _fig2_summary_numbers(run: dict, rates: dict) -> dict:
    h1, h2 = run["stage1"], run["stage2"]
    return {
        "settings": run["settings"],
        "eta0": round(run["eta0"], 6),
        "eta": round(run["eta"], 6),
        "norm W_ov*": round(float(np.linalg.norm(run["W_ov*"])), 4),
        "norm W_kq*": round(float(np.linalg.norm(run["W_kq*"])), 4),
        "stage 1 end: L0, cos(W_ov, W_ov*), norm": [
            float(f"{h1['loss'][-1]:.4g}"),
            round(float(h1["cos_ov"][-1]), 6),
            round(float(h1["norm_ov"][-1]), 3),
        ],
        "stage 2 end: L, L*, L - L*, cos(W_kq, W_kq*), norm": [
            float(f"{h2['loss'][-1]:.4g}"),
            float(f"{h2['floor'][-1]:.4g}"),
            float(f"{h2['excess'][-1]:.4g}"),
            round(float(h2["cos_kq"][-1]), 6),
            round(float(h2["norm_kq"][-1]), 3),
        ],
        "cos(W_kq, W_kq*) at steps": {
            int(s): round(float(np.interp(s, h2["step"], h2["cos_kq"])), 4)
            for s in (300, 1000, 3000, 10000, 30000)
            if s <= h2["step"][-1]
        },
        "rates": {
            "L0 per step (fit, predicted)": [
                round(rates["L0"]["rate"], 6),
                round(rates["L0_predicted_rate"], 6),
            ],
            "L - L* per step (fit, asymptotic prediction)": [
                round(rates["excess"]["rate"], 6),
                round(rates["excess_predicted_rate"], 6),
            ],
            "norm W_ov slope / eta0": round(rates["norm_ov"]["slope"] / run["eta0"], 4),
            "norm W_kq slope / eta": round(rates["norm_kq"]["slope"] / run["eta"], 4),
            "direction exponent alpha (W_ov, W_kq)": [
                round(rates["dir_ov"]["alpha"], 3),
                round(rates["dir_kq"]["alpha"], 3),
            ],
        },
    }


def _no_jobs(n_seeds, steps):
    return []


def _cli_run() -> dict:
    return figure2_run(steps=CLI_STEPS, record_every=10)


def _fig2_figure(results, jobs):
    run = _cli_run()
    return plot_figure2(run, figure2_rates(run))


def _fig2_summary(results, jobs) -> dict:
    run = _cli_run()
    return _fig2_summary_numbers(run, figure2_rates(run))


register(
    Experiment(
        id="ntp-2",
        description=(
            "NTP-2: two-stage normalised GD at |V| = d = 20, six panels with fitted rates "
            f"(stage 2: {CLI_STEPS} steps; no transformer runs)"
        ),
        jobs=_no_jobs,
        figure=_fig2_figure,
        summary=_fig2_summary,
        default_seeds=0,
        chapter="07_max_margin",
    )
)


# --------------------------------------------------------------------------------------------
# ntp-shift: dataset shift and the transitive closure of the training orders
# --------------------------------------------------------------------------------------------


def shift_eval(
    run: dict, n_test: int = 2000, min_len: int = 9, max_len: int = 16, seed: int = 1
) -> dict:
    """Test a trained run on longer sentences of the same language (same collocation and
    orders), and split them by whether the training orders determine their optimal token.

    Returns accuracies (all, determined, undetermined), the determined fraction, the chance
    level of guessing a token of the sentence (mean of 1/length), whether the closure's top
    token is the true optimal one, and per-length arrays.
    """
    data = run["data"]
    K = data.n_tokens
    test = ntp.make_dataset(
        K, n_test, min_len, max_len, seed, collocation=data.collocation, priority=data.priority
    )
    pred = ntp.predict(run["W_ov"], run["W_kq"], test.batch())
    ok = pred == test.next_tokens
    closure = ntp.transitive_closure(
        ntp.training_relations(data.tokens, data.lengths, data.optimal, K)
    )
    det, top = ntp.determined(test.tokens, test.lengths, closure)
    direct, _ = ntp.determined(
        test.tokens,
        test.lengths,
        ntp.training_relations(data.tokens, data.lengths, data.optimal, K),
    )
    lengths = np.arange(min_len, max_len + 1)
    by_len = {
        k: np.array(
            [
                np.mean(v[(test.lengths == L) & s]) if np.any((test.lengths == L) & s) else np.nan
                for L in lengths
            ]
        )  # fmt: skip
        for k, v, s in (
            ("accuracy", ok, np.ones_like(ok)),
            ("accuracy_determined", ok, det),
            ("accuracy_undetermined", ok, ~det),
            ("determined", det, np.ones_like(ok)),
        )
    }
    return {
        "n_test": n_test,
        "accuracy": float(ok.mean()),
        "determined_fraction": float(det.mean()),
        "determined_directly_fraction": float(direct.mean()),
        "accuracy_determined": float(ok[det].mean()) if det.any() else float("nan"),
        "accuracy_undetermined": float(ok[~det].mean()) if (~det).any() else float("nan"),
        "closure_top_is_optimal": float(np.mean(top[det] == test.optimal[det])),
        "chance": float(np.mean(1.0 / test.lengths)),
        "lengths": lengths,
        **{f"{k}_by_length": v for k, v in by_len.items()},
    }


def plot_shift(shift: dict) -> Figure:
    """Left: accuracies and the determined fraction; right: accuracy against test length."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(COLUMN, 7.2), layout="constrained")
    names = [
        "all test\nsentences",
        "determined\nby closure",
        "not\ndetermined",
        "chance\n(1/length)",
    ]
    vals = [
        shift["accuracy"],
        shift["accuracy_determined"],
        shift["accuracy_undetermined"],
        shift["chance"],
    ]
    bars = a1.bar(names, vals, color=["#555555", STAGE1_COLOR, "#ff7f0e", "#bbbbbb"])
    for b, v in zip(bars, vals, strict=True):
        a1.text(b.get_x() + b.get_width() / 2, v + 0.02, f"{v:.3f}", ha="center", fontsize=SMALL)
    a1.set_ylim(0, 1.12)
    a1.set_ylabel("next-token accuracy")
    a1.set_title(
        f"lengths {shift['lengths'][0]}..{shift['lengths'][-1]}: "
        f"{shift['determined_fraction']:.1%} determined by the closure"
    )
    L = shift["lengths"]
    a2.plot(L, shift["accuracy_by_length"], "o-", color="#555555", label="all")
    a2.plot(L, shift["accuracy_determined_by_length"], "s-", color=STAGE1_COLOR,
            label="determined")  # fmt: skip
    a2.plot(L, shift["accuracy_undetermined_by_length"], "^-", color="#ff7f0e",
            label="not determined")  # fmt: skip
    a2.plot(L, shift["determined_by_length"], ":", color=STAGE1_COLOR,
            label="fraction determined")  # fmt: skip
    a2.plot(L, 1.0 / L, "--", color="#999999", label="chance 1/length")
    a2.set_ylim(0, 1.05)
    a2.set_xlabel("test sentence length")
    a2.set_ylabel("accuracy / fraction")
    a2.set_title("by length (training lengths were 2..8)")
    a2.legend(loc="center right", fontsize=SMALL)
    return fig


def _shift_figure(results, jobs):
    return plot_shift(shift_eval(_cli_run()))


def _shift_summary(results, jobs) -> dict:
    s = shift_eval(_cli_run())
    keys = ("accuracy", "determined_fraction", "determined_directly_fraction",
            "accuracy_determined", "accuracy_undetermined", "closure_top_is_optimal", "chance")  # fmt: skip
    return {"stage-2 steps": CLI_STEPS, **{k: round(s[k], 4) for k in keys}}


register(
    Experiment(
        id="ntp-shift",
        description="NTP: dataset shift, train on lengths 2..8 and test on 9..16 (no transformer runs)",
        jobs=_no_jobs,
        figure=_shift_figure,
        summary=_shift_summary,
        default_seeds=0,
        chapter="07_max_margin",
    )
)


# --------------------------------------------------------------------------------------------
# ntp-joint: joint normalised GD vs the two-stage algorithm
# --------------------------------------------------------------------------------------------


@_cached
def joint_run(
    n_tokens: int = 20,
    n_sentences: int = 200,
    steps0: int = 1000,
    steps: int = 3000,
    seed: int = 0,
    record_every: int = 10,
) -> dict:
    """Two-stage (``steps0`` + ``steps``) against joint normalised GD on ``L + L_0`` for
    ``steps0 + steps`` steps of equal length, chosen so that both travel the same total
    Frobenius distance ``steps0 eta_0 + steps eta`` (our choice of a fair comparison)."""
    two = figure2_run(n_tokens, n_sentences, steps0=steps0, steps=steps, seed=seed,
                      record_every=record_every)  # fmt: skip
    n = steps0 + steps
    eta_joint = (steps0 * two["eta0"] + steps * two["eta"]) / n
    joint = ntp.joint_ngd(
        two["data"], eta=eta_joint, steps=n, seed=seed, record_every=record_every,
        targets=(two["W_ov*"], two["W_kq*"]),
    )  # fmt: skip
    data = two["data"]
    return {
        "two_stage": two,
        "joint": joint,
        "eta_joint": eta_joint,
        "two_stage_final": {
            "L": ntp.loss(two["W_ov"], two["W_kq"], data.batch()),
            "L0": ntp.collocation_loss(two["W_ov"], data),
            "cos_ov": ntp.cosine(two["W_ov"], two["W_ov*"]),
            "cos_kq": ntp.cosine(two["W_kq"], two["W_kq*"]),
        },
        "joint_final": {
            "L": ntp.loss(joint["W_ov"], joint["W_kq"], data.batch()),
            "L0": ntp.collocation_loss(joint["W_ov"], data),
            "cos_ov": ntp.cosine(joint["W_ov"], two["W_ov*"]),
            "cos_kq": ntp.cosine(joint["W_kq"], two["W_kq*"]),
        },
    }


def plot_joint(jr: dict) -> Figure:
    """Loss ``L`` and the directions of both matrices against the total step count."""
    two, jh = jr["two_stage"], jr["joint"]["history"]
    h1, h2 = two["stage1"], two["stage2"]
    T0 = int(h1["step"][-1])
    fig, axes = plt.subplot_mosaic([["L", "L"], ["ov", "kq"]], figsize=(COLUMN, 6.6),
                                   layout="constrained")  # fmt: skip
    axes = [axes["L"], axes["ov"], axes["kq"]]
    ax = axes[0]
    ax.semilogy(jh["step"], jh["loss_L"], color=JOINT_COLOR, lw=1.6, label="joint")
    ax.semilogy(h2["step"] + T0, h2["loss"], color=STAGE2_COLOR, lw=1.6,
                label="two-stage (stage 2)")  # fmt: skip
    ax.semilogy(h2["step"] + T0, h2["floor"], color=STAGE2_COLOR, lw=1, ls=":",
                label="two-stage floor $L^*$")  # fmt: skip
    ax.axvline(T0, color="0.7", lw=0.8)
    ax.set_title("loss $L$ on the sentences")
    ax.set_ylabel("nats")
    ax.legend(loc="lower left", fontsize=SMALL)
    for ax, m, lab in ((axes[1], "ov", "W_{ov}"), (axes[2], "kq", "W_{kq}")):
        ok = jh["step"] >= 1
        ax.loglog(jh["step"][ok], jh[f"dist_{m}"][ok], color=JOINT_COLOR, lw=1.6, label="joint")
        h, off = (h1, 0) if m == "ov" else (h2, T0)
        ok = h["step"] >= 1
        ax.loglog(h["step"][ok] + off, h[f"dist_{m}"][ok], color=STAGE1_COLOR if m == "ov"
                  else STAGE2_COLOR, lw=1.6, label="two-stage")  # fmt: skip
        ax.set_title(f"direction of ${lab}$\ntowards ${lab}^*$")
        ax.set_ylabel("normalised distance")
        ax.legend(loc="lower left", fontsize=SMALL)
    for ax in axes:
        ax.set_xlabel("total step")
    axes[0].xaxis.set_major_locator(MaxNLocator(5))
    return fig


def _joint_figure(results, jobs):
    return plot_joint(joint_run())


def _joint_summary(results, jobs) -> dict:
    jr = joint_run()
    rnd = {k: float(f"{v:.4g}") for k, v in jr["two_stage_final"].items()}
    rnd_j = {k: float(f"{v:.4g}") for k, v in jr["joint_final"].items()}
    return {"eta_joint": round(jr["eta_joint"], 6), "two-stage": rnd, "joint": rnd_j}


register(
    Experiment(
        id="ntp-joint",
        description="NTP: joint normalised GD vs the two-stage algorithm (no transformer runs)",
        jobs=_no_jobs,
        figure=_joint_figure,
        summary=_joint_summary,
        default_seeds=0,
        chapter="07_max_margin",
    )
)


# --------------------------------------------------------------------------------------------
# ntp-markov: the bridge to Markov chains
# --------------------------------------------------------------------------------------------


@_cached
def bridge_run(
    p: float = 0.5,
    q: float = 0.8,
    max_len: int = 6,
    steps: int = 5000,
    lr: float = 1.0,
    init_scale: float = 0.02,
    seed: int = 0,
    record_every: int = 10,
) -> dict:
    """Plain GD of the same model (K = d = 2) on the deterministic alternating chain
    (p = q = 1, realisable) and on ``BinaryChain(p, q)`` (not realisable).

    Data: every sentence of length 1..``max_len`` with its stationary probability and the exact
    next-token law of its last token (so the loss is the exact expected cross-entropy, with
    minimum the entropy rate). ``W_ov`` starts small and random, ``W_kq`` at 0. Also returns
    the finite optimum of the output layer for the binary chain, ``W_ov^opt[:, x] = log P(x, .)``
    centred (softmax ignores a constant per column).
    """
    out = {}
    for name, chain in (("deterministic", BinaryChain(1.0, 1.0)), ("binary", BinaryChain(p, q))):
        batch = ntp.markov_sentence_batch(chain, max_len)
        res = ntp.gradient_descent(
            batch, lr=lr, steps=steps, W_ov0=ntp.small_random(2, init_scale, seed),
            W_kq0=np.zeros((2, 2)), record_every=record_every,
        )  # fmt: skip
        out[name] = {"chain": chain, "n_sentences": len(batch), **res}
    logk = np.log(BinaryChain(p, q).kernel).T  # column x: log P(x, .)
    out["W_ov_opt"] = logk - logk.mean(axis=0, keepdims=True)
    out["entropy_rate"] = BinaryChain(p, q).entropy_rate
    out["pq"] = (p, q)
    return out


def plot_bridge(br: dict) -> Figure:
    """Loss and the norms of both matrices for the two chains (log step axis)."""
    fig, axes = plt.subplot_mosaic([["L", "L"], ["ov", "kq"]], figsize=(COLUMN, 6.6),
                                   layout="constrained")  # fmt: skip
    axes = [axes["L"], axes["ov"], axes["kq"]]
    p, q = br["pq"]
    cols = {"deterministic": "#2ca02c", "binary": "#d62728"}
    labels = {"deterministic": "deterministic (p = q = 1)", "binary": f"binary ({p}, {q})"}
    for name in ("deterministic", "binary"):
        h = br[name]["history"]
        ok = h["step"] >= 1
        t = h["step"][ok]
        axes[0].semilogx(t, h["loss"][ok], color=cols[name], lw=1.6, label=labels[name])
        axes[1].semilogx(t, h["norm_ov"][ok], color=cols[name], lw=1.6, label=labels[name])
        axes[2].semilogx(t, h["norm_kq"][ok], color=cols[name], lw=1.6, label=labels[name])
    axes[0].axhline(br["entropy_rate"], color="k", ls="--", lw=1,
                    label=f"entropy rate of ({p}, {q}): {br['entropy_rate']:.4f}")  # fmt: skip
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("loss (exact expected cross-entropy)")
    axes[0].set_ylabel("nats")
    axes[1].axhline(np.linalg.norm(br["W_ov_opt"]), color="k", ls="--", lw=1,
                    label=r"$\|W_{ov}^{opt}\|$ (binary)")  # fmt: skip
    axes[1].set_title("$\\|W_{ov}\\|_F$:\ngrows only if realisable")
    axes[2].set_title("$\\|W_{kq}\\|_F$: attention\nmust single out $x_L$")
    for ax in axes:
        ax.set_xlabel("GD step")
    axes[0].legend(fontsize=SMALL, loc="best")
    axes[1].legend(fontsize=SMALL, loc="best")
    return fig


def _bridge_numbers(br: dict) -> dict:
    out = {}
    for name in ("deterministic", "binary"):
        h = br[name]["history"]
        i = int(np.searchsorted(h["step"], h["step"][-1] // 5))
        out[name] = {
            "sentences": br[name]["n_sentences"],
            f"loss at steps {int(h['step'][i])}, {int(h['step'][-1])}": [
                float(f"{h['loss'][i]:.4g}"), float(f"{h['loss'][-1]:.4g}")],
            "norm W_ov at the same steps": [round(float(h["norm_ov"][i]), 4),
                                            round(float(h["norm_ov"][-1]), 4)],
            "norm W_kq at the same steps": [round(float(h["norm_kq"][i]), 4),
                                            round(float(h["norm_kq"][-1]), 4)],
        }  # fmt: skip
    W = br["binary"]["W_ov"]
    out["binary"]["entropy rate"] = round(br["entropy_rate"], 4)
    out["binary"]["|W_ov (centred) - W_ov^opt|"] = float(
        f"{np.linalg.norm(W - W.mean(axis=0, keepdims=True) - br['W_ov_opt']):.3g}"
    )
    out["binary"]["norm W_ov^opt"] = round(float(np.linalg.norm(br["W_ov_opt"])), 4)
    return out


def _bridge_figure(results, jobs):
    return plot_bridge(bridge_run())


def _bridge_summary(results, jobs) -> dict:
    return _bridge_numbers(bridge_run())


register(
    Experiment(
        id="ntp-markov",
        description=(
            "NTP bridge: the same model on the deterministic chain (loss -> 0) and on "
            "BinaryChain(0.5, 0.8) (loss -> entropy rate), plain GD (no transformer runs)"
        ),
        jobs=_no_jobs,
        figure=_bridge_figure,
        summary=_bridge_summary,
        default_seeds=0,
        chapter="07_max_margin",
    )
)


# --------------------------------------------------------------------------------------------
# The schematic of a realisable dataset (in the spirit of the paper's Figure 1)
# --------------------------------------------------------------------------------------------


def plot_dataset_schematic(data: ntp.NTPDataset, n_show: int = 6) -> Figure:
    """Left: sentences with the optimal token framed and the next token; right: the
    collocation ``x -> n(x)`` as arrows between two copies of the vocabulary."""
    K = data.n_tokens
    n_show = min(n_show, len(data))
    Lmax = int(data.lengths[:n_show].max())
    fig, (a1, a2) = plt.subplots(
        1, 2, figsize=(COLUMN, 0.6 * n_show + 1.4), gridspec_kw={"width_ratios": [Lmax + 3, 3]}
    )
    fig.subplots_adjust(left=0.02, right=0.98, top=0.84, bottom=0.02, wspace=0.05)
    for r in range(n_show):
        y = n_show - 1 - r
        L = int(data.lengths[r])
        x0 = Lmax - L  # right-align so the queries line up
        for i in range(L):
            tok = int(data.tokens[r, i])
            is_opt = tok == int(data.optimal[r])
            is_q = i == L - 1
            face = "#fde0dd" if is_opt else ("#e8eef7" if is_q else "white")
            a1.add_patch(Rectangle((x0 + i + 0.05, y + 0.1), 0.9, 0.8, facecolor=face,
                                   edgecolor="#d62728" if is_opt else "0.4",
                                   lw=2.2 if is_opt else 0.8))  # fmt: skip
            a1.text(x0 + i + 0.5, y + 0.5, str(tok), ha="center", va="center", fontsize=10)
        a1.add_patch(FancyArrowPatch((Lmax + 0.1, y + 0.5), (Lmax + 1.0, y + 0.5),
                                     arrowstyle="-|>", mutation_scale=12, color="0.3"))  # fmt: skip
        a1.add_patch(Rectangle((Lmax + 1.1, y + 0.1), 0.9, 0.8, facecolor="#fff5cc",
                               edgecolor="0.4", lw=0.8))  # fmt: skip
        a1.text(Lmax + 1.55, y + 0.5, str(int(data.next_tokens[r])), ha="center", va="center",
                fontsize=10)  # fmt: skip
    a1.set_xlim(-0.2, Lmax + 2.3)
    a1.set_ylim(-0.3, n_show + 0.5)
    a1.axis("off")
    a1.set_title(
        "sentences: query = last token (blue), optimal token x*\nframed red, next token n(x*)",
        fontsize=SMALL,
    )
    n = data.collocation
    height = max(n_show, 1)
    ys = np.linspace(height - 0.1, 0.1, K) if K > 1 else np.array([height / 2])
    for x in range(K):
        for col in (0, 1):
            a2.text(col, ys[x], str(x), ha="center", va="center", fontsize=SMALL,
                    bbox={"boxstyle": "circle,pad=0.25", "fc": "white", "ec": "0.5", "lw": 0.6})  # fmt: skip
        if n[x] >= 0:
            a2.annotate("", xy=(0.88, ys[n[x]]), xytext=(0.12, ys[x]),
                        arrowprops={"arrowstyle": "-|>", "color": "#1f77b4", "lw": 0.9})  # fmt: skip
    a2.text(0, height + 0.15, "$x$", ha="center", fontsize=SMALL)
    a2.text(1, height + 0.15, "$n(x)$", ha="center", fontsize=SMALL)
    a2.set_xlim(-0.3, 1.3)
    a2.set_ylim(-0.3, height + 0.5)
    a2.axis("off")
    a2.set_title("collocation\n$x \\to n(x)$", fontsize=SMALL)
    return fig
