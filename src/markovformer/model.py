"""The single-layer transformer of *Attention with Markov* and *Local to Global*, batched over runs.

For input symbols x_1..x_N (SPEC section 2):

    h_n  = x_n e + p_n                          bit-scaled token embedding + learned position
    y_n  = h_n + W_O sum_{i<=n} att_{n,i} W_V h_i,   att = causal softmax(<W_Q h_n, W_K h_i> / sqrt d)
    z_n  = y_n + W_2 ReLU(W_1 y_n)              MLP of width 4d, no biases
    logit_n = <a, z_n> + b                      Pr(x_{n+1} = 1 | x_1..x_n) = sigmoid(logit_n)

No layer norm, one head, no biases except the scalar output bias b. Weight tying means a = e.
With ``depth > 1`` the block (attention + MLP) is repeated with its own weights. With
``n_states = S > 2`` symbols are embedded by a table E (S x d), the output is E z + b (tied) with a
bias vector b in R^S, and the loss is the softmax cross-entropy.

Three options serve the in-context chapter (SPEC section 7), and leave the model above untouched
at their defaults: ``n_heads = H`` splits each attention layer into H heads of dimension d / H
(W_Q, W_K, W_V stay d x d: head h uses rows h d/H .. (h+1) d/H - 1, concatenated before W_O);
``mlp=False`` drops the MLP (an attention-only transformer); ``layer_norm=True`` normalises the
input of every attention layer, of every MLP and of the output layer (pre-LN, as GPT-2), without
learned gain or bias (the next linear map can absorb them).

Every parameter carries a leading *run* dimension R: the module holds R independent models that
train in one batched forward/backward. No operation mixes runs, so run r's gradients are exactly
those of its own loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import get_kernel

__all__ = ["TransformerConfig", "MarkovTransformer"]


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of one run. Defaults: the L2G experiments (d = 8, N = 1024, tied)."""

    d: int = 8  # embedding dimension
    seq_len: int = 1024  # N, number of learned positions
    n_states: int = 2  # S; 2 uses the bit-scaled embedding and a sigmoid output
    depth: int = 1  # number of (attention + MLP) blocks
    mlp_ratio: int = 4  # MLP width = mlp_ratio * d
    tied: bool = True  # output vector a = e (table E for S > 2)
    attn_out_proj: bool = True  # the W_O projection after attention
    kernel: str = "softmax"  # attention kernel, looked up in markovformer.kernels
    kernel_options: tuple[tuple[str, float], ...] = ()  # keyword arguments of the kernel
    # options added after the first artifacts: they enter to_dict() only when set (see there)
    n_heads: int = 1  # attention heads per layer, each of dimension d / n_heads
    mlp: bool = True  # False: attention-only blocks (no W_1, W_2)
    layer_norm: bool = False  # pre-LN (no affine parameters) before attention, MLP and output

    def __post_init__(self) -> None:
        for name in ("d", "seq_len", "depth", "mlp_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if (
            isinstance(self.n_states, bool)
            or not isinstance(self.n_states, int)
            or self.n_states < 2
        ):
            raise ValueError(f"n_states must be an integer >= 2, got {self.n_states!r}")
        H = self.n_heads
        if isinstance(H, bool) or not isinstance(H, int) or H < 1 or self.d % H:
            raise ValueError(f"n_heads must be an integer >= 1 dividing d={self.d}, got {H!r}")
        object.__setattr__(self, "kernel_options", tuple(sorted(dict(self.kernel_options).items())))
        get_kernel(self.kernel, **dict(self.kernel_options))  # raises for an unknown kernel

    @property
    def binary(self) -> bool:
        return self.n_states == 2

    def to_dict(self) -> dict:
        """All fields, except later additions left at their default (keeps artifact hashes)."""
        out = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out


#: fields added to TransformerConfig after the first artifacts, with their defaults
_LATER_DEFAULTS = {"n_heads": 1, "mlp": True, "layer_norm": False}


class MarkovTransformer(nn.Module):
    """R independent transformers of the same architecture (see the module docstring).

    Parameter shapes (R runs, L blocks, d dims, N positions, S states, m = mlp_ratio * d):

    ======== ================================== =========================================
    name      shape                              role
    ======== ================================== =========================================
    emb       (R, d) binary / (R, S, d)          token embedding e (table E)
    pos       (R, N, d)                          learned positions p_n
    wq wk wv  (R, L, d, d)                       attention query / key / value
    wo        (R, L, d, d)                       attention output projection (optional)
    w1        (R, L, m, d)                       MLP in (absent if ``mlp=False``)
    w2        (R, L, d, m)                       MLP out (absent if ``mlp=False``)
    out       (R, d) / (R, S, d)                 untied output vector a (only if not tied)
    bias      (R,) / (R, S)                      output bias b
    ======== ================================== =========================================

    Parameters start at zero; use :mod:`markovformer.init` to initialise them.
    """

    def __init__(self, config: TransformerConfig, n_runs: int = 1) -> None:
        super().__init__()
        if isinstance(n_runs, bool) or not isinstance(n_runs, int) or n_runs < 1:
            raise ValueError(f"n_runs must be an integer >= 1, got {n_runs!r}")
        self.config, self.n_runs = config, n_runs
        R, L, d, N, S = n_runs, config.depth, config.d, config.seq_len, config.n_states
        m = config.mlp_ratio * d
        tok = (R, d) if config.binary else (R, S, d)

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape))

        self.emb = zeros(*tok)
        self.pos = zeros(R, N, d)
        self.wq, self.wk, self.wv = zeros(R, L, d, d), zeros(R, L, d, d), zeros(R, L, d, d)
        self.wo = zeros(R, L, d, d) if config.attn_out_proj else None
        self.w1 = zeros(R, L, m, d) if config.mlp else None
        self.w2 = zeros(R, L, d, m) if config.mlp else None
        self.out = None if config.tied else zeros(*tok)
        self.bias = zeros(R) if config.binary else zeros(R, S)
        self.kernel = get_kernel(config.kernel, **dict(config.kernel_options))

    # -- structure -------------------------------------------------------------------------

    @property
    def output_vector(self) -> torch.Tensor:
        """a (or the output table): the token embedding itself when tied."""
        return self.emb if self.out is None else self.out

    def named_run_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters by name, in a fixed order (the order used by initialisers)."""
        return dict(self.named_parameters())

    def decay_parameter_names(self) -> list[str]:
        """Weight matrices and token embedding get weight decay; positions and bias do not."""
        return [n for n in self.named_run_parameters() if n not in ("pos", "bias")]

    def num_parameters_per_run(self) -> int:
        return sum(p[0].numel() for p in self.parameters())

    # -- forward ---------------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(R, B, N) symbols -> (R, B, N, d) token embedding + positions."""
        R, B, N = x.shape
        if self.config.binary:
            tok = x.unsqueeze(-1).to(self.emb.dtype) * self.emb[:, None, None, :]
        else:
            tok = torch.gather(
                self.emb[:, None].expand(R, B, -1, -1),
                2,
                x.unsqueeze(-1).expand(R, B, N, self.config.d),
            )
        return tok + self.pos[:, None, :N, :]

    def block(self, h: torch.Tensor, layer: int, return_attention: bool = False):
        """One attention (+ MLP) block with residuals. h: (R, B, N, d)."""
        R, B, N, d = h.shape
        H = self.config.n_heads
        flat = h.reshape(R, B * N, d)
        src = self._norm(flat)

        def proj(w: torch.Tensor) -> torch.Tensor:  # (R, B*N, d) @ (R, d, d)^T -> (R*B, H, N, d/H)
            out = torch.bmm(src, w[:, layer].transpose(1, 2))
            if H == 1:
                return out.reshape(R * B, 1, N, d)
            return out.reshape(R * B, N, H, d // H).transpose(1, 2)

        q, k, v = proj(self.wq), proj(self.wk), proj(self.wv)
        att = None
        if return_attention:
            att = self.kernel.weights(q, k, causal=True)  # (R*B, H, N, N)
            o = att @ v
            att = att.reshape(R, B, N, N) if H == 1 else att.reshape(R, B, H, N, N)
        else:
            o = self.kernel.apply(q, k, v, causal=True)  # (R*B, H, N, d/H)
        o = o.reshape(R, B * N, d) if H == 1 else o.transpose(1, 2).reshape(R, B * N, d)
        if self.wo is not None:
            o = torch.bmm(o, self.wo[:, layer].transpose(1, 2))
        y = flat + o  # attention residual
        if self.w1 is None:
            return y.reshape(R, B, N, d), att
        hidden = F.relu(torch.bmm(self._norm(y), self.w1[:, layer].transpose(1, 2)))  # (R, B*N, m)
        z = y + torch.bmm(hidden, self.w2[:, layer].transpose(1, 2))  # MLP residual
        return z.reshape(R, B, N, d), att

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        """Layer norm over the last axis without affine parameters, if the config asks for it."""
        return F.layer_norm(h, h.shape[-1:]) if self.config.layer_norm else h

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Logits for the next symbol at every position.

        x: (R, B, N) int64 with N <= seq_len. Returns (R, B, N) logits of Pr(next = 1) for binary
        models and (R, B, N, S) logits otherwise; with ``return_attention`` also the list of
        attention matrices, one per block: (R, B, N, N) with one head, (R, B, H, N, N) with H.
        """
        if x.ndim != 3 or x.shape[0] != self.n_runs:
            raise ValueError(
                f"x must have shape (n_runs={self.n_runs}, batch, length), got {tuple(x.shape)}"
            )
        if x.shape[-1] > self.config.seq_len:
            raise ValueError(
                f"sequence length {x.shape[-1]} exceeds the model's seq_len {self.config.seq_len}"
            )
        h = self.embed(x)
        attentions = []
        for layer in range(self.config.depth):
            h, att = self.block(h, layer, return_attention)
            attentions.append(att)
        h = self._norm(h)
        a = self.output_vector
        if self.config.binary:
            logits = torch.einsum("rbnd,rd->rbn", h, a) + self.bias[:, None, None]
        else:
            logits = torch.einsum("rbnd,rsd->rbns", h, a) + self.bias[:, None, None, :]
        return (logits, attentions) if return_attention else logits

    def loss_per_run(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-symbol cross-entropy of each run: (R,)."""
        if self.config.binary:
            ce = F.binary_cross_entropy_with_logits(
                logits, targets.to(logits.dtype), reduction="none"
            )
            return ce.mean(dim=(1, 2))
        R, B, N, S = logits.shape
        ce = F.cross_entropy(logits.reshape(-1, S), targets.reshape(-1), reduction="none")
        return ce.reshape(R, B * N).mean(1)

    # -- runs ------------------------------------------------------------------------------

    @torch.no_grad()
    def run_state(self, run: int) -> dict[str, torch.Tensor]:
        """Copies of one run's parameters (without the run dimension)."""
        return {n: p[run].detach().clone() for n, p in self.named_run_parameters().items()}

    @torch.no_grad()
    def load_run_state(self, run: int, state: dict[str, torch.Tensor]) -> None:
        """Write one run's parameters (shapes without the run dimension)."""
        params = self.named_run_parameters()
        missing = set(params) - set(state)
        if missing:
            raise ValueError(f"state is missing parameters {sorted(missing)}")
        for n, p in params.items():
            if tuple(state[n].shape) != tuple(p.shape[1:]):
                raise ValueError(
                    f"parameter {n!r} must have shape {tuple(p.shape[1:])}, "
                    f"got {tuple(state[n].shape)}"
                )
            p[run].copy_(state[n])
