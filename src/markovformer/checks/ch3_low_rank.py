"""Chapter 3 (the low-rank reduction): rank-one emergence (L2G-A1), the canonical point realised
exactly by the full model, the authors' init in canonical coordinates, Adam and rank one, and the
full model against the canonical model (L2G-A2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import canonical
from ..claims import Claim, claims_of
from ..experiments import l2g
from ..experiments.base import get
from ..init import authors_good_, canonical_coordinates, rank_one_
from ..markov import BinaryChain
from ..model import MarkovTransformer, TransformerConfig
from ..train import TrainConfig, train

CH = 3
DATA = Path("book/data")


def a1_arms(root: Path = DATA) -> dict:
    return l2g.rank_one_arms(*get("l2g-a1").load(root))


@claims_of(CH)
def rank_one_emergence(root: Path = DATA, arms: dict | None = None) -> list[Claim]:
    """L2G-A1 at (0.2, 0.3): from the standard init W_1, W_2 and the positions become rank one;
    from the rank-one init they stay rank one at every step."""
    arms = a1_arms(root) if arms is None else arms
    std, r1 = arms["standard init N(0, 0.02^2)"], arms["rank-one init"]
    seeds = f"{std['w1'].shape[0]} seeds, paper settings"
    out = []
    for m, name in (("w1", "W_1"), ("w2", "W_2"), ("pos", "positions")):
        out += [
            Claim(CH, f"standard init: rank-one energy of {name} at step 0",
                  np.nanmean(std[m][:, 0]), (None, 0.3), digits=3, seeds=seeds, tuned=True),
            Claim(CH, f"standard init: rank-one energy of {name} at the end",
                  np.nanmean(std[m][:, -1]), (0.95, None), digits=3, seeds=seeds, tuned=True),
            Claim(CH, f"rank-one init: smallest energy of {name} over all steps",
                  np.nanmin(r1[m]), 1.0, tol=1e-4, seeds=seeds, source="[paper]"),
        ]  # fmt: skip
    return out


def probe_batch() -> torch.Tensor:
    """Eight sequences of 256 symbols of (0.5, 0.8), seed 0: the inputs of the exactness checks."""
    return BinaryChain(0.5, 0.8).sample(8, 256, generator=torch.Generator().manual_seed(0))[None]


#: the canonical points the chapter realises with rank-one weights
POINTS_2D = ((1.1, 0.7), (0.8, -1.3), (1.5, 2.0))


@claims_of(CH)
def realisation(root: Path | None = None) -> list[Claim]:
    """The rank-one point of SPEC section 3 realises the canonical logits exactly, and
    canonical_coordinates reads (e, w) back."""
    cfg, x = TransformerConfig(d=8, seq_len=256), probe_batch()
    worst, readback = 0.0, 0.0
    for e, w in POINTS_2D:
        full = MarkovTransformer(cfg, 1).double()
        rank_one_(full, [0], e=e, w=w)
        canon = canonical.CanonicalModel(1).double().set_(e, w, 0.0)
        with torch.no_grad():
            worst = max(worst, float((full(x) - canon(x)).abs().max()))
        cc = canonical_coordinates(full.run_state(0))
        readback = max(readback, abs(cc["e"] - e), abs(cc["w"] - w))
    return [
        Claim(CH, "max |full - canonical logit|, 3 points x 2048 positions", worst, 0.0,
              tol=1e-10, source="[derived]"),
        Claim(CH, "max |read-back (e, w) - realised (e, w)|", readback, 0.0, tol=1e-10,
              source="[derived]"),
    ]  # fmt: skip


@claims_of(CH)
def authors_init(root: Path | None = None) -> list[Claim]:
    """The constant "good" init of the authors' code is the canonical point (sqrt 2, -8)."""
    good = MarkovTransformer(TransformerConfig(d=8, seq_len=1024), 1)
    authors_good_(good, [0])
    cc = canonical_coordinates(good.run_state(0))
    return [
        Claim(CH, "authors' init: e vs sqrt 2", cc["e"], np.sqrt(2), tol=1e-6, source="[derived]"),
        Claim(CH, "authors' init: w vs -8", cc["w"], -8.0, tol=1e-5, source="[derived]"),
    ]


@claims_of(CH)
def realisation_3d(root: Path | None = None) -> list[Claim]:
    """Uniform attention with W_V = a alpha alpha^T realises the 3-D canonical model exactly."""
    cfg, x = TransformerConfig(d=8, seq_len=256), probe_batch()
    full = MarkovTransformer(cfg, 1).double()
    rank_one_(full, [0], e=0.9, w=-1.2, a=0.8)
    canon3 = canonical.CanonicalModel(1, attention=True).double().set_(0.9, -1.2, 0.0, 0.8)
    with torch.no_grad():
        diff3 = float((full(x) - canon3(x)).abs().max())
    return [
        Claim(CH, "3-D point (0.9, -1.2, 0.8): max |full - canonical logit|", diff3, 0.0,
              tol=1e-10, source="[derived]"),
        Claim(CH, "read-back attention scalar a", canonical_coordinates(full.run_state(0))["a"],
              0.8, tol=1e-10, source="[derived]"),
    ]  # fmt: skip


def adam_rank_one(steps: int = 300) -> dict:
    """Rank-one energies of W_1, W_2 and positions under Adam from a rank-one start whose
    direction has equal-magnitude entries ("signs") or Gaussian entries (N = 128, (0.2, 0.3)):
    ``{"steps": array, "alpha: signs": {name: energies}, "alpha: gaussian": {...}}``."""
    short = TransformerConfig(d=8, seq_len=128)
    tc = TrainConfig(steps=steps, diagnostic_steps=tuple(range(0, steps + 1, 10)))
    out = {}
    for direction in ("signs", "gaussian"):
        m = MarkovTransformer(short, 1)
        rank_one_(m, [0], e=0.5, w=0.5, direction=direction)
        res = train(short, tc, [0], BinaryChain(0.2, 0.3), model=m)
        out[f"alpha: {direction}"] = {k: res.diagnostics[f"rank1/{k}"] for k in ("w1", "w2", "pos")}
    out["steps"] = np.array(tc.diagnostic_steps)
    return out


@claims_of(CH)
def adam_keeps_rank_one(root: Path | None = None, energies: dict | None = None) -> list[Claim]:
    """Adam's sign-like steps keep an equal-magnitude rank-one point rank one, not a Gaussian one."""
    energies = adam_rank_one() if energies is None else energies
    return [
        Claim(CH, "equal-magnitude rank-one init: W_1 energy after 300 Adam steps",
              energies["alpha: signs"]["w1"][0, -1], 1.0, tol=1e-4, seeds="seed 0"),
        Claim(CH, "Gaussian-direction rank-one init: W_1 energy after 300 Adam steps",
              energies["alpha: gaussian"]["w1"][0, -1], (None, 0.99), digits=3, seeds="seed 0"),
    ]  # fmt: skip


def a2_curves(root: Path = DATA) -> dict:
    return l2g.a2_curves(*get("l2g-a2").load(root))


@claims_of(CH)
def full_vs_canonical(root: Path = DATA, curves: dict | None = None) -> list[Claim]:
    """L2G-A2 at (0.2, 0.3): the full model started rank one and the canonical model trained with
    the same optimiser follow the same loss curve to the entropy rate."""
    curves = a2_curves(root) if curves is None else curves
    full, canon = (v["loss"].mean(0) for v in curves.values())
    rate = BinaryChain(0.2, 0.3).entropy_rate
    n = next(iter(curves.values()))["loss"].shape[0]
    out = [Claim(CH, "max |full - canonical| of the mean loss curves", np.abs(full - canon).max(),
                 0.0, tol=0.01, digits=4, seeds=f"{n} seeds", source="[paper]")]  # fmt: skip
    for name, v in curves.items():
        out.append(Claim(CH, f"{name}: final loss vs entropy rate", v["loss"][:, -20:].mean(), rate,
                         tol=0.005, seeds=f"{n} seeds", source="[paper]"))  # fmt: skip
    return out
