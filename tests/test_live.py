"""The live figures of the HTML book (markovformer.live, live.js).

For each of the nine figures: the data it starts with is what the package computes, its controls
exist, and its callback (live.js, run in node on the figure's own models) changes the right
sources to what the package computes for the new control values. The closed forms of live.js
are checked against the Python functions they port. The browser test (tests/browser) checks the
same in the built pages.
"""

import json
import re

import numpy as np
import pytest
import torch
from live_compare import NODE, assert_state, run_node, update_in_node

from markovformer import canonical as C
from markovformer import explorers as X
from markovformer import live
from markovformer.markov import BinaryChain

needs_node = pytest.mark.skipif(
    NODE is None, reason="node is not installed (the browser test checks live.js in the book)"
)


# --------------------------------------------------------------------------------------------
# Synthetic stored data (chapters 2 and 4 load theirs from book/data)
# --------------------------------------------------------------------------------------------

GRID = np.round(np.arange(0.1, 0.95, 0.1), 2)


def _grid_curves(T: int = 60) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for p in GRID:
        for q in GRID:
            if abs(p + q - 1) > 1e-9 and (p, q) != (0.9, 0.9):  # one cell without runs
                rate, uni = X.chain_levels(p, q)
                out[(float(p), float(q))] = {
                    "tied": uni - (uni - rate) * rng.random() * np.linspace(0, 1, T),
                    "untied": uni - (uni - rate) * np.linspace(0, 1, T) ** 0.5,
                }
    return out


def _run(chain, seed: int, n_diag: int = 11, steps: int = 100) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "chain": chain, "init": "test", "seed": seed, "outcome": "global",
        "e": np.linspace(0.05, 1.0, n_diag) + 0.01 * rng.random(n_diag),
        "w": np.linspace(0.02, -1.1, n_diag), "steps": np.linspace(0, steps, n_diag).astype(int),
        "loss": 0.62 + 0.01 * rng.random(steps),
        "rank1": {"w1": np.linspace(0.3, 1, n_diag), "pos": np.linspace(0.2, 0.9, n_diag)},
    }  # fmt: skip


ICL_STEPS = np.array([0, 25, 50, 75, 100, 200, 300, 400, 500])


def _icl_run(seed: int, m: int = 8, depth: int = 2) -> dict:
    """Data of the shape of :func:`markovformer.experiments.icl.step_explorer_data` (causal
    attention stored as float16, as the artifacts store it)."""
    rng = np.random.default_rng(100 + seed)
    P = len(ICL_STEPS)
    z = rng.normal(0, 2, (P, depth, 1, m, m))
    z[..., ~np.tri(m, dtype=bool)] = -np.inf
    att = np.exp(z - z.max(-1, keepdims=True))
    att = (att / att.sum(-1, keepdims=True)).astype(np.float16).astype(np.float32)
    kl = {
        n: (0.3 * rng.random(P) + 1e-3).astype(np.float32) for n in ("uniform", "unigram", "bigram")
    }
    return {
        "seed": seed, "depth": depth, "steps": ICL_STEPS.copy(), "maps": att,
        "symbols": rng.integers(0, 3, m), "kl": kl,
        "kl_median": {n: (0.5 * v).astype(np.float32) for n, v in kl.items()},
        "prev_token": rng.random((P, depth, 1)).astype(np.float32),
        "induction": rng.random((P, depth, 1)).astype(np.float32),
        "induction_uniform": np.full(P, 0.4, np.float32), "prev_token_uniform": 0.042,
        "gap": (0.2 * rng.random(P) - 0.01).astype(np.float32),
        "closest": ["uniform"] * P,
    }  # fmt: skip


_ICL = [_icl_run(s) for s in (0, 1, 2)]


def _plateau_run(arm: str, seed: int) -> dict:
    """Data of the shape of :func:`markovformer.experiments.plateau.explorer_data`."""
    d = _icl_run(seed + 10 * len(arm), m=6)
    return {**d, "seed": seed, "arm": arm, "label": f"arm {arm}",
            "unigram_gap": 0.12 if arm == "a" else 0.05,
            "escape": None if arm == "b" and seed == 1 else 100 * (seed + 1)}  # fmt: skip


_PLATEAU = [_plateau_run(a, s) for a in ("a", "b") for s in (0, 1)]


# --------------------------------------------------------------------------------------------
# The figures: first state, controls, output
# --------------------------------------------------------------------------------------------


def _figures() -> dict:
    rows = [_run((0.5, 0.8), 0), _run((0.2, 0.3), 1)]
    measured = {"switching": {"scale": [0.02, 0.1], "success": [0.25, 1.0]}}
    return {
        "chain": lambda: live.chain_explorer(0.5, 0.8, seed=1, n_seeds=4),
        "grid": lambda: live.grid_explorer(_grid_curves(), np.zeros((9, 9)), GRID, 0.7, 0.6),
        "reduction": lambda: live.reduction_explorer(0.9, -1.2, 0.8, length=48),
        "run": lambda: live.run_explorer(rows, index=0, step=55),
        "canonical": lambda: live.canonical_explorer(0.5, 0.8, 0.5, 0.5, steps=300),
        "init": lambda: live.init_explorer(
            0.5, 0.8, 0.5, seed=2, n=200, measured=measured, n_seeds=4
        ),  # fmt: skip
        "kernel": lambda: live.kernel_explorer(0.5, 1.0, seed=1, n_seeds=4),
        "dataset": lambda: live.dataset_explorer(8, 6, 6, seed=1, seeds=range(0, 3)),
        "icl_step": lambda: live.icl_step_explorer(_ICL, seed=1, step=100),
        "plateau": lambda: live.plateau_explorer(_PLATEAU, "a", 1, step=100),
    }


FIGURES = _figures()
CONTROLS = {
    "chain": {"p", "q", "seed"}, "grid": {"p", "q"}, "reduction": {"e", "w", "a", "p", "q"},
    "run": {"menu", "step"}, "canonical": {"p", "q", "e0", "w0"},
    "init": {"p", "q", "logScale", "seed"}, "kernel": {"logC", "logScale", "seed"},
    "dataset": {"K", "N", "L", "seed"}, "icl_step": {"seed", "step"},
    "plateau": {"arm", "seed", "step"},
}  # fmt: skip


@pytest.fixture(scope="module")
def figures():
    return {kind: build() for kind, build in FIGURES.items()}


def test_every_kind_has_a_builder_and_an_update():
    assert set(FIGURES) == set(live.KINDS)
    js = live.js_library()
    for kind in live.KINDS:
        assert f"update.{kind} = function" in js


@pytest.mark.parametrize("kind", live.KINDS)
def test_figure_has_its_controls_and_a_named_root(figures, kind):
    fig = figures[kind]
    assert set(fig.controls) == CONTROLS[kind]
    assert fig.layout.name == f"mf-{kind}"
    for name in fig.state["sources"]:  # every source of the state is drawn and named
        assert fig.models[name].name == name
        assert dict(fig.models[name].data).keys() == fig.state["sources"][name].keys()
    for name in fig.callback.args:  # CustomJS passes its arguments as JavaScript parameters
        assert re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", name), f"{name!r} is no JS identifier"
    for control in fig.controls.values():  # every control triggers the one callback
        assert control.js_property_callbacks["change:value"] == [fig.callback]
    assert f"MFLive.update.{kind}(" in fig.callback.code


@pytest.mark.parametrize("kind", live.KINDS)
def test_output_is_self_contained_html(figures, kind):
    bundle = figures[kind]._repr_mimebundle_()
    page = bundle["text/html"]
    assert bundle["text/plain"] == f"<live figure: {kind}>"
    assert page.startswith(f'<div class="mf-live" data-mf-kind="{kind}">')
    assert "window.MFLive" in page or "root.MFLive" in page  # live.js inline
    assert "data-root-id=" in page and "Bokeh.embed.embed_items" in page
    assert "<script src" not in page and "https://" not in page.split("</p>", 1)[1][:200_000]
    assert len(page) < 2_000_000


def test_chain_state_is_the_package():
    state = live.chain_state(0.3, 0.6, seed=5, n_sequences=4, length=50)
    gen = torch.Generator().manual_seed(5)
    bits = BinaryChain(0.3, 0.6).sample(4, 50, generator=gen).numpy()
    np.testing.assert_array_equal(state["sources"]["bits"]["image"][0], bits)
    chain = BinaryChain(0.3, 0.6)
    assert state["sources"]["levels"]["value"] == [chain.entropy_rate, chain.unigram_loss]
    assert state["titles"]["rasterFig"].endswith(": sticky, lag-1 corr. +0.10")


def test_grid_state_reads_the_stored_cell():
    curves = _grid_curves()
    state = live.grid_state(curves, GRID, 0.3, 0.8)
    np.testing.assert_allclose(state["sources"]["curves"]["tied"], curves[(0.3, 0.8)]["tied"],
                               rtol=1e-6)  # fmt: skip
    assert state["sources"]["levels"]["y"] == list(X.chain_levels(0.3, 0.8))
    assert "i.i.d." in live.grid_state(curves, GRID, 0.4, 0.6)["titles"]["curveFig"]
    assert "no stored run" in live.grid_state(curves, GRID, 0.9, 0.9)["titles"]["curveFig"]


def test_reduction_state_is_exact():
    state = live.reduction_state(0.9, -1.2, 0.8, 0.5, 0.8, length=48)
    seq = state["sources"]["seq"]
    assert np.max(np.abs(seq["logit_full"] - seq["logit_canon"])) < 1e-10
    bits = BinaryChain(0.5, 0.8).sample(1, 48, generator=torch.Generator().manual_seed(0))[0]
    np.testing.assert_array_equal(seq["bit"], bits.numpy())


def test_run_state_marks_the_step():
    rows = [_run((0.5, 0.8), 0)]
    state = live.run_state(rows, 0, 55)  # diagnostic steps every 10: step 50 is shown
    assert state["sources"]["now"]["step"] == [50]
    np.testing.assert_allclose(state["sources"]["upto"]["e"], rows[0]["e"][:6], rtol=1e-6)
    land = C.CanonicalLandscape(0.5, 0.8)
    np.testing.assert_allclose(state["sources"]["canonLoss"]["loss"],
                               land.loss_at_optimal_bias(rows[0]["e"], rows[0]["w"]), rtol=1e-6)  # fmt: skip
    flow = C.gradient_flow(land, rows[0]["e"][0], rows[0]["w"][0])
    np.testing.assert_allclose(state["sources"]["flow"]["e"], flow.y[:, 0], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="index must be in"):
        live.run_state(rows, 1, 0)


def test_canonical_state_is_the_package():
    state = live.canonical_state(0.2, 0.3, 0.1, -2.0, steps=200)
    land = C.CanonicalLandscape(0.2, 0.3)
    gd = C.gradient_descent(land, 0.1, -2.0, lr=0.5, steps=200)
    np.testing.assert_array_equal(state["sources"]["gdLoss"]["loss"], gd["loss"])
    assert "ends at the unigram line" in state["titles"]["mapFig"]
    np.testing.assert_array_equal(state["sources"]["basins"]["image"][0][80],
                                  land.basin(np.linspace(-3, 3, 161)[80], np.linspace(-3, 3, 161)))  # fmt: skip


def test_init_state_is_the_package():
    state = live.init_state(0.5, 0.8, 0.3, seed=3, n=100)
    starts = np.random.default_rng(3).normal(0.0, 0.3, size=(100, 2))
    np.testing.assert_array_equal(state["sources"]["starts"]["e"], starts[:, 0])
    frac = C.basin_label(starts[:, 0], starts[:, 1], switching=True).mean()
    assert f"{frac:.2f} of 100 in the global basin" in state["titles"]["mapFig"]


def test_kernel_state_is_the_package():
    from markovformer.experiments import gdd

    state = live.kernel_state(0.5, 2.0, 3)
    ex = gdd.kernel_example(qk_scale=2.0, seed=3, c=0.5)
    for name, S in ex.items():
        key = f"S_{name.replace('-', '_')}"
        np.testing.assert_array_equal(state["sources"][key]["image"][0], S)


def test_dataset_state_is_the_package():
    from markovformer import ntp

    state = live.dataset_state(8, 4, 5, 3)
    ds = ntp.make_dataset(8, 4, 2, 5, 3)
    boxes = state["sources"]["boxes"]
    assert len(boxes["tok"]) == int(ds.lengths.sum())
    first = [int(t) for t, s in zip(boxes["tok"], boxes["sentence"], strict=True) if s == 0]
    assert first == ds.tokens[0, : ds.lengths[0]].tolist()
    framed = [int(t) for t, c in zip(boxes["tok"], boxes["line"], strict=True) if c == "#d62728"]
    assert framed == ds.optimal.tolist()
    assert state["sources"]["nexts"]["tok"] == [str(t) for t in ds.next_tokens]
    assert "at most K = 3" in live.dataset_state(3, 4, 5, 3)["titles"]["fig"]


@pytest.fixture(scope="module")
def icl_runs():
    """Chapter 8's step explorer data, from the committed icl-mc artifacts (two-layer runs)."""
    from pathlib import Path

    from markovformer import experiments
    from markovformer.experiments import icl

    data = Path(__file__).resolve().parents[1] / "book" / "data"
    results, jobs = experiments.get("icl-mc").load(data)
    seeds = sorted(next(res for res, (sp, _) in zip(results, jobs, strict=True)
                        if sp.model.depth == 2))  # fmt: skip
    return [icl.step_explorer_data(results, jobs, depth=2, seed=s) for s in seeds]


def test_icl_step_state_is_the_package(icl_runs):
    d = icl_runs[1]
    for step in (0, 510, 1040, 1050, 2000):  # 1050: halfway between stored steps, shows 1000
        state = live.icl_step_state(icl_runs, d["seed"], step)
        i = int(np.argmin(np.abs(d["steps"] - step)))  # as icl.step_explorer_figure
        src, s = state["sources"], int(d["steps"][i])
        for layer in (0, 1):  # the stored float16 maps, exactly
            np.testing.assert_array_equal(
                src[f"map{layer + 1}"]["image"][0], d["maps"][i, layer, 0]
            )
        for n in ("uniform", "unigram", "bigram"):
            np.testing.assert_array_equal(src["kl"][n], d["kl"][n])
        np.testing.assert_array_equal(src["scores"]["prev"], d["prev_token"][:, 0, 0])
        np.testing.assert_array_equal(src["scores"]["ind"], d["induction"][:, 1, 0])
        np.testing.assert_array_equal(src["scores"]["indUniform"], d["induction_uniform"])
        assert src["symbols"]["text"][:24] == [str(v) for v in d["symbols"]]
        assert state["props"]["marker.location"] == s == src["klNow"]["step"][0]
        assert state["titles"]["klFig"] == (
            f"seed {d['seed']}, step {s}: closest strategy {d['closest'][i]}\n"
            f"loss minus Bayes loss (probe batch) {d['gap'][i]:.3f} nats"
        )
        assert state["titles"]["map1Fig"] == (
            f"layer 1 at step {s}: previous-token score {d['prev_token'][i, 0, 0]:.2f}"
        )
        assert state["titles"]["map2Fig"] == (
            f"layer 2 at step {s}: induction score {d['induction'][i, 1, 0]:.2f}"
        )
    assert live.icl_step_state(icl_runs, d["seed"], 1050)["props"]["marker.location"] == 1000
    assert d["prev_token_uniform"] == pytest.approx(np.mean(1 / np.arange(2, 101)), rel=1e-12)


def test_icl_step_figure_embeds_its_runs_compactly(icl_runs):
    fig = live.icl_step_explorer(icl_runs, seed=0, step=500)
    runs = fig.callback.args["runs"]
    assert [r["seed"] for r in runs] == [d["seed"] for d in icl_runs]
    assert runs[0]["maps"].dtype == np.uint16 and runs[0]["maps"].size == 51 * 2 * 300
    assert fig.controls["step"].value == 500 and fig.controls["seed"].value == "0"
    size = len(fig.html())
    assert size < 700_000, f"the chapter 8 figure is {size / 1e6:.2f} MB of HTML"


def test_builders_reject_bad_input():
    with pytest.raises(ValueError, match="seed must be in"):
        live.chain_explorer(seed=30, n_seeds=21)
    with pytest.raises(ValueError, match="outside the slider's range"):
        live.chain_explorer(p=0.995)
    with pytest.raises(ValueError, match="not a cell"):
        live.grid_explorer(_grid_curves(), np.zeros((9, 9)), GRID, 0.5, 0.5)
    with pytest.raises(ValueError, match="gap_map must have shape"):
        live.grid_explorer(_grid_curves(), np.zeros((3, 3)), GRID, 0.7, 0.6)
    with pytest.raises(ValueError, match="p \\+ q = 1"):
        live.canonical_explorer(0.4, 0.6)
    with pytest.raises(ValueError, match="at least one run"):
        live.run_explorer([])
    with pytest.raises(ValueError, match="max_len must be <= n_tokens"):
        live.dataset_explorer(4, 3, 6, seed=1, seeds=range(0, 2))
    with pytest.raises(ValueError, match="seed must be one of"):
        live.icl_step_explorer(_ICL, seed=7)
    with pytest.raises(ValueError, match="depth >= 2"):
        live.icl_step_explorer([_icl_run(0, depth=1)])
    with pytest.raises(ValueError, match="at least one run"):
        live.icl_step_explorer([])
    leaky = _icl_run(0)
    leaky["maps"] = leaky["maps"].copy()
    leaky["maps"][3, 1, 0, 0, 5] = 0.5
    with pytest.raises(ValueError, match="causal"):
        live.icl_step_explorer([leaky])
    with pytest.raises(ValueError, match="unknown live figure kind"):
        live.LiveFigure("nope", None, {}, {})


# --------------------------------------------------------------------------------------------
# The callbacks, run in node: the state the page shows after moving a control
# --------------------------------------------------------------------------------------------

MOVES = {
    "chain": [({"p": 0.23, "seed": 3}, lambda: live.chain_state(0.23, 0.8, 3)),
              ({"p": 0.2, "q": 0.8}, lambda: live.chain_state(0.2, 0.8, 1))],
    "grid": [({"p": 0.3, "q": 0.8}, lambda: live.grid_state(_grid_curves(), GRID, 0.3, 0.8)),
             ({"p": 0.4}, lambda: live.grid_state(_grid_curves(), GRID, 0.4, 0.6)),
             ({"p": 0.9, "q": 0.9}, lambda: live.grid_state(_grid_curves(), GRID, 0.9, 0.9))],
    "reduction": [({"a": -1.0, "p": 0.3}, lambda: live.reduction_state(0.9, -1.2, -1.0, 0.3, 0.8,
                                                                        length=48)),
                  ({"e": 2.0, "w": 0.7, "a": 0.0}, lambda: live.reduction_state(2.0, 0.7, 0.0,
                                                                                 0.5, 0.8,
                                                                                 length=48))],
    "run": [({"menu": "1", "step": 20}, lambda: live.run_state(_RUNS, 1, 20)),
            ({"step": 100}, lambda: live.run_state(_RUNS, 0, 100))],
    "canonical": [({"w0": -1.5, "e0": 1.0}, lambda: live.canonical_state(0.5, 0.8, 1.0, -1.5,
                                                                         steps=300)),
                  ({"p": 0.2, "q": 0.3}, lambda: live.canonical_state(0.2, 0.3, 0.5, 0.5,
                                                                      steps=300)),
                  ({"p": 0.4, "q": 0.6}, lambda: live.canonical_state(0.4, 0.6, 0.5, 0.5))],
    "init": [({"logScale": 0.3, "seed": 3}, lambda: live.init_state(0.5, 0.8, 10**0.3, 3, n=200,
                                                                    measured=_MEASURED)),
             ({"p": 0.2, "q": 0.3}, lambda: live.init_state(0.2, 0.3, 0.5, 2, n=200,
                                                            measured=_MEASURED))],
    "kernel": [({"logC": 1.0, "seed": 3}, lambda: live.kernel_state(10.0, 1.0, 3)),
               ({"logScale": -0.5}, lambda: live.kernel_state(0.5, 10**-0.5, 1))],
    "dataset": [({"seed": 2, "K": 10}, lambda: live.dataset_state(10, 6, 6, 2)),
                ({"N": 1, "L": 2}, lambda: live.dataset_state(8, 1, 2, 1)),
                ({"K": 4}, lambda: live.dataset_state(4, 6, 6, 1))],
    "icl_step": [({"step": 230}, lambda: live.icl_step_state(_ICL, 1, 230)),  # shows 200
                 ({"seed": "2", "step": 450}, lambda: live.icl_step_state(_ICL, 2, 450)),  # tie: 400
                 ({"seed": "0", "step": 0}, lambda: live.icl_step_state(_ICL, 0, 0))],
    "plateau": [({"step": 230}, lambda: live.plateau_state(_PLATEAU, "a", 1, 230)),
                ({"arm": "b", "step": 450}, lambda: live.plateau_state(_PLATEAU, "b", 1, 450)),
                ({"seed": "0", "step": 0}, lambda: live.plateau_state(_PLATEAU, "a", 0, 0)),
                ({"arm": "b", "seed": "0"}, lambda: live.plateau_state(_PLATEAU, "b", 0, 100))],
}  # fmt: skip
_RUNS = [_run((0.5, 0.8), 0), _run((0.2, 0.3), 1)]
_MEASURED = {"switching": {"scale": [0.02, 0.1], "success": [0.25, 1.0]}}


@needs_node
@pytest.mark.parametrize("kind", live.KINDS)
def test_callback_in_node_shows_the_package_state(figures, kind, tmp_path):
    fig = figures[kind]
    for values, expected in MOVES[kind]:
        exp = expected()
        shown, ms = update_in_node(fig, values, tmp_path, exp)
        assert_state(kind, shown, exp, where=f"{kind} {values}")


@needs_node
def test_a_broken_callback_is_caught(figures, tmp_path):
    """The comparison fails when the page shows the wrong thing (here: the previous seed)."""
    fig = figures["chain"]
    exp = live.chain_state(0.5, 0.8, 2)
    shown, _ = update_in_node(fig, {"seed": 3}, tmp_path, exp)
    with pytest.raises(AssertionError):
        assert_state("chain", shown, exp)


@needs_node
def test_icl_step_callback_over_a_sequence_of_moves(figures, tmp_path):
    """One page, several moves: the run's curves are redrawn only when the seed changes, and
    what the figure shows after each move is the package's state."""
    from live_compare import encode, spec

    fig = figures["icl_step"]
    moves = [{"step": 60}, {"seed": "0"}, {"step": 480}, {"step": 500}, {"seed": "2"}]
    expected, values = [], {"seed": "1", "step": 100}
    for move in moves:
        values = {**values, **move}
        expected.append(live.icl_step_state(_ICL, int(values["seed"]), values["step"]))
    models: dict = {}
    M = encode(dict(fig.callback.args), models)
    code = (
        "(L, d) => d.moves.map((mv) => { for (const [k, v] of Object.entries(mv)) "
        "d.M[k].value = v; L.update.icl_step(d.M); return mfShown(d.M, d.spec); })"
    )
    data = {"M": M, "moves": moves, "spec": spec(expected[0])}
    shown, _ = run_node(code, data, tmp_path, models)
    for move, got, exp in zip(moves, shown, expected, strict=True):
        assert_state("icl_step", got, exp, where=f"icl_step after {move}")


ICL_BREAKS = {  # wrong versions of update.icl_step: each must be caught
    "ties to the later step": ("if (Math.abs(s[i] - want) < Math.abs(s[k] - want)) k = i;",
                               "if (Math.abs(s[i] - want) <= Math.abs(s[k] - want)) k = i;"),
    "diagonal dropped": ("for (let j = 0; j <= i; j++) row[j] = halfToFloat(bits[pos++]);",
                         "for (let j = 0; j <= i; j++) row[j] = j < i ? halfToFloat(bits[pos++]) "
                         ": (pos++, 0);"),
    "layers swapped": ("const rows = iclMap(r, k, l);", "const rows = iclMap(r, k, L - 1 - l);"),
}  # fmt: skip


@needs_node
@pytest.mark.parametrize("broken", list(ICL_BREAKS))
def test_a_broken_icl_step_callback_is_caught(figures, broken, tmp_path, monkeypatch):
    """live.js with a wrong chapter-8 callback: the comparison with the package fails."""
    import live_compare

    live_compare.break_live_js(monkeypatch, tmp_path, *ICL_BREAKS[broken])
    fig = figures["icl_step"]
    exp = live.icl_step_state(_ICL, 2, 450)
    shown, _ = update_in_node(fig, {"seed": "2", "step": 450}, tmp_path, exp)
    with pytest.raises(AssertionError):
        assert_state("icl_step", shown, exp)


# --------------------------------------------------------------------------------------------
# The closed forms of live.js against the functions they port


@needs_node
def test_half_floats_decode_exactly(tmp_path):
    """live.js reads chapter 8's attention maps from their float16 bits: every bit pattern."""
    bits = np.arange(2**16, dtype=np.uint16)
    out, _ = run_node("(L, b) => Array.from(b, L.halfToFloat)", bits, tmp_path)
    np.testing.assert_array_equal(np.asarray(out, dtype=float), bits.view(np.float16).astype(float))


# --------------------------------------------------------------------------------------------


@needs_node
def test_sampler_matches_the_package(tmp_path):
    cases = []
    for seed in (0, 7):
        u0, expo = X.chain_uniforms(seed, 5, 150)
        for p, q in ((0.5, 0.8), (0.01, 0.99), (0.37, 0.13), (1.0, 1.0), (0.0, 0.4), (0.9, 0.05)):
            cases.append({"u0": u0, "expo": expo.reshape(-1), "p": p, "q": q,
                          "ref": X.chain_sample(p, q, seed, 5, 150)})  # fmt: skip
    code = ("(L, cs) => cs.map((c) => L.sampleChain(Float32Array.from(c.u0), "
            "Float32Array.from(c.expo), c.p, c.q, 5, 150).map((r) => Array.from(r)))")  # fmt: skip
    out, _ = run_node(code, [{k: v for k, v in c.items() if k != "ref"} for c in cases], tmp_path)
    for c, rows in zip(cases, out, strict=True):
        np.testing.assert_array_equal(np.asarray(rows), c["ref"], err_msg=f"{c['p']}, {c['q']}")


@needs_node
def test_landscape_matches_the_package(tmp_path):
    rng = np.random.default_rng(0)
    e, w, b = rng.uniform(-2.5, 2.5, (3, 60))
    e[0], w[1] = 0.0, 0.0  # on the unigram line; on the w = 0 axis
    chains = [(0.5, 0.8), (0.2, 0.3), (0.8, 0.5), (0.6, 0.6), (0.05, 0.6)]
    code = """(L, d) => d.chains.map(([p, q]) => { const l = new L.Landscape(p, q);
      return { rate: l.entropyRate, uni: l.unigramLoss, astar: l.aStar,
        rows: Array.from(d.e, (e, i) => [l.lossAtOptimalBias(e, d.w[i]), ...l.grad(e, d.w[i]),
          l.basin(e, d.w[i]), l.optimalBias(e, d.w[i]), ...l.gradEwb(e, d.w[i], d.b[i]),
          l.loss(e, d.w[i], d.b[i]), l.globalMinimumCurve(d.w[i]), L.separatrix(d.w[i])]) }; })"""
    out, _ = run_node(code, {"chains": chains, "e": e, "w": w, "b": b}, tmp_path)
    for (p, q), res in zip(chains, out, strict=True):
        land = C.CanonicalLandscape(p, q)
        assert res["rate"] == pytest.approx(land.entropy_rate, rel=1e-14)
        assert res["uni"] == pytest.approx(land.unigram_loss, rel=1e-14)
        assert res["astar"] == pytest.approx(land.a_star, rel=1e-14)
        r = np.asarray(res["rows"], dtype=float)
        ref = np.column_stack([land.loss_at_optimal_bias(e, w), *land.grad(e, w), land.basin(e, w),
                               land.optimal_bias(e, w), *land.grad_ewb(e, w, b), land.loss(e, w, b),
                               land.global_minimum_curve(w), C.separatrix(w)])  # fmt: skip
        np.testing.assert_allclose(r, ref, rtol=1e-12, atol=1e-13, equal_nan=True,
                                   err_msg=f"chain ({p}, {q})")  # fmt: skip


@needs_node
def test_gradient_descent_and_flow_match_the_package(tmp_path):
    starts = [(0.5, 0.8, 0.5, 0.5), (0.2, 0.3, 0.1, -2.0), (0.05, 0.6, 2.4, -2.4),
              (0.9, 0.9, -1.5, 2.4), (0.5, 0.8, 0.02, 0.01)]  # fmt: skip
    code = """(L, ss) => ss.map(([p, q, e0, w0]) => { const l = new L.Landscape(p, q);
      return { gd: L.gradientDescent(l, e0, w0, 0.5, 1500), flow: L.gradientFlow(l, e0, w0, 750) }; })"""
    out, _ = run_node(code, starts, tmp_path)
    for (p, q, e0, w0), res in zip(starts, out, strict=True):
        land, flow, gd = X.canonical_paths(p, q, e0, w0)
        for k in ("e", "w", "b", "loss"):  # gradient descent: the same iterates (relative)
            js, py = np.asarray(res["gd"][k], float), gd[k]
            assert np.array_equal(np.isnan(js), np.isnan(py)), (p, q, e0, w0, k)
            ok = ~np.isnan(py)
            np.testing.assert_allclose(js[ok], py[ok], rtol=1e-7, atol=1e-12)
        t, ye, yw = (np.asarray(res["flow"][k], float) for k in ("t", "e", "w"))
        assert res["flow"]["label"] == flow.label
        grid = flow.t[flow.t <= t[-1]]
        assert np.abs(np.interp(grid, t, ye) - np.interp(grid, flow.t, flow.y[:, 0])).max() < 2e-3
        assert np.abs(np.interp(grid, t, yw) - np.interp(grid, flow.t, flow.y[:, 1])).max() < 2e-3
        np.testing.assert_allclose([ye[-1], yw[-1]], flow.y[-1], atol=1e-4)


@needs_node
def test_transformer_forward_matches_torch(tmp_path):
    from markovformer.init import initialise, rank_one_
    from markovformer.model import MarkovTransformer, TransformerConfig

    N = 40
    x = BinaryChain(0.5, 0.8).sample(1, N, generator=torch.Generator().manual_seed(3))
    cases = []
    for kind in ("rank_one", "gaussian"):
        model = MarkovTransformer(TransformerConfig(d=8, seq_len=N), 1).double()
        if kind == "rank_one":
            rank_one_(model, [0], e=1.3, w=-0.7, a=0.6)
        else:  # general weights: softmax attention that is not uniform
            initialise(model, [4], "gaussian")
            with torch.no_grad():
                for name in ("wq", "wk"):
                    getattr(model, name).mul_(40.0)
        with torch.no_grad():
            ref = model(x[None])[0, 0].numpy()
        W = {k: getattr(model, k).detach()[0].squeeze(0).numpy().reshape(-1)
             for k in ("emb", "pos", "wq", "wk", "wv", "wo", "w1", "w2")}  # fmt: skip
        W.update(d=8, m=32, bias=float(model.bias.detach()[0]))
        cases.append((W, ref))
    code = "(L, d) => d.cases.map((W) => Array.from(L.transformerLogits(d.x, W)))"
    out, _ = run_node(code, {"x": x[0].numpy().astype(np.int32), "cases": [c[0] for c in cases]},
                      tmp_path)  # fmt: skip
    for (_, ref), js in zip(cases, out, strict=True):
        np.testing.assert_allclose(np.asarray(js), ref, rtol=1e-10, atol=1e-10)


@needs_node
def test_kernels_match_the_package(tmp_path):
    from markovformer.experiments import gdd

    cases = [(0.5, 1.0, 0), (2.0, 3.0, 4), (20.0, 0.1, 7)]
    data = []
    for c, s, seed in cases:
        q, k = X.kernel_inputs(seed)
        data.append({"q": (s * q).reshape(-1), "k": (s * k).reshape(-1), "c": c})
    code = "(L, d) => d.map((x) => L.kernelMatrices(x.q, x.k, 8, 4, x.c))"
    out, _ = run_node(code, data, tmp_path)
    for (c, s, seed), res in zip(cases, out, strict=True):
        ref = gdd.kernel_example(qk_scale=s, seed=seed, c=c)
        for name, S in ref.items():
            np.testing.assert_allclose(np.asarray(res[name], float), S, rtol=1e-9, atol=1e-14)


def test_encoding_of_the_state_is_json():
    state = live.chain_state(0.5, 0.8, 0, 2, 10)
    from live_compare import encode

    json.dumps(encode(state))
