"""What a reader of the chapters in Jupyter sees: Binder's JupyterLab renders their MyST markup
with jupyterlab-myst, Colab renders none.

The rendering itself was checked once by hand, in JupyterLab 4 with jupyterlab-myst 2.7.0 (the
lock's version) in headless Chromium, on every chapter: display and inline math, the solutions
(``:::{admonition}`` with ``:class: dropdown``, folded), the ``prf:`` definitions and propositions
and ``{doc}`` links render; ``{cite}`` and ``{numref}`` show their key with a warning mark (no
bibliography or figure labels outside the book); ``{glue:text}`` shows the name of the glued value
(the values are printed by the cells above it, the running time by the last cell); ``{py:func}``
and ``{py:class}`` show the full name of their target. A JupyterLab UI test in CI would need a
JupyterLab server and a browser session per chapter for what these checks pin down: that Binder
installs the extension, and that the chapters use only what it renders, written so that Colab
(plain Markdown) still shows the text and the mathematics.
"""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "book" / "claims.ipynb"]
#: roles jupyterlab-myst renders (or shows as their text) in the chapters
ROLES = {"cite", "numref", "doc", "ref", "glue:text", "py:func", "py:class", "py:mod", "py:meth",
         "py:attr", "py:data", "math", "eq"}  # fmt: skip
#: directives it renders; written with colon fences, so that Colab shows their content as Markdown
DIRECTIVES = {"admonition", "note", "tip", "warning", "important", "prf:definition",
              "prf:proposition", "prf:proof", "prf:theorem", "prf:lemma"}  # fmt: skip


def _markdown(nb: Path) -> list[str]:
    cells = json.loads(nb.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def test_binder_installs_jupyterlab_myst():
    """Binder's environment.yml installs requirements/lock.txt, which pins the extension, and the
    venv built from the lock has its JupyterLab extension."""
    env = (ROOT / "environment.yml").read_text()
    assert "requirements/lock.txt" in env
    pin = re.search(r"^jupyterlab-myst==([\w.]+)", (ROOT / "requirements" / "lock.txt").read_text(),
                    re.MULTILINE)  # fmt: skip
    assert pin, "requirements/lock.txt does not pin jupyterlab-myst"
    ext = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-myst"
    if not ext.is_dir():
        pytest.skip(f"jupyterlab-myst is not installed in {sys.prefix} (install from the lock)")
    assert json.loads((ext / "package.json").read_text())["version"] == pin.group(1)


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapters_use_only_myst_that_jupyterlab_myst_renders(nb):
    for text in _markdown(nb):
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # code blocks are code
        roles = set(re.findall(r"\{([a-z:]+)\}`", prose))
        assert roles <= ROLES, f"{nb.name}: roles jupyterlab-myst does not render: {roles - ROLES}"
        # "~name" shortens a reference in the HTML book but shows the tilde in JupyterLab
        assert not re.search(r"\{py:\w+\}`~", prose), f"{nb.name}: a py role with '~'"
        fenced = re.findall(r"^`{3,}\{([^}]+)\}", text, flags=re.M)
        assert not fenced, f"{nb.name}: directives in backtick fences (code in Colab): {fenced}"
        used = set(re.findall(r"^:{3,}\{([^}]+)\}", text, flags=re.M))
        assert used <= DIRECTIVES, f"{nb.name}: directives not rendered: {used - DIRECTIVES}"
