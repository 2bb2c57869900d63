"""Small helpers shared by the book's notebooks: seeding, figure style, glue, claim checks."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

from .claims import Claim

__all__ = [
    "setup",
    "glue",
    "rounded",
    "check",
    "check_claims",
    "in_ci",
    "elapsed",
    "glue_runtime",
    "glue_cost",
    "machines_text",
    "figure_text",
    "figure_png",
    "PNG_TEXT_KEY",
    "FIGURE_DPI",
    "FONT_SIZE",
    "COLUMN_INCHES",
    "UNRECORDED",
]

#: when this module was first imported: in a chapter, right after the kernel started
_START = time.perf_counter()

#: The book's static figures are drawn for the width they are shown at. The text column is 676 px
#: wide at a 1280-px window; a figure up to :data:`COLUMN_INCHES` wide at :data:`FIGURE_DPI` is
#: shown at its natural size there, so text of :data:`FONT_SIZE` points renders at
#: ``FONT_SIZE * FIGURE_DPI / 72`` px (12.5 px; the browser test asks for at least 11 px).
FIGURE_DPI = 90
#: the figures' default font size, points
FONT_SIZE = 10
#: the width of the text column, inches at :data:`FIGURE_DPI`
COLUMN_INCHES = 7.5
#: the PNG text chunk in which every figure records its smallest font size and its dpi
PNG_TEXT_KEY = "markovformer:text"


def in_ci() -> bool:
    """True under CI or nbval (progress bars stay quiet there)."""
    return bool(os.environ.get("CI") or os.environ.get("TQDM_DISABLE"))


def setup(seed: int = 0, threads: int | None = 1) -> None:
    """Seed Python, numpy and torch, set torch's thread count and the book's figure style.

    One thread by default: the chapters' live computations are small, and inside a Jupyter
    kernel on a 2-core machine we measured small torch operations (an 8-column SVD, a batched
    8 x 8 matmul) running about 100 times slower with two OpenMP threads than with one, while
    the same code in a plain script was fast with either. ``threads=None`` keeps torch's default.
    """
    import matplotlib as mpl

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (a safety net: the package uses explicit generators)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    mpl.rcParams.update(
        {
            "figure.dpi": FIGURE_DPI,
            "savefig.dpi": FIGURE_DPI,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": FONT_SIZE,
            "font.size": FONT_SIZE,
            "axes.labelsize": FONT_SIZE,
            "xtick.labelsize": FONT_SIZE,
            "ytick.labelsize": FONT_SIZE,
            "legend.fontsize": FONT_SIZE,
            "legend.frameon": False,
        }
    )
    _record_text_sizes()


def figure_text(fig) -> dict:
    """``{"pt": the smallest font size of any text the figure draws, "dpi": its dpi}``.

    The figure is drawn first, so that tick labels exist; empty and invisible texts do not count.
    """
    from matplotlib.text import Text

    fig.canvas.draw()
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_alpha() != 0
    ]
    return {"pt": round(float(min(sizes, default=FONT_SIZE)), 2), "dpi": float(fig.dpi)}


def figure_png(fig, base64: bool = True):
    """The figure as the notebook shows it (a tight PNG at the figure's dpi), with its
    :func:`figure_text` record in the PNG's text chunk :data:`PNG_TEXT_KEY`; the browser test
    computes from it the size the figure's smallest text renders at in the book."""
    import json

    from IPython.core.pylabtools import print_figure

    record = json.dumps(figure_text(fig), sort_keys=True)
    return print_figure(fig, "png", base64=base64, metadata={PNG_TEXT_KEY: record})


def _record_text_sizes() -> None:
    """In a Jupyter kernel: show matplotlib figures through :func:`figure_png`."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def rounded(value, sig: int = 6):
    """``value`` rounded to ``sig`` significant digits (floats, and floats inside lists, tuples
    and dicts); other values unchanged. What the book glues is rounded like this, so nothing nbval
    compares depends on the last bits of a float."""
    if isinstance(value, (np.generic, torch.Tensor)) and np.ndim(value) == 0:
        value = value.item()  # numpy 2 reprs scalars as np.float64(...), which glue cannot format
    if isinstance(value, float):
        if value == 0 or not np.isfinite(value):
            return value
        return round(value, sig - 1 - int(np.floor(np.log10(abs(value)))))
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v, sig) for v in value)
    if isinstance(value, dict):
        return {k: rounded(v, sig) for k, v in value.items()}
    return value


def glue(name: str, value, display: bool = False, sig: int = 6) -> None:
    """Store ``value``, rounded to ``sig`` significant digits (:func:`rounded`), under ``name``
    for the book's prose (the ``{glue:text}`` role); a no-op outside myst-nb (e.g. on Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # e.g. on Colab, where the book tool chain is not installed
        return
    _glue(name, rounded(value, sig), display=display)


def check(
    name: str, measured: float, expected, tol: float, digits: int | None = None, **claim
) -> None:
    """Print ``measured vs expected`` for one claim and assert it (see
    :class:`markovformer.claims.Claim`).

    ``expected`` is a number or a (lo, hi) range; the printed decimals follow the tolerance
    unless ``digits`` is given.
    """
    check_claims(
        [Claim(claim.pop("chapter", 0), name, measured, expected, tol, digits=digits, **claim)]
    )


def check_claims(claims) -> None:
    """Print one line per claim, then assert that all of them hold."""
    claims = list(claims)
    for c in claims:
        print(c.line())
    failed = [c.text for c in claims if not c.passed]
    assert not failed, f"claims that do not hold: {failed}"


def elapsed() -> float:
    """Seconds since this module was first imported (a chapter imports it in its first cell)."""
    return time.perf_counter() - _START


def glue_runtime(name: str = "runtime", step: float = 5.0) -> None:
    """Glue the chapter's running time so far, rounded up to ``step`` seconds, for its first
    paragraph ("Running time: ... s, measured when this page was built"), and the machine it
    was measured on under ``<name>_machine`` (e.g. "AMD EPYC, 2 cores, AVX512 kernels")."""
    from .artifacts import machine_text

    seconds, machine = int(step * np.ceil(elapsed() / step)), machine_text()
    glue(name, seconds)
    glue(f"{name}_machine", machine)
    # for a reader in Jupyter, Binder or Colab, where the page's glued numbers do not render
    print(f"Running time of this notebook: {seconds} s on {machine}.")


#: how the book names a machine whose CPU its manifests did not record (the runs made before
#: manifests recorded it all came from the book's 2-core build machine)
UNRECORDED = "the 2-core machine that made them (its CPU model was not recorded)"


def machines_text(machines) -> str:
    """The machines of :func:`markovformer.experiments.base.stored_cost` in words, joined by
    "; "; runs stored before the manifests recorded the CPU are named :data:`UNRECORDED`,
    never a guessed CPU."""
    known = [m for m in machines if not str(m).endswith("not recorded")]
    unknown = len(known) < len(machines)
    return "; ".join(known + ([UNRECORDED] if unknown else [])) or UNRECORDED


def _short(value: float):
    """A quantity as prose quotes it: a whole number from 10 on, else 2 significant digits."""
    return int(round(value)) if value >= 10 else rounded(float(value), 2)


def glue_cost(name: str, jobs, root) -> dict:
    """Glue what the stored runs of ``jobs`` cost to compute, from their manifests
    (:func:`markovformer.experiments.base.stored_cost`): ``<name>_min`` (minutes: whole from 10
    on, else 2 significant digits), ``<name>_s`` (seconds, rounded up), ``<name>_per_run``
    (seconds per run, as the minutes), ``<name>_runs`` and ``<name>_machine``
    (:func:`machines_text`), so that every time the prose quotes names the machine it was
    measured on. Returns the cost."""
    from .experiments.base import stored_cost

    cost = stored_cost(jobs, root)
    seconds, runs = float(cost["seconds"]), max(int(cost["runs"]), 1)
    glue(f"{name}_min", _short(seconds / 60))
    glue(f"{name}_s", int(np.ceil(seconds)))
    glue(f"{name}_per_run", _short(seconds / runs))
    glue(f"{name}_runs", int(cost["runs"]))
    glue(f"{name}_machine", machines_text(cost["machines"]))
    return cost
