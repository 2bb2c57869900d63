"""Attention kernels behind one interface.

A kernel maps queries and keys to attention weights and applies them to values. The transformer
of :mod:`markovformer.model` looks its kernel up here by name, so a chapter can swap the softmax for
another kernel without touching the model.

Shapes: ``q, k`` are ``(batch, heads, n, d_k)`` and ``v`` is ``(batch, heads, n, d_v)``;
``weights`` returns ``(batch, heads, n, n)`` and ``apply`` returns ``(batch, heads, n, d_v)``.
Row n of a causal kernel only looks at positions ``i <= n``.

Registered kernels (``get_kernel(name, **options)``):

* ``softmax``: softmax(q k^T / sqrt(d_k)), row-normalised (the papers' default);
* ``gaussian``: exp(-|q_i - k_j|^2 / (c sqrt(d_k))) entrywise, not normalised (GDD's kernel);
* ``gaussian-rownorm``: the same, normalised over each row (= a softmax, see its docstring);
* ``gaussian-prefix``: ``gaussian`` divided by the number of visible keys (the causal variant
  used in the Markov transformer).

The Gaussian kernels take the option ``c`` (default 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "AttentionKernel",
    "SoftmaxKernel",
    "GaussianKernel",
    "NormalizedGaussianKernel",
    "PrefixGaussianKernel",
    "gaussian_bandwidth",
    "register_kernel",
    "get_kernel",
    "available_kernels",
]


class AttentionKernel:
    """Base class: subclasses define :meth:`weights`; :meth:`apply` defaults to weights @ v."""

    name = "base"

    def weights(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def apply(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
    ) -> torch.Tensor:
        return self.weights(q, k, causal) @ v


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (n, n) mask, True where position i may attend to j (j <= i)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class SoftmaxKernel(AttentionKernel):
    """Scaled dot-product softmax attention, softmax(q k^T / sqrt(d_k)) (the papers' default).

    ``apply`` uses :func:`torch.nn.functional.scaled_dot_product_attention`, which never builds
    the n x n matrix on backends that have a fused kernel. ``precision`` ("float32", the default,
    "bfloat16" or "float16") is the dtype the fused kernel computes in; the lower precisions
    reach the flash kernels on GPUs (about 8x faster for d = 8 on an H100) at the cost of about
    3 significant digits in the attention output. Everything else stays in float32.
    """

    name = "softmax"
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ValueError(
                f"precision must be one of {sorted(_PRECISIONS)}, got {self.precision!r}"
            )

    def weights(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if causal:
            scores = scores.masked_fill(~causal_mask(q.shape[-2], q.device), float("-inf"))
        return scores.softmax(-1)

    def apply(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True
    ) -> torch.Tensor:
        low = _PRECISIONS[self.precision]
        if low is None or q.dtype == low:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = F.scaled_dot_product_attention(q.to(low), k.to(low), v.to(low), is_causal=causal)
        return out.to(q.dtype)


def gaussian_bandwidth(c: float, d: int) -> float:
    """tau = c sqrt(d), the bandwidth of the Gaussian kernels (SPEC section 5, c = 2 by default)."""
    return c * math.sqrt(d)


def squared_distances(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """|q_i - k_j|^2 for all pairs, (..., n, m), as |q|^2 + |k|^2 - 2 q.k clamped at 0."""
    sq = (q * q).sum(-1, keepdim=True) + (k * k).sum(-1).unsqueeze(-2) - 2 * q @ k.transpose(-1, -2)
    return sq.clamp_min(0.0)


def _check_c(c: float) -> None:
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (c > 0 and math.isfinite(c)):
        raise ValueError(f"the Gaussian kernel's c must be a finite number > 0, got {c!r}")


@dataclass(frozen=True)
class GaussianKernel(AttentionKernel):
    """Entrywise Gaussian kernel of GDD (Song et al., 2024), **without** row normalisation.

    S_ij = exp(-|q_i - k_j|^2 / tau) with tau = c sqrt(d_k) (SPEC section 5; the paper's constant c
    is not known, the book uses c = 2, which makes the cross term 2 q.k / tau equal the softmax
    score q.k / sqrt(d_k)). Entries lie in (0, 1]; rows do not sum to one. Causal: entries with
    j > i are 0.
    """

    name = "gaussian"
    c: float = 2.0

    def __post_init__(self) -> None:
        _check_c(self.c)

    def weights(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        s = torch.exp(-squared_distances(q, k) / gaussian_bandwidth(self.c, q.shape[-1]))
        if causal:
            s = s.masked_fill(~causal_mask(q.shape[-2], q.device), 0.0)
        return s


@dataclass(frozen=True)
class NormalizedGaussianKernel(AttentionKernel):
    """Row-normalised Gaussian kernel: S_ij proportional to exp(-|q_i - k_j|^2 / tau), rows sum to 1.

    Since |q_i|^2 is the same along a row it cancels, so this equals
    softmax_j((2 q_i.k_j - |k_j|^2) / tau) with tau = c sqrt(d_k): a softmax attention whose scores
    are penalised by the key norms. Computed as the softmax of -|q_i - k_j|^2 / tau (stable).
    Causal: normalised over the prefix j <= i.
    """

    name = "gaussian-rownorm"
    c: float = 2.0

    def __post_init__(self) -> None:
        _check_c(self.c)

    def weights(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        scores = -squared_distances(q, k) / gaussian_bandwidth(self.c, q.shape[-1])
        if causal:
            scores = scores.masked_fill(~causal_mask(q.shape[-2], q.device), float("-inf"))
        return scores.softmax(-1)


@dataclass(frozen=True)
class PrefixGaussianKernel(AttentionKernel):
    """Unnormalised Gaussian kernel divided by the number of visible keys.

    S_ij = exp(-|q_i - k_j|^2 / tau) / m_i with m_i = i (1-based) under a causal mask and m_i = n
    otherwise. The weights are not a probability vector (a row sums to at most 1), but their scale
    does not grow with the position, which the raw :class:`GaussianKernel` would do in the causal
    Markov transformer (a sum over up to N = 1024 keys). For short non-causal inputs it is the
    raw kernel up to the constant 1/n.
    """

    name = "gaussian-prefix"
    c: float = 2.0

    def __post_init__(self) -> None:
        _check_c(self.c)

    def weights(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        s = GaussianKernel(self.c).weights(q, k, causal)
        n = q.shape[-2]
        if causal:
            count = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
        else:
            count = torch.full((n,), float(k.shape[-2]), dtype=s.dtype, device=s.device)
        return s / count[:, None]


_REGISTRY: dict[str, Callable[..., AttentionKernel]] = {"softmax": SoftmaxKernel}


def register_kernel(name: str, factory: Callable[..., AttentionKernel]) -> None:
    """Make ``factory(**kwargs)`` available as ``get_kernel(name, **kwargs)``."""
    _REGISTRY[name] = factory


def available_kernels() -> list[str]:
    return sorted(_REGISTRY)


def get_kernel(name: str, **kwargs) -> AttentionKernel:
    """The kernel registered as ``name``; unknown names raise ValueError listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention kernel {name!r}; available: {available_kernels()}")
    return _REGISTRY[name](**kwargs)


register_kernel("gaussian", GaussianKernel)
register_kernel("gaussian-rownorm", NormalizedGaussianKernel)
register_kernel("gaussian-prefix", PrefixGaussianKernel)
