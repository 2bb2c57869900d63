"""Chapter 1 (Markov chains): the data model's closed forms and estimators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import explorers, markov
from ..claims import Claim, claims_of
from ..markov import BinaryChain

CH = 1
#: (p, q): (entropy rate, unigram loss) to 4 decimals, the check values of SPEC section 1
SPEC_VALUES = {
    (0.5, 0.8): (0.6190, 0.6663),
    (0.2, 0.3): (0.5446, 0.6730),
    (0.1, 0.1): (0.3251, 0.6931),
    (0.9, 0.9): (0.3251, 0.6931),
    (0.7, 0.9): (0.4858, 0.6853),
}


def long_path(chain: BinaryChain, n: int = 200_000, seed: int = 2) -> torch.Tensor:
    """One path of ``n`` symbols of ``chain`` (the chapter's frequency experiment)."""
    return chain.sample(1, n, generator=torch.Generator().manual_seed(seed))


@claims_of(CH)
def frequencies(root: Path | None = None, x: torch.Tensor | None = None) -> list[Claim]:
    """Along one long path of (0.5, 0.8): the frequency of 1 and the estimated transitions."""
    chain = BinaryChain(0.5, 0.8)
    x = long_path(chain) if x is None else x
    n = x.shape[-1]
    est = markov.running_transition_estimates(x)
    seeds = "path seed 2"
    return [
        Claim(CH, f"Pr(x = 1) along {n} symbols vs pi_1", x.double().mean().item(),
              chain.stationary[1], tol=0.01, seeds=seeds, source="[derived]"),
        Claim(CH, f"p_hat after {n} symbols vs p", est["p_hat"][-1], chain.p, tol=0.01,
              seeds=seeds, source="[derived]"),
        Claim(CH, f"q_hat after {n} symbols vs q", est["q_hat"][-1], chain.q, tol=0.01,
              seeds=seeds, source="[derived]"),
    ]  # fmt: skip


@claims_of(CH)
def loss_levels(root: Path | None = None) -> list[Claim]:
    """Entropy rate and unigram loss of the SPEC check chains (4 decimals)."""
    out = []
    for (p, q), (rate, uni) in SPEC_VALUES.items():
        c = BinaryChain(p, q)
        out.append(Claim(CH, f"entropy rate ({p}, {q})", c.entropy_rate, rate, tol=5e-5,
                         source="[derived]"))  # fmt: skip
        out.append(Claim(CH, f"unigram loss ({p}, {q})", c.unigram_loss, uni, tol=5e-5,
                         source="[derived]"))  # fmt: skip
    return out


@claims_of(CH)
def symmetries(root: Path | None = None, grid: tuple | None = None) -> list[Claim]:
    """On the chapter's grid of the unit square (``explorers.loss_grid``): both losses are
    symmetric under (p, q) -> (q, p), the entropy rate under (t, t) -> (1-t, 1-t), the gap
    vanishes on p + q = 1 and is never negative."""
    t, _, rate, uni = explorers.loss_grid(199) if grid is None else grid
    swap = max(np.abs(rate - rate.T).max(), np.abs(uni - uni.T).max())
    mirror = np.abs(markov.binary_entropy_rate(t, t) - markov.binary_entropy_rate(1 - t, 1 - t))
    on_line = np.abs(markov.binary_unigram_loss(t, 1 - t) - markov.binary_entropy_rate(t, 1 - t))
    n = len(t)
    return [
        Claim(CH, f"max change of a loss under (p, q) -> (q, p), {n}^2 grid", swap, 0.0,
              tol=1e-12, source="[derived]"),
        Claim(CH, "max |H(t, t) - H(1-t, 1-t)|", mirror.max(), 0.0, tol=1e-12, source="[derived]"),
        Claim(CH, "max gap U - H on the line p + q = 1", on_line.max(), 0.0, tol=1e-12,
              source="[derived]"),
        Claim(CH, f"smallest gap U - H over the {n}^2 grid", (uni - rate).min(), (0.0, None),
              tol=1e-12, source="[derived]"),
    ]  # fmt: skip


def estimator_study(
    chain: BinaryChain | None = None, batches: int = 2000, seed: int = 3
) -> dict[str, np.ndarray]:
    """Loss of the unigram predictor on ``batches`` batches of 16 x 256 predictions, against the
    sampled next symbol and against the exact conditional law (SPEC section 1)."""
    chain = chain or BinaryChain(0.5, 0.8)
    gen = torch.Generator().manual_seed(seed)
    sampled, exact = [], []
    for _ in range(batches):
        x = chain.sample(16, 257, generator=gen)
        f = torch.full(x[:, :-1].shape, chain.stationary[1], dtype=torch.float64)
        exact.append(chain.exact_conditional_loss(x[:, :-1], probs=f).item())
        sampled.append(torch.nn.functional.binary_cross_entropy(f, x[:, 1:].double()).item())
    return {"sampled": np.array(sampled), "exact": np.array(exact)}


@claims_of(CH)
def estimators(root: Path | None = None, study: dict | None = None) -> list[Claim]:
    """The exact conditional loss has the same mean as the sampled loss, far less variance."""
    chain = BinaryChain(0.5, 0.8)
    study = estimator_study(chain) if study is None else study
    s, e = study["sampled"], study["exact"]
    se = np.sqrt(s.var() / s.size + e.var() / e.size)
    seeds = f"seed 3, {s.size} batches"
    return [
        Claim(CH, "mean(exact) - mean(sampled), in standard errors", (e.mean() - s.mean()) / se,
              0.0, tol=4.0, digits=1, seeds=seeds, source="[derived]"),
        Claim(CH, "mean exact loss of the unigram predictor vs U", e.mean(), chain.unigram_loss,
              tol=0.002, seeds=seeds, source="[derived]"),
        Claim(CH, "variance ratio sampled / exact", s.var() / e.var(), (5.0, None), digits=1,
              seeds=seeds),
    ]  # fmt: skip


@claims_of(CH)
def other_chains(root: Path | None = None) -> list[Claim]:
    """The symmetric S-state chain and the lag-k chain."""
    sym5 = markov.symmetric_chain(5, 0.1)
    lag3 = markov.LagChain(0.2, 0.3, lag=3)
    return [
        Claim(CH, "symmetric 5-state chain, p = 0.1: bigram loss", sym5.entropy_rate, 0.4637,
              tol=5e-5, source="[code]"),
        Claim(CH, "  same, vs h(p) + p ln(S-1)", sym5.entropy_rate,
              markov.binary_entropy(0.1) + 0.1 * np.log(4), tol=1e-12, source="[derived]"),
        Claim(CH, "  unigram loss vs ln 5", sym5.unigram_loss, np.log(5), tol=1e-12,
              source="[derived]"),
        Claim(CH, "lag-3 chain (0.2, 0.3): entropy rate vs the binary chain's", lag3.entropy_rate,
              BinaryChain(0.2, 0.3).entropy_rate, tol=1e-12, source="[derived]"),
    ]  # fmt: skip
