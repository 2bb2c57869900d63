"""Training engine: R independent runs of the Markov transformer in one batched program.

Defaults are the settings of the authors' L2G code (SPEC section 2): AdamW with betas (0.9, 0.95),
lr 2e-3, weight decay 1e-3 on the weight matrices and the token embedding (not on positions or the
bias), torch's one-cycle cosine schedule with 2% warm-up from 2e-5 to the peak 2e-3 and down to
4e-4 = 0.2 x peak (``div_factor=100, final_div_factor=0.05``), batch 16, N = 1024, fresh sequences
from the chain at every step, 1000 steps. ``SCHEDULE_ENDS`` names the other end the book compares.

Logged at every step t = 1..T and for every run, on the fresh batch used by update t (before it):

* ``train_loss``: the cross-entropy against the sampled next symbols (what is optimised);
* ``exact_loss``: the exact conditional loss against the true next-symbol law (SPEC section 1),
  the book's test-loss curve: same mean, far less variance;
* ``excess``: exact loss minus the conditional entropy of the true law, i.e. the mean KL (>= 0).

At chosen steps s (after s updates; s = 0 is the initialisation) it records the mean predicted
probability of each next symbol per position given the current symbol (``probes``) and copies of
the weights (``snapshots``). A run whose loss turns NaN or infinite is stopped (its parameters are
frozen and its later metrics are NaN) and reported with its seed and step; the others go on.

In-context learning (chapter 8, :mod:`markovformer.icl`): when the data are a
:class:`~markovformer.icl.RandomChains` prior (a new chain per sequence), ``exact_loss`` and
``excess`` refer to each sequence's own drawn kernel, ``bayes_loss`` (logged at every step) is the
exact loss of the Bayes predictor on the same batch, and at the steps ``icl_steps`` the trainer
records KL(strategy || model) for the uniform, unigram, bigram, ... strategies, the previous-token
and induction scores of every head and, if ``icl_map_len > 0``, attention maps (``icl``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .icl import InContextSource, RandomChains
from .init import initialise
from .markov import BinaryChain, MarkovChain, binary_chains_from_uniforms, binary_exact_loss
from .model import MarkovTransformer, TransformerConfig
from .rng import make_generator

__all__ = ["TrainConfig", "TrainResult", "train", "one_cycle_lr", "resolve_device", "SCHEDULE_ENDS"]

#: Named ends of the one-cycle schedule, as ``final_div_factor`` (final lr = peak / (div_factor *
#: final_div_factor)): "authors" ends at 0.2 x peak, as the authors' code (OneCycleLR with
#: div_factor=100, final_div_factor=0.05; the default); "tenth" ends at 0.1 x peak, the book's
#: schedule before it was corrected (chapter 5 compares the two).
SCHEDULE_ENDS = {"authors": 0.05, "tenth": 0.1}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one experiment (shared by all its runs)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    optimizer: str = "adamw"  # "adamw" or "sgd"
    schedule: str = "one-cycle-cos"  # "one-cycle-cos", "one-cycle-linear" or "constant"
    warmup_frac: float = 0.02
    div_factor: float = 100.0  # initial lr = lr / div_factor
    final_div_factor: float = 0.05  # final lr = initial lr / final_div_factor (SCHEDULE_ENDS)
    grad_clip: float | None = None  # per-run gradient-norm clipping (runs never share a norm)
    probe_steps: tuple[int, ...] = ()
    probe_batch: int = 64
    snapshot_steps: tuple[int, ...] = ()
    # options added after the first artifacts: they enter to_dict() only when set (see there)
    diagnostic_steps: tuple[int, ...] = ()  # rank-one energies and canonical (e, w, a) here
    icl_steps: tuple[int, ...] = ()  # in-context evaluation (random-chain data only) here
    icl_map_len: int = 0  # attention maps of this many positions of one probe sequence (0: none)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "probe_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("one-cycle-cos", "one-cycle-linear", "constant"):
            raise ValueError(
                "schedule must be 'one-cycle-cos', 'one-cycle-linear' or 'constant', "
                f"got {self.schedule!r}"
            )
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        m = self.icl_map_len
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"icl_map_len must be an integer >= 0, got {m!r}")
        for name in ("probe_steps", "snapshot_steps", "diagnostic_steps", "icl_steps"):
            bad = [s for s in getattr(self, name) if not 0 <= s <= self.steps]
            if bad:
                raise ValueError(f"{name} must lie in [0, steps={self.steps}], got {bad}")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "probe_steps", tuple(sorted(set(self.probe_steps))))
        object.__setattr__(self, "snapshot_steps", tuple(sorted(set(self.snapshot_steps))))
        object.__setattr__(self, "diagnostic_steps", tuple(sorted(set(self.diagnostic_steps))))
        object.__setattr__(self, "icl_steps", tuple(sorted(set(self.icl_steps))))

    def to_dict(self) -> dict:
        """All fields, except later additions left at their default (keeps artifact hashes)."""
        out = asdict(self)
        for name in ("diagnostic_steps", "icl_steps"):
            if not out[name]:
                del out[name]
        if self.icl_map_len == 0:
            del out["icl_map_len"]
        return out


def one_cycle_lr(
    step: int,
    total_steps: int,
    max_lr: float,
    warmup_frac: float = 0.02,
    div_factor: float = 100.0,
    final_div_factor: float = 0.05,
    anneal: str = "cos",
) -> float:
    """Learning rate of update ``step`` (0-based) under a one-cycle schedule.

    Same rule as ``torch.optim.lr_scheduler.OneCycleLR`` with ``cycle_momentum=False``: from
    ``max_lr / div_factor`` up to ``max_lr`` over the first ``warmup_frac`` of the steps, then down
    to ``max_lr / div_factor / final_div_factor``, both phases annealed by ``anneal``.
    """
    initial = max_lr / div_factor
    final = initial / final_div_factor
    warm_end = float(warmup_frac * total_steps) - 1
    last = total_steps - 1

    def interp(start: float, end: float, pct: float) -> float:
        if anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    if step <= warm_end:
        return interp(initial, max_lr, step / warm_end if warm_end > 0 else 1.0)
    span = last - warm_end
    return interp(max_lr, final, (step - warm_end) / span if span > 0 else 1.0)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu' (default) or 'cuda'; asking for CUDA without a GPU is an error, not a fallback."""
    dev = torch.device(device or "cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return dev


@dataclass
class TrainResult:
    """Everything one call of :func:`train` measured, as numpy arrays with a leading run axis."""

    seeds: list[int]
    metrics: dict[str, np.ndarray]  # train_loss, exact_loss, excess: (R, T); lr: (T,)
    probe_steps: list[int]
    probes: np.ndarray | None  # (R, P, S, N) binary: Pr(1 | x_n = s); (R, P, S, N, S) otherwise
    snapshot_steps: list[int]
    snapshots: dict[str, np.ndarray]  # name -> (R, P, *shape)
    final_state: dict[str, np.ndarray]  # name -> (R, *shape)
    diagnostic_steps: list[int] = field(default_factory=list)
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (R, D)
    failures: list[dict] = field(default_factory=list)  # {"seed", "step", "loss"}
    wall_seconds: float = 0.0
    icl_steps: list[int] = field(default_factory=list)
    icl: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (R, P, ...)

    def record(self, i: int) -> dict[str, np.ndarray]:
        """Run i as a flat dict of arrays (the per-seed artifact format)."""
        out = {k: v[i] for k, v in self.metrics.items() if k != "lr"}
        out["lr"] = self.metrics["lr"]
        out["probe_steps"] = np.asarray(self.probe_steps, dtype=np.int64)
        if self.probes is not None:
            out["probes"] = self.probes[i]
        out["snapshot_steps"] = np.asarray(self.snapshot_steps, dtype=np.int64)
        out.update({f"snapshot/{k}": v[i] for k, v in self.snapshots.items()})
        out.update({f"final/{k}": v[i] for k, v in self.final_state.items()})
        if self.diagnostic_steps:
            out["diagnostic_steps"] = np.asarray(self.diagnostic_steps, dtype=np.int64)
            out.update({f"diag/{k}": v[i] for k, v in self.diagnostics.items()})
        if self.icl_steps:
            out["icl_steps"] = np.asarray(self.icl_steps, dtype=np.int64)
            out.update({f"icl/{k}": v[i] for k, v in self.icl.items()})
        fail = [f for f in self.failures if f["seed"] == self.seeds[i]]
        out["failed_step"] = np.asarray(fail[0]["step"] if fail else -1, dtype=np.int64)
        return out


ChainSpec = MarkovChain | Sequence[BinaryChain] | RandomChains


def train(
    model_config: TransformerConfig,
    train_config: TrainConfig,
    seeds: Sequence[int],
    chains: ChainSpec,
    *,
    init: str = "gaussian",
    init_kwargs: dict | None = None,
    model: MarkovTransformer | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
    callback: Callable[[int, MarkovTransformer, dict], None] | None = None,
) -> TrainResult:
    """Train ``len(seeds)`` independent runs and return what was measured.

    ``chains`` is one chain shared by all runs, one :class:`BinaryChain` per run (a (p, q)
    grid in a single batch), or a :class:`~markovformer.icl.RandomChains` prior (a new chain for
    every sequence: in-context learning). ``model`` may be given pre-initialised (then ``init`` is ignored);
    it must have ``len(seeds)`` runs. Any module with the interface of
    :class:`~markovformer.model.MarkovTransformer` (``n_runs``, ``forward``, ``loss_per_run``,
    ``named_run_parameters``, ``decay_parameter_names``) trains here, e.g. the canonical model of
    :mod:`markovformer.canonical`; ``model_config`` then only sets the sequence length. ``callback(step, model, metrics_of_step)`` is called after
    every update (for custom logging; it must not change the model).
    """
    seeds = [int(s) for s in seeds]
    R = len(seeds)
    if R == 0:
        raise ValueError("seeds must not be empty")
    if len(set(seeds)) != R and isinstance(chains, (MarkovChain, RandomChains)):
        raise ValueError(f"seeds must be distinct when all runs share one chain, got {seeds}")
    dev = resolve_device(device)
    if isinstance(chains, RandomChains):
        data = InContextSource(chains, R, model_config, train_config.batch_size, seeds, dev)
    elif train_config.icl_steps:
        raise ValueError("icl_steps need random-chain data (a markovformer.icl.RandomChains)")
    else:
        data = _DataSource(chains, R, model_config, train_config.batch_size, seeds, dev)

    if model is None:
        model = MarkovTransformer(model_config, R)
        initialise(model, seeds, init, **(init_kwargs or {}))
    elif model.n_runs != R:
        raise ValueError(f"model has {model.n_runs} runs but {R} seeds were given")
    elif isinstance(model, MarkovTransformer) and model.config != model_config:
        raise ValueError("model must have the given config")
    model = model.to(dev)
    opt = _make_optimizer(model, train_config)

    T, tc = train_config.steps, train_config
    train_loss = torch.full((R, T), float("nan"), device=dev)
    exact_loss = torch.full((R, T), float("nan"), device=dev)
    excess = torch.full((R, T), float("nan"), device=dev)
    extra = {n: torch.full((R, T), float("nan"), device=dev) for n in data.extra_metric_names}
    lrs = np.zeros(T)
    alive = torch.ones(R, dtype=torch.bool, device=dev)
    frozen: dict[str, torch.Tensor] = {}
    failures: list[dict] = []
    probe_x = data.probe_batch(tc.probe_batch) if tc.probe_steps else None
    probes, snaps = [], {n: [] for n in model.named_run_parameters()}
    diags: dict[str, list] = {}
    icl_evals: dict[str, list] = {}

    def observe(step: int) -> None:
        if step in tc.icl_steps:
            for k, v in data.evaluate(model, tc.probe_batch, tc.icl_map_len).items():
                icl_evals.setdefault(k, []).append(v)
        if step in tc.diagnostic_steps:
            for k, v in _diagnostics(model).items():
                diags.setdefault(k, []).append(v)
        if step in tc.probe_steps:
            probes.append(_probe(model, probe_x, model_config.n_states))
        if step in tc.snapshot_steps:
            for n, p in model.named_run_parameters().items():
                snaps[n].append(p.detach().cpu().numpy().copy())

    observe(0)
    start = time.perf_counter()
    bar = _progress_bar(T, progress)
    for t in range(T):
        lr = (
            tc.lr
            if tc.schedule == "constant"
            else one_cycle_lr(
                t,
                T,
                tc.lr,
                tc.warmup_frac,
                tc.div_factor,
                tc.final_div_factor,
                "cos" if tc.schedule == "one-cycle-cos" else "linear",
            )
        )
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        lrs[t] = lr

        x = data.next_batch()  # (R, B, N + 1)
        inp, tgt = x[..., :-1], x[..., 1:]
        logits = model(inp)
        loss_r = model.loss_per_run(logits, tgt)  # (R,)
        with torch.no_grad():
            ce, kl = data.exact_losses(inp, logits.detach())
            train_loss[:, t], exact_loss[:, t], excess[:, t] = loss_r.detach(), ce, kl
            for n, v in (data.extra_metrics() if extra else {}).items():
                extra[n][:, t] = v
            finite = torch.isfinite(loss_r.detach())
            newly_dead = alive & ~finite
            if bool(newly_dead.any()):
                for r in torch.nonzero(newly_dead).flatten().tolist():
                    failures.append({"seed": seeds[r], "step": t + 1, "loss": float(loss_r[r])})
                alive &= finite
                frozen = {n: p.detach().clone() for n, p in model.named_run_parameters().items()}
                train_loss[~alive, t:] = float("nan")
                exact_loss[~alive, t:] = float("nan")
                excess[~alive, t:] = float("nan")
                for v in extra.values():
                    v[~alive, t:] = float("nan")
        opt.zero_grad(set_to_none=False)
        torch.where(alive, loss_r, torch.zeros_like(loss_r)).sum().backward()
        dead_any = not bool(alive.all())
        if dead_any:
            for p in model.parameters():
                p.grad[~alive] = 0.0
        if tc.grad_clip is not None:
            _clip_per_run(model, tc.grad_clip)
        opt.step()
        if dead_any:
            with torch.no_grad():
                for n, p in model.named_run_parameters().items():
                    p[~alive] = frozen[n][~alive]
        observe(t + 1)
        if callback is not None:
            callback(t + 1, model, {"train_loss": loss_r.detach(), "exact_loss": ce, "excess": kl})
        if bar is not None:
            bar.update(1)
            if (t + 1) % 50 == 0 or t + 1 == T:
                bar.set_postfix(
                    exact=f"{float(exact_loss[alive, t].mean()):.4f}" if alive.any() else "nan"
                )
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start

    return TrainResult(
        seeds=seeds,
        metrics={
            "train_loss": train_loss.cpu().numpy(),
            "exact_loss": exact_loss.cpu().numpy(),
            "excess": excess.cpu().numpy(),
            **{n: v.cpu().numpy() for n, v in extra.items()},
            "lr": lrs,
        },
        probe_steps=list(tc.probe_steps),
        probes=np.stack(probes, 1) if probes else None,
        snapshot_steps=list(tc.snapshot_steps),
        snapshots={n: np.stack(v, 1) for n, v in snaps.items() if v},
        final_state={
            n: p.detach().cpu().numpy().copy() for n, p in model.named_run_parameters().items()
        },
        failures=failures,
        wall_seconds=wall,
        diagnostic_steps=list(tc.diagnostic_steps),
        diagnostics={k: np.stack(v, 1) for k, v in diags.items()},
        icl_steps=list(tc.icl_steps),
        icl={k: np.stack(v, 1) for k, v in icl_evals.items()},
    )


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _DataSource:
    """Fresh sequences for every run from that run's own "data" generator."""

    extra_metric_names: tuple[str, ...] = ()  # per-step metrics beyond the exact loss

    def __init__(self, chains, R, model_config, batch, seeds, device) -> None:
        N = model_config.seq_len
        self.R, self.B, self.N, self.device, self.seeds = R, batch, N, device, seeds
        if isinstance(chains, MarkovChain):
            per_run = [chains] * R
        else:
            per_run = list(chains)
            if len(per_run) != R:
                raise ValueError(f"need one chain per run: {R} runs, got {len(per_run)} chains")
            if not all(isinstance(c, MarkovChain) for c in per_run):
                raise ValueError("chains must be MarkovChain instances")
        if any(c.n_states != model_config.n_states for c in per_run):
            raise ValueError(
                f"the model has n_states={model_config.n_states} but a chain has "
                f"{sorted({c.n_states for c in per_run})} states"
            )
        self.chains = per_run
        self.binary_first_order = all(type(c) is BinaryChain for c in per_run)
        if not self.binary_first_order and any(c is not per_run[0] for c in per_run):
            raise ValueError("per-run chains must all be first-order BinaryChain instances")
        self.gens = [make_generator(s, "data", device) for s in seeds]
        if self.binary_first_order:
            self.p = torch.tensor([c.p for c in per_run], device=device).view(R, 1, 1)
            self.q = torch.tensor([c.q for c in per_run], device=device).view(R, 1, 1)
            self.p_list = [c.p for c in per_run]
            self.q_list = [c.q for c in per_run]

    def _sample(self, gens, batch: int) -> torch.Tensor:
        if self.binary_first_order:
            # N + 1 symbols: one uniform for the start and one per run length
            u = torch.stack(
                [torch.rand(batch, self.N + 2, generator=g, device=self.device) for g in gens]
            )
            return binary_chains_from_uniforms(u, self.p_list, self.q_list)
        chain = self.chains[0]
        return torch.stack([chain.sample(batch, self.N + 1, generator=g) for g in gens])

    def next_batch(self) -> torch.Tensor:
        return self._sample(self.gens, self.B)

    def probe_batch(self, batch: int) -> torch.Tensor:
        gens = [make_generator(s, "probe", self.device) for s in self.seeds]
        return self._sample(gens, batch)[..., :-1]

    def exact_losses(
        self, inp: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-run exact conditional loss and excess (mean KL), each (R,)."""
        if self.binary_first_order:
            ce, kl = binary_exact_loss(inp, logits, self.p, self.q)
            return ce.mean(dim=(1, 2)), kl.mean(dim=(1, 2))
        chain, R = self.chains[0], inp.shape[0]
        flat_x = inp.reshape(-1, inp.shape[-1])
        flat_l = logits.reshape(flat_x.shape + logits.shape[3:])
        ce = chain.exact_conditional_loss(flat_x, logits=flat_l, reduction="none")
        kl = chain.excess_loss(flat_x, logits=flat_l, reduction="none")
        return ce.reshape(R, -1).mean(1), kl.reshape(R, -1).mean(1)


def _make_optimizer(model: MarkovTransformer, tc: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups: weight decay on ``model.decay_parameter_names()`` only.

    A model may define ``lr_scales()`` (name -> factor): that parameter's learning rate is
    multiplied by the factor and its decoupled weight decay divided by it, so the decay per step
    is unchanged (used by the canonical model to mirror the full model's Adam geometry).
    """
    params = model.named_run_parameters()
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}
    decayed = set(model.decay_parameter_names())
    groups: dict[tuple[bool, float], list] = {}
    for n, p in params.items():
        groups.setdefault((n in decayed, float(scales.get(n, 1.0))), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": (tc.weight_decay / scale) if dec else 0.0, "lr_scale": scale}
        for (dec, scale), ps in groups.items()
    ]
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=tc.lr, betas=tc.betas, foreach=True)
    return torch.optim.SGD(param_groups, lr=tc.lr)


@torch.no_grad()
def _probe(model: MarkovTransformer, x: torch.Tensor, n_states: int) -> np.ndarray:
    """Mean predicted next-symbol probabilities per position, grouped by the current symbol."""
    logits = model(x)
    probs = torch.sigmoid(logits) if n_states == 2 else torch.softmax(logits, -1)
    out = []
    for s in range(n_states):
        mask = (x == s).to(probs.dtype)  # (R, B, N)
        count = mask.sum(1)  # (R, N)
        if n_states == 2:
            mean = (probs * mask).sum(1) / count
        else:
            mean = (probs * mask[..., None]).sum(1) / count[..., None]
        out.append(mean)
    return torch.stack(out, 1).cpu().numpy()  # (R, S, N[, S]); NaN where no sequence had s


@torch.no_grad()
def _diagnostics(model) -> dict[str, np.ndarray]:
    """Per run: rank-one energy of every weight matrix (first block) and canonical (e, w, a)."""
    from .init import canonical_coordinates, rank_one_energy

    params = {n: p.detach().cpu() for n, p in model.named_run_parameters().items()}
    out: dict[str, np.ndarray] = {}
    for name, p in params.items():
        mats = p[:, 0] if p.ndim == 4 else (p if p.ndim == 3 else None)  # (R, rows, cols)
        if mats is not None:
            out[f"rank1/{name}"] = np.array([rank_one_energy(m) for m in mats])
    if isinstance(model, MarkovTransformer) and model.config.binary:
        coords = [
            canonical_coordinates({n: v[r] for n, v in params.items()}) for r in range(model.n_runs)
        ]
        for key in ("e", "w", "a"):
            out[f"canon/{key}"] = np.array([c[key] for c in coords])
    elif {"e", "w"} <= set(params):  # the canonical model itself
        for key in ("e", "w", "a"):
            if key in params:
                out[f"canon/{key}"] = params[key].numpy().astype(np.float64)
    return out


def _clip_per_run(model: MarkovTransformer, max_norm: float) -> None:
    grads = [p.grad for p in model.parameters()]
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads)  # (R,)
    scale = (max_norm / (sq.sqrt() + 1e-12)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", mininterval=1.0, dynamic_ncols=True)
