"""Sphinx extension: the book readable on every screen (1280-px windows and phones).

* **Code and printed output** wrap instead of scrolling sideways where the column is narrower than
  their 88 characters (below a 1200-px window); at 1280 px they fit as written.
* **Display equations** that are wider than a narrow column are set in a smaller type, down to
  :data:`MIN_MATH_SCALE` of the normal size; the book writes every equation to fit the column at
  1280 px (broken over aligned lines), so this only acts on phones and narrow windows.
* **Wide tables** (the figure map, the claims table) become one card per row on a narrow column,
  each cell labelled with its column's header.
* **Static figures** drawn wider than the column is on a phone open at their natural size when
  tapped (and close when tapped again, or with Escape): their text is then at least 11 px.
* The theme's top bar, which only repeats the sidebar's search box, is not shown; the site has a
  favicon (no 404 in the console of the first page).

The browser test (``tests/browser``) measures all of this at 1280 and at 390 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).with_name("readable")
FILES = ("readable.css", "readable.js")
#: the smallest size a display equation is shrunk to on a narrow column (1 = the normal size)
MIN_MATH_SCALE = 0.7


def on_config_inited(app, config) -> None:
    if not config.html_favicon:
        config.html_favicon = str(HERE / "favicon.svg")


def on_builder_inited(app) -> None:
    if app.builder.format != "html":
        return
    app.add_css_file("readable.css")
    app.add_js_file(
        "readable.js", defer="defer", **{"data-min-math-scale": str(MIN_MATH_SCALE)}
    )


def on_build_finished(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(HERE / name, static / name)


def setup(app):
    app.connect("config-inited", on_config_inited)
    app.connect("builder-inited", on_builder_inited)
    app.connect("build-finished", on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
