"""Experiments of *Local to Global* (L2G): the low-rank reduction and the loss landscape.

Training runs (AdamW at the paper's settings, N = 1024, d = 8, 1000 steps):

* l2g-a1: rank-one emergence at (0.2, 0.3), standard vs rank-one init (energy fraction of the top
  singular value of W_1, W_V, W_2 and the positions; weight heat maps);
* l2g-a2: the full model started rank one vs the canonical (e, w, b) model trained the same way;
* l2g-t: trained full transformers projected on (e, w), over the analytic flow, both regimes.

Analytic figures (no training): l2g-1 (flow, energy and basins), l2g-2 (the 3-D (e, w, a)
flow), l2g-basins (basin probabilities of Gaussian initialisation).
"""

from __future__ import annotations

import math

import numpy as np

from .. import analysis, plotting
from .. import canonical as C
from ..markov import BinaryChain
from ..model import TransformerConfig
from ..train import TrainConfig
from .base import Experiment, RunSpec, no_jobs, register, seed_list, stack

DIAG_EVERY = 10  # diagnostics (rank-one energies, canonical coordinates) every 10 steps
RANK1_START = (0.5, 0.5)  # the rank-one init of l2g-a1 / l2g-a2 (in the global basin of (0.2, 0.3))


def l2g_train(steps: int | None, snapshots: bool = False) -> TrainConfig:
    s = steps or 1000
    return TrainConfig(
        steps=s,
        batch_size=16,
        probe_steps=(),
        snapshot_steps=(0, s // 10, s) if snapshots else (),
        diagnostic_steps=tuple(range(0, s + 1, DIAG_EVERY)) if s >= DIAG_EVERY else (0, s),
    )


def l2g_spec(
    p: float, q: float, steps: int | None, init: str = "gaussian", init_kwargs: dict | None = None,
    snapshots: bool = False, model_kind: str = "transformer", seq_len: int = 1024,
) -> RunSpec:  # fmt: skip
    return RunSpec(
        chain=BinaryChain(p, q).spec(),
        model=TransformerConfig(d=8, seq_len=seq_len),
        train=l2g_train(steps, snapshots),
        init=init,
        init_kwargs=tuple(sorted((init_kwargs or {}).items())),
        model_kind=model_kind,
    )


def _diag_steps(results) -> np.ndarray:
    first = results[min(results)]
    return first["diagnostic_steps"]


# --------------------------------------------------------------------------------------------
# l2g-a1: rank-one emergence
# --------------------------------------------------------------------------------------------

RANK1_MATRICES = {
    "w1": "$W_1$ (MLP in)",
    "w2": "$W_2$ (MLP out)",
    "wv": "$W_V$ (value)",
    "pos": "positions $p_{1..N}$",
}


def _a1_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 3)
    e0, w0 = RANK1_START
    return [
        (l2g_spec(0.2, 0.3, steps, snapshots=True), seeds),
        (
            l2g_spec(
                0.2,
                0.3,
                steps,
                "rank_one",
                {"e": e0, "w": w0, "attention": "gaussian"},
                snapshots=True,
            ),
            seeds,
        ),
    ]


ARM_NAMES = {"gaussian": "standard init N(0, 0.02^2)", "rank_one": "rank-one init"}


def rank_one_arms(results, jobs) -> dict[str, dict[str, np.ndarray]]:
    return {
        ARM_NAMES[sp.init]: {m: stack(res, f"diag/rank1/{m}") for m in RANK1_MATRICES}
        for res, (sp, _) in zip(results, jobs, strict=True)
    }


def _a1_figure(results, jobs):
    return plotting.plot_rank_one(
        _diag_steps(results[0]), rank_one_arms(results, jobs), RANK1_MATRICES
    )


def weight_heatmap_rows(results, jobs, seed: int = 0, n_positions: int = 48) -> dict:
    """Snapshots of W_1, W_V and the first positions of one seed, per arm and step."""
    rows = {}
    for res, (sp, _) in zip(results, jobs, strict=True):
        rec = res[seed]
        for k, step in enumerate(rec["snapshot_steps"]):
            rows[f"{ARM_NAMES[sp.init].split(' ')[0]}, step {int(step)}"] = [
                ("$W_1$ (32 x 8)", rec["snapshot/w1"][k, 0]),
                ("$W_2^T$ (32 x 8)", rec["snapshot/w2"][k, 0].T),
                ("$W_V$ (8 x 8)", rec["snapshot/wv"][k, 0]),
                (f"positions 1..{n_positions}", rec["snapshot/pos"][k, :n_positions]),
                ("$e$", rec["snapshot/emb"][k][None, :]),
            ]
    return rows


def _a1_summary(results, jobs) -> dict:
    out = {}
    for arm, mats in rank_one_arms(results, jobs).items():
        out[arm] = {
            f"{m} energy at start / end (mean)": [
                round(float(np.nanmean(v[:, 0])), 4),
                round(float(np.nanmean(v[:, -1])), 4),
            ]
            for m, v in mats.items()
        }
    return out


A1 = register(
    Experiment(
        id="l2g-a1",
        description="L2G-A1: rank-one emergence of W_1, W_2, W_V and positions at (0.2, 0.3)",
        jobs=_a1_jobs,
        figure=_a1_figure,
        summary=_a1_summary,
        default_seeds=3,
        chapter="03_low_rank",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-a2: full model started rank one vs the canonical model
# --------------------------------------------------------------------------------------------


def _a2_jobs(n_seeds, steps):
    seeds = seed_list(n_seeds, 3)
    e0, w0 = RANK1_START
    return [
        (l2g_spec(0.2, 0.3, steps, "rank_one", {"e": e0, "w": w0, "attention": "zero"}), seeds),
        (l2g_spec(0.2, 0.3, steps, "canonical", {"e": e0, "w": w0}, model_kind="canonical"), seeds),
    ]


def a2_curves(results, jobs) -> dict[str, dict[str, np.ndarray]]:
    names = ("full transformer, rank-one init", "canonical (e, w, b) model")
    return {
        name: {
            k: stack(res, key)
            for k, key in (("loss", "exact_loss"), ("e", "diag/canon/e"), ("w", "diag/canon/w"))
        }
        for name, res in zip(names, results, strict=True)
    }


def _a2_figure(results, jobs):
    import matplotlib.pyplot as plt

    curves = a2_curves(results, jobs)
    chain = BinaryChain(0.2, 0.3)
    fig, axes = plt.subplots(1, 3, figsize=(plotting.WIDE, 3.4))  # a full-width cell
    plotting.draw_loss_curves(
        axes[0], {k: v["loss"] for k, v in curves.items()}, chain.entropy_rate, chain.unigram_loss
    )
    axes[0].set_title("exact conditional loss")
    steps = _diag_steps(results[0])
    for ax, key in zip(axes[1:], ("e", "w"), strict=True):
        for (name, v), color in zip(curves.items(), ("C0", "C1"), strict=False):
            ax.plot(steps, v[key].mean(0), color=color, label=name)
            ax.fill_between(steps, v[key].min(0), v[key].max(0), color=color, alpha=0.2, lw=0)
        ax.set_xlabel("training step")
        ax.set_title(f"canonical coordinate {key}")
    axes[1].legend(fontsize=plotting.SMALL)
    fig.tight_layout()
    return fig


def _a2_summary(results, jobs) -> dict:
    curves = a2_curves(results, jobs)
    full, canon = (v["loss"].mean(0) for v in curves.values())
    diff = np.abs(full - canon)
    return {
        "max |mean loss difference|": round(float(diff.max()), 4),
        "mean |mean loss difference|": round(float(diff.mean()), 5),
        "final loss full / canonical": [
            round(float(full[-20:].mean()), 4),
            round(float(canon[-20:].mean()), 4),
        ],
        "entropy rate": round(BinaryChain(0.2, 0.3).entropy_rate, 4),
    }


A2 = register(
    Experiment(
        id="l2g-a2",
        description="L2G-A2: full model started rank one vs the canonical model, (0.2, 0.3)",
        jobs=_a2_jobs,
        figure=_a2_figure,
        summary=_a2_summary,
        default_seeds=3,
        chapter="03_low_rank",
    )
)


# --------------------------------------------------------------------------------------------
# l2g-t: trained transformers over the analytic flow
# --------------------------------------------------------------------------------------------

#: rank-one starting points (e, w) per chain, chosen on both sides of the separatrix
T_STARTS = {
    (0.2, 0.3): [(1.0, 0.8), (0.3, -1.5), (1.5, -1.5), (0.5, -1.0)],
    (0.5, 0.8): [(1.0, 0.8), (1.0, -1.5), (0.2, -0.5), (1.0, -0.5)],
}


def _t_jobs(n_seeds, steps):
    jobs = []
    for (p, q), starts in T_STARTS.items():
        jobs.append((l2g_spec(p, q, steps), seed_list(n_seeds, 3)))
        for e0, w0 in starts:
            jobs.append(
                (
                    l2g_spec(p, q, steps, "rank_one", {"e": e0, "w": w0, "attention": "gaussian"}),
                    [0],
                )
            )
    return jobs


def trajectory_table(results, jobs) -> list[dict]:
    """One row per run: chain, init, projected start and end, predicted basin, outcome."""
    rows = []
    for res, (sp, _) in zip(results, jobs, strict=True):
        p, q = sp.chain["p"], sp.chain["q"]
        land = C.CanonicalLandscape(p, q)
        for seed, rec in res.items():
            e, w = rec["diag/canon/e"].astype(float), rec["diag/canon/w"].astype(float)
            predicted = int(land.basin(e[0], w[0]))
            reached = bool(analysis.succeeded(rec["exact_loss"][None], land.entropy_rate)[0])
            stuck = bool(
                abs(analysis.final_loss(rec["exact_loss"][None])[0] - land.unigram_loss) < 0.005
            )
            rows.append(
                {
                    "chain": (p, q),
                    "init": "standard"
                    if sp.init == "gaussian"
                    else f"rank-one {dict(sp.init_kwargs)['e']:g}, {dict(sp.init_kwargs)['w']:g}",
                    "seed": seed,
                    "start": (round(float(e[0]), 3), round(float(w[0]), 3)),
                    "end": (round(float(e[-1]), 3), round(float(w[-1]), 3)),
                    "predicted": "global" if predicted else "unigram",
                    "outcome": "global" if reached else ("unigram" if stuck else "neither"),
                    "e": e,
                    "w": w,
                    "a": rec["diag/canon/a"].astype(float),
                    "qk_norm": float(
                        np.linalg.norm(rec["final/wq"]) * np.linalg.norm(rec["final/wk"])
                    ),
                    "steps": rec["diagnostic_steps"].astype(int),
                    "loss": rec["exact_loss"].astype(float),
                    "rank1": {
                        k: rec[f"diag/rank1/{k}"].astype(float) for k in ("w1", "w2", "pos", "wv")
                    },
                }
            )
    return rows


def _t_figure(results, jobs):
    import matplotlib.pyplot as plt

    rows = trajectory_table(results, jobs)
    fig, axes = plt.subplots(1, 2, figsize=(plotting.WIDE, 5.2))  # a full-width cell
    for ax, (p, q) in zip(axes, T_STARTS, strict=True):
        land = C.CanonicalLandscape(p, q)
        trajs = []
        for r in (r for r in rows if r["chain"] == (p, q)):
            color = {"global": plotting.BIGRAM_COLOR, "unigram": plotting.UNIGRAM_COLOR}.get(
                r["outcome"], "C1"
            )
            trajs.append({"e": r["e"], "w": r["w"], "color": "k", "lw": 2.4})
            trajs.append(
                {
                    "e": r["e"],
                    "w": r["w"],
                    "color": color,
                    "lw": 1.4,
                    "label": f"trained: ends {r['outcome']}",
                }
            )
            flow = C.gradient_flow(land, max(r["start"][0], 1e-3), r["start"][1], t_max=2e3)
            trajs.append(
                {
                    "e": flow.y[:, 0],
                    "w": flow.y[:, 1],
                    "color": "k",
                    "lw": 0.9,
                    "ls": ":",
                    "label": "gradient flow from the same start",
                }
            )
        plotting.plot_trajectories_on_landscape(
            land, trajs, title=f"(p, q) = ({p:g}, {q:g})", ax=ax
        )
    fig.tight_layout()
    return fig


def _t_summary(results, jobs) -> dict:
    rows = trajectory_table(results, jobs)
    agree = sum(r["predicted"] == r["outcome"] for r in rows)
    return {
        "runs": len(rows),
        "outcome = basin predicted from the projected start": agree,
        "table": [  # the scalar columns; the per-step arrays are for figures
            {k: v for k, v in r.items() if not isinstance(v, (np.ndarray, dict))} for r in rows
        ],
    }


T = register(
    Experiment(
        id="l2g-t",
        description="L2G-T: trained transformers projected on (e, w) over the analytic flow (paper settings)",
        jobs=_t_jobs,
        figure=_t_figure,
        summary=_t_summary,
        default_seeds=3,
        chapter="04_landscape",
    )
)


# --------------------------------------------------------------------------------------------
# Analytic figures
# --------------------------------------------------------------------------------------------


def _l2g1_figure(results, jobs):
    return plotting.plot_landscape_panels(
        {
            "(p, q) = (0.1, 0.1)": C.CanonicalLandscape(0.1, 0.1),
            "(p, q) = (0.9, 0.9)": C.CanonicalLandscape(0.9, 0.9),
        }
    )


def _l2g1_summary(results, jobs) -> dict:
    out = {}
    for p, q in ((0.1, 0.1), (0.9, 0.9)):
        land = C.CanonicalLandscape(p, q)
        out[f"({p}, {q})"] = {
            "A*": round(land.a_star, 4),
            "regime": land.chain.regime,
            "local minima on e = 0 for w in": [
                round(v, 4) if math.isfinite(v) else str(v) for v in land.local_minimum_range()
            ],
            "saddle": [0.0, round(C.W_SADDLE, 4)],
            "saddle energy": round(C.E_SADDLE, 4),
        }
    return out


L2G1 = register(
    Experiment(
        id="l2g-1",
        description="L2G-1: flow field, energy contours and basins of the (e, w) landscape (analytic)",
        jobs=no_jobs,
        figure=_l2g1_figure,
        summary=_l2g1_summary,
        default_seeds=0,
        chapter="04_landscape",
    )
)

FLOW3D_CHAINS = ((0.2, 0.3), (0.5, 0.8))


def flows_3d(scale: float = 0.5, n: int = 40, seed: int = 0) -> dict:
    """3-D gradient flows from Gaussian starts N(0, scale^2 I) in (e, w, a), per chain."""
    rng = np.random.default_rng(seed)
    starts = rng.normal(0, scale, size=(n, 3))
    out = {}
    for p, q in FLOW3D_CHAINS:
        land = C.CanonicalLandscape(p, q)
        out[(p, q)] = [
            (f.y, f.label) for f in (C.gradient_flow_3d(land, *s, t_max=5e3) for s in starts)
        ]
    return out


def _l2g2_figure(results, jobs):
    panels = [
        {"title": f"({p:g}, {q:g}): starts N(0, 0.5^2 I)", "trajectories": tr}
        for (p, q), tr in flows_3d().items()
    ]
    panels += [
        {"title": f"({p:g}, {q:g}): zoom, starts N(0, 0.05^2 I)", "trajectories": tr, "zoom": 0.25}
        for (p, q), tr in flows_3d(scale=0.05, n=30, seed=1).items()
    ]
    return plotting.plot_flow_3d(panels)


def _l2g2_summary(results, jobs) -> dict:
    out = {}
    for name, kw in (
        ("starts N(0, 0.5^2)", {}),
        ("starts N(0, 0.05^2)", {"scale": 0.05, "n": 30, "seed": 1}),
    ):
        for (p, q), tr in flows_3d(**kw).items():
            out[f"({p}, {q}), {name}: reach the global minimum"] = (
                f"{sum(lab for _, lab in tr)}/{len(tr)}"
            )
    return out


L2G2 = register(
    Experiment(
        id="l2g-2",
        description="L2G-2/5: the 3-D (e, w, a) gradient flow for p+q<1 and p+q>1, with a zoom (analytic)",
        jobs=no_jobs,
        figure=_l2g2_figure,
        summary=_l2g2_summary,
        default_seeds=0,
        chapter="04_landscape",
    )
)

BASIN_SCALES = (0.02, 0.1, 0.5, 1.0, 2.0, 3.0)


def basin_probabilities(
    n: int = 1_000_000, seed: int = 0, scales=BASIN_SCALES
) -> dict[str, np.ndarray]:
    """:func:`markovformer.canonical.basin_probabilities` at the scales of the SPEC table."""
    return C.basin_probabilities(scales, n=n, seed=seed)


def _basins_figure(results, jobs):
    import matplotlib.pyplot as plt

    prob = basin_probabilities()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(prob["scale"], prob["sticky"], "o-", color="C0", label="p + q < 1 (sticky)")
    ax.plot(prob["scale"], prob["switching"], "o-", color="C3", label="p + q > 1 (switching)")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("init scale s: (e0, w0) ~ N(0, s^2 I)")
    ax.set_ylabel("Pr(start in the global basin)")
    ax.legend(fontsize=plotting.SMALL)
    fig.tight_layout()
    return fig


def _basins_summary(results, jobs) -> dict:
    prob = basin_probabilities()
    return {
        f"s = {s:g}": {"p+q>1": round(float(a), 3), "p+q<1": round(float(b), 3)}
        for s, a, b in zip(prob["scale"], prob["switching"], prob["sticky"], strict=True)
    }


BASINS = register(
    Experiment(
        id="l2g-basins",
        description="Basin probabilities of Gaussian (e, w) initialisation by scale, 1e6 samples (analytic)",
        jobs=no_jobs,
        figure=_basins_figure,
        summary=_basins_summary,
        default_seeds=0,
        chapter="04_landscape",
    )
)
