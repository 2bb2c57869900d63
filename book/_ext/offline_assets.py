"""Sphinx extension: a built book that works with the network switched off.

* **MathJax** 3.2.2 comes from the lock: the PyPI wheel ``django-static-mathjax==3.2.2.1`` ships
  MathJax's es5 build and depends on nothing (Django is not pulled). Only what a page needs (the
  TeX-to-CHTML bundle, its fonts, the TeX extensions it loads on demand, the menu and
  accessibility components, 67 files) is copied to ``_static/vendor/mathjax-<version>/``, after
  checking their digest against the one pinned here. Compared once with the npm package
  ``mathjax@3.2.2`` (the book's earlier source): 93 of its 106 es5 files are byte-identical and 13
  bundles differ only by no-op self-assignments the minifier kept (``(r=r,``), 12-18 bytes each.
* **BokehJS** (the live figures of :mod:`markovformer.live`) is copied from the installed bokeh
  wheel to ``_static/vendor/bokeh-<version>/`` and loaded only by pages that have a live figure.
* The theme's Font Awesome JavaScript (1.5 MB per page, only needed for custom SVG icons) is
  not loaded; its icons come from the stylesheet and web fonts, served from the book.
* Nothing else leaves the site: the sphinx-thebe configuration (emitted twice by jupyter-book, a
  ``SyntaxError`` in the console, and pointing at unpkg.com; this book has no thebe button) and the
  ipywidgets state that myst-nb embeds (the slider panels are for Binder and Colab) are dropped.
  Any script or stylesheet that still points at another host is reported as a warning, which
  fails the strict build (``jupyter-book build -W``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_VERSION = "3.2.2"
MATHJAX_WHEEL = "django-static-mathjax==3.2.2.1"
#: what a page needs from MathJax's es5/ folder (the bundle loads the rest on demand)
MATHJAX_FILES = (
    "tex-chtml.js",
    "input/tex/extensions/",
    "output/chtml/fonts/woff-v2/",
    "ui/",
    "a11y/",
)
#: sha256 over the sorted (path, sha256 of the file) pairs of MATHJAX_FILES in that wheel
MATHJAX_DIGEST = "1220b50d3307b624a9f5b4288409e0084d687e7d256148f23dce77380afb8d23"
BOKEH_FILES = ("bokeh.min.js", "bokeh-widgets.min.js")
LIVE_MARKER = 'class="mf-live"'
CSS_FILE = "markovformer-offline.css"
CSS = """\
/* markovformer: live figures (markovformer.live) */
.mf-live-note { display: none; }
.mf-live { margin: 0.5rem 0 0.25rem 0; }
/* code and printed output: 88 characters fit the text column at a 1280-px window */
div.cell_output pre, div.cell_input pre { font-size: 0.75rem; }
"""
#: pydata-sphinx-theme's Font Awesome as JavaScript (1.5 MB, for custom SVG icons: this book has
#: none; the theme's icons come from its stylesheet and web fonts, which stay)
FONTAWESOME_JS = re.compile(
    r'\s*<script defer src="[^"]*_static/scripts/fontawesome\.js(\?digest=[0-9a-f]+)?"></script>'
)


def mathjax_files() -> tuple[Path, list[str]]:
    """(es5 folder, the files of MATHJAX_FILES in it) of the installed MathJax wheel, checked."""
    try:
        import mathjax
    except ImportError:
        raise ExtensionError(
            f"MathJax is not installed: install the lock ({MATHJAX_WHEEL}, `make install`)"
        ) from None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    package = es5.parent / "package.json"
    version = (
        json.loads(package.read_text()).get("version") if package.exists() else None
    )
    if version != MATHJAX_VERSION:
        raise ExtensionError(
            f"the installed MathJax is {version}, the book needs {MATHJAX_VERSION} ({MATHJAX_WHEEL})"
        )
    files = sorted(
        p.relative_to(es5).as_posix()
        for p in es5.rglob("*")
        if p.is_file() and p.relative_to(es5).as_posix().startswith(MATHJAX_FILES)
    )
    digest = hashlib.sha256()
    for rel in files:
        digest.update(
            rel.encode() + b"\0" + hashlib.sha256((es5 / rel).read_bytes()).digest()
        )
    if digest.hexdigest() != MATHJAX_DIGEST:
        raise ExtensionError(
            f"the MathJax files in {es5} do not match the pinned digest (expected "
            f"{MATHJAX_DIGEST}, got {digest.hexdigest()}): reinstall {MATHJAX_WHEEL}"
        )
    return es5, files


def bokeh_js() -> tuple[str, Path]:
    """(version, folder) of BokehJS inside the installed bokeh wheel."""
    import bokeh

    folder = Path(bokeh.__file__).parent / "server" / "static" / "js"
    missing = [f for f in BOKEH_FILES if not (folder / f).exists()]
    if missing:
        raise ExtensionError(f"the installed bokeh wheel lacks {missing} in {folder}")
    return bokeh.__version__, folder


def on_config_inited(app, config) -> None:
    config.mathjax_path = f"vendor/mathjax-{MATHJAX_VERSION}/tex-chtml.js"


def on_builder_inited(app) -> None:
    if app.builder.format != "html":
        return
    mathjax_files()  # check now: a build that cannot go offline fails before it starts
    bokeh_js()
    app.add_css_file(CSS_FILE)


def on_doctree_resolved(app, doctree, docname) -> None:
    """Drop sphinx-thebe's ``text/x-thebe-config`` block (this book has no thebe button)."""
    for node in list(doctree.findall(nodes.raw)):
        if "text/x-thebe-config" in node.astext():
            node.parent.remove(node)


def _external(url) -> bool:
    return isinstance(url, str) and "://" in url and not url.startswith("file://")


def on_html_page_context(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts is None:
        return
    keep = []
    for js in scripts:
        name = str(getattr(js, "filename", "") or "")
        attrs = getattr(js, "attributes", {}) or {}
        body = attrs.get("body", "") or ""
        if name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body:
            continue  # thebe: unused, emitted twice, points at unpkg.com
        if attrs.get("type") == "application/vnd.jupyter.widget-state+json":
            continue  # ipywidgets state: the panels are for Binder and Colab
        keep.append(js)
    scripts[:] = keep
    css = context.get("css_files")
    if css is not None:
        css[:] = [
            c
            for c in css
            if not str(getattr(c, "filename", "")).endswith("sphinx-thebe.css")
        ]
    if LIVE_MARKER in context.get("body", ""):
        version, _ = bokeh_js()
        for name in BOKEH_FILES:
            app.add_js_file(f"vendor/bokeh-{version}/{name}", priority=200)
    for asset in list(scripts) + list(css or []):
        url = getattr(asset, "filename", None)
        if _external(url):
            logger.warning(f"[offline_assets] {pagename} loads {url} from another host")


def on_build_finished(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    vendor = static / "vendor"
    es5, files = mathjax_files()
    for rel in files:
        dst = vendor / f"mathjax-{MATHJAX_VERSION}" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / rel, dst)
    version, folder = bokeh_js()
    (vendor / f"bokeh-{version}").mkdir(parents=True, exist_ok=True)
    for name in BOKEH_FILES:
        shutil.copy2(folder / name, vendor / f"bokeh-{version}" / name)
    (static / CSS_FILE).write_text(CSS, encoding="utf-8")
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        lean = FONTAWESOME_JS.sub("", text)
        if lean != text:
            page.write_text(lean, encoding="utf-8")


def setup(app):
    app.connect("config-inited", on_config_inited)
    app.connect("builder-inited", on_builder_inited)
    app.connect("doctree-resolved", on_doctree_resolved, priority=900)
    app.connect("html-page-context", on_html_page_context, priority=900)
    app.connect("build-finished", on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
