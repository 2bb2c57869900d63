"""Softmax vs Gaussian attention: the multi-head layer of GDD and its gradient descent.

Song, Han, Zhang, Ding, Hong, *Unraveling the Gradient Descent Dynamics of Transformers*
(NeurIPS 2024; SPEC section 5) study one multi-head attention layer on a finite dataset
(X_i, Y_i), i = 1..N, X_i in R^{n x D}:

    head_h(X) = S(X W_Q^h, X W_K^h) X W_V^h,        T(X) = [head_1(X), ..., head_H(X)] W_O,

with W_Q^h, W_K^h in R^{D x d}, W_V^h in R^{D x d_v}, W_O in R^{H d_v x D_y} and S a non-causal
kernel of :mod:`markovformer.kernels` (softmax or Gaussian). The loss is the squared error summed
over the dataset, f = 1/2 sum_i |T(X_i) - Y_i|_F^2, minimised by full-batch gradient descent on a
chosen set of blocks.

With W_Q, W_K (and W_O) fixed, T is linear in W_V. Write W_O^h for the h-th block of d_v rows of
W_O and stack the attention outputs S^h_i X_i into the (N n) x (H D) matrix

    B = [[S^1_1 X_1, ..., S^H_1 X_1], ..., [S^1_N X_N, ..., S^H_N X_N]],

so that the outputs stacked over samples are sum_h B_h W_V^h W_O^h. If H D >= N n and B has full
row rank, every target is fitted exactly (the paper's over-parametrisation condition), and the
smallest singular value lambda_B = sigma_{N n}(B) > 0 sets the linear rate of GD (our derivation,
:func:`wv_rate`): with omega = min_h sigma_min(W_O^h),

    f_t <= (1 - eta omega^2 lambda_B^2)^{2t} f_0    for eta <= 1 / sigma_max(A)^2,

A being the linear map W_V -> outputs. The paper states the rate as (1 - eta alpha)^t f_0 with alpha
depending on W_O and lambda_B; ours is that form with alpha = omega^2 lambda_B^2, squared.

Everything here works in float64 and takes explicit generators. The module also holds the
labelled stand-ins for the paper's Long Range Arena tasks (a counting task for IMDb, a generated
mini-Pathfinder), a small 2-layer classifier, loss-landscape slices and a sharpness measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .kernels import AttentionKernel, get_kernel

__all__ = [
    "LayerConfig",
    "BLOCKS",
    "init_params",
    "stack_runs",
    "random_data",
    "teacher_data",
    "attention_weights",
    "forward",
    "loss",
    "loss_per_run",
    "value_design",
    "lambda_B",
    "value_map",
    "ls_optimum",
    "wv_rate",
    "gd",
    "counting_task",
    "pathfinder_task",
    "StandInClassifier",
    "train_classifier",
    "top_hessian_eigenvalue",
    "landscape_2d",
]

Params = dict[str, torch.Tensor]
DTYPE = torch.float64

#: the trainable block sets of :func:`gd`
BLOCKS = {"v": ("wv",), "qk": ("wq", "wk"), "all": ("wq", "wk", "wv", "wo")}


def _positive_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class LayerConfig:
    """Shapes and kernel of the multi-head layer (d, d_v, D_y default to D)."""

    n_samples: int  # N
    seq_len: int  # n
    dim: int  # D, the token dimension
    heads: int  # H
    key_dim: int | None = None  # d (the kernel's sqrt(d) uses it)
    value_dim: int | None = None  # d_v
    out_dim: int | None = None  # D_y
    kernel: str = "softmax"
    kernel_options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_samples", "seq_len", "dim", "heads"):
            _positive_int(name, getattr(self, name))
        for name in ("key_dim", "value_dim", "out_dim"):
            v = getattr(self, name)
            if v is None:
                object.__setattr__(self, name, self.dim)
            else:
                _positive_int(name, v)
        object.__setattr__(self, "kernel_options", tuple(sorted(dict(self.kernel_options).items())))
        self.make_kernel()  # raises for an unknown kernel or a bad option

    def make_kernel(self) -> AttentionKernel:
        return get_kernel(self.kernel, **dict(self.kernel_options))

    @property
    def ratio(self) -> float:
        """H D / (N n): the over-parametrisation ratio of the threshold H D >= N n."""
        return self.heads * self.dim / (self.n_samples * self.seq_len)


def _gen(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        raise ValueError("a torch.Generator is required (every draw is seeded explicitly)")
    return generator


def init_params(
    cfg: LayerConfig,
    generator: torch.Generator,
    qk_scale: float = 1.0,
    v_scale: float = 1.0,
    o_scale: float = 1.0,
    wo: str = "gaussian",
) -> Params:
    """Gaussian init: W_Q, W_K ~ N(0, qk_scale^2 / D) (for unit-variance tokens, queries and keys
    then have entries of standard deviation about ``qk_scale``), W_V ~ N(0, v_scale^2 / D).

    ``wo="gaussian"``: W_O ~ N(0, o_scale^2 / (H d_v)). ``wo="orthogonal"``: every block W_O^h
    (d_v x D_y, needs d_v >= D_y) is ``o_scale`` times a random matrix with orthonormal columns,
    so that omega = min_h sigma_min(W_O^h) = o_scale exactly (see :func:`wv_rate`).
    """
    g = _gen(generator)
    for name, s in (("qk_scale", qk_scale), ("v_scale", v_scale), ("o_scale", o_scale)):
        if (
            isinstance(s, bool)
            or not isinstance(s, (int, float))
            or not (s >= 0 and math.isfinite(s))
        ):
            raise ValueError(f"{name} must be a finite number >= 0, got {s!r}")
    if wo not in ("gaussian", "orthogonal"):
        raise ValueError(f"wo must be 'gaussian' or 'orthogonal', got {wo!r}")
    H, D, d, dv, Dy = cfg.heads, cfg.dim, cfg.key_dim, cfg.value_dim, cfg.out_dim
    if wo == "orthogonal" and dv < Dy:
        raise ValueError(f"orthogonal W_O blocks need value_dim >= out_dim, got {dv} < {Dy}")

    def draw(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=DTYPE) * std

    params = {
        "wq": draw(H, D, d, std=qk_scale / math.sqrt(D)),
        "wk": draw(H, D, d, std=qk_scale / math.sqrt(D)),
        "wv": draw(H, D, dv, std=v_scale / math.sqrt(D)),
    }
    if wo == "gaussian":
        params["wo"] = draw(H * dv, Dy, std=o_scale / math.sqrt(H * dv))
    else:
        blocks = torch.linalg.qr(draw(H, dv, Dy, std=1.0)).Q  # (H, d_v, D_y), orthonormal columns
        params["wo"] = o_scale * blocks.reshape(H * dv, Dy)
    return params


def stack_runs(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-run parameter (or data) dicts along a new leading run dimension."""
    if not items:
        raise ValueError("need at least one run to stack")
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def random_data(cfg: LayerConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Generic data: X_i and Y_i with i.i.d. N(0, 1) entries, shapes (N, n, D) and (N, n, D_y)."""
    g = _gen(generator)
    X = torch.randn(cfg.n_samples, cfg.seq_len, cfg.dim, generator=g, dtype=DTYPE)
    Y = torch.randn(cfg.n_samples, cfg.seq_len, cfg.out_dim, generator=g, dtype=DTYPE)
    return X, Y


def teacher_data(
    cfg: LayerConfig, teacher: Params, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with N(0, 1) entries and targets Y_i = T_teacher(X_i) (a realisable task: loss 0)."""
    g = _gen(generator)
    X = torch.randn(cfg.n_samples, cfg.seq_len, cfg.dim, generator=g, dtype=DTYPE)
    with torch.no_grad():
        Y = forward(teacher, X, cfg)
    return X, Y


def _check_inputs(params: Params, X: torch.Tensor, cfg: LayerConfig) -> None:
    shapes = {
        "wq": (cfg.heads, cfg.dim, cfg.key_dim),
        "wk": (cfg.heads, cfg.dim, cfg.key_dim),
        "wv": (cfg.heads, cfg.dim, cfg.value_dim),
        "wo": (cfg.heads * cfg.value_dim, cfg.out_dim),
    }
    lead = None
    for name, shape in shapes.items():
        if name not in params:
            raise ValueError(f"params is missing {name!r}")
        got = tuple(params[name].shape)
        if got[len(got) - len(shape) :] != shape or (
            lead is not None and got[: -len(shape)] != lead
        ):
            raise ValueError(f"{name} must have shape (..., {shape}), got {got}")
        lead = got[: -len(shape)]
    if X.ndim != len(lead) + 3 or tuple(X.shape[: len(lead)]) != lead or X.shape[-1] != cfg.dim:
        raise ValueError(f"X must have shape {(*lead, 'N', 'n', cfg.dim)}, got {tuple(X.shape)}")


def attention_weights(params: Params, X: torch.Tensor, cfg: LayerConfig) -> torch.Tensor:
    """S^h_i for every sample and head: (..., N, H, n, n), non-causal.

    Parameters may carry leading run dimensions (..., H, D, d) shared with X (..., N, n, D):
    independent runs then go through one batched program.
    """
    _check_inputs(params, X, cfg)
    q = torch.einsum("...bnD,...hDd->...bhnd", X, params["wq"])
    k = torch.einsum("...bnD,...hDd->...bhnd", X, params["wk"])
    return cfg.make_kernel().weights(q, k, causal=False)


def forward(
    params: Params, X: torch.Tensor, cfg: LayerConfig, S: torch.Tensor | None = None
) -> torch.Tensor:
    """T(X_i) for every sample: (..., N, n, D_y). ``S``: precomputed attention weights (used by
    :func:`gd` when W_Q and W_K are frozen)."""
    if S is None:
        S = attention_weights(params, X, cfg)
    else:
        _check_inputs(params, X, cfg)
    v = torch.einsum("...bnD,...hDe->...bhne", X, params["wv"])
    heads = (S @ v).transpose(-3, -2)  # (..., N, n, H, d_v)
    concat = heads.reshape(*heads.shape[:-2], -1)  # head-major columns
    return torch.einsum("...bnk,...ky->...bny", concat, params["wo"])


def loss_per_run(
    params: Params,
    X: torch.Tensor,
    Y: torch.Tensor,
    cfg: LayerConfig,
    S: torch.Tensor | None = None,
) -> torch.Tensor:
    """1/2 sum_i |T(X_i) - Y_i|_F^2 for each run: shape (...) of the leading run dimensions."""
    out = forward(params, X, cfg, S)
    if Y.shape != out.shape:
        raise ValueError(f"Y must have shape {tuple(out.shape)}, got {tuple(Y.shape)}")
    return 0.5 * ((out - Y) ** 2).sum(dim=(-3, -2, -1))


def loss(params: Params, X: torch.Tensor, Y: torch.Tensor, cfg: LayerConfig) -> torch.Tensor:
    """f = 1/2 sum_i |T(X_i) - Y_i|_F^2 (a sum, not a mean: the rate formulas use this scale);
    summed over runs when the parameters carry run dimensions."""
    return loss_per_run(params, X, Y, cfg).sum()


@torch.no_grad()
def value_design(params: Params, X: torch.Tensor, cfg: LayerConfig) -> torch.Tensor:
    """B: the (N n) x (H D) matrix of stacked attention outputs S^h_i X_i (see the module doc)."""
    S = attention_weights(params, X, cfg)
    SX = S @ X[:, None]  # (N, H, n, D)
    N, H, n, D = SX.shape
    return SX.permute(0, 2, 1, 3).reshape(N * n, H * D)


def lambda_B(B: torch.Tensor) -> float:
    """sigma_{N n}(B), the smallest singular value of B's N n rows; 0 when B has fewer columns."""
    rows, cols = B.shape
    if cols < rows:
        return 0.0
    return float(torch.linalg.svdvals(B)[rows - 1])


@torch.no_grad()
def value_map(params: Params, X: torch.Tensor, cfg: LayerConfig) -> torch.Tensor:
    """The matrix A of the linear map vec(W_V) -> vec(outputs): (N n D_y) x (H D d_v)."""
    B = value_design(params, X, cfg).reshape(-1, cfg.heads, cfg.dim)
    wo = params["wo"].reshape(cfg.heads, cfg.value_dim, cfg.out_dim)
    A = torch.einsum("rha,hby->ryhab", B, wo)
    return A.reshape(B.shape[0] * cfg.out_dim, -1)


@torch.no_grad()
def ls_optimum(
    params: Params, X: torch.Tensor, Y: torch.Tensor, cfg: LayerConfig
) -> tuple[float, torch.Tensor]:
    """The exact minimum of f over W_V (W_Q, W_K, W_O fixed) and a minimiser (minimum norm)."""
    A = value_map(params, X, cfg)
    y = Y.reshape(-1)
    w = torch.linalg.pinv(A) @ y
    opt = 0.5 * float(((A @ w - y) ** 2).sum())
    return opt, w.reshape(cfg.heads, cfg.dim, cfg.value_dim)


@torch.no_grad()
def wv_rate(params: Params, X: torch.Tensor, cfg: LayerConfig) -> dict[str, float]:
    """The constants of W_V-only GD (our derivation, see the module docstring).

    Returns lambda_B, omega = min_h sigma_min(W_O^h) (0 if d_v < D_y), alpha = omega^2 lambda_B^2
    (the guaranteed contraction), mu_min = the smallest eigenvalue of A A^T (the actual
    asymptotic contraction, >= alpha) and L = sigma_max(A)^2 (GD is stable for eta < 2 / L and the
    bound holds for eta <= 1 / L).
    """
    lam = lambda_B(value_design(params, X, cfg))
    wo = params["wo"].reshape(cfg.heads, cfg.value_dim, cfg.out_dim)
    if cfg.value_dim < cfg.out_dim:
        omega = 0.0
    else:
        omega = float(torch.linalg.svdvals(wo)[:, -1].min())
    A = value_map(params, X, cfg)
    sv = torch.linalg.svdvals(A)
    mu_min = float(sv[A.shape[0] - 1] ** 2) if A.shape[1] >= A.shape[0] else 0.0
    return {
        "lambda_B": lam,
        "omega": omega,
        "alpha": omega**2 * lam**2,
        "mu_min": mu_min,
        "L": float(sv[0] ** 2),
    }


def gd(
    params: Params,
    X: torch.Tensor,
    Y: torch.Tensor,
    cfg: LayerConfig,
    lr: float,
    steps: int,
    blocks: str = "v",
) -> tuple[np.ndarray, Params]:
    """Full-batch gradient descent on the blocks ``blocks`` ("v", "qk" or "all").

    Returns the loss before each update and after the last one, shape (steps + 1,) or
    (..., steps + 1) for parameters with leading run dimensions (each run follows its own GD), and
    the final parameters (new tensors; ``params`` is not modified). A run whose loss stops being
    finite is frozen and its later losses are NaN.
    """
    if blocks not in BLOCKS:
        raise ValueError(f"blocks must be one of {sorted(BLOCKS)}, got {blocks!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    _check_inputs(params, X, cfg)
    p = {k: v.detach().clone() for k, v in params.items()}
    names = BLOCKS[blocks]
    lead = tuple(p["wo"].shape[:-2])
    for k in names:
        p[k].requires_grad_(True)
    losses = np.full((*lead, steps + 1), np.nan)
    alive = torch.ones(lead, dtype=torch.bool)
    S = None if {"wq", "wk"} & set(names) else attention_weights(p, X, cfg).detach()
    for t in range(steps + 1):
        f = loss_per_run(p, X, Y, cfg, S)
        alive &= torch.isfinite(f.detach())
        losses[..., t] = np.where(alive.numpy(), f.detach().numpy(), np.nan)
        if t == steps or not bool(alive.any()):
            break
        grads = torch.autograd.grad(torch.where(alive, f, 0.0).sum(), [p[k] for k in names])
        with torch.no_grad():
            for k, g in zip(names, grads, strict=True):
                mask = alive.reshape(*lead, *([1] * (g.ndim - len(lead))))
                p[k] -= lr * torch.where(mask, torch.nan_to_num(g), 0.0)
    return losses, {k: v.detach() for k, v in p.items()}


# --------------------------------------------------------------------------------------------
# Stand-ins for the paper's Long Range Arena tasks (labelled as such everywhere)
# --------------------------------------------------------------------------------------------


def _np_gen(generator) -> np.random.Generator:
    if not isinstance(generator, np.random.Generator):
        raise ValueError(
            f"generator must be a numpy.random.Generator, got {type(generator).__name__}"
        )
    return generator


def counting_task(
    n_examples: int, generator: np.random.Generator, seq_len: int = 32, vocab: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for IMDb sentiment: count positive minus negative words, with negation.

    Tokens are i.i.d. uniform on {0, ..., vocab - 1}. Token 1 plays a positive word, token 2 a
    negative one and token 3 the word "not", which flips the polarity of the word right after it.
    The label is 1 if the signed count sum_t s(x_t) (-1 if x_{t-1} = 3) is positive, with
    s(1) = 1, s(2) = -1 and 0 otherwise; sequences with a zero count are discarded (the classes
    are balanced by symmetry). Mean-pooled token counts alone do not solve it: the negation needs
    a look at the previous position. Returns tokens (n, seq_len) int64 and labels (n,) int64.
    """
    _positive_int("n_examples", n_examples)
    _positive_int("seq_len", seq_len)
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 4:
        raise ValueError(f"vocab must be an integer >= 4, got {vocab!r}")
    rng = _np_gen(generator)
    kept: list[np.ndarray] = []
    have = 0
    while have < n_examples:
        x = rng.integers(0, vocab, size=(2 * n_examples, seq_len))
        score = _sentiment_score(x)
        kept.append(x[score != 0])
        have += len(kept[-1])
    x = np.concatenate(kept)[:n_examples]
    y = (_sentiment_score(x) > 0).astype(np.int64)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)


def _sentiment_score(x: np.ndarray) -> np.ndarray:
    """The signed count of :func:`counting_task` for each row of x."""
    s = (x == 1).astype(np.int64) - (x == 2)
    flip = np.ones_like(s)
    flip[:, 1:] -= 2 * (x[:, :-1] == 3)
    return (s * flip).sum(1)


_STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))
_ORDERS = tuple(__import__("itertools").permutations(range(4)))  # the 24 orders of the 4 moves


def _snake(rng: np.random.Generator, grid: int, length: int, blocked: np.ndarray):
    """A self-avoiding walk of ``length`` cells avoiding ``blocked``, or None after retries.

    Besides never revisiting a cell, a new cell may touch (4-neighbourhood) no cell of the walk
    except the previous one, so the walk never runs alongside itself.
    """
    free = ~blocked
    for _ in range(50):
        r0, c0 = (int(v) for v in rng.integers(0, grid, size=2))
        if not free[r0, c0]:
            continue
        cells = [(r0, c0)]
        seen = {cells[0]}
        orders = rng.integers(0, 24, size=length)
        for step in range(length - 1):
            r, c = cells[-1]
            nxt = None
            for m in _ORDERS[orders[step]]:
                rr, cc = r + _STEPS[m][0], c + _STEPS[m][1]
                if not (0 <= rr < grid and 0 <= cc < grid) or (rr, cc) in seen or not free[rr, cc]:
                    continue
                if sum((rr + a, cc + b) in seen for a, b in _STEPS) == 1:
                    nxt = (rr, cc)
                    break
            if nxt is None:
                break
            cells.append(nxt)
            seen.add(nxt)
        if len(cells) == length:
            return cells
    return None


def pathfinder_task(
    n_examples: int, generator: np.random.Generator, grid: int = 8, length: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for LRA Pathfinder: are the two dots joined by a path? (a generated mini version)

    Each image (grid x grid) holds two non-touching self-avoiding paths of ``length`` cells
    (value 1). Two cells are marked as dots (value 2): for label 1 the two ends of the first
    path, for label 0 one end of each path; labels alternate, so the classes are balanced. The
    image is flattened row by row into a sequence of grid**2 tokens in {0, 1, 2}. Returns
    tokens (n, grid**2) int64 and labels (n,) int64.
    """
    _positive_int("n_examples", n_examples)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 4:
        raise ValueError(f"grid must be an integer >= 4, got {grid!r}")
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= grid:
        raise ValueError(f"length must be an integer in [2, grid={grid}], got {length!r}")
    rng = _np_gen(generator)
    xs = np.zeros((n_examples, grid, grid), dtype=np.int64)
    ys = np.arange(n_examples, dtype=np.int64) % 2
    i = 0
    while i < n_examples:
        img = np.zeros((grid, grid), dtype=np.int64)
        a = _snake(rng, grid, length, img.astype(bool))
        if a is None:
            continue
        for r, c in a:
            img[r, c] = 1
        halo = np.zeros((grid + 2, grid + 2), dtype=bool)  # cells of a and their neighbours
        for r, c in a:
            halo[r : r + 3, c + 1] = True
            halo[r + 1, c : c + 3] = True
        b = _snake(rng, grid, length, halo[1:-1, 1:-1])
        if b is None:
            continue
        for r, c in b:
            img[r, c] = 1
        ends = [a[0], a[-1]] if ys[i] == 1 else [a[int(rng.integers(2)) * (length - 1)], b[0]]
        for r, c in ends:
            img[r, c] = 2
        xs[i] = img
        i += 1
    return torch.from_numpy(xs.reshape(n_examples, grid * grid)), torch.from_numpy(ys)


class _Block(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN x), then x + FFN(LN x) (non-causal attention)."""

    def __init__(self, dim: int, heads: int, ffn: int, kernel: AttentionKernel) -> None:
        super().__init__()
        self.heads, self.kernel = heads, kernel
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.ff1, self.ff2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = self.kernel.weights(q, k, causal=False) @ v  # (B, heads, L, D / heads); explicit
        # weights (not the fused softmax) so that Hessian-vector products work
        x = x + self.proj(att.transpose(1, 2).reshape(B, L, D))
        return x + self.ff2(F.relu(self.ff1(self.ln2(x))))


class StandInClassifier(nn.Module):
    """The 2-layer classifier of GDD's LRA experiments, scaled down (SPEC section 5).

    Token embedding + learned positions, ``layers`` pre-LayerNorm blocks with a pluggable
    non-causal attention kernel, mean pooling, LayerNorm, linear head. The paper used D = 64,
    FFN 128, H = 2; the book's stand-ins use D = 16, FFN 32, H = 2. Parameters are drawn from
    ``generator`` (not from torch's global RNG).
    """

    def __init__(
        self,
        vocab: int,
        seq_len: int,
        generator: torch.Generator,
        dim: int = 16,
        heads: int = 2,
        ffn: int = 32,
        layers: int = 2,
        n_classes: int = 2,
        kernel: str = "softmax",
        kernel_options: tuple[tuple[str, float], ...] = (),
    ) -> None:
        super().__init__()
        for name, v in (("vocab", vocab), ("seq_len", seq_len), ("dim", dim), ("heads", heads),
                        ("ffn", ffn), ("layers", layers), ("n_classes", n_classes)):  # fmt: skip
            _positive_int(name, v)
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        kern = get_kernel(kernel, **dict(kernel_options))
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(seq_len, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, ffn, kern) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        g = _gen(generator)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias") or ".ln" in name or name.startswith("ln."):
                    p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
                elif p.ndim == 2 and name not in ("tok.weight", "pos"):
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] > self.pos.shape[0]:
            raise ValueError(
                f"x must have shape (batch, length <= {self.pos.shape[0]}), got {tuple(x.shape)}"
            )
        h = self.tok(x) + self.pos[: x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h.mean(1)))


def train_classifier(
    model: nn.Module,
    train_data: tuple[torch.Tensor, torch.Tensor],
    test_data: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    optimizer: str = "sgd",
    lr: float = 0.1,
    steps: int = 300,
    batch_size: int = 64,
    eval_every: int = 25,
    momentum: float = 0.9,
) -> dict[str, np.ndarray]:
    """Mini-batch training with cross-entropy: SGD (with momentum) or Adam.

    Returns ``step`` (evaluation steps, 0 included), ``train_loss`` (per step, on the batch),
    ``test_loss`` and ``test_acc`` at the evaluation steps.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        _positive_int(name, v)
    xtr, ytr = train_data
    if len(xtr) != len(ytr) or len(xtr) < batch_size:
        raise ValueError(
            f"need as many labels as inputs and at least batch_size={batch_size} of them, "
            f"got {len(xtr)} inputs and {len(ytr)} labels"
        )
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    g = _gen(generator)

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        logits = model(test_data[0])
        return (
            float(F.cross_entropy(logits, test_data[1])),
            float((logits.argmax(1) == test_data[1]).double().mean()),
        )

    evals, train_loss, order, pos = [(0, *evaluate())], np.empty(steps), torch.empty(0), 0
    for t in range(1, steps + 1):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(xtr), generator=g), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        f = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        f.backward()
        opt.step()
        train_loss[t - 1] = float(f.detach())
        if t % eval_every == 0 or t == steps:
            evals.append((t, *evaluate()))
    ev = np.array(evals)
    return {
        "step": ev[:, 0].astype(np.int64),
        "train_loss": train_loss,
        "test_loss": ev[:, 1],
        "test_acc": ev[:, 2],
    }


# --------------------------------------------------------------------------------------------
# Sharpness and loss-landscape slices
# --------------------------------------------------------------------------------------------


def top_hessian_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    generator: torch.Generator,
    iters: int = 30,
) -> float:
    """The Hessian eigenvalue of largest magnitude of ``loss_fn()`` at ``params`` (sharpness).

    Power iteration with Hessian-vector products (double back-propagation); returns the Rayleigh
    quotient v.Hv of the last iterate. Near a minimum this is the top (positive) eigenvalue.
    """
    _positive_int("iters", iters)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("params must contain at least one tensor that requires grad")
    g = _gen(generator)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    eig = 0.0
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        eig = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))
        norm = torch.sqrt(sum((x * x).sum() for x in hv))
        if not norm > 0:
            break
        v = [x.detach() / norm for x in hv]
    return eig


def _filter_normalised_direction(model: nn.Module, g: torch.Generator) -> list[torch.Tensor]:
    """A random direction, each row rescaled to the norm of the weight's row (Li et al., 2018);
    zero on vectors (biases, LayerNorm gains)."""
    out = []
    for p in model.parameters():
        if p.ndim < 2:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=g, dtype=p.dtype)
        rows, drows = p.detach().reshape(p.shape[0], -1), d.reshape(p.shape[0], -1)
        scale = rows.norm(dim=1, keepdim=True) / drows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out.append((drows * scale).reshape(p.shape))
    return out


@torch.no_grad()
def landscape_2d(
    model: nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    generator: torch.Generator,
    span: float = 1.0,
    points: int = 21,
) -> dict[str, np.ndarray]:
    """The loss on the plane theta* + a d1 + b d2, a, b in [-span, span], around the current
    parameters theta*, with two random filter-normalised directions d1, d2 (Li et al., 2018).

    Returns ``alpha`` and ``beta`` (points,) and ``loss`` (points, points), indexed [beta, alpha].
    The model's parameters are restored afterwards.
    """
    _positive_int("points", points)
    if not (span > 0 and math.isfinite(span)):
        raise ValueError(f"span must be a finite number > 0, got {span!r}")
    g = _gen(generator)
    d1 = _filter_normalised_direction(model, g)
    d2 = _filter_normalised_direction(model, g)
    base = [p.detach().clone() for p in model.parameters()]
    grid = np.linspace(-span, span, points)
    out = np.empty((points, points))
    try:
        for i, b in enumerate(grid):
            for j, a in enumerate(grid):
                for p, p0, u, w in zip(model.parameters(), base, d1, d2, strict=True):
                    p.copy_(p0 + a * u + b * w)
                out[i, j] = float(loss_fn())
    finally:
        for p, p0 in zip(model.parameters(), base, strict=True):
            p.copy_(p0)
    return {"alpha": grid, "beta": grid.copy(), "loss": out}
