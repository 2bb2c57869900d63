"""``markovformer reproduce --dry-run``: what is missing and what it would cost on this machine.

For every chunk of missing transformer runs (the same chunks ``reproduce`` would train), a short
timed probe trains a chunk of the same shape for a few steps on one torch thread, exactly as the
engine does, and scales the time per step to the chunk's steps; probes are shared by chunks of
the same shape. Stored computations (chapter 6) are probed by computing one seed at a twentieth
of their steps. A spec that evaluates during training (probes, snapshots, diagnostics, in-context
evaluations with their attention maps) is probed a second time with an evaluation at every probe
step, and the difference, per evaluation, is charged for each of its evaluation steps (chapter 9's
runs: about 6 % of their time). The chunks are then scheduled on ``workers`` processes, longest
first, to give the wall time. The estimate ignores start-up, a machine's other load, and that
worker processes slow each other down (on the 2-core EPYC that made the book's runs, two workers
each ran chapter 9's chunks at about 0.55 of the speed of one alone), so read it as a lower bound.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from .base import (
    RunSpec,
    _compute_chunk,
    _torch_threads,
    data_from_spec,
    plan_runs,
)

__all__ = ["Estimate", "estimate_jobs", "schedule_seconds"]

PROBE_STEPS = 4  # timed steps of a probe (after one untimed step)


@dataclasses.dataclass
class Estimate:
    runs: int
    chunks: list[float]  # estimated seconds of each missing chunk
    unknown: int = 0  # missing runs that could not be probed

    @property
    def cpu_seconds(self) -> float:
        return float(sum(self.chunks))


def schedule_seconds(chunk_seconds: Sequence[float], workers: int) -> float:
    """Wall time of the chunks on ``workers`` processes, longest first (the engine's order)."""
    load = [0.0] * max(1, workers)
    for c in sorted(chunk_seconds, reverse=True):
        i = load.index(min(load))
        load[i] += c
    return max(load)


_PROBES: dict[str, tuple[float, float]] = {}

#: the evaluation schedules of a TrainConfig (steps at which the trainer stops to measure)
EVAL_FIELDS = ("probe_steps", "snapshot_steps", "diagnostic_steps", "icl_steps")


def evaluation_steps(train) -> int:
    """How many steps of a training run evaluate something (the union of its schedules)."""
    return len(set().union(*(getattr(train, f) for f in EVAL_FIELDS)))


def _probe_wall(spec: RunSpec, n_runs: int, evaluate: bool) -> float:
    """Wall seconds of a probe chunk: PROBE_STEPS + 1 steps, with the spec's evaluations at every
    step (``evaluate``) or none."""
    steps = PROBE_STEPS + 1
    every = tuple(range(steps + 1))
    sched = {f: (every if evaluate and getattr(spec.train, f) else ()) for f in EVAL_FIELDS}
    maps = spec.train.icl_map_len if evaluate else 0
    tc = dataclasses.replace(spec.train, steps=steps, icl_map_len=maps, **sched)
    chunk = [(dataclasses.replace(spec, train=tc), 10_000 + i) for i in range(n_runs)]
    return _compute_chunk(chunk, "cpu")["info"]["batch_wall_seconds"]


def _probe_spec(spec: RunSpec, n_runs: int) -> float:
    """Seconds of a chunk of ``n_runs`` runs of ``spec``: its training steps at the probed time
    per step, plus its evaluation steps at the probed time per evaluation (cached by shape)."""
    key = f"{spec.batch_key()}|{n_runs}"
    if key not in _PROBES:
        plain = _probe_wall(spec, n_runs, evaluate=False)
        per_eval = 0.0
        if evaluation_steps(spec.train):
            extra = _probe_wall(spec, n_runs, evaluate=True) - plain
            per_eval = max(0.0, extra) / (PROBE_STEPS + 2)
        _PROBES[key] = (plain / (PROBE_STEPS + 1), per_eval)
    per_step, per_eval = _PROBES[key]
    return per_step * spec.train.steps + per_eval * evaluation_steps(spec.train)


def _probe_stored(job) -> float | None:
    """Seconds per seed of a stored computation, from one seed at a twentieth of its steps."""
    cfg = job.config
    steps = cfg.get("steps")
    if not isinstance(steps, int) or steps < 20:
        return None
    small = dict(cfg, steps=max(1, steps // 20))
    if "record_every" in small:
        small["record_every"] = 1
    start = time.perf_counter()
    try:
        with _torch_threads(1):
            job.compute(small, [10_000])
    except Exception:  # noqa: BLE001  (a probe that cannot run is "not estimated")
        return None
    return (time.perf_counter() - start) * steps / small["steps"]


def estimate_jobs(jobs: Sequence[tuple[object, Sequence[int]]], root: str | Path,
                  chunk_size: int = 16) -> Estimate:  # fmt: skip
    """The missing runs of ``jobs`` under ``root`` and the estimated seconds of each chunk."""
    if not jobs:
        return Estimate(0, [])
    if isinstance(jobs[0][0], RunSpec):
        chunks = plan_runs(jobs, root, chunk_size)
        secs = []
        for chunk in chunks:
            spec = chunk[0][0]
            data_from_spec(spec.chain)  # a bad chain fails here, not in the middle of a probe
            secs.append(_probe_spec(spec, len(chunk)))
        return Estimate(sum(len(c) for c in chunks), secs)
    runs, secs, unknown = 0, [], 0
    for job, seeds in jobs:
        missing = [s for s in seeds if s not in set(job.store(root).valid_seeds())]
        if not missing:
            continue
        runs += len(missing)
        per_seed = _probe_stored(job)
        if per_seed is None:
            unknown += len(missing)
        else:
            secs.append(per_seed * len(missing))
    return Estimate(runs, secs, unknown)
