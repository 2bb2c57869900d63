"""Plotting functions: data in, matplotlib figure out.

Every function takes arrays (or a few scalars), draws, and returns the ``Figure``; none samples,
trains or reads files. Colours are shared across the book: the entropy rate (bigram loss, the
global minimum) is green, the unigram loss (the local minimum) is red.

Figures are drawn for the width they are shown at: at most :data:`COLUMN` inches wide (the text
column of the HTML book at the notebooks' 90 dpi), a few data-dense ones at most :data:`WIDE`
(a cell tagged ``full-width``), and no text smaller than :data:`SMALL` points, so that no text
renders under 11 px (the browser test computes it from each PNG's recorded font size and dpi).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

__all__ = [
    "COLUMN",
    "WIDE",
    "SMALL",
    "BIGRAM_COLOR",
    "UNIGRAM_COLOR",
    "BIT_CMAP",
    "plot_sample_paths",
    "plot_frequency_convergence",
    "plot_loss_maps",
    "plot_chain_explorer",
    "plot_loss_estimators",
    "plot_context_losses",
]

#: width of a figure in the text column, inches (666 px at 90 dpi; the column is 688 px wide)
COLUMN = 7.4
#: width of a figure in a ``full-width`` cell, inches (the content area is 932 px wide)
WIDE = 10.0
#: the smallest font size of any text in a figure, points (11.25 px at 90 dpi)
SMALL = 9

BIGRAM_COLOR = "#2ca02c"
UNIGRAM_COLOR = "#d62728"
BIT_CMAP = ListedColormap(["#f2f2f2", "#1f4e79"])


def _bit_raster(ax, bits: np.ndarray, title: str | None = None) -> None:
    ax.imshow(bits, cmap=BIT_CMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(bits.shape[0]))
    ax.set_yticklabels([f"seq {i + 1}" for i in range(bits.shape[0])], fontsize=SMALL)
    ax.set_xlabel("position n")
    if title:
        ax.set_title(title, fontsize=10)


def plot_sample_paths(paths: Mapping[str, np.ndarray]) -> Figure:
    """One raster per chain: rows are sequences, dark cells are 1s.

    ``paths`` maps a panel title to an integer array (n_sequences, length).
    """
    n = len(paths)
    height = 1.0 + 0.4 * sum(len(v) for v in paths.values())
    fig, axes = plt.subplots(n, 1, figsize=(COLUMN, height))
    axes = np.atleast_1d(axes)
    for ax, (title, bits) in zip(axes, paths.items(), strict=True):
        _bit_raster(ax, np.asarray(bits), title)
    fig.tight_layout()
    return fig


def plot_frequency_convergence(
    est: Mapping[str, np.ndarray], p: float, q: float, n_sigma: float = 2.0
) -> Figure:
    """Running estimates p_hat, q_hat against the number of transitions, with +-n_sigma bands.

    ``est`` is the output of :func:`markovformer.markov.running_transition_estimates`.
    """
    fig, ax = plt.subplots(figsize=(COLUMN, 3.8))
    t = est["t"]
    for name, true, visits, color in (
        ("p", p, est["visits_0"], "C0"),
        ("q", q, est["visits_1"], "C1"),
    ):
        hat = est[f"{name}_hat"]
        ax.plot(t, hat, color=color, lw=1.2, label=rf"$\hat {name}$ (running estimate)")
        se = np.sqrt(true * (1 - true) / np.maximum(visits, 1))
        ax.fill_between(t, true - n_sigma * se, true + n_sigma * se, color=color, alpha=0.15, lw=0)
        ax.axhline(true, color=color, ls="--", lw=1, label=f"true {name} = {true:g}")
    ax.set_xscale("log")
    ax.set_xlim(t[0] * 10, t[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("number of observed transitions")
    ax.set_ylabel("estimated switching probability")
    ax.set_title(rf"frequencies converge at rate $1/\sqrt{{n}}$ (bands: $\pm${n_sigma:g} s.e.)")
    ax.legend(fontsize=SMALL, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def _unit_square_axes(ax) -> None:
    ax.plot([0, 1], [1, 0], color="k", lw=1.2, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$p = \Pr(1 \mid 0)$")
    ax.set_ylabel(r"$q = \Pr(0 \mid 1)$")


def plot_loss_maps(
    p: np.ndarray,
    q: np.ndarray,
    entropy_rate: np.ndarray,
    unigram: np.ndarray,
    marks: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """Heat maps over the unit square: entropy rate, unigram loss and their gap.

    ``p`` and ``q`` are 1-D grids; the loss arrays have shape (len(q), len(p)). The dashed line is
    p + q = 1, where the chain is i.i.d. and the gap vanishes.
    """
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN, 6.6))
    axes = axes.ravel()
    axes[3].set_visible(False)
    extent = (p[0], p[-1], q[0], q[-1])
    panels = (
        ("entropy rate (bigram loss)", entropy_rate, "viridis", (0, np.log(2))),
        ("stationary entropy (unigram loss)", unigram, "viridis", (0, np.log(2))),
        ("gap: unigram $-$ bigram", unigram - entropy_rate, "magma", None),
    )
    for ax, (title, z, cmap, lim) in zip(axes[:3], panels, strict=True):
        vmin, vmax = lim if lim else (0, float(np.nanmax(z)))
        im = ax.imshow(z, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax)
        fig.colorbar(im, ax=ax, shrink=0.8, label="nats")
        _unit_square_axes(ax)
        ax.set_title(title)
        for label, (pm, qm) in (marks or {}).items():
            ax.plot(pm, qm, "o", ms=5, mec="w", mfc="k")
            left = pm > 0.5  # keep labels inside the square
            ax.annotate(
                label,
                (pm, qm),
                xytext=(-6 if left else 6, -4 if left else 4),
                textcoords="offset points",
                color="w",
                fontsize=SMALL,
                ha="right" if left else "left",
                va="top" if left else "bottom",
            )
    axes[2].text(0.25, 0.30, "sticky\n$p+q<1$", color="w", fontsize=SMALL, ha="center")
    axes[2].text(0.72, 0.62, "switching\n$p+q>1$", color="w", fontsize=SMALL, ha="center")
    fig.tight_layout()
    return fig


def plot_chain_explorer(
    bits: np.ndarray,
    p: float,
    q: float,
    entropy_rate: float,
    unigram: float,
    gap_grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Figure:
    """The figure behind chapter 1's sliders: a sample path, the two loss levels, (p, q) on a map."""
    fig = plt.figure(figsize=(WIDE, 3.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[2.6, 1.0, 1.1])
    ax = fig.add_subplot(grid[0])
    corr = 1 - p - q
    kind = "i.i.d." if abs(corr) < 1e-9 else ("switching" if corr < 0 else "sticky")
    _bit_raster(
        ax, bits, f"samples of the chain p={p:.2f}, q={q:.2f} ({kind}, lag-1 corr {corr:+.2f})"
    )
    ax = fig.add_subplot(grid[1])
    bars = ax.bar(
        ["bigram\n(entropy rate)", "unigram\n(stationary\nentropy)"],
        [entropy_rate, unigram],
        color=[BIGRAM_COLOR, UNIGRAM_COLOR],
    )
    for b, v in zip(bars, (entropy_rate, unigram), strict=True):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.4f}", ha="center", fontsize=SMALL)
    ax.axhline(np.log(2), color="gray", ls=":", lw=1)
    ax.text(-0.5, np.log(2) + 0.015, "ln 2", fontsize=SMALL, color="gray")
    ax.set_ylim(0, 0.85)
    ax.set_ylabel("loss (nats)")
    ax.set_title(f"gap {unigram - entropy_rate:.4f} nats")
    ax = fig.add_subplot(grid[2])
    if gap_grid is not None:
        gp, gq, gap = gap_grid
        ax.imshow(gap, origin="lower", extent=(gp[0], gp[-1], gq[0], gq[-1]), cmap="magma")
    _unit_square_axes(ax)
    ax.plot(p, q, "o", ms=8, mfc="w", mec="k")
    ax.set_title("(p, q) on the gap map")
    fig.tight_layout()
    return fig


def plot_loss_estimators(
    samples: Mapping[str, np.ndarray], reference: Mapping[str, float] | None = None
) -> Figure:
    """Histograms of per-batch loss estimates (e.g. sampled-target vs exact conditional)."""
    fig, ax = plt.subplots(figsize=(COLUMN, 3.6))
    lo = min(float(np.min(v)) for v in samples.values())
    hi = max(float(np.max(v)) for v in samples.values())
    bins = np.linspace(lo, hi, 60)
    for (label, vals), color in zip(samples.items(), ("C0", "C1", "C2", "C4"), strict=False):
        ax.hist(vals, bins=bins, alpha=0.55, color=color, label=f"{label} (sd {np.std(vals):.4f})")
    for label, v in (reference or {}).items():
        ax.axvline(v, color="k", ls="--", lw=1)
        ax.annotate(
            label,
            (v, ax.get_ylim()[1] * 0.9),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=SMALL,
        )
    ax.set_xlabel("loss of one batch (nats)")
    ax.set_ylabel("number of batches")
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_context_losses(curves: Mapping[str, Sequence[float]], max_context: int) -> Figure:
    """Best achievable loss against the number m of past symbols a predictor may look at."""
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    m = np.arange(max_context + 1)
    for label, vals in curves.items():
        ax.plot(m, vals, "o-", label=label)
    ax.set_xlabel("context length m (symbols the predictor sees)")
    ax.set_ylabel("best achievable loss (nats)")
    ax.set_xticks(m)
    ax.legend(fontsize=SMALL)
    ax.set_title("m = 0: unigram loss; m = order: entropy rate")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Training curves (chapters 2 and 5)
# --------------------------------------------------------------------------------------------


def draw_loss_levels(ax, rate: float, unigram: float, labels: bool = True) -> None:
    """Horizontal lines at the entropy rate (green) and the unigram loss (red)."""
    ax.axhline(
        rate,
        color=BIGRAM_COLOR,
        ls="--",
        lw=1,
        label=f"entropy rate {rate:.4f}" if labels else None,
    )
    ax.axhline(
        unigram,
        color=UNIGRAM_COLOR,
        ls="--",
        lw=1,
        label=f"unigram loss {unigram:.4f}" if labels else None,
    )


def draw_loss_curves(
    ax,
    curves: Mapping[str, np.ndarray],
    rate: float,
    unigram: float,
    colors: Sequence[str] = ("C0", "C1", "C4", "C5"),
    individual: bool = True,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Mean +- std (band) of loss curves over seeds, thin lines for single runs, loss levels.

    ``curves`` maps a label to an array (n_seeds, n_steps); steps are 1-based.
    """
    for (label, arr), color in zip(curves.items(), colors, strict=False):
        arr = np.atleast_2d(arr)
        steps = np.arange(1, arr.shape[1] + 1)
        if individual and arr.shape[0] > 1:
            for row in arr:
                ax.plot(steps, row, color=color, lw=0.4, alpha=0.35)
        mean, sd = np.nanmean(arr, 0), np.nanstd(arr, 0)
        ax.plot(steps, mean, color=color, lw=1.6, label=f"{label} (n={arr.shape[0]})")
        ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    draw_loss_levels(ax, rate, unigram)
    ax.set_xlabel("training step")
    ax.set_ylabel("exact conditional loss (nats)")
    if ylim is None:
        span = unigram - rate
        ylim = (rate - 0.4 * span - 0.005, max(unigram + 0.6 * span, rate + 0.02) + 0.01)
    ax.set_ylim(*ylim)
    ax.legend(fontsize=SMALL, loc="upper right")


def plot_loss_panels(panels: Sequence[dict], ncols: int | None = None) -> Figure:
    """Several loss-curve panels; each dict has keys curves, rate, unigram, title (and ylim).
    At most two panels a row (the text column's width)."""
    n = len(panels)
    ncols = ncols or min(n, 2)
    nrows = -(-n // ncols)
    width = 5.0 if ncols == 1 else COLUMN
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.7 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_loss_curves(
            ax, panel["curves"], panel["rate"], panel["unigram"], ylim=panel.get("ylim")
        )
        ax.set_title(panel["title"])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_position_probes(panels: Sequence[dict]) -> Figure:
    """Predicted Pr(x_{n+1} = 1 | x_n) against the position n, with the true values.

    Each panel dict: ``title``, ``p``, ``q``, ``pi1`` and ``probes``, a mapping label -> array
    (2, N) with rows x_n = 0 and x_n = 1 (mean over seeds).
    """
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN, 3.3 * nrows + 0.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, panel in zip(axes.flat, panels, strict=False):
        for (label, pr), color in zip(panel["probes"].items(), ("C0", "C1", "C4"), strict=False):
            n = np.arange(1, pr.shape[-1] + 1)
            ax.plot(n, pr[0], color=color, lw=1.1, label=rf"{label}: $x_n = 0$")
            ax.plot(n, pr[1], color=color, lw=1.1, ls=":", label=rf"{label}: $x_n = 1$")
        ax.axhline(panel["p"], color="k", lw=0.8, ls="--")
        ax.axhline(1 - panel["q"], color="k", lw=0.8, ls="--")
        ax.axhline(panel["pi1"], color=UNIGRAM_COLOR, lw=1.0, ls="-.")
        # the levels' labels inside the axes, at the right end, above their lines
        right = ax.get_yaxis_transform()  # x in axes coordinates, y in data
        for y, text, color in (
            (panel["p"], f"p = {panel['p']:g}", "k"),
            (1 - panel["q"], f"1-q = {1 - panel['q']:g}", "k"),
            (panel["pi1"], rf"$\pi_1$ = {panel['pi1']:.3f}", UNIGRAM_COLOR),
        ):
            ax.text(0.99, y + 0.01, text, transform=right, ha="right", va="bottom",
                    fontsize=SMALL, color=color)  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_xscale("log")
        ax.set_xlabel("position n")
        ax.set_ylabel(r"predicted $\Pr(x_{n+1} = 1)$")
        ax.set_title(panel["title"])
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=SMALL)  # fmt: skip
    return fig


def plot_grid_maps(
    maps: Mapping[str, np.ndarray],
    ps: np.ndarray,
    qs: np.ndarray,
    label: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "RdYlGn_r",
    annotate: bool = True,
) -> Figure:
    """Heat maps of a value over a (p, q) grid; arrays have shape (len(qs), len(ps)). One map
    fills the text column, two or more a full-width cell; each cell is annotated with its value
    (two decimals, no leading 0)."""
    n = len(maps)
    width = COLUMN if n == 1 else WIDE
    fig, axes = plt.subplots(1, n, figsize=(width, width / n * 0.92 + 0.5), squeeze=False,
                             layout="constrained")  # fmt: skip
    dp, dq = (ps[1] - ps[0]) / 2, (qs[1] - qs[0]) / 2
    for ax, (title, z) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(
            np.ma.masked_invalid(z), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
            extent=(ps[0] - dp, ps[-1] + dp, qs[0] - dq, qs[-1] + dq),
        )  # fmt: skip
        if annotate:
            for i, q in enumerate(qs):
                for j, p in enumerate(ps):
                    if np.isfinite(z[i, j]):
                        v = round(float(z[i, j]), 2) + 0.0  # no "-0.00"
                        text = f"{v:.2f}".replace("0.", ".", 1) if abs(v) < 1 else f"{v:.2f}"
                        ax.text(p, q, text, ha="center", va="center", fontsize=SMALL)
        ax.plot([0, 1], [1, 0], color="k", lw=1, ls="--")
        ax.set_xlim(ps[0] - dp, ps[-1] + dp)
        ax.set_ylim(qs[0] - dq, qs[-1] + dq)
        ax.set_xlabel("p")
        ax.set_ylabel("q")
        ax.set_title(title)
        ticks = ps[::2] if len(ps) > 5 else ps
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label=label)
    return fig


def draw_survival(ax, survival, label: str = "", color: str = "k", marks: Sequence[int] = ()):
    """Kaplan-Meier fraction still on the plateau (an :class:`markovformer.analysis.Survival`)
    with its confidence band, the median escape step if reached, and values at ``marks``."""
    st = np.append(survival.steps, survival.horizon)
    sv = np.append(survival.surviving, survival.surviving[-1])
    ax.step(st, sv, where="post", color=color, label=label or None)
    lo = np.append(survival.low, survival.low[-1])
    hi = np.append(survival.high, survival.high[-1])
    ax.fill_between(st, lo, hi, step="post", color=color, alpha=0.15, lw=0)
    if survival.median is not None:
        ax.plot(survival.median, 0.5, "|", color=color, ms=12, mew=2)
    for m in marks:
        v = survival.at(m)
        ax.plot(m, v, "o", color=color, ms=4)
        ax.annotate(f"{v:.2f}", (m, v), xytext=(3, 4), textcoords="offset points",
                    fontsize=SMALL)  # fmt: skip
    ax.axhline(0.5, color="gray", lw=0.6, ls=":")
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlim(0, survival.horizon * 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction still on the plateau")


def plot_plateau(
    curves: np.ndarray,
    rate: float,
    unigram: float,
    marks: Sequence[int],
    title: str = "",
    survival=None,
) -> Figure:
    """Single-run loss curves, and the Kaplan-Meier fraction not yet escaped against the step
    (``survival``: an :class:`markovformer.analysis.Survival` of these curves)."""
    from .analysis import plateau_survival

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(COLUMN, 3.8), width_ratios=[1.3, 1])
    steps = np.arange(1, curves.shape[1] + 1)
    for row in curves:
        ax.plot(steps, row, lw=0.7, alpha=0.7)
    mid = unigram - 0.5 * (unigram - rate)
    ax.axhline(mid, color="gray", lw=0.8, ls=":", label="midpoint (escape threshold)")
    draw_loss_levels(ax, rate, unigram)
    ax.set_ylim(rate - 0.02, unigram + 0.04)
    ax.set_xlabel("training step")
    ax.set_ylabel("exact conditional loss (nats)")
    ax.set_title(title or f"{curves.shape[0]} runs")
    ax.legend(fontsize=SMALL, loc="upper right")
    survival = survival or plateau_survival(curves, unigram, rate)
    draw_survival(ax2, survival, marks=marks)
    ax2.set_title(survival.describe().replace(" (", "\n("), fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_survival_panels(panels: Sequence[dict], marks: Sequence[int] = ()) -> Figure:
    """One panel per dict ``{"title", "arms": {label: Survival}}``: Kaplan-Meier curves side by side."""
    n = len(panels)
    ncols = min(n, 2)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN if ncols > 1 else 5.0, 3.6 * nrows),
                             squeeze=False)  # fmt: skip
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    colors = ("k", UNIGRAM_COLOR, "tab:blue", "tab:green")
    for ax, panel in zip(axes.flat, panels, strict=False):
        for (label, surv), color in zip(panel["arms"].items(), colors, strict=False):
            draw_survival(ax, surv, label=label, color=color, marks=marks)
        ax.set_title(panel.get("title", ""))
        ax.legend(fontsize=SMALL, loc="lower left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Rank-one structure and weights (chapter 3)
# --------------------------------------------------------------------------------------------


def plot_rank_one(
    steps: np.ndarray, arms: Mapping[str, Mapping[str, np.ndarray]], titles: Mapping[str, str]
) -> Figure:
    """Top-singular-value energy fraction against the step, one panel per matrix.

    ``arms`` maps an arm label to {matrix name: array (seeds, n_steps)}; ``titles`` maps the
    matrix names to panel titles (and fixes their order).
    """
    n = len(titles)
    ncols = min(n, 2)  # two panels a row: readable in the book's column
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN, 3.0 * nrows), squeeze=False)
    for ax, (name, title) in zip(axes.flat, titles.items(), strict=False):
        for (arm, mats), color in zip(arms.items(), ("C0", "C1", "C2", "C4"), strict=False):
            vals = np.atleast_2d(mats[name])
            ax.plot(
                steps, np.nanmean(vals, 0), color=color, lw=1.6, label=f"{arm} (n={vals.shape[0]})"
            )
            ax.fill_between(
                steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=color, alpha=0.2, lw=0
            )
        ax.set_ylim(0, 1.03)
        ax.set_xlabel("training step")
        ax.set_title(title)
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\sigma_1^2 / \sum_i \sigma_i^2$")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=SMALL, loc="lower right")
    fig.tight_layout()
    return fig


def plot_weight_heatmaps(rows: Mapping[str, Sequence[tuple[str, np.ndarray]]]) -> Figure:
    """A grid of weight matrices: one row per label, (title, matrix) panels within a row."""
    nrow = len(rows)
    ncol = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(nrow, ncol, figsize=(WIDE / 5 * ncol, 2.1 * nrow), squeeze=False)
    for i, (label, panels) in enumerate(rows.items()):
        for j, (title, mat) in enumerate(panels):
            ax = axes[i, j]
            lim = float(np.abs(mat).max()) or 1.0
            ax.imshow(
                mat, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest"
            )
            ax.set_title(title, fontsize=SMALL)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=SMALL)
        for j in range(len(panels), ncol):
            axes[i, j].set_visible(False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# The canonical landscape (chapter 4)
# --------------------------------------------------------------------------------------------

GLOBAL_BASIN_COLOR = "#c7e9c0"
LOCAL_BASIN_COLOR = "#fcbba1"


def draw_landscape(
    ax,
    land,
    lim: float = 3.0,
    resolution: int = 301,
    stream: bool = True,
    energy_levels: int = 0,
    basins: bool = True,
    critical: bool = True,
    loss_contours: bool = False,
) -> None:
    """Draw the (e, w) landscape of a :class:`~markovformer.canonical.CanonicalLandscape`.

    Axes: w horizontal, e vertical (as in L2G Fig. 1). Basins shaded (green: global, red:
    unigram), flow lines of -grad L, optional energy contours, the global-minimum curve (green),
    the local-minimum half of e = 0 (red), the saddle (black cross) and the separatrix (dashed).
    """
    from . import canonical as C

    g = np.linspace(-lim, lim, resolution)
    W, E = np.meshgrid(g, g)
    if basins:
        lab = land.basin(E, W).astype(float)
        ax.contourf(
            W,
            E,
            lab,
            levels=[-0.5, 0.5, 1.5],
            colors=[LOCAL_BASIN_COLOR, GLOBAL_BASIN_COLOR],
            alpha=0.9,
        )
    if loss_contours:
        ax.contour(W, E, land.loss_at_optimal_bias(E, W), levels=12, colors="gray", linewidths=0.4)
    if energy_levels:
        en = C.energy(E, W)
        lv = np.quantile(en[np.isfinite(en)], np.linspace(0.05, 0.95, energy_levels))
        ax.contour(
            W,
            E,
            en,
            levels=np.unique(np.r_[lv, C.E_SADDLE]),
            colors="k",
            linewidths=0.35,
            alpha=0.6,
        )
    if stream:
        gs = np.linspace(-lim, lim, 41)
        Ws, Es = np.meshgrid(gs, gs)
        de, dw = land.flow_field(Es, Ws)
        speed = np.hypot(de, dw)
        ax.streamplot(Ws, Es, dw, de, density=1.1, color=np.log10(speed + 1e-12), cmap="Greys",
                      linewidth=0.6, arrowsize=0.7)  # fmt: skip
    if critical:
        e_star = land.global_minimum_curve(g)
        ax.plot(g, e_star, color=BIGRAM_COLOR, lw=2.2, label="global minima")
        ax.plot(g, -e_star, color=BIGRAM_COLOR, lw=2.2)
        lo, hi = land.local_minimum_range()
        seg = g[(g > lo) & (g < hi)]
        ax.plot(
            seg, np.zeros_like(seg), color=UNIGRAM_COLOR, lw=2.6, label="local minima (unigram)"
        )
        ax.plot([C.W_SADDLE], [0], "kx", ms=8, mew=2, label="saddle")
        ws = g[g < 0]
        phi = C.separatrix(ws)
        ok = phi >= 0
        ax.plot(ws[ok], np.sqrt(phi[ok]), "k--", lw=1)
        ax.plot(ws[ok], -np.sqrt(phi[ok]), "k--", lw=1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("w")
    ax.set_ylabel("e")
    ax.set_aspect("equal")


def plot_landscape_panels(lands: Mapping[str, object], lim: float = 3.0) -> Figure:
    """L2G-1: for each chain, the flow field with energy contours (top) and the basins (bottom)."""
    n = len(lands)
    fig, axes = plt.subplots(2, n, figsize=(COLUMN if n <= 2 else WIDE, 8.2), squeeze=False)
    for j, (title, land) in enumerate(lands.items()):
        draw_landscape(axes[0, j], land, lim, stream=True, energy_levels=14, basins=False)
        axes[0, j].set_title(f"{title}:\nflow of $-\\nabla L$, energy contours")
        draw_landscape(axes[1, j], land, lim, stream=False, basins=True)
        axes[1, j].set_title(f"{title}:\nbasins (green global, red unigram)")
    axes[1, 0].legend(fontsize=SMALL, loc="lower left")
    fig.tight_layout()
    return fig


def plot_trajectories_on_landscape(
    land, trajectories: Sequence[dict], title: str = "", lim: float = 3.0, ax=None
) -> Figure:
    """Trajectories (dicts with e, w arrays, a color and a label) over the basins and flow."""
    fig, ax = plt.subplots(figsize=(5.6, 5.4)) if ax is None else (ax.figure, ax)
    draw_landscape(ax, land, lim, stream=True, basins=True)
    for tr in trajectories:
        ax.plot(tr["w"], tr["e"], color=tr.get("color", "k"), lw=tr.get("lw", 1.4), ls=tr.get("ls", "-"),
                label=tr.get("label"))  # fmt: skip
        ax.plot(tr["w"][0], tr["e"][0], "o", color=tr.get("color", "k"), ms=4)
        ax.plot(tr["w"][-1], tr["e"][-1], "s", color=tr.get("color", "k"), ms=4)
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        uniq = dict(zip(labels, handles, strict=False))
        ax.legend(uniq.values(), uniq.keys(), fontsize=SMALL, loc="lower left")
    return fig


def plot_flow_3d(panels: Sequence[dict], ncols: int = 2) -> Figure:
    """3-D (e, w, a) gradient-flow trajectories, green if they end at the global minimum, red if
    at the unigram one. Each panel: ``title``, ``trajectories`` (list of (array (n, 3) of
    e, w, a; end label)) and optionally ``zoom`` (half-width of the box shown)."""
    from matplotlib.ticker import MaxNLocator

    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(COLUMN, COLUMN / ncols * 0.95 * nrows))
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection="3d")
        zoom = panel.get("zoom")
        for y, label in panel["trajectories"]:
            if zoom:  # keep the part inside the box (3-D axes do not clip)
                y = y[np.all(np.abs(y) <= zoom, axis=1)]
                if len(y) == 0:
                    continue
            color = BIGRAM_COLOR if label == 1 else UNIGRAM_COLOR
            ax.plot(y[:, 1], y[:, 2], y[:, 0], color=color, lw=0.8, alpha=0.8)
            ax.scatter(y[0, 1], y[0, 2], y[0, 0], color="k", s=4)
        if zoom:
            for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                setter(-zoom, zoom)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=SMALL, pad=0)
        ax.set_xlabel("w", labelpad=0)
        ax.set_ylabel("a", labelpad=0)
        ax.set_zlabel("e", labelpad=0)
        ax.set_title(panel["title"], fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_canonical_explorer(
    land, flow, gd: Mapping[str, np.ndarray], lr: float, lim: float = 3.0
) -> Figure:
    """Chapter 4's interactive figure: basins, the gradient-flow trajectory and the gradient-descent
    iterates from the same start (left), and both loss curves against time (right)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.8), width_ratios=[1.05, 1])
    draw_landscape(ax, land, lim, stream=False, basins=True, resolution=201)
    ax.plot(flow.y[:, 1], flow.y[:, 0], color="k", lw=1.8, label="gradient flow (ODE)")
    every = max(1, len(gd["e"]) // 60)
    ax.plot(
        gd["w"][::every],
        gd["e"][::every],
        "o",
        ms=2.5,
        color="C0",
        label=f"gradient descent, lr {lr:g}",
    )
    ax.plot(flow.y[0, 1], flow.y[0, 0], "o", ms=7, mfc="w", mec="k")
    end = "global minimum" if flow.label == 1 else "unigram line e = 0"
    ax.set_title(
        f"({land.p:g}, {land.q:g}): start in the {'global' if land.basin(flow.y[0, 0], flow.y[0, 1]) else 'unigram'} basin, ends at the {end}",
        fontsize=SMALL,
    )
    ax.legend(fontsize=SMALL, loc="lower left")
    ax2.plot(flow.t, flow.loss, color="k", lw=1.8, label="gradient flow, L(e, w) at optimal b")
    ax2.plot(
        np.arange(len(gd["loss"])) * lr,
        gd["loss"],
        color="C0",
        lw=1.2,
        ls="--",
        label="gradient descent on (e, w, b)",
    )
    draw_loss_levels(ax2, land.entropy_rate, land.unigram_loss)
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlim(0, max(float(flow.t[-1]), len(gd["loss"]) * lr))
    ax2.set_xlabel("time t (gradient descent: step x lr)")
    ax2.set_ylabel("population loss (nats)")
    ax2.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_init_explorer(
    land,
    starts: np.ndarray,
    scale: float,
    curve: Mapping[str, np.ndarray],
    measured: Mapping[str, Sequence[float]] | None = None,
    lim: float = 3.0,
) -> Figure:
    """Chapter 5's interactive figure: Gaussian starting points over the basins of ``land``
    (left), and the probability of starting in the global basin against the init scale (right).

    ``starts`` is an (n, 2) array of (e0, w0); ``curve`` holds ``scale`` and ``global`` (the
    canonical probability); ``measured`` optionally holds ``scale`` and ``success`` of full
    transformers (and a legend ``label``), drawn as points.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.6), width_ratios=[1.05, 1])
    draw_landscape(ax, land, lim, stream=False, basins=True, resolution=201)
    e0, w0 = starts[:, 0], starts[:, 1]
    good = land.basin(e0, w0).astype(bool)
    ax.plot(w0[good], e0[good], ".", ms=3, color="#1b5e20", label="start in the global basin")
    ax.plot(w0[~good], e0[~good], ".", ms=3, color="#7f0000", label="start in the unigram basin")
    ax.plot(-1.0, 1.0, "*", ms=13, mfc="gold", mec="k", label="guideline (e, w) = (1, -1)")
    ax.set_title(
        f"({land.p:g}, {land.q:g}), (e0, w0) ~ N(0, {scale:g}^2 I): "
        f"{good.mean():.2f} of {len(good)} starts in the global basin",
        fontsize=SMALL,
    )
    ax.legend(fontsize=SMALL, loc="lower left")
    ax2.plot(curve["scale"], curve["global"], color="C0", label="canonical model (gradient flow)")
    if measured is not None:
        ax2.plot(
            measured["scale"],
            measured["success"],
            "ko",
            label=measured.get("label", "full transformers reaching the entropy rate"),
        )
    ax2.axvline(scale, color="gray", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("init scale s")
    ax2.set_ylabel("Pr(global minimum)")
    ax2.set_title(f"p + q {'>' if land.switching else '<'} 1", fontsize=SMALL)
    ax2.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def plot_run_explorer(
    land,
    run: Mapping[str, object],
    step: int,
    flow=None,
    lim: float = 3.0,
) -> Figure:
    """One trained transformer, side by side with the landscape it is trained on.

    ``run`` holds the projected coordinates ``e``, ``w`` at the diagnostic ``steps``, the exact
    loss per step ``loss``, optional top-singular-value energies ``rank1`` (name -> array at the
    diagnostic steps) and a ``title``. Left: the projected path over the basins up to ``step``
    (the rest faint) and, dotted, the gradient flow from the projected start (``flow``). Middle:
    the transformer's exact loss against the step, with the canonical population loss of its
    projected point. Right: how rank one the weights are, i.e. how much the projection describes.
    """
    steps, e, w = (np.asarray(run[k]) for k in ("steps", "e", "w"))
    loss = np.asarray(run["loss"])
    k = int(np.searchsorted(steps, step, side="right")) - 1
    k = min(max(k, 0), len(steps) - 1)
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.6), width_ratios=[1.1, 1, 0.8])
    ax = axes[0]
    draw_landscape(ax, land, lim, stream=False, basins=True, resolution=201)
    if flow is not None:
        ax.plot(
            flow.y[:, 1], flow.y[:, 0], ":", color="k", lw=1.4, label="gradient flow from the start"
        )
    ax.plot(w, e, color="C0", lw=0.8, alpha=0.35)
    ax.plot(w[: k + 1], e[: k + 1], color="C0", lw=2.0, label="trained transformer (projected)")
    ax.plot(w[0], e[0], "o", ms=6, mfc="w", mec="C0")
    ax.plot(w[k], e[k], "o", ms=8, color="C0", mec="k")
    ax.set_title(f"{run.get('title', '')}: step {int(steps[k])}, (e, w) = ({e[k]:.2f}, {w[k]:.2f})",
                 fontsize=SMALL)  # fmt: skip
    ax.legend(fontsize=SMALL, loc="lower left")
    ax = axes[1]
    ax.plot(np.arange(1, len(loss) + 1), loss, color="C0", lw=0.8, label="transformer, exact loss")
    ax.plot(steps, land.loss_at_optimal_bias(e, w), "k.", ms=3,
            label="canonical loss at the projected (e, w)")  # fmt: skip
    ax.axvline(steps[k], color="gray", lw=0.8, ls=":")
    draw_loss_levels(ax, land.entropy_rate, land.unigram_loss)
    lo, hi = land.entropy_rate, land.unigram_loss
    ax.set_ylim(lo - 0.25 * (hi - lo) - 0.01, hi + 0.6 * (hi - lo) + 0.01)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats)")
    ax.legend(fontsize=SMALL, loc="lower left")
    ax = axes[2]
    names = {"w1": "$W_1$", "w2": "$W_2$", "pos": "positions", "wv": "$W_V$"}
    for name, energy in dict(run.get("rank1", {})).items():
        ax.plot(steps, energy, label=names.get(name, name))
    ax.axvline(steps[k], color="gray", lw=0.8, ls=":")
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("top singular value energy fraction")
    ax.legend(fontsize=SMALL, loc="lower right")
    fig.tight_layout()
    return fig


def plot_grid_explorer(
    gap_map: np.ndarray,
    grid: np.ndarray,
    curves: Mapping[str, np.ndarray],
    p: float,
    q: float,
    rate: float,
    unigram: float,
    map_title: str = "",
) -> Figure:
    """A (p, q) heat map with one cell marked (left) and that cell's loss curves (right)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.3), width_ratios=[1, 1.25])
    d = (grid[1] - grid[0]) / 2
    im = ax.imshow(np.ma.masked_invalid(gap_map), origin="lower", cmap="RdYlGn_r", vmin=0, vmax=1,
                   extent=(grid[0] - d, grid[-1] + d, grid[0] - d, grid[-1] + d))  # fmt: skip
    ax.plot([0, 1], [1, 0], color="k", lw=1, ls="--")
    ax.add_patch(plt.Rectangle((p - d, q - d), 2 * d, 2 * d, fill=False, ec="k", lw=2.5))
    ax.set_xlim(grid[0] - d, grid[-1] + d)
    ax.set_ylim(grid[0] - d, grid[-1] + d)
    ax.set_xlabel("p")
    ax.set_ylabel("q")
    ax.set_title(map_title, fontsize=SMALL)
    fig.colorbar(im, ax=ax, shrink=0.85, label="fraction of the gap left")
    for (name, curve), color in zip(curves.items(), ("C0", "C1", "C2"), strict=False):
        ax2.plot(np.arange(1, len(curve) + 1), curve, color=color, lw=1.2, label=name)
    draw_loss_levels(ax2, rate, unigram)
    span = max(unigram - rate, 0.01)
    ax2.set_ylim(rate - 0.3 * span, unigram + 0.5 * span)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("exact conditional loss (nats)")
    ax2.set_title(f"(p, q) = ({p:g}, {q:g})", fontsize=SMALL)
    ax2.legend(fontsize=SMALL, loc="upper right")
    fig.tight_layout()
    return fig


def plot_reduction(
    bits: np.ndarray,
    logit_full: np.ndarray,
    logit_canon: np.ndarray,
    p: float,
    q: float,
    title: str = "",
) -> Figure:
    """A rank-one transformer against the canonical model on one sequence: predicted
    Pr(next = 1) along the positions (left, with the chain's true conditional probabilities) and
    the two models' logits against each other (right)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 3.8), width_ratios=[2.2, 1])
    from scipy.special import expit

    n = np.arange(len(bits))
    truth = np.where(bits == 1, 1 - q, p)
    ax.step(n, truth, where="mid", color="gray", lw=1, label="true Pr(next = 1 | current bit)")
    ax.plot(n, expit(logit_full), color="C0", lw=1.6, label="full transformer (rank one)")
    ax.plot(n, expit(logit_canon), "o", ms=2.5, color="C3", label="canonical model")
    ax.set_ylim(-0.03, 1.22)
    ax.set_xlabel("position n")
    ax.set_ylabel("predicted Pr(x_{n+1} = 1)")
    ax.set_title(title, fontsize=SMALL)
    ax.legend(fontsize=SMALL, loc="upper right", ncol=3)
    ax2.plot(logit_canon, logit_full, "o", ms=3, color="C0")
    lim = float(np.max(np.abs(np.r_[logit_full, logit_canon]))) * 1.1 + 1e-3
    ax2.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8, ls=":")
    ax2.set_xlim(-lim, lim)
    ax2.set_ylim(-lim, lim)
    ax2.set_xlabel("canonical logit")
    ax2.set_ylabel("full-model logit")
    ax2.set_title(
        f"max |difference| = {np.max(np.abs(logit_full - logit_canon)):.1e}", fontsize=SMALL
    )
    fig.tight_layout()
    return fig
