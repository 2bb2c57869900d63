"""The canonical low-rank models of *Local to Global*: (e, w, b) and, with attention, (e, w, a, b).

Trained weights of the single-layer transformer become rank one (chapter 3). Writing every matrix
along one unit direction alpha leaves three scalars (SPEC section 3):

    logit(x_n) = e^2 (1 + 2 w|w|) x_n + b - e^2/2.

Only the gap between the two logits matters once b is optimal,

    A(e, w) = e^2 (1 + 2 w|w|),

and the population loss (cross-entropy under the stationary chain) is

    L(e, w, b) = -pi_0 [p ln s(b') + (1-p) ln s(-b')] - pi_1 [(1-q) ln s(A+b') + q ln s(-A-b')],

with b' = b - e^2/2 and s the sigmoid. Everything below is vectorised numpy: arrays in, arrays out.

**With attention** (our derivation, not a quotation of the paper): take W_Q = W_K = 0 so that
attention is exactly uniform over the prefix, and W_V = a alpha alpha^T, W_O = I. The MLP then sees
u_n = (x_n - 1/2) + a (xbar_n - 1/2) along alpha, xbar_n being the running mean of the bits, and

    logit_n = e^2 [u_n + 4 w|w| relu(u_n)] + b.

For long sequences xbar_n -> pi_1, so u takes the two values u_x = x - 1/2 + c with
c = a (pi_1 - 1/2), and the gap is A(e, w, a) = e^2 [(u_1 - u_0) + 4 w|w| (relu(u_1) - relu(u_0))],
which is e^2 [1 + 2 w|w| (1 + a (2 pi_1 - 1))] while |c| <= 1/2. At a = 0 this is the 2-D model.
The population loss is again L = G(A) at the optimal bias, so both models share one profile G.

Conventions: the models depend on e only through e^2 (a negative e is realised with the direction
-alpha), and on w through w|w|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import nn

from .markov import BinaryChain

__all__ = [
    "W_SADDLE",
    "E_SADDLE",
    "CanonicalLandscape",
    "gap",
    "gap_3d",
    "energy",
    "separatrix",
    "basin_label",
    "basin_probabilities",
    "FlowResult",
    "gradient_flow",
    "gradient_flow_3d",
    "gradient_descent",
    "CanonicalModel",
]

W_SADDLE = -1.0 / np.sqrt(2.0)  # where 1 + 2 w|w| = 0
E_SADDLE = -(1.0 + np.log(2.0)) / 2.0  # energy of the saddle (0, -1/sqrt 2)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


def gap(e, w):
    """A(e, w) = e^2 (1 + 2 w|w|), the difference between the logits after a 1 and after a 0."""
    e, w = np.asarray(e, dtype=float), np.asarray(w, dtype=float)
    return e**2 * (1.0 + 2.0 * w * np.abs(w))


def _relu(x):
    return np.maximum(x, 0.0)


def gap_3d(e, w, a, pi1: float):
    """A(e, w, a) of the model with the attention scalar a (module docstring)."""
    e, w, a = (np.asarray(v, dtype=float) for v in (e, w, a))
    c = a * (pi1 - 0.5)
    u1, u0 = 0.5 + c, -0.5 + c
    return e**2 * ((u1 - u0) + 4.0 * w * np.abs(w) * (_relu(u1) - _relu(u0)))


def energy(e, w):
    """E(e, w) = e^2 - w^2 - sign(w) ln|w|: constant along the gradient flow of L(e, w)."""
    e, w = np.asarray(e, dtype=float), np.asarray(w, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return e**2 - w**2 - np.sign(w) * np.log(np.abs(w))


def separatrix(w):
    """Phi(w) = w^2 - ln|w| - (1 + ln 2)/2 for w < 0: the level set E = E_saddle is e^2 = Phi(w)."""
    w = np.asarray(w, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w < 0, w**2 - np.log(np.abs(w)) + E_SADDLE, np.nan)


def basin_label(e, w, switching: bool):
    """+1 where gradient flow from (e, w) reaches the global minimum, 0 where it reaches the
    unigram line e = 0 (SPEC section 3). Points on the line e = 0 are labelled 0 (they do not move).

    The basins depend on (p, q) only through the sign of p + q - 1 (``switching`` = p + q > 1).
    """
    e, w = np.broadcast_arrays(np.asarray(e, dtype=float), np.asarray(w, dtype=float))
    phi = separatrix(w)
    with np.errstate(invalid="ignore"):
        inside = (w < 0) & (e**2 < phi)  # below the separatrix
    if switching:  # local basin: {w > 0} U {-1/sqrt2 < w < 0, e^2 < Phi(w)}
        local = (w >= 0) | ((w > W_SADDLE) & inside)
    else:  # local basin: {w < -1/sqrt2, e^2 < Phi(w)}
        local = (w < W_SADDLE) & inside
    label = np.where(local | (e == 0), 0, 1)
    return label.astype(np.int8)


def basin_probabilities(scales, n: int = 1_000_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Monte-Carlo probability that (e0, w0) ~ N(0, s^2 I) lies in the global basin, for each
    scale s, in both regimes: ``{"scale", "switching", "sticky"}`` (n samples per scale, drawn in
    turn from one generator seeded with ``seed``)."""
    rng = np.random.default_rng(seed)
    out = {"scale": np.asarray(scales, dtype=float), "switching": [], "sticky": []}
    for s in out["scale"]:
        e, w = rng.normal(0, s, size=(2, n))
        out["switching"].append(basin_label(e, w, switching=True).mean())
        out["sticky"].append(basin_label(e, w, switching=False).mean())
    return {k: np.asarray(v) for k, v in out.items()}


class CanonicalLandscape:
    """Closed forms of the canonical model for one chain (p, q), p + q != 1.

    All methods take arrays and broadcast. ``b`` is the raw bias of the logit formula above.
    """

    def __init__(self, p: float, q: float) -> None:
        chain = BinaryChain(p, q)
        if chain.regime == "iid":
            raise ValueError(
                f"p + q = 1 makes the chain i.i.d. (p={p}, q={q}): the landscape is flat in (e, w)"
            )
        if not (0 < chain.p < 1 and 0 < chain.q < 1):
            raise ValueError(f"p and q must lie in (0, 1) for the landscape, got p={p}, q={q}")
        self.chain = chain
        self.p, self.q = chain.p, chain.q
        self.pi0, self.pi1 = chain.stationary
        self.entropy_rate, self.unigram_loss = chain.entropy_rate, chain.unigram_loss
        self.switching = chain.regime == "switching"
        #: the optimal gap A* = ln((1-p)(1-q)/(pq)); its sign is sign(1 - p - q)
        self.a_star = float(np.log((1 - self.p) * (1 - self.q) / (self.p * self.q)))

    # -- loss as a function of the gap ------------------------------------------------------

    def loss_gap_bias(self, A, b_prime):
        """L as a function of the gap A and the shifted bias b' (the logit after a 0)."""
        A, bp = np.asarray(A, dtype=float), np.asarray(b_prime, dtype=float)
        p, q = self.p, self.q
        z1 = A + bp
        ls0, ls1 = _log_sigmoid(bp), _log_sigmoid(z1)  # and ln s(-z) = ln s(z) - z
        l0 = -(ls0 - (1 - p) * bp)
        l1 = -(ls1 - q * z1)
        return self.pi0 * l0 + self.pi1 * l1

    def optimal_shifted_bias(self, A):
        """b'*(A) = ln(((p - q) + sqrt((p - q)^2 + 4 p q e^A)) / (2 q e^A)).

        Evaluated in log space: ln sqrt(D) = logaddexp(2 ln|q - p|, ln 4pq + A) / 2, and the branch
        without cancellation (the rationalised root 2p / ((q - p) + sqrt D) when q >= p).
        """
        A = np.asarray(A, dtype=float)
        p, q = self.p, self.q
        with np.errstate(divide="ignore"):
            log_sqrt_d = 0.5 * np.logaddexp(2 * np.log(abs(q - p)), np.log(4 * p * q) + A)
            if q >= p:
                return np.log(2 * p) - np.logaddexp(np.log(q - p), log_sqrt_d)
            return np.logaddexp(np.log(p - q), log_sqrt_d) - np.log(2 * q) - A

    def profile(self, A):
        """G(A) = min_b L: convex in A, G(0) = unigram loss, G(A*) = entropy rate."""
        return self.loss_gap_bias(A, self.optimal_shifted_bias(A))

    def profile_grad(self, A):
        """G'(A) = pi_1 (s(A + b'*) - (1 - q)) (envelope theorem)."""
        A = np.asarray(A, dtype=float)
        return self.pi1 * (_sigmoid(A + self.optimal_shifted_bias(A)) - (1 - self.q))

    # -- the (e, w, b) model -----------------------------------------------------------------

    def loss(self, e, w, b):
        """L(e, w, b): population cross-entropy of the canonical model."""
        e = np.asarray(e, dtype=float)
        return self.loss_gap_bias(gap(e, w), np.asarray(b, dtype=float) - e**2 / 2)

    def optimal_bias(self, e, w):
        """b*(e, w) = e^2/2 + b'*(A(e, w))."""
        e = np.asarray(e, dtype=float)
        return e**2 / 2 + self.optimal_shifted_bias(gap(e, w))

    def loss_at_optimal_bias(self, e, w):
        """L(e, w) = L(e, w, b*(e, w)) = G(A(e, w)): the landscape drawn in chapter 4."""
        return self.profile(gap(e, w))

    def grad(self, e, w):
        """(dL/de, dL/dw) of L(e, w) = G(A(e, w))."""
        e, w = np.asarray(e, dtype=float), np.asarray(w, dtype=float)
        g = self.profile_grad(gap(e, w))
        return g * 2 * e * (1 + 2 * w * np.abs(w)), g * 4 * np.abs(w) * e**2

    def grad_ewb(self, e, w, b):
        """(dL/de, dL/dw, dL/db) of L(e, w, b) with b free (used by gradient descent)."""
        e, w, b = (np.asarray(v, dtype=float) for v in (e, w, b))
        A, bp = gap(e, w), b - e**2 / 2
        d0 = self.pi0 * (_sigmoid(bp) - self.p)  # dL/db' from the x = 0 term
        d1 = self.pi1 * (_sigmoid(A + bp) - (1 - self.q))  # dL/dA (= its share of dL/db')
        dA_de, dA_dw = 2 * e * (1 + 2 * w * np.abs(w)), 4 * np.abs(w) * e**2
        return d1 * dA_de - (d0 + d1) * e, d1 * dA_dw, d0 + d1

    def flow_field(self, e, w):
        """Velocity (de/dt, dw/dt) = -grad L(e, w) of the gradient flow."""
        ge, gw = self.grad(e, w)
        return -ge, -gw

    def flow_field_scalar(self, e: float, w: float) -> tuple[float, float]:
        """:meth:`flow_field` for one point, in plain floats (the ODE right-hand side)."""
        p, q = self.p, self.q
        ww = w * abs(w)
        A = e * e * (1.0 + 2.0 * ww)
        # b'*(A) as in optimal_shifted_bias, then G'(A) = pi_1 (s(A + b'*) - (1 - q))
        x1, x2 = (2.0 * math.log(abs(q - p)) if q != p else -math.inf), math.log(4 * p * q) + A
        hi = max(x1, x2)
        log_sqrt_d = 0.5 * (hi + math.log(math.exp(x1 - hi) + math.exp(x2 - hi)))
        if q >= p:
            y1 = math.log(q - p) if q != p else -math.inf
            hi = max(y1, log_sqrt_d)
            bp = math.log(2 * p) - (hi + math.log(math.exp(y1 - hi) + math.exp(log_sqrt_d - hi)))
        else:
            y1 = math.log(p - q)
            hi = max(y1, log_sqrt_d)
            bp = hi + math.log(math.exp(y1 - hi) + math.exp(log_sqrt_d - hi)) - math.log(2 * q) - A
        z = A + bp
        sig = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        g = self.pi1 * (sig - (1 - q))
        return -g * 2.0 * e * (1.0 + 2.0 * ww), -g * 4.0 * abs(w) * e * e

    # -- critical set ------------------------------------------------------------------------

    def global_minimum_curve(self, w):
        """e >= 0 on the curve A(e, w) = A* (NaN where the curve does not exist)."""
        w = np.asarray(w, dtype=float)
        k = 1 + 2 * w * np.abs(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            e2 = self.a_star / k
            return np.where(e2 > 0, np.sqrt(np.where(e2 > 0, e2, 0)), np.nan)

    def local_minimum_range(self) -> tuple[float, float]:
        """The w-interval of the line e = 0 made of local minima (loss = unigram)."""
        return (W_SADDLE, np.inf) if self.switching else (-np.inf, W_SADDLE)

    def critical_points(self) -> dict:
        """The critical set of L(e, w): see SPEC section 3."""
        return {
            "a_star": self.a_star,
            "saddle": (0.0, W_SADDLE),
            "saddle_energy": E_SADDLE,
            "local_minima_w": self.local_minimum_range(),
            "global_minimum_w": (W_SADDLE, np.inf) if not self.switching else (-np.inf, W_SADDLE),
        }

    def basin(self, e, w):
        """1 for the global basin, 0 for the local (unigram) one."""
        return basin_label(e, w, self.switching)

    # -- the (e, w, a) model -----------------------------------------------------------------

    def loss_3d(self, e, w, a):
        """L(e, w, a) at the optimal bias = G(A(e, w, a)), the N -> infinity population loss."""
        return self.profile(gap_3d(e, w, a, self.pi1))

    def grad_3d(self, e, w, a):
        """(dL/de, dL/dw, dL/da) of L(e, w, a) (a subgradient at the kinks |c| = 1/2)."""
        e, w, a = (np.asarray(v, dtype=float) for v in (e, w, a))
        g = self.profile_grad(gap_3d(e, w, a, self.pi1))
        k = self.pi1 - 0.5
        c = a * k
        u1, u0 = 0.5 + c, -0.5 + c
        r = _relu(u1) - _relu(u0)  # = 1/2 + c while |c| <= 1/2
        dr_da = k * ((u1 > 0).astype(float) - (u0 > 0).astype(float))
        ww = w * np.abs(w)
        dA_de = 2 * e * ((u1 - u0) + 4 * ww * r)
        dA_dw = e**2 * 8 * np.abs(w) * r
        dA_da = e**2 * 4 * ww * dr_da
        return g * dA_de, g * dA_dw, g * dA_da

    def bias_3d(self, e, w, a):
        """The optimal raw bias of the 3-D model: b' minus the logit offset after a 0."""
        e, w, a = (np.asarray(v, dtype=float) for v in (e, w, a))
        u0 = -0.5 + a * (self.pi1 - 0.5)
        offset = e**2 * (u0 + 4 * w * np.abs(w) * _relu(u0))
        return self.optimal_shifted_bias(gap_3d(e, w, a, self.pi1)) - offset


@dataclass
class FlowResult:
    """A gradient-flow trajectory: times t, states (n, dim), losses, and where it ended."""

    t: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    converged: bool
    label: int | None = None  # 1 global, 0 unigram (2-D flows)


def _integrate(rhs, y0, t_max, grad_tol, loss_fn, dim):
    def converged(t, y):
        return math.sqrt(sum(v * v for v in rhs(t, y))) - grad_tol

    converged.terminal = True
    sol = solve_ivp(
        rhs,
        (0.0, t_max),
        np.asarray(y0, dtype=float),
        method="LSODA",
        events=converged,
        rtol=1e-9,
        atol=1e-11,
        dense_output=False,
        max_step=np.inf,
    )
    y = sol.y.T
    return FlowResult(t=sol.t, y=y, loss=loss_fn(*y.T), converged=bool(sol.status == 1), label=None)


def gradient_flow(
    land: CanonicalLandscape, e0: float, w0: float, t_max: float = 1e4, grad_tol: float = 1e-7
) -> FlowResult:
    """Integrate de/dt, dw/dt = -grad L(e, w) (b at its optimum) from (e0, w0).

    Stops when the speed falls below ``grad_tol`` (convergence) or at ``t_max``. The result's
    label is 1 if the end point is at the global minimum (loss within 1e-6 of the entropy rate),
    0 otherwise.
    """

    def rhs(t, y):
        return land.flow_field_scalar(y[0], y[1])

    res = _integrate(rhs, (e0, w0), t_max, grad_tol, land.loss_at_optimal_bias, 2)
    res.label = int(res.loss[-1] < land.entropy_rate + 1e-6)
    return res


def gradient_flow_3d(
    land: CanonicalLandscape, e0: float, w0: float, a0: float, t_max: float = 1e4,
    grad_tol: float = 1e-7,
) -> FlowResult:  # fmt: skip
    """Integrate the gradient flow of L(e, w, a) from (e0, w0, a0)."""

    def rhs(t, y):
        ge, gw, ga = land.grad_3d(y[0], y[1], y[2])
        return -ge, -gw, -ga

    res = _integrate(rhs, (e0, w0, a0), t_max, grad_tol, land.loss_3d, 3)
    res.label = int(res.loss[-1] < land.entropy_rate + 1e-6)
    return res


def gradient_descent(
    land: CanonicalLandscape, e0: float, w0: float, b0: float | None = None, lr: float = 0.5,
    steps: int = 2000,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Plain gradient descent on L(e, w, b) with b trained too (b0 = optimal bias by default).

    Returns arrays e, w, b, loss of length steps + 1 (index 0 = start); if the iterates
    diverge, the entries after the last finite one are NaN.
    """
    e, w = float(e0), float(w0)
    b = float(land.optimal_bias(e, w)) if b0 is None else float(b0)
    out = np.full((steps + 1, 4), np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            loss = float(land.loss(e, w, b))
            if not np.isfinite([e, w, b, loss]).all():
                break  # diverged: the rest stays NaN
            out[t] = e, w, b, loss
            ge, gw, gb = land.grad_ewb(e, w, b)
            e, w, b = e - lr * ge, w - lr * gw, b - lr * gb
    return {"e": out[:, 0], "w": out[:, 1], "b": out[:, 2], "loss": out[:, 3]}


class CanonicalModel(nn.Module):
    """The canonical model as a trainable module with R runs, interchangeable with the full
    transformer in :func:`markovformer.train.train` (binary chains only).

    Parameters e, w, b (and a if ``attention``), each of shape (R,); ``adam_d`` sets
    :meth:`lr_scales`. Logits on sequences x of shape (R, B, N): ``e^2 (1 + 2 w|w|) x + b - e^2/2``;
    with attention
    ``e^2 [u + 4 w|w| relu(u)] + b`` with ``u = (x - 1/2) + a (xbar - 1/2)``, xbar the running
    mean of the bits up to and including position n (uniform causal attention).
    """

    def __init__(self, n_runs: int = 1, attention: bool = False, adam_d: int | None = None) -> None:
        super().__init__()
        self.n_runs, self.attention, self.adam_d = n_runs, attention, adam_d
        self.e = nn.Parameter(torch.zeros(n_runs))
        self.w = nn.Parameter(torch.zeros(n_runs))
        self.a = nn.Parameter(torch.zeros(n_runs)) if attention else None
        self.bias = nn.Parameter(torch.zeros(n_runs))

    def named_run_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.named_parameters())

    def decay_parameter_names(self) -> list[str]:
        """e is the token embedding and w the MLP weights (decayed); a, like W_V, too; not b."""
        return [n for n in self.named_run_parameters() if n != "bias"]

    def num_parameters_per_run(self) -> int:
        return len(self.named_run_parameters())

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors that mirror Adam on a rank-one full model of dimension d.

        On the full model realised with equal-magnitude entries (``rank_one_`` with direction
        "signs"), Adam moves every entry by about lr per step in the direction of the sign of its
        gradient, which moves the canonical coordinates by lr sqrt(d) (e) and lr d (w, a): the
        embedding has d entries of size e/sqrt(d), the MLP matrices 4d^2 entries of size |w|/d.
        With ``adam_d = d`` the canonical model gets these factors (the bias keeps 1). Without it,
        every factor is 1.
        """
        if self.adam_d is None:
            return {}
        d = float(self.adam_d)
        return {"e": d**0.5, "w": d, "a": d, "bias": 1.0}

    @torch.no_grad()
    def set_(self, e, w, b=None, a=None) -> CanonicalModel:
        """Write the parameters of every run (scalars or length-R sequences)."""
        for name, value in (("e", e), ("w", w), ("bias", b), ("a", a)):
            if value is None or getattr(self, name) is None:
                continue
            par = getattr(self, name)
            par.copy_(torch.as_tensor(value, dtype=par.dtype).expand(self.n_runs))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(self.e.dtype)
        e2 = (self.e**2)[:, None, None]
        ww = (self.w * self.w.abs())[:, None, None]
        b = self.bias[:, None, None]
        if not self.attention:
            return e2 * (1 + 2 * ww) * xf + b - e2 / 2
        xbar = xf.cumsum(-1) / torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=xf.dtype)
        u = (xf - 0.5) + self.a[:, None, None] * (xbar - 0.5)
        return e2 * (u + 4 * ww * torch.relu(u)) + b

    def loss_per_run(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), reduction="none"
        )
        return ce.mean(dim=(1, 2))
