"""Chapter 9's live figure: the stored runs of the plateau experiments, arm by arm, step by step.

Built from the helpers of :mod:`markovformer.live` (same conventions: ``plateau_state`` is what
the figure shows for given control values, ``MFLive.update.plateau`` in live.js reproduces it in
the page, and the tests compare the two in node and in a browser). The figure is stacked, every
panel as wide as the text column, so that it fits a phone's screen too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .live import (
    COLORS,
    ICL_COLORS,
    ICL_STRATEGIES,
    LiveFigure,
    _attention_map,
    _figure,
    _icl_map,
    _icl_record,
    _key,
    _layout,
    _row,
    _slider,
    _sources,
    _state,
    _wire,
)

__all__ = ["plateau_explorer", "plateau_state"]

GAP_RANGE = (1e-3, 0.3)  # loss minus bigram loss of the chapter's runs: about 2e-3 to 0.2 nats
KL_RANGE = (5e-4, 0.6)
STRETCH = "stretch_width"


def _record(data: Mapping) -> dict:
    """One run of :func:`markovformer.experiments.plateau.explorer_data` as the page stores it
    (the maps as the float16 bits of their lower triangles, as chapter 8's explorer)."""
    r = _icl_record(data)
    r.update(arm=str(data["arm"]), label=str(data["label"]),
             escape=-1 if data["escape"] is None else int(data["escape"]),
             unigramGap=float(data["unigram_gap"]))  # fmt: skip
    return r


def _find(runs: Sequence[Mapping], arm: str, seed: int) -> int:
    keys = [(str(d["arm"]), int(d["seed"])) for d in runs]
    if (str(arm), int(seed)) not in keys:
        raise ValueError(f"(arm, seed) = ({arm!r}, {seed}) is not a stored run; stored: {keys}")
    return keys.index((str(arm), int(seed)))


def plateau_state(runs: Sequence[Mapping], arm: str, seed: int, step: int,
                  record: dict | None = None) -> dict:  # fmt: skip
    """The run (``arm``, ``seed``) of ``runs`` at its stored step nearest ``step`` (ties to the
    earlier): its loss minus the bigram loss and its KL to each strategy over training, the
    values at the step, its escape step, and the attention of both layers at the step."""
    r = record or _record(runs[_find(runs, arm, seed)])
    s = r["steps"]
    k = int(np.argmin(np.abs(s - step)))
    m = r["m"]
    sources, titles, props = {}, {}, {}
    for layer in range(2):
        att = _icl_map(r, k, layer)
        vmax = float(att[4:].max()) if m > 4 else float(att.max())
        sources[f"map{layer + 1}"] = {"image": [att], "x": [-0.5], "y": [-0.5], "dw": [m],
                                      "dh": [m]}  # fmt: skip
        props[f"mapper{layer + 1}.high"] = max(vmax, 1e-6)
    titles["map1Fig"] = f"layer 1: previous-token score {r['prev'][k]:.2f}"
    titles["map2Fig"] = f"layer 2: induction score {r['ind'][k]:.2f}"
    sym = [str(int(v)) for v in r["symbols"]]
    sources["symbols"] = {"x": list(range(m)) + [-1.3] * m, "y": [-1.3] * m + list(range(m)),
                          "text": sym + sym}  # fmt: skip
    gap = np.maximum(r["gap"], np.float32(GAP_RANGE[0]))  # a log axis: clip at its floor
    sources["curves"] = {"step": s, "gap": gap, **{n: r["kl"][n] for n in ICL_STRATEGIES}}
    sources["gapNow"] = {"step": [int(s[k])], "gap": [float(gap[k])]}
    kl_now = [float(r["kl"][n][k]) for n in ICL_STRATEGIES]
    closest = ICL_STRATEGIES[int(np.argmin(kl_now))]
    sources["klNow"] = {"step": [int(s[k])] * len(ICL_STRATEGIES), "kl": kl_now,
                        "color": [ICL_COLORS[n] for n in ICL_STRATEGIES]}  # fmt: skip
    sources["level"] = {"y": [r["unigramGap"]]}
    esc = r["escape"]
    sources["escape"] = {"x": [esc] if esc >= 0 else []}
    titles["gapFig"] = (f"{r['label']}, seed {r['seed']}, step {s[k]}:\n"
                        f"loss minus bigram loss {r['gap'][k]:.3f} nats")  # fmt: skip
    when = f"escape at step {esc}" if esc >= 0 else f"no escape by step {s[-1]}"
    titles["klFig"] = f"closest strategy at step {s[k]}: {closest}; {when}"
    props["marker.location"] = int(s[k])
    props["marker2.location"] = int(s[k])
    return _state(sources, titles, props)


def plateau_explorer(runs: Sequence[Mapping], arm: str | None = None, seed: int | None = None,
                     step: int | None = None) -> LiveFigure:  # fmt: skip
    """Stored runs of chapter 9 (:func:`markovformer.experiments.plateau.explorer_runs`): an arm
    menu, a seed menu and a step slider; the run's loss minus the bigram loss (the in-context
    unigram's level dashed) and its KL to each strategy over training, with the step and the
    escape step marked, and the attention of both layers at the step. Stacked, full width."""
    from bokeh.models import Range1d, Select, Span

    if not runs:
        raise ValueError("plateau_explorer needs at least one run")
    records = [_record(d) for d in runs]
    if len({(r["m"], r["layers"], tuple(r["steps"])) for r in records}) != 1:
        raise ValueError("the runs must share their steps, map size and depth")
    arm = records[0]["arm"] if arm is None else str(arm)
    seed = records[0]["seed"] if seed is None else int(seed)
    i = _find(runs, arm, seed)
    steps = records[i]["steps"]
    step = int(steps[-1]) if step is None else int(step)
    state = plateau_state(runs, arm, seed, step, records[i])
    src = _sources(state)
    m, last = records[i]["m"], int(steps[-1])

    gfig = _figure(state["titles"]["gapFig"], height=230, y_axis_type="log",
                   y_range=Range1d(*GAP_RANGE), x_range=Range1d(0, last), sizing_mode=STRETCH)  # fmt: skip
    gfig.line("step", "gap", source=src["curves"], color=COLORS[0], line_width=2,
              legend_label="this run")  # fmt: skip
    gfig.hspan(y="y", source=src["level"], line_color=ICL_COLORS["unigram"], line_dash="dashdot",
               line_width=1.2)  # fmt: skip
    gfig.scatter("step", "gap", source=src["gapNow"], color=COLORS[0], size=7)
    kfig = _figure(state["titles"]["klFig"], height=230, y_axis_type="log",
                   y_range=Range1d(*KL_RANGE), x_range=gfig.x_range, sizing_mode=STRETCH)  # fmt: skip
    for n in ICL_STRATEGIES:
        kfig.line("step", n, source=src["curves"], color=ICL_COLORS[n], line_width=2,
                  legend_label=n)  # fmt: skip
    kfig.scatter("step", "kl", source=src["klNow"], color="color", size=7)
    markers = []
    for fig, ylabel in ((gfig, "loss - bigram loss (nats)"), (kfig, "KL(strategy || model)")):
        fig.vspan(x="x", source=src["escape"], line_color="#000000", line_dash="dashed",
                  line_width=1)  # fmt: skip
        marker = Span(location=state["props"]["marker.location"], dimension="height",
                      line_color=COLORS[0], line_dash="dotted", line_width=1.5)  # fmt: skip
        fig.add_layout(marker)
        markers.append(marker)
        fig.xaxis.axis_label = "training step"
        fig.yaxis.axis_label = ylabel
        fig.legend.location = "bottom_left"
        fig.legend.orientation = "horizontal"
        fig.legend.label_text_font_size = "9pt"
        fig.legend.background_fill_alpha = 0.6
        fig.title.text_font_size = "10pt"

    figs, mappers, map_sources = [], [], []
    for layer in range(2):
        name = f"map{layer + 1}"
        fig, mapper = _attention_map(
            state["titles"][f"{name}Fig"], src[name], src["symbols"],
            state["props"][f"mapper{layer + 1}.high"], m, text_size="9pt", title_size="10pt",
            labels=("key position", "query position"), width=300, height=250,
            sizing_mode=STRETCH,
        )  # fmt: skip
        figs.append(fig)
        mappers.append(mapper)
        map_sources.append(src[name])

    arms = list(dict.fromkeys(r["arm"] for r in records))
    labels = {r["arm"]: r["label"] for r in records}
    seeds = sorted({r["seed"] for r in records})
    every = int(np.min(np.diff(steps))) if len(steps) > 1 else 1
    controls = {
        "arm": Select(name="arm", title="arm", value=arm, options=[(a, labels[a]) for a in arms],
                      sizing_mode=STRETCH),
        "seed": Select(name="seed", title="seed", value=str(seed),
                       options=[str(s) for s in seeds], width=90),
        "step": _slider("step", "training step (nearest stored)", step, int(steps[0]), last,
                        every, fmt="0"),
    }  # fmt: skip
    controls["step"].sizing_mode = STRETCH
    models = {**src, "gapFig": gfig, "klFig": kfig, "map1Fig": figs[0], "map2Fig": figs[1],
              "mapper1": mappers[0], "mapper2": mappers[1], "marker": markers[0],
              "marker2": markers[1]}  # fmt: skip
    _wire("plateau", controls, {**models, "runs": records, "mapSources": map_sources,
                                "mappers": mappers, "strategies": list(ICL_STRATEGIES),
                                "strategyColors": [ICL_COLORS[n] for n in ICL_STRATEGIES],
                                "gapFloor": GAP_RANGE[0]})  # fmt: skip
    key = _key(
        "Top: the run's probe loss minus the add-alpha bigram's loss on the same sequences "
        "(dash-dot: the in-context unigram strategy on that scale). Middle: its KL to each "
        "strategy. Dotted: the chosen step; dashed: the run's escape step. Bottom: attention of "
        f"the first {m} positions of one probe sequence (rows: queries, columns: keys; the "
        "colour scale ends at the largest weight of rows 4 on)."
    )
    key.sizing_mode = STRETCH
    layout = _layout("mf-plateau", _row(controls["arm"], controls["seed"]), controls["step"],
                     gfig, kfig, _row(*figs), key)  # fmt: skip
    layout.sizing_mode = STRETCH
    for child in layout.children[:1] + layout.children[-2:-1]:
        child.sizing_mode = STRETCH
    return LiveFigure("plateau", layout, {**controls, **models}, state)
