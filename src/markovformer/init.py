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
    "planted_",
    "layer_one_margin",
    "positional_kernel",
    "planted_code",
    "planted_rotation",
    "planted_basis",
    "PLANTED_THETA",
    "PLANTED_WEIGHT",
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


# --------------------------------------------------------------------------------------------
# A previous-token head planted in layer 1 (chapter 9, SPEC section 7.1)
# --------------------------------------------------------------------------------------------

#: The planted positional code: F = 6 frequencies theta_f (radians per position) and weights a_f
#: (summing to 1). Chosen once, numerically, so that the kernel K(delta) = sum_f a_f
#: cos(theta_f delta) of :func:`positional_kernel` (K(0) = 1) stays below 0.36 for
#: 1 <= |delta| <= 98 and is below its mean there at |delta| = 1 and 2 (a head planted on
#: offset 2 does not favour offset 1, nor one on offset 1 offset 2); the tests check both.
PLANTED_THETA = (2.1285, 2.2945, 1.088, 2.7697, 1.4345, 2.2352)
PLANTED_WEIGHT = (0.2207, 0.1249, 0.1951, 0.1477, 0.161, 0.1506)
_LN_EPS = 1e-5  # torch.nn.functional.layer_norm's default, as in MarkovTransformer


def positional_kernel(delta, n_freq: int = len(PLANTED_THETA)) -> np.ndarray:
    """K(delta) = sum_f a_f cos(theta_f delta) / sum_f a_f over the first ``n_freq``
    frequencies: the inner product z_n . z_(n - delta) of the planted code (K(0) = 1)."""
    th = np.asarray(PLANTED_THETA[:n_freq])
    a = np.asarray(PLANTED_WEIGHT[:n_freq])
    d = np.asarray(delta, dtype=float)
    return (np.cos(d[..., None] * th) * a).sum(-1) / a.sum()


def planted_code(n_positions: int, n_freq: int = len(PLANTED_THETA)) -> np.ndarray:
    """The unit-norm code z_n (``(N, 2F)``, float64): sqrt(a_f) (cos theta_f n, sin theta_f n)
    for each frequency, with weights normalised to sum 1, so z_n . z_i = K(n - i)."""
    th = np.asarray(PLANTED_THETA[:n_freq])
    a = np.asarray(PLANTED_WEIGHT[:n_freq]) / sum(PLANTED_WEIGHT[:n_freq])
    ang = np.arange(n_positions)[:, None] * th
    z = np.stack([np.cos(ang), np.sin(ang)], -1) * np.sqrt(a)[:, None]  # (N, F, 2)
    return z.reshape(n_positions, 2 * n_freq)


def planted_rotation(offset: int, n_freq: int = len(PLANTED_THETA)) -> np.ndarray:
    """Block-diagonal R (2F x 2F) rotating each frequency pair by offset * theta_f, so that
    R z_i = z_(i + offset) and z_n . R z_i = K(n - i - offset)."""
    R = np.zeros((2 * n_freq, 2 * n_freq))
    for f, th in enumerate(PLANTED_THETA[:n_freq]):
        c, s = math.cos(offset * th), math.sin(offset * th)
        R[2 * f : 2 * f + 2, 2 * f : 2 * f + 2] = [[c, -s], [s, c]]
    return R


def planted_basis(tokens: np.ndarray, n_dims: int) -> np.ndarray:
    """``n_dims`` orthonormal columns (d x n_dims, float64) orthogonal to the all-ones vector
    and to every token vector (rows of ``tokens``), by Gram-Schmidt over the standard basis.

    Layer norm subtracts each vector's mean (its component along the ones), and keys built from
    a code orthogonal to the tokens cannot tell symbols apart: the planted head is positional.
    """
    tokens = np.atleast_2d(np.asarray(tokens, dtype=np.float64))
    d = tokens.shape[-1]
    basis: list[np.ndarray] = []

    def add(v: np.ndarray) -> bool:
        for b in basis:
            v = v - (v @ b) * b
        for b in basis:  # twice is enough (Kahan-Parlett)
            v = v - (v @ b) * b
        n = np.linalg.norm(v)
        if n > 1e-8:
            basis.append(v / n)
            return True
        return False

    fixed = [np.ones(d)] + [t for t in tokens if np.linalg.norm(t) > 0]
    for v in fixed:
        add(v)
    k0 = len(basis)
    for j in range(d):
        if len(basis) - k0 == n_dims:
            break
        add(np.eye(d)[j])
    out = basis[k0:]
    if len(out) < n_dims:
        raise ValueError(f"only {len(out)} dimensions are orthogonal to the ones and the tokens; "
                         f"{n_dims} needed")  # fmt: skip
    return np.stack(out, 1)


def _token_vectors(model: MarkovTransformer, r: int) -> np.ndarray:
    """The embedding of every symbol of run r (``(S, d)``; binary: 0 and e)."""
    e = model.emb[r].detach().double().numpy()
    return np.stack([np.zeros_like(e), e]) if model.config.binary else e


def _planted_scale(tokens: np.ndarray, c: float, d: int, layer_norm: bool, margin: float,
                   offset: int, n_positions: int, n_freq: int) -> float:  # fmt: skip
    """s such that the planted logits s^2 c^2 K(n - i - offset) / (sqrt(d) sigma_a sigma_b)
    have, averaged over queries n >= offset and over pairs of symbols, the margin ``margin``
    between the target key and its strongest rival (sigma_a: layer norm's scale of a position
    holding symbol a, the same at every position because the code is orthogonal to the ones and
    the tokens)."""
    if margin == 0:
        return 0.0
    if layer_norm:
        sig = np.sqrt(tokens.var(-1) + c * c / d + _LN_EPS)  # population variance, as LN
    else:
        sig = np.ones(len(tokens))
    kappa = float(np.mean(1.0 / np.outer(sig, sig)))
    gaps = []
    for n in range(offset, n_positions):
        deltas = np.array([n - offset - i for i in range(n + 1) if i != n - offset])
        gaps.append(1.0 - positional_kernel(deltas, n_freq).max())
    return math.sqrt(margin * math.sqrt(d) / (c * c * kappa * float(np.mean(gaps))))


@torch.no_grad()
def planted_(
    model: MarkovTransformer, seeds: Sequence[int], margin: float = 1.0, offset: int = 1,
    std: float = 0.02, residual: str = "gpt2",
) -> None:  # fmt: skip
    """The default Gaussian init (:func:`gaussian_`, same draws) with a previous-token head
    planted in layer 1 through its weights only (SPEC section 7.1):

    * the learned positions become a code p_n = c U z_n (:func:`planted_code`), of the norm
      c = std sqrt(d) that a Gaussian position row has on average, in a 2F-dimensional subspace U
      orthogonal to the ones and to every token (:func:`planted_basis`);
    * layer 1's W_Q and W_K get s U U^T and s U R U^T added (R: :func:`planted_rotation` by
      ``offset``), so that their logits gain s^2 c^2 K(n - i - offset) / (sqrt(d) sigma_a
      sigma_b), largest at key i = n - offset, with s set so that the margin of that key over
      its strongest rival is ``margin`` on average (``_planted_scale``).

    Nothing is added to the model (no mask, no bias): training is free to undo the head.
    ``margin = 0`` gives the code in the positions and the Gaussian W_Q, W_K (the control of
    the positions); ``offset = 2`` plants the head on the wrong key.
    """
    cfg = model.config
    if cfg.n_heads != 1:
        raise ValueError(f"the planted head needs one head per layer, got n_heads={cfg.n_heads}")
    if not (math.isfinite(float(margin)) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 1 <= offset < cfg.seq_len:
        raise ValueError(f"offset must be an integer in [1, {cfg.seq_len - 1}], got {offset!r}")
    gaussian_(model, seeds, std=std, residual=residual)
    d, N = cfg.d, cfg.seq_len
    n_tok = cfg.n_states if not cfg.binary else 1
    F = min(len(PLANTED_THETA), (d - 1 - n_tok) // 2)
    if F < 1:
        raise ValueError(f"d = {d} leaves no room for a planted code beside {n_tok} token(s)")
    c = std * math.sqrt(d)
    z, R = planted_code(N, F), planted_rotation(offset, F)
    for r, seed in enumerate(seeds):
        tokens = _token_vectors(model, r)
        U = planted_basis(tokens, 2 * F)
        model.pos[r] = torch.from_numpy(c * z @ U.T)
        s = _planted_scale(tokens, c, d, cfg.layer_norm, float(margin), offset, N, F)
        wq0, wk0 = model.wq[r, 0].double(), model.wk[r, 0].double()
        pq, pk = torch.from_numpy(U @ U.T), torch.from_numpy(U @ R @ U.T)
        if margin > 0:  # the symbols' layer-norm scales differ and the Gaussian part adds to
            # the rivals' logits: correct s on uniform random symbols (the "planted" stream)
            x = torch.randint(model.config.n_states, (CALIBRATION_BATCH, N),
                              generator=make_generator(seed, "planted"))  # fmt: skip
            for _ in range(4):
                got = layer_one_margin(model, r, wq0 + s * pq, wk0 + s * pk, x, offset)
                s *= math.sqrt(margin / got)
        model.wq[r, 0] = (wq0 + s * pq).to(model.wq.dtype)
        model.wk[r, 0] = (wk0 + s * pk).to(model.wk.dtype)


#: sequences of uniform random symbols on which :func:`planted_` measures its margin
CALIBRATION_BATCH = 64


@torch.no_grad()
def layer_one_margin(model: MarkovTransformer, r: int, wq: torch.Tensor, wk: torch.Tensor,
                     x: torch.Tensor, offset: int = 1) -> float:  # fmt: skip
    """Mean over queries n >= offset and sequences of the margin of layer 1's logits on key
    n - offset (:func:`markovformer.interp.offset_margins`), for run ``r`` of ``model`` with
    the query and key matrices ``wq``, ``wk``, computed in float64 as the model does on the
    symbols ``x`` ``(B, N)``."""
    from .interp import offset_margins

    cfg = model.config
    pos = model.pos[r, : x.shape[-1]].double()
    if cfg.binary:
        h = x.double().unsqueeze(-1) * model.emb[r].double() + pos
    else:
        h = model.emb[r].double()[x] + pos
    src = torch.nn.functional.layer_norm(h, h.shape[-1:]) if cfg.layer_norm else h
    q, k = src @ wq.T, src @ wk.T
    scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.d)
    N = x.shape[-1]
    scores = scores.masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
    return float(offset_margins(scores.softmax(-1), offset).mean())


INITIALISERS = {
    "gaussian": gaussian_,
    "rank_one": rank_one_,
    "guideline": guideline_,
    "authors_good": authors_good_,
    "planted": planted_,
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
