"""Live figures for the static HTML book: Bokeh layouts whose callbacks run in the page.

Every interaction of the book has an ipywidgets panel (:mod:`markovformer.widgets`) for Binder and
Colab and, here, a live figure that the HTML page runs without a kernel. A builder returns a
:class:`LiveFigure`; displayed in a notebook it becomes one ``text/html`` output that myst-nb copies
into the page: the Bokeh document (data and widgets, embedded with :func:`bokeh.embed.components`),
preceded by ``live.js``, the package's closed forms ported to JavaScript. BokehJS itself is loaded
once per page from the built book (``book/_ext/offline_assets.py``), never from a CDN.

Data come from :mod:`markovformer.explorers`, the functions the ipywidgets panels use too. What is
cheap in the page is recomputed there (the chain sampler from stored uniforms, the canonical
landscape, its gradient flow and gradient descent, a rank-one transformer, the attention kernels);
what is not (stored training runs, the datasets of the NTP generator, Monte-Carlo basin
probabilities) is precomputed here and embedded as compressed float32 / int8 arrays (chapter
8's stored attention maps as the bits of their float16 values).

For every kind of figure, ``<kind>_state(...)`` is what the figure shows for given control values:
the data of its sources (by name) and its titles. The builder draws its first state; the page's
callback (``MFLive.update[kind]`` in live.js) must reproduce the state of any other control
values, which the tests check in node and in a browser. Every figure is a Bokeh layout named
``mf-<kind>``; its controls and data sources carry the names used here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import explorers as X
from .plotting import BIGRAM_COLOR, GLOBAL_BASIN_COLOR, LOCAL_BASIN_COLOR, UNIGRAM_COLOR

__all__ = [
    "KINDS",
    "LiveFigure",
    "js_library",
    "chain_explorer",
    "chain_state",
    "grid_explorer",
    "grid_state",
    "reduction_explorer",
    "reduction_state",
    "canonical_explorer",
    "canonical_state",
    "run_explorer",
    "run_state",
    "init_explorer",
    "init_state",
    "kernel_explorer",
    "kernel_state",
    "dataset_explorer",
    "dataset_state",
    "icl_step_explorer",
    "icl_step_state",
    "plateau_explorer",
    "plateau_state",
]

#: the kinds of live figure, one per interaction of the book (``MFLive.update[kind]``)
KINDS = ("chain", "grid", "reduction", "run", "canonical", "init", "kernel", "dataset", "icl_step",
         "plateau")  # fmt: skip

WIDTH = 650  # a figure's output area in the book's text column: 660 px at a 1280-px window
HALF = 320  # two panels side by side
#: Every panel, control and key stretches to the column up to its width above, and shrinks down to
#: this (or its width, if narrower); a row whose panels do not fit wraps them onto more lines, so
#: on a phone the panels stack and every control stays on screen.
MIN_PANEL = 260
NOTE = (
    "This is the live version of the figure, for the HTML book: it runs in the page with BokehJS. "
    "In Jupyter, Binder or Colab, run the slider panel of the next cell instead."
)
LIM = 3.0  # half-width of the (e, w) plane drawn in chapters 4 and 5
BASIN_RESOLUTION = 161
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")


def js_library() -> str:
    """The JavaScript of ``live.js`` (defines ``window.MFLive``)."""
    path = Path(__file__).with_name("live.js")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the package was installed without live.js")
    return path.read_text(encoding="utf-8")


class LiveFigure:
    """A Bokeh layout with its callbacks, displayed as one HTML output.

    ``kind`` names the interaction; ``layout`` is the Bokeh root (named ``mf-<kind>``); ``models``
    maps names to its controls, data sources and figures; ``state`` is what it shows first.
    """

    def __init__(self, kind: str, layout, models: Mapping[str, object], state: dict) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown live figure kind {kind!r}; known: {KINDS}")
        self.kind, self.layout, self.models, self.state = kind, layout, dict(models), state

    @property
    def controls(self) -> dict[str, object]:
        """The sliders and menus, by name."""
        from bokeh.models import Select, Slider

        return {k: m for k, m in self.models.items() if isinstance(m, (Slider, Select))}

    @property
    def callback(self):
        """The CustomJS callback that every control triggers."""
        first = next(iter(self.controls.values()))
        return first.js_property_callbacks["change:value"][0]

    def html(self) -> str:
        """The figure's HTML: a note (hidden by the book's CSS), live.js, the Bokeh div and script."""
        from bokeh.embed import components

        script, div = components(self.layout)
        return (
            f'<div class="mf-live" data-mf-kind="{self.kind}">\n'
            f'<p class="mf-live-note">{html.escape(NOTE)}</p>\n'
            f"<script>{js_library()}</script>\n{div}\n{script}\n</div>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/html": self.html(), "text/plain": f"<live figure: {self.kind}>"}

    def __repr__(self) -> str:
        return f"LiveFigure({self.kind!r})"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _state(sources: dict, titles: dict | None = None, props: dict | None = None) -> dict:
    return {"sources": sources, "titles": titles or {}, "props": props or {}}


def _fit(model, width: int):
    """``model`` stretches to its column, from ``min(width, MIN_PANEL)`` to ``width`` pixels."""
    model.sizing_mode = "stretch_width"
    model.width = width
    model.max_width = width
    model.min_width = min(width, MIN_PANEL)
    return model


def _figure(title: str = "", width: int = WIDTH, height: int = 300, **kw):
    from bokeh.plotting import figure

    fig = figure(width=width, height=height, title=title, tools="", toolbar_location=None, **kw)
    _fit(fig, width)
    fig.title.text_font_size = "10.5pt"
    fig.title.text_font_style = "normal"
    for axis in (fig.xaxis, fig.yaxis):
        axis.axis_label_text_font_size = "10pt"
        axis.axis_label_text_font_style = "normal"
        axis.major_label_text_font_size = "9pt"
    return fig


def _sources(state: dict) -> dict:
    from bokeh.models import ColumnDataSource

    return {k: ColumnDataSource(data=dict(v), name=k) for k, v in state["sources"].items()}


def _slider(name: str, title: str, value: float, start: float, end: float, step: float,
            fmt: str = "0[.]00", width: int = 210):  # fmt: skip
    from bokeh.models import Slider

    if not start <= value <= end:
        raise ValueError(f"{name} = {value} is outside the slider's range [{start}, {end}]")
    slider = Slider(name=name, title=title, value=value, start=start, end=end, step=step,
                    format=fmt)  # fmt: skip
    return _fit(slider, width)


def _wire(kind: str, controls: Mapping[str, object], args: Mapping[str, object]) -> None:
    """Call ``MFLive.update[kind]`` with every control and argument when a control moves."""
    from bokeh.models import CustomJS

    names = list(controls) + [k for k in args if k not in controls]
    code = f"MFLive.update.{kind}({{{', '.join(names)}}});"
    callback = CustomJS(args={**controls, **args}, code=code)
    for control in controls.values():
        control.js_on_change("value", callback)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _f64(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def _regime(p: float, q: float) -> str:
    s = p + q
    return "iid" if abs(s - 1) <= 1e-12 else ("switching" if s > 1 else "sticky")


def _layout(name: str, *children):
    from bokeh.layouts import column

    return column(*children, name=name, sizing_mode="stretch_width")


def _row(*children):
    """Children side by side, wrapped onto more lines where the column is too narrow."""
    from bokeh.layouts import row
    from bokeh.models import InlineStyleSheet

    wrap = InlineStyleSheet(css=":host { flex-wrap: wrap; }")
    return row(*children, sizing_mode="stretch_width", stylesheets=[wrap])


def _div(text: str, width: int = WIDTH):
    """A paragraph of the figure (a key, a note) that wraps with the column."""
    from bokeh.models import Div

    return _fit(Div(text=text), width)


def _levels(rate: float, unigram: float) -> dict:
    return {"y": [rate, unigram], "name": ["entropy rate", "unigram loss"],
            "color": [BIGRAM_COLOR, UNIGRAM_COLOR]}  # fmt: skip


def _draw_levels(fig, source) -> None:
    """Horizontal dashed lines at the loss levels (entropy rate green, unigram loss red)."""
    fig.hspan(y="y", color="color", line_dash="dashed", line_width=1.2, source=source)


def _loss_range(rate: float, unigram: float) -> tuple[float, float]:
    span = unigram - rate
    return rate - 0.25 * span - 0.01, unigram + 0.6 * span + 0.01


# --------------------------------------------------------------------------------------------
# Chapter 1: the chain explorer
# --------------------------------------------------------------------------------------------


def chain_state(p: float, q: float, seed: int, n_sequences: int = 6, length: int = 120) -> dict:
    """Samples of the chain (p, q) from ``seed``, its loss levels and its point on the gap map."""
    bits = X.chain_sample(p, q, seed, n_sequences, length)
    rate, unigram = X.chain_levels(p, q)
    corr = 1 - p - q
    kind = {"iid": "i.i.d."}.get(_regime(p, q), _regime(p, q))
    sign = "+" if corr >= 0 else "-"
    return _state(
        {
            "bits": {"image": [bits.astype(np.float32)], "x": [0], "y": [0], "dw": [length],
                     "dh": [n_sequences]},
            "levels": {"name": ["entropy rate", "unigram loss"],
                       "value": [rate, unigram], "label": [f"{rate:.4f}", f"{unigram:.4f}"],
                       "color": [BIGRAM_COLOR, UNIGRAM_COLOR]},
            "point": {"p": [p], "q": [q]},
        },
        {
            "rasterFig": f"p = {p:.2f}, q = {q:.2f}: {kind}, lag-1 corr. {sign}{abs(corr):.2f}",
            "barFig": f"gap {unigram - rate:.4f} nats",
        },
    )  # fmt: skip


def chain_explorer(p: float = 0.5, q: float = 0.8, seed: int = 0, n_sequences: int = 6,
                   length: int = 120, n_seeds: int = 21) -> LiveFigure:  # fmt: skip
    """Samples of the chain (p, q), its two loss levels and its place on the gap map; sliders for
    p, q and the seed (0 .. n_seeds - 1). The page resamples with the package's sampler (ported)
    from the stored uniforms of every seed, and evaluates the loss levels in closed form."""
    from bokeh.models import FactorRange, LabelSet, LinearColorMapper, Range1d
    from bokeh.palettes import Magma256

    if not 0 <= seed < n_seeds:
        raise ValueError(f"seed must be in [0, {n_seeds - 1}], got {seed}")
    state = chain_state(p, q, seed, n_sequences, length)
    src = _sources(state)
    uni = [X.chain_uniforms(s, n_sequences, length) for s in range(n_seeds)]
    u0 = _f32(np.concatenate([u for u, _ in uni]))
    expo = _f32(np.concatenate([e for _, e in uni]).reshape(-1))

    raster = _figure(state["titles"]["rasterFig"], height=200, x_range=Range1d(0, length),
                     y_range=Range1d(n_sequences, 0))  # fmt: skip
    raster.image("image", x="x", y="y", dw="dw", dh="dh", source=src["bits"],
                 color_mapper=LinearColorMapper(palette=["#f2f2f2", "#1f4e79"], low=0, high=1))  # fmt: skip
    raster.xaxis.axis_label = "position n (dark: 1, light: 0)"
    raster.yaxis.axis_label = "sequence"

    names = state["sources"]["levels"]["name"]
    bars = _figure(state["titles"]["barFig"], width=HALF, height=290,
                   x_range=FactorRange(*names), y_range=Range1d(0, 0.85))  # fmt: skip
    bars.vbar(x="name", top="value", width=0.6, color="color", source=src["levels"])
    bars.add_layout(LabelSet(x="name", y="value", text="label", source=src["levels"], y_offset=3,
                             text_align="center", text_font_size="9pt"))  # fmt: skip
    bars.hspan(y=[np.log(2)], line_color="gray", line_dash="dotted")
    bars.yaxis.axis_label = "loss (nats); dotted: ln 2"
    bars.xaxis.major_label_text_font_size = "9pt"

    gp, gq, grid_rate, grid_uni = X.loss_grid(99)
    gap_fig = _figure("(p, q) on the gap map", width=HALF, height=290, x_range=Range1d(0, 1),
                      y_range=Range1d(0, 1))  # fmt: skip
    gap_fig.image(image=[_f32(grid_uni - grid_rate)], x=0, y=0, dw=1, dh=1,
                  color_mapper=LinearColorMapper(palette=Magma256, low=0, high=np.log(2)))  # fmt: skip
    gap_fig.line([0, 1], [1, 0], line_color="white", line_dash="dashed")
    gap_fig.scatter("p", "q", source=src["point"], size=10, fill_color="white", line_color="black")
    gap_fig.xaxis.axis_label = "p = Pr(1 | 0)"
    gap_fig.yaxis.axis_label = "q = Pr(0 | 1)"

    controls = {
        "p": _slider("p", "p = Pr(1|0)", p, 0.01, 0.99, 0.01),
        "q": _slider("q", "q = Pr(0|1)", q, 0.01, 0.99, 0.01),
        "seed": _slider("seed", "seed", seed, 0, n_seeds - 1, 1, fmt="0", width=180),
    }
    models = {**src, "rasterFig": raster, "barFig": bars}
    _wire("chain", controls, {**models, "u0": u0, "expo": expo, "shape": [n_sequences, length]})
    layout = _layout("mf-chain", _row(*controls.values()), raster, _row(bars, gap_fig))
    return LiveFigure("chain", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapter 2: a cell of the AwM-4 grid
# --------------------------------------------------------------------------------------------


def _grid_index(grid: np.ndarray, v: float) -> int:
    return int(np.argmin(np.abs(grid - v)))


def grid_state(curves: Mapping, grid: Sequence[float], p: float, q: float) -> dict:
    """The cell (p, q) of a stored grid: its outline, its loss curves and loss levels."""
    grid = np.round(np.asarray(grid, dtype=float), 2)
    p, q = float(grid[_grid_index(grid, p)]), float(grid[_grid_index(grid, q)])
    d = (grid[1] - grid[0]) / 2
    arms = sorted({arm for cell in curves.values() for arm in cell})
    T = max(len(c) for cell in curves.values() for c in cell.values())
    cell = curves.get((p, q))
    data = {"step": np.arange(1, T + 1, dtype=np.float32)}
    for arm in arms:
        y = np.full(T, np.nan, dtype=np.float32)
        if cell is not None and arm in cell:
            y[: len(cell[arm])] = cell[arm]
        data[arm] = y
    box = {"x": [p], "y": [q], "w": [2 * d], "h": [2 * d]}
    if _regime(p, q) == "iid" or cell is None:
        why = "p + q = 1, an i.i.d. chain; pick another cell" if _regime(p, q) == "iid" else (
            "no stored run")  # fmt: skip
        return _state({"cell": box, "curves": {k: [] for k in data},
                       "levels": {"y": [], "name": [], "color": []}},
                      {"curveFig": f"(p, q) = ({p:g}, {q:g})\n{why}"})  # fmt: skip
    rate, unigram = X.chain_levels(p, q)
    return _state(
        {"cell": box, "curves": data, "levels": _levels(rate, unigram)},
        {"curveFig": f"(p, q) = ({p:g}, {q:g})\nentropy rate {rate:.4f}, unigram {unigram:.4f}"},
        {"curveFig.y_range": (rate - 0.3 * max(unigram - rate, 0.01),
                              unigram + 0.5 * max(unigram - rate, 0.01))},
    )  # fmt: skip


def grid_explorer(curves: Mapping[tuple[float, float], Mapping[str, np.ndarray]],
                  gap_map: np.ndarray, grid: Sequence[float], p: float = 0.7, q: float = 0.6,
                  map_title: str = "tied: fraction of the gap left") -> LiveFigure:  # fmt: skip
    """One cell of a stored (p, q) grid: ``curves[(p, q)]`` maps an arm ("tied", "untied") to
    its loss curve; ``gap_map`` (rows q, columns p) is drawn with the chosen cell outlined. The
    curves of every cell are embedded (float32); the loss levels are evaluated in the page."""
    from bokeh.models import ColorBar, LinearColorMapper, Range1d
    from bokeh.palettes import RdYlGn11

    grid = np.round(np.asarray(grid, dtype=float), 2)
    g = len(grid)
    if g < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"grid must be increasing with at least two values, got {grid}")
    gap_map = np.asarray(gap_map, dtype=float)
    if gap_map.shape != (g, g):
        raise ValueError(f"gap_map must have shape ({g}, {g}), got {gap_map.shape}")
    key = (round(float(p), 2), round(float(q), 2))
    if key not in curves:
        raise ValueError(f"(p, q) = {key} is not a cell of the stored grid")
    arms = sorted({arm for cell in curves.values() for arm in cell})
    T = max(len(c) for cell in curves.values() for c in cell.values())
    packed = np.full((g, g, len(arms), T), np.nan, dtype=np.float32)
    for (cp, cq), cell in curves.items():
        i, j = _grid_index(grid, cq), _grid_index(grid, cp)
        for a, arm in enumerate(arms):
            if arm in cell:
                packed[i, j, a, : len(cell[arm])] = cell[arm]
    state = grid_state(curves, grid, *key)
    src = _sources(state)

    d = (grid[1] - grid[0]) / 2
    lo, hi = grid[0] - d, grid[-1] + d
    mapper = LinearColorMapper(palette=list(reversed(RdYlGn11)), low=0, high=1, nan_color="white")
    gmap = _figure(map_title, width=300, height=320, x_range=Range1d(lo, hi),
                   y_range=Range1d(lo, hi))  # fmt: skip
    gmap.image(image=[_f32(gap_map)], x=lo, y=lo, dw=hi - lo, dh=hi - lo, color_mapper=mapper)
    gmap.line([0, 1], [1, 0], line_color="black", line_dash="dashed")
    gmap.rect("x", "y", "w", "h", source=src["cell"], fill_alpha=0, line_color="black",
              line_width=3)  # fmt: skip
    gmap.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
    gmap.xaxis.axis_label = "p"
    gmap.yaxis.axis_label = "q"

    y0, y1 = state["props"]["curveFig.y_range"]
    # fixed ranges: a cell without curves (p + q = 1) leaves nothing to fit a range to
    cfig = _figure(state["titles"]["curveFig"], width=340, height=320, x_range=Range1d(0, T),
                   y_range=Range1d(y0, y1))  # fmt: skip
    for arm, color in zip(arms, COLORS, strict=False):
        cfig.line("step", arm, source=src["curves"], color=color, line_width=1.5, legend_label=arm)
    _draw_levels(cfig, src["levels"])
    cfig.legend.location = "top_right"
    cfig.legend.label_text_font_size = "9pt"
    cfig.xaxis.axis_label = "training step"
    cfig.yaxis.axis_label = "exact conditional loss (nats)"

    step = round(2 * d, 2)
    controls = {
        "p": _slider("p", "p", key[0], grid[0], grid[-1], step, fmt="0.0"),
        "q": _slider("q", "q", key[1], grid[0], grid[-1], step, fmt="0.0"),
    }
    models = {**src, "curveFig": cfig}
    _wire("grid", controls, {**models, "grid": [float(v) for v in grid], "arms": arms,
                             "steps": T, "packed": packed.reshape(-1),
                             "levelColors": [BIGRAM_COLOR, UNIGRAM_COLOR]})  # fmt: skip
    layout = _layout("mf-grid", _row(*controls.values()), _row(gmap, cfig))
    return LiveFigure("grid", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapter 3: the rank-one reduction
# --------------------------------------------------------------------------------------------


def reduction_state(e: float, w: float, a: float, p: float, q: float, seed: int = 0,
                    length: int = 96) -> dict:  # fmt: skip
    """Both models' logits (and probabilities) on the sequence of the chain (p, q)."""
    from scipy.special import expit

    bits, lf, lc = X.reduction_logits(e, w, a, p, q, seed, length)
    lim = max(1e-3, 1.1 * float(np.max(np.abs(np.r_[lf, lc]))))
    return _state(
        {
            "seq": {"n": np.arange(length), "bit": bits.astype(np.int32),
                    "truth": np.where(bits == 1, 1 - q, p), "full": expit(lf), "canon": expit(lc),
                    "logit_full": lf, "logit_canon": lc},
            "diag": {"x": [-lim, lim], "y": [-lim, lim]},
        },
        {
            "seqFig": f"(e, w, a) = ({e:.2f}, {w:.2f}, {a:.2f}) on the chain ({p:.2f}, {q:.2f})",
            "logitFig": f"max |difference| = {np.max(np.abs(lf - lc)):.1e}",
        },
    )  # fmt: skip


def reduction_explorer(e: float = 1.0, w: float = -1.0, a: float = 0.0, p: float = 0.5,
                       q: float = 0.8, seed: int = 0, length: int = 96) -> LiveFigure:  # fmt: skip
    """The full transformer realising (e, w, a) exactly (rank-one weights, d = 8) against the
    canonical model, on one sequence of the chain (p, q). The page runs both: the transformer's
    forward pass on the package's rank-one weights, and the canonical closed form."""
    from bokeh.models import Range1d

    state = reduction_state(e, w, a, p, q, seed, length)
    src = _sources(state)
    u0, expo = X.chain_uniforms(seed, 1, length)
    unit = X.reduction_weights(length, seed=0)
    sfig = _figure(state["titles"]["seqFig"], height=250, y_range=Range1d(-0.03, 1.25))
    sfig.step("n", "truth", source=src["seq"], mode="center", color="gray",
              legend_label="true Pr(next = 1 | current bit)")  # fmt: skip
    sfig.line("n", "full", source=src["seq"], color=COLORS[0], line_width=2,
              legend_label="full transformer (rank one)")  # fmt: skip
    sfig.scatter("n", "canon", source=src["seq"], size=4, color=UNIGRAM_COLOR,
                 legend_label="canonical model")  # fmt: skip
    sfig.legend.orientation = "horizontal"
    sfig.legend.location = "top_center"
    sfig.legend.label_text_font_size = "9pt"
    sfig.xaxis.axis_label = "position n"
    sfig.yaxis.axis_label = "predicted Pr(next = 1)"

    lfig = _figure(state["titles"]["logitFig"], width=300, height=300)
    lfig.line("x", "y", source=src["diag"], color="gray", line_dash="dotted")
    lfig.scatter("logit_canon", "logit_full", source=src["seq"], size=5, color=COLORS[0])
    lfig.xaxis.axis_label = "canonical logit"
    lfig.yaxis.axis_label = "full-model logit"
    note = _div(width=330, text=(
        "<p style='font-size:10pt'>Top: the true next-bit probability (gray) and both models' "
        "predictions along the sequence. Left: one model's logit against the other's; on the "
        "dotted diagonal they agree exactly. The page runs the transformer's forward pass "
        "(d = 8, W_Q = W_K = 0) on the package's rank-one weights.</p>"))  # fmt: skip

    controls = {
        name: _slider(name, name, v, lo, hi, 0.05, width=120)
        for name, v, lo, hi in (("e", e, 0.0, 2.5), ("w", w, -2.5, 2.5), ("a", a, -2.0, 2.0),
                                ("p", p, 0.05, 0.95), ("q", q, 0.05, 0.95))
    }  # fmt: skip
    models = {**src, "seqFig": sfig, "logitFig": lfig}
    unit_js = {k: _f64(v).reshape(-1) for k, v in unit.items() if k != "bias"}
    unit_js["bias"] = float(unit["bias"])
    _wire("reduction", controls, {**models, "u0": u0, "expo": expo.reshape(-1), "length": length,
                                  "seed": seed, "unit": unit_js})  # fmt: skip
    layout = _layout("mf-reduction", _row(*controls.values()), sfig, _row(lfig, note))
    return LiveFigure("reduction", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapters 4 and 5: the canonical landscape
# --------------------------------------------------------------------------------------------


def _landscape_state(land) -> dict:
    """Basins (image rows e, columns w), global-minimum curve and local-minimum segment."""
    g = np.linspace(-LIM, LIM, BASIN_RESOLUTION)
    W, E = np.meshgrid(g, g)
    cw = np.linspace(-LIM, LIM, 301)
    up = land.global_minimum_curve(cw)
    lo, hi = land.local_minimum_range()
    return {
        "basins": {"image": [land.basin(E, W).astype(np.float32)], "x": [-LIM], "y": [-LIM],
                   "dw": [2 * LIM], "dh": [2 * LIM]},
        "gmin": {"w": np.r_[cw, np.nan, cw], "e": np.r_[up, np.nan, -up]},
        "lmin": {"w": [max(lo, -LIM), min(hi, LIM)], "e": [0.0, 0.0]},
    }  # fmt: skip


LANDSCAPE_KEY = (
    "Basins: green global, red unigram. Green curves: global minima; red line: "
    "unigram local minima; cross: saddle; dashed: separatrix."
)


def _key(text: str):
    """A one-paragraph key under a figure (in place of a legend that would hide the data)."""

    return _div(f"<p style='font-size:9pt;margin:0'>{text}</p>", WIDTH)


def _landscape(title: str, src: dict, width: int = HALF, height: int = 330):
    """The (e, w) plane: basins, global-minimum curve, local-minimum segment (from ``src``),
    saddle and separatrix. Returns the figure and the grids the page needs."""
    from bokeh.models import LinearColorMapper, Range1d

    from . import canonical as C

    fig = _figure(title, width=width, height=height, x_range=Range1d(-LIM, LIM),
                  y_range=Range1d(-LIM, LIM))  # fmt: skip
    fig.image("image", x="x", y="y", dw="dw", dh="dh", source=src["basins"],
              color_mapper=LinearColorMapper(palette=[LOCAL_BASIN_COLOR, GLOBAL_BASIN_COLOR],
                                             low=0, high=1))  # fmt: skip
    fig.line("w", "e", source=src["gmin"], color=BIGRAM_COLOR, line_width=2.5)
    fig.line("w", "e", source=src["lmin"], color=UNIGRAM_COLOR, line_width=3)
    cw = np.linspace(-LIM, LIM, 301)
    ws = cw[cw < 0]
    phi = C.separatrix(ws)
    ok = phi >= 0
    fig.line(np.r_[ws[ok], np.nan, ws[ok]], np.r_[np.sqrt(phi[ok]), np.nan, -np.sqrt(phi[ok])],
             color="black", line_dash="dashed", line_width=1)  # fmt: skip
    fig.scatter([C.W_SADDLE], [0], marker="x", size=10, line_width=2, color="black")
    fig.xaxis.axis_label = "w"
    fig.yaxis.axis_label = "e"
    grids = {"basinGrid": np.linspace(-LIM, LIM, BASIN_RESOLUTION), "curveGrid": cw}
    return fig, grids


def canonical_state(p: float, q: float, e0: float, w0: float, lr: float = 0.5,
                    steps: int = 1500) -> dict:  # fmt: skip
    """Gradient flow and gradient descent from (e0, w0) over the landscape of the chain (p, q)."""
    if _regime(p, q) == "iid":
        empty = {"flow": ["w", "e"], "gd": ["w", "e"], "flowLoss": ["t1", "loss"],
                 "gdLoss": ["t1", "loss"], "start": ["w", "e"]}  # fmt: skip
        return _state({k: {c: [] for c in cols} for k, cols in empty.items()},
                      {"mapFig": "p + q = 1: the chain is i.i.d. and the landscape is flat; "
                                 "move p or q"})  # fmt: skip
    land, flow, gd = X.canonical_paths(p, q, e0, w0, lr, steps)
    every = max(1, (steps + 1) // 60)
    start_in = "global" if land.basin(e0, w0) else "unigram"
    end = "global minimum" if flow.label == 1 else "unigram line e = 0"
    return _state(
        {
            **_landscape_state(land),
            "flow": {"w": flow.y[:, 1], "e": flow.y[:, 0]},
            "gd": {"w": gd["w"][::every], "e": gd["e"][::every]},
            "flowLoss": {"t1": 1 + flow.t, "loss": flow.loss},
            "gdLoss": {"t1": 1 + np.arange(steps + 1) * lr, "loss": gd["loss"]},
            "start": {"w": [w0], "e": [e0]},
            "levels": _levels(land.entropy_rate, land.unigram_loss),
        },
        {"mapFig": f"({p:.2f}, {q:.2f}): starts in the {start_in} basin,\nends at the {end}"},
        {"lossFig.y_range": _loss_range(land.entropy_rate, land.unigram_loss)},
    )


def canonical_explorer(p: float = 0.5, q: float = 0.8, e0: float = 0.5, w0: float = 0.5,
                       lr: float = 0.5, steps: int = 1500) -> LiveFigure:  # fmt: skip
    """Gradient flow (ODE) and gradient descent on (e, w, b) of the canonical model from
    (e0, w0), over the basins of the chain (p, q), and both losses against time. Everything is
    recomputed in the page (the package's closed forms; the flow by an adaptive Runge-Kutta)."""
    from bokeh.models import Range1d

    if _regime(p, q) == "iid":
        raise ValueError(f"p + q = 1 (p={p}, q={q}): the landscape is flat; start elsewhere")
    state = canonical_state(p, q, e0, w0, lr, steps)
    src = _sources(state)
    fig, grids = _landscape(state["titles"]["mapFig"], src)
    fig.line("w", "e", source=src["flow"], color="black", line_width=2)
    fig.scatter("w", "e", source=src["gd"], size=4, color=COLORS[0])
    fig.scatter("w", "e", source=src["start"], size=10, fill_color="white", line_color="black")

    y0, y1 = state["props"]["lossFig.y_range"]
    lfig = _figure("population loss against time", width=HALF, height=330, x_axis_type="log",
                   y_range=Range1d(y0, y1))  # fmt: skip
    lfig.line("t1", "loss", source=src["flowLoss"], color="black", line_width=2,
              legend_label="gradient flow, L(e, w) at optimal b")  # fmt: skip
    lfig.line("t1", "loss", source=src["gdLoss"], color=COLORS[0], line_dash="dashed",
              line_width=1.5, legend_label="gradient descent on (e, w, b)")  # fmt: skip
    _draw_levels(lfig, src["levels"])
    lfig.xaxis.axis_label = "1 + time t (gradient descent: step x lr)"
    lfig.yaxis.axis_label = "population loss (nats)"
    lfig.legend.location = "top_right"
    lfig.legend.label_text_font_size = "9pt"

    controls = {
        name: _slider(name, name, v, lo, hi, 0.05, width=150)
        for name, v, lo, hi in (("p", p, 0.05, 0.95), ("q", q, 0.05, 0.95),
                                ("e0", e0, -2.5, 2.5), ("w0", w0, -2.5, 2.5))
    }  # fmt: skip
    models = {**src, "mapFig": fig, "lossFig": lfig}
    _wire("canonical", controls, {**models, **grids, "lr": lr, "gdSteps": steps})
    key = _key(f"{LANDSCAPE_KEY} Black: gradient flow; blue dots: gradient descent (lr {lr:g}).")
    layout = _layout("mf-canonical", _row(*controls.values()), _row(fig, lfig), key)
    return LiveFigure("canonical", layout, {**controls, **models}, state)


def _run_record(index: int, row: Mapping) -> dict:
    """What the page stores of a trained run (float32)."""
    from .canonical import CanonicalLandscape

    land = CanonicalLandscape(*row["chain"])
    flow = X.run_flow(row)
    return {
        "index": index, "title": f"{row['chain']} {row['init']}, seed {row['seed']}",
        "p": float(row["chain"][0]), "q": float(row["chain"][1]),
        "steps": np.asarray(row["steps"], dtype=np.int32),
        "e": _f32(row["e"]), "w": _f32(row["w"]), "loss": _f32(row["loss"]),
        "canon_loss": _f32(land.loss_at_optimal_bias(row["e"], row["w"])),
        "flow_e": _f32(flow.y[:, 0]), "flow_w": _f32(flow.y[:, 1]),
        "rank1": {k: _f32(v) for k, v in dict(row.get("rank1", {})).items()},
    }  # fmt: skip


def run_state(rows: Sequence[Mapping], index: int, step: int, record: dict | None = None) -> dict:
    """Run ``rows[index]`` at training step ``step`` (the last diagnostic step <= ``step``)."""
    from .canonical import CanonicalLandscape

    if not 0 <= index < len(rows):
        raise ValueError(f"index must be in [0, {len(rows) - 1}], got {index}")
    r = record or _run_record(index, rows[index])
    s = r["steps"]
    k = int(np.clip(np.searchsorted(s, step, side="right") - 1, 0, len(s) - 1))
    land = CanonicalLandscape(r["p"], r["q"])
    names = sorted({n for row in rows for n in dict(row.get("rank1", {}))})
    return _state(
        {
            **_landscape_state(land),
            "path": {"w": r["w"], "e": r["e"]},
            "upto": {"w": r["w"][: k + 1], "e": r["e"][: k + 1]},
            "now": {"w": [r["w"][k]], "e": [r["e"][k]], "step": [int(s[k])]},
            "start": {"w": [r["w"][0]], "e": [r["e"][0]]},
            "flow": {"w": r["flow_w"], "e": r["flow_e"]},
            "lossCurve": {"step": np.arange(1, len(r["loss"]) + 1, dtype=np.float32),
                          "loss": r["loss"]},
            "canonLoss": {"step": s, "loss": r["canon_loss"]},
            "energy": {"step": s, **{n: r["rank1"].get(n, np.full(len(s), np.nan, np.float32))
                                     for n in names}},
            "levels": _levels(land.entropy_rate, land.unigram_loss),
            "runState": {"index": [index]},
        },
        {"mapFig": f"{r['title']}\nstep {s[k]}, (e, w) = ({r['e'][k]:.2f}, {r['w'][k]:.2f})"},
        {"lossFig.y_range": _loss_range(land.entropy_rate, land.unigram_loss),
         "marker.location": int(s[k]), "marker2.location": int(s[k])},
    )  # fmt: skip


def run_explorer(rows: Sequence[Mapping], index: int = 0, step: int = 1000) -> LiveFigure:
    """Stored training runs (rows of :func:`markovformer.experiments.l2g.trajectory_table`): a
    run menu and a step slider; the run's projected path over the basins of its chain with the
    gradient flow from its projected start, its exact loss with the canonical loss of its
    projected point, and how rank one its weights are. The runs are embedded (float32)."""
    from bokeh.models import Range1d, Select, Span

    if not rows:
        raise ValueError("run_explorer needs at least one run")
    if not 0 <= index < len(rows):
        raise ValueError(f"index must be in [0, {len(rows) - 1}], got {index}")
    records = [_run_record(i, r) for i, r in enumerate(rows)]
    state = run_state(rows, index, step, records[index])
    src = _sources(state)
    fig, grids = _landscape(state["titles"]["mapFig"], src)
    fig.line("w", "e", source=src["flow"], color="black", line_dash="dotted", line_width=1.5)
    fig.line("w", "e", source=src["path"], color=COLORS[0], line_alpha=0.35, line_width=1)
    fig.line("w", "e", source=src["upto"], color=COLORS[0], line_width=2.5)
    fig.scatter("w", "e", source=src["start"], size=8, fill_color="white", line_color=COLORS[0])
    fig.scatter("w", "e", source=src["now"], size=10, fill_color=COLORS[0], line_color="black")

    y0, y1 = state["props"]["lossFig.y_range"]
    lfig = _figure("exact loss of the run", width=HALF, height=330, y_range=Range1d(y0, y1))
    lfig.line("step", "loss", source=src["lossCurve"], color=COLORS[0], line_width=1,
              legend_label="transformer, exact loss")  # fmt: skip
    lfig.scatter("step", "loss", source=src["canonLoss"], size=3, color="black",
                 legend_label="canonical loss at the projected (e, w)")  # fmt: skip
    _draw_levels(lfig, src["levels"])
    loc = state["props"]["marker.location"]
    marker = Span(location=loc, dimension="height", line_color="gray", line_dash="dotted")
    lfig.add_layout(marker)
    lfig.xaxis.axis_label = "training step"
    lfig.yaxis.axis_label = "loss (nats)"
    lfig.legend.location = "bottom_left"
    lfig.legend.label_text_font_size = "9pt"

    efig = _figure("how rank one the weights are", height=190, y_range=Range1d(0, 1.03))
    names = [c for c in state["sources"]["energy"] if c != "step"]
    labels = {"w1": "W_1", "w2": "W_2", "pos": "positions", "wv": "W_V"}
    for name, color in zip(names, COLORS, strict=False):
        efig.line("step", name, source=src["energy"], color=color, line_width=1.5,
                  legend_label=labels.get(name, name))  # fmt: skip
    marker2 = Span(location=loc, dimension="height", line_color="gray", line_dash="dotted")
    efig.add_layout(marker2)
    efig.xaxis.axis_label = "training step"
    efig.yaxis.axis_label = "top singular value energy"
    efig.legend.location = "bottom_right"
    efig.legend.orientation = "horizontal"
    efig.legend.label_text_font_size = "9pt"

    last = int(max(int(r["steps"][-1]) for r in records))
    menu = Select(name="menu", title="run", value=str(index),
                  options=[(str(i), f"{r['chain']} {r['init']}, seed {r['seed']} -> "
                            f"{r['outcome']}") for i, r in enumerate(rows)])  # fmt: skip
    _fit(menu, 370)
    controls = {"menu": menu,
                "step": _slider("step", "training step", step, 0, last, 10, fmt="0", width=250)}  # fmt: skip
    models = {**src, "mapFig": fig, "lossFig": lfig, "marker": marker, "marker2": marker2}
    _wire("run", controls, {**models, **grids, "runs": records, "energyNames": names})
    key = _key(
        f"{LANDSCAPE_KEY} Blue: the run's projected path up to the step (faint: the rest); "
        "dotted: the gradient flow from its projected start."
    )
    layout = _layout("mf-run", _row(*controls.values()), _row(fig, lfig), key, efig)
    return LiveFigure("run", layout, {**controls, **models}, state)


START_COLORS = ("#7f0000", "#1b5e20")  # start in the unigram basin, in the global basin


def init_state(p: float, q: float, scale: float, seed: int, n: int = 400,
               measured: Mapping | None = None) -> dict:  # fmt: skip
    """Gaussian starts of scale ``scale`` over the basins of (p, q) and Pr(global basin)."""
    from .canonical import CanonicalLandscape, basin_label

    if _regime(p, q) == "iid":
        return _state({"starts": {"w": [], "e": [], "color": []}},
                      {"mapFig": "p + q = 1: the chain is i.i.d. and has no basins; move p or q"})  # fmt: skip
    land = CanonicalLandscape(p, q)
    starts = X.init_starts(scale, seed, n)
    lab = basin_label(starts[:, 0], starts[:, 1], land.switching).astype(bool)
    regime = "switching" if land.switching else "sticky"
    curve = X.basin_curve(land.switching)
    meas = (measured or {}).get(regime, {"scale": [], "success": []})
    return _state(
        {
            **_landscape_state(land),
            "starts": {"w": starts[:, 1], "e": starts[:, 0],
                       "color": [START_COLORS[int(v)] for v in lab]},
            "curve": {"scale": curve["scale"], "global": curve["global"]},
            "measured": {"scale": [float(v) for v in meas["scale"]],
                         "success": [float(v) for v in meas["success"]]},
        },
        {"mapFig": f"({p:.2f}, {q:.2f}), starts (e0, w0) ~ N(0, {scale:.3g}^2 I)\n"
                   f"{lab.mean():.2f} of {n} in the global basin",
         "curveFig": f"p + q {'>' if land.switching else '<'} 1 ({regime}), s = {scale:.3g}"},
        {"marker.location": scale},
    )  # fmt: skip


def init_explorer(p: float = 0.5, q: float = 0.8, scale: float = 0.5, seed: int = 0,
                  n: int = 400, measured: Mapping | None = None, n_seeds: int = 21) -> LiveFigure:  # fmt: skip
    """Gaussian starts (e0, w0) ~ N(0, s^2 I) over the basins of the chain (p, q), and the
    probability of the global basin against s (canonical Monte Carlo; ``measured`` full-model
    success fractions keyed by regime "switching" / "sticky", with "scale" and "success")."""
    from bokeh.models import Range1d, Span

    if not 0 <= seed < n_seeds:
        raise ValueError(f"seed must be in [0, {n_seeds - 1}], got {seed}")
    if _regime(p, q) == "iid":
        raise ValueError(f"p + q = 1 (p={p}, q={q}): the chain has no basins; start elsewhere")
    state = init_state(p, q, scale, seed, n, measured)
    src = _sources(state)
    fig, grids = _landscape(state["titles"]["mapFig"], src, width=330)
    fig.scatter("w", "e", source=src["starts"], color="color", size=3)
    fig.scatter([-1.0], [1.0], marker="star", size=16, fill_color="gold", line_color="black")

    cfig = _figure(state["titles"]["curveFig"], width=310, height=330, x_axis_type="log",
                   y_range=Range1d(-0.03, 1.03))  # fmt: skip
    cfig.line("scale", "global", source=src["curve"], color=COLORS[0], line_width=2,
              legend_label="canonical model (gradient flow)")  # fmt: skip
    cfig.scatter("scale", "success", source=src["measured"], size=7, color="black",
                 legend_label="full transformers reaching the entropy rate")  # fmt: skip
    marker = Span(location=scale, dimension="height", line_color="gray", line_dash="dotted")
    cfig.add_layout(marker)
    cfig.xaxis.axis_label = "init scale s"
    cfig.yaxis.axis_label = "Pr(global minimum)"
    cfig.legend.location = "bottom_left"
    cfig.legend.label_text_font_size = "9pt"

    controls = {
        "p": _slider("p", "p", p, 0.05, 0.95, 0.05, width=140),
        "q": _slider("q", "q", q, 0.05, 0.95, 0.05, width=140),
        "logScale": _slider(
            "logScale",
            "log10 of the init scale s",
            float(np.log10(scale)),
            -2.0,
            0.6,
            0.05,
            width=190,
        ),  # fmt: skip
        "seed": _slider("seed", "seed", seed, 0, n_seeds - 1, 1, fmt="0", width=140),
    }
    curves = {r: X.basin_curve(r == "switching") for r in ("switching", "sticky")}
    meas = {k: {"scale": [float(v) for v in m["scale"]],
                "success": [float(v) for v in m["success"]]}
            for k, m in (measured or {}).items()}  # fmt: skip
    normals = np.stack([X.init_normals(s, n) for s in range(n_seeds)])
    models = {**src, "mapFig": fig, "curveFig": cfig, "marker": marker}
    _wire("init", controls, {**models, **grids, "normals": _f64(normals).reshape(-1), "n": n,
                             "colors": list(START_COLORS), "measuredRuns": meas,
                             "curveScale": _f64(curves["switching"]["scale"]),
                             "curveGlobal": {k: _f64(v["global"]) for k, v in curves.items()}})  # fmt: skip
    key = _key(
        f"{LANDSCAPE_KEY} Dots: the starts, dark green in the global basin and dark red "
        "in the unigram basin; star: the guideline (e, w) = (1, -1)."
    )
    layout = _layout("mf-init", _row(*controls.values()), _row(fig, cfig), key)
    return LiveFigure("init", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapter 6: attention kernels
# --------------------------------------------------------------------------------------------


def _ident(name: str) -> str:
    """A kernel's name as a JavaScript identifier (CustomJS passes its arguments by name)."""
    return name.replace("-", "_")


KERNEL_LABELS = {"softmax": "softmax", "gaussian": "Gaussian",
                 "gaussian-rownorm": "row-normalised Gaussian"}  # fmt: skip


def kernel_state(c: float, qk_scale: float, seed: int) -> dict:
    """The three attention matrices (the package's kernel example) and their row sums."""
    mats = X.kernel_matrices(c, qk_scale, seed)
    sources, titles, props = {}, {}, {}
    for i, (name, label) in enumerate(KERNEL_LABELS.items()):
        S = _f64(mats[name])
        n = S.shape[0]
        sums = S.sum(1)
        sources[f"S_{_ident(name)}"] = {
            "image": [S],
            "x": [-0.5],
            "y": [-0.5],
            "dw": [n],
            "dh": [n],
        }
        titles[f"fig_{_ident(name)}"] = f"{label}\nrow sums {sums.min():.2f} to {sums.max():.2f}"
        props[f"mapper{i}.high"] = float(S.max()) if S.max() > 0 else 1.0
    props["header.text"] = f"c = {c:.3g}, scale of W_Q, W_K = {qk_scale:.3g}, seed {seed}"
    return _state(sources, titles, props)


def kernel_explorer(c: float = 2.0, qk_scale: float = 1.0, seed: int = 0,
                    n_seeds: int = 21) -> LiveFigure:  # fmt: skip
    """Softmax, Gaussian and row-normalised Gaussian attention on one random input: sliders for
    the bandwidth c, the scale of W_Q, W_K and the seed. The page recomputes the three kernels
    from the stored queries and keys of every seed."""
    from bokeh.models import ColorBar, LinearColorMapper, Range1d
    from bokeh.palettes import Viridis256

    if not 0 <= seed < n_seeds:
        raise ValueError(f"seed must be in [0, {n_seeds - 1}], got {seed}")
    state = kernel_state(c, qk_scale, seed)
    src = _sources(state)
    inputs = [X.kernel_inputs(s) for s in range(n_seeds)]
    n, dk = inputs[0][0].shape
    figs, sources, mappers = [], [], []
    for i, name in enumerate(KERNEL_LABELS):
        mapper = LinearColorMapper(
            palette=Viridis256, low=0, high=state["props"][f"mapper{i}.high"]
        )
        fig = _figure(state["titles"][f"fig_{_ident(name)}"], width=214, height=250,
                      x_range=Range1d(-0.5, n - 0.5), y_range=Range1d(n - 0.5, -0.5))  # fmt: skip
        fig.image("image", x="x", y="y", dw="dw", dh="dh", source=src[f"S_{_ident(name)}"],
                  color_mapper=mapper)  # fmt: skip
        fig.add_layout(ColorBar(color_mapper=mapper, width=8, label_standoff=4,
                                major_label_text_font_size="9pt"), "right")  # fmt: skip
        fig.title.text_font_size = "9pt"
        fig.xaxis.axis_label = "key position j"
        fig.yaxis.axis_label = "query position i"
        figs.append(fig)
        sources.append(src[f"S_{_ident(name)}"])
        mappers.append(mapper)
    header = _div(state["props"]["header.text"], WIDTH)
    controls = {
        "logC": _slider("logC", "log10 of the bandwidth c", float(np.log10(c)), -1.0, 1.5, 0.05),
        "logScale": _slider(
            "logScale", "log10 of the scale of W_Q, W_K", float(np.log10(qk_scale)), -1.0, 1.0, 0.05
        ),  # fmt: skip
        "seed": _slider("seed", "seed", seed, 0, n_seeds - 1, 1, fmt="0", width=180),
    }
    named = {f"mapper{i}": m for i, m in enumerate(mappers)}
    named.update({f"fig_{_ident(k)}": f for k, f in zip(KERNEL_LABELS, figs, strict=True)})
    args = {**src, **named, "sources": sources, "mappers": mappers, "figs": figs, "header": header,
            "kernels": list(KERNEL_LABELS), "labels": list(KERNEL_LABELS.values()),
            "q0": _f64(np.stack([i[0] for i in inputs])).reshape(-1),
            "k0": _f64(np.stack([i[1] for i in inputs])).reshape(-1), "n": n, "dk": dk}  # fmt: skip
    _wire("kernel", controls, args)
    layout = _layout("mf-kernel", _row(*controls.values()), header, _row(*figs))
    models = {**src, **named, "header": header}
    return LiveFigure("kernel", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapter 7: realisable datasets
# --------------------------------------------------------------------------------------------


def dataset_state(n_tokens: int, n_sentences: int, max_len: int, seed: int) -> dict:
    """Boxes of the sentences of :func:`markovformer.explorers.dataset` (optimal token framed red,
    query shaded blue), their next tokens, and the collocation as arrows (``renderDataset``)."""
    if max_len > n_tokens:
        empty = {"boxes": ["x", "y", "tok", "fill", "line", "width", "sentence", "position"],
                 "nexts": ["x", "y", "tok"], "nodes": ["x", "y", "tok"],
                 "arrows": ["x0", "y0", "x1", "y1", "src", "dst"]}  # fmt: skip
        return _state({k: {c: [] for c in cols} for k, cols in empty.items()},
                      {"fig": "a sentence has distinct tokens: the longest can have at most "
                              f"K = {n_tokens}"})  # fmt: skip
    ds = X.dataset(n_tokens, n_sentences, max_len, seed)
    K, N = ds.n_tokens, len(ds)
    toks = [[int(t) for t in ds.tokens[r, : int(ds.lengths[r])]] for r in range(N)]
    lmax = max(len(t) for t in toks)
    box = {k: [] for k in ("x", "y", "tok", "fill", "line", "width", "sentence", "position")}
    nx = {"x": [], "y": [], "tok": []}
    for r, sent in enumerate(toks):
        y, x0, opt = N - 1 - r, lmax - len(sent), int(ds.optimal[r])
        for i, t in enumerate(sent):
            is_opt, is_q = t == opt, i == len(sent) - 1
            box["x"].append(x0 + i + 0.5)
            box["y"].append(y + 0.5)
            box["tok"].append(str(t))
            box["fill"].append("#fde0dd" if is_opt else ("#e8eef7" if is_q else "white"))
            box["line"].append("#d62728" if is_opt else "#666666")
            box["width"].append(2.5 if is_opt else 1)
            box["sentence"].append(r)
            box["position"].append(i)
        nx["x"].append(lmax + 1.55)
        nx["y"].append(y + 0.5)
        nx["tok"].append(str(int(ds.next_tokens[r])))
    height = max(N, 1)
    ys = [height - 0.1 - x * (height - 0.2) / (K - 1) if K > 1 else height / 2 for x in range(K)]
    cx = lmax + 3.2
    nodes = {"x": [cx] * K + [cx + 1.6] * K, "y": ys + ys, "tok": [str(x) for x in range(K)] * 2}
    ar = {k: [] for k in ("x0", "y0", "x1", "y1", "src", "dst")}
    for x, nxt in enumerate(int(v) for v in ds.collocation):
        if nxt >= 0:
            for k, v in zip(ar, (cx + 0.2, ys[x], cx + 1.4, ys[nxt], x, nxt), strict=True):
                ar[k].append(v)
    return _state(
        {"boxes": box, "nexts": nx, "nodes": nodes, "arrows": ar},
        {"fig": f"K = {K} tokens, {N} sentences of length 2 to {max_len}, seed {seed}: optimal "
                "token framed red, query shaded blue, next token on the right"},
        {"fig.x_range": (-0.2, cx + 2.0), "fig.y_range": (-0.3, height + 0.6)},
    )  # fmt: skip


def dataset_explorer(n_tokens: int = 8, n_sentences: int = 6, max_len: int = 6, seed: int = 6,
                     seeds: range = range(0, 10)) -> LiveFigure:  # fmt: skip
    """Datasets of :func:`markovformer.ntp.make_dataset`: sliders for the vocabulary size K, the
    number of sentences, the longest sentence and the seed. Every dataset over the sliders'
    ranges (K 3..16, 1..10 sentences, lengths 2..10, the given seeds) is drawn by the package
    when the chapter runs and embedded (int8)."""
    from bokeh.models import Arrow, LabelSet, Range1d, VeeHead

    if seed not in seeds:
        raise ValueError(f"seed must be in {seeds}, got {seed}")
    if max_len > n_tokens:
        raise ValueError(f"max_len must be <= n_tokens, got {max_len} > {n_tokens}")
    table = X.dataset_table(seeds=seeds)
    state = dataset_state(n_tokens, n_sentences, max_len, seed)
    src = _sources(state)
    (x0, x1), (y0, y1) = state["props"]["fig.x_range"], state["props"]["fig.y_range"]
    fig = _figure(state["titles"]["fig"], height=70 + 34 * 10, x_range=Range1d(x0, x1),
                  y_range=Range1d(y0, y1))  # fmt: skip
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = None
    fig.title.text_font_size = "9pt"
    fig.rect("x", "y", 0.9, 0.8, source=src["boxes"], fill_color="fill", line_color="line",
             line_width="width")  # fmt: skip
    fig.rect("x", "y", 0.9, 0.8, source=src["nexts"], fill_color="#fff5cc", line_color="#666666")
    fig.scatter("x", "y", source=src["nodes"], size=18, fill_color="white", line_color="gray")
    for name, size in (("boxes", "10pt"), ("nexts", "10pt"), ("nodes", "9pt")):
        fig.add_layout(LabelSet(x="x", y="y", text="tok", source=src[name], text_align="center",
                                text_baseline="middle", text_font_size=size))  # fmt: skip
    fig.add_layout(Arrow(end=VeeHead(size=7, line_color=COLORS[0], fill_color=COLORS[0]),
                         source=src["arrows"], x_start="x0", y_start="y0", x_end="x1",
                         y_end="y1", line_color=COLORS[0]))  # fmt: skip
    controls = {
        "K": _slider("K", "tokens K", n_tokens, 3, 16, 1, fmt="0", width=150),
        "N": _slider("N", "sentences", n_sentences, 1, 10, 1, fmt="0", width=150),
        "L": _slider("L", "longest", max_len, 2, 10, 1, fmt="0", width=150),
        "seed": _slider("seed", "seed", seed, seeds.start, seeds.stop - 1, 1, fmt="0", width=150),
    }
    models = {**src, "fig": fig}
    _wire("dataset", controls, {**models, "table": table})
    layout = _layout("mf-dataset", _row(*controls.values()), fig)
    return LiveFigure("dataset", layout, {**controls, **models}, state)


# --------------------------------------------------------------------------------------------
# Chapter 8: a stored ICL-MC run, step by step
# --------------------------------------------------------------------------------------------

ICL_STRATEGIES = ("uniform", "unigram", "bigram")
ICL_COLORS = {"uniform": "#7f7f7f", "unigram": UNIGRAM_COLOR, "bigram": "#000000"}
ICL_KL_RANGE = (5e-4, 0.6)  # KL(strategy || model) of the chapter's runs: about 1e-3 to 0.3


def _half_bits(a) -> np.ndarray:
    """float16 values as their bits (uint16): the page decodes them exactly (``halfToFloat``)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float16)).view(np.uint16)


def _half_values(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float64)


def _icl_record(data: Mapping) -> dict:
    """What the page stores of one run of :func:`markovformer.experiments.icl.step_explorer_data`:
    the attention maps (head 0 of every layer) as the float16 bits of their lower triangle (causal
    attention is 0 above the diagonal; the artifacts store float16), the curves as float32."""
    maps = np.asarray(data["maps"])
    if maps.ndim != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must have shape (steps, layers, heads, m, m), got {maps.shape}")
    _, L, _, m, _ = maps.shape
    if L < 2:
        raise ValueError(f"the step explorer shows a previous-token layer and an induction layer: "
                         f"it needs depth >= 2, got {L}")  # fmt: skip
    rows, cols = np.tril_indices(m)
    upper = maps[:, :, 0][..., ~np.tri(m, dtype=bool)]
    if upper.size and np.any(upper != 0):
        raise ValueError("attention maps must be causal (0 above the diagonal)")
    return {
        "seed": int(data["seed"]), "steps": np.asarray(data["steps"], dtype=np.int32),
        "m": int(m), "layers": int(L),
        "maps": _half_bits(maps[:, :, 0][..., rows, cols]).reshape(-1),
        "symbols": np.asarray(data["symbols"], dtype=np.int8),
        "kl": {n: _f32(data["kl"][n]) for n in ICL_STRATEGIES},
        "prev": _f32(np.asarray(data["prev_token"])[:, 0, 0]),
        "ind": _f32(np.asarray(data["induction"])[:, L - 1, 0]),
        "indUniform": _f32(data["induction_uniform"]),
        "gap": _f32(data["gap"]),
    }  # fmt: skip


def _icl_map(r: dict, k: int, layer: int) -> np.ndarray:
    """The attention map of ``layer`` at the stored step ``k`` of a record (m x m, float64)."""
    m, L = r["m"], r["layers"]
    T = m * (m + 1) // 2
    base = (k * L + layer) * T
    out = np.zeros((m, m))
    out[np.tril_indices(m)] = _half_values(r["maps"][base : base + T])
    return out


def _icl_find(runs: Sequence[Mapping], seed: int) -> int:
    seeds = [int(d["seed"]) for d in runs]
    if int(seed) not in seeds:
        raise ValueError(f"seed must be one of the stored runs' seeds {seeds}, got {seed}")
    return seeds.index(int(seed))


def icl_step_state(runs: Sequence[Mapping], seed: int, step: int,
                   record: dict | None = None) -> dict:  # fmt: skip
    """The run of ``seed`` (one of ``runs``, each from
    :func:`markovformer.experiments.icl.step_explorer_data`) at its stored step nearest ``step``
    (ties to the earlier, as :func:`~markovformer.experiments.icl.step_explorer_figure`): the
    attention maps of head 0 of every layer, the run's KL to each strategy and the median over
    the runs, its previous-token (layer 1) and induction (last layer) scores, with the step
    marked."""
    i = _icl_find(runs, seed)
    r = record or _icl_record(runs[i])
    s = r["steps"]
    k = int(np.argmin(np.abs(s - step)))
    m, L = r["m"], r["layers"]
    sources, titles, props = {}, {}, {}
    for layer in range(L):
        att = _icl_map(r, k, layer)
        vmax = float(att[4:].max()) if m > 4 else float(att.max())  # as icl._draw_map
        sources[f"map{layer + 1}"] = {"image": [att], "x": [-0.5], "y": [-0.5], "dw": [m],
                                      "dh": [m]}  # fmt: skip
        props[f"mapper{layer + 1}.high"] = max(vmax, 1e-6)
        titles[f"map{layer + 1}Fig"] = f"layer {layer + 1} at step {s[k]}"
    titles["map1Fig"] += f": previous-token score {r['prev'][k]:.2f}"
    titles[f"map{L}Fig"] += f": induction score {r['ind'][k]:.2f}"
    sym = [str(int(v)) for v in r["symbols"]]
    sources["symbols"] = {"x": list(range(m)) + [-1.3] * m, "y": [-1.3] * m + list(range(m)),
                          "text": sym + sym}  # fmt: skip
    sources["kl"] = {"step": s, **{n: r["kl"][n] for n in ICL_STRATEGIES}}
    kl_now = [float(r["kl"][n][k]) for n in ICL_STRATEGIES]
    closest = ICL_STRATEGIES[int(np.argmin(kl_now))]
    sources["klNow"] = {"step": [int(s[k])] * len(ICL_STRATEGIES), "kl": kl_now,
                        "color": [ICL_COLORS[n] for n in ICL_STRATEGIES]}  # fmt: skip
    sources["scores"] = {"step": s, "prev": r["prev"], "ind": r["ind"],
                         "indUniform": r["indUniform"]}  # fmt: skip
    sources["scoresNow"] = {"step": [int(s[k])] * 2, "score": [float(r["prev"][k]),
                            float(r["ind"][k])], "color": [COLORS[0], COLORS[1]]}  # fmt: skip
    titles["klFig"] = (f"seed {r['seed']}, step {s[k]}: closest strategy {closest}\n"
                       f"loss minus Bayes loss (probe batch) {r['gap'][k]:.3f} nats")  # fmt: skip
    props["marker.location"] = int(s[k])
    props["marker2.location"] = int(s[k])
    return _state(sources, titles, props)


def _step_axes(fig, ylabel: str) -> None:
    """Label a panel of the step explorer (x: training step) and put its legend bottom right."""
    fig.xaxis.axis_label = "training step"
    fig.yaxis.axis_label = ylabel
    fig.legend.location = "bottom_right"
    fig.legend.label_text_font_size = "9pt"
    fig.legend.background_fill_alpha = 0.6


def _attention_map(title: str, image_src, symbols_src, high: float, m: int, text_size: str,
                   title_size: str, labels: tuple[str, str], **fig_kw):  # fmt: skip
    """An m x m attention map of the stored runs (queries down, keys across; white at 0), the
    symbols of the probe sequence along the top and the left, and a colour bar; ``fig_kw`` sizes
    the figure. Returns (figure, colour mapper) for a callback to rescale."""
    from bokeh.models import ColorBar, LinearColorMapper, Range1d
    from bokeh.palettes import Blues256

    mapper = LinearColorMapper(palette=list(reversed(Blues256)), low=0, high=high)
    fig = _figure(title, x_range=Range1d(-1.9, m - 0.5), y_range=Range1d(m - 0.5, -1.9), **fig_kw)
    fig.image("image", x="x", y="y", dw="dw", dh="dh", source=image_src, color_mapper=mapper)
    fig.text("x", "y", text="text", source=symbols_src, text_align="center",
             text_baseline="middle", text_font_size=text_size, text_color="#444444")  # fmt: skip
    fig.add_layout(ColorBar(color_mapper=mapper, width=8, label_standoff=4,
                            major_label_text_font_size="9pt"), "right")  # fmt: skip
    fig.title.text_font_size = title_size
    fig.xaxis.axis_label, fig.yaxis.axis_label = labels
    fig.grid.visible = False
    return fig, mapper


def icl_step_explorer(runs: Sequence[Mapping], seed: int | None = None,
                      step: int | None = None) -> LiveFigure:  # fmt: skip
    """Stored ICL-MC runs, step by step: ``runs`` are
    :func:`markovformer.experiments.icl.step_explorer_data` of runs of one depth, one per seed.
    A seed menu and a step slider; the attention maps of the first positions of the run's probe
    sequence (head 0 of every layer), its KL to the uniform, unigram and bigram strategies over
    training (with the median over the runs), and its previous-token and induction scores, with
    the step marked. The runs are embedded (maps as float16 bits of their lower triangle)."""
    from bokeh.models import Range1d, Select, Span

    if not runs:
        raise ValueError("icl_step_explorer needs at least one run")
    records = [_icl_record(d) for d in runs]
    if len({(r["m"], r["layers"], tuple(r["steps"])) for r in records}) != 1:
        raise ValueError("the runs must share their steps, map size and depth")
    seed = records[0]["seed"] if seed is None else int(seed)
    i = _icl_find(runs, seed)
    steps = records[i]["steps"]
    step = int(steps[-1]) if step is None else int(step)
    state = icl_step_state(runs, seed, step, records[i])
    src = _sources(state)
    m, L = records[i]["m"], records[i]["layers"]

    figs, mappers, map_sources = [], [], []
    for layer in range(L):
        name = f"map{layer + 1}"
        fig, mapper = _attention_map(
            state["titles"][f"{name}Fig"], src[name], src["symbols"],
            state["props"][f"mapper{layer + 1}.high"], m, text_size="7pt", title_size="9pt",
            labels=("key position (its symbol above)", "query position (symbol left)"),
            width=WIDTH // L, height=320,
        )  # fmt: skip
        figs.append(fig)
        mappers.append(mapper)
        map_sources.append(src[name])

    kfig = _figure(state["titles"]["klFig"], width=HALF + 10, height=270, y_axis_type="log",
                   y_range=Range1d(*ICL_KL_RANGE), x_range=Range1d(0, int(steps[-1])))  # fmt: skip
    for n in ICL_STRATEGIES:
        kfig.line(steps, _f32(runs[i]["kl_median"][n]), color=ICL_COLORS[n], line_width=1,
                  line_dash="dashed", line_alpha=0.7)  # fmt: skip
        kfig.line("step", n, source=src["kl"], color=ICL_COLORS[n], line_width=2, legend_label=n)
    kfig.scatter("step", "kl", source=src["klNow"], color="color", size=7)
    kfig.title.text_font_size = "9pt"
    marker = Span(location=state["props"]["marker.location"], dimension="height",
                  line_color=COLORS[0], line_dash="dotted")  # fmt: skip
    kfig.add_layout(marker)
    _step_axes(kfig, "KL (nats per position)")
    kfig.legend.orientation = "horizontal"

    sfig = _figure("previous-token and induction scores", width=HALF - 10, height=270,
                   y_range=Range1d(0, 1), x_range=Range1d(0, int(steps[-1])))  # fmt: skip
    sfig.line("step", "prev", source=src["scores"], color=COLORS[0], line_width=2,
              legend_label="layer 1: previous token")  # fmt: skip
    sfig.line("step", "ind", source=src["scores"], color=COLORS[1], line_width=2,
              legend_label=f"layer {L}: induction")  # fmt: skip
    sfig.line("step", "indUniform", source=src["scores"], color=COLORS[1], line_dash="dotted",
              line_width=1.2)  # fmt: skip
    prev_uniform = float(runs[i].get("prev_token_uniform", np.nan))
    if np.isfinite(prev_uniform):
        sfig.hspan(y=[prev_uniform], line_color=COLORS[0], line_dash="dotted", line_width=1.2)
    sfig.scatter("step", "score", source=src["scoresNow"], color="color", size=7)
    marker2 = Span(location=state["props"]["marker2.location"], dimension="height",
                   line_color=COLORS[0], line_dash="dotted")  # fmt: skip
    sfig.add_layout(marker2)
    _step_axes(sfig, "score")

    first = int(steps[0])
    every = int(np.min(np.diff(steps))) if len(steps) > 1 else 1
    menu = [(str(r["seed"]), f"seed {r['seed']}") for r in records]
    controls = {"seed": _fit(Select(name="seed", title="run", value=str(seed), options=menu), 150)}
    controls["step"] = _slider("step", "training step (nearest stored)", step, first,
                               int(steps[-1]), every, fmt="0", width=470)  # fmt: skip
    named = {f"mapper{j + 1}": mp for j, mp in enumerate(mappers)}
    named.update({f"map{j + 1}Fig": f for j, f in enumerate(figs)})
    models = {**src, **named, "klFig": kfig, "scoreFig": sfig, "marker": marker,
              "marker2": marker2}  # fmt: skip
    _wire("icl_step", controls, {**models, "runs": records, "mapSources": map_sources,
                                 "mappers": mappers, "mapFigs": figs,
                                 "strategies": list(ICL_STRATEGIES),
                                 "strategyColors": [ICL_COLORS[n] for n in ICL_STRATEGIES],
                                 "scoreColors": [COLORS[0], COLORS[1]]})  # fmt: skip
    key = _key(
        f"Maps: attention of the first {m} positions of the run's probe sequence (rows: queries, "
        "columns: keys; the colour scale ends at the largest weight of rows 4 on). Left below: "
        "the run's KL to each strategy (solid) and the median over the runs (dashed). Right "
        "below: the scores (dotted: uniform causal attention). Dots and dotted lines: the step."
    )
    layout = _layout("mf-icl_step", _row(*controls.values()), _row(*figs),
                     _row(kfig, sfig), key)  # fmt: skip
    return LiveFigure("icl_step", layout, {**controls, **models}, state)


# Chapter 9: the plateau explorer lives in its own module (it imports the helpers above)
from .live_plateau import plateau_explorer, plateau_state  # noqa: E402
