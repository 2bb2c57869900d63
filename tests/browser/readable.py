"""What a reader can read: the layout audit of the browser test, at a desktop and a phone width.

* Nothing in the article is wider than its column: display equations, code, printed output,
  live figures, tables, images, anything. An element that scrolls sideways inside its box counts
  as wider (a reader must scroll it to read it), so does one that sticks out of the column.
* No static figure's text renders under :data:`MIN_TEXT_PX`. The rendered size is computed, not
  guessed: :func:`markovformer.notebook.setup` makes the notebooks write every matplotlib figure
  as a PNG whose text chunks record the smallest font size drawn (in points) and the dpi
  (:data:`markovformer.notebook.PNG_TEXT_KEY`), so the text's size on screen is
  ``points * dpi / 72 * displayed width / natural width``. A PNG without that record fails (it
  was not drawn through the book's setup). Where the column is too narrow for that (a phone), the
  figure must open full size when tapped (``book/_ext/readable.py``), and full size must be
  readable: the test taps it and measures the enlarged image.
"""

from __future__ import annotations

import json
import struct
import zlib
from functools import cache
from pathlib import Path

from markovformer.notebook import PNG_TEXT_KEY

MIN_TEXT_PX = 11.0  # the smallest text a figure may show, in CSS pixels
WIDTHS = {"desktop": (1280, 1000), "phone": (390, 844)}

#: Everything in the article that does not fit its column, and the widest element of each kind.
LAYOUT_JS = r"""
const article = document.querySelector("article.bd-article") || document.querySelector("main");
// the text column: the article's box less its padding
const col = (() => { const r = article.getBoundingClientRect(); const s = getComputedStyle(article);
  const l = parseFloat(s.paddingLeft) || 0, rr = parseFloat(s.paddingRight) || 0;
  return { left: r.left + l, right: r.right - rr, width: r.width - l - rr }; })();
const content = (document.querySelector(".bd-content") || article).getBoundingClientRect();
const visible = (el) => { const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden"; };
const kindOf = (el) => {
  if (el.closest("mjx-container, div.math, .math")) return "equation";
  if (el.closest(".mf-live") || el.querySelector(":scope > .mf-live, :scope > * > .mf-live"))
    return "live figure";
  if (el.closest(".cell_input")) return "code";
  if (el.closest(".cell_output")) {
    if (el.closest("table")) return "table";
    if (el.closest("img") || el.tagName === "IMG") return "image";
    return "output";
  }
  if (el.closest("table")) return "table";
  if (el.tagName === "IMG") return "image";
  if (el.closest("pre, .highlight")) return "code";
  return el.tagName.toLowerCase();
};
const snippet = (el) => {
  if (shadow.has(el)) return "(inside a live figure)";
  const holder = el.closest("mjx-container") || el;
  let tex = "";
  if (holder.tagName === "MJX-CONTAINER" && window.MathJax && MathJax.startup.document) {
    const items = MathJax.startup.document.getMathItemsWithin(holder);
    tex = items.length ? items[0].math : "";
  }
  const alt = el.getAttribute && (el.getAttribute("aria-label") || el.getAttribute("alt"));
  const fig = el.closest("figure");
  const num = fig && fig.querySelector(".caption-number");
  const text = (alt || tex || el.innerText || el.textContent || "").replace(/\s+/g, " ").trim();
  // whole code points only (a cut surrogate pair cannot be sent back to the test)
  return (num ? num.innerText.trim() + " " : "") + Array.from(text).slice(0, 90).join("");
};
// the bound of an element: the text column, or the content area for a full-width cell
const boundOf = (el) => el.closest(".tag_full-width") ? content : col;
// an ancestor inside the article that clips it (its overflow is then the ancestor's)
const up = (el) => el.parentElement || (el.parentNode && el.parentNode.host) || null;
const clipped = (el) => {
  for (let a = up(el); a && a !== article; a = up(a)) {
    if (a.nodeType === 1 && getComputedStyle(a).overflowX !== "visible") return true;
  }
  return false;
};
const all = Array.from(article.querySelectorAll("*"));
// the content of shadow roots (BokehJS draws its layouts in them), recursively
const shadow = new Set();
const dig = (root) => { for (const el of root.querySelectorAll("*")) {
  if (el.shadowRoot) { const inner = Array.from(el.shadowRoot.querySelectorAll("*"));
    inner.forEach((e) => shadow.add(e)); all.push(...inner); dig(el.shadowRoot); } } };
dig(article);
const found = [];
for (const el of all) {
  if (!shadow.has(el) && el.closest(".mf-live-note, script, style, mjx-assistive-mml"))
    continue;
  if (!visible(el)) continue;
  const r = el.getBoundingClientRect();
  const s = getComputedStyle(el);
  const bound = boundOf(el);
  const scrolls = (s.overflowX === "auto" || s.overflowX === "scroll") &&
    el.scrollWidth > el.clientWidth + 1;
  const sticks = (r.right > bound.right + 1 || r.left < bound.left - 1) && !clipped(el);
  if (scrolls || sticks) {
    const need = scrolls ? r.width + el.scrollWidth - el.clientWidth : r.width;
    found.push({ el: el, kind: shadow.has(el) ? "live figure" : kindOf(el), width: Math.round(need),
                 column: Math.round(bound.width), how: scrolls ? "scrolls" : "sticks out",
                 text: snippet(el) });
  }
}
// keep the outermost of nested findings (an overflowing block's children overflow too)
const inside = (a, b) => { for (let x = b; x; x = up(x)) if (x === a) return true; return false; };
const overflow = found.filter((f) => !found.some((g) => g !== f && inside(g.el, f.el)))
  .map(({ el, ...rest }) => rest);
// the widest element of each kind, overflowing or not
const kinds = { equation: "mjx-container[display='true']", code: ".cell_input pre",
  output: ".cell_output pre", "live figure": ".mf-live", table: "table", image: "img" };
const widest = {};
for (const [kind, sel] of Object.entries(kinds)) {
  for (const el of article.querySelectorAll(sel)) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    let need = Math.max(r.width, el.scrollWidth);
    // an equation's own width, not its (column-wide) box
    if (kind === "equation" && el.firstElementChild)
      need = Math.max(el.firstElementChild.getBoundingClientRect().width,
                      el.scrollWidth > el.clientWidth + 1 ? el.scrollWidth : 0);
    if (kind === "live figure") {
      const inner = [el, ...el.querySelectorAll("*")].flatMap((e) => e.shadowRoot ?
        [...e.shadowRoot.querySelectorAll("*")] : [e]).map((e) => e.getBoundingClientRect())
        .filter((b) => b.width > 0);
      need = Math.max(need, ...inner.map((b) => b.right - r.left), 0);
    }
    const bound = Math.round(boundOf(el).width);
    if (!widest[kind] || need / bound > widest[kind].width / widest[kind].bound)
      widest[kind] = { width: Math.round(need), bound: bound, text: snippet(el) };
  }
}
const images = Array.from(article.querySelectorAll("img")).filter(visible).map((img, i) => {
  img.dataset.mfIndex = String(i);
  const r = img.getBoundingClientRect();
  return { index: i, src: img.getAttribute("src"), natural: img.naturalWidth, width: r.width,
           zoom: !!img.closest(".mf-zoomable"), text: snippet(img) };
});
return { column: Math.round(col.width), window: window.innerWidth, overflow: overflow,
         widest: widest, images: images };
"""

#: Wait until book/_ext/readable/readable.js has fitted the page (equations, tables, figures).
READY_JS = r"""
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function poll() {
  if (window.MFReadable) window.MFReadable.ready.then(() => done(true));
  else if (performance.now() - t0 > 5000) done(false);
  else setTimeout(poll, 50);
})();
"""

#: Tap an image (by the index the layout audit gave it), wait for the enlarged view, measure it.
ZOOM_JS = r"""
const [index, done] = arguments;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const img = document.querySelector(`img[data-mf-index="${index}"]`);
  img.scrollIntoView({ block: "center" });
  img.click();
  let big = null;
  for (let i = 0; i < 50 && !big; i++) {
    await sleep(20);
    big = document.querySelector(".mf-zoom-view img");
  }
  if (!big) { done({ error: "tapping the image opened no enlarged view" }); return; }
  if (!big.complete) await new Promise((r) => big.addEventListener("load", r));
  const r = big.getBoundingClientRect();
  const out = { width: r.width, natural: big.naturalWidth };
  document.querySelector(".mf-zoom-view").click();  // tapping again closes it
  await sleep(50);
  out.closed = !document.querySelector(".mf-zoom-view");
  done(out);
})().catch((e) => done({ error: String(e) }));
"""


def png_text(path: Path) -> dict[str, str]:
    """The tEXt / iTXt / zTXt chunks of a PNG file."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return {}
    out, pos = {}, 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")  # language tag
            _, _, text = rest.partition(b"\0")  # translated keyword
            out[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode()
        elif kind == b"IEND":
            break
    return out


@cache
def figure_text(path: Path) -> dict | None:
    """``{"pt": smallest font size, "dpi": dots per inch}`` recorded in a figure's PNG, or None."""
    record = png_text(path).get(PNG_TEXT_KEY)
    if record is None:
        return None
    return json.loads(record)


def text_px(record: dict, natural: float, shown: float) -> float:
    """The smallest text of a figure as rendered, in CSS pixels."""
    return record["pt"] * record["dpi"] / 72.0 * shown / natural


def audit(browser, site: Path, page: str, width: str) -> tuple[list[str], dict]:
    """The layout problems of the loaded page at ``width`` ("desktop" or "phone"), and a summary
    (the widest element of each kind, the smallest figure text) for the report."""
    ready = browser.execute_async_script(READY_JS)
    facts = browser.execute_script("return (() => {" + LAYOUT_JS + "})();")
    problems = [] if ready else ["the book's readable.js did not run (book/_ext/readable.py)"]
    for f in facts["overflow"]:
        problems.append(
            f"{width} ({WIDTHS[width][0]} px): {f['kind']} wider than its column "
            f"({f['width']} px in {f['column']} px, {f['how']}): {f['text']!r}"
        )
    smallest = None
    base = (site / page).parent
    for img in facts["images"]:
        path = (base / (img["src"] or "")).resolve()
        name = path.name[:24]
        record = figure_text(path) if path.is_file() else None
        if record is None:
            problems.append(
                f"image {name}: no text-size record ({PNG_TEXT_KEY}) in the PNG: draw "
                "it through markovformer.notebook.setup"
            )
            continue
        if not img["natural"]:
            continue
        px = text_px(record, img["natural"], img["width"])
        seen = {"px": round(px, 1), "image": img["text"][:60]}
        if px < MIN_TEXT_PX:
            if not img["zoom"]:
                problems.append(
                    f"{width}: image {img['text'][:50]!r}: its smallest text renders at "
                    f"{px:.1f} px ({record['pt']:g} pt at {record['dpi']:g} dpi, shown at "
                    f"{img['width']:.0f} of {img['natural']} px); at least {MIN_TEXT_PX:g} px"
                )
            else:
                big = browser.execute_async_script(ZOOM_JS, img["index"])
                if "error" in big:
                    problems.append(f"{width}: image {img['text'][:50]!r}: {big['error']}")
                    continue
                px_big = text_px(record, big["natural"], big["width"])
                seen["tapped_px"] = round(px_big, 1)
                if px_big < MIN_TEXT_PX:
                    problems.append(
                        f"{width}: image {img['text'][:50]!r}: enlarged, its smallest text "
                        f"renders at {px_big:.1f} px; at least {MIN_TEXT_PX:g} px"
                    )
                if not big["closed"]:
                    problems.append(f"{width}: image {img['text'][:50]!r}: the enlarged view "
                                    "does not close when tapped")  # fmt: skip
        if smallest is None or px < smallest["px"]:
            smallest = seen
    summary = {"column": facts["column"], "widest": facts["widest"], "smallest_text": smallest}
    return problems, summary
