"""Learning a Markov chain in context (SPEC section 7): a prior over chains and exact references.

Chapters 1-5 train on one fixed chain. Here every sequence comes from its *own* chain, drawn
afresh, so a model can only do well by estimating the kernel from the sequence it is reading
(Edelman et al., *The Evolution of Statistical Induction Heads*, 2024; Rajaraman et al.,
*Transformers on Markov Data: Constant Depth Suffices*, 2024).

**The prior** (:class:`RandomChains`). S symbols, order k >= 0. For each sequence, every row of
the kernel (one row per context, i.e. per value of the last k symbols; S^k rows) is drawn i.i.d.
from Dirichlet(alpha 1_S). The first k symbols are i.i.d. uniform on the S symbols (our choice of
start law: SPEC leaves it open; it does not depend on the kernel, so it carries no information
about it), and every later symbol is drawn from the row of its k predecessors. Order 0 is an
i.i.d. sequence from one random distribution.

**The Bayes predictor** [derived; standard conjugacy]. The rows are independent Dirichlet(alpha)
a priori and the likelihood of a sequence factorises over contexts, so row s has the posterior
Dirichlet(alpha + c(s, .)) and the posterior predictive after x_0..x_n is the add-alpha conditional
k-gram estimator

    Pr(x_{n+1} = j | x_0..x_n) = (c(s, j) + alpha) / (c(s) + S alpha),   s = (x_{n-k+1}, .., x_n),

with c(s, j) the number of i <= n with (x_{i-k}, .., x_{i-1}) = s and x_i = j, and c(s) = sum_j
c(s, j). Before k symbols have been seen the predictor is uniform. No predictor has a smaller
expected loss under the prior; its expected loss at position n (the *Bayes risk*) exceeds the mean
entropy of the drawn chain's next-symbol law by about (S - 1) S^k / (2 n) nats for large n (the
redundancy of the Krichevsky-Trofimov-type mixture, (S - 1)/2 ln n per context, differentiated).

**Strategies** [paper, ICL-MC: the stages of training]. ``uniform`` predicts 1/S; the in-context
``m``-context strategy is the same add-alpha estimator with context length m: m = 0 is the
in-context *unigram* (symbol counts of the prefix), m = 1 the *bigram*, m = 2 the *trigram*.
:func:`strategy_kls` measures a model's distance to each as KL(strategy || model), averaged over
positions: the excess cross-entropy the model pays when the next symbol is drawn from the
strategy's prediction (the book's convention "excess loss = KL(reference || prediction)").

Positions are 0-based and the prediction at position n is for x_{n+1}, as in
:mod:`markovformer.markov`. Losses are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .interp import attention_per_head, induction_score, previous_token_score, uniform_attention
from .rng import make_generator

__all__ = [
    "RandomChains",
    "dirichlet",
    "sample_from_kernels",
    "compose_prefix",
    "context_index",
    "ngram_predictor",
    "uniform_predictor",
    "strategy_orders",
    "strategy_name",
    "strategy_predictions",
    "expected_loss",
    "kl_divergence",
    "strategy_kls",
    "bayes_risk",
    "redundancy_rate",
    "model_log_probs",
    "InContextSource",
    "MAX_PAIRS",
    "SINKHORN_TOL",
    "sinkhorn",
    "DoublyStochasticChains",
    "PRIORS",
    "posterior_predictive_mc",
]

#: the largest S^(k+1) (contexts times symbols) the counting predictors accept
MAX_PAIRS = 4096


def _check_prior(n_states: object, order: object, alpha: object) -> tuple[int, int, float]:
    if isinstance(n_states, bool) or not isinstance(n_states, (int, np.integer)) or n_states < 2:
        raise ValueError(f"n_states (S) must be an integer >= 2, got {n_states!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order (k) must be an integer >= 0, got {order!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    a = float(alpha)
    if not (a > 0 and math.isfinite(a)):  # also rejects NaN
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    S, k = int(n_states), int(order)
    if S ** (k + 1) > MAX_PAIRS:
        raise ValueError(
            f"S^(k+1) = {S}^{k + 1} = {S ** (k + 1)} exceeds {MAX_PAIRS}; choose a smaller "
            "alphabet or order"
        )
    return S, k, a


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _standard_gamma(
    shape: int, alpha: float, generator: torch.Generator | None, device
) -> torch.Tensor:
    """Gamma(alpha, 1) draws (float64) by Marsaglia and Tsang's squeeze method, vectorised.

    Candidates are drawn for every entry still missing until all are accepted (the acceptance
    rate is above 95% for shape >= 1, so this loop runs a couple of rounds). For alpha < 1 the
    standard boost Gamma(alpha) = Gamma(alpha + 1) U^(1/alpha) is used.
    """
    a = alpha if alpha >= 1 else alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=torch.float64, device=device)
    todo = torch.arange(shape, device=device)
    while todo.numel():
        m = todo.numel()
        z = torch.randn(m, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * z) ** 3
        ok = v > 0
        logv = torch.log(torch.where(ok, v, torch.ones_like(v)))
        ok &= torch.log(u) < 0.5 * z * z + d - d * v + d * logv
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if alpha < 1:
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        out *= u ** (1.0 / alpha)
    return out


def dirichlet(
    alpha: float, shape: Sequence[int], n_states: int, generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:  # fmt: skip
    """Draws from the symmetric Dirichlet(alpha 1_S): float64 tensor ``(*shape, S)``.

    Normalised Gamma(alpha) variables; every draw comes from ``generator``.
    """
    S, _, a = _check_prior(n_states, 0, alpha)
    dev = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu")
    )  # fmt: skip
    n = int(np.prod(shape, dtype=np.int64)) * S
    g = _standard_gamma(n, a, generator, dev).reshape(*shape, S)
    g = g.clamp_min(1e-300)  # a row of underflowed draws (tiny alpha) becomes uniform, not NaN
    return g / g.sum(-1, keepdim=True)


def compose_prefix(maps: torch.Tensor) -> torch.Tensor:
    """Prefix compositions of maps on a finite set, by a parallel scan.

    ``maps[..., j, c]`` is f_j(c) for j = 0..L-1 and c in {0..C-1}. Returns F of the same shape with
    F_j = f_j o f_{j-1} o ... o f_0, in ceil(log2 L) rounds of gathers (Hillis and Steele's scan:
    composition is associative), so a Markov chain can be run without a loop over positions.
    """
    F = maps
    L, s = maps.shape[-2], 1
    while s < L:
        # F_j <- F_j o F_{j-s}: (F_j o F_{j-s})(c) = F_j[F_{j-s}[c]]
        tail = torch.gather(F[..., s:, :], -1, F[..., :-s, :])
        F = torch.cat([F[..., :s, :], tail], dim=-2)
        s *= 2
    return F


def sample_from_kernels(
    kernels: torch.Tensor, order: int, length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One sequence per kernel: int64 ``(batch, length)``, from ``kernels`` of shape
    ``(batch, S^k, S)`` (row c = context c, the last k symbols read as a base-S number with the
    oldest symbol most significant).

    The first k symbols are uniform; then, with one uniform u_n per position, the symbol drawn
    from each context c is fixed (inverse CDF of row c at u_n), which makes step n a map f_n on
    the S^k contexts. The context after step n is (f_n o ... o f_1)(first context), computed for
    all n at once by :func:`compose_prefix`. Cost O(batch length S^(k+1) log length); no Python
    loop over positions or sequences.
    """
    B, C, S = kernels.shape
    if C != S**order:
        raise ValueError(f"kernels must have S^k = {S**order} rows for order {order}, got {C}")
    dev = kernels.device
    u = torch.rand(B, length, generator=generator, dtype=torch.float64, device=dev)
    first = min(order, length)
    x = torch.empty(B, length, dtype=torch.long, device=dev)
    x[:, :first] = (u[:, :first] * S).long().clamp_(max=S - 1)
    if length <= order:
        return x
    ctx0 = torch.zeros(B, dtype=torch.long, device=dev)
    for i in range(order):  # k digits (k is small): the first context
        ctx0 = ctx0 * S + x[:, i]
    cdf = kernels.to(torch.float64).cumsum(-1)  # (B, C, S)
    # symbol drawn at step n from context c: (B, L, C)
    sym = (u[:, order:, None, None] >= cdf[:, None, :, :]).sum(-1).clamp_(max=S - 1)
    rows = torch.arange(C, device=dev)
    step = (rows * S + sym) % C  # f_n(c): the context after step n
    F = compose_prefix(step)
    ctx = torch.gather(F, -1, ctx0.view(B, 1, 1).expand(B, F.shape[1], 1)).squeeze(-1)
    before = torch.cat([ctx0[:, None], ctx[:, :-1]], dim=1)  # context at each step
    x[:, order:] = torch.gather(sym, -1, before.unsqueeze(-1)).squeeze(-1)
    return x


class RandomChains:
    """The prior over chains of SPEC section 7 (see the module docstring).

    ``RandomChains(S, k, alpha)``: S >= 2 symbols, order k >= 0, Dirichlet(alpha) rows with
    alpha > 0 (alpha = 1: uniform on the simplex). :meth:`sample` returns the sequences and the
    kernel of each; :meth:`next_law` the true law of every next symbol given its sequence's kernel.
    """

    def __init__(self, n_states: int, order: int = 1, alpha: float = 1.0) -> None:
        self.n_states, self.order, self.alpha = _check_prior(n_states, order, alpha)

    @property
    def n_contexts(self) -> int:
        return self.n_states**self.order

    def spec(self) -> dict:
        """JSON description (the ``chain`` of a :class:`~markovformer.experiments.base.RunSpec`)."""
        return {"kind": "random", "S": self.n_states, "k": self.order, "alpha": self.alpha}

    @classmethod
    def from_spec(cls, spec: dict) -> RandomChains:
        """The prior of a spec: Dirichlet rows, or the prior named by ``spec["prior"]``
        (``"doubly-stochastic"``: :class:`DoublyStochasticChains`)."""
        if not isinstance(spec, dict) or spec.get("kind") != "random":
            raise ValueError(f"not a random-chain spec: {spec!r}")
        name = spec.get("prior", "dirichlet")
        if name not in PRIORS:
            raise ValueError(f"unknown prior {name!r} in {spec!r}; known: {sorted(PRIORS)}")
        return PRIORS[name](spec["S"], spec["k"], spec["alpha"])

    def draw_kernels(
        self, batch: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """``batch`` kernels, float64 ``(batch, S^k, S)``."""
        return dirichlet(self.alpha, (batch, self.n_contexts), self.n_states, generator, device)

    def sample(
        self, batch: int, length: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequences int64 ``(batch, length)``, kernels float64 ``(batch, S^k, S)``)."""
        for name, v in (("batch", batch), ("length", length)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        kernels = self.draw_kernels(batch, generator, device)
        return sample_from_kernels(kernels, self.order, length, generator), kernels

    def next_law(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Law of x_{n+1} given x_0..x_n and the kernel: ``x.shape + (S,)`` (float64).

        ``x`` is ``(..., N)`` and ``kernels`` ``(..., S^k, S)`` with the same leading shape.
        Uniform where fewer than k symbols have been seen (the start law).
        """
        S, k = self.n_states, self.order
        ctx = context_index(x, S, k)  # (..., N), -1 where undefined
        law = torch.gather(
            kernels.to(torch.float64), -2, ctx.clamp(min=0).unsqueeze(-1).expand(*ctx.shape, S)
        )
        return torch.where((ctx >= 0).unsqueeze(-1), law, torch.full_like(law, 1.0 / S))

    def __repr__(self) -> str:
        return f"RandomChains(S={self.n_states}, k={self.order}, alpha={self.alpha:g})"


#: the tolerance of :func:`sinkhorn`: every row and column sum within this of 1
SINKHORN_TOL = 1e-10


def sinkhorn(
    matrices: torch.Tensor, tol: float = SINKHORN_TOL, max_iter: int = 100_000, check_every: int = 8
) -> torch.Tensor:
    """Sinkhorn-Knopp: alternate row and column normalisation of positive square matrices
    ``(..., S, S)`` until every row and every column sums to 1 within ``tol`` (float64).

    Each round divides the rows by their sums, then the columns by theirs; a matrix is done
    after a row normalisation whose column sums are all within ``tol`` of 1 (its rows are then
    exact to rounding), checked every ``check_every`` rounds; only the others go on. For a
    matrix with positive entries the iteration converges linearly (Sinkhorn, 1964) to the
    unique doubly stochastic matrix D1 M D2 with positive diagonal D1, D2.
    """
    if matrices.ndim < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"sinkhorn needs square matrices (..., S, S), got {tuple(matrices.shape)}")
    S = matrices.shape[-1]
    out = matrices.to(torch.float64).reshape(-1, S, S).clone()
    if not bool((out > 0).all()):
        raise ValueError("sinkhorn needs matrices with positive entries")
    active = torch.arange(out.shape[0], device=out.device)  # matrices not yet converged
    P = out
    for it in range(max_iter):
        P = P / P.sum(-1, keepdim=True)
        col = P.sum(-2, keepdim=True)
        if (it + 1) % check_every == 0:
            done = (col - 1).abs().amax((-1, -2)) <= tol
            out[active[done]] = P[done]
            P, col, active = P[~done], col[~done], active[~done]
            if active.numel() == 0:
                return out.reshape(matrices.shape)
        P = P / col
    raise RuntimeError(f"sinkhorn did not reach {tol:g} in {max_iter} rounds")


class DoublyStochasticChains(RandomChains):
    """A prior over doubly stochastic first-order kernels (SPEC section 7.1): draw a matrix with
    i.i.d. Dirichlet(alpha 1_S) rows, as :class:`RandomChains`, and Sinkhorn-normalise it
    (:func:`sinkhorn`, rows and columns within 1e-10 of 1).

    Every column of a doubly stochastic kernel sums to 1, so the uniform law is stationary for
    every drawn chain: the frequency of each symbol carries no information about the chain, and
    the in-context unigram strategy is no better than the uniform prediction. The posterior
    predictive is *not* the add-alpha estimator (the rows are no longer independent a priori);
    :func:`posterior_predictive_mc` estimates it.
    """

    def __init__(self, n_states: int, order: int = 1, alpha: float = 1.0) -> None:
        super().__init__(n_states, order, alpha)
        if self.order != 1:
            raise ValueError(f"a doubly stochastic kernel is square: order (k) must be 1, "
                             f"got {order!r}")  # fmt: skip

    def spec(self) -> dict:
        return {**super().spec(), "prior": "doubly-stochastic"}

    def draw_kernels(
        self, batch: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """``batch`` doubly stochastic kernels, float64 ``(batch, S, S)``."""
        return sinkhorn(super().draw_kernels(batch, generator, device))

    def __repr__(self) -> str:
        return f"DoublyStochasticChains(S={self.n_states}, alpha={self.alpha:g})"


#: the priors a random-chain spec may name (``spec["prior"]``; absent: "dirichlet")
PRIORS = {"dirichlet": RandomChains, "doubly-stochastic": DoublyStochasticChains}


def _transition_counts(x: torch.Tensor, n_states: int, order: int) -> torch.Tensor:
    """Counts of (context, symbol) pairs among the transitions into positions <= n, for every n:
    ``x.shape + (S^k * S,)`` float64 (as inside :func:`ngram_predictor`)."""
    S, k = n_states, order
    ctx = context_index(x, S, k)
    pair = torch.full_like(x, -1)
    N = x.shape[-1]
    if k == 0:
        pair = x.clone()
    elif N > k:
        pair[..., k:] = ctx[..., k - 1 : N - 1] * S + x[..., k:]
    onehot = torch.zeros(*x.shape, S**k * S, dtype=torch.float64, device=x.device)
    valid = pair >= 0
    onehot.scatter_(-1, pair.clamp(min=0).unsqueeze(-1), valid.unsqueeze(-1).to(torch.float64))
    return onehot.cumsum(-2)


@torch.no_grad()
def posterior_predictive_mc(
    prior: RandomChains, x: torch.Tensor, positions: Sequence[int], n_draws: int = 200_000,
    seed: int = 0, chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Monte-Carlo posterior predictive of any prior over kernels, by self-normalised importance
    sampling from the prior itself.

    ``n_draws`` kernels K_1..K_M are drawn once from ``prior`` (the "posterior-mc" stream of
    ``seed``) and shared by every query. For sequence b of ``x`` (B, N) and position n in
    ``positions``, kernel m gets the weight w_m ~ prod_(s, j) K_m[s, j]^c(s, j), the likelihood
    of the transitions in x_0..x_n (the start law does not depend on the kernel), and the
    estimate of Pr(x_{n+1} = . | x_0..x_n) is sum_m w_m K_m[s_n, .] / sum_m w_m. Returns
    (predictions ``(B, P, S)``, effective sample sizes ``(B, P)`` = 1 / sum_m w_m^2 for the
    normalised weights). For the Dirichlet prior the exact answer is :func:`ngram_predictor`
    (the tests compare them).
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(f"n_draws must be an integer >= 2, got {n_draws!r}")
    S, k = prior.n_states, prior.order
    x = x.long()
    B, N = x.shape
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    if pos.numel() == 0 or int(pos.min()) < max(k - 1, 0) or int(pos.max()) >= N:
        raise ValueError(f"positions must lie in [{max(k - 1, 0)}, {N - 1}], got {list(positions)}")
    kernels = prior.draw_kernels(n_draws, make_generator(seed, "posterior-mc"))  # (M, C, S)
    logk = torch.log(kernels.clamp_min(1e-300)).reshape(n_draws, -1)  # (M, C*S)
    counts = _transition_counts(x, S, k)[:, pos]  # (B, P, C*S)
    ctx = context_index(x, S, k)[:, pos]  # (B, P)
    q_counts = counts.reshape(-1, counts.shape[-1])
    q_ctx = ctx.reshape(-1)
    preds, ess = [], []
    for i in range(0, q_counts.shape[0], chunk):
        logw = q_counts[i : i + chunk] @ logk.T  # (Q, M)
        w = torch.softmax(logw, -1)
        c = q_ctx[i : i + chunk]
        pred = torch.empty(len(c), S, dtype=torch.float64)
        for ctx_value in c.unique().tolist():  # the rows of each query's context
            sel = c == ctx_value
            pred[sel] = w[sel] @ kernels[:, ctx_value]
        preds.append(pred)
        ess.append(1.0 / (w * w).sum(-1))
    P = len(pos)
    return torch.cat(preds).reshape(B, P, S), torch.cat(ess).reshape(B, P)


# --------------------------------------------------------------------------------------------
# Exact references
# --------------------------------------------------------------------------------------------


def context_index(x: torch.Tensor, n_states: int, order: int) -> torch.Tensor:
    """Index of the last ``order`` symbols ending at every position (base S, oldest first);
    -1 where fewer than ``order`` symbols have been seen. Shape of ``x``; int64."""
    N = x.shape[-1]
    ctx = torch.full_like(x, -1, dtype=torch.long)
    if order == 0:
        return torch.zeros_like(x, dtype=torch.long)
    if N < order:
        return ctx
    idx = torch.zeros_like(x[..., order - 1 :], dtype=torch.long)
    for i in range(order):  # loop over the k digits, not over positions
        idx = idx * n_states + x[..., i : N - order + 1 + i]
    ctx[..., order - 1 :] = idx
    return ctx


def ngram_predictor(x: torch.Tensor, n_states: int, order: int, alpha: float) -> torch.Tensor:
    """Add-alpha conditional predictor with context length ``order``: ``x.shape + (S,)``, float64.

    Row n is (c(s, j) + alpha) / (c(s) + S alpha) with s the last ``order`` symbols at n and the
    counts over the transitions inside x_0..x_n (module docstring); uniform where n < order - 1.
    With ``order`` equal to the prior's k and the prior's alpha this is the Bayes predictor.
    Vectorised: one-hot (context, symbol) pairs, cumulated along the sequence.
    """
    S, k, a = _check_prior(n_states, order, alpha)
    x = x.long()
    N = x.shape[-1]
    C = S**k
    ctx = context_index(x, S, k)
    # transition into position i: (context ending at i - 1, x_i), for i >= k
    pair = torch.full_like(x, -1)
    if k == 0:
        pair = x.clone()
    elif N > k:
        pair[..., k:] = ctx[..., k - 1 : N - 1] * S + x[..., k:]
    onehot = torch.zeros(*x.shape, C * S, dtype=torch.float64, device=x.device)
    valid = pair >= 0
    onehot.scatter_(-1, pair.clamp(min=0).unsqueeze(-1), valid.unsqueeze(-1).to(torch.float64))
    counts = onehot.cumsum(-2).reshape(*x.shape, C, S)  # counts after position n
    rows = torch.gather(
        counts, -2, ctx.clamp(min=0).view(*x.shape, 1, 1).expand(*x.shape, 1, S)
    ).squeeze(-2)
    pred = (rows + a) / (rows.sum(-1, keepdim=True) + S * a)
    return torch.where((ctx >= 0).unsqueeze(-1), pred, torch.full_like(pred, 1.0 / S))


def uniform_predictor(x: torch.Tensor, n_states: int) -> torch.Tensor:
    """1/S for every symbol at every position: ``x.shape + (S,)``, float64."""
    return torch.full((*x.shape, n_states), 1.0 / n_states, dtype=torch.float64, device=x.device)


def strategy_orders(order: int) -> tuple[int, ...]:
    """Context lengths of the reference strategies for a prior of order k: 0 (unigram) up to
    max(k, 1) (so a first-order task has unigram and bigram); the uniform strategy comes extra."""
    return tuple(range(max(order, 1) + 1))


def strategy_name(m: int | None) -> str:
    """'uniform' for None, else the n-gram name of context length m ('unigram', 'bigram', ...)."""
    if m is None:
        return "uniform"
    return {0: "unigram", 1: "bigram", 2: "trigram"}.get(m, f"{m + 1}-gram")


def strategy_predictions(
    x: torch.Tensor, n_states: int, alpha: float, orders: Sequence[int]
) -> dict[str, torch.Tensor]:
    """{'uniform': ..., 'unigram': ..., 'bigram': ...}: each ``x.shape + (S,)``, float64."""
    out = {"uniform": uniform_predictor(x, n_states)}
    for m in orders:
        out[strategy_name(m)] = ngram_predictor(x, n_states, m, alpha)
    return out


def expected_loss(probs: torch.Tensor, law: torch.Tensor) -> torch.Tensor:
    """-sum_j law_j ln probs_j per position (the exact conditional loss of a predictor)."""
    logp = torch.log(probs.clamp_min(1e-300))
    return -torch.where(law > 0, law * logp, torch.zeros_like(logp)).sum(-1)


def kl_divergence(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_j p_j (ln p_j - ln q_j) along the last axis; ``q`` given by its logs."""
    logp = torch.log(torch.where(p > 0, p, torch.ones_like(p)))
    return torch.where(p > 0, p * (logp - log_q), torch.zeros_like(p)).sum(-1)


def strategy_kls(
    log_probs: torch.Tensor, x: torch.Tensor, n_states: int, alpha: float, orders: Sequence[int]
) -> dict[str, torch.Tensor]:
    """KL(strategy || model) per strategy, averaged over positions and sequences.

    ``log_probs``: the model's log-probabilities ``(..., N, S)`` for the sequences ``x``
    ``(..., N)``. Returns {name: tensor of the leading shape of ``x`` without its last two axes}
    (e.g. (R,) for ``x`` of shape (R, B, N)).
    """
    lq = log_probs.to(torch.float64)
    out = {}
    for name, p in strategy_predictions(x, n_states, alpha, orders).items():
        out[name] = kl_divergence(p, lq).mean(dim=(-1, -2))
    return out


def model_log_probs(logits: torch.Tensor, n_states: int) -> torch.Tensor:
    """Log-probabilities ``(..., N, S)`` (float64) from the model's logits: ``(..., N, S)`` for
    S > 2; for S = 2 the binary model's ``(..., N)`` logits of symbol 1 (see model.py)."""
    lg = logits.to(torch.float64)
    if n_states == 2:
        sp = torch.nn.functional.softplus
        return torch.stack([-sp(lg), -sp(-lg)], -1)
    return torch.log_softmax(lg, -1)


def redundancy_rate(n_states: int, order: int, n: np.ndarray | float) -> np.ndarray | float:
    """(S - 1) S^k / (2 n): the large-n excess of the Bayes risk over the chain's entropy."""
    S, k, _ = _check_prior(n_states, order, 1.0)
    return (S - 1) * S**k / (2 * np.asarray(n, dtype=float))


@torch.no_grad()
def bayes_risk(
    prior: RandomChains, length: int, n_sequences: int = 20_000, seed: int = 0, chunk: int = 2000
) -> dict[str, np.ndarray]:
    """Monte-Carlo per-position losses under the prior, exact over the next symbol.

    Returns float64 arrays over positions n = 0..length-1 (predicting x_{n+1}): ``bayes`` (the
    Bayes predictor), ``entropy`` (the entropy of the true next-symbol law: the loss of an oracle
    that knows the drawn kernel), one entry per strategy (``uniform``, ``unigram``, ``bigram``,
    ...; the Bayes predictor is the strategy of context length k), ``bayes_se``, the standard
    error of ``bayes`` over sequences, and ``bayes_mean_se`` (a 1-element array), the standard
    error of the Bayes loss averaged over the positions of a sequence. Sequences come from the
    "bayes-risk" stream of ``seed``.
    """
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, int) or n_sequences < 2:
        raise ValueError(f"n_sequences must be an integer >= 2, got {n_sequences!r}")
    gen = make_generator(seed, "bayes-risk")
    S, k, a = prior.n_states, prior.order, prior.alpha
    orders = strategy_orders(k)
    sums: dict[str, torch.Tensor] = {}
    sq = torch.zeros(length, dtype=torch.float64)
    seq_sum = seq_sq = 0.0
    done = 0
    while done < n_sequences:
        b = min(chunk, n_sequences - done)
        x, kern = prior.sample(b, length + 1, gen)
        x = x[:, :-1]
        law = prior.next_law(x, kern)
        losses = {"bayes": expected_loss(ngram_predictor(x, S, k, a), law)}
        losses["entropy"] = expected_loss(law, law)
        for name, p in strategy_predictions(x, S, a, orders).items():
            losses[name] = expected_loss(p, law)
        for name, v in losses.items():
            sums[name] = sums.get(name, 0) + v.sum(0)
        sq += losses["bayes"].pow(2).sum(0)
        per_seq = losses["bayes"].mean(1)
        seq_sum, seq_sq = seq_sum + float(per_seq.sum()), seq_sq + float(per_seq.pow(2).sum())
        done += b
    out = {name: (v / n_sequences).numpy() for name, v in sums.items()}
    var = (sq.numpy() / n_sequences - out["bayes"] ** 2) * n_sequences / (n_sequences - 1)
    out["bayes_se"] = np.sqrt(np.maximum(var, 0) / n_sequences)
    m = seq_sum / n_sequences
    var_seq = max(seq_sq / n_sequences - m * m, 0.0) * n_sequences / (n_sequences - 1)
    out["bayes_mean_se"] = np.array([np.sqrt(var_seq / n_sequences)])
    return out


# --------------------------------------------------------------------------------------------
# Training data with exact references (used by markovformer.train)
# --------------------------------------------------------------------------------------------


class InContextSource:
    """Fresh sequences from the prior for every run (from that run's "data" stream), with the
    exact losses the trainer logs and the in-context evaluation at chosen steps.

    * ``exact_losses``: cross-entropy and KL of the model against the *drawn* kernel's next-symbol
      law (same mean as the sampled loss, less variance);
    * ``extra_metrics``: ``bayes_loss``, the same exact loss for the Bayes predictor on the same
      batch, so ``exact_loss - bayes_loss`` is the model's gap to the floor of the task;
    * ``evaluate``: on a fixed probe batch (the "probe" stream), KL(strategy || model) per
      strategy, the exact and Bayes losses, the previous-token and induction scores of every head,
      and, if ``map_len > 0``, the attention maps of the first probe sequence's first ``map_len``
      positions (float16).
    """

    extra_metric_names = ("bayes_loss",)

    def __init__(self, prior: RandomChains, R, model_config, batch, seeds, device) -> None:
        if model_config.n_states != prior.n_states:
            raise ValueError(
                f"the model has n_states={model_config.n_states} but the prior has "
                f"S={prior.n_states}"
            )
        self.prior, self.R, self.B, self.N = prior, R, batch, model_config.seq_len
        self.device, self.seeds = device, seeds
        self.gens = [make_generator(s, "data", device) for s in seeds]
        self._kernels: torch.Tensor | None = None
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None

    def _sample(self, gens, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ks = zip(
            *(self.prior.sample(batch, self.N + 1, g, self.device) for g in gens), strict=True
        )
        return torch.stack(xs), torch.stack(ks)  # (R, B, N + 1), (R, B, C, S)

    def next_batch(self) -> torch.Tensor:
        x, self._kernels = self._sample(self.gens, self.B)
        return x

    def probe_batch(self, batch: int) -> torch.Tensor:
        if self._probe is None or self._probe[0].shape[1] != batch:
            gens = [make_generator(s, "probe", self.device) for s in self.seeds]
            x, kern = self._sample(gens, batch)
            self._probe = (x[..., :-1], kern)
        return self._probe[0]

    def _losses(self, inp, logits, kernels):
        law = self.prior.next_law(inp, kernels)
        logq = model_log_probs(logits, self.prior.n_states)
        ce = -torch.where(law > 0, law * logq, torch.zeros_like(law)).sum(-1)
        ent = expected_loss(law, law)
        pr = self.prior
        bayes = expected_loss(ngram_predictor(inp, pr.n_states, pr.order, pr.alpha), law)
        return ce, ent, bayes, logq

    def exact_losses(self, inp: torch.Tensor, logits: torch.Tensor):
        """Per-run exact conditional loss and mean KL to the drawn kernel, each (R,)."""
        ce, ent, bayes, _ = self._losses(inp, logits, self._kernels)
        self._bayes = bayes.mean(dim=(1, 2))
        return ce.mean(dim=(1, 2)).to(logits.dtype), (ce - ent).mean(dim=(1, 2)).to(logits.dtype)

    def extra_metrics(self) -> dict[str, torch.Tensor]:
        """Metrics of the batch last passed to :meth:`exact_losses`, each (R,)."""
        return {"bayes_loss": self._bayes.float()}

    @torch.no_grad()
    def evaluate(self, model, batch: int, map_len: int) -> dict[str, np.ndarray]:
        """The in-context evaluation of every run on the probe batch (see the class docstring)."""
        x = self.probe_batch(batch)
        kern = self._probe[1]
        logits, atts = model(x, return_attention=True)
        ce, _, bayes, logq = self._losses(x, logits, kern)
        pr = self.prior
        out = {
            f"kl/{name}": v.cpu().numpy()
            for name, v in strategy_kls(
                logq, x, pr.n_states, pr.alpha, strategy_orders(pr.order)
            ).items()
        }
        out["exact_loss"] = ce.mean(dim=(1, 2)).cpu().numpy()
        out["bayes_loss"] = bayes.mean(dim=(1, 2)).cpu().numpy()
        heads = [attention_per_head(a, model.config.n_heads) for a in atts]  # (R, B, H, N, N)
        out["prev_token"] = np.stack(
            [previous_token_score(a).mean(1).cpu().numpy() for a in heads], 1
        )  # (R, L, H)
        out["induction"] = np.stack(
            [
                induction_score(a, x.unsqueeze(2), order=max(pr.order, 1)).nanmean(1).cpu().numpy()
                for a in heads
            ],
            1,
        )  # (R, L, H)
        uniform = uniform_attention(x.shape[-1]).to(x.device)
        out["induction_uniform"] = (
            induction_score(uniform, x, order=max(pr.order, 1)).nanmean(1).cpu().numpy()
        )  # (R,): the chance level of the induction score on this batch
        if map_len:
            m = min(map_len, x.shape[-1])
            out["map_x"] = x[:, 0, :m].cpu().numpy().astype(np.int8)  # (R, m)
            out["maps"] = np.stack(
                [a[:, 0, :, :m, :m].cpu().numpy().astype(np.float16) for a in heads], 1
            )  # (R, L, H, m, m)
        return out
