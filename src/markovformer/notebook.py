"""Small helpers shared by the book's notebooks: seeding, figure style, glue, claim checks."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

from .claims import Claim

__all__ = ["setup", "glue", "rounded", "check", "check_claims", "in_ci", "elapsed", "glue_runtime"]

#: when this module was first imported: in a chapter, right after the kernel started
_START = time.perf_counter()


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
            "figure.dpi": 90,
            "savefig.dpi": 90,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "font.size": 9,
            "legend.frameon": False,
        }
    )


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
    for the book's prose ({glue:}`name`); a no-op outside myst-nb (e.g. on Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # e.g. on Colab, where the book tool chain is not installed
        return
    _glue(name, rounded(value, sig), display=display)


def check(
    name: str, measured: float, expected, tol: float, digits: int | None = None, **claim
) -> None:
    """Print ``measured vs expected`` for one claim and assert it (see :class:`Claim`).

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

    glue(name, int(step * np.ceil(elapsed() / step)))
    glue(f"{name}_machine", machine_text())
