"""Named initialisations of :class:`markovformer.model.MarkovTransformer`, and the maps between
full weights and the canonical coordinates (e, w, a) of *Local to Global* (SPEC sections 2-3).

Each initialiser writes one run's parameters from that run's own seed, so a run starts the same way
whatever batch of runs it is trained in.

Realising a canonical point (SPEC section 3): take a unit vector alpha in R^d and beta >= 0 in
R^{4d} with |beta|^2 = 4, and set

    token embedding  = e alpha,             positions p_n = -(e/2) alpha,
    W_1 = |w| beta alpha^T,                 W_2 = w alpha beta^T = sign(w) W_1^T,
    attention output = 0 (or W_Q = W_K = 0, W_V = a alpha alpha^T, W_O = I for the 3-D model).

Then the tied model's logit is exactly e^2 (1 + 2 w|w|) x_n + b - e^2/2 at every position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .model import MarkovTransformer
from .rng import make_generator

__all__ = [
    "gaussian_",
    "rank_one_",
    "guideline_",
    "authors_good_",
    "initialise",
    "INITIALISERS",
    "canonical_coordinates",
    "rank_one_energy",
    "GUIDELINE_E",
    "GUIDELINE_W",
    "RESIDUAL_STYLES",
    "residual_std",
]

#: the guideline's default point: in the global basin for p + q > 1 (w < -1/sqrt 2), far from the
#: separatrix (energy 1 - 1 - ln 1 = 0 > E_saddle); chapter 5 motivates the choice
GUIDELINE_E, GUIDELINE_W = 1.0, -1.0

#: How a Gaussian init draws the two residual output projections (attention W_O and MLP W_2):
#: "gpt2", the authors' code (models/base.py: std / sqrt(2 * depth) for every "c_proj", the
#: default); "flat", the same std as every other matrix (the book's init before this was fixed).
RESIDUAL_STYLES = ("gpt2", "flat")
_RESIDUAL_PROJECTIONS = ("wo", "w2")


def residual_std(std: float, depth: int, residual: str = "gpt2") -> float:
    """Standard deviation of W_O and W_2 under a Gaussian init of scale ``std``."""
    if residual not in RESIDUAL_STYLES:
        raise ValueError(f"residual must be one of {RESIDUAL_STYLES}, got {residual!r}")
    return std / math.sqrt(2 * depth) if residual == "gpt2" else std


@torch.no_grad()
def gaussian_(
    model: MarkovTransformer, seeds: Sequence[int], std: float = 0.02, residual: str = "gpt2"
) -> None:
    """The default init of the papers' code (GPT-2 style, SPEC section 2): every matrix and
    embedding ~ N(0, std^2), except the residual output projections W_O and W_2, which get
    std / sqrt(2 * depth) (``residual="gpt2"``; ``"flat"`` gives them std too); bias 0.

    Draws, for each run, in the fixed parameter order of the model, from the run's "init"
    stream, so the result depends only on (seed, std, residual, architecture).
    """
    _check_seeds(model, seeds)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
        raise ValueError(f"std must be a number >= 0, got {std!r}")
    proj_std = residual_std(std, model.config.depth, residual)
    for r, seed in enumerate(seeds):
        gen = make_generator(seed, "init")
        for name, p in model.named_run_parameters().items():
            if name == "bias":
                p[r].zero_()
            else:
                scale = proj_std if name in _RESIDUAL_PROJECTIONS else std
                p[r].copy_(torch.randn(p.shape[1:], generator=gen) * scale)


def _default_attention_(model, r: int, layer: int | None, gen, std: float, residual: str) -> None:
    """Attention matrices of run r (one layer, or all if None) at the default Gaussian init."""
    proj_std = residual_std(std, model.config.depth, residual)
    for wname in ("wq", "wk", "wv", "wo"):
        par = getattr(model, wname)
        if par is not None:
            target = par[r] if layer is None else par[r, layer]
            scale = proj_std if wname == "wo" else std
            target.copy_(torch.randn(target.shape, generator=gen) * scale)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


@torch.no_grad()
def rank_one_(
    model: MarkovTransformer,
    seeds: Sequence[int],
    e: float = 1.0,
    w: float = 1.0,
    a: float = 0.0,
    attention: str = "zero",
    attention_std: float = 0.02,
    direction: str = "signs",
    residual: str = "gpt2",
) -> None:
    """Rank-one init realising the canonical point (e, w[, a]) exactly (module docstring).

    ``direction`` chooses alpha (unit, in R^d) and beta (>= 0, |beta| = 2, in R^{4d}):

    * "signs" (default): alpha has entries +-1/sqrt(d) with random signs from the run's seed and
      beta = (1, ..., 1)/sqrt(d). All entries of each matrix have the same magnitude, which Adam's
      coordinate-wise (sign-like) steps preserve, so the weights *stay* rank one under Adam;
    * "constant": alpha = (1, ..., 1)/sqrt(d), as in the authors' constant init;
    * "gaussian": alpha uniform on the sphere and beta = 2 |g|/|g| for a Gaussian g: rank one, but
      Adam's steps along sign(alpha) sign(beta)^T add a second direction (chapter 3).
    ``attention``: "zero" (W_Q = W_K = W_O = 0 and W_V = a alpha alpha^T: exactly the canonical
    model, the 3-D one if a != 0), or "gaussian" (attention at the default Gaussian init of scale
    ``attention_std``, W_O drawn as ``residual`` says, as in the authors' code).
    """
    _check_seeds(model, seeds)
    cfg = model.config
    if not cfg.binary:
        raise ValueError("rank-one inits are defined for the binary model (n_states = 2)")
    if attention not in ("zero", "gaussian"):
        raise ValueError(f"attention must be 'zero' or 'gaussian', got {attention!r}")
    if direction not in ("signs", "constant", "gaussian"):
        raise ValueError(f"direction must be 'signs', 'constant' or 'gaussian', got {direction!r}")
    for name, v in (("e", e), ("w", w), ("a", a)):
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    d, m, N = cfg.d, cfg.mlp_ratio * cfg.d, cfg.seq_len
    e_abs = abs(float(e))  # the model depends on e^2 only: a negative e uses -alpha
    for r, seed in enumerate(seeds):
        gen = make_generator(seed, "init")
        f64 = torch.float64  # built in float64, then copied into the parameters' dtype
        if direction == "gaussian":
            alpha = _unit(torch.randn(d, generator=gen, dtype=f64))
            beta = 2 * _unit(torch.randn(m, generator=gen, dtype=f64).abs())
        else:
            signs = torch.ones(d, dtype=f64)
            if direction == "signs":
                coin = torch.rand(d, generator=gen, dtype=f64) < 0.5
                signs = 1.0 - 2.0 * coin.to(f64)
            alpha = signs / math.sqrt(d)
            beta = torch.full((m,), 2 / math.sqrt(m), dtype=f64)
        model.emb[r] = e_abs * alpha
        model.pos[r] = -(e_abs / 2) * alpha.expand(N, d)
        for layer in range(cfg.depth):
            model.w1[r, layer] = abs(w) * torch.outer(beta, alpha)
            model.w2[r, layer] = w * torch.outer(alpha, beta)
            if attention == "zero":
                model.wq[r, layer] = 0.0
                model.wk[r, layer] = 0.0
                model.wv[r, layer] = a * torch.outer(alpha, alpha)
                if model.wo is not None:
                    model.wo[r, layer] = torch.eye(d, dtype=f64) if a != 0 else 0.0
                elif a != 0:
                    raise ValueError("a != 0 needs the attention output projection W_O")
            else:
                _default_attention_(model, r, layer, gen, attention_std, residual)
        if model.out is not None:
            model.out[r] = e_abs * alpha
        model.bias[r] = 0.0


@torch.no_grad()
def guideline_(
    model: MarkovTransformer,
    seeds: Sequence[int],
    e: float = GUIDELINE_E,
    w: float = GUIDELINE_W,
    attention_std: float = 0.02,
    residual: str = "gpt2",
) -> None:
    """The L2G guideline for p + q > 1: start rank one *in the global basin* (w < -1/sqrt 2), the
    MLP opposing the skip path (W_2 = -W_1^T), positions -e/2, attention at its default init.

    For p + q < 1 the standard Gaussian init is already in the global basin (chapter 4).
    """
    if not w < -1 / math.sqrt(2):
        raise ValueError(f"the guideline needs w < -1/sqrt(2) = -0.7071, got w={w!r}")
    rank_one_(
        model, seeds, e=e, w=w, attention="gaussian", attention_std=attention_std, residual=residual
    )


@torch.no_grad()
def authors_good_(
    model: MarkovTransformer,
    seeds: Sequence[int],
    attention_std: float = 0.02,
    residual: str = "gpt2",
) -> None:
    """The constant "good" init of the authors' code for p + q > 1 (commit 5807025 of
    Bond1995/Markov): every entry of e = 0.5, of p_n = -0.25, of W_1 = +1, of W_2 = -1; attention
    at its default N(0, 0.02^2) init. In canonical coordinates: e = sqrt(d)/2 = sqrt 2 and
    w = -(4d)/... = -8 for d = 8 (see :func:`canonical_coordinates`).
    """
    _check_seeds(model, seeds)
    cfg = model.config
    if not cfg.binary:
        raise ValueError("the authors' init is defined for the binary model (n_states = 2)")
    for r, seed in enumerate(seeds):
        gen = make_generator(seed, "init")
        model.emb[r] = 0.5
        model.pos[r] = -0.25
        model.w1[r] = 1.0
        model.w2[r] = -1.0
        _default_attention_(model, r, None, gen, attention_std, residual)
        if model.out is not None:
            model.out[r] = 0.5
        model.bias[r] = 0.0


INITIALISERS = {
    "gaussian": gaussian_,
    "rank_one": rank_one_,
    "guideline": guideline_,
    "authors_good": authors_good_,
}


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


# --------------------------------------------------------------------------------------------
# Full weights -> canonical coordinates
# --------------------------------------------------------------------------------------------


def canonical_coordinates(
    state: dict[str, np.ndarray | torch.Tensor], layer: int = 0
) -> dict[str, float]:
    """Project one run's weights (names as in the model, no run axis) onto (e, w, a).

    alpha is the direction of the token embedding; e = |embedding|; w is read off the MLP's gain
    along alpha, alpha^T W_2 relu(W_1 alpha) = 4 w|w| for a canonical point; a is the attention
    value-output gain alpha^T W_O W_V alpha. Exact for rank-one points; for trained weights it is
    the projection used in chapter 4 (report the rank-one energies beside it).
    """
    t = {
        k: (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(
            torch.float64
        )
        for k, v in state.items()
    }
    emb = t["emb"]
    if emb.ndim != 1:
        raise ValueError("canonical coordinates are defined for the binary model")
    e = float(emb.norm())
    if e == 0:
        return {"e": 0.0, "w": 0.0, "a": 0.0}
    alpha = emb / e
    w1, w2 = t["w1"][layer], t["w2"][layer]
    gain = float(alpha @ w2 @ torch.relu(w1 @ alpha))
    w = math.copysign(math.sqrt(abs(gain) / 4), gain)
    wv = t["wv"][layer]
    wo = t["wo"][layer] if "wo" in t else torch.eye(len(alpha), dtype=torch.float64)
    a = float(alpha @ wo @ wv @ alpha)
    return {"e": e, "w": w, "a": a}


def rank_one_energy(matrix: np.ndarray | torch.Tensor) -> float:
    """Fraction of the squared Frobenius norm in the top singular value (1 for rank one)."""
    m = matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    s = torch.linalg.svdvals(torch.as_tensor(m, dtype=torch.float64))
    total = float((s**2).sum())
    return float(s[0] ** 2 / total) if total > 0 else float("nan")
