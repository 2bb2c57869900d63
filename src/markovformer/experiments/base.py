"""Run specifications, batched execution with resumable storage, and the experiment registry.

A :class:`RunSpec` is one training configuration (chain, architecture, optimisation,
initialisation). Its results live in ``<root>/transformer-v2/<slug>-<hash>/seed_XXXX.npz``: the
directory depends on the configuration only, so two figures that need the same runs share them
(the tied arm of AwM-2, the plateau study of chapter 2 and the standard arm of L2G-4 are one
configuration), and asking for more seeds only computes the new ones.

:func:`run_specs` computes whatever is missing for a list of (spec, seeds), batching runs that
share everything but their binary chain into one :func:`markovformer.train.train` call (a (p, q)
grid trains as one batched program), in chunks that are stored as soon as they finish, in this
process or on a Dask cluster (a local one of ``workers`` processes, or any cluster by address).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import ArtifactError, ArtifactStore, RootLock
from ..icl import RandomChains
from ..markov import chain_from_spec
from ..model import TransformerConfig
from ..train import TrainConfig, resolve_device, train

__all__ = [
    "RunSpec",
    "run_specs",
    "plan_runs",
    "chunk_bytes",
    "load_specs",
    "Experiment",
    "register",
    "get",
    "all_experiments",
    "stack",
    "seed_list",
    "no_jobs",
    "data_from_spec",
    "stored_training_seconds",
    "stored_cost",
    "NAMESPACE",
]

#: The folder of transformer runs under a results root. "-v2": runs of the defaults that match the
#: authors' code (schedule ending at 0.2 x peak, W_O and W_2 drawn with 0.02/sqrt(2L); SPEC
#: section 2). Runs of the earlier defaults (0.1 x peak, every matrix 0.02) lived in
#: "transformer"; a new folder keeps them from ever being read as runs of the new defaults,
#: whose configurations they can share (e.g. the schedule comparison's 0.1 x peak arm).
NAMESPACE = "transformer-v2"


@dataclass(frozen=True)
class RunSpec:
    """One training configuration; seeds are chosen when it is run."""

    chain: dict
    model: TransformerConfig = field(default_factory=TransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str = "gaussian"
    init_kwargs: tuple[tuple[str, object], ...] = ()
    keep_final_state: bool = True
    record_keys: tuple[str, ...] | None = None  # store only these entries (None: all)
    #: "transformer" or "canonical" (the (e, w, b) model, started at init_kwargs e, w[, b],
    #: with Adam learning rates mirroring a rank-one full model of dimension model.d)
    model_kind: str = "transformer"
    #: the folder under the results root; not part of the identity (it says where results live,
    #: not what they are): chapter 8 keeps its in-context runs in "icl"
    namespace: str = NAMESPACE

    def identity(self) -> dict:
        """Everything that determines the results of a seed (the artifact's config.json).

        Options added after the first artifacts were made enter only when they differ from
        their default, so existing results keep their directory.
        """
        ident = {
            "chain": self.chain,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "init": self.init,
            "init_kwargs": dict(self.init_kwargs),
            "keep_final_state": self.keep_final_state,
        }
        if self.record_keys is not None:
            ident["record_keys"] = sorted(self.record_keys)
        if self.model_kind != "transformer":
            ident["model_kind"] = self.model_kind
        return ident

    def build_model(self, n_runs: int):
        """A pre-initialised model for non-transformer kinds (None: train() initialises)."""
        if self.model_kind == "transformer":
            return None
        if self.model_kind == "canonical":
            from ..canonical import CanonicalModel

            kw = dict(self.init_kwargs)
            return CanonicalModel(n_runs, adam_d=self.model.d).set_(
                kw["e"], kw["w"], kw.get("b", 0.0)
            )
        raise ValueError(
            f"unknown model_kind {self.model_kind!r}; expected 'transformer' or 'canonical'"
        )

    def slug(self) -> str:
        c = self.chain
        chain = "-".join(f"{k}{v}" for k, v in c.items() if k not in ("kind", "kernel"))
        tied = "tied" if self.model.tied else "untied"
        kind = "" if self.model_kind == "transformer" else f"{self.model_kind}_"
        kernel = "" if self.model.kernel == "softmax" else f"_{self.model.kernel}"
        m = self.model  # options added later appear only when set, so older slugs are unchanged
        extra = (f"_H{m.n_heads}" if m.n_heads != 1 else "") + ("" if m.mlp else "_attn-only")
        extra += "_ln" if m.layer_norm else ""
        return (
            f"{kind}{c['kind']}-{chain}_{tied}_L{self.model.depth}_d{self.model.d}"
            f"_N{self.model.seq_len}_T{self.train.steps}_{self.init}{kernel}{extra}"
        )

    def store(self, root: str | Path) -> ArtifactStore:
        return ArtifactStore(root, self.namespace, self.identity(), slug=self.slug())

    def batch_key(self) -> str:
        """Specs with equal keys can train in one batched call."""
        ident = self.identity()
        if self.chain["kind"] == "binary":
            ident["chain"] = "binary"  # per-run (p, q) are batched
        return json.dumps(ident, sort_keys=True, default=str)


def _record_for(result, i: int, spec: RunSpec) -> dict[str, np.ndarray]:
    rec = result.record(i)
    if not spec.keep_final_state:
        rec = {k: v for k, v in rec.items() if not k.startswith("final/")}
    if spec.record_keys is not None:
        rec = {k: v for k, v in rec.items() if k in spec.record_keys}
    for k, v in rec.items():  # float32 is plenty for curves and weights
        if v.dtype == np.float64 and k != "lr":
            rec[k] = v.astype(np.float32)
    return rec


#: Upper bounds that catch a typo before anything is allocated (``--seeds 99999999999``).
MAX_SEEDS = 1_000_000
MAX_STEPS = 10_000_000


def plan_runs(
    jobs: Sequence[tuple[RunSpec, Sequence[int]]],
    root: str | Path,
    chunk_size: int,
) -> list[list[tuple[RunSpec, int]]]:
    """The chunks of missing runs: (spec, seed) pairs grouped by :meth:`RunSpec.batch_key`, at
    most ``chunk_size`` per chunk, in a fixed order. A run counts as present only if its stored
    file is intact (a listed but missing or corrupt seed is planned again)."""
    todo: dict[str, dict[tuple[str, int], tuple[RunSpec, int]]] = {}
    for spec, seeds in jobs:
        store = spec.store(root)
        have = set(store.valid_seeds())
        for s in seeds:
            if int(s) not in have:  # the same (spec, seed) asked twice runs once
                todo.setdefault(spec.batch_key(), {})[(store.hash, int(s))] = (spec, int(s))
    chunks = []
    for group in todo.values():
        pairs = list(group.values())
        chunks += [pairs[i : i + chunk_size] for i in range(0, len(pairs), chunk_size)]
    return chunks


def chunk_bytes(spec: RunSpec, n_runs: int) -> int:
    """A generous estimate of the memory one chunk of ``n_runs`` runs of ``spec`` needs: the
    logged curves, probes and snapshots, and the activations of one training step."""
    m, t = spec.model, spec.train
    S, N, B, d, L = m.n_states, m.seq_len, t.batch_size, m.d, m.depth
    curves = 8 * t.steps * 6
    probes = 8 * len(t.probe_steps) * S * N * max(S - 1, 1)
    per_step = 4 * B * N * (N * m.n_heads + d * (4 + 2 * m.mlp_ratio)) * L * 3
    params = 4 * (N * d + L * d * d * (4 + 2 * m.mlp_ratio) + 2 * S * d)
    snaps = params * len(t.snapshot_steps)
    return int(n_runs * (curves + probes + per_step + snaps + 8 * params))


def _available_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_fits(chunks: Sequence[Sequence[tuple[RunSpec, int]]]) -> None:
    """Refuse, before allocating anything, a chunk that cannot fit in this machine's memory."""
    avail = _available_bytes()
    for chunk in chunks:
        need = chunk_bytes(chunk[0][0], len(chunk))
        if need > 0.8 * avail:
            raise ValueError(
                f"a chunk of {len(chunk)} run(s) of {chunk[0][0].slug()} needs about "
                f"{need / 2**30:.3g} GiB and this machine has {avail / 2**30:.3g} GiB; "
                "lower --steps, --seeds or --chunk-size"
            )


def run_specs(
    jobs: Sequence[tuple[RunSpec, Sequence[int]]],
    root: str | Path,
    *,
    device: str = "cpu",
    chunk_size: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    workers: int = 1,
    client=None,
    scheduler: str | None = None,
) -> list[dict[int, dict[str, np.ndarray]]]:
    """Load or compute every (spec, seeds) job; returns, per job, {seed: record}.

    Missing runs are grouped by :meth:`RunSpec.batch_key` and trained in chunks of at most
    ``chunk_size`` runs (default: 16 on CPU, 256 on CUDA); each chunk is stored when it ends, so
    an interrupted call loses only the chunks in flight. On CPU every run trains on one torch
    thread, so its bits do not depend on where, with what or how many others it was trained: a
    run trained in a chunk of 1 or of 16, in this process or in a worker, on this machine's kind
    of CPU and torch build, is the same array.

    Where the chunks train: in this process (``workers=1``, no ``client``/``scheduler``); on a
    Dask ``LocalCluster`` of ``workers`` single-threaded worker processes started for the call;
    or on an existing Dask cluster (``client``, a :class:`distributed.Client`, or ``scheduler``,
    its address, e.g. ``tcp://10.0.0.5:8786``; the environment variable
    ``DASK_SCHEDULER_ADDRESS`` works too). Workers only compute and return arrays; this process
    writes every artifact, so the workers need no shared file system, and a chunk whose worker
    dies is recomputed by Dask without anything being written twice or half. The results root is
    locked for the whole call (:class:`markovformer.artifacts.RootLock`): a second call on the
    same root waits, then finds the runs done.
    """
    dev = resolve_device(device)
    chunk_size = chunk_size or (256 if dev.type == "cuda" else 16)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    say = log or (lambda msg: None)
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if not plan_runs(jobs, root, chunk_size):
        return load_specs(jobs, root)
    with RootLock(root, say):
        chunks = plan_runs(jobs, root, chunk_size)  # again: a process we waited for made some
        check_fits(chunks)
        total = sum(len(c) for c in chunks)
        if total:
            say(f"{total} run(s) to compute in {len(chunks)} chunk(s) of <= {chunk_size}")
        distributed = (
            client is not None or scheduler is not None or (workers > 1 and len(chunks) > 1)
        )
        if distributed and dev.type == "cuda":
            say("CUDA runs train in this process (one GPU); --workers and --scheduler are ignored")
            distributed = False
        if not chunks:
            pass
        elif distributed:
            _train_on_dask(chunks, root, dev, workers, client, scheduler, say, progress)
        else:
            for chunk in chunks:
                say(f"training {len(chunk)} run(s): {chunk[0][0].slug()} ...")
                _store_chunk(chunk, root, _compute_chunk(chunk, dev.type, progress), say)
    return load_specs(jobs, root)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compute_chunk(chunk: list[tuple[RunSpec, int]], device: str, progress: bool = False) -> dict:
    """Train one chunk of runs that share everything but their seeds (and binary chains) in one
    batched program and return the records (nothing is written here: this runs on workers).

    On CPU the chunk trains on one torch thread, and a chunk of one run trains beside a phantom
    run (its seed + 2**31, discarded): with one run torch takes other code paths (a matrix-vector
    product instead of a batched product) whose last bits differ from those of a batched run."""
    dev = resolve_device(device)
    spec0 = chunk[0][0]
    seeds = [s for _, s in chunk]
    chains = [data_from_spec(sp.chain) for sp, _ in chunk]
    pad = dev.type == "cpu" and len(chunk) == 1
    if pad:
        seeds, chains = seeds + [seeds[0] + 2**31], chains + chains
    shared = chains[0] if spec0.chain["kind"] != "binary" else chains
    with _torch_threads(1) if dev.type == "cpu" else nullcontext():
        result = train(
            spec0.model,
            spec0.train,
            seeds,
            shared,
            init=spec0.init,
            init_kwargs=dict(spec0.init_kwargs),
            model=spec0.build_model(len(seeds)),
            device=dev,
            progress=progress,
        )
    info = {
        "device": str(dev),
        "runs_in_batch": len(chunk),
        "batch_wall_seconds": round(result.wall_seconds, 3),
        "torch_threads": 1 if dev.type == "cpu" else torch_threads(),
        **({"phantom_runs": 1} if pad else {}),
    }
    return {
        "records": [_record_for(result, j, sp) for j, (sp, _) in enumerate(chunk)],
        "info": info,
        "failures": [f for f in result.failures if not (pad and f["seed"] == seeds[-1])],
    }


def _store_chunk(chunk, root, out: dict, say: Callable[[str], None]) -> None:
    """Write the records of one computed chunk (in this process, never on a worker)."""
    for (sp, seed), rec in zip(chunk, out["records"], strict=True):
        sp.store(root).save(seed, rec, out["info"])
    for f in out["failures"]:
        say(f"  run with seed {f['seed']} stopped at step {f['step']}: loss {f['loss']}")


def _chunk_cost(chunk: list[tuple[RunSpec, int]]) -> float:
    m, t = chunk[0][0].model, chunk[0][0].train
    return float(len(chunk) * t.steps * t.batch_size * m.seq_len * m.depth * m.d)


def _train_on_dask(chunks, root, dev, workers, client, scheduler, say, progress) -> None:
    """Send the chunks to a Dask cluster (longest first) and store each as it completes."""
    import logging
    import warnings

    from distributed import Client, LocalCluster, as_completed

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    order = sorted(chunks, key=_chunk_cost, reverse=True)
    with ExitStack() as stack:
        if client is None and scheduler is not None:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
            say(f"training {len(order)} chunk(s) on the Dask cluster at {scheduler} ...")
        elif client is None:
            # the scheduler's HTTP server (no dashboard) moves off a busy port: not our concern
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR, death_timeout=30,
                )
            )  # fmt: skip
            client = stack.enter_context(Client(cluster))
            say(f"training {len(order)} chunk(s) on {workers} local worker processes ...")
        futures = {
            client.submit(_compute_chunk, c, dev.type, pure=False, retries=2): c for c in order
        }
        bar = _chunk_bar(sum(len(c) for c in order), progress)
        try:
            for fut in as_completed(futures):
                chunk = futures[fut]
                _store_chunk(chunk, root, fut.result(), say)
                if bar is not None:
                    bar.update(len(chunk))
                else:
                    say(f"stored {len(chunk)} run(s): {chunk[0][0].slug()}")
        finally:
            for fut in futures:
                fut.cancel()
            if bar is not None:
                bar.close()


def _chunk_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", desc="runs stored", mininterval=1.0, dynamic_ncols=True)


def data_from_spec(spec: dict):
    """The data of a run: a chain (:func:`markovformer.markov.chain_from_spec`) or, for
    ``kind == "random"``, the prior over chains of :class:`markovformer.icl.RandomChains`."""
    if isinstance(spec, dict) and spec.get("kind") == "random":
        return RandomChains.from_spec(spec)
    return chain_from_spec(spec)


def load_specs(
    jobs: Sequence[tuple[RunSpec, Sequence[int]]], root: str | Path
) -> list[dict[int, dict[str, np.ndarray]]]:
    """Load stored results only; a missing seed raises ArtifactError naming the command."""
    out = []
    for spec, seeds in jobs:
        store = spec.store(root)
        have = set(store.seeds())
        missing = [int(s) for s in seeds if int(s) not in have]
        if missing:
            raise ArtifactError(
                f"no stored results for seeds {missing} of {spec.slug()} under {root}; "
                "compute them with `markovformer reproduce` (see `markovformer list`)"
            )
        out.append({int(s): store.load(s) for s in seeds})
    return out


def stored_training_seconds(
    jobs: Sequence[tuple[RunSpec, Sequence[int]]], root: str | Path
) -> float:
    """Training time of the stored runs of ``jobs``, from their manifests: the wall time of each
    batched chunk, shared by its runs, summed over chunks (a configuration listed twice counts
    once). It is the time of the machine and load that made them, as recorded then."""
    return stored_cost(jobs, root)["seconds"]


def stored_cost(jobs: Sequence[tuple[object, Sequence[int]]], root: str | Path) -> dict:
    """Computing time of the stored runs of ``jobs`` and the machines that made them.

    ``jobs`` are (spec, seeds) pairs of transformer runs or of stored computations (anything
    with ``store(root)``). Returns ``{"seconds": float, "runs": int, "machines": [text, ...]}``:
    the wall time of every chunk shared by its runs and summed (a configuration listed twice
    counts once), and each distinct machine in words (:func:`markovformer.artifacts.machine_text`;
    runs stored before machines were recorded say so)."""
    from ..artifacts import machine_text

    total, seen, machines = 0.0, set(), []
    for spec, seeds in jobs:
        store = spec.store(root)
        for s in seeds:
            if (store.dir, int(s)) in seen:
                continue
            seen.add((store.dir, int(s)))
            info = store.info(s)
            if "batch_wall_seconds" in info:
                total += float(info["batch_wall_seconds"]) / int(info["runs_in_batch"])
            elif "chunk_wall_seconds" in info:
                total += float(info["chunk_wall_seconds"]) / int(info.get("runs_in_chunk", 1))
            text = machine_text(info.get("versions", {}))
            if text not in machines:
                machines.append(text)
    return {"seconds": total, "runs": len(seen), "machines": machines}


def seed_list(n: int | None, default: int) -> list[int]:
    """Seeds 0..n-1 (``default`` of them when n is None)."""
    n = default if n is None else n
    if n < 1:
        raise ValueError(f"the number of seeds must be >= 1, got {n}")
    return list(range(n))


def no_jobs(n_seeds: int | None, steps: int | None) -> list:
    """The jobs of an analytic figure: none (its figure function computes everything)."""
    return []


def stack(results: dict[int, dict[str, np.ndarray]], key: str) -> np.ndarray:
    """Stack one entry over seeds (in seed order): shape (n_seeds, ...)."""
    return np.stack([results[s][key] for s in sorted(results)])


# --------------------------------------------------------------------------------------------
# Registry of reproducible figures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """A reproducible figure: the runs it needs and how to draw them.

    ``jobs(n_seeds, steps)`` returns the (spec, seeds) list at the paper's settings (``None``
    keeps the defaults); ``figure(results, jobs)`` draws from the loaded results.
    """

    id: str
    description: str
    jobs: Callable[[int | None, int | None], list[tuple[RunSpec, list[int]]]]
    figure: Callable[[list, list], object]
    default_seeds: int
    summary: Callable[[list, list], dict] | None = None
    chapter: str = ""
    #: ``markovformer verify``: the largest deviation of a loss curve (nats) between a stored run
    #: and the same run trained again; None: the curves are chaotic, only the report is compared
    verify_atol: float | None = 1e-3

    def load(self, root: str | Path, n_seeds: int | None = None, steps: int | None = None):
        jobs = self.jobs(n_seeds, steps)
        return load_specs(jobs, root), jobs

    def run(self, root: str | Path, n_seeds: int | None = None, steps: int | None = None, **kw):
        jobs = self.jobs(n_seeds, steps)
        return run_specs(jobs, root, **kw), jobs


_EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.id in _EXPERIMENTS:
        raise ValueError(f"experiment id {exp.id!r} is registered twice")
    _EXPERIMENTS[exp.id] = exp
    return exp


def get(exp_id: str) -> Experiment:
    if exp_id not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment id {exp_id!r}; known ids: {sorted(_EXPERIMENTS)}")
    return _EXPERIMENTS[exp_id]


def all_experiments() -> list[Experiment]:
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]
