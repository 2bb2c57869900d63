"""Seeds and generators. Every random draw in the package goes through a generator made here.

A run's seed spawns independent streams by name ("init", "data", "probe", ...), so a run's
initialisation and data do not depend on which other runs share its batch.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator"]


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream of ``seed`` (stable across machines and versions)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    ss = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1 << 31, 1]) & (
        (1 << 63) - 1
    )


def make_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded for the named stream of ``seed``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))
