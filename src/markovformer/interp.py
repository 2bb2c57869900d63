"""Reading attention: maps, previous-token and induction scores (chapter 8).

The statistical induction head of Edelman et al. (*The Evolution of Statistical Induction Heads*,
2024) is a two-step circuit: a layer-1 head attends from every position n to n - 1, copying the
previous symbol into position n; a layer-2 head then attends from the last position to the
positions i whose *previous* symbol equals the current one, x_{i-1} = x_n, and averages the x_i it
finds there, which is the in-context bigram estimate. Two scores measure how far a head is from
each role:

* **previous-token score**: the attention weight on position n - 1, averaged over queries
  n = 1..N-1 (1 for a perfect previous-token head; 1/(n+1) at query n for uniform attention);
* **induction score** (of order m, default 1): the total weight on the key positions i <= n whose
  preceding m symbols equal the last m symbols at the query, (x_{i-m}..x_{i-1}) = (x_{n-m+1}..x_n),
  averaged over the queries that have at least one such position (1 for a perfect statistical
  induction head; the fraction of such positions among the n + 1 visible ones for uniform
  attention, see :func:`uniform_attention`).

Attention tensors are ``(..., H, N, N)`` (row = query, column = key, causal); symbols ``(..., N)``
broadcast against them without the head axis (add it with ``x.unsqueeze(-2)``).
"""

from __future__ import annotations

import torch

__all__ = [
    "attention_per_head",
    "attention_maps",
    "previous_token_score",
    "induction_targets",
    "induction_score",
    "uniform_attention",
    "offset_margins",
]


def attention_per_head(att: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The model's attention of one layer as ``(R, B, H, N, N)`` (one head comes without H)."""
    if n_heads == 1 and att.ndim == 4:
        return att.unsqueeze(2)
    if att.ndim != 5 or att.shape[2] != n_heads:
        raise ValueError(f"expected attention (R, B, {n_heads}, N, N), got {tuple(att.shape)}")
    return att


@torch.no_grad()
def attention_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention weights of every layer of a :class:`~markovformer.model.MarkovTransformer`
    on symbols ``x`` (R, B, N): a list of ``(R, B, H, N, N)`` tensors."""
    _, atts = model(x, return_attention=True)
    return [attention_per_head(a, model.config.n_heads) for a in atts]


def _check_square(att: torch.Tensor) -> int:
    if att.ndim < 2 or att.shape[-1] != att.shape[-2]:
        raise ValueError(f"attention must end in a square (N, N) block, got {tuple(att.shape)}")
    return att.shape[-1]


def previous_token_score(att: torch.Tensor) -> torch.Tensor:
    """Mean attention on the previous position, over queries 1..N-1: shape ``att.shape[:-2]``."""
    N = _check_square(att)
    if N < 2:
        raise ValueError("the previous-token score needs at least 2 positions")
    return torch.diagonal(att, offset=-1, dim1=-2, dim2=-1).mean(-1)


def _shift(x: torch.Tensor, s: int, fill: int) -> torch.Tensor:
    """y[..., n] = x[..., n - s], ``fill`` where n - s < 0."""
    if s == 0:
        return x
    pad = torch.full_like(x[..., : min(s, x.shape[-1])], fill)
    return torch.cat([pad, x[..., : max(x.shape[-1] - s, 0)]], -1)


def induction_targets(x: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Boolean ``(..., N, N)``: entry (n, i) is True when key i <= n follows an earlier occurrence
    of the last ``order`` symbols at query n, i.e. x_{i-1-j} = x_{n-j} for j = 0..order-1."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    x = x.long()
    N = x.shape[-1]
    match = torch.ones(*x.shape, N, dtype=torch.bool, device=x.device).tril()
    for j in range(order):
        q = _shift(x, j, -1)  # x_{n-j} at query n (-1: before the start)
        k = _shift(x, j + 1, -2)  # x_{i-1-j} at key i (-2: never equal to a query value)
        match &= q.unsqueeze(-1) == k.unsqueeze(-2)
    return match


def induction_score(att: torch.Tensor, x: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Attention mass on the induction targets, averaged over queries that have one.

    ``att`` ``(..., N, N)`` and symbols ``x`` broadcastable to ``att.shape[:-1]``. Returns
    ``att.shape[:-2]``; NaN where no query has a target (e.g. all symbols distinct).
    """
    _check_square(att)
    match = induction_targets(x, order)
    mass = (att * match.to(att.dtype)).sum(-1)  # (..., N)
    has = match.any(-1).expand_as(mass)
    count = has.sum(-1)
    total = torch.where(has, mass, torch.zeros_like(mass)).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def uniform_attention(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Causal uniform attention (row n puts 1/(n+1) on each of keys 0..n): the chance baseline of
    both scores."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    m = torch.ones(n, n, dtype=dtype).tril()
    return m / m.sum(-1, keepdim=True)


def offset_margins(att: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """Logit margin of a head on the key ``offset`` positions back: at every query n >= offset,
    ln att[n, n - offset] - max over the other visible keys i <= n of ln att[n, i].

    The softmax leaves differences of logits unchanged, so this is the margin of the head's own
    attention logits (scores) on the target key over its strongest competitor: > 0 when the head
    prefers the target, m when the target's logit exceeds every other by m. Returns
    ``att.shape[:-2] + (N - offset,)`` for queries n = offset..N-1.
    """
    N = _check_square(att)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 1 <= offset < N:
        raise ValueError(f"offset must be an integer in [1, {N - 1}], got {offset!r}")
    logs = torch.log(att.to(torch.float64).clamp_min(1e-300))
    n = torch.arange(offset, N, device=att.device)
    target = logs[..., n, n - offset]
    keys = torch.arange(N, device=att.device)
    visible = keys[None, :] <= n[:, None]  # (N - offset, N)
    other = visible & (keys[None, :] != (n - offset)[:, None])
    rival = logs[..., n, :].masked_fill(~other, float("-inf")).amax(-1)
    return target - rival
