"""Initialisation experiments (chapter 5): L2G-4 and its neighbours, AwM-5 and AwM-6.

* l2g-4: standard N(0, 0.02^2) vs the guideline init at (0.5, 0.8), the paper's settings, 5 seeds
  per arm (the standard arm is the configuration of awm-plateau, so those runs are shared);
* l2g-escape: when standard init escapes the unigram plateau, many seeds at reduced settings;
* l2g-scale: success against the scale of the Gaussian init, p + q > 1 and p + q < 1, beside the
  canonical model's basin probabilities (reduced settings);
* l2g-grid: standard vs guideline success over the (p, q) grid (reduced settings);
* l2g-inits: standard, guideline and the authors' constant init side by side (reduced settings);
* awm-5: depth 1, 2, 4, 8 at (0.5, 0.8), N = 512, 500 steps (the AwM settings);
* awm-6: the symmetric 5-state chain, tied vs untied (reduced settings).

Reduced settings keep the paper's optimiser, schedule, batch and d = 8 and shorten the context to
N = 128 (N = 256 for awm-6); chapter 5 states this next to every such figure.
"""

from __future__ import annotations

import numpy as np

from .. import analysis, plotting
from .. import canonical as C
from ..markov import BinaryChain, symmetric_chain
from ..model import TransformerConfig
from ..train import SCHEDULE_ENDS, TrainConfig
from .awm import GRID, binary_spec, schedule_end_factor
from .base import Experiment, RunSpec, register, seed_list, stack

REDUCED_N = 128
CURVE_KEYS = ("exact_loss", "failed_step")
START_KEYS = (
    "exact_loss",
    "failed_step",
    "diagnostic_steps",
    "diag/canon/e",
    "diag/canon/w",
    "diag/canon/a",
)


def reduced_spec(
    p: float, q: float, steps: int | None, init: str = "gaussian", init_kwargs: dict | None = None,
    keys: tuple[str, ...] = CURVE_KEYS, seq_len: int = REDUCED_N, schedule_end: str = "authors",
) -> RunSpec:  # fmt: skip
    """The paper's optimisation at a shorter context; only the listed entries are stored."""
    with_start = "diag/canon/e" in keys
    return RunSpec(
        chain=BinaryChain(p, q).spec(),
        model=TransformerConfig(d=8, seq_len=seq_len),
        train=TrainConfig(
            steps=steps or 1000,
            batch_size=16,
            diagnostic_steps=(0,) if with_start else (),
            final_div_factor=schedule_end_factor(schedule_end),
        ),
        init=init,
        init_kwargs=tuple(sorted((init_kwargs or {}).items())),
        keep_final_state=False,
        record_keys=keys,
    )


def _levels(p: float, q: float) -> tuple[float, float]:
    chain = BinaryChain(p, q)
    return chain.entropy_rate, chain.unigram_loss


# --------------------------------------------------------------------------------------------
# l2g-4
# --------------------------------------------------------------------------------------------

ARMS = {"gaussian": "standard init N(0, 0.02^2)", "guideline": "guideline init (e, w) = (1, -1)"}


def _l2g4_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 5)
    return [(binary_spec(0.5, 0.8, tied=True, steps=steps, init=init), seeds) for init in ARMS]


def _l2g4_figure(results, jobs):
    rate, uni = _levels(0.5, 0.8)
    curves = {
        ARMS[sp.init]: stack(res, "exact_loss") for res, (sp, _) in zip(results, jobs, strict=True)
    }
    return plotting.plot_loss_panels(
        [{"curves": curves, "rate": rate, "unigram": uni, "title": "(0.5, 0.8), paper settings"}]
    )


def _l2g4_summary(results, jobs) -> dict:
    rate, uni = _levels(0.5, 0.8)
    out = {"entropy_rate": round(rate, 4), "unigram_loss": round(uni, 4)}
    for res, (sp, _) in zip(results, jobs, strict=True):
        curves = stack(res, "exact_loss")
        arm = analysis.outcome(curves, rate, uni)
        arm["escape steps"] = [analysis.escape_step(c, uni, rate) for c in curves]
        arm["reached the rate at step"] = analysis.first_within(curves, rate)
        arm["Kaplan-Meier"] = analysis.plateau_survival(curves, uni, rate).summary()
        out[ARMS[sp.init]] = arm
    return out


L2G4 = register(
    Experiment(
        id="l2g-4",
        description="L2G-4: standard vs guideline init at (0.5, 0.8), paper settings, 5 seeds per arm",
        jobs=_l2g4_jobs,
        figure=_l2g4_figure,
        summary=_l2g4_summary,
        default_seeds=5,
        chapter="05_initialisation",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-escape
# --------------------------------------------------------------------------------------------

ESCAPE_MARKS = (300, 600, 1000)


def _escape_jobs(n_seeds, steps):
    return [(reduced_spec(0.5, 0.8, steps), seed_list(n_seeds, 40))]


def escape_summary(results, jobs) -> dict:
    rate, uni = _levels(0.5, 0.8)
    curves = stack(results[0], "exact_loss")
    steps = [analysis.escape_step(c, uni, rate) for c in curves]
    out = {"runs": len(steps), "never escaped": sum(s is None for s in steps)}
    for m in ESCAPE_MARKS:
        if m <= curves.shape[1]:
            out[f"still on the plateau at step {m}"] = int(
                analysis.on_plateau(curves, m, uni, rate).sum()
            )
    out["Kaplan-Meier"] = analysis.plateau_survival(curves, uni, rate).summary()
    out["escape steps"] = steps
    return out


def _escape_figure(results, jobs):
    rate, uni = _levels(0.5, 0.8)
    curves = stack(results[0], "exact_loss")
    marks = tuple(m for m in ESCAPE_MARKS if m <= curves.shape[1])
    return plotting.plot_plateau(
        curves, rate, uni, marks, title=f"(0.5, 0.8), N = {REDUCED_N}, {curves.shape[0]} seeds"
    )


ESCAPE = register(
    Experiment(
        id="l2g-escape",
        description=f"When does standard init escape the plateau at (0.5, 0.8)? 40 seeds, N = {REDUCED_N}",
        jobs=_escape_jobs,
        figure=_escape_figure,
        summary=escape_summary,
        default_seeds=40,
        chapter="05_initialisation",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-schedule
# --------------------------------------------------------------------------------------------

#: the two ends of the one-cycle schedule compared at the same seeds (markovformer.train)
SCHEDULE_ARMS = {"authors": "ends at 0.2 x peak (authors)", "tenth": "ends at 0.1 x peak"}


def _schedule_jobs(n_seeds, steps):
    """Standard init at (0.5, 0.8) under both schedule ends: the paper's settings (10 seeds, the
    'authors' arm is the awm-plateau configuration) and N = 128 (40 seeds, the 'authors' arm is
    l2g-escape). Same seeds in both arms."""
    paper, reduced = seed_list(n_seeds, 10), seed_list(n_seeds, 40)
    jobs = [(binary_spec(0.5, 0.8, steps=steps, schedule_end=end), paper) for end in SCHEDULE_ARMS]
    jobs += [(reduced_spec(0.5, 0.8, steps, schedule_end=end), reduced) for end in SCHEDULE_ARMS]
    return jobs


def schedule_arm(spec: RunSpec) -> str:
    """The SCHEDULE_ARMS key of a spec."""
    ends = {v: k for k, v in SCHEDULE_ENDS.items()}
    return ends[spec.train.final_div_factor]


def schedule_table(results, jobs) -> dict:
    """Per setting ("paper" N = 1024, "reduced" N = 128) and schedule end: escape (Kaplan-Meier,
    censored at the last step), how many runs reached the entropy rate (within 0.005) and the
    log-rank p-value of the two ends (same seeds)."""
    from scipy import stats

    rate, uni = _levels(0.5, 0.8)
    out: dict = {}
    for res, (sp, seeds) in zip(results, jobs, strict=True):
        setting = "paper" if sp.model.seq_len == 1024 else "reduced"
        curves = stack(res, "exact_loss")
        km = analysis.plateau_survival(curves, uni, rate)
        times, observed = analysis.escape_times(curves, uni, rate)
        out.setdefault(setting, {"N": sp.model.seq_len, "seeds": len(seeds)})[schedule_arm(sp)] = {
            "survival": km,
            "times": times,
            "observed": observed,
            "reached the rate": int(analysis.succeeded(curves, rate).sum()),
}  # fmt: skip
    for row in out.values():
        a, b = row["authors"], row["tenth"]
        x = stats.CensoredData(
            uncensored=a["times"][a["observed"]], right=a["times"][~a["observed"]]
        )
        y = stats.CensoredData(
            uncensored=b["times"][b["observed"]], right=b["times"][~b["observed"]]
        )
        both_censored = not (a["observed"].any() or b["observed"].any())
        row["log-rank p"] = None if both_censored else float(stats.logrank(x, y).pvalue)
    return out


def _schedule_figure(results, jobs):
    table = schedule_table(results, jobs)
    panels = [
        {
            "title": f"(0.5, 0.8), N = {row['N']}, {row['seeds']} seeds per end",
            "arms": {SCHEDULE_ARMS[end]: row[end]["survival"] for end in SCHEDULE_ARMS},
        }
        for row in table.values()
    ]
    return plotting.plot_survival_panels(panels, marks=ESCAPE_MARKS)


def _schedule_summary(results, jobs) -> dict:
    out = {}
    for setting, row in schedule_table(results, jobs).items():
        out[setting] = {"N": row["N"], "seeds": row["seeds"], "log-rank p": row["log-rank p"]}
        for end in SCHEDULE_ARMS:
            arm = row[end]
            out[setting][end] = {
                **arm["survival"].summary(),
                "reached the rate": arm["reached the rate"],
                "runs": arm["survival"].runs,
            }
    return out


SCHEDULE = register(
    Experiment(
        id="l2g-schedule",
        description="Escape from the plateau at (0.5, 0.8) under both ends of the one-cycle "
        "schedule (0.2 x and 0.1 x peak), same seeds: paper settings (10) and N = 128 (40)",
        jobs=_schedule_jobs,
        figure=_schedule_figure,
        summary=_schedule_summary,
        default_seeds=10,
        chapter="05_initialisation",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-scale
# --------------------------------------------------------------------------------------------

SCALES = (0.02, 0.1, 0.3, 0.5, 1.0)
SCALE_CHAINS = ((0.5, 0.8), (0.2, 0.3))


def _scale_kwargs(s: float) -> dict:
    return {} if s == 0.02 else {"std": s}  # 0.02 is the default: share those runs


def _scale_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 20)
    return [
        (reduced_spec(p, q, steps, "gaussian", _scale_kwargs(s), keys=START_KEYS), seeds)
        for p, q in SCALE_CHAINS
        for s in SCALES
    ]


def scale_table(results, jobs, n_canonical: int = 200_000) -> dict:
    """Per chain, by scale: the success fraction; the fraction predicted by the canonical basins of
    the projected starting points (e, w) of the same runs; the canonical probability for
    (e0, w0) ~ N(0, s^2 I) (``n_canonical`` samples); and the Kaplan-Meier median escape step
    from the unigram plateau with its 95% interval (None: above the last step; runs that never
    escaped are censored there, not dropped)."""
    out = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        s = dict(sp.init_kwargs).get("std", 0.02)
        rate, uni = _levels(p, q)
        curves = stack(res, "exact_loss")
        ok = analysis.succeeded(np.nan_to_num(curves, nan=np.inf), rate)
        e0, w0 = stack(res, "diag/canon/e")[:, 0], stack(res, "diag/canon/w")[:, 0]
        predicted = C.basin_label(e0, w0, switching=p + q > 1)
        failed = stack(res, "failed_step") >= 0
        km = analysis.plateau_survival(np.nan_to_num(curves, nan=np.inf), uni, rate)
        row = out.setdefault((p, q), {"scale": [], "success": [], "predicted": [], "escaped": [],
                                      "median_escape_step": [], "median_escape_ci": [],
                                      "nan_runs": [], "runs": []})  # fmt: skip
        row["scale"].append(s)
        row["success"].append(float(ok.mean()))
        row["predicted"].append(float(predicted.mean()))
        row["escaped"].append(km.escaped)
        row["median_escape_step"].append(km.median)
        row["median_escape_ci"].append([km.median_low, km.median_high])
        row["nan_runs"].append(int(failed.sum()))
        row["runs"].append(int(curves.shape[0]))
    for (p, q), row in out.items():
        canon = C.basin_probabilities(row["scale"], n=n_canonical)
        row["canonical"] = [float(v) for v in canon["switching" if p + q > 1 else "sticky"]]
    return out


def _scale_figure(results, jobs):
    import matplotlib.pyplot as plt

    table = scale_table(results, jobs)
    fig, axes = plt.subplots(1, 2, figsize=(plotting.COLUMN, 4.4), layout="constrained")
    for ax, ((p, q), row) in zip(axes, table.items(), strict=True):
        ax.plot(
            row["scale"],
            row["success"],
            "o-",
            color="k",
            label=f"full transformer (n={row['runs'][0]} per scale)",
        )
        ax.plot(
            row["scale"],
            row["predicted"],
            "s--",
            color="C0",
            label="canonical basin of the projected start",
        )
        ax.plot(
            row["scale"],
            row["canonical"],
            "^:",
            color="C3",
            label="canonical model, (e0, w0) ~ N(0, s^2 I)",
        )
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("init scale s")
        ax.set_title(f"({p:g}, {q:g}), N = {REDUCED_N}")
    axes[0].set_ylabel("fraction reaching the entropy rate")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
               fontsize=plotting.SMALL)  # fmt: skip
    return fig


def _scale_summary(results, jobs) -> dict:
    return {f"({p}, {q})": row for (p, q), row in scale_table(results, jobs).items()}


SCALE = register(
    Experiment(
        id="l2g-scale",
        description=f"Success vs Gaussian init scale, both regimes, 20 seeds per point, N = {REDUCED_N}",
        jobs=_scale_jobs,
        figure=_scale_figure,
        summary=_scale_summary,
        default_seeds=20,
        chapter="05_initialisation",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-grid and l2g-inits
# --------------------------------------------------------------------------------------------

GRID_INITS = ("gaussian", "guideline")


def _grid_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 3)
    return [
        (reduced_spec(p, q, steps, init), seeds) for init in GRID_INITS for q in GRID for p in GRID
    ]


def success_maps(results, jobs) -> dict[str, np.ndarray]:
    """Fraction of seeds within 0.005 of the entropy rate per cell (NaN on p + q = 1)."""
    maps = {init: np.full((GRID.size, GRID.size), np.nan) for init in GRID_INITS}
    for res, (sp, _) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        if abs(p + q - 1) < 1e-9:
            continue
        rate, _ = _levels(p, q)
        ok = analysis.succeeded(np.nan_to_num(stack(res, "exact_loss"), nan=np.inf), rate)
        maps[sp.init][int(np.argmin(abs(GRID - q))), int(np.argmin(abs(GRID - p)))] = ok.mean()
    return maps


def _grid_figure(results, jobs):
    maps = success_maps(results, jobs)
    return plotting.plot_grid_maps(
        {ARMS[k]: v for k, v in maps.items()}, GRID, GRID,
        label="fraction of runs reaching the entropy rate (within 0.005)", vmin=0, vmax=1, cmap="RdYlGn",
    )  # fmt: skip


def _grid_summary(results, jobs) -> dict:
    maps = success_maps(results, jobs)
    P, Q = np.meshgrid(GRID, GRID)
    out = {}
    for init, z in maps.items():
        for name, region in (("p+q>1", P + Q > 1.0001), ("p+q<1", P + Q < 0.9999)):
            vals = z[region]
            out[f"{ARMS[init]}, {name}"] = {
                "cells": int(region.sum()),
                "mean success fraction": round(float(np.nanmean(vals)), 3),
                "cells learned by every seed": int((vals == 1).sum()),
                "cells learned by no seed": int((vals == 0).sum()),
            }
    return out


GRIDX = register(
    Experiment(
        id="l2g-grid",
        description=f"Standard vs guideline init over the (p, q) grid, 3 seeds per cell, N = {REDUCED_N}",
        jobs=_grid_jobs,
        figure=_grid_figure,
        summary=_grid_summary,
        default_seeds=3,
        chapter="05_initialisation",
    )
)

INIT_ARMS = {
    "gaussian": "standard",
    "guideline": "guideline (1, -1)",
    "authors_good": "authors' constant (sqrt2, -8)",
}


def _inits_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 20)
    return [(reduced_spec(p, q, steps, init), seeds) for p, q in SCALE_CHAINS for init in INIT_ARMS]


def inits_table(results, jobs) -> dict:
    out = {}
    for res, (sp, seeds) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        rate, _ = _levels(p, q)
        curves = np.nan_to_num(stack(res, "exact_loss"), nan=np.inf)
        out[f"({p}, {q}) {INIT_ARMS[sp.init]}"] = (
            f"{int(analysis.succeeded(curves, rate).sum())}/{len(seeds)}"
        )
    return out


def _inits_figure(results, jobs):
    panels = []
    for p, q in SCALE_CHAINS:
        rate, uni = _levels(p, q)
        curves = {
            INIT_ARMS[sp.init]: np.nan_to_num(stack(res, "exact_loss"), nan=uni + 0.1)
            for res, (sp, _) in zip(results, jobs, strict=True)
            if (sp.chain["p"], sp.chain["q"]) == (p, q)
        }
        panels.append(
            {
                "curves": curves,
                "rate": rate,
                "unigram": uni,
                "title": f"({p:g}, {q:g}), N = {REDUCED_N}",
            }
        )
    return plotting.plot_loss_panels(panels)


INITS = register(
    Experiment(
        id="l2g-inits",
        description=f"Standard, guideline and authors' constant init, both regimes, 20 seeds, N = {REDUCED_N}",
        jobs=_inits_jobs,
        figure=_inits_figure,
        summary=lambda results, jobs: inits_table(results, jobs),
        default_seeds=20,
        chapter="05_initialisation",
    )
)


# --------------------------------------------------------------------------------------------
# awm-5 and awm-6
# --------------------------------------------------------------------------------------------

DEPTHS = (1, 2, 4, 8)


def _awm5_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 3)
    return [
        (
            RunSpec(
                chain=BinaryChain(0.5, 0.8).spec(),
                model=TransformerConfig(d=8, seq_len=512, depth=L),
                train=TrainConfig(steps=steps or 500, batch_size=16),
                keep_final_state=False,
                record_keys=CURVE_KEYS,
            ),
            seeds,
        )
        for L in DEPTHS
    ]


def _awm5_figure(results, jobs):
    rate, uni = _levels(0.5, 0.8)
    curves = {
        f"depth {sp.model.depth}": stack(res, "exact_loss")
        for res, (sp, _) in zip(results, jobs, strict=True)
    }
    return plotting.plot_loss_panels(
        [
            {
                "curves": curves,
                "rate": rate,
                "unigram": uni,
                "title": "(0.5, 0.8), N = 512, 500 steps",
            }
        ]
    )


def _awm5_summary(results, jobs) -> dict:
    rate, uni = _levels(0.5, 0.8)
    out = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        curves = stack(res, "exact_loss")
        out[f"depth {sp.model.depth}"] = {
            **analysis.outcome(curves, rate, uni),
            "escape steps": [analysis.escape_step(c, uni, rate) for c in curves],
            "Kaplan-Meier": analysis.plateau_survival(curves, uni, rate).summary(),
        }
    return out


AWM5 = register(
    Experiment(
        id="awm-5",
        description="AwM-5: depth 1, 2, 4, 8 at (0.5, 0.8), N = 512, 500 steps, 3 seeds (tied)",
        jobs=_awm5_jobs,
        figure=_awm5_figure,
        summary=_awm5_summary,
        default_seeds=3,
        chapter="05_initialisation",
    )
)

AWM6_P = (0.1, 0.3, 0.6, 0.9)
AWM6_N = 256


def _awm6_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 2)
    return [
        (
            RunSpec(
                chain=symmetric_chain(5, p).spec(),
                model=TransformerConfig(d=8, seq_len=AWM6_N, n_states=5, tied=tied),
                train=TrainConfig(steps=steps or 1000, batch_size=16),
                keep_final_state=False,
                record_keys=CURVE_KEYS,
            ),
            seeds,
        )
        for p in AWM6_P
        for tied in (True, False)
    ]


def _awm6_panels(results, jobs) -> list[dict]:
    panels = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        p = sp.chain["p"]
        chain = symmetric_chain(5, p)
        panel = panels.setdefault(p, {"curves": {}, "rate": chain.entropy_rate, "unigram": chain.unigram_loss,
                                      "title": f"5 states, p = {p:g}, N = {AWM6_N}"})  # fmt: skip
        panel["curves"]["tied" if sp.model.tied else "untied"] = stack(res, "exact_loss")
    return list(panels.values())


def _awm6_figure(results, jobs):
    return plotting.plot_loss_panels(_awm6_panels(results, jobs), ncols=2)


def _awm6_summary(results, jobs) -> dict:
    out = {}
    for panel in _awm6_panels(results, jobs):
        for arm, curves in panel["curves"].items():
            out[f"{panel['title']}, {arm}"] = {
                "bigram": round(panel["rate"], 4),
                "unigram": round(panel["unigram"], 4),
                "final_loss": [round(float(v), 4) for v in analysis.final_loss(curves)],
            }
    return out


AWM6 = register(
    Experiment(
        id="awm-6",
        description=f"AwM-6: symmetric 5-state chain, p in {{0.1, 0.3, 0.6, 0.9}}, tied vs untied, N = {AWM6_N}",
        jobs=_awm6_jobs,
        figure=_awm6_figure,
        summary=_awm6_summary,
        default_seeds=2,
        chapter="05_initialisation",
    )
)
