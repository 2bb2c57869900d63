"""``markovformer verify``: train a figure's stored runs again and compare.

A reader runs it to check, on their own machine, that the book's data came from this code. It
trains a subset of the stored runs of an experiment (default: one seed, the smallest stored one,
of every configuration; ``all_seeds``: every run) into a temporary directory and compares them
with the stored artifacts:

* per configuration, the largest deviation of every loss curve (``train_loss``, ``exact_loss``,
  ``excess``, ``bayes_loss``; ``loss`` for stored computations) and of every other array
  (weights, probes, attention maps, reported but not judged);
* the experiment's report (``markovformer report``): recomputed with the stored runs replaced by
  the retrained ones, it must be the same, number for number.

It passes when every loss curve is within the experiment's ``verify_atol`` (1e-3 nats unless
the experiment says its curves are chaotic, then only the report is judged) and the report is
unchanged. On the machine type and torch build that made the artifacts the runs come out bit
for bit (every deviation 0); elsewhere the last bits differ (another CPU's vector instructions
round differently) and the deviations say by how much.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .experiments.base import Experiment, RunSpec, run_specs

__all__ = ["CURVE_KEYS", "ConfigCheck", "Verdict", "verify"]

#: the arrays judged against ``verify_atol``: the per-step loss curves
CURVE_KEYS = ("train_loss", "exact_loss", "excess", "bayes_loss", "loss")


@dataclass
class ConfigCheck:
    """One configuration: the seeds trained again and the largest deviations found."""

    name: str
    seeds: list[int]
    curve_dev: dict[str, float] = field(default_factory=dict)  # curve -> max |stored - new|
    other_dev: tuple[str, float] = ("", 0.0)  # the other array with the largest deviation
    ok: bool = True

    def line(self, atol: float | None) -> str:
        verdict = "OK  " if self.ok else "FAIL"
        seeds = ",".join(map(str, self.seeds))
        if self.curve_dev:
            key = max(self.curve_dev, key=self.curve_dev.get)
            curves = f"largest curve deviation {self.curve_dev[key]:.1e} ({key})"
        else:
            curves = "no loss curves"
        judged = "" if atol is not None else " (chaotic: not judged)"
        other = f"; other arrays {self.other_dev[1]:.1e} ({self.other_dev[0]})" if (
            self.other_dev[0]) else ""  # fmt: skip
        return f"{verdict} {self.name} [seed {seeds}]: {curves}{judged}{other}"


@dataclass
class Verdict:
    """What :func:`verify` found for one experiment."""

    experiment: str
    configs: list[ConfigCheck]
    report_same: bool | None  # None: the experiment has no report
    report_diff: list[str]
    seconds: float
    atol: float | None
    runs: int

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.configs) and self.report_same is not False

    def to_dict(self) -> dict:
        """What was found, with the machine it ran on (``markovformer verify --save``)."""
        from .artifacts import machine_info

        return {
            "experiment": self.experiment, "ok": self.ok, "runs": self.runs,
            "seconds": round(self.seconds, 1), "curve_atol": self.atol,
            "report_same": self.report_same, "report_diff": self.report_diff,
            "machine": machine_info(),
            "configs": [{"name": c.name, "seeds": c.seeds, "ok": c.ok,
                         "curve_deviation": c.curve_dev,
                         "largest_other": {"array": c.other_dev[0], "deviation": c.other_dev[1]}}
                        for c in self.configs],
        }  # fmt: skip

    def lines(self) -> list[str]:
        out = [c.line(self.atol) for c in self.configs]
        if self.report_same is None:
            out.append(f"--   {self.experiment}: no report to compare")
        elif self.report_same:
            out.append(f"OK   {self.experiment}: every number of the report is the same")
        else:
            out.append(f"FAIL {self.experiment}: the report differs at " + "; ".join(
                self.report_diff[:6]))  # fmt: skip
        tol = "chaotic curves, report only" if self.atol is None else f"curves within {self.atol:g}"
        out.append(f"{'PASS' if self.ok else 'FAIL'} {self.experiment}: {self.runs} run(s) "
                   f"trained again in {self.seconds:.0f} s ({tol})")  # fmt: skip
        return out


def _deviation(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the entries, inf if the shapes or the NaN positions differ."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind not in "fc" and b.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return float("inf")
    if nan_a.all():
        return 0.0
    return float(np.max(np.abs(a[~nan_a] - b[~nan_a])))


def _flatten_report(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten_report(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten_report(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: obj}


def _name(job) -> str:
    return job.slug() if isinstance(job, RunSpec) else job.slug


def verify(
    exp: Experiment,
    root: str | Path,
    all_seeds: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Verdict:
    """Train the stored runs of ``exp`` under ``root`` again (one seed per configuration, or
    every run) in a temporary directory and compare (see the module docstring)."""
    say = log or (lambda msg: None)
    results, jobs = exp.load(root)
    if not jobs:
        raise ValueError(
            f"{exp.id} stores no runs (its figure is computed when drawn): nothing to verify"
        )
    chosen = [(job, list(seeds) if all_seeds else [min(seeds)]) for job, seeds in jobs]
    runs = len({(_name(j), s) for j, ss in chosen for s in ss})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="markovformer-verify-") as tmp:
        if isinstance(jobs[0][0], RunSpec):
            fresh = run_specs(chosen, tmp, log=say, workers=workers, scheduler=scheduler)
        else:  # stored computations (chapter 6): computed again, seed by seed
            fresh = [dict(zip(ss, (dict(r) for r in j.compute(j.config, ss)), strict=True))
                     for j, ss in chosen]  # fmt: skip
    seconds = time.perf_counter() - start
    configs, mixed = [], []
    for (job, seeds), stored, new in zip(chosen, results, fresh, strict=True):
        check = ConfigCheck(_name(job), seeds)
        others: list[tuple[float, str]] = []
        for s in seeds:
            for key, arr in stored[s].items():
                if key not in new[s]:
                    others.append((float("inf"), key))
                    continue
                dev = _deviation(arr, new[s][key])
                if key in CURVE_KEYS:
                    check.curve_dev[key] = max(dev, check.curve_dev.get(key, 0.0))
                else:
                    others.append((dev, key))
        if others:
            dev, key = max(others)
            check.other_dev = (key, dev)
        if exp.verify_atol is not None:
            check.ok = all(v <= exp.verify_atol for v in check.curve_dev.values())
        check.ok = check.ok and check.other_dev[1] != float("inf")
        configs.append(check)
        mixed.append({s: new.get(s, rec) for s, rec in stored.items()})
    report_same, diff = None, []
    if exp.summary is not None:
        before = _flatten_report(json.loads(json.dumps(exp.summary(results, jobs))))
        after = _flatten_report(json.loads(json.dumps(exp.summary(mixed, jobs))))
        diff = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after))
                if before.get(k) != after.get(k)]  # fmt: skip
        report_same = not diff
    return Verdict(exp.id, configs, report_same, diff, seconds, exp.verify_atol, runs)
