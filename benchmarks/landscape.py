"""Benchmark: the closed-form landscape on a 500 x 500 grid and one gradient-flow trajectory.

Targets (issue 4): each <= 50 ms on a 2-core CPU, so that the chapter's sliders redraw at once.
Also printed: the time of one full redraw (compute + render to pixels) of each chapter's widget
figure, which is what a reader waits for after moving a slider.

    python benchmarks/landscape.py
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to pixels without a display, as the inline backend does
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from markovformer import canonical as C  # noqa: E402
from markovformer import experiments, widgets  # noqa: E402
from markovformer.experiments import l2g  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "book" / "data"


def best_of(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    land = C.CanonicalLandscape(0.5, 0.8)
    g = np.linspace(-3, 3, 500)
    E, W = np.meshgrid(g, g)
    t_grid = best_of(lambda: land.loss_at_optimal_bias(E, W))
    t_basin = best_of(lambda: land.basin(E, W))
    t_flow = best_of(lambda: C.gradient_flow(land, 0.5, 0.5))
    t_flow_g = best_of(lambda: C.gradient_flow(C.CanonicalLandscape(0.2, 0.3), 0.5, 0.5))
    print(
        f"loss L(e, w) at the optimal bias, 500 x 500 grid : {t_grid * 1e3:7.1f} ms (target <= 50)"
    )
    print(f"basin labels, 500 x 500 grid                     : {t_basin * 1e3:7.1f} ms")
    print(
        f"one gradient-flow trajectory, (0.5, 0.8) from (0.5, 0.5): {t_flow * 1e3:7.1f} ms (target <= 50)"
    )
    print(
        f"one gradient-flow trajectory, (0.2, 0.3) from (0.5, 0.5): {t_flow_g * 1e3:7.1f} ms (target <= 50)"
    )
    redraws()


def redraws() -> None:
    """One slider move = build the figure and render it; the Agg canvas stands in for the inline
    backend's PNG."""

    def redraw(fn, **kw):
        def run():
            fig = fn(**kw)
            fig.canvas.draw()
            plt.close(fig)

        return run

    for name, fn, kw in (
        ("chapter 1, chain_explorer    ", widgets.chain_explorer_figure, {"p": 0.3, "q": 0.9}),
        ("chapter 4, canonical_explorer", widgets.canonical_explorer_figure, {"p": 0.3, "q": 0.9}),
        ("chapter 5, init_explorer     ", widgets.init_explorer_figure, {"p": 0.3, "q": 0.9}),
    ):
        t = best_of(redraw(fn, **kw), repeats=3)
        print(f"widget redraw, {name}  : {t * 1e3:7.1f} ms")
    rows = l2g.trajectory_table(*experiments.get("l2g-t").load(DATA))
    t = best_of(redraw(widgets.run_explorer_figure, rows=rows, index=10, step=600), repeats=3)
    print(f"widget redraw, chapter 4, run_explorer        : {t * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
