"""Realisable next-token prediction and max-margin directions (NTP, chapter 7).

Huang, Liang and Yang, *Non-asymptotic Convergence of Training Transformers for Next-token
Prediction* (NeurIPS 2024, arXiv:2409.17335) study a one-layer transformer on *realisable*
data, where the cross-entropy loss can be driven to zero and the weights grow without bound in
the direction of max-margin solutions. This module implements that setting in float64 numpy.

What is the paper's and what is ours (tags of the book's SPEC, section 6):

* **Data** [paper concepts; exact forms reconstructed]. A vocabulary of ``K`` tokens; a
  *collocation* ``n(x)`` (each token's follower, ``-1`` where a token has none); for each query
  token ``q`` a partial order on tokens. In a sentence ``X = (x_1, ..., x_L)`` the *query* is
  the last token ``x_L``; the *optimal token* ``x*`` is the element of the sentence that dominates
  all others under the order of the query, and the next token is ``n(x*)``. Our generator draws
  the orders from a random priority per query (a total order, a special partial order) and
  sentences of distinct tokens; we require the collocation to be injective, so that a sentence's
  next token names its optimal token (our reading of realisability, Assumption 1).
* **Model** [paper]. One-hot embeddings, ``d = K``, so ``E = I``:
  ``T(X) = W_ov E_X softmax(E_X^T W_kq e_{x_L})`` and next-token probabilities
  ``softmax(E^T T(X))``. In coordinates the attention score of position ``i`` is
  ``W_kq[x_i, x_L]`` and the logits are ``W_ov h`` with ``h = sum_i a_i e_{x_i}``.
* **Algorithm 1** [paper name]: two-stage normalised gradient descent (:func:`two_stage_ngd`).
* **Max-margin targets** [derived]: ``W_ov*`` in closed form (:func:`wov_max_margin`) and
  ``W_kq*`` by a hard-margin ranking SVM per query column (:func:`wkq_max_margin`).

Losses are in nats. Every quantity that goes to zero (losses, gradients, the excess loss over
the stage-2 floor) is computed without cancellation, so curves stay straight on a log scale down
to ~1e-300 instead of stopping at the float64 rounding level of the loss itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.optimize import nnls

__all__ = [
    "PAD",
    "SentenceBatch",
    "NTPDataset",
    "make_batch",
    "check_collocation",
    "random_collocation",
    "random_priorities",
    "sample_sentences",
    "optimal_tokens",
    "check_realisable",
    "make_dataset",
    "attention",
    "logits",
    "next_token_probs",
    "predict",
    "loss",
    "loss_and_grads",
    "collocation_loss",
    "loss_floor",
    "excess_loss",
    "normalised_step",
    "stage1_ngd",
    "stage2_ngd",
    "two_stage_ngd",
    "joint_ngd",
    "gradient_descent",
    "small_random",
    "wov_max_margin",
    "ranking_constraints",
    "wkq_max_margin",
    "min_norm_qp",
    "wov_max_margin_qp",
    "wkq_max_margin_qp",
    "cosine",
    "direction_distance",
    "training_relations",
    "transitive_closure",
    "determined",
    "markov_sentence_batch",
    "cyclic_chain_dataset",
]

#: padding token in a (N, L_max) array of sentences
PAD = -1


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_matrix(name: str, W: object, K: int) -> np.ndarray:
    try:
        A = np.array(W, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {W!r}") from exc
    if A.shape != (K, K):
        raise ValueError(f"{name} must have shape (K, K) = ({K}, {K}), got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return A


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_check_int("seed", seed, 0))


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------


def _pad(sentences: Sequence[Sequence[int]] | np.ndarray, lengths=None):
    """(tokens (N, L_max) int64 padded with PAD, lengths (N,) int64) from lists or arrays."""
    if lengths is not None:
        tok = np.array(sentences, dtype=np.int64)
        lens = np.array(lengths, dtype=np.int64)
        if tok.ndim != 2 or lens.shape != (tok.shape[0],):
            raise ValueError(
                f"tokens must have shape (N, L_max) and lengths shape (N,), got {tok.shape} "
                f"and {lens.shape}"
            )
        if np.any(lens < 1) or np.any(lens > tok.shape[1]):
            raise ValueError(f"lengths must lie in [1, {tok.shape[1]}], got {lens.tolist()}")
        tok = tok.copy()
        tok[np.arange(tok.shape[1])[None, :] >= lens[:, None]] = PAD
        return tok, lens
    seqs = [np.atleast_1d(np.asarray(s)) for s in sentences]
    if not seqs:
        raise ValueError("at least one sentence is needed, got none")
    for i, s in enumerate(seqs):
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"sentence {i} must be a non-empty 1-D sequence, got {s.tolist()!r}")
        if not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"sentence {i} must hold integer tokens, got {s.tolist()!r}")
    lens = np.array([s.size for s in seqs], dtype=np.int64)
    tok = np.full((len(seqs), int(lens.max())), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        tok[i, : s.size] = s
    return tok, lens


def _check_tokens(tok: np.ndarray, lens: np.ndarray, K: int) -> None:
    mask = np.arange(tok.shape[1])[None, :] < lens[:, None]
    bad = mask & ((tok < 0) | (tok >= K))
    if np.any(bad):
        n, i = np.argwhere(bad)[0]
        raise ValueError(
            f"token {int(tok[n, i])} at position {int(i)} of sentence {int(n)} is out of range: "
            f"tokens must lie in [0, {K - 1}] for a vocabulary of K = {K}"
        )


@dataclass(frozen=True, eq=False)
class SentenceBatch:
    """Sentences with next-token targets, padded to a common length.

    ``tokens`` (N, L_max) int64 padded with :data:`PAD`; ``lengths`` (N,); ``targets`` (N, K)
    next-token laws (one-hot for realisable data, a row of a Markov kernel otherwise);
    ``weights`` (N,) summing to one (the loss is the weighted mean). Build with
    :func:`make_batch`.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    n_tokens: int
    mask: np.ndarray = field(init=False, repr=False)
    safe_tokens: np.ndarray = field(init=False, repr=False)
    queries: np.ndarray = field(init=False, repr=False)
    onehot: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        N, Lm = self.tokens.shape
        mask = np.arange(Lm)[None, :] < self.lengths[:, None]
        safe = np.where(mask, self.tokens, 0)
        onehot = np.zeros((N, Lm, self.n_tokens))
        onehot[np.arange(N)[:, None], np.arange(Lm)[None, :], safe] = mask
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "safe_tokens", safe)
        object.__setattr__(self, "queries", self.tokens[np.arange(N), self.lengths - 1])
        object.__setattr__(self, "onehot", onehot)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def make_batch(
    sentences: Sequence[Sequence[int]] | np.ndarray,
    next_tokens: Sequence[int] | np.ndarray | None = None,
    n_tokens: int | None = None,
    *,
    lengths: Sequence[int] | np.ndarray | None = None,
    target_probs: np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
) -> SentenceBatch:
    """A :class:`SentenceBatch` from a list of token sequences (or a padded array + ``lengths``).

    Give either ``next_tokens`` (one next token per sentence) or ``target_probs`` ((N, K)
    next-token laws). ``weights`` default to uniform. Tokens must lie in ``[0, n_tokens)``.
    """
    K = _check_int("n_tokens", n_tokens, 1)
    tok, lens = _pad(sentences, lengths)
    _check_tokens(tok, lens, K)
    N = tok.shape[0]
    if (next_tokens is None) == (target_probs is None):
        raise ValueError("give exactly one of next_tokens and target_probs")
    if next_tokens is not None:
        y = np.asarray(next_tokens)
        if y.shape != (N,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"next_tokens must be N = {N} integers, got {np.asarray(y).tolist()}")
        if np.any((y < 0) | (y >= K)):
            v = int(y[(y < 0) | (y >= K)][0])
            raise ValueError(f"next token {v} is out of range: tokens must lie in [0, {K - 1}]")
        T = np.zeros((N, K))
        T[np.arange(N), y] = 1.0
    else:
        T = np.array(target_probs, dtype=np.float64)
        if T.shape != (N, K):
            raise ValueError(f"target_probs must have shape ({N}, {K}), got {T.shape}")
        if np.any(T < 0) or np.any(np.abs(T.sum(1) - 1) > 1e-9):
            raise ValueError("target_probs rows must be probability vectors (>= 0, sum 1)")
    if weights is None:
        w = np.full(N, 1.0 / N)
    else:
        w = np.array(weights, dtype=np.float64)
        if w.shape != (N,) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"weights must be N = {N} finite numbers >= 0 with a positive sum")
        w = w / w.sum()
    return SentenceBatch(tok, lens, T, w, K)


# --------------------------------------------------------------------------------------------
# Realisable datasets: collocation, query-dependent orders, optimal tokens
# --------------------------------------------------------------------------------------------


def check_collocation(collocation: Sequence[int] | np.ndarray, n_tokens: int) -> np.ndarray:
    """Validate a collocation: ``n[x]`` in ``[0, K)`` or ``-1`` (no follower), injective.

    Injectivity is our reading of the paper's collocation [derived]: it makes the optimal token
    of a sentence the unique token whose follower is the next token.
    """
    K = _check_int("n_tokens", n_tokens, 2)
    n = np.asarray(collocation)
    if n.shape != (K,) or not np.issubdtype(n.dtype, np.integer):
        raise ValueError(
            f"collocation must be K = {K} integers (the follower of each token, -1 for none), "
            f"got {n.tolist()!r}"
        )
    bad = (n < -1) | (n >= K)
    if np.any(bad):
        x = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"collocation n({x}) = {int(n[x])} is out of range: followers must lie in "
            f"[0, {K - 1}] or be -1 (no follower)"
        )
    vals, counts = np.unique(n[n >= 0], return_counts=True)
    if np.any(counts > 1):
        v = int(vals[counts > 1][0])
        xs = np.flatnonzero(n == v).tolist()
        raise ValueError(
            f"collocation must be injective, but tokens {xs} all have follower {v}; "
            "a next token must name a unique optimal token"
        )
    return n.astype(np.int64)


def random_collocation(n_tokens: int, rng: int | np.random.Generator) -> np.ndarray:
    """A random injective collocation with a follower for every token (a random permutation)."""
    K = _check_int("n_tokens", n_tokens, 2)
    return _rng(rng).permutation(K).astype(np.int64)


def random_priorities(n_tokens: int, rng: int | np.random.Generator) -> np.ndarray:
    """Random query-dependent total orders: ``prio[q, x]`` is the rank of ``x`` for query ``q``.

    ``x`` dominates ``x'`` under query ``q`` when ``prio[q, x] > prio[q, x']``. Rows are
    independent random permutations of ``0..K-1`` [our stand-in for the paper's partial orders].
    """
    K = _check_int("n_tokens", n_tokens, 2)
    g = _rng(rng)
    return np.stack([g.permutation(K) for _ in range(K)]).astype(np.int64)


def sample_sentences(
    n_tokens: int, n_sentences: int, min_len: int, max_len: int, rng: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sentences of distinct uniformly drawn tokens, lengths uniform in [min_len, max_len].

    Returns ``(tokens (N, max_len) padded with PAD, lengths (N,))``.
    """
    K = _check_int("n_tokens", n_tokens, 2)
    N = _check_int("n_sentences", n_sentences, 1)
    lo = _check_int("min_len", min_len, 1)
    hi = _check_int("max_len", max_len, lo)
    if hi > K:
        raise ValueError(f"max_len must be <= n_tokens = {K} (tokens are distinct), got {hi}")
    g = _rng(rng)
    lens = g.integers(lo, hi + 1, size=N)
    perms = np.argsort(g.random((N, K)), axis=1)[:, :hi]  # N random permutations, truncated
    perms[np.arange(hi)[None, :] >= lens[:, None]] = PAD
    return perms.astype(np.int64), lens.astype(np.int64)


def optimal_tokens(tokens: np.ndarray, lengths: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """The optimal token of each sentence: the one with the highest priority for its query."""
    tok, lens = _pad(tokens, lengths)
    K = priority.shape[0]
    _check_tokens(tok, lens, K)
    mask = np.arange(tok.shape[1])[None, :] < lens[:, None]
    safe = np.where(mask, tok, 0)
    q = tok[np.arange(len(tok)), lens - 1]
    score = np.where(mask, priority[q[:, None], safe], -np.inf)
    return safe[np.arange(len(tok)), np.argmax(score, axis=1)]


def training_relations(
    tokens: np.ndarray, lengths: np.ndarray, optimal: np.ndarray, n_tokens: int
) -> np.ndarray:
    """Orders shown by the data: ``R[q, a, b]`` is True when some sentence with query ``q`` has
    optimal token ``a`` and contains ``b != a`` (so ``a`` dominates ``b`` under ``q``)."""
    tok, lens = _pad(tokens, lengths)
    K = _check_int("n_tokens", n_tokens, 1)
    _check_tokens(tok, lens, K)
    opt = np.asarray(optimal, dtype=np.int64)
    mask = np.arange(tok.shape[1])[None, :] < lens[:, None]
    q = tok[np.arange(len(tok)), lens - 1]
    R = np.zeros((K, K, K), dtype=bool)
    n_idx, i_idx = np.nonzero(mask & (tok != opt[:, None]))
    R[q[n_idx], opt[n_idx], tok[n_idx, i_idx]] = True
    return R


def transitive_closure(relations: np.ndarray) -> np.ndarray:
    """Transitive closure of boolean relations ``R[..., a, b]`` (Warshall's algorithm).

    Works on a stack of relations (e.g. one per query, shape (K, K, K)).
    """
    R = np.array(relations, dtype=bool)
    if R.ndim < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"relations must have shape (..., K, K), got {R.shape}")
    for k in range(R.shape[-1]):
        R |= R[..., :, k : k + 1] & R[..., k : k + 1, :]
    return R


def check_realisable(
    tokens: Sequence[Sequence[int]] | np.ndarray,
    next_tokens: Sequence[int] | np.ndarray,
    collocation: Sequence[int] | np.ndarray,
    n_tokens: int,
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Check Assumption 1 (realisability) and return the optimal token of every sentence.

    A dataset is realisable when (i) each sentence contains a token ``x`` with ``n(x)`` equal to
    its next token (with an injective collocation, that token is the optimal token ``x*``), and
    (ii) for every query the relations "``x*`` dominates the other tokens of the sentence" contain
    no cycle, so that some partial order per query explains all sentences. Raises ValueError
    naming the first offending sentence, token or cycle.
    """
    K = _check_int("n_tokens", n_tokens, 2)
    n = check_collocation(collocation, K)
    tok, lens = _pad(tokens, lengths)
    _check_tokens(tok, lens, K)
    y = np.asarray(next_tokens)
    if y.shape != (len(tok),):
        raise ValueError(f"next_tokens must hold N = {len(tok)} tokens, got shape {y.shape}")
    seen: dict[tuple[int, ...], tuple[int, int]] = {}
    for j in range(len(tok)):
        key = tuple(tok[j, : lens[j]].tolist())
        if key in seen and seen[key][1] != int(y[j]):
            i, yi = seen[key]
            raise ValueError(
                f"sentence {j} {list(key)} is followed by {int(y[j])}, but the identical "
                f"sentence {i} is followed by {yi}: a realisable dataset has one next token per "
                "sentence (the data are not realisable)"
            )
        seen.setdefault(key, (j, int(y[j])))
    inverse = np.full(K, -1, dtype=np.int64)
    inverse[n[n >= 0]] = np.flatnonzero(n >= 0)
    opt = np.empty(len(tok), dtype=np.int64)
    for j in range(len(tok)):
        s = tok[j, : lens[j]]
        if not 0 <= int(y[j]) < K:
            raise ValueError(f"next token {int(y[j])} of sentence {j} is out of range [0, {K - 1}]")
        x = inverse[int(y[j])]
        if x < 0 or x not in s:
            raise ValueError(
                f"sentence {j} {s.tolist()} has next token {int(y[j])}, but no token in it has "
                f"follower {int(y[j])} under the collocation (needed: token {int(x)}); the data "
                "are not realisable"
            )
        opt[j] = x
    R = training_relations(tok, lens, opt, K)
    C = transitive_closure(R)
    cyc = np.argwhere(R & np.transpose(C, (0, 2, 1)))  # a > b shown, and b > a by transitivity
    if len(cyc):
        q, a, b = (int(v) for v in cyc[0])
        raise ValueError(
            f"the orders of query {q} contain a cycle: token {a} dominates {b} in one sentence "
            f"and {b} dominates {a} (directly or by transitivity) in others; no partial order "
            "realises these data"
        )
    return opt


@dataclass(frozen=True, eq=False)
class NTPDataset:
    """A realisable dataset: collocation, sentences, their optimal and next tokens.

    ``priority`` holds the ground-truth orders when the dataset comes from
    :func:`make_dataset` (``None`` otherwise).
    """

    n_tokens: int
    collocation: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    optimal: np.ndarray
    next_tokens: np.ndarray
    priority: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def sentences(self) -> list[list[int]]:
        return [self.tokens[j, : self.lengths[j]].tolist() for j in range(len(self))]

    def batch(self) -> SentenceBatch:
        """The sentences with their next tokens (the loss ``L``)."""
        return self._batch

    def collocation_batch(self) -> SentenceBatch:
        """The one-token contexts ``{(x, n(x))}`` (the loss ``L_0``)."""
        return self._collocation_batch

    @cached_property
    def _batch(self) -> SentenceBatch:
        return make_batch(self.tokens, self.next_tokens, self.n_tokens, lengths=self.lengths)

    @cached_property
    def _collocation_batch(self) -> SentenceBatch:
        dom = np.flatnonzero(self.collocation >= 0)
        return make_batch(
            dom[:, None], self.collocation[dom], self.n_tokens, lengths=[1] * len(dom)
        )

    @classmethod
    def from_data(cls, tokens, next_tokens, collocation, n_tokens, lengths=None) -> NTPDataset:
        """Wrap given data after :func:`check_realisable` (ValueError if not realisable)."""
        tok, lens = _pad(tokens, lengths)
        opt = check_realisable(tok, next_tokens, collocation, n_tokens, lengths=lens)
        n = check_collocation(collocation, n_tokens)
        return cls(int(n_tokens), n, tok, lens, opt, np.asarray(next_tokens, dtype=np.int64))


def make_dataset(
    n_tokens: int,
    n_sentences: int,
    min_len: int,
    max_len: int,
    seed: int | np.random.Generator,
    *,
    collocation: np.ndarray | None = None,
    priority: np.ndarray | None = None,
) -> NTPDataset:
    """A realisable dataset: random collocation and orders (unless given), random sentences.

    Sentences whose optimal token has no follower are redrawn. Pass the ``collocation`` and
    ``priority`` of a training set to draw test sentences from the same language.
    """
    K = _check_int("n_tokens", n_tokens, 2)
    g = _rng(seed)
    n = random_collocation(K, g) if collocation is None else check_collocation(collocation, K)
    if priority is None:
        prio = random_priorities(K, g)
    else:
        prio = np.asarray(priority)
        if prio.shape != (K, K):
            raise ValueError(f"priority must have shape ({K}, {K}), got {prio.shape}")
    if not np.any(n >= 0):
        raise ValueError("the collocation gives no token a follower; no sentence is realisable")
    N = _check_int("n_sentences", n_sentences, 1)
    toks, lens = [], []
    have = 0
    while have < N:
        t, ln = sample_sentences(K, N, min_len, max_len, g)
        keep = n[optimal_tokens(t, ln, prio)] >= 0
        toks.append(t[keep])
        lens.append(ln[keep])
        have += int(keep.sum())
    tok, lens = np.concatenate(toks)[:N], np.concatenate(lens)[:N]
    opt = optimal_tokens(tok, lens, prio)
    ds = NTPDataset(K, n, tok, lens, opt, n[opt], prio)
    check_realisable(tok, ds.next_tokens, n, K, lengths=lens)
    return ds


# --------------------------------------------------------------------------------------------
# The model and its losses
# --------------------------------------------------------------------------------------------


def _check_batch(batch: object) -> SentenceBatch:
    if not isinstance(batch, SentenceBatch):
        raise ValueError(f"expected a SentenceBatch (see make_batch), got {type(batch).__name__}")
    return batch


def attention(W_kq: np.ndarray, batch: SentenceBatch) -> np.ndarray:
    """Attention weights ``softmax_i(W_kq[x_i, x_L])`` per sentence, shape (N, L_max).

    This is ``softmax(E_X^T W_kq e_{x_L})`` with one-hot embeddings; padding gets weight 0.
    """
    b = _check_batch(batch)
    return _attention(_check_matrix("W_kq", W_kq, b.n_tokens), b)


def _attention(W: np.ndarray, b: SentenceBatch) -> np.ndarray:
    s = np.where(b.mask, W[b.safe_tokens, b.queries[:, None]], -np.inf)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logits(W_ov: np.ndarray, W_kq: np.ndarray, batch: SentenceBatch) -> np.ndarray:
    """Next-token logits ``E^T T(X) = W_ov sum_i a_i e_{x_i}``, shape (N, K)."""
    b = _check_batch(batch)
    W = _check_matrix("W_ov", W_ov, b.n_tokens)
    h = np.einsum("nl,nlk->nk", attention(W_kq, b), b.onehot)
    return h @ W.T


def _softmax_parts(z: np.ndarray):
    """Softmax ``p``, ``1 - p`` and ``-log p`` of logits (N, K), without cancellation.

    With ``m`` the row maximum (at index ``k*``) and ``r = sum_{k != k*} exp(z_k - m)``:
    ``log S = log1p(r)``, ``-log p_k = log1p(r) + (m - z_k)`` and ``1 - p_k* = r / S``, all
    accurate when ``p_k* -> 1``.
    """
    N = z.shape[0]
    rows = np.arange(N)
    top = np.argmax(z, axis=1)
    m = z[rows, top][:, None]
    e = np.exp(z - m)
    e[rows, top] = 0.0
    r = e.sum(axis=1, keepdims=True)
    e[rows, top] = 1.0
    S = 1.0 + r
    p = e / S
    one_minus_p = (S - e) / S
    one_minus_p[rows, top] = r[:, 0] / S[:, 0]
    neglogp = np.log1p(r) + (m - z)
    return p, one_minus_p, neglogp


def next_token_probs(W_ov: np.ndarray, W_kq: np.ndarray, batch: SentenceBatch) -> np.ndarray:
    """``softmax(E^T T(X))`` per sentence, shape (N, K)."""
    return _softmax_parts(logits(W_ov, W_kq, batch))[0]


def predict(W_ov: np.ndarray, W_kq: np.ndarray, batch: SentenceBatch) -> np.ndarray:
    """The most likely next token of each sentence."""
    return np.argmax(logits(W_ov, W_kq, batch), axis=1)


def _ce(neglogp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.where(targets > 0, targets * neglogp, 0.0).sum(axis=1)


def loss(W_ov: np.ndarray, W_kq: np.ndarray, batch: SentenceBatch) -> float:
    """Weighted mean cross-entropy of the next tokens (nats): ``L``, or ``L_0`` on one-token
    contexts."""
    b = _check_batch(batch)
    _, _, nlp = _softmax_parts(logits(W_ov, W_kq, b))
    return float(b.weights @ _ce(nlp, b.targets))


def loss_and_grads(
    W_ov: np.ndarray, W_kq: np.ndarray, batch: SentenceBatch
) -> tuple[float, np.ndarray, np.ndarray]:
    """The loss and its gradients with respect to ``W_ov`` and ``W_kq`` (closed form).

    With ``g = p - t`` (softmax minus target), ``h = sum_i a_i e_{x_i}`` and ``u = W_ov^T g``:
    ``dL/dW_ov = sum_n w_n g h^T`` and ``dL/dW_kq[x_i, x_L] += w_n a_i sum_j a_j (u_{x_i} -
    u_{x_j})``. Both are evaluated without cancellation so they stay accurate when the loss is
    tiny.
    """
    b = _check_batch(batch)
    K = b.n_tokens
    return _loss_and_grads(_check_matrix("W_ov", W_ov, K), _check_matrix("W_kq", W_kq, K), b)


def _loss_and_grads(Wo: np.ndarray, Wk: np.ndarray, b: SentenceBatch):
    a = _attention(Wk, b)
    h = np.einsum("nl,nlk->nk", a, b.onehot)
    p, omp, nlp = _softmax_parts(h @ Wo.T)
    T = b.targets
    g = p * (1.0 - T) - T * omp  # = p - t, accurate when p -> t
    wg = b.weights[:, None] * g
    gWo = wg.T @ h
    u = np.take_along_axis(wg @ Wo, b.safe_tokens, axis=1)  # (N, L): w_n u_{x_i}
    diff = u[:, :, None] - u[:, None, :]
    ds = a * np.einsum("nj,nij->ni", a, diff)
    K = b.n_tokens
    idx = (b.safe_tokens * K + b.queries[:, None])[b.mask]
    gWk = np.bincount(idx, weights=ds[b.mask], minlength=K * K).reshape(K, K)
    return float(b.weights @ _ce(nlp, T)), gWo, gWk


def collocation_loss(W_ov: np.ndarray, data: NTPDataset) -> float:
    """``L_0``: the loss on the one-token contexts ``{(x, n(x))}`` (W_kq plays no role)."""
    return loss(W_ov, np.zeros((data.n_tokens, data.n_tokens)), data.collocation_batch())


def loss_floor(W_ov: np.ndarray, data: NTPDataset) -> float:
    """``L*``: the stage-2 loss floor for a frozen ``W_ov`` [derived].

    As attention concentrates on the optimal token, a sentence's logits tend to
    ``W_ov e_{x*}``; ``L*`` is the mean loss of those logits. Stage 2 can only reduce ``L - L*``.
    """
    Wo = _check_matrix("W_ov", W_ov, data.n_tokens)
    _, _, nlp = _softmax_parts(Wo.T[data.optimal])
    return float(np.mean(nlp[np.arange(len(data)), data.next_tokens]))


def excess_loss(W_ov: np.ndarray, W_kq: np.ndarray, data: NTPDataset) -> float:
    """``L - L*`` (see :func:`loss_floor`), accurate down to ~1e-300.

    Per sentence, with ``delta = (z - z0) - (z - z0)[y]`` and ``p0 = softmax(z0)`` where
    ``z0 = W_ov e_{x*}``: ``l - l0 = log1p(sum_k p0_k expm1(delta_k))``.
    """
    K = data.n_tokens
    return _excess_fn(_check_matrix("W_ov", W_ov, K), data)(_check_matrix("W_kq", W_kq, K))


def _excess_fn(Wo: np.ndarray, data: NTPDataset) -> Callable[[np.ndarray], float]:
    """``W_kq -> L - L*`` for a frozen ``W_ov`` (the parts that do not change are computed once)."""
    b = data.batch()
    cols = Wo.T[b.safe_tokens] - Wo.T[data.optimal][:, None, :]  # (N, L, K)
    y = data.next_tokens
    cols = cols - cols[np.arange(len(y)), :, y][:, :, None]  # relative to the target's logit
    p0 = _softmax_parts(Wo.T[data.optimal])[0]

    def excess(Wk: np.ndarray) -> float:
        delta = np.einsum("nl,nlk->nk", _attention(Wk, b), cols)
        return float(np.mean(np.log1p(np.sum(p0 * np.expm1(delta), axis=1))))

    return excess


# --------------------------------------------------------------------------------------------
# Normalised gradient descent (Algorithm 1) and plain gradient descent
# --------------------------------------------------------------------------------------------


def normalised_step(W: np.ndarray, G: np.ndarray, eta: float) -> np.ndarray:
    """``W - eta G / ||G||_F``: a step of Frobenius length exactly ``eta``.

    Raises ValueError for ``eta <= 0`` and for a zero or non-finite gradient (its direction is
    undefined).
    """
    eta = _check_positive("eta", eta)
    norm = float(np.linalg.norm(G))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(
            f"the gradient norm is {norm!r}: a normalised step needs a finite, non-zero gradient"
        )
    return W - (eta / norm) * G


def small_random(n_tokens: int, scale: float, seed: int | np.random.Generator) -> np.ndarray:
    """A (K, K) matrix of i.i.d. N(0, scale^2) entries: the small random start of ``W_ov``.

    From ``W_ov = 0`` the stage-1 direction would be exactly ``W_ov*`` at every step (the
    direction panel of Figure 2 would be flat), so we start from a small random matrix.
    """
    K = _check_int("n_tokens", n_tokens, 1)
    return _check_positive("scale", scale) * _rng(seed).standard_normal((K, K))


def _loop(
    params: dict[str, np.ndarray],
    grad_fn: Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]],
    eta: float,
    steps: int,
    record_every: int,
    metrics: Callable[[dict[str, np.ndarray], float], dict[str, float]],
    normalised: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Shared loop: (normalised) GD on ``params`` with a record every ``record_every`` steps.

    A normalised run stops at the first exactly zero gradient (the direction of a step is then
    undefined; in practice this happens only once the loss has underflowed to 0) and records
    ``stopped_at``; a non-finite gradient raises ValueError.
    """
    eta = _check_positive("eta", eta)
    steps = _check_int("steps", steps, 0)
    every = _check_int("record_every", record_every, 1)
    params = {k: v.copy() for k, v in params.items()}
    rec: dict[str, list] = {"step": []}
    stopped = -1
    for t in range(steps + 1):
        value, grads = grad_fn(params)
        if t % every == 0 or t == steps:
            rec["step"].append(t)
            for k, v in metrics(params, value).items():
                rec.setdefault(k, []).append(v)
        if t == steps:
            break
        gnorm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        if not math.isfinite(gnorm):
            raise ValueError(f"the gradient became non-finite at step {t}")
        if normalised and gnorm == 0.0:
            stopped = t
            if rec["step"][-1:] != [t]:
                rec["step"].append(t)
                for k, v in metrics(params, value).items():
                    rec.setdefault(k, []).append(v)
            break
        scale = eta / gnorm if normalised else eta
        for k, g in grads.items():
            params[k] = params[k] - scale * g
    hist = {k: np.asarray(v, dtype=np.float64) for k, v in rec.items()}
    hist["step"] = hist["step"].astype(np.int64)
    hist["stopped_at"] = np.array(stopped)
    return params, hist


def _direction_metrics(name: str, W: np.ndarray, target: np.ndarray | None) -> dict[str, float]:
    out = {f"norm_{name}": float(np.linalg.norm(W))}
    if target is not None:
        out[f"cos_{name}"] = cosine(W, target)
        out[f"dist_{name}"] = direction_distance(W, target)
    return out


def stage1_ngd(
    data: NTPDataset,
    W_ov0: np.ndarray,
    eta0: float,
    steps: int,
    *,
    record_every: int = 1,
    target: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stage 1 of Algorithm 1: normalised GD on ``L_0`` over ``W_ov`` with step length ``eta0``.

    Returns the final ``W_ov`` and a history (``step``, ``loss`` = L_0, ``norm_ov`` and, with a
    ``target``, ``cos_ov`` / ``dist_ov``).
    """
    K = data.n_tokens
    Wo = _check_matrix("W_ov0", W_ov0, K)
    eta0 = _check_positive("eta0", eta0)
    cb = data.collocation_batch()
    zero = np.zeros((K, K))

    def grad_fn(p):
        val, gWo, _ = _loss_and_grads(p["ov"], zero, cb)
        return val, {"ov": gWo}

    def metrics(p, val):
        return {"loss": val, **_direction_metrics("ov", p["ov"], target)}

    out, hist = _loop({"ov": Wo}, grad_fn, eta0, steps, record_every, metrics, True)
    return out["ov"], hist


def stage2_ngd(
    data: NTPDataset,
    W_ov: np.ndarray,
    eta: float,
    steps: int,
    *,
    W_kq0: np.ndarray | None = None,
    record_every: int = 1,
    target: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stage 2 of Algorithm 1: ``W_ov`` frozen, normalised GD on ``L`` over ``W_kq`` from 0.

    The history has ``loss`` (L), ``excess`` (L - L*, see :func:`excess_loss`), ``floor`` (L*),
    ``norm_kq`` and, with a ``target``, ``cos_kq`` / ``dist_kq``.
    """
    K = data.n_tokens
    Wo = _check_matrix("W_ov", W_ov, K)
    Wk = np.zeros((K, K)) if W_kq0 is None else _check_matrix("W_kq0", W_kq0, K)
    eta = _check_positive("eta", eta)
    b = data.batch()
    floor = loss_floor(Wo, data)
    excess = _excess_fn(Wo, data)

    def grad_fn(p):
        val, _, gWk = _loss_and_grads(Wo, p["kq"], b)
        return val, {"kq": gWk}

    def metrics(p, val):
        return {
            "loss": val,
            "excess": excess(p["kq"]),
            "floor": floor,
            **_direction_metrics("kq", p["kq"], target),
        }

    out, hist = _loop({"kq": Wk}, grad_fn, eta, steps, record_every, metrics, True)
    return out["kq"], hist


def two_stage_ngd(
    data: NTPDataset,
    *,
    eta0: float,
    eta: float,
    steps0: int,
    steps: int,
    init_scale: float = 0.02,
    seed: int = 0,
    record_every: int = 1,
    targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Algorithm 1 (two-stage normalised GD) from a small random ``W_ov`` and ``W_kq = 0``.

    Returns ``{"W_ov", "W_kq", "stage1", "stage2"}`` (final weights and the two histories).
    ``targets = (W_ov*, W_kq*)`` adds the direction metrics to the histories.
    """
    t_ov, t_kq = targets if targets is not None else (None, None)
    W0 = small_random(data.n_tokens, init_scale, seed)
    Wo, h1 = stage1_ngd(data, W0, eta0, steps0, record_every=record_every, target=t_ov)
    Wk, h2 = stage2_ngd(data, Wo, eta, steps, record_every=record_every, target=t_kq)
    return {"W_ov": Wo, "W_kq": Wk, "stage1": h1, "stage2": h2}


def joint_ngd(
    data: NTPDataset,
    *,
    eta: float,
    steps: int,
    init_scale: float = 0.02,
    seed: int = 0,
    record_every: int = 1,
    targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Joint normalised GD on ``L + L_0`` over ``(W_ov, W_kq)`` (not covered by the theory).

    Each step moves the pair by Frobenius length ``eta``; the start is the same as
    :func:`two_stage_ngd` (small random ``W_ov``, ``W_kq = 0``). Objective ``L + L_0`` is our
    choice: the two losses of Algorithm 1, optimised together.
    """
    K = data.n_tokens
    t_ov, t_kq = targets if targets is not None else (None, None)
    b, cb = data.batch(), data.collocation_batch()

    def grad_fn(p):
        v1, go1, gk1 = _loss_and_grads(p["ov"], p["kq"], b)
        v0, go0, _ = _loss_and_grads(p["ov"], p["kq"], cb)
        return v1 + v0, {"ov": go1 + go0, "kq": gk1}

    def metrics(p, val):
        return {
            "loss": val,
            "loss_L": _loss_and_grads(p["ov"], p["kq"], b)[0],
            **_direction_metrics("ov", p["ov"], t_ov),
            **_direction_metrics("kq", p["kq"], t_kq),
        }

    start = {"ov": small_random(K, init_scale, seed), "kq": np.zeros((K, K))}
    out, hist = _loop(start, grad_fn, eta, steps, record_every, metrics, True)
    return {"W_ov": out["ov"], "W_kq": out["kq"], "history": hist}


def gradient_descent(
    batch: SentenceBatch,
    *,
    lr: float,
    steps: int,
    W_ov0: np.ndarray,
    W_kq0: np.ndarray,
    record_every: int = 1,
) -> dict:
    """Plain (unnormalised) gradient descent on ``L`` over both matrices (the bridge section).

    Returns ``{"W_ov", "W_kq", "history"}`` with ``loss``, ``norm_ov``, ``norm_kq`` and
    ``grad_norm`` in the history.
    """
    K = _check_batch(batch).n_tokens
    lr = _check_positive("lr", lr)
    start = {"ov": _check_matrix("W_ov0", W_ov0, K), "kq": _check_matrix("W_kq0", W_kq0, K)}

    def grad_fn(p):
        val, go, gk = _loss_and_grads(p["ov"], p["kq"], batch)
        return val, {"ov": go, "kq": gk}

    def metrics(p, val):
        _, go, gk = _loss_and_grads(p["ov"], p["kq"], batch)
        return {
            "loss": val,
            "norm_ov": float(np.linalg.norm(p["ov"])),
            "norm_kq": float(np.linalg.norm(p["kq"])),
            "grad_norm": math.sqrt(float(np.sum(go * go) + np.sum(gk * gk))),
        }

    out, hist = _loop(start, grad_fn, lr, steps, record_every, metrics, False)
    return {"W_ov": out["ov"], "W_kq": out["kq"], "history": hist}


# --------------------------------------------------------------------------------------------
# Max-margin solutions and direction metrics
# --------------------------------------------------------------------------------------------


def wov_max_margin(collocation: Sequence[int] | np.ndarray, n_tokens: int) -> np.ndarray:
    """``W_ov* = sum_{x in dom n} (e_{n(x)} - 1/K) e_x^T`` [derived].

    The minimum-Frobenius-norm matrix whose column ``x`` gives ``n(x)`` a logit margin of at least
    1 over every other token; all margins equal 1 and ``||W_ov*||_F = sqrt(|dom n| (K-1)/K)``.
    """
    n = check_collocation(collocation, n_tokens)
    K = len(n)
    W = np.zeros((K, K))
    dom = np.flatnonzero(n >= 0)
    W[:, dom] = -1.0 / K
    W[n[dom], dom] += 1.0
    return W


def ranking_constraints(
    tokens: np.ndarray, lengths: np.ndarray, optimal: np.ndarray, n_tokens: int
) -> dict[int, np.ndarray]:
    """Per query ``q``: the distinct pairs ``(x*, x)`` with ``x*`` shown to dominate ``x``.

    ``W_kq*`` must satisfy ``W[x*, q] - W[x, q] >= 1`` for each pair. Returns
    ``{q: array of shape (m, 2)}`` for the queries that have at least one pair.
    """
    R = training_relations(tokens, lengths, optimal, n_tokens)
    return {int(q): np.argwhere(R[q]) for q in range(n_tokens) if R[q].any()}


def _ldp(G: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-distance programming: ``min ||x|| s.t. G x >= h`` via NNLS (Lawson and Hanson,
    *Solving Least Squares Problems*, ch. 23). Returns ``(x, multipliers)``."""
    m, k = G.shape
    E = np.vstack([G.T, h[None, :]])
    f = np.zeros(k + 1)
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * (m + k + 1))
    r = E @ u - f
    if abs(r[-1]) < 1e-12:
        raise ValueError("the ranking constraints are inconsistent (no partial order fits them)")
    x = -r[:k] / r[-1]
    return x, u / (-r[-1])


def wkq_max_margin(
    tokens: np.ndarray, lengths: np.ndarray, optimal: np.ndarray, n_tokens: int
) -> tuple[np.ndarray, dict]:
    """``W_kq*``: per query column, the hard-margin ranking SVM [derived].

    Column ``q`` solves ``min ||w||^2`` subject to ``w[x*] - w[x] >= 1`` for every training
    sentence with query ``q``, optimal token ``x*`` and other token ``x``. This is a small
    quadratic programme; we solve it exactly as a least-distance programme with
    ``scipy.optimize.nnls``. Queries without constraints get a zero column.

    Returns ``(W, info)`` with ``info[q] = {"pairs", "multipliers", "margins"}``.
    """
    K = _check_int("n_tokens", n_tokens, 2)
    W = np.zeros((K, K))
    info = {}
    for q, pairs in ranking_constraints(tokens, lengths, optimal, K).items():
        G = np.zeros((len(pairs), K))
        G[np.arange(len(pairs)), pairs[:, 0]] = 1.0
        G[np.arange(len(pairs)), pairs[:, 1]] -= 1.0
        try:
            w, lam = _ldp(G, np.ones(len(pairs)))
        except ValueError as exc:
            raise ValueError(f"query {q}: {exc}") from None
        W[:, q] = w
        info[q] = {"pairs": pairs, "multipliers": lam, "margins": G @ w}
    return W, info


def min_norm_qp(G: np.ndarray, h: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """``min ||x||^2 s.t. G x >= h`` as a general quadratic programme (scipy's SLSQP), started
    from zero: an independent check of the closed form of ``W_ov*`` and of the NNLS route of
    :func:`wkq_max_margin`."""
    from scipy.optimize import minimize

    G, h = np.asarray(G, dtype=np.float64), np.asarray(h, dtype=np.float64)
    res = minimize(
        lambda x: x @ x,
        np.zeros(G.shape[1]),
        jac=lambda x: 2 * x,
        constraints=[{"type": "ineq", "fun": lambda x: G @ x - h, "jac": lambda x: G}],
        method="SLSQP",
        options={"ftol": tol, "maxiter": 1000},
    )
    if not res.success:
        raise ValueError(f"the quadratic programme did not converge: {res.message}")
    return res.x


def wov_max_margin_qp(collocation: Sequence[int] | np.ndarray, n_tokens: int) -> np.ndarray:
    """``W_ov*`` solved numerically: per column ``x`` of the domain, ``min ||w||^2`` subject to
    ``w[n(x)] - w[v] >= 1`` for every ``v != n(x)`` (:func:`min_norm_qp`)."""
    n = check_collocation(collocation, n_tokens)
    K = len(n)
    W = np.zeros((K, K))
    for x in np.flatnonzero(n >= 0):
        others = np.delete(np.arange(K), n[x])
        G = np.zeros((K - 1, K))
        G[:, n[x]] = 1.0
        G[np.arange(K - 1), others] = -1.0
        W[:, x] = min_norm_qp(G, np.ones(K - 1))
    return W


def wkq_max_margin_qp(
    tokens: np.ndarray, lengths: np.ndarray, optimal: np.ndarray, n_tokens: int
) -> np.ndarray:
    """``W_kq*`` solved as a general QP per query column (:func:`min_norm_qp`), for comparison
    with :func:`wkq_max_margin`."""
    K = _check_int("n_tokens", n_tokens, 2)
    W = np.zeros((K, K))
    for q, pairs in ranking_constraints(tokens, lengths, optimal, K).items():
        G = np.zeros((len(pairs), K))
        G[np.arange(len(pairs)), pairs[:, 0]] = 1.0
        G[np.arange(len(pairs)), pairs[:, 1]] -= 1.0
        W[:, q] = min_norm_qp(G, np.ones(len(pairs)))
    return W


def cosine(A: np.ndarray, B: np.ndarray) -> float:
    """``<A, B>_F / (||A|| ||B||)`` (0 when either is zero)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.shape != B.shape:
        raise ValueError(f"shapes differ: {A.shape} and {B.shape}")
    na, nb = np.linalg.norm(A), np.linalg.norm(B)
    return 0.0 if na == 0 or nb == 0 else float(np.sum(A * B) / (na * nb))


def direction_distance(A: np.ndarray, B: np.ndarray) -> float:
    """``|| A/||A|| - B/||B|| ||_F``, the normalised distance (= sqrt(2 - 2 cos))."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * cosine(A, B)))


def determined(
    tokens: np.ndarray, lengths: np.ndarray, closure: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which sentences have an optimal token fixed by the (closed) training orders.

    A sentence with query ``q`` is *determined* when one of its tokens dominates all the others
    under ``closure[q]``. Returns ``(mask (N,), token (N,), -1 where undetermined)``.
    """
    tok, lens = _pad(tokens, lengths)
    K = closure.shape[-1]
    _check_tokens(tok, lens, K)
    mask = np.arange(tok.shape[1])[None, :] < lens[:, None]
    safe = np.where(mask, tok, 0)
    q = tok[np.arange(len(tok)), lens - 1]
    C = closure[q[:, None, None], safe[:, :, None], safe[:, None, :]]  # (N, L, L): i > j
    same = safe[:, :, None] == safe[:, None, :]
    beats = (C | same | ~mask[:, None, :]).all(axis=2) & mask
    det = beats.any(axis=1)
    top = np.where(det, safe[np.arange(len(tok)), np.argmax(beats, axis=1)], -1)
    return det, top


# --------------------------------------------------------------------------------------------
# Bridge to Markov chains
# --------------------------------------------------------------------------------------------


def markov_sentence_batch(chain, max_len: int, min_len: int = 1) -> SentenceBatch:
    """Every sentence of length ``min_len..max_len`` of a first-order chain, exactly weighted.

    A sentence of length ``L`` gets its stationary probability divided by the number of lengths
    (lengths are equally likely); its target is the kernel row of its last token, so the loss is
    the exact expected cross-entropy, whose minimum over predictors is the entropy rate.
    Sentences of probability 0 are left out.
    """
    lo = _check_int("min_len", min_len, 1)
    hi = _check_int("max_len", max_len, lo)
    S = chain.n_states
    if chain.order != 1:
        raise ValueError(f"chain must be of order 1, got order {chain.order}")
    if S**hi > 200_000:
        raise ValueError(f"S^max_len = {S**hi} sentences is too many (at most 200000)")
    toks, lens, w = [], [], []
    for L in range(lo, hi + 1):
        law = chain.ngram_law(L).reshape(-1)
        keep = np.flatnonzero(law > 0)
        seqs = np.stack(np.unravel_index(keep, (S,) * L), axis=1)
        pad = np.full((len(keep), hi), PAD, dtype=np.int64)
        pad[:, :L] = seqs
        toks.append(pad)
        lens.append(np.full(len(keep), L))
        w.append(law[keep] / law[keep].sum() / (hi - lo + 1))
    tok, ln = np.concatenate(toks), np.concatenate(lens)
    targets = chain.kernel[tok[np.arange(len(tok)), ln - 1]]
    return make_batch(tok, n_tokens=S, lengths=ln, target_probs=targets, weights=np.concatenate(w))


def cyclic_chain_dataset(order: Sequence[int], max_len: int) -> NTPDataset:
    """A deterministic chain ``x -> sigma(x)`` along one cycle, as a realisable dataset.

    ``order`` lists the cycle (``sigma(order[i]) = order[i+1]``, wrapping round). Sentences are
    all windows of length ``2..max_len`` of the cycle; each query ranks itself first, so the
    optimal token is the query and the collocation is ``sigma``.
    """
    cyc = np.asarray(order, dtype=np.int64)
    K = len(cyc)
    if K < 2 or sorted(cyc.tolist()) != list(range(K)):
        raise ValueError(f"order must be a permutation of 0..K-1 with K >= 2, got {cyc.tolist()}")
    hi = _check_int("max_len", max_len, 2)
    sigma = np.empty(K, dtype=np.int64)
    sigma[cyc] = np.roll(cyc, -1)
    sents, nxt = [], []
    for L in range(2, hi + 1):
        for s in range(K):
            seq = cyc[(s + np.arange(L)) % K]
            sents.append(seq)
            nxt.append(sigma[seq[-1]])
    return NTPDataset.from_data(sents, np.array(nxt), sigma, K)
