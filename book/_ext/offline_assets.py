"""Sphinx extension: a built book that works with the network switched off.

* **MathJax** comes from the npm registry at build time (``npm pack``, a pinned version checked
  against its sha512), cached in ``.cache/offline-assets/`` (ignored by git), and only what a page
  needs (the TeX-to-CHTML bundle, its fonts, the TeX extensions it loads on demand, the menu and
  accessibility components) is copied to ``_static/vendor/mathjax-<version>/``.
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

import base64
import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_VERSION = "3.2.2"
#: ``npm view mathjax@3.2.2 dist.integrity``
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
#: what a page needs from the package's es5/ folder (the bundle loads the rest on demand)
MATHJAX_FILES = (
    "tex-chtml.js",
    "input/tex/extensions/",
    "output/chtml/fonts/woff-v2/",
    "ui/",
    "a11y/",
)
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


def _cache_dir(app) -> Path:
    return Path(app.srcdir) / ".cache" / "offline-assets"


def mathjax_dir(app) -> Path:
    """The cached es5/ folder of MathJax, fetched from the npm registry if absent."""
    target = _cache_dir(app) / f"mathjax-{MATHJAX_VERSION}"
    if (target / "tex-chtml.js").exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError(
            f"MathJax {MATHJAX_VERSION} is not cached in {target} and npm is not installed: "
            "install Node.js and npm (the book takes MathJax from the npm registry at build time)"
        )
    logger.info(
        f"[offline_assets] fetching mathjax@{MATHJAX_VERSION} from the npm registry"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        run = subprocess.run(
            [npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent", "--pack-destination", tmp],
            cwd=tmp, capture_output=True, text=True, check=False,
        )  # fmt: skip
        tgz = Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz"
        if run.returncode != 0 or not tgz.exists():
            raise ExtensionError(
                f"npm pack mathjax@{MATHJAX_VERSION} failed: {run.stderr[-2000:]}"
            )
        digest = (
            "sha512-"
            + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        )
        if digest != MATHJAX_INTEGRITY:
            raise ExtensionError(
                f"mathjax-{MATHJAX_VERSION}.tgz has integrity {digest}, expected {MATHJAX_INTEGRITY}"
            )
        staging = Path(tmp) / "es5"
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix("package/es5/")
                if (
                    member.isfile()
                    and rel != member.name
                    and rel.startswith(MATHJAX_FILES)
                ):
                    out = staging / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src:
                        out.write_bytes(src.read())
        staging.rename(target)  # atomic: a half-extracted cache never looks complete
    return target


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
    mathjax_dir(app)  # fetch now: a build that cannot go offline fails before it starts
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
    src = mathjax_dir(app)
    shutil.copytree(src, vendor / f"mathjax-{MATHJAX_VERSION}", dirs_exist_ok=True)
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
