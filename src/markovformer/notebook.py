"""Small helpers shared by the book's notebooks: seeding, figure style, glue, claim checks."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["setup", "glue", "check", "in_ci"]


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


def glue(name: str, value, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's prose ({glue:}`name`); no-op outside myst-nb."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # e.g. on Colab, where the book tool chain is not installed
        return
    if isinstance(value, (np.generic, torch.Tensor)) and np.ndim(value) == 0:
        value = value.item()  # numpy 2 reprs scalars as np.float64(...), which glue cannot format
    _glue(name, value, display=display)


def check(name: str, measured: float, expected: float, tol: float, digits: int = 4) -> None:
    """Print measured vs expected and assert ``|measured - expected| <= tol``."""
    ok = abs(float(measured) - float(expected)) <= tol
    print(
        f"{name}: measured {measured:.{digits}f}, expected {expected:.{digits}f} "
        f"(tolerance {tol:g}) -> {'OK' if ok else 'FAIL'}"
    )
    assert ok, f"{name}: measured {measured} differs from {expected} by more than {tol}"
