"""Helpers for the tests of the live figures: run live.js in node, and compare what a figure
shows (read from node or from a browser) with what the package computes (``live.<kind>_state``).

Values cross the process boundary as JSON: typed arrays as ``{"typed": dtype, "data": [...]}``
(images add ``"shape"``), and non-finite numbers as the strings "NaN", "Infinity", "-Infinity".
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from markovformer import live

NODE = shutil.which("node")
LIVE_JS = Path(live.__file__).with_name("live.js")

# JavaScript shared by the node runner and the browser test: turns page objects into JSON
ENCODE_JS = r"""
function mfEncode(v, depth) {
  depth = depth || 0;
  if (depth > 8) return null;
  if (typeof v === "number") return Number.isFinite(v) ? v : String(v);
  if (v === null || v === undefined || typeof v === "string" || typeof v === "boolean") return v;
  if (ArrayBuffer.isView(v)) {
    const out = { typed: v.constructor.name, data: Array.from(v, (x) => mfEncode(x)) };
    if (v.shape) out.shape = Array.from(v.shape);
    return out;
  }
  if (Array.isArray(v)) return v.map((x) => mfEncode(x, depth + 1));
  if (v instanceof Map) return mfEncode(Object.fromEntries(v), depth + 1);
  if (typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v)) out[k] = mfEncode(v[k], depth + 1);
    return out;
  }
  return String(v);
}
/* What a figure shows: the data of the named sources, titles of the named figures and the
 * named properties ("fig.y_range" gives [start, end]) of the models M of its callback. */
function mfShown(M, spec) {
  const out = { sources: {}, titles: {}, props: {} };
  for (const s of spec.sources) if (M[s]) out.sources[s] = M[s].data;
  for (const t of spec.titles) if (M[t]) out.titles[t] = M[t].title.text;
  for (const p of spec.props) {
    const [obj, attr] = p.split(".");
    if (!M[obj]) continue;
    const v = M[obj][attr];
    out.props[p] = attr.endsWith("_range") ? [v.start, v.end] : v;
  }
  return mfEncode(out);
}
"""

NODE_RUNNER = (
    ENCODE_JS
    + r"""
const MFLive = require(process.argv[2]);
const MODELS = {};
function revive(v) {
  if (typeof v === "string" && ["NaN", "Infinity", "-Infinity"].includes(v)) return Number(v);
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {
    if (v.ref !== undefined && Object.keys(v).length === 1) return MODELS[v.ref];
    if (v.typed) {
      const T = globalThis[v.typed];
      const arr = T.from(v.data.map(revive));
      if (v.shape) arr.shape = v.shape;
      return arr;
    }
    const out = {};
    for (const k of Object.keys(v)) out[k] = revive(v[k]);
    return out;
  }
  return v;
}
let buf = "";
process.stdin.on("data", (d) => (buf += d));
process.stdin.on("end", () => {
  const req = JSON.parse(buf);
  const fn = eval(req.code);
  const t0 = process.hrtime.bigint();
  for (const [id, m] of Object.entries(req.models || {})) MODELS[id] = revive(m);
  const out = fn(MFLive, revive(req.input));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(JSON.stringify({ out: mfEncode(out), ms: ms }));
});
"""
)


def break_live_js(monkeypatch, tmp_path: Path, old: str, new: str) -> None:
    """Make the node runs of this test use a copy of live.js with ``old`` (which must occur once)
    replaced by ``new``: a deliberately broken callback, which the comparison must catch."""
    import sys

    js = LIVE_JS.read_text()
    assert js.count(old) == 1, f"live.js no longer contains {old!r}"
    bad = tmp_path / "live.js"
    bad.write_text(js.replace(old, new))
    monkeypatch.setattr(sys.modules[__name__], "LIVE_JS", bad)


def run_node(code: str, data, tmp_path: Path, models: dict | None = None):
    """Evaluate the JavaScript function ``code`` (called as ``fn(MFLive, data)``) in node;
    ``data`` is encoded here unless ``models`` (the encoded Bokeh models it refers to) is given."""
    runner = tmp_path / "mf_runner.js"
    runner.write_text(NODE_RUNNER)
    proc = subprocess.run(
        [NODE, str(runner), str(LIVE_JS)],
        input=json.dumps({"code": code, "input": data if models is not None else encode(data),
                          "models": models or {}}),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        err = proc.stderr if len(proc.stderr) < 3000 else proc.stderr[-3000:]
        raise AssertionError(f"node failed:\n{err}")
    res = json.loads(proc.stdout)
    return decode(res["out"]), res["ms"]


_TYPED = {
    np.dtype("float64"): "Float64Array", np.dtype("float32"): "Float32Array",
    np.dtype("int32"): "Int32Array", np.dtype("uint32"): "Uint32Array",
    np.dtype("int16"): "Int16Array", np.dtype("int8"): "Int8Array", np.dtype("uint8"): "Uint8Array",
    np.dtype("uint16"): "Uint16Array",
}  # fmt: skip


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else str(x).replace("inf", "Infinity").replace("nan", "NaN")


def encode(v, models: dict | None = None):
    """Python / numpy / Bokeh values as the JSON the node runner revives. Bokeh models become
    ``{"ref": id}``, encoded once into ``models`` (so that two names of one model stay one
    object in node, as in the page)."""
    from bokeh.model import Model

    if isinstance(v, Model):
        if models is None:
            return encode_model(v)
        if v.id not in models:
            models[v.id] = encode_model(v)
        return {"ref": v.id}
    if isinstance(v, np.ndarray):
        if v.dtype == np.int64:
            v = v.astype(np.int32)
        if v.dtype.kind in "fiu" and v.dtype in _TYPED:
            out = {"typed": _TYPED[v.dtype], "data": [_num(x) for x in v.reshape(-1)]}
            if v.ndim > 1:
                out["shape"] = list(v.shape)
            return out
        return [encode(x) for x in v.tolist()]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, dict):
        return {str(k): encode(x, models) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode(x, models) for x in v]
    raise TypeError(f"cannot encode {type(v).__name__}")


def encode_model(m):
    """The properties of a Bokeh model that the callbacks read or write, as plain objects."""
    from bokeh.models import ColumnDataSource, Div, LinearColorMapper, Plot, Select, Slider, Span

    if isinstance(m, ColumnDataSource):
        return {"name": m.name, "data": {k: encode(v) for k, v in m.data.items()}}
    if isinstance(m, (Slider, Select)):
        return {"name": m.name, "value": m.value}
    if isinstance(m, Plot):
        out = {"title": {"text": m.title.text}, "height": m.height}
        for r in ("x_range", "y_range"):
            rng = getattr(m, r)
            out[r] = {k: encode(getattr(rng, k, None)) for k in ("start", "end")}
        return out
    if isinstance(m, Span):
        return {"location": encode(m.location)}
    if isinstance(m, LinearColorMapper):
        return {"low": encode(m.low), "high": encode(m.high)}
    if isinstance(m, Div):
        return {"text": m.text}
    raise TypeError(f"no encoding for {type(m).__name__}")


def decode(v):
    """JSON from node or a browser back to Python: typed arrays become numpy arrays."""
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        return float(v.replace("Infinity", "inf").replace("NaN", "nan"))
    if isinstance(v, list):
        return [decode(x) for x in v]
    if isinstance(v, dict):
        if "typed" in v and "data" in v:
            arr = np.asarray([decode(x) for x in v["data"]], dtype=float)
            return arr.reshape(v["shape"]) if v.get("shape") else arr
        return {k: decode(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------
# Comparing a shown state with the package's state
# --------------------------------------------------------------------------------------------

#: (rtol, atol) for the numbers of each kind: float32 data are stored to about 1e-7
TOLERANCE = {
    "chain": (0, 1e-12), "grid": (1e-6, 1e-7), "reduction": (1e-9, 1e-9), "run": (1e-6, 1e-6),
    "canonical": (1e-7, 1e-9), "init": (1e-9, 1e-12), "kernel": (1e-9, 1e-12), "dataset": (0, 1e-12),
    "icl_step": (0, 1e-12),  # float16 maps decoded exactly, float32 curves passed through
    "plateau": (0, 1e-12),  # as icl_step
}  # fmt: skip
#: sources compared as trajectories (an ODE integrated by another method): max distance
TRAJECTORY_TOL = 2e-3


def _array(v):
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, list) and v and isinstance(v[0], (np.ndarray, list)):
        return np.asarray([_array(x) for x in v], dtype=float)
    if isinstance(v, list) and any(isinstance(x, str) for x in v):
        return np.asarray(v, dtype=object)
    return np.asarray(v, dtype=float) if isinstance(v, list) else np.asarray(v)


def _column(v):
    """A data column as an array; an image column (a list with one 2-D array) as that array."""
    if isinstance(v, list) and len(v) == 1 and np.ndim(_array(v[0])) == 2:
        return _array(v[0])
    if isinstance(v, (list, tuple, np.ndarray)):
        arr = np.asarray(v, dtype=object) if any(isinstance(x, str) for x in v) else None
        if arr is not None:
            return arr
        try:
            return np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            return np.asarray([_array(x) for x in v], dtype=float)
    return np.asarray(v)


def assert_column(kind: str, where: str, actual, expected) -> None:
    a, e = _column(actual), _column(expected)
    if e.dtype == object or a.dtype == object:
        assert [str(x) for x in np.ravel(a)] == [str(x) for x in np.ravel(e)], where
        return
    assert a.shape == e.shape, f"{where}: shape {a.shape}, expected {e.shape}"
    rtol, atol = TOLERANCE[kind]
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)


def assert_flow(where: str, shown: dict, expected: dict) -> None:
    """The page's flow (adaptive Runge-Kutta) against the package's (LSODA): the same path over
    their common time span, and the same end point (both stop once the speed is below 1e-7)."""
    t_js, t_py = _column(shown["flowLoss"]["t1"]), _column(expected["flowLoss"]["t1"])
    grid = t_py[t_py <= t_js[-1]]
    for src, col in (("flow", "e"), ("flow", "w"), ("flowLoss", "loss")):
        js, py = _column(shown[src][col]), _column(expected[src][col])
        diff = np.abs(np.interp(grid, t_js, js) - np.interp(grid, t_py, py))
        assert diff.max() < TRAJECTORY_TOL, f"{where}: {src}.{col} differs by {diff.max():.2e}"
        assert abs(js[-1] - py[-1]) < TRAJECTORY_TOL, f"{where}: {src}.{col} ends apart"


def assert_state(kind: str, shown: dict, expected: dict, where: str = "") -> None:
    """``shown`` = {"sources": {name: data}, "titles": {key: text}, "props": {key: value}} read
    from a page; ``expected`` = ``live.<kind>_state(...)``. Sources of ``expected`` only."""
    for name, data in expected["sources"].items():
        assert name in shown["sources"], f"{where}: the figure has no source {name!r}"
        if kind == "canonical" and name in ("flow", "flowLoss"):
            continue
        for col, value in data.items():
            assert col in shown["sources"][name], f"{where}: {name} lacks the column {col!r}"
            assert_column(kind, f"{where} {name}.{col}", shown["sources"][name][col], value)
    if kind == "canonical" and expected["sources"]["flow"]["w"] is not None:
        if len(expected["sources"]["flow"]["w"]):
            assert_flow(where, shown["sources"], expected["sources"])
    for key, text in expected["titles"].items():
        got = shown["titles"].get(key)
        if text.startswith("max |difference| = "):  # rounding noise: both must be tiny
            assert got is not None and got.startswith("max |difference| = "), f"{where}: {got!r}"
            assert float(got.split("= ")[1]) < 1e-9 and float(text.split("= ")[1]) < 1e-9, where
            continue
        assert got == text, f"{where}: title {key}: {got!r}, expected {text!r}"
    for key, value in expected["props"].items():
        got = shown["props"].get(key)
        assert got is not None, f"{where}: no {key}"
        if isinstance(value, str):
            assert got == value, f"{where}: {key} = {got!r}, expected {value!r}"
        else:
            np.testing.assert_allclose(np.asarray(got, float), np.asarray(value, float),
                                       rtol=1e-6, atol=1e-9, err_msg=f"{where}: {key}")  # fmt: skip


def spec(state: dict) -> dict:
    """The names ``mfShown`` reads for a state."""
    return {"sources": list(state["sources"]), "titles": list(state["titles"]),
            "props": list(state["props"])}  # fmt: skip


def update_in_node(fig, values: dict, tmp_path: Path, expected: dict):
    """Move the controls of ``fig`` to ``values``, run its callback (live.js) in node and return
    (what the figure then shows, milliseconds the update took)."""
    models: dict = {}
    M = encode(dict(fig.callback.args), models)
    for name, value in values.items():
        assert name in M, f"{fig.kind} has no control {name!r}"
        models[M[name]["ref"]]["value"] = value
    code = (
        "(L, M) => { const t0 = Date.now(); L.update." + fig.kind + "(M); "
        "const shown = mfShown(M, " + json.dumps(spec(expected)) + "); shown.ms = Date.now() - t0;"
        " return shown; }"
    )
    shown, _ = run_node(code, M, tmp_path, models)
    return shown, shown.pop("ms")
