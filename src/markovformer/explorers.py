"""The data behind the book's interactive figures, shared by both front-ends.

Every interaction of the book exists twice (DESIGN.md): an ipywidgets panel for Binder and Colab
(:mod:`markovformer.widgets`, matplotlib) and a live figure that runs in the static HTML page
(:mod:`markovformer.live`, Bokeh). Both read their data from the functions here, so they cannot
drift apart. Nothing here trains: each function evaluates a closed form, samples a few hundred
symbols from a seed, or repacks arrays that a chapter loaded from its artifacts.

Where the page recomputes something in JavaScript (the sampler, the canonical landscape, a
rank-one transformer, the attention kernels), the functions below also return the seeded random
inputs that JavaScript cannot draw itself: the uniforms of the chain sampler, the standard normals
of a Gaussian initialisation, the random queries and keys of the kernel example.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .markov import BinaryChain, binary_entropy_rate, binary_unigram_loss

__all__ = [
    "loss_grid",
    "chain_uniforms",
    "chain_sample",
    "chain_levels",
    "basin_curve",
    "init_normals",
    "init_starts",
    "canonical_paths",
    "run_flow",
    "reduction_weights",
    "reduction_logits",
    "kernel_inputs",
    "kernel_matrices",
    "dataset",
    "dataset_table",
]


@functools.lru_cache(maxsize=4)
def loss_grid(resolution: int = 199) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p, q, entropy rate, unigram loss) on a grid of the open unit square; rows index q."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    g = np.linspace(0.5 / (resolution + 1), 1 - 0.5 / (resolution + 1), resolution)
    P, Q = np.meshgrid(g, g)
    return g, g, binary_entropy_rate(P, Q), binary_unigram_loss(P, Q)


# --------------------------------------------------------------------------------------------
# Chain samples (chapters 1 and 3)
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def chain_uniforms(seed: int, n_sequences: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The random inputs of ``BinaryChain(p, q).sample(n_sequences, length, generator)`` for a
    generator seeded with ``seed``, which do not depend on (p, q).

    :func:`markovformer.markov.sample_binary_chains` draws uniforms ``u`` of shape
    ``(1, n_sequences, length + 1)``; ``u[..., 0]`` picks the first symbol and
    ``-log1p(-u[..., 1:])`` (float32, computed by torch) are the Exp(1) variables that set the run
    lengths. Returns ``(u0, expo)`` as float32 arrays of shapes (n_sequences,) and
    (n_sequences, length): with them, the page rebuilds the sample of any (p, q) exactly.
    """
    n_sequences = _check_int("n_sequences", n_sequences, 1)
    length = _check_int("length", length, 1)
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    u = torch.rand(1, n_sequences, length + 1, generator=gen)[0]
    expo = torch.log1p(-u[:, 1:]).neg_()
    return u[:, 0].numpy().astype(np.float32), expo.numpy().astype(np.float32)


def chain_sample(p: float, q: float, seed: int, n_sequences: int, length: int) -> np.ndarray:
    """``n_sequences`` paths of ``length`` bits of the chain (p, q) from seed ``seed``, int8."""
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    x = BinaryChain(p, q).sample(n_sequences, length, generator=gen)
    return x.numpy().astype(np.int8)


def chain_levels(p: float, q: float) -> tuple[float, float]:
    """(entropy rate, unigram loss) of the chain (p, q), in nats."""
    chain = BinaryChain(p, q)
    return chain.entropy_rate, chain.unigram_loss


# --------------------------------------------------------------------------------------------
# The canonical landscape (chapters 4 and 5)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def basin_curve(switching: bool, n: int = 20_000) -> dict[str, np.ndarray]:
    """Pr((e0, w0) ~ N(0, s^2 I) lies in the global basin) on a log grid of 60 scales s."""
    from .canonical import basin_probabilities

    prob = basin_probabilities(np.geomspace(0.01, 5.0, 60), n=n)
    return {"scale": prob["scale"], "global": prob["switching" if switching else "sticky"]}


def init_normals(seed: int, n: int) -> np.ndarray:
    """Standard normals (n, 2) from ``np.random.default_rng(seed)``: the Gaussian starts of
    scale s are ``s * init_normals(seed, n)``, exactly ``default_rng(seed).normal(0, s, (n, 2))``."""
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    return rng.normal(0.0, 1.0, size=(_check_int("n", n, 1), 2))


def init_starts(scale: float, seed: int, n: int) -> np.ndarray:
    """Gaussian starting points (e0, w0) ~ N(0, scale^2 I), shape (n, 2)."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return float(scale) * init_normals(seed, n)


def canonical_paths(
    p: float, q: float, e0: float, w0: float, lr: float = 0.5, steps: int = 1500
) -> tuple[object, object, dict[str, np.ndarray]]:
    """(landscape, gradient flow, gradient descent) of the canonical model of the chain (p, q)
    from (e0, w0): the flow runs for time ``steps * lr``, gradient descent on (e, w, b) for
    ``steps`` steps of size ``lr`` (:mod:`markovformer.canonical`)."""
    from .canonical import CanonicalLandscape, gradient_descent, gradient_flow

    land = CanonicalLandscape(p, q)
    flow = gradient_flow(land, e0, w0, t_max=steps * lr)
    gd = gradient_descent(land, e0, w0, lr=lr, steps=steps)
    return land, flow, gd


def run_flow(row: dict):
    """The gradient flow of the canonical model from the projected start of a trained run (a row
    of :func:`markovformer.experiments.l2g.trajectory_table`)."""
    from .canonical import CanonicalLandscape, gradient_flow

    land = CanonicalLandscape(*row["chain"])
    return gradient_flow(land, float(row["e"][0]), float(row["w"][0]))


# --------------------------------------------------------------------------------------------
# The rank-one reduction (chapter 3)
# --------------------------------------------------------------------------------------------


def reduction_weights(length: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of the full transformer (d = 8) that :func:`markovformer.init.rank_one_` builds
    for the canonical point (e, w, a) = (1, 1, 1), direction seed ``seed``, float64.

    Each weight is one of these arrays times a factor of the canonical point: emb and pos
    times |e|, w1 times |w|, w2 times w, wv times a (wq, wk, wo and bias do not depend on it).
    """
    from .init import rank_one_
    from .model import MarkovTransformer, TransformerConfig

    model = MarkovTransformer(TransformerConfig(d=8, seq_len=length), 1).double()
    rank_one_(model, [seed], e=1.0, w=1.0, a=1.0)
    return {
        name: getattr(model, name).detach()[0].squeeze(0).numpy().copy()
        for name in ("emb", "pos", "wq", "wk", "wv", "wo", "w1", "w2", "bias")
    }


def reduction_logits(
    e: float, w: float, a: float, p: float, q: float, seed: int = 0, length: int = 96
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bits, full-transformer logits, canonical logits) on one sequence of the chain (p, q):
    the full transformer realises (e, w, a) exactly (rank-one weights, d = 8, uniform attention);
    the canonical model is the three-number model of chapter 3."""
    from .canonical import CanonicalModel
    from .init import rank_one_
    from .model import MarkovTransformer, TransformerConfig

    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    x = BinaryChain(p, q).sample(1, length, generator=gen)
    full = MarkovTransformer(TransformerConfig(d=8, seq_len=length), 1).double()
    rank_one_(full, [0], e=e, w=w, a=a)
    canon = CanonicalModel(1, attention=a != 0).double().set_(e, w, 0.0, a if a != 0 else None)
    with torch.no_grad():
        lf, lc = full(x[None])[0, 0].numpy(), canon(x[None])[0, 0].numpy()
    return x[0].numpy().astype(np.int8), lf, lc


# --------------------------------------------------------------------------------------------
# Attention kernels (chapter 6)
# --------------------------------------------------------------------------------------------


def kernel_inputs(seed: int = 0, n: int = 8, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Queries and keys (n, dim) of :func:`markovformer.experiments.gdd.kernel_example` at
    ``qk_scale = 1``; at another scale s both are s times these (W_Q, W_K scale linearly)."""
    from . import gdd as G
    from .experiments.gdd import kernel_options
    from .rng import make_generator

    cfg = G.LayerConfig(1, n, dim, 1, kernel="softmax", kernel_options=kernel_options("softmax"))
    g = make_generator(_check_int("seed", seed, 0), "gdd-kernels")
    X, _ = G.random_data(cfg, g)
    params = G.init_params(cfg, g, qk_scale=1.0)
    q = torch.einsum("bnD,hDd->bhnd", X, params["wq"])[0, 0]
    k = torch.einsum("bnD,hDd->bhnd", X, params["wk"])[0, 0]
    return q.numpy().astype(np.float64), k.numpy().astype(np.float64)


def kernel_matrices(c: float = 2.0, qk_scale: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Softmax, Gaussian and row-normalised Gaussian attention on one random input (the package's
    :func:`markovformer.experiments.gdd.kernel_example`)."""
    from .experiments import gdd

    return gdd.kernel_example(qk_scale=qk_scale, seed=seed, c=c)


# --------------------------------------------------------------------------------------------
# Realisable next-token datasets (chapter 7)
# --------------------------------------------------------------------------------------------


def dataset(n_tokens: int, n_sentences: int, max_len: int, seed: int):
    """The dataset of :func:`markovformer.ntp.make_dataset` with sentences of length 2..max_len."""
    from . import ntp

    if max_len > n_tokens:
        raise ValueError(
            f"max_len must be <= n_tokens (a sentence has distinct tokens), got max_len={max_len}"
            f" and n_tokens={n_tokens}"
        )
    return ntp.make_dataset(n_tokens, n_sentences, 2, max_len, seed)


def dataset_table(
    tokens: range = range(3, 17),
    sentences: range = range(1, 11),
    lengths: range = range(2, 11),
    seeds: range = range(0, 10),
) -> dict[str, np.ndarray]:
    """Every dataset of :func:`dataset` over the given ranges, packed for the page.

    Returns ``blob`` (int8): for each dataset, for each sentence, its length L, its L tokens and
    its optimal token; ``offset`` (int32, -1 where max_len > n_tokens): where each dataset starts in
    ``blob``, indexed by ``((K_i * len(lengths) + L_i) * len(sentences) + N_i) * len(seeds) + s_i``;
    and ``collocation`` (int8, -1 = no follower), indexed by ``(K_i * len(seeds) + s_i) * Kmax + x``
    (the collocation depends on K and the seed only). The ranges themselves are returned too.
    """
    for name, r in (("tokens", tokens), ("sentences", sentences), ("lengths", lengths)):
        if r.step != 1 or len(r) == 0:
            raise ValueError(f"{name} must be a non-empty range with step 1, got {r}")
    if tokens.start < 2 or lengths.start < 2 or sentences.start < 1 or tokens.stop > 128:
        raise ValueError("need tokens in 2..127, lengths >= 2 and sentences >= 1")
    kmax = tokens.stop - 1
    blob: list[int] = []
    offset = np.full(len(tokens) * len(lengths) * len(sentences) * len(seeds), -1, dtype=np.int32)
    colloc = np.full((len(tokens), len(seeds), kmax), -1, dtype=np.int8)
    i = 0
    for ki, K in enumerate(tokens):
        for L in lengths:
            for N in sentences:
                for si, s in enumerate(seeds):
                    if L <= K:
                        ds = dataset(K, N, L, s)
                        colloc[ki, si, :K] = ds.collocation
                        offset[i] = len(blob)
                        for r in range(N):
                            n = int(ds.lengths[r])
                            blob += [n, *ds.tokens[r, :n].tolist(), int(ds.optimal[r])]
                    i += 1
    return {
        "blob": np.asarray(blob, dtype=np.int8),
        "offset": offset,
        "collocation": colloc.reshape(-1),
        "tokens": np.arange(tokens.start, tokens.stop),
        "sentences": np.arange(sentences.start, sentences.stop),
        "lengths": np.arange(lengths.start, lengths.stop),
        "seeds": np.arange(seeds.start, seeds.stop),
    }
