"""Markov chains as a data model for next-token prediction.

This module implements the data side of Makkuva et al., *Attention with Markov* (AwM) and
*Local to Global* (L2G): binary first-order chains with switching probabilities (p, q), general
S-state chains of order k, the symmetric S-state chain and the lag-k chain.

Exact quantities are computed in float64 numpy; sampling and losses work on torch tensors.
All losses are in nats.

Conventions
-----------
* A kernel of an order-k chain on S symbols is an array of shape ``(S,) * k + (S,)``:
  ``kernel[c_1, ..., c_k, s] = Pr(x_{n+1} = s | x_{n-k+1} = c_1, ..., x_n = c_k)``.
* For a binary chain, ``p = Pr(1 | 0)`` and ``q = Pr(0 | 1)``; the kernel is
  ``[[1 - p, p], [q, 1 - q]]``.
* Sequences start from the stationary law (of the last k symbols for an order-k chain).
* Predictions at position n (0-based) are for the symbol at position n + 1. The *exact conditional
  loss* compares them with the true law of that symbol given the prefix, so every position,
  including the last, has a target.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "MarkovChain",
    "BinaryChain",
    "LagChain",
    "SymmetricChain",
    "binary_entropy",
    "binary_entropy_rate",
    "binary_unigram_loss",
    "running_transition_estimates",
    "entropy",
    "symmetric_chain",
    "chain_from_spec",
    "random_chain",
    "sample_binary_chains",
    "binary_chains_from_uniforms",
    "binary_next_prob",
    "binary_exact_loss",
    "transition_counts",
]

_ROW_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# Entropies (numpy, nats)
# --------------------------------------------------------------------------------------------


def binary_entropy(t: float | np.ndarray) -> float | np.ndarray:
    """h(t) = -t ln t - (1-t) ln(1-t) in nats, with 0 ln 0 = 0. Vectorised over arrays."""
    t = np.asarray(t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(t > 0, -t * np.log(np.where(t > 0, t, 1.0)), 0.0)
        b = np.where(t < 1, -(1 - t) * np.log(np.where(t < 1, 1 - t, 1.0)), 0.0)
    out = a + b
    return float(out) if out.ndim == 0 else out


def entropy(prob: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Shannon entropy in nats of distributions along ``axis`` (0 ln 0 = 0)."""
    prob = np.asarray(prob, dtype=float)
    logs = np.log(np.where(prob > 0, prob, 1.0))
    out = -(prob * logs).sum(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def binary_entropy_rate(p: float | np.ndarray, q: float | np.ndarray) -> float | np.ndarray:
    """Entropy rate (q h(p) + p h(q)) / (p + q) of binary chains, vectorised (the bigram loss)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    out = (q * binary_entropy(p) + p * binary_entropy(q)) / (p + q)
    return float(out) if np.ndim(out) == 0 else out


def binary_unigram_loss(p: float | np.ndarray, q: float | np.ndarray) -> float | np.ndarray:
    """Stationary entropy h(p / (p + q)) of binary chains, vectorised (the unigram loss)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    return binary_entropy(p / (p + q))


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number in [0, 1], got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a real number in [0, 1], got {value!r}")
    return v


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_binary_pq(p: object, q: object) -> tuple[float, float]:
    p = _check_probability("p", p)
    q = _check_probability("q", q)
    if p + q == 0.0:
        raise ValueError(
            "p + q must be > 0 (p = q = 0 makes both states absorbing and the stationary law "
            f"is not unique), got p={p!r}, q={q!r}"
        )
    return p, q


# --------------------------------------------------------------------------------------------
# General S-state chains of order k
# --------------------------------------------------------------------------------------------


class MarkovChain:
    """A stationary Markov chain of order ``k`` on ``S`` symbols.

    Parameters
    ----------
    kernel:
        Array of shape ``(S,) * k + (S,)`` whose last axis sums to one (see module docstring).

    Attributes
    ----------
    kernel : np.ndarray
        The transition kernel (float64, read-only).
    n_states : int
        The number of symbols ``S``.
    order : int
        The order ``k``.
    stationary_contexts : np.ndarray
        Stationary law of the last ``k`` symbols, shape ``(S,) * k``.
    stationary : np.ndarray
        Stationary law of one symbol, shape ``(S,)``.
    entropy_rate : float
        ``sum_c pi(c) H(P(. | c))``: the smallest achievable next-symbol loss (the *bigram* loss
        for a first-order chain; the global minimum of the L2G landscape).
    unigram_loss : float
        ``H(stationary)``: the best loss of a predictor that ignores the context (the bad local
        minimum of the L2G landscape).
    """

    def __init__(self, kernel: np.ndarray | Sequence) -> None:
        try:
            k = np.array(kernel, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"kernel must be a numeric array, got {kernel!r}") from exc
        if k.ndim < 2:
            raise ValueError(
                f"kernel must have shape (S,)*k + (S,) with k >= 1, got shape {k.shape}"
            )
        S = k.shape[-1]
        if S < 2 or any(n != S for n in k.shape):
            raise ValueError(
                f"kernel must have shape (S,)*k + (S,) with S >= 2 and all axes equal, "
                f"got shape {k.shape}"
            )
        if not np.all(np.isfinite(k)):
            raise ValueError("kernel entries must be finite, got NaN or infinity")
        if np.any(k < 0):
            raise ValueError(f"kernel entries must be >= 0, got minimum {k.min()!r}")
        sums = k.sum(axis=-1)
        bad = np.abs(sums - 1.0) > _ROW_TOL
        if np.any(bad):
            worst = sums[bad].flat[0]
            raise ValueError(
                f"kernel rows must sum to 1 (stochastic), got a row summing to {worst!r}"
            )
        k = k / sums[..., None]
        k.setflags(write=False)
        self.kernel = k
        self.n_states = S
        self.order = k.ndim - 1
        self.stationary_contexts = self._stationary_contexts()
        self.stationary_contexts.setflags(write=False)

    # -- exact quantities ------------------------------------------------------------------

    def _lifted_transition(self) -> np.ndarray:
        """Transition matrix of the chain on contexts (the last k symbols), shape (S^k, S^k)."""
        S, k = self.n_states, self.order
        n_ctx = S**k
        flat = self.kernel.reshape(n_ctx, S)
        T = np.zeros((n_ctx, n_ctx))
        for c in range(n_ctx):
            shifted = (c * S) % n_ctx  # drop the oldest symbol, append the new one
            T[c, shifted : shifted + S] = flat[c]
        return T

    def _stationary_contexts(self) -> np.ndarray:
        T = self._lifted_transition()
        n = T.shape[0]
        A = np.vstack([T.T - np.eye(n), np.ones((1, n))])
        rank = np.linalg.matrix_rank(T.T - np.eye(n), tol=1e-10)
        if rank < n - 1:
            raise ValueError(
                "kernel has more than one stationary law (the chain is reducible with several "
                "closed classes); give a kernel with a unique stationary law"
            )
        rhs = np.zeros(n + 1)
        rhs[-1] = 1.0
        pi, *_ = np.linalg.lstsq(A, rhs, rcond=None)
        pi = np.clip(pi, 0.0, None)
        pi /= pi.sum()
        return pi.reshape((self.n_states,) * self.order)

    @property
    def stationary(self) -> np.ndarray:
        pi = self.stationary_contexts
        return pi.reshape(-1, self.n_states).sum(axis=0) if self.order > 1 else pi.copy()

    @property
    def entropy_rate(self) -> float:
        return float((self.stationary_contexts * entropy(self.kernel)).sum())

    @property
    def unigram_loss(self) -> float:
        return float(entropy(self.stationary))

    @property
    def bigram_loss(self) -> float:
        """Alias of :attr:`entropy_rate` (the name used in the papers for first-order chains)."""
        return self.entropy_rate

    def ngram_law(self, n: int) -> np.ndarray:
        """Stationary law of n consecutive symbols, shape ``(S,) * n``."""
        n = _check_positive_int("n", n)
        k = self.order
        if n <= k:  # marginal of the context law (stationary, so any window of n works)
            return self.stationary_contexts.sum(axis=tuple(range(k - n)))
        law = self.stationary_contexts
        for m in range(k, n):  # append x_{m+1}, whose law depends on the last k symbols
            law = law[..., None] * self.kernel.reshape((1,) * (m - k) + self.kernel.shape)
        return law

    def context_loss(self, m: int) -> float:
        """Best expected loss of a predictor that sees only the last ``m`` symbols (nats).

        ``H(X_{n+1} | X_{n-m+1}, ..., X_n)`` at stationarity: ``m = 0`` gives the unigram loss and
        ``m >= order`` the entropy rate; the sequence decreases in ``m``.
        """
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise ValueError(f"m must be an integer >= 0, got {m!r}")
        if m == 0:
            return self.unigram_loss
        if m >= self.order:
            return self.entropy_rate
        return float(
            entropy(self.ngram_law(m + 1).reshape(-1)) - entropy(self.ngram_law(m).reshape(-1))
        )

    def prefix_laws(self) -> list[np.ndarray]:
        """Exact laws of x_{j+1} given x_0..x_j for the first k-1 positions j.

        Entry j has shape ``(S,) * (j + 1) + (S,)``; from position k-1 on the kernel applies.
        """
        out = []
        pi = self.stationary_contexts
        for j in range(self.order - 1):
            m = pi.sum(axis=tuple(range(j + 2, self.order)))  # law of x_0..x_{j+1}
            tot = m.sum(axis=-1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                cond = np.where(tot > 0, m / np.where(tot > 0, tot, 1.0), 1.0 / self.n_states)
            out.append(cond)
        return out

    # -- sampling --------------------------------------------------------------------------

    def sample(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Sample ``batch`` sequences of ``length`` symbols, started from the stationary law.

        Randomness comes only from ``generator`` (a fresh default generator is *not* seeded for
        you: pass one for reproducible samples). Returns an int64 tensor (batch, length).
        """
        batch = _check_positive_int("batch", batch)
        length = _check_positive_int("length", length)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        S, k = self.n_states, self.order
        u = torch.rand(batch, length, generator=generator, device=gen_device, dtype=torch.float64)
        x = torch.empty(batch, length, dtype=torch.long, device=gen_device)
        # first min(k, length) symbols: one draw from the stationary law of contexts
        pi = torch.tensor(self.stationary_contexts.reshape(-1), device=gen_device)
        ctx = _inverse_cdf(torch.cumsum(pi, 0).expand(batch, -1), u[:, 0])
        digits = [(ctx // S ** (k - 1 - i)) % S for i in range(k)]
        for i in range(min(k, length)):
            x[:, i] = digits[i]
        if length > k:
            cdf = torch.cumsum(torch.tensor(self.kernel.reshape(-1, S), device=gen_device), -1)
            n_ctx = S**k
            for n in range(k, length):  # vectorised over the batch
                x[:, n] = _inverse_cdf(cdf[ctx], u[:, n])
                ctx = (ctx * S + x[:, n]) % n_ctx
        return x if device is None else x.to(device)

    # -- exact conditional laws and losses -------------------------------------------------

    def next_symbol_law(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """True law of x_{n+1} given x_0..x_n for every position n: shape ``x.shape + (S,)``."""
        x = _check_sequences(x, self.n_states)
        S, k = self.n_states, self.order
        N = x.shape[-1]
        kern = torch.tensor(self.kernel.reshape(-1, S), dtype=dtype, device=x.device)
        out = torch.empty(*x.shape, S, dtype=dtype, device=x.device)
        if N >= k:
            ctx = torch.zeros_like(x[..., k - 1 :])
            for i in range(k):
                ctx = ctx * S + x[..., i : N - k + 1 + i]
            out[..., k - 1 :, :] = kern[ctx]
        for j, law in enumerate(self.prefix_laws()):
            if j >= N:
                break
            law_t = torch.as_tensor(law.reshape(-1, S), dtype=dtype, device=x.device)
            idx = torch.zeros_like(x[..., 0])
            for i in range(j + 1):
                idx = idx * S + x[..., i]
            out[..., j, :] = law_t[idx]
        return out

    def exact_conditional_loss(
        self,
        x: torch.Tensor,
        *,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Expected cross-entropy of the predictions under the true next-symbol law.

        ``logits`` / ``probs`` have shape ``x.shape + (S,)``; for a binary chain they may also
        have shape ``x.shape`` and then mean the logit / probability of symbol 1. Its mean over
        sequences from the chain equals the mean Monte-Carlo cross-entropy against the sampled next
        symbols, with lower variance (the sampled symbol is averaged out exactly).
        """
        target = self.next_symbol_law(x, dtype=_pred_dtype(logits, probs))
        logp = _log_probs(self.n_states, x, logits, probs)
        loss = -_xlogy(target, logp).sum(-1)
        return _reduce(loss, reduction)

    def excess_loss(
        self,
        x: torch.Tensor,
        *,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """KL(true next-symbol law || prediction) per position (>= 0).

        For a first-order chain started at stationarity its expectation equals the expected
        cross-entropy minus :attr:`entropy_rate`.
        """
        target = self.next_symbol_law(x, dtype=_pred_dtype(logits, probs))
        logp = _log_probs(self.n_states, x, logits, probs)
        logt = torch.log(torch.where(target > 0, target, torch.ones_like(target)))
        kl = (_xlogy(target, logt) - _xlogy(target, logp)).sum(-1)
        return _reduce(kl, reduction)

    def spec(self) -> dict:
        """A JSON-able description from which :func:`chain_from_spec` rebuilds the chain."""
        return {"kind": "kernel", "kernel": self.kernel.tolist()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_states={self.n_states}, order={self.order})"


# --------------------------------------------------------------------------------------------
# Binary first-order chains
# --------------------------------------------------------------------------------------------


class BinaryChain(MarkovChain):
    """Binary first-order chain with ``p = Pr(1 | 0)`` and ``q = Pr(0 | 1)`` (AwM, L2G).

    ``p + q > 1`` is a *switching* chain (negative lag-1 correlation ``1 - p - q``), ``p + q < 1``
    a *sticky* one, and ``p + q = 1`` is i.i.d. Bernoulli(p), where the unigram and bigram losses
    coincide. Allowed values: p, q in [0, 1] with p + q > 0; p = 0 or q = 0 make a state
    absorbing and p = q = 1 is the deterministic alternating chain.
    """

    def __init__(self, p: float, q: float) -> None:
        p, q = _check_binary_pq(p, q)
        self.p, self.q = p, q
        super().__init__(np.array([[1 - p, p], [q, 1 - q]]))

    def _stationary_contexts(self) -> np.ndarray:
        return np.array([self.q, self.p]) / (self.p + self.q)

    @property
    def entropy_rate(self) -> float:
        return float(binary_entropy_rate(self.p, self.q))

    @property
    def unigram_loss(self) -> float:
        return float(binary_unigram_loss(self.p, self.q))

    @property
    def correlation(self) -> float:
        """Lag-1 correlation = second eigenvalue of the kernel, ``1 - p - q``."""
        return 1.0 - self.p - self.q

    @property
    def regime(self) -> str:
        """'switching' (p + q > 1), 'sticky' (p + q < 1) or 'iid' (p + q = 1)."""
        s = self.p + self.q
        return (
            "iid" if math.isclose(s, 1.0, abs_tol=1e-12) else ("switching" if s > 1 else "sticky")
        )

    def sample(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Vectorised sampler: a binary chain is a sequence of alternating geometric runs."""
        batch = _check_positive_int("batch", batch)
        length = _check_positive_int("length", length)
        x = sample_binary_chains(self.p, self.q, batch, length, generator=generator)[0]
        return x if device is None else x.to(device)

    def prob_one(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """True Pr(x_{n+1} = 1 | x_n) at every position: p where x_n = 0, 1 - q where x_n = 1."""
        x = _check_sequences(x, 2)
        return binary_next_prob(x, self.p, self.q, dtype=dtype)

    def next_symbol_law(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        t1 = self.prob_one(x, dtype)
        return torch.stack([1 - t1, t1], dim=-1)

    def spec(self) -> dict:
        return {"kind": "binary", "p": self.p, "q": self.q}

    def __repr__(self) -> str:
        return f"BinaryChain(p={self.p:g}, q={self.q:g})"


class LagChain(MarkovChain):
    """Binary chain where x_{n+1} depends only on x_{n+1-lag}, through the kernel P(p, q).

    The positions in each residue class modulo ``lag`` form independent first-order chains with
    switching probabilities (p, q), so the stationary law, entropy rate and unigram loss are those
    of :class:`BinaryChain` (p, q). As an order-``lag`` chain its kernel depends only on the
    oldest symbol of the context.
    """

    def __init__(self, p: float, q: float, lag: int) -> None:
        p, q = _check_binary_pq(p, q)
        lag = _check_positive_int("lag", lag)
        self.p, self.q, self.lag = p, q, lag
        base = np.array([[1 - p, p], [q, 1 - q]])
        kernel = np.broadcast_to(base.reshape((2,) + (1,) * (lag - 1) + (2,)), (2,) * (lag + 1))
        super().__init__(np.ascontiguousarray(kernel))

    def _stationary_contexts(self) -> np.ndarray:
        pi = np.array([self.q, self.p]) / (self.p + self.q)
        out = pi
        for _ in range(self.lag - 1):
            out = np.multiply.outer(out, pi)
        return out

    def sample(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Interleave ``lag`` independent binary chains (vectorised, no loop over positions)."""
        batch = _check_positive_int("batch", batch)
        length = _check_positive_int("length", length)
        m = -(-length // self.lag)
        sub = sample_binary_chains(self.p, self.q, batch * self.lag, m, generator=generator)[0]
        x = sub.reshape(batch, self.lag, m).transpose(1, 2).reshape(batch, m * self.lag)
        x = x[:, :length].contiguous()
        return x if device is None else x.to(device)

    def spec(self) -> dict:
        return {"kind": "lag", "p": self.p, "q": self.q, "lag": self.lag}

    def __repr__(self) -> str:
        return f"LagChain(p={self.p:g}, q={self.q:g}, lag={self.lag})"


class SymmetricChain(MarkovChain):
    """The symmetric S-state chain of AwM: stay with probability 1 - p, else move uniformly.

    Its stationary law is uniform, its entropy rate (bigram loss) is h(p) + p ln(S - 1) and its
    unigram loss is ln S. Sampling is vectorised: x_{n+1} = x_n + J_n O_n (mod S) with jump
    indicators J_n ~ Bernoulli(p) and offsets O_n uniform on {1, ..., S - 1}.
    """

    def __init__(self, n_states: int, p: float) -> None:
        S = _check_positive_int("n_states", n_states, minimum=2)
        p = _check_probability("p", p)
        self.p = p
        P = np.full((S, S), p / (S - 1))
        np.fill_diagonal(P, 1 - p)
        super().__init__(P)

    def _stationary_contexts(self) -> np.ndarray:
        return np.full(self.n_states, 1.0 / self.n_states)

    def sample(
        self,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        batch = _check_positive_int("batch", batch)
        length = _check_positive_int("length", length)
        dev = generator.device if generator is not None else torch.device("cpu")
        S = self.n_states
        u = torch.rand(batch, 2 * length, generator=generator, device=dev, dtype=torch.float64)
        x0 = (u[:, :1] * S).long().clamp_(max=S - 1)
        jump = u[:, 1:length] < self.p
        offset = 1 + (u[:, length + 1 :] * (S - 1)).long().clamp_(max=S - 2)
        steps = torch.cumsum(jump.long() * offset, dim=1)
        x = torch.cat([x0, (x0 + steps) % S], dim=1)
        return x if device is None else x.to(device)

    def spec(self) -> dict:
        return {"kind": "symmetric", "n_states": self.n_states, "p": self.p}

    def __repr__(self) -> str:
        return f"SymmetricChain(n_states={self.n_states}, p={self.p:g})"


def symmetric_chain(n_states: int, p: float) -> SymmetricChain:
    """The symmetric S-state chain (see :class:`SymmetricChain`)."""
    return SymmetricChain(n_states, p)


def chain_from_spec(spec: dict) -> MarkovChain:
    """Rebuild a chain from :meth:`MarkovChain.spec`."""
    kinds = {
        "binary": lambda d: BinaryChain(d["p"], d["q"]),
        "lag": lambda d: LagChain(d["p"], d["q"], d["lag"]),
        "symmetric": lambda d: SymmetricChain(d["n_states"], d["p"]),
        "kernel": lambda d: MarkovChain(np.asarray(d["kernel"])),
    }
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in kinds:
        raise ValueError(f"unknown chain kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](spec)


def random_chain(
    n_states: int, order: int = 1, *, seed: int = 0, concentration: float = 1.0
) -> MarkovChain:
    """A chain whose kernel rows are drawn from Dirichlet(concentration), seeded by ``seed``."""
    S = _check_positive_int("n_states", n_states, minimum=2)
    k = _check_positive_int("order", order)
    if not (isinstance(concentration, (int, float)) and concentration > 0):
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    rng = np.random.default_rng(seed)
    kernel = rng.dirichlet(np.full(S, float(concentration)), size=(S,) * k)
    return MarkovChain(kernel)


# --------------------------------------------------------------------------------------------
# Tensor-level functions (also used by the training engine with per-run chains)
# --------------------------------------------------------------------------------------------


def sample_binary_chains(
    p: float | torch.Tensor,
    q: float | torch.Tensor,
    batch: int,
    length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample binary chains for one or several (p, q) at once, without a loop over positions.

    ``p`` and ``q`` are floats or 1-D tensors of R values; the result has shape
    ``(R, batch, length)`` (R = 1 for floats) on the generator's device.

    A binary chain is a sequence of alternating runs: a run in state 0 lasts Geometric(p) steps
    and a run in state 1 Geometric(q) steps. We draw the start from the stationary law, then
    ``length`` run lengths per sequence (always enough, since every run has length >= 1), and
    read the state of position n off the parity of the run it falls in.
    """
    dev = generator.device if generator is not None else torch.device("cpu")
    R = len(_as_tuple(p))
    u = torch.rand(R, batch, length + 1, generator=generator, device=dev)
    return binary_chains_from_uniforms(u, p, q)


def binary_chains_from_uniforms(
    u: torch.Tensor, p: float | torch.Tensor, q: float | torch.Tensor
) -> torch.Tensor:
    """The deterministic part of :func:`sample_binary_chains`.

    ``u`` holds uniforms in [0, 1) of shape ``(R, batch, length + 1)``: ``u[..., 0]`` picks the
    first symbol and ``u[..., 1:]`` the run lengths. Returns int64 ``(R, batch, length)``. The
    trainer draws each run's uniforms from that run's own generator and transforms all runs here
    in one vectorised call.
    """
    if u.ndim != 3 or u.shape[-1] < 2:
        raise ValueError(f"u must have shape (R, batch, length + 1), got {tuple(u.shape)}")
    R, batch, length = u.shape[0], u.shape[1], u.shape[2] - 1
    c, pi1, absorbing = _run_scales(_as_tuple(p), _as_tuple(q), length, str(u.device))
    if c.shape[0] != R:
        raise ValueError(f"u has {R} runs but {c.shape[0]} chains (p, q) were given")
    u = u.to(torch.float32)
    x0 = (u[..., :1] < pi1).long()  # Pr(x_0 = 1) = pi_1 = p / (p + q)
    expo = torch.log1p(-u[..., 1:]).neg_()  # Exp(1) variables
    if absorbing:
        expo.clamp_(min=1e-30)  # avoid 0 * inf for an absorbing state
    scale = torch.where(x0.bool(), c[:, 1:2], c[:, 0:1])  # (R, batch, L)
    g = expo.mul_(scale).clamp_(max=length).long()  # truncation = floor for values >= 0
    ends = torch.cumsum(g + 1, dim=-1)  # index of the first symbol after each run
    # mark where runs 1, 2, ... start; a cumulative sum gives the run index of every position
    starts = torch.zeros(R, batch, length + 1, dtype=torch.int32, device=u.device)
    idx = ends[..., :-1].clamp_(max=length)  # strictly increasing below `length`: no collisions
    starts.scatter_(-1, idx, torch.ones_like(idx, dtype=torch.int32))  # 3x faster than a scalar
    run_of_pos = torch.cumsum(starts[..., :length], dim=-1)
    return x0 ^ (run_of_pos & 1)


def _as_tuple(v: float | torch.Tensor | np.ndarray) -> tuple[float, ...]:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"p and q must be scalars or 1-D, got shape {arr.shape}")
    return tuple(np.atleast_1d(arr).tolist())


@functools.lru_cache(maxsize=64)
def _run_scales(
    p: tuple[float, ...], q: tuple[float, ...], length: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validated per-run scales c(r) = -1 / ln(1 - r) for runs 0..length-1 and pi_1, cached.

    A Geometric(r) length on {1, 2, ...} is 1 + floor(c(r) * Exp(1)); r = 0 never leaves its
    state (c = inf) and r = 1 always leaves after one step (c = 0).
    """
    p_np, q_np = np.array(p), np.array(q)
    if p_np.shape != q_np.shape:
        raise ValueError(f"p and q must have the same length, got {len(p)} and {len(q)}")
    for name, v in (("p", p_np), ("q", q_np)):
        if not np.all(np.isfinite(v) & (v >= 0) & (v <= 1)):
            raise ValueError(f"{name} must lie in [0, 1], got {v.tolist()}")
    if np.any(p_np + q_np == 0):
        raise ValueError(
            "p + q must be > 0 for every chain (p = q = 0 has no unique stationary law)"
        )
    with np.errstate(divide="ignore"):
        c_p, c_q = -1.0 / np.log1p(-p_np), -1.0 / np.log1p(-q_np)
    c_p[p_np == 0], c_q[q_np == 0] = np.inf, np.inf
    c_p[p_np == 1], c_q[q_np == 1] = 0.0, 0.0
    even = (np.arange(length) % 2 == 0)[None, :]
    from_0 = np.where(even, c_p[:, None], c_q[:, None])  # runs 0, 1, 2, ... when x_0 = 0
    from_1 = np.where(even, c_q[:, None], c_p[:, None])  # ... and when x_0 = 1
    c = torch.tensor(np.stack([from_0, from_1], 1), dtype=torch.float32, device=device)
    pi1 = torch.tensor(p_np / (p_np + q_np), dtype=torch.float32, device=device).view(-1, 1, 1)
    return c, pi1, bool(np.any(p_np == 0) or np.any(q_np == 0))


def binary_next_prob(
    x: torch.Tensor,
    p: float | torch.Tensor,
    q: float | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pr(x_{n+1} = 1 | x_n) = p if x_n = 0 else 1 - q, broadcasting tensors p, q against x."""
    p_t = torch.as_tensor(p, dtype=dtype, device=x.device)
    q_t = torch.as_tensor(q, dtype=dtype, device=x.device)
    return torch.where(x.bool(), 1 - q_t, p_t).to(dtype)


def binary_exact_loss(
    x: torch.Tensor,
    logits: torch.Tensor,
    p: float | torch.Tensor,
    q: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position exact conditional cross-entropy and KL for logits of Pr(x_{n+1} = 1).

    Returns ``(cross_entropy, kl)``, each of the shape of ``logits`` (broadcast with ``x``).
    Uses log-sigmoid for stability, so very confident logits do not overflow.
    """
    t1 = binary_next_prob(x, p, q, dtype=logits.dtype)
    ce = t1 * torch.nn.functional.softplus(-logits) + (1 - t1) * torch.nn.functional.softplus(
        logits
    )
    h = _bernoulli_entropy_t(t1)
    return ce, ce - h


def _bernoulli_entropy_t(t: torch.Tensor) -> torch.Tensor:
    one = torch.ones_like(t)
    a = torch.where(t > 0, -t * torch.log(torch.where(t > 0, t, one)), torch.zeros_like(t))
    b = torch.where(
        t < 1, -(1 - t) * torch.log(torch.where(t < 1, 1 - t, one)), torch.zeros_like(t)
    )
    return a + b


def transition_counts(x: torch.Tensor, n_states: int, order: int = 1) -> np.ndarray:
    """Counts of (context, next symbol) in sequences ``x``: array of shape (S,)*order + (S,)."""
    x = _check_sequences(x, n_states)
    S, k = n_states, _check_positive_int("order", order)
    if x.shape[-1] <= k:
        return np.zeros((S,) * (k + 1), dtype=np.int64)
    idx = torch.zeros_like(x[..., k:])
    for i in range(k + 1):
        idx = idx * S + x[..., i : x.shape[-1] - k + i]
    counts = torch.bincount(idx.reshape(-1).cpu(), minlength=S ** (k + 1))
    return counts.numpy().reshape((S,) * (k + 1))


def running_transition_estimates(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Running estimates of p = Pr(1|0) and q = Pr(0|1) along one binary sequence.

    Returns arrays indexed by the number of observed transitions t = 1..len(x)-1: ``t``,
    ``p_hat``, ``q_hat`` (NaN until the state has been visited) and ``visits_0``, ``visits_1``
    (how many transitions left each state so far), for convergence plots.
    """
    x = _check_sequences(x, 2).reshape(-1).cpu().numpy()
    if x.size < 2:
        raise ValueError(f"need a sequence of length >= 2, got {x.size}")
    prev, nxt = x[:-1], x[1:]
    v0, v1 = np.cumsum(prev == 0), np.cumsum(prev == 1)
    n01, n10 = np.cumsum((prev == 0) & (nxt == 1)), np.cumsum((prev == 1) & (nxt == 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_hat = np.where(v0 > 0, n01 / np.maximum(v0, 1), np.nan)
        q_hat = np.where(v1 > 0, n10 / np.maximum(v1, 1), np.nan)
    t = np.arange(1, x.size)
    return {"t": t, "p_hat": p_hat, "q_hat": q_hat, "visits_0": v0, "visits_1": v1}


# --------------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------------


def _inverse_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index of the first cdf entry above u (row-wise); clamps round-off past the last entry."""
    idx = (u.unsqueeze(-1) >= cdf.to(u.dtype)).sum(-1)
    return idx.clamp(max=cdf.shape[-1] - 1)


def _check_sequences(x: torch.Tensor, n_states: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of symbols, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"x must hold integer symbols, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have a sequence axis of length >= 1, got shape {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n_states):
        raise ValueError(
            f"symbols must lie in [0, {n_states - 1}], got range [{int(x.min())}, {int(x.max())}]"
        )
    return x.long()


def _pred_dtype(logits: torch.Tensor | None, probs: torch.Tensor | None) -> torch.dtype:
    t = logits if logits is not None else probs
    if t is None:
        raise ValueError("give exactly one of logits= or probs=")
    return t.dtype if t.dtype.is_floating_point else torch.float32


def _log_probs(
    n_states: int, x: torch.Tensor, logits: torch.Tensor | None, probs: torch.Tensor | None
) -> torch.Tensor:
    """Log-probabilities of shape x.shape + (S,) from either form of prediction."""
    if (logits is None) == (probs is None):
        raise ValueError("give exactly one of logits= or probs=")
    pred = logits if logits is not None else probs
    if n_states == 2 and pred.shape == x.shape:  # scalar prediction for symbol 1
        if logits is not None:
            return torch.stack(
                [-torch.nn.functional.softplus(pred), -torch.nn.functional.softplus(-pred)], -1
            )
        pred = torch.stack([1 - probs, probs], -1)
    elif pred.shape != (*x.shape, n_states):
        raise ValueError(
            f"predictions must have shape {(*x.shape, n_states)}"
            + (f" or {tuple(x.shape)}" if n_states == 2 else "")
            + f", got {tuple(pred.shape)}"
        )
    if logits is not None:
        return torch.log_softmax(pred, dim=-1)
    if torch.any(pred < 0) or torch.any(pred > 1):
        raise ValueError("probs must lie in [0, 1]")
    return torch.log(pred)


def _xlogy(t: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """t * logp with the convention 0 * log 0 = 0."""
    return torch.where(t > 0, t * logp, torch.zeros_like(t))


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
