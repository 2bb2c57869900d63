"""Chapter 9: local to global, in context. What decides the in-context plateau (SPEC 7.1).

Chapter 8 trains two-layer transformers on sequences from random chains (S = 3, k = 1,
alpha = 1, N = 100) and finds them stalled at the in-context unigram strategy before the
induction circuit forms. Here that stall is measured as censored data, arm against arm:

* the **escape step** of a run is the chapter-8 event: the first evaluation step from which the
  in-context bigram is the closest strategy (smallest KL(strategy || model)) to the end
  (:func:`markovformer.experiments.icl.stage_steps`); a run that does not escape is censored at
  its last step. Kaplan-Meier curves, medians with intervals and log-rank tests come from
  :mod:`markovformer.analysis`, as in chapter 5;
* ``plateau-scale``: Gaussian init scale std 0.002 / 0.02 / 0.1 (W_O and W_2 scaled by
  1/sqrt(2L)), and one layer (std 0.02) as the censored reference;
* ``plateau-prior``: Dirichlet rows against doubly stochastic kernels
  (:class:`markovformer.icl.DoublyStochasticChains`), same seeds, std 0.02;
* ``plateau-circuit``: a previous-token head planted in layer 1 through the initial weights
  (:func:`markovformer.init.planted_`) with margin 0, 1, 3 on offset 1, and margin 3 on the
  wrong offset 2, against the standard init;
* ``plateau``: every run of the chapter at once (one command regenerates them all, with the
  worker processes busy throughout).

Settings are chapter 8's (width 16, one head per layer, MLP, pre-LN, untied output, AdamW
(0.9, 0.95) at a constant 3e-3 without weight decay, batch 32), except the budget
(:data:`PLATEAU_T` steps, the in-context evaluation every :data:`EVAL_EVERY` steps) and what is
stored: the evaluations only (KL to each strategy, losses on the probe batch, head scores) and
the attention maps of the first :data:`MAP_LEN` positions of one probe sequence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import analysis
from ..icl import DoublyStochasticChains, RandomChains, bayes_risk, strategy_name
from ..plotting import draw_survival
from ..train import TrainConfig
from .base import Experiment, RunSpec, load_specs, register, seed_list, stack
from .icl import BATCH, ICL_N, ICL_PRIOR, LR, icl_config, stage_steps

__all__ = [
    "NAMESPACE",
    "PLATEAU_T",
    "PLATEAU_SEEDS",
    "EVAL_EVERY",
    "MAP_LEN",
    "DS_PRIOR",
    "Arm",
    "ARMS",
    "EXPERIMENT_ARMS",
    "COMPARISONS",
    "plateau_train",
    "arm_spec",
    "arm_of",
    "by_arm",
    "escape_times",
    "survival",
    "escape_table",
    "logrank_table",
    "prior_levels",
    "training_seconds",
]

NAMESPACE = "plateau"
#: training steps of every run (chapter 9, "How long to train": five times the latest escape of
#: chapter 8's runs)
PLATEAU_T = 3000
#: seeds per arm (0-9, the same in every arm)
PLATEAU_SEEDS = 10
#: steps between two in-context evaluations (KL to each strategy, losses, head scores, maps)
EVAL_EVERY = 25
#: the attention maps stored cover the first MAP_LEN positions of one probe sequence
MAP_LEN = 12
#: the doubly stochastic prior of plateau-prior (S = 3, k = 1, alpha = 1)
DS_PRIOR = DoublyStochasticChains(3, 1, 1.0)
#: Dirichlet rows with this alpha leave the in-context bigram the same advantage over the uniform
#: prediction as the doubly stochastic prior (0.128 nats over N = 100 positions, both by Monte
#: Carlo), while the in-context unigram keeps one: the control of plateau-prior
MATCHED_ALPHA = 1.6


@dataclass(frozen=True)
class Arm:
    """One arm: depth, prior ("dirichlet" or "doubly-stochastic") and its alpha, init and its
    arguments."""

    label: str
    depth: int = 2
    prior: str = "dirichlet"
    init: str = "gaussian"
    init_kwargs: tuple[tuple[str, object], ...] = ()
    alpha: float = 1.0


def _planted(margin: float, offset: int = 1) -> tuple:
    return (("margin", float(margin)), ("offset", offset))


#: every arm of the chapter, by key (the standard arm is chapter 8's setting)
ARMS: dict[str, Arm] = {
    "std 0.002": Arm("std 0.002", init_kwargs=(("std", 0.002),)),
    "standard": Arm("std 0.02 (standard)"),
    "std 0.1": Arm("std 0.1", init_kwargs=(("std", 0.1),)),
    "one layer": Arm("one layer (std 0.02)", depth=1),
    "doubly stochastic": Arm("doubly stochastic", prior="doubly-stochastic"),
    "alpha 1.6": Arm("Dirichlet, alpha = 1.6", alpha=MATCHED_ALPHA),
    "m = 0": Arm("planted, m = 0", init="planted", init_kwargs=_planted(0)),
    "m = 1": Arm("planted, m = 1", init="planted", init_kwargs=_planted(1)),
    "m = 3": Arm("planted, m = 3", init="planted", init_kwargs=_planted(3)),
    "offset 2": Arm("offset 2, m = 3", init="planted", init_kwargs=_planted(3, 2)),
}

#: the arms of each experiment id, in the order of its figure and table
EXPERIMENT_ARMS = {
    "plateau-scale": ("std 0.002", "standard", "std 0.1", "one layer"),
    "plateau-prior": ("standard", "doubly stochastic", "alpha 1.6"),
    "plateau-circuit": ("standard", "m = 0", "m = 1", "m = 3", "offset 2"),
}

#: the log-rank comparisons of each experiment: (arm a, arm b)
COMPARISONS = {
    "plateau-scale": (("std 0.002", "standard"), ("std 0.1", "standard"),
                      ("one layer", "standard")),
    "plateau-prior": (("doubly stochastic", "standard"), ("alpha 1.6", "standard"),
                      ("doubly stochastic", "alpha 1.6")),
    "plateau-circuit": (("m = 0", "standard"), ("m = 1", "m = 0"), ("m = 3", "m = 0"),
                        ("offset 2", "m = 0"), ("m = 3", "offset 2")),
}  # fmt: skip

ARM_COLORS = {
    "std 0.002": "#9467bd", "standard": "#000000", "std 0.1": "#2ca02c", "one layer": "#7f7f7f",
    "doubly stochastic": "#1f77b4", "alpha 1.6": "#bcbd22", "m = 0": "#8c564b", "m = 1": "#ff7f0e", "m = 3": "#d62728",
    "offset 2": "#17becf",
}  # fmt: skip

RECORD_KEYS = (
    "failed_step", "icl_steps", "icl/exact_loss", "icl/bayes_loss", "icl/prev_token",
    "icl/induction", "icl/induction_uniform",
    *(f"icl/kl/{strategy_name(m)}" for m in (None, 0, 1)),
)  # fmt: skip


def plateau_train(steps: int, maps: bool) -> TrainConfig:
    """Chapter 8's optimiser; the in-context evaluation every EVAL_EVERY steps (and the last)."""
    grid = tuple(sorted(set(range(0, steps + 1, EVAL_EVERY)) | {steps}))
    return TrainConfig(
        steps=steps, batch_size=BATCH, lr=LR, schedule="constant", weight_decay=0.0,
        icl_steps=grid, icl_map_len=MAP_LEN if maps else 0,
    )  # fmt: skip


def _prior(prior: str, alpha: float) -> RandomChains:
    """The chains of an arm: S = 3, k = 1, rows Dir(alpha), Sinkhorn-normalised or not."""
    kind = DoublyStochasticChains if prior == "doubly-stochastic" else RandomChains
    return kind(3, 1, alpha)


def arm_spec(arm: Arm, steps: int | None = None) -> RunSpec:
    """The configuration of an arm, stored under ``<root>/plateau/``."""
    maps = arm.depth >= 2
    keys = RECORD_KEYS + (("icl/maps", "icl/map_x") if maps else ())
    return RunSpec(
        chain=_prior(arm.prior, arm.alpha).spec(), model=icl_config(arm.depth),
        train=plateau_train(steps or PLATEAU_T, maps), init=arm.init,
        init_kwargs=tuple(sorted(arm.init_kwargs)), keep_final_state=False, record_keys=keys,
        namespace=NAMESPACE,
    )  # fmt: skip


def arm_of(spec: RunSpec) -> str:
    """The key of the arm whose configuration ``spec`` is (any number of steps)."""
    for key, arm in ARMS.items():
        probe = arm_spec(arm, spec.train.steps)
        if probe.identity() == spec.identity():
            return key
    raise ValueError(f"{spec.slug()} is not an arm of chapter 9")


def _jobs(arms):
    def jobs(n_seeds, steps):
        seeds = seed_list(n_seeds, PLATEAU_SEEDS)
        return [(arm_spec(ARMS[k], steps), seeds) for k in arms]

    return jobs


def by_arm(results, jobs) -> dict[str, dict[int, dict]]:
    """{arm key: {seed: record}} of loaded results."""
    return {arm_of(sp): res for res, (sp, _) in zip(results, jobs, strict=True)}


# --------------------------------------------------------------------------------------------
# Escape as censored data
# --------------------------------------------------------------------------------------------


def _kls(rec: dict) -> dict[str, np.ndarray]:
    return {k.split("/", 2)[2]: rec[k] for k in rec if k.startswith("icl/kl/")}


def escape_times(res: dict[int, dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (in order): the escape step (the first evaluation step from which the bigram is
    the closest strategy to the end) and True, or the last step and False (censored)."""
    times, observed = [], []
    for s in sorted(res):
        steps = res[s]["icl_steps"]
        t = stage_steps(_kls(res[s]), steps)["bigram_from"]
        times.append(float(steps[-1]) if t is None else float(t))
        observed.append(t is not None)
    return np.asarray(times), np.asarray(observed)


def survival(res: dict[int, dict]) -> analysis.Survival:
    """Kaplan-Meier fraction of an arm's runs still on the plateau (95% log-log band)."""
    times, observed = escape_times(res)
    horizon = int(res[min(res)]["icl_steps"][-1])
    return analysis.kaplan_meier(times, observed, horizon=horizon)


def escape_table(results, jobs) -> dict[str, dict]:
    """Per arm: runs, escaped, censored, Kaplan-Meier median and its 95% interval (None: beyond
    the last step), the escape step of every seed (None: censored), and how many runs were ever
    closest to the in-context unigram strategy (the plateau of chapter 8)."""
    out = {}
    for key, res in by_arm(results, jobs).items():
        times, observed = escape_times(res)
        km = survival(res)
        stages = [stage_steps(_kls(res[s]), res[s]["icl_steps"]) for s in sorted(res)]
        out[key] = {
            "unigram closest": sum(st["unigram_from"] is not None for st in stages),
            "label": ARMS[key].label,
            "runs": km.runs,
            "escaped": km.escaped,
            "censored": km.runs - km.escaped,
            "median": km.median,
            "median CI": [km.median_low, km.median_high],
            "escape steps": [int(t) if o else None for t, o in zip(times, observed, strict=True)],
            "horizon": km.horizon,
        }
    return out


def logrank_table(results, jobs, pairs) -> dict[tuple[str, str], analysis.LogRank]:
    """The log-rank test of each pair of arms (a, b); Z > 0: a escapes earlier."""
    arms = by_arm(results, jobs)
    return {(a, b): analysis.logrank(*escape_times(arms[a]), *escape_times(arms[b]))
            for a, b in pairs}  # fmt: skip


@functools.lru_cache(maxsize=8)
def prior_levels(prior: str = "dirichlet", n_sequences: int = 4000,
                 alpha: float = 1.0) -> dict[str, float]:  # fmt: skip
    """Mean per-position losses over N = 100 predictions under a prior (Monte Carlo, exact over
    the next symbol, seed 0): ``bayes`` is the add-alpha bigram (the Bayes predictor for
    Dirichlet rows; only a reference for doubly stochastic kernels), ``entropy`` an oracle that
    knows the drawn kernel, and each strategy."""
    pr = _prior(prior, alpha)
    r = bayes_risk(pr, ICL_N, n_sequences, seed=0)
    return {k: float(np.mean(v)) for k, v in r.items() if k not in ("bayes_se", "bayes_mean_se")}


# --------------------------------------------------------------------------------------------
# Figures and summaries
# --------------------------------------------------------------------------------------------


def _gap(res: dict) -> np.ndarray:
    """Probe-batch loss minus the add-alpha bigram's loss on the same batch, per seed and step."""
    return stack(res, "icl/exact_loss") - stack(res, "icl/bayes_loss")


def plot_arms(results, jobs, arms=None, title: str = ""):
    """Left: Kaplan-Meier fraction still on the plateau per arm, with its 95% band and median
    mark. Right: the median over seeds of loss minus the add-alpha bigram loss."""
    by = by_arm(results, jobs)
    arms = [a for a in (arms or by) if a in by]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.0, 3.3))
    for key in arms:
        res, color = by[key], ARM_COLORS[key]
        draw_survival(ax, survival(res), label=ARMS[key].label, color=color)
        steps = res[min(res)]["icl_steps"]
        ax2.plot(steps, np.median(_gap(res), 0), color=color, lw=1.4, label=ARMS[key].label)
    ax.set_title(title or "still on the plateau (Kaplan-Meier)", fontsize=10)
    ax.legend(fontsize=9, loc="best", framealpha=0.9)
    ax2.set_yscale("log")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("loss - bigram loss (nats)")
    ax2.set_title("median over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _summary(exp_id: str):
    def summary(results, jobs) -> dict:
        table = escape_table(results, jobs)
        tests = logrank_table(results, jobs, COMPARISONS[exp_id])
        out = {k: {kk: v for kk, v in row.items() if kk != "label"} for k, row in table.items()}
        out["log-rank"] = {f"{a} vs {b}": {"Z": round(t.statistic, 3), "p": float(f"{t.pvalue:.3g}")}
                           for (a, b), t in tests.items()}  # fmt: skip
        return out

    return summary


def _figure(exp_id: str):
    def figure(results, jobs):
        return plot_arms(results, jobs, EXPERIMENT_ARMS[exp_id])

    return figure


_SETTINGS = f"S = 3, k = 1, N = {ICL_N}, {PLATEAU_T} steps, {PLATEAU_SEEDS} seeds per arm"
_DESCRIPTIONS = {
    "plateau-scale": "escape from the in-context plateau: init std 0.002 / 0.02 / 0.1, one layer",
    "plateau-prior": "escape from the in-context plateau: Dirichlet rows vs doubly stochastic",
    "plateau-circuit": "escape from the in-context plateau: planted previous-token head "
    "(margin 0 / 1 / 3, wrong offset)",
}
for _id, _arms in EXPERIMENT_ARMS.items():
    register(
        Experiment(
            id=_id, description=f"{_DESCRIPTIONS[_id]}; {_SETTINGS}", jobs=_jobs(_arms),
            figure=_figure(_id), summary=_summary(_id), default_seeds=PLATEAU_SEEDS,
            chapter="09_plateau",
        )
    )  # fmt: skip

ALL_ARMS = tuple(ARMS)
ALL = register(
    Experiment(
        id="plateau",
        description=f"every run of chapter 9 (the three plateau-* experiments); {_SETTINGS}",
        jobs=_jobs(ALL_ARMS), figure=lambda r, j: plot_arms(r, j), summary=_summary("all"),
        default_seeds=PLATEAU_SEEDS, chapter="09_plateau",
    )
)  # fmt: skip
COMPARISONS["all"] = tuple(p for k, v in COMPARISONS.items() for p in v)


def training_seconds(root: str | Path) -> float:
    """Training time of every stored run of the chapter, from the manifests (the wall time of
    each chunk shared by its runs; :func:`markovformer.experiments.base.stored_training_seconds`)."""
    from .base import stored_training_seconds

    return stored_training_seconds(ALL.jobs(None, None), root)


def load(root: str | Path, exp_id: str = "plateau"):
    """(results, jobs) of an experiment id from the stored runs under ``root``."""
    from .base import get

    jobs = get(exp_id).jobs(None, None)
    return load_specs(jobs, Path(root)), jobs


# --------------------------------------------------------------------------------------------
# Attention maps, and the explorer (live figure and slider panel): data and static figure
# --------------------------------------------------------------------------------------------

#: the arms the explorer offers (those with two layers, whose attention maps are stored)
EXPLORER_ARMS = tuple(k for k, a in ARMS.items() if a.depth >= 2)
EXPLORER_SEEDS = (0, 1, 2)


def explorer_data(results, jobs, arm: str, seed: int) -> dict:
    """Everything the explorer shows of one run, per stored evaluation step (a pure function of
    the loaded results): ``steps`` (P,), ``maps`` (P, 2, 1, m, m) float32 attention of the first
    m positions of the run's first probe sequence, ``symbols`` (m,), ``kl`` {strategy: (P,)},
    ``prev_token`` and ``induction`` (P, 2, 1), ``induction_uniform`` (P,), ``gap`` (P,) = probe
    loss minus the add-alpha bigram's loss on the same batch, ``unigram_gap`` (the in-context
    unigram strategy's level on that scale, for the arm's prior), ``escape`` (the run's escape
    step, None if censored), and ``arm``, ``label``, ``seed``."""
    res = by_arm(results, jobs)[arm]
    rec = res[seed]
    times, observed = escape_times({seed: rec})
    lv = prior_levels(ARMS[arm].prior, alpha=ARMS[arm].alpha)
    kls = _kls(rec)
    return {
        "arm": arm, "label": ARMS[arm].label, "seed": int(seed),
        "steps": rec["icl_steps"].astype(int), "maps": rec["icl/maps"].astype(np.float32),
        "symbols": rec["icl/map_x"][0].astype(int),
        "kl": {n: kls[n] for n in ("uniform", "unigram", "bigram")},
        "prev_token": rec["icl/prev_token"], "induction": rec["icl/induction"],
        "induction_uniform": rec["icl/induction_uniform"],
        "gap": rec["icl/exact_loss"] - rec["icl/bayes_loss"],
        "unigram_gap": lv["unigram"] - lv["bayes"],
        "escape": int(times[0]) if observed[0] else None,
    }  # fmt: skip


def explorer_runs(results, jobs, arms=EXPLORER_ARMS, seeds=EXPLORER_SEEDS) -> list[dict]:
    """:func:`explorer_data` of every (arm, seed) the explorer offers, arm by arm."""
    return [explorer_data(results, jobs, a, s) for a in arms for s in seeds]


STRATEGY_COLORS = {"uniform": "0.5", "unigram": "C3", "bigram": "k"}


def _map(ax, att: np.ndarray, xs: np.ndarray, title: str) -> None:
    vmax = float(att[4:].max()) if att.shape[0] > 4 else float(att.max())
    ax.imshow(att, cmap="Blues", vmin=0, vmax=max(vmax, 1e-6))
    tick = np.arange(0, len(xs), 2)
    ax.set_xticks(tick, [f"{xs[i]}" for i in tick], fontsize=9)
    ax.set_yticks(tick, [f"{i}:{xs[i]}" for i in tick], fontsize=9)
    ax.set_title(title, fontsize=9.5)


def explorer_figure(data: dict, step: int):
    """The explorer at the stored step nearest ``step`` (ties to the earlier): loss minus the
    bigram loss and the KL to each strategy over training with the step marked, and the
    attention of both layers at that step."""
    steps = data["steps"]
    i = int(np.argmin(np.abs(steps - step)))
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.6))
    ax = axes[0, 0]
    ax.plot(steps, np.maximum(data["gap"], 1e-4), color="C0", lw=1.4, label="this run")
    ax.axhline(data["unigram_gap"], color="C3", ls="-.", lw=1, label="in-context unigram")
    ax.set_yscale("log")
    ax.set_title(f"{data['label']}, seed {data['seed']}: loss - bigram", fontsize=9.5)
    ax.legend(fontsize=9)
    ax = axes[0, 1]
    for n, c in data["kl"].items():
        ax.plot(steps, c, color=STRATEGY_COLORS[n], lw=1.2, label=f"KL({n} || model)")
    ax.set_yscale("log")
    ax.legend(fontsize=9)
    ax.set_title(f"step {steps[i]}", fontsize=9.5)
    for ax in axes[0]:
        ax.axvline(steps[i], color="C0", lw=1, ls=":")
        if data["escape"] is not None:
            ax.axvline(data["escape"], color="k", lw=0.8, ls="--")
        ax.set_xlabel("training step")
    for layer in range(2):
        score = (f"previous-token {data['prev_token'][i, 0, 0]:.2f}" if layer == 0 else
                 f"induction {data['induction'][i, 1, 0]:.2f}")  # fmt: skip
        _map(axes[1, layer], data["maps"][i, layer, 0], data["symbols"],
             f"layer {layer + 1}: {score}")  # fmt: skip
    fig.tight_layout()
    return fig


def explorer(runs: list[dict], arm: str = "m = 3", seed: int = 0, step: int | None = None):
    """An arm menu, a seed menu and a step slider over :func:`explorer_runs`, redrawing
    :func:`explorer_figure` (for Jupyter, Binder and Colab; the HTML page runs the live figure
    :func:`markovformer.live.plateau_explorer` instead)."""
    import ipywidgets as w

    arms = list(dict.fromkeys(r["arm"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    steps = [int(s) for s in runs[0]["steps"]]
    step = steps[-1] if step is None else steps[int(np.argmin(np.abs(np.array(steps) - step)))]
    controls = {
        "arm": w.Dropdown(options=arms, value=arm, description="arm"),
        "seed": w.Dropdown(options=seeds, value=seed, description="seed"),
        "step": w.SelectionSlider(options=steps, value=step, description="step",
                                  continuous_update=False),
    }  # fmt: skip

    def draw(arm: str, seed: int, step: int) -> None:
        explorer_figure(next(r for r in runs if (r["arm"], r["seed"]) == (arm, seed)), step)
        plt.show()

    out = w.interactive_output(draw, controls)
    return w.VBox([w.HBox(list(controls.values())), out])


def plot_maps(results, jobs, arms=("standard", "m = 3"), seed: int = 0, step: int = 150):
    """Attention of layer 1 at step 0, and of layers 1 and 2 at ``step``, for one seed of each
    arm (rows): a planted head against the standard init at the same step."""
    by = by_arm(results, jobs)
    fig, axes = plt.subplots(len(arms), 3, figsize=(7.0, 2.55 * len(arms) + 0.3))
    for row, arm in zip(np.atleast_2d(axes), arms, strict=True):
        rec = by[arm][seed]
        steps = list(rec["icl_steps"])
        xs = rec["icl/map_x"][0]
        cells = ((0, 0), (steps.index(step), 0), (steps.index(step), 1))
        for ax, (i, layer) in zip(row, cells, strict=True):
            prev = rec["icl/prev_token"][i, layer, 0]
            ind = rec["icl/induction"][i, layer, 0]
            score = f"prev {prev:.2f}" if layer == 0 else f"induction {ind:.2f}"
            _map(ax, rec["icl/maps"][i, layer, 0].astype(np.float32), xs,
                 f"{ARMS[arm].label}\nlayer {layer + 1}, step {steps[i]}: {score}")  # fmt: skip
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# The doubly stochastic prior: how far the add-alpha reference is from its Bayes predictor
# --------------------------------------------------------------------------------------------


def ds_bayes_gap(positions=(5, 20, 50, 99), n_sequences: int = 200, n_draws: int = 100_000,
                 seed: int = 0) -> dict:  # fmt: skip
    """The excess loss of the add-alpha bigram over the Bayes predictor of the doubly
    stochastic prior, at a few positions n: the mean over sequences of KL(posterior predictive ||
    add-alpha), the posterior predictive estimated by importance sampling from the prior
    (:func:`markovformer.icl.posterior_predictive_mc`, ``n_draws`` kernels). Sequences from the
    "ds-gap" stream of ``seed``. Returns per position: ``gap`` (nats), ``se`` (its standard
    error over sequences), ``ess`` (the median effective sample size of the weights), and the
    same gap for the in-context unigram (``unigram``) for scale."""
    from ..icl import ngram_predictor, posterior_predictive_mc
    from ..rng import make_generator

    x, _ = DS_PRIOR.sample(n_sequences, max(positions) + 1, make_generator(seed, "ds-gap"))
    pred, ess = posterior_predictive_mc(DS_PRIOR, x, positions, n_draws, seed)
    out = {"positions": list(positions), "gap": [], "se": [], "ess": [], "unigram": []}
    for j, n in enumerate(positions):
        p = pred[:, j]
        for name, order in (("gap", 1), ("unigram", 0)):
            q = ngram_predictor(x, 3, order, 1.0)[:, n]
            kl = (p * (p.log() - q.log())).sum(-1)
            out[name].append(float(kl.mean()))
            if name == "gap":
                out["se"].append(float(kl.std() / np.sqrt(n_sequences)))
        out["ess"].append(float(ess[:, j].median()))
    return out


# --------------------------------------------------------------------------------------------
# Printed tables and the values the chapter glues
# --------------------------------------------------------------------------------------------

#: short names of the arms, for glue keys
SLUGS = {"std 0.002": "s0002", "standard": "std", "std 0.1": "s01", "one layer": "one",
         "doubly stochastic": "ds", "alpha 1.6": "a16", "m = 0": "m0", "m = 1": "m1", "m = 3": "m3",
         "offset 2": "off2"}  # fmt: skip


def _step_text(v, horizon: int) -> str:
    return f"> {horizon}" if v is None else f"{int(v)}"


def table_lines(table: dict, arms, tests: dict | None = None, pairs=()) -> list[str]:
    """One line per arm (escaped / censored, Kaplan-Meier median escape step and its 95%
    interval), then one per log-rank comparison (Z, p), as the chapter prints them."""
    out = []
    width = max(len(ARMS[a].label) for a in arms)
    for a in arms:
        row = table[a]
        T = row["horizon"]
        lo, hi = (_step_text(v, T) for v in row["median CI"])
        out.append(f"{ARMS[a].label:<{width}}  escaped {row['escaped']:2d}, censored "
                   f"{row['censored']:2d}, median {_step_text(row['median'], T)} "
                   f"({lo} to {hi})")  # fmt: skip
    for a, b in pairs:
        t = tests[(a, b)]
        out.append(f"log-rank {ARMS[a].label} vs {ARMS[b].label}: Z = {t.statistic:+.2f}, "
                   f"p = {t.pvalue:.2g}")  # fmt: skip
    return out


def glue_values(table: dict, tests: dict) -> dict:
    """Values for the chapter's prose: per arm ``<slug>_esc``, ``_cens``, ``_uni`` (runs ever
    closest to the unigram strategy), ``_med``, ``_lo``, ``_hi`` (steps, or "> T" text when
    beyond the last step), and per comparison
    ``p_<a>_<b>`` and ``z_<a>_<b>``."""
    out = {}
    for a, row in table.items():
        s, T = SLUGS[a], row["horizon"]
        out[f"{s}_esc"] = row["escaped"]
        out[f"{s}_cens"] = row["censored"]
        out[f"{s}_uni"] = row["unigram closest"]
        for key, v in (("med", row["median"]), ("lo", row["median CI"][0]),
                       ("hi", row["median CI"][1])):  # fmt: skip
            out[f"{s}_{key}"] = _step_text(v, T)
    for (a, b), t in tests.items():
        out[f"p_{SLUGS[a]}_{SLUGS[b]}"] = float(f"{t.pvalue:.2g}")
        out[f"z_{SLUGS[a]}_{SLUGS[b]}"] = round(t.statistic, 2)
    return out


# --------------------------------------------------------------------------------------------
# The planted head at step 0
# --------------------------------------------------------------------------------------------

PLANTED_ARMS = ("m = 0", "m = 1", "m = 3", "offset 2")


@torch.no_grad()
def step0_margins(arms=PLANTED_ARMS, seeds=None, batch: int = 64, seed: int = 0) -> dict:
    """Layer 1 at initialisation, for every planted arm and the standard init, on ``batch``
    sequences of the prior (the "step 0" stream of ``seed``): the logit margin on offsets 1 and
    2 (:func:`markovformer.interp.offset_margins`, mean over queries and sequences) and the
    previous-token score, per seed of the arm (its initialisation exactly as trained)."""
    from ..init import initialise
    from ..interp import offset_margins, previous_token_score
    from ..model import MarkovTransformer
    from ..rng import make_generator

    seeds = list(seed_list(None, PLATEAU_SEEDS) if seeds is None else seeds)
    x, _ = ICL_PRIOR.sample(batch, ICL_N, make_generator(seed, "step 0"))
    X = x.unsqueeze(0).expand(len(seeds), -1, -1).contiguous()
    out = {}
    for key in ("standard", *arms):
        arm = ARMS[key]
        model = MarkovTransformer(icl_config(arm.depth), len(seeds))
        initialise(model, seeds, arm.init, **dict(arm.init_kwargs))
        _, atts = model(X, return_attention=True)
        out[key] = {
            "offset 1": offset_margins(atts[0], 1).mean((1, 2)).numpy(),
            "offset 2": offset_margins(atts[0], 2).mean((1, 2)).numpy(),
            "previous-token score": previous_token_score(atts[0]).mean(1).numpy(),
        }
    return out
