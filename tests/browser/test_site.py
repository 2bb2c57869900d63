"""The built book (_build/html) in a real browser: headless Chromium, every host but 127.0.0.1
unreachable, the site served by a local http.server.

Every page: no request to another host, no console error or warning, math typeset (no raw TeX
left), no Markdown table left unparsed, every image loads, every figure has a number, a caption and
real alt text, no image is shrunk below 0.6 of its natural width, the Binder and Colab links open
the page's own notebook, and the page weighs at most 6 MB with everything it loads. At a 1280-px
window and at a 390-px phone, nothing in the article is wider than its column (equations, code,
output, live figures, tables, images: ``readable.py``) and no static figure's text renders under
11 px (computed from the font size and dpi each PNG records, and the width it is shown at; on a
phone a figure may instead open full size when tapped, and is then measured there). Every live figure starts with
what the package computes and, when its controls move, changes to what the package computes for
the new values, in the time budget. A screenshot of every page goes to _build/screenshots/ (not
committed).

Run by ``make test`` after the strict build (``make browser-test`` alone); skipped by a plain
``pytest tests``. Chromium and chromedriver: ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: live_compare
import readable  # noqa: E402
import stored  # noqa: E402
from live_compare import ENCODE_JS, assert_state, decode, spec  # noqa: E402

from markovformer import live  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# MARKOVFORMER_BUILD: the build folder to test (default _build; `jupyter-book build --path-output X`
# writes X/_build/html), so that two builds can be tested side by side
_BUILD = Path(os.environ.get("MARKOVFORMER_BUILD", ROOT / "_build"))
SITE = _BUILD / "html" if (_BUILD / "html").is_dir() else _BUILD / "_build" / "html"
SHOTS = SITE.parent / "screenshots"
WINDOW = readable.WIDTHS["desktop"]
PHONE = readable.WIDTHS["phone"]
PAGE_BUDGET = 6 * 2**20  # bytes a chapter page loads, with its data and scripts
SITE_BUDGET = 80 * 2**20  # bytes of the whole built site
SHRINK_LIMIT = 0.6  # an image shown below this fraction of its natural width is unreadable
UPDATE_BUDGET_MS = 100  # a live figure redraws within this (median over its moves)
UPDATE_LIMIT_MS = 400  # and no single move may take longer (first calls compile the callback)


def _pages() -> list[str]:
    if not SITE.is_dir():
        return []
    return sorted(
        str(p.relative_to(SITE))
        for p in SITE.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(SITE).parts)
    )


PAGES = _pages() or ["(no built book)"]

# --------------------------------------------------------------------------------------------
# The site, the server, the browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site() -> Path:
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built book in {SITE}: run the strict build first (make book-strict)",
                    pytrace=False)  # fmt: skip
    return SITE


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def server(site):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chrome = os.environ.get("CHROME_BIN") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )  # fmt: skip
    driver_bin = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver_bin:
        pytest.fail("the browser test needs Chromium and chromedriver (Debian: apt-get install -y "
                    f"chromium chromium-driver); found chromium={chrome}, chromedriver={driver_bin}",
                    pytrace=False)  # fmt: skip
    opts = Options()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-default-apps",
                "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                # no network: every host name but the local server's fails to resolve
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    driver.set_window_size(*WINDOW)
    driver.set_script_timeout(90)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# --------------------------------------------------------------------------------------------
# What the page shows
# --------------------------------------------------------------------------------------------

WAIT_JS = """
const done = arguments[arguments.length - 1];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const t0 = performance.now();
  while (document.readyState !== "complete") await sleep(20);
  const imgs = Array.from(document.images);
  imgs.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
  await Promise.race([sleep(20000), Promise.all(imgs.map((img) => img.complete ? null :
    new Promise((r) => { img.addEventListener("load", r); img.addEventListener("error", r); })))]);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const lives = document.querySelectorAll(".mf-live [data-root-id]");
  const ids = Array.from(lives, (el) => el.getAttribute("data-root-id"));
  const rendered = () => window.Bokeh && ids.every((id) => Bokeh.documents.some((d) =>
    d.roots().some((r) => r.id === id)) && Bokeh.index && Bokeh.index.get_by_id &&
    Bokeh.index.get_by_id(id) != null);
  const renderedLoose = () => window.Bokeh && ids.every((id) => Bokeh.documents.some((d) =>
    d.roots().some((r) => r.id === id)));
  while (ids.length && !(rendered() || renderedLoose()) && performance.now() - t0 < 30000) {
    await sleep(50);
  }
  await sleep(ids.length ? 300 : 0);
  done({ ms: performance.now() - t0, lives: ids.length, bokeh: !!window.Bokeh &&
    ids.length > 0 && renderedLoose() });
})().catch((e) => done({ error: String(e) }));
"""

AUDIT_JS = """
const article = document.querySelector("article.bd-article") || document.querySelector("main");
const col = article.getBoundingClientRect();
const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right,
  width: r.width, height: r.height }; };
const caption = (el) => {
  const fig = el.closest("figure");
  if (!fig) return null;
  const num = fig.querySelector(".caption-number");
  const cap = fig.querySelector("figcaption");
  return { id: fig.id, number: num ? num.innerText.trim() : "",
           text: cap ? cap.innerText.trim() : "" };
};
const clone = article.cloneNode(true);
clone.querySelectorAll("pre, code, script, style, .highlight, mjx-container, .mf-live, " +
  "textarea").forEach((e) => e.remove());
const text = clone.textContent;
const raw = ["\\\\(", "\\\\[", "$$"].filter((s) => text.includes(s)).map((s) => {
  const i = text.indexOf(s); return s + "  ...  " + text.slice(Math.max(0, i - 40), i + 60); });
// a Markdown table that was not parsed shows its separator row ("---" becomes an em dash)
const rawTables = ["|---", "|\u2014|", "| --- |"].filter((s) => text.includes(s)).map((s) => {
  const i = text.indexOf(s); return text.slice(Math.max(0, i - 60), i + 40); });
const maths = Array.from(article.querySelectorAll("span.math, div.math"));
const outputs = Array.from(article.querySelectorAll(".cell_output pre")).map((pre) => {
  const holder = pre.closest(".highlight") || pre;
  const longest = (pre.innerText.split("\\n").sort((a, b) => b.length - a.length)[0] || "");
  return { scroll: Math.max(pre.scrollWidth, holder.scrollWidth),
           client: Math.min(pre.clientWidth || 1e9, holder.clientWidth || 1e9),
           right: box(holder).right, longest: longest.slice(0, 120), chars: longest.length };
});
const tables = Array.from(article.querySelectorAll(".cell_output table, table.table")).map((t) =>
  ({ right: box(t).right, text: t.innerText.slice(0, 60) }));
// a cell tagged full-width may use the margin too (the theme's wide figures): its bound is the
// content area, not the text column
const content = (document.querySelector(".bd-content") || article).getBoundingClientRect();
const images = Array.from(article.querySelectorAll("img")).map((img) => ({
  src: img.getAttribute("src"), alt: img.getAttribute("alt") || "", complete: img.complete,
  natural: img.naturalWidth, naturalHeight: img.naturalHeight, ...box(img),
  bound: img.closest(".tag_full-width") ? content.right : col.right, figure: caption(img) }));
const lives = Array.from(article.querySelectorAll(".mf-live")).map((el) => {
  const host = el.querySelector("[data-root-id]");
  const kids = Array.from(el.children).map(box);
  const right = Math.max(...kids.map((k) => k.right), box(el).right);
  const root = host && host.nextElementSibling;
  const area = el.parentElement;  // the output area, which scrolls what does not fit
  return { kind: el.dataset.mfKind, rootId: host && host.getAttribute("data-root-id"),
           right: root ? Math.max(right, box(root).right) : right,
           width: root ? box(root).width : 0, height: root ? box(root).height : 0,
           scroll: Math.max(el.scrollWidth, area.scrollWidth),
           client: Math.min(el.clientWidth, area.clientWidth), figure: caption(el) };
});
const figures = Array.from(article.querySelectorAll("figure")).map((f) => ({ id: f.id,
  number: (f.querySelector(".caption-number") || {}).innerText || "" }));
const links = Array.from(document.querySelectorAll("a[href]")).map((a) => a.href)
  .filter((h) => /mybinder\\.org|colab\\.research\\.google\\.com/.test(h));
const nav = performance.getEntriesByType("navigation")[0];
const res = performance.getEntriesByType("resource");
const size = (e) => e.encodedBodySize || e.transferSize || 0;
const bytes = (nav ? size(nav) : 0) + res.reduce((s, e) => s + size(e), 0);
return { column: { left: col.left, right: col.right, width: col.width }, raw: raw,
  rawTables: rawTables,
  maths: maths.length, untypeset: maths.filter((m) => !m.querySelector("mjx-container")).length,
  outputs: outputs, tables: tables, images: images, lives: lives, figures: figures, links: links,
  bytes: bytes, resources: res.map((e) => e.name) };
"""

DRIVE_JS = (
    ENCODE_JS
    + """
const [rootId, moves, wanted, done] = arguments;
const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
(async () => {
  const doc = Bokeh.documents.find((d) => d.roots().some((r) => r.id === rootId));
  const names = (doc.roots()[0].name || "");
  const models = Array.from(doc.all_models);
  const control = (name) => models.find((m) => m.name === name &&
    m.js_property_callbacks && m.js_property_callbacks["change:value"]);
  const first = models.find((m) => m.js_property_callbacks &&
    m.js_property_callbacks["change:value"]);
  const M = first.js_property_callbacks["change:value"][0].args;
  const values = () => Object.fromEntries(models.filter((m) => m.js_property_callbacks &&
    m.js_property_callbacks["change:value"] && m.name).map((m) => [m.name, m.value]));
  const scalars = Object.fromEntries(Object.entries(M).filter(([k, v]) => typeof v === "number"
    || (Array.isArray(v) && v.length <= 4 && v.every((x) => typeof x === "number"))));
  const out = { root: names, scalars: scalars, start: { values: values(),
    shown: mfShown(M, wanted) }, moves: [] };
  for (const [name, value] of moves) {
    const c = control(name);
    if (!c) { out.moves.push({ name: name, error: "no control " + name }); continue; }
    const before = wanted.sources.map((s) => M[s] && M[s].data);
    const t0 = performance.now();
    c.value = value;
    // the callback runs asynchronously: wait for the data to change, then for the next frame
    const tick = () => new Promise((r) => setTimeout(r, 0));
    let changed = false;
    while (!changed && performance.now() - t0 < 5000) {
      await tick();
      changed = wanted.sources.some((s, i) => M[s] && M[s].data !== before[i]);
    }
    await frame();
    out.moves.push({ name: name, value: value, ms: performance.now() - t0, changed: changed,
      values: values(), shown: mfShown(M, wanted) });
  }
  done(out);
})().catch((e) => done({ error: String(e) + " " + (e.stack || "") }));
"""
)


# --------------------------------------------------------------------------------------------
# Live figures: the moves, and what the package computes for the controls' values
# --------------------------------------------------------------------------------------------

MOVES = {
    "chain": [("p", 0.23), ("seed", 3)],
    "grid": [("p", 0.3), ("q", 0.8)],
    "reduction": [("a", -1.0), ("p", 0.3)],
    "run": [("step", 200), ("menu", "0")],
    "canonical": [("w0", -1.5), ("p", 0.3)],
    "init": [("logScale", 0.3), ("seed", 3), ("q", 0.3)],
    "kernel": [("logC", 1.0), ("seed", 3)],
    "dataset": [("seed", 2), ("K", 10)],
    "icl_step": [("step", 250), ("seed", "3"), ("step", 1950), ("step", 0)],
    "plateau": [("step", 400), ("arm", "standard"), ("seed", "2"), ("step", 2990), ("step", 0)],
}


def expected_state(kind: str, v: dict, scalars: dict) -> dict:
    """``live.<kind>_state`` for the controls' values ``v`` (and the figure's fixed arguments)."""
    if kind == "chain":
        n, length = scalars["shape"]
        return live.chain_state(v["p"], v["q"], int(v["seed"]), int(n), int(length))
    if kind == "grid":
        curves, grid = stored.grid()
        return live.grid_state(curves, grid, v["p"], v["q"])
    if kind == "reduction":
        return live.reduction_state(v["e"], v["w"], v["a"], v["p"], v["q"],
                                    int(scalars["seed"]), int(scalars["length"]))  # fmt: skip
    if kind == "run":
        return live.run_state(stored.runs(), int(v["menu"]), int(v["step"]))
    if kind == "canonical":
        return live.canonical_state(v["p"], v["q"], v["e0"], v["w0"], scalars["lr"],
                                    int(scalars["gdSteps"]))  # fmt: skip
    if kind == "init":
        return live.init_state(v["p"], v["q"], 10 ** v["logScale"], int(v["seed"]),
                               int(scalars["n"]), stored.measured())  # fmt: skip
    if kind == "kernel":
        return live.kernel_state(10 ** v["logC"], 10 ** v["logScale"], int(v["seed"]))
    if kind == "dataset":
        return live.dataset_state(int(v["K"]), int(v["N"]), int(v["L"]), int(v["seed"]))
    if kind == "icl_step":
        return live.icl_step_state(stored.icl_runs(), int(v["seed"]), int(v["step"]))
    if kind == "plateau":
        return live.plateau_state(stored.plateau_runs(), v["arm"], int(v["seed"]), int(v["step"]))
    raise ValueError(kind)


def check_live(browser, fig: dict, problems: list[str], timings: dict) -> None:
    kind = fig["kind"]
    if kind not in MOVES:
        problems.append(f"live figure of unknown kind {kind!r}")
        return
    where = f"live figure {kind}"
    # what to read: the sources, titles and properties of the state at the figure's start
    probe = browser.execute_async_script(DRIVE_JS, fig["rootId"], [], _all_names(kind))
    if "error" in probe:
        problems.append(f"{where}: {probe['error']}")
        return
    first = expected_state(kind, probe["start"]["values"], probe["scalars"])
    wanted = spec(first)
    res = browser.execute_async_script(DRIVE_JS, fig["rootId"], MOVES[kind], wanted)
    if "error" in res:
        problems.append(f"{where}: {res['error']}")
        return
    steps = [("start", res["start"])] + [(f"{m['name']} -> {m.get('value')}", m)
                                         for m in res["moves"]]  # fmt: skip
    ms = []
    for label, step in steps:
        if "error" in step:
            problems.append(f"{where}: {step['error']}")
            continue
        if label != "start":
            ms.append(step["ms"])
            if not step["changed"]:
                problems.append(f"{where}: moving {label} changed nothing")
                continue
        expected = expected_state(kind, step["values"], res["scalars"])
        try:
            assert_state(kind, decode(step["shown"]), expected, where=f"{where} at {label}")
        except AssertionError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            problems.append(" | ".join(lines)[:400])
    timings[kind] = [round(m, 1) for m in ms]
    if ms and (np.median(ms) > UPDATE_BUDGET_MS or max(ms) > UPDATE_LIMIT_MS):
        problems.append(f"{where}: updates took {timings[kind]} ms (budget: median "
                        f"{UPDATE_BUDGET_MS} ms, at most {UPDATE_LIMIT_MS} ms)")  # fmt: skip


def _all_names(kind: str) -> dict:
    """Enough to read the controls' values (the state is compared after the first probe)."""
    return {"sources": [], "titles": [], "props": []}


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------

HASHY = re.compile(r"^[0-9a-f]{16,}|\.(png|jpe?g|svg|gif)$", re.IGNORECASE)
CHAPTER = re.compile(r"^book/(\d\d_[a-z0-9_]+)\.html$")
TIMINGS: dict[str, dict] = {}
READABLE: dict[str, dict] = {}  # per page and width: the widest elements, the smallest figure text


def _other_hosts(perf_log: list[dict], base: str) -> list[str]:
    host = urlparse(base).netloc
    urls = set()
    for entry in perf_log:
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            scheme = urlparse(url).scheme
            if scheme in ("data", "blob", "about", "chrome", "devtools"):
                continue
            if urlparse(url).netloc != host:
                urls.add(url)
    return sorted(urls)


def _screenshot(browser, page: str, window: tuple[int, int] = WINDOW, suffix: str = "") -> None:
    """The whole page at the window's width (the viewport stretched to the page's height)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    height = min(height, 30000)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": window[0], "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
    try:
        time.sleep(0.3)
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        if window == WINDOW:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        else:
            _emulate(browser, window)
    name = page.replace("/", "_").removesuffix(".html") + suffix + ".png"
    (SHOTS / name).write_bytes(base64.b64decode(shot["data"]))


def _emulate(browser, window: tuple[int, int]) -> None:
    """A viewport of ``window`` (width, height) CSS pixels, as on a phone held upright."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})  # fmt: skip


def _console(browser) -> list[str]:
    """Every console error and warning since the last call (the page's own, and the browser's
    about the page: a missing favicon, a failed resource)."""
    return [f"console {e['level'].lower()}: {e['message'][:300]}"
            for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]  # fmt: skip


@pytest.mark.parametrize("page", PAGES)
def test_page(page, site, server, browser):
    if page == "(no built book)":
        pytest.fail(f"no pages in {SITE}", pytrace=False)
    browser.get_log("browser")
    browser.get_log("performance")
    browser.get(f"{server}/{page}")
    ready = browser.execute_async_script(WAIT_JS)
    facts = browser.execute_script("return (() => {" + AUDIT_JS + "})();")
    problems: list[str] = []
    if "error" in ready:
        problems.append(f"the page did not settle: {ready['error']}")
    if ready.get("lives") and not ready.get("bokeh"):
        problems.append("live figures present but BokehJS did not render them")

    # readable at 1280 px: nothing wider than the column, figure text at least 11 px
    found, summary = readable.audit(browser, site, page, "desktop")
    problems += found
    READABLE.setdefault(page, {})["desktop"] = summary

    # math
    problems += [f"raw TeX left in the text: {r!r}" for r in facts["raw"]]
    problems += [f"a Markdown table left unrendered: {r!r}" for r in facts["rawTables"]]
    if facts["untypeset"]:
        problems.append(f"{facts['untypeset']} of {facts['maths']} formulas not typeset by MathJax")

    # images, figures, captions
    col = facts["column"]
    for img in facts["images"]:
        name = (img["src"] or "").rsplit("/", 1)[-1][:24]
        if not img["complete"] or img["natural"] == 0:
            problems.append(f"image {name} did not load")
            continue
        alt = img["alt"].strip()
        if len(alt) < 15 or HASHY.search(alt):
            problems.append(f"image {name}: no real alt text ({alt!r})")
        fig = img["figure"]
        if not fig or not fig["number"] or len(fig["text"]) < len(fig["number"]) + 15:
            problems.append(f"image {name}: not a numbered figure with a caption ({fig})")
        shown = img["width"] / img["natural"]
        if shown < SHRINK_LIMIT:
            problems.append(f"image {name} ({fig and fig['number']}) shown at {shown:.2f} of its "
                            f"natural width {img['natural']} px: its text is unreadable")  # fmt: skip
        if img["right"] > img["bound"] + 1:
            problems.append(f"image {name} overflows the text column")
    for f in facts["figures"]:
        if not f["number"]:
            problems.append(f"figure {f['id']} has no number")

    # printed output that does not fit the column
    for out in facts["outputs"]:
        if out["scroll"] > out["client"] + 1:
            problems.append(f"printed output wider than the column ({out['chars']} characters): "
                            f"{out['longest'][:90]!r}")  # fmt: skip
    for t in facts["tables"]:
        if t["right"] > col["right"] + 1:
            problems.append(f"table overflows the column: {t['text']!r}")

    # launch links
    m = CHAPTER.match(page)
    if m:
        nb = f"book/{m.group(1)}.ipynb"
        binder = [h for h in facts["links"] if "mybinder.org" in h]
        colab = [h for h in facts["links"] if "colab.research.google.com" in h]
        if not binder or not all(h.endswith(nb) for h in binder):
            problems.append(f"Binder link does not open {nb}: {binder}")
        if not colab or not all(h.endswith(nb) for h in colab):
            problems.append(f"Colab link does not open {nb}: {colab}")
        if facts["bytes"] > PAGE_BUDGET:
            problems.append(f"the page loads {facts['bytes'] / 2**20:.2f} MB (budget 6 MB)")

    _screenshot(browser, page)  # as a reader first sees it

    # live figures
    timings: dict = {}
    for fig in facts["lives"]:
        if not fig["figure"] or not fig["figure"]["number"] or len(fig["figure"]["text"]) < 30:
            problems.append(f"live figure {fig['kind']}: not a numbered figure with a caption")
        if fig["right"] > col["right"] + 1 or fig["scroll"] > fig["client"] + 1:
            problems.append(f"live figure {fig['kind']} overflows the text column "
                            f"({fig['scroll']} px wide in {fig['client']} px)")  # fmt: skip
        check_live(browser, fig, problems, timings)

    # the network and the console, last: they include what the live figures did
    others = _other_hosts(browser.get_log("performance"), server)
    problems += [f"request to another host: {u}" for u in others]
    problems += _console(browser)
    TIMINGS[page] = {"bytes": facts["bytes"], "lives": timings, "settle_ms": ready.get("ms")}
    print(f"{page}: {facts['bytes'] / 2**20:.2f} MB, live updates (ms) {timings}")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_phone(page, site, server, browser):
    """The page on a 390 x 844 phone: nothing wider than the column (equations shrink, code and
    tables wrap, live figures stack their panels), every control of a live figure within the
    column, figure text at least 11 px (or full size when tapped), no console error or warning."""
    if page == "(no built book)":
        pytest.fail(f"no pages in {SITE}", pytrace=False)
    browser.get_log("browser")
    _emulate(browser, PHONE)
    try:
        browser.get(f"{server}/{page}")
        ready = browser.execute_async_script(WAIT_JS)
        problems = [f"the page did not settle: {ready['error']}"] if "error" in ready else []
        found, summary = readable.audit(browser, site, page, "phone")
        problems += found
        READABLE.setdefault(page, {})["phone"] = summary
        _screenshot(browser, page, PHONE, suffix="_phone")
        problems += _console(browser)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.set_window_size(*WINDOW)
    assert not problems, f"{page} on a phone:\n  " + "\n  ".join(problems)


def test_site_size(site):
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"built site: {total / 2**20:.1f} MB")
    assert total <= SITE_BUDGET, f"the built site is {total / 2**20:.1f} MB (budget 80 MB)"


def test_every_chapter_page_was_checked():
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    for ch in chapters:
        assert f"book/{ch}.html" in PAGES, f"{ch} has no page in {SITE}"


def teardown_module(module):
    if TIMINGS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
    if READABLE:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "readable.json").write_text(json.dumps(READABLE, indent=1, ensure_ascii=False))
    time.sleep(0)
