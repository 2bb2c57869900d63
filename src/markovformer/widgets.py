"""Interactive front-ends (ipywidgets) over the plotting functions, for Binder, Colab and Jupyter.

Callbacks never train: they evaluate closed forms, sample a few hundred symbols or read
precomputed arrays, so a redraw takes a fraction of a second. The static HTML book shows the
live version of each panel instead (:mod:`markovformer.live`, which runs in the page); both read
their data from :mod:`markovformer.explorers`, so they cannot drift apart.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from . import explorers, plotting
from .explorers import loss_grid
from .markov import BinaryChain

__all__ = [
    "chain_explorer_figure",
    "chain_explorer",
    "loss_grid",
    "canonical_explorer_figure",
    "canonical_explorer",
    "init_explorer_figure",
    "init_explorer",
    "run_explorer_figure",
    "run_explorer",
    "grid_explorer_figure",
    "grid_explorer",
    "kernel_explorer_figure",
    "kernel_explorer",
    "dataset_explorer_figure",
    "dataset_explorer",
    "reduction_explorer_figure",
    "reduction_explorer",
]


def _panel(draw, controls: dict):
    """The controls in a row above the output of ``draw(**values)``, redrawn on every change."""
    import ipywidgets as w

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox(list(controls.values())), out])


def _style() -> dict:
    return {"description_width": "initial"}


def _slider(description: str, value: float, lo: float, hi: float, step: float = 0.05):
    """A float slider on [lo, hi]."""
    import ipywidgets as w

    return w.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                         style=_style())  # fmt: skip


def _log_slider(description: str, value: float, lo_exp: float, hi_exp: float,
                step: float = 0.05):  # fmt: skip
    """A float slider from about 10**lo_exp to 10**hi_exp, logarithmic, in steps of ``step`` in
    the exponent. The grid of exponents is shifted (by less than half a step) so that it holds
    log10(value): the slider starts exactly at ``value`` and its readout shows it (0.5, not the
    0.501 of the nearest point of a grid from lo_exp)."""
    import math

    import ipywidgets as w

    start = math.log10(value)
    lo = start - step * math.floor((start - lo_exp) / step + 1e-9)
    hi = start + step * math.floor((hi_exp - start) / step + 1e-9)
    return w.FloatLogSlider(value=value, base=10, min=lo, max=hi, step=step,
                            description=description, style=_style())  # fmt: skip


def chain_explorer_figure(
    p: float = 0.5, q: float = 0.8, seed: int = 0, n_sequences: int = 6, length: int = 120
) -> Figure:
    """Sample path, loss levels and position on the gap map for the chain (p, q)."""
    bits = explorers.chain_sample(p, q, seed, n_sequences, length)
    rate, unigram = explorers.chain_levels(p, q)
    gp, gq, grid_rate, grid_uni = loss_grid(99)
    return plotting.plot_chain_explorer(bits, p, q, rate, unigram, (gp, gq, grid_uni - grid_rate))


def chain_explorer(p: float = 0.5, q: float = 0.8, seed: int = 0):
    """Sliders for p, q and the seed that redraw :func:`chain_explorer_figure`."""
    import ipywidgets as w

    style = _style()
    sliders = {
        "p": w.FloatSlider(
            value=p, min=0.01, max=0.99, step=0.01, description="p = Pr(1|0)", style=style
        ),
        "q": w.FloatSlider(
            value=q, min=0.01, max=0.99, step=0.01, description="q = Pr(0|1)", style=style
        ),
        "seed": w.IntSlider(value=seed, min=0, max=20, description="seed", style=style),
    }

    def draw(p: float, q: float, seed: int) -> None:
        chain_explorer_figure(p, q, seed)
        plt.show()

    return _panel(draw, sliders)


def canonical_explorer_figure(
    p: float = 0.5, q: float = 0.8, e0: float = 0.5, w0: float = 0.5, lr: float = 0.5,
    steps: int = 1500,
) -> Figure:  # fmt: skip
    """Gradient flow and gradient descent of the canonical model from (e0, w0) for the chain (p, q)."""
    land, flow, gd = explorers.canonical_paths(p, q, e0, w0, lr, steps)
    return plotting.plot_canonical_explorer(land, flow, gd, lr)


def canonical_explorer(p: float = 0.5, q: float = 0.8, e0: float = 0.5, w0: float = 0.5):
    """Sliders for p, q and the starting point (e0, w0) of :func:`canonical_explorer_figure`."""
    import ipywidgets as w

    style = _style()
    sliders = {
        "p": w.FloatSlider(value=p, min=0.05, max=0.95, step=0.05, description="p", style=style),
        "q": w.FloatSlider(value=q, min=0.05, max=0.95, step=0.05, description="q", style=style),
        "e0": w.FloatSlider(value=e0, min=-2.5, max=2.5, step=0.05, description="e0", style=style),
        "w0": w.FloatSlider(value=w0, min=-2.5, max=2.5, step=0.05, description="w0", style=style),
    }

    def draw(p: float, q: float, e0: float, w0: float) -> None:
        if abs(p + q - 1) < 1e-9:
            print(
                "p + q = 1: the chain is i.i.d. and the landscape is flat in (e, w); move a slider."
            )
            return
        canonical_explorer_figure(p, q, e0, w0)
        plt.show()

    return _panel(draw, sliders)


def _basin_curve(switching: bool, n: int = 20_000) -> dict[str, np.ndarray]:
    """Pr((e0, w0) ~ N(0, s^2 I) lies in the global basin) on a log grid of scales."""
    return explorers.basin_curve(switching, n)


def init_explorer_figure(
    p: float = 0.5, q: float = 0.8, scale: float = 0.5, seed: int = 0, n: int = 400,
    measured: dict | None = None,
) -> Figure:  # fmt: skip
    """Gaussian starts of scale ``scale`` over the basins of the chain (p, q), and the canonical
    probability of the global basin against the scale (with ``measured`` full-transformer success
    fractions, keyed by regime ``"switching"`` / ``"sticky"``, if given)."""
    from .canonical import CanonicalLandscape

    land = CanonicalLandscape(p, q)
    starts = explorers.init_starts(scale, seed, n)
    regime = "switching" if land.switching else "sticky"
    return plotting.plot_init_explorer(
        land,
        starts,
        scale,
        _basin_curve(land.switching),
        None if measured is None else measured.get(regime),
    )


def init_explorer(p: float = 0.5, q: float = 0.8, scale: float = 0.5, measured: dict | None = None):
    """Sliders for p, q, the init scale and the seed of :func:`init_explorer_figure`."""
    import ipywidgets as w

    sliders = {
        "p": _slider("p", p, 0.05, 0.95),
        "q": _slider("q", q, 0.05, 0.95),
        "scale": _log_slider("init scale s", scale, -2, 0.6),
        "seed": w.IntSlider(value=0, min=0, max=20, description="seed", style=_style()),
    }

    def draw(p: float, q: float, scale: float, seed: int) -> None:
        if abs(p + q - 1) < 1e-9:
            print("p + q = 1: the chain is i.i.d. and has no basins; move a slider.")
            return
        init_explorer_figure(p, q, scale, seed, measured=measured)
        plt.show()

    return _panel(draw, sliders)


def _run_label(row: dict) -> str:
    return f"{row['chain']} {row['init']}, seed {row['seed']} -> {row['outcome']}"


def run_explorer_figure(rows: list[dict], index: int = 0, step: int = 1000) -> Figure:
    """Trained run ``rows[index]`` (rows of :func:`markovformer.experiments.l2g.trajectory_table`)
    at training step ``step``: projected path over the basins with the gradient flow from its
    projected start, its loss curves, and its rank-one energies."""
    from .canonical import CanonicalLandscape

    if not 0 <= index < len(rows):
        raise ValueError(f"index must be in [0, {len(rows) - 1}], got {index}")
    row = rows[index]
    land = CanonicalLandscape(*row["chain"])
    flow = explorers.run_flow(row)
    run = dict(row, title=f"{row['chain']} {row['init']}, seed {row['seed']}")
    return plotting.plot_run_explorer(land, run, step, flow)


def run_explorer(rows: list[dict], index: int = 0, step: int = 1000):
    """A run menu and a step slider for :func:`run_explorer_figure` (reads stored runs only)."""
    import ipywidgets as w

    style = _style()
    last = int(max(r["steps"][-1] for r in rows))
    controls = {
        "index": w.Dropdown(
            options=[(_run_label(r), i) for i, r in enumerate(rows)],
            value=index,
            description="run",
            style=style,
            layout=w.Layout(width="420px"),
        ),  # fmt: skip
        "step": w.IntSlider(
            value=step, min=0, max=last, step=10, description="training step", style=style
        ),
    }

    def draw(index: int, step: int) -> None:
        run_explorer_figure(rows, index, step)
        plt.show()

    return _panel(draw, controls)


def grid_explorer_figure(
    curves: dict, gap_map: np.ndarray, grid: np.ndarray, p: float = 0.5, q: float = 0.8
) -> Figure:
    """One cell of a stored (p, q) grid: ``curves[(p, q)]`` maps an arm name to its loss curve;
    ``gap_map`` (rows q, columns p) is drawn with the cell marked."""
    key = (round(float(p), 2), round(float(q), 2))
    if key not in curves:
        raise ValueError(f"(p, q) = {key} is not a cell of the stored grid {sorted(curves)[:3]}...")
    chain = BinaryChain(*key)
    return plotting.plot_grid_explorer(gap_map, grid, curves[key], *key, chain.entropy_rate,
                                       chain.unigram_loss, "tied: fraction of the gap left")  # fmt: skip


def grid_explorer(
    curves: dict, gap_map: np.ndarray, grid: np.ndarray, p: float = 0.5, q: float = 0.8
):
    """Sliders over the cells of a stored (p, q) grid for :func:`grid_explorer_figure`."""
    lo, hi, step = float(grid[0]), float(grid[-1]), float(grid[1] - grid[0])
    sliders = {"p": _slider("p", p, lo, hi, step), "q": _slider("q", q, lo, hi, step)}

    def draw(p: float, q: float) -> None:
        if abs(p + q - 1) < 1e-9:
            print("p + q = 1: an i.i.d. chain, both loss levels coincide; move a slider.")
            return
        grid_explorer_figure(curves, gap_map, grid, p, q)
        plt.show()

    return _panel(draw, sliders)


def kernel_explorer_figure(c: float = 2.0, qk_scale: float = 1.0, seed: int = 0) -> Figure:
    """Softmax, Gaussian and row-normalised Gaussian attention on one random input."""
    from .experiments import gdd

    return gdd.plot_kernels(explorers.kernel_matrices(c, qk_scale, seed))


def kernel_explorer(c: float = 2.0, qk_scale: float = 1.0, seed: int = 0):
    """Sliders for the bandwidth c, the scale of W_Q, W_K and the seed of the kernel figure."""
    import ipywidgets as w

    sliders = {
        "c": _log_slider("bandwidth c", c, -1, 1.5),
        "qk_scale": _log_slider("scale of W_Q, W_K", qk_scale, -1, 1),
        "seed": w.IntSlider(value=seed, min=0, max=20, description="seed", style=_style()),
    }

    def draw(c: float, qk_scale: float, seed: int) -> None:
        kernel_explorer_figure(c, qk_scale, seed)
        plt.show()

    return _panel(draw, sliders)


def dataset_explorer_figure(
    n_tokens: int = 8, n_sentences: int = 6, max_len: int = 6, seed: int = 6
) -> Figure:
    """Schematic of a realisable next-token dataset drawn by :func:`markovformer.ntp.make_dataset`
    (sentences of length 2..max_len, the optimal token framed, the collocation on the right)."""
    from .experiments import ntp as ntpx

    data = explorers.dataset(n_tokens, n_sentences, max_len, seed)
    return ntpx.plot_dataset_schematic(data, n_show=n_sentences)


def dataset_explorer(n_tokens: int = 8, n_sentences: int = 6, max_len: int = 6, seed: int = 6):
    """Sliders for the vocabulary size, the number and length of sentences, and the seed."""
    import ipywidgets as w

    style = _style()
    sliders = {
        "n_tokens": w.IntSlider(value=n_tokens, min=3, max=16, description="tokens K", style=style),
        "n_sentences": w.IntSlider(
            value=n_sentences, min=1, max=10, description="sentences", style=style
        ),  # fmt: skip
        "max_len": w.IntSlider(value=max_len, min=2, max=10, description="longest", style=style),
        "seed": w.IntSlider(value=seed, min=0, max=40, description="seed", style=style),
    }

    def draw(n_tokens: int, n_sentences: int, max_len: int, seed: int) -> None:
        if max_len > n_tokens:
            print(f"a sentence has distinct tokens: the longest can have at most K = {n_tokens}")
            return
        dataset_explorer_figure(n_tokens, n_sentences, max_len, seed)
        plt.show()

    return _panel(draw, sliders)


def reduction_explorer_figure(
    e: float = 1.0, w: float = -1.0, a: float = 0.0, p: float = 0.5, q: float = 0.8,
    seed: int = 0, length: int = 96,
) -> Figure:  # fmt: skip
    """The full transformer realising (e, w, a) exactly (rank-one weights, d = 8, uniform
    attention) against the canonical model, on one sampled sequence of the chain (p, q)."""
    bits, lf, lc = explorers.reduction_logits(e, w, a, p, q, seed, length)
    title = f"(e, w, a) = ({e:g}, {w:g}, {a:g}) on the chain ({p:g}, {q:g})"
    return plotting.plot_reduction(bits, lf, lc, p, q, title)


def reduction_explorer(e: float = 1.0, w: float = -1.0, a: float = 0.0):
    """Sliders for the canonical point (e, w, a) and the chain of :func:`reduction_explorer_figure`."""
    sliders = {
        "e": _slider("e", e, 0.0, 2.5),
        "w": _slider("w", w, -2.5, 2.5),
        "a": _slider("a", a, -2.0, 2.0),
        "p": _slider("p", 0.5, 0.05, 0.95),
        "q": _slider("q", 0.8, 0.05, 0.95),
    }

    def draw(e: float, w: float, a: float, p: float, q: float) -> None:
        reduction_explorer_figure(e, w, a, p, q)
        plt.show()

    return _panel(draw, sliders)


def icl_step_explorer(runs: list[dict], seed: int = 0, step: int | None = None):
    """A seed menu and a step slider over stored in-context runs (chapter 8): ``runs`` holds one
    :func:`markovformer.experiments.icl.step_explorer_data` result per seed, as the live figure's
    :func:`markovformer.live.icl_step_explorer` does; redraws ``icl.step_explorer_figure``."""
    import ipywidgets as w

    from .experiments import icl

    steps = [int(s) for s in runs[0]["steps"]]
    step = steps[-1] if step is None else steps[int(np.argmin(np.abs(np.array(steps) - step)))]
    controls = {
        "seed": w.Dropdown(options=list(range(len(runs))), value=seed, description="seed"),
        "step": w.SelectionSlider(options=steps, value=step, description="step",
                                  continuous_update=False),
    }  # fmt: skip

    def draw(seed: int, step: int) -> None:
        icl.step_explorer_figure(runs[seed], step)
        plt.show()

    return _panel(draw, controls)


def plateau_explorer(runs: list[dict], arm: str = "m = 3", seed: int = 0, step: int | None = None):
    """An arm menu, a seed menu and a step slider over the stored runs of chapter 9 (``runs``:
    :func:`markovformer.experiments.plateau.explorer_runs`, as the live figure
    :func:`markovformer.live.plateau_explorer` takes); redraws ``plateau.explorer_figure``."""
    from .experiments import plateau

    return plateau.explorer(runs, arm, seed, step)
