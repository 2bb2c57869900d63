"""Named initialisations of :class:`markovformer.model.MarkovTransformer`.

Each initialiser writes one run's parameters from that run's own seed, so a run starts the same way
whatever batch of runs it is trained in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import MarkovTransformer
from .rng import make_generator

__all__ = ["gaussian_", "initialise"]


@torch.no_grad()
def gaussian_(model: MarkovTransformer, seeds: Sequence[int], std: float = 0.02) -> None:
    """The default init of the papers' code: every matrix and embedding ~ N(0, std^2), bias 0.

    Draws, for each run, in the fixed parameter order of the model, from the run's "init"
    stream, so the result depends only on (seed, std, architecture).
    """
    _check_seeds(model, seeds)
    if not (isinstance(std, (int, float)) and std >= 0):
        raise ValueError(f"std must be a number >= 0, got {std!r}")
    for r, seed in enumerate(seeds):
        gen = make_generator(seed, "init")
        for name, p in model.named_run_parameters().items():
            if name == "bias":
                p[r].zero_()
            else:
                p[r].copy_(torch.randn(p.shape[1:], generator=gen) * std)


INITIALISERS = {"gaussian": gaussian_}


def initialise(
    model: MarkovTransformer, seeds: Sequence[int], name: str = "gaussian", **kwargs
) -> None:
    """Apply the initialiser registered as ``name`` (see ``INITIALISERS``)."""
    if name not in INITIALISERS:
        raise ValueError(f"unknown initialisation {name!r}; available: {sorted(INITIALISERS)}")
    INITIALISERS[name](model, seeds, **kwargs)


def _check_seeds(model: MarkovTransformer, seeds: Sequence[int]) -> None:
    if len(seeds) != model.n_runs:
        raise ValueError(f"need one seed per run: {model.n_runs} runs, got {len(seeds)} seeds")
