"""Reproducible figures: each id names the runs it needs (at the papers' settings) and a figure.

``markovformer list`` prints the ids; ``markovformer reproduce ID`` computes what is missing and
draws the figure. Chapters call ``get(ID).load(root)`` on the committed artifacts.
"""

from . import awm, gdd, guide, icl, l2g, ntp, plateau  # noqa: F401  (registers the experiments)
from .base import (
    Experiment,
    RunSpec,
    all_experiments,
    get,
    load_specs,
    register,
    run_specs,
    stack,
)

__all__ = [
    "Experiment",
    "RunSpec",
    "all_experiments",
    "get",
    "load_specs",
    "register",
    "run_specs",
    "stack",
]
