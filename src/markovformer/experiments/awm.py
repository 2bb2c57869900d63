"""Experiments of *Attention with Markov* (AwM), run on the theory's model (SPEC section 4).

The authors ran a pre-LayerNorm GELU variant for these experiments; we use the single-layer
model of SPEC section 2 (no layer norm, ReLU) everywhere, at their training settings.

ids: awm-1, awm-2 (loss curves with and without tying), awm-3 (predicted probabilities against
position), awm-4 (final loss over a (p, q) grid), awm-plateau (how long standard init stays on the
unigram plateau at (0.5, 0.8)).
"""

from __future__ import annotations

import numpy as np

from .. import analysis, plotting
from ..markov import BinaryChain
from ..model import TransformerConfig
from ..train import SCHEDULE_ENDS, TrainConfig
from .base import Experiment, RunSpec, register, seed_list, stack

PAPER_STEPS = 1000
GRID = np.round(np.arange(0.1, 0.95, 0.1), 2)
GRID_KEYS = ("exact_loss", "failed_step")  # the 162 grid runs keep only their test-loss curve
#: what the AwM runs keep: the three curves and the probes (not the weights, not the lr schedule)
AWM_KEYS = ("train_loss", "exact_loss", "excess", "probe_steps", "probes", "failed_step")


def paper_train(
    steps: int | None = None, probes: bool = True, schedule_end: str = "authors"
) -> TrainConfig:
    """The authors' L2G/AwM optimisation settings (SPEC section 2); ``schedule_end`` names the
    end of the one-cycle schedule (``markovformer.train.SCHEDULE_ENDS``)."""
    s = steps or PAPER_STEPS
    probe = tuple(sorted({0, s // 10, s // 4, s // 2, s})) if probes else ()
    return TrainConfig(
        steps=s,
        batch_size=16,
        probe_steps=probe,
        final_div_factor=schedule_end_factor(schedule_end),
    )


def schedule_end_factor(name: str) -> float:
    """``final_div_factor`` of a named schedule end, with a clear error for an unknown name."""
    if name not in SCHEDULE_ENDS:
        raise ValueError(f"unknown schedule end {name!r}; known: {sorted(SCHEDULE_ENDS)}")
    return SCHEDULE_ENDS[name]


def binary_spec(
    p: float,
    q: float,
    tied: bool = True,
    steps: int | None = None,
    depth: int = 1,
    seq_len: int = 1024,
    init: str = "gaussian",
    init_kwargs: tuple = (),
    probes: bool = True,
    keep_final_state: bool = False,
    record_keys: tuple[str, ...] | None = AWM_KEYS,
    schedule_end: str = "authors",
) -> RunSpec:
    """A run at the paper's settings (d = 8, N = 1024, batch 16, AdamW, 1000 steps)."""
    return RunSpec(
        chain=BinaryChain(p, q).spec(),
        model=TransformerConfig(d=8, seq_len=seq_len, tied=tied, depth=depth),
        train=paper_train(steps, probes, schedule_end),
        init=init,
        init_kwargs=init_kwargs,
        keep_final_state=keep_final_state,
        record_keys=record_keys,
    )


def _tying_jobs(p: float, q: float):
    def jobs(n_seeds: int | None, steps: int | None):
        seeds = seed_list(n_seeds, 3)
        return [(binary_spec(p, q, tied=t, steps=steps), seeds) for t in (True, False)]

    return jobs


def _levels(spec: RunSpec) -> tuple[float, float]:
    chain = BinaryChain(spec.chain["p"], spec.chain["q"])
    return chain.entropy_rate, chain.unigram_loss


def tying_panel(results, jobs) -> dict:
    """The loss-curve panel of one chain: tied and untied arms."""
    spec = jobs[0][0]
    rate, uni = _levels(spec)
    curves = {
        ("tied" if sp.model.tied else "untied"): stack(res, "exact_loss")
        for res, (sp, _) in zip(results, jobs, strict=True)
    }
    p, q = spec.chain["p"], spec.chain["q"]
    return {"curves": curves, "rate": rate, "unigram": uni, "title": f"(p, q) = ({p:g}, {q:g})"}


def tying_figure(results, jobs):
    return plotting.plot_loss_panels([tying_panel(results, jobs)])


def tying_summary(results, jobs) -> dict:
    """Final exact loss (mean over the last 20 steps) per arm and seed, and success counts."""
    rate, uni = _levels(jobs[0][0])
    out = {"entropy_rate": rate, "unigram_loss": uni}
    for res, (sp, _) in zip(results, jobs, strict=True):
        out["tied" if sp.model.tied else "untied"] = analysis.outcome(
            stack(res, "exact_loss"), rate, uni
        )
    return out


AWM1 = register(
    Experiment(
        id="awm-1",
        description="AwM-1: exact-conditional-loss curves with and without tying at (0.2, 0.3)",
        jobs=_tying_jobs(0.2, 0.3),
        figure=tying_figure,
        summary=tying_summary,
        default_seeds=3,
        chapter="02_transformer",
    )
)
AWM2 = register(
    Experiment(
        id="awm-2",
        description="AwM-2: exact-conditional-loss curves with and without tying at (0.5, 0.8)",
        jobs=_tying_jobs(0.5, 0.8),
        figure=tying_figure,
        summary=tying_summary,
        default_seeds=3,
        chapter="02_transformer",
    )
)


def _awm3_jobs(n_seeds, steps):
    return AWM1.jobs(n_seeds, steps) + AWM2.jobs(n_seeds, steps)


def probe_panels(results, jobs, step: int | None = None) -> list[dict]:
    """Predicted Pr(1 | x_n) by position at a probe step (default: the last), per chain, tied vs
    untied (mean over seeds)."""
    panels = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        chain = BinaryChain(p, q)
        steps = list(res[min(res)]["probe_steps"])
        k = len(steps) - 1 if step is None else steps.index(step)
        panel = panels.setdefault(
            (p, q),
            {
                "title": f"(p, q) = ({p:g}, {q:g}), step {steps[k]}",
                "p": p,
                "q": q,
                "pi1": chain.stationary[1],
                "probes": {},
            },
        )
        probes = stack(res, "probes")[:, k]  # (seeds, 2, N)
        panel["probes"]["tied" if sp.model.tied else "untied"] = np.nanmean(probes, 0)
    return list(panels.values())


def _awm3_figure(results, jobs):
    steps = list(results[0][min(results[0])]["probe_steps"])
    mid = steps[-2] if len(steps) > 1 else steps[-1]  # the tied runs' plateau (step 500 by default)
    return plotting.plot_position_probes(
        probe_panels(results, jobs, mid) + probe_panels(results, jobs)
    )


def _awm3_summary(results, jobs) -> dict:
    out = {}
    steps = list(results[0][min(results[0])]["probe_steps"])
    for step in sorted({steps[-2] if len(steps) > 1 else steps[-1], steps[-1]}):
        for panel in probe_panels(results, jobs, step):
            for arm, pr in panel["probes"].items():
                out[f"{panel['title']} {arm}"] = {
                    "Pr(1|x_n=0), positions > 100": round(float(np.nanmean(pr[0, 100:])), 4),
                    "Pr(1|x_n=1), positions > 100": round(float(np.nanmean(pr[1, 100:])), 4),
                    "p": panel["p"],
                    "1-q": round(1 - panel["q"], 4),
                    "pi_1": round(float(panel["pi1"]), 4),
                }
    return out


AWM3 = register(
    Experiment(
        id="awm-3",
        description="AwM-3: predicted Pr(1 | x_n) against position, tied vs untied, both chains",
        jobs=_awm3_jobs,
        figure=_awm3_figure,
        summary=_awm3_summary,
        default_seeds=3,
        chapter="02_transformer",
    )
)


def _grid_jobs(seq_len: int, default_seeds: int):
    """The tied and untied runs of every grid cell at context length ``seq_len``."""

    def jobs(n_seeds, steps):
        seeds = seed_list(n_seeds, default_seeds)
        return [
            (
                binary_spec(
                    p,
                    q,
                    tied=t,
                    steps=steps,
                    seq_len=seq_len,
                    probes=False,
                    keep_final_state=False,
                    record_keys=GRID_KEYS,
                ),
                seeds,
            )
            for t in (True, False)
            for q in GRID
            for p in GRID
        ]

    return jobs


def grid_maps(results, jobs) -> dict[str, np.ndarray]:
    """Gap fraction (L - H) / (U - H) of the final loss (mean over seeds) on the grid."""
    maps = {
        "tied": np.full((GRID.size, GRID.size), np.nan),
        "untied": np.full((GRID.size, GRID.size), np.nan),
    }
    for res, (sp, _) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        rate, uni = _levels(sp)
        final = analysis.final_loss(stack(res, "exact_loss")).mean()
        i, j = int(np.argmin(abs(GRID - q))), int(np.argmin(abs(GRID - p)))
        maps["tied" if sp.model.tied else "untied"][i, j] = analysis.gap_fraction(final, uni, rate)
    return maps


def grid_curves(results, jobs) -> dict[tuple[float, float], dict[str, np.ndarray]]:
    """Mean exact-loss curve per grid cell and arm: {(p, q): {"tied": curve, "untied": curve}}."""
    out: dict[tuple[float, float], dict[str, np.ndarray]] = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        key = (float(sp.chain["p"]), float(sp.chain["q"]))
        arm = "tied" if sp.model.tied else "untied"
        out.setdefault(key, {})[arm] = np.nanmean(stack(res, "exact_loss"), axis=0)
    return out


def _awm4_figure(results, jobs):
    maps = grid_maps(results, jobs)
    return plotting.plot_grid_maps(
        {f"{k}: final (L - H) / (H(pi) - H)": v for k, v in maps.items()},
        GRID,
        GRID,
        label="fraction of the unigram-bigram gap left (0 = learned the chain)",
        vmin=0,
        vmax=1,
    )


def _awm4_summary(results, jobs) -> dict:
    maps = grid_maps(results, jobs)
    P, Q = np.meshgrid(GRID, GRID)
    out = {}
    for arm, z in maps.items():
        for name, region in (("p+q>1", P + Q > 1.0001), ("p+q<1", P + Q < 0.9999)):
            vals = z[region]
            out[f"{arm}, {name}"] = {
                "cells": int(vals.size),
                "stuck (gap fraction > 0.5)": int((vals > 0.5).sum()),
                "median gap fraction": round(float(np.nanmedian(vals)), 3),
            }
    return out


AWM4 = register(
    Experiment(
        id="awm-4",
        description="AwM-4: final loss over the (p, q) grid {0.1..0.9}^2, tied vs untied",
        jobs=_grid_jobs(1024, 1),
        figure=_awm4_figure,
        summary=_awm4_summary,
        default_seeds=1,
        chapter="02_transformer",
    )
)

#: the CPU-sized grid: N = 128, 3 seeds per cell; its tied runs are l2g-grid's standard arm
AWM4_REDUCED = register(
    Experiment(
        id="awm-4-reduced",
        description="AwM-4 at N = 128 (3 seeds per cell): final loss over the grid, tied vs untied",
        jobs=_grid_jobs(128, 3),
        figure=_awm4_figure,
        summary=_awm4_summary,
        default_seeds=3,
        chapter="02_transformer",
    )
)

PLATEAU_MARKS = (300, 600, 1000)


def _plateau_jobs(n_seeds, steps):
    return [(binary_spec(0.5, 0.8, tied=True, steps=steps), seed_list(n_seeds, 10))]


def _plateau_marks(steps: int) -> tuple[int, ...]:
    return tuple(m for m in PLATEAU_MARKS if m <= steps) or (steps,)


def _plateau_figure(results, jobs):
    curves = stack(results[0], "exact_loss")
    rate, uni = _levels(jobs[0][0])
    return plotting.plot_plateau(
        curves, rate, uni, _plateau_marks(curves.shape[1]), title="(0.5, 0.8), tied, standard init"
    )


def plateau_summary(results, jobs) -> dict:
    curves = stack(results[0], "exact_loss")
    rate, uni = _levels(jobs[0][0])
    out = {"runs": int(curves.shape[0])}
    for m in _plateau_marks(curves.shape[1]):
        out[f"on plateau at step {m}"] = int(analysis.on_plateau(curves, m, uni, rate).sum())
    out["escape steps"] = [analysis.escape_step(c, uni, rate) for c in curves]
    out["Kaplan-Meier"] = analysis.plateau_survival(curves, uni, rate).summary()
    return out


PLATEAU = register(
    Experiment(
        id="awm-plateau",
        description="How many standard-init runs at (0.5, 0.8), tied, are still on the unigram plateau",
        jobs=_plateau_jobs,
        figure=_plateau_figure,
        summary=plateau_summary,
        default_seeds=10,
        chapter="02_transformer",
    )
)
