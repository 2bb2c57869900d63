"""Tests of markovformer.markov: closed forms, sampler statistics, exact conditional loss."""

import itertools
import math

import numpy as np
import pytest
import torch

from markovformer.markov import (
    BinaryChain,
    LagChain,
    MarkovChain,
    binary_entropy,
    binary_exact_loss,
    random_chain,
    sample_binary_chains,
    symmetric_chain,
    transition_counts,
)

# --------------------------------------------------------------------------------------------
# Brute-force enumeration
# --------------------------------------------------------------------------------------------


def enumerate_law(chain: MarkovChain, length: int) -> dict[tuple[int, ...], float]:
    """Probability of every sequence of `length` symbols (length >= order), by the definition."""
    S, k = chain.n_states, chain.order
    law = {}
    for seq in itertools.product(range(S), repeat=length):
        pr = chain.stationary_contexts[seq[:k]]
        for n in range(k, length):
            pr *= chain.kernel[seq[n - k : n] + (seq[n],)]
        law[seq] = float(pr)
    return law


def conditional_entropy_last(law: dict, length: int) -> float:
    """H(X_length | X_1..X_{length-1}) from a joint law."""
    prefix: dict = {}
    for seq, pr in law.items():
        prefix[seq[:-1]] = prefix.get(seq[:-1], 0.0) + pr
    return -sum(pr * math.log(pr / prefix[s[:-1]]) for s, pr in law.items() if pr > 0)


def marginal(law: dict, position: int, n_states: int) -> np.ndarray:
    out = np.zeros(n_states)
    for seq, pr in law.items():
        out[seq[position]] += pr
    return out


PQ = [(0.5, 0.8), (0.2, 0.3), (0.1, 0.1), (0.9, 0.9), (0.7, 0.9), (0.3, 0.7), (1.0, 1.0)]


@pytest.mark.parametrize("p,q", PQ)
def test_binary_closed_forms_match_enumeration(p, q):
    chain = BinaryChain(p, q)
    law = enumerate_law(chain, 5)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    for n in range(5):  # stationary at every position
        np.testing.assert_allclose(marginal(law, n, 2), chain.stationary, atol=1e-12)
    assert conditional_entropy_last(law, 5) == pytest.approx(chain.entropy_rate, abs=1e-12)
    assert chain.unigram_loss == pytest.approx(
        -sum(t * math.log(t) for t in chain.stationary if t > 0)
    )
    # the generic eigenvector computation agrees with the closed forms
    generic = MarkovChain(chain.kernel)
    np.testing.assert_allclose(generic.stationary, chain.stationary, atol=1e-12)
    assert generic.entropy_rate == pytest.approx(chain.entropy_rate, abs=1e-12)


@pytest.mark.parametrize(
    "p,q,rate,unigram",
    [
        (0.5, 0.8, 0.6190, 0.6663),
        (0.2, 0.3, 0.5446, 0.6730),
        (0.1, 0.1, 0.3251, 0.6931),
        (0.9, 0.9, 0.3251, 0.6931),
        (0.7, 0.9, 0.4858, 0.6853),
    ],
)
def test_spec_check_values(p, q, rate, unigram):
    chain = BinaryChain(p, q)
    assert round(chain.entropy_rate, 4) == rate
    assert round(chain.unigram_loss, 4) == unigram


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.73, 1.0])
def test_iid_case_p_plus_q_equal_one(p):
    if p in (0.0, 1.0):
        chain = BinaryChain(p, 1 - p)  # still valid: one state is never entered
    else:
        chain = BinaryChain(p, 1 - p)
    assert chain.entropy_rate == pytest.approx(binary_entropy(p), abs=1e-12)
    assert chain.unigram_loss == pytest.approx(binary_entropy(p), abs=1e-12)
    assert chain.correlation == pytest.approx(0.0, abs=1e-12)
    assert chain.regime == "iid"


def test_regimes():
    assert BinaryChain(0.5, 0.8).regime == "switching"
    assert BinaryChain(0.2, 0.3).regime == "sticky"
    assert BinaryChain(0.5, 0.8).correlation == pytest.approx(-0.3)


@pytest.mark.parametrize("S,k,seed", [(2, 2, 0), (2, 3, 1), (3, 1, 2), (3, 2, 3)])
def test_higher_order_closed_forms_match_enumeration(S, k, seed):
    chain = random_chain(S, k, seed=seed)
    length = k + 2
    law = enumerate_law(chain, length)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    for n in range(length):
        np.testing.assert_allclose(marginal(law, n, S), chain.stationary, atol=1e-10)
    assert conditional_entropy_last(law, length) == pytest.approx(chain.entropy_rate, abs=1e-10)
    assert chain.unigram_loss == pytest.approx(-(chain.stationary * np.log(chain.stationary)).sum())


@pytest.mark.parametrize("S,k,seed", [(2, 1, 0), (2, 3, 1), (3, 2, 2)])
def test_ngram_law_and_context_loss_match_enumeration(S, k, seed):
    chain = random_chain(S, k, seed=seed)
    length = k + 3
    law = enumerate_law(chain, length)
    joint = np.zeros((S,) * length)
    for seq, pr in law.items():
        joint[seq] = pr
    for n in range(1, length + 1):
        np.testing.assert_allclose(
            chain.ngram_law(n), joint.sum(axis=tuple(range(n, length))), atol=1e-12
        )
    losses = [chain.context_loss(m) for m in range(length)]
    for m in range(length):  # H(X_{m+1} | X_1..X_m) from the enumerated law
        window = joint.sum(axis=tuple(range(m + 1, length)))
        sub = {s: float(window[s]) for s in itertools.product(range(S), repeat=m + 1)}
        expected = conditional_entropy_last(sub, m + 1) if m else chain.unigram_loss
        assert losses[m] == pytest.approx(expected, abs=1e-10)
    assert losses[0] == pytest.approx(chain.unigram_loss)
    assert losses[k] == pytest.approx(chain.entropy_rate)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(losses))


@pytest.mark.parametrize("S,p", [(5, 0.1), (5, 0.6), (3, 0.9)])
def test_symmetric_chain(S, p):
    chain = symmetric_chain(S, p)
    assert chain.entropy_rate == pytest.approx(binary_entropy(p) + p * math.log(S - 1))
    assert chain.unigram_loss == pytest.approx(math.log(S))
    np.testing.assert_allclose(chain.stationary, np.full(S, 1 / S))


def test_symmetric_sampler_statistics():
    chain = symmetric_chain(5, 0.3)
    x = chain.sample(300, 200, generator=torch.Generator().manual_seed(4))
    assert x.shape == (300, 200) and x.dtype == torch.int64
    assert_frequencies(transition_counts(x, 5), chain.kernel)
    first = np.bincount(x[:, 0].numpy(), minlength=5) / 300
    np.testing.assert_array_less(np.abs(first - 0.2), 5 * np.sqrt(0.16 / 300))


def test_symmetric_chain_awm6_value():
    assert round(symmetric_chain(5, 0.1).entropy_rate, 4) == 0.4637


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_lag_chain(lag):
    chain = LagChain(0.2, 0.3, lag)
    base = BinaryChain(0.2, 0.3)
    assert chain.order == lag
    assert chain.entropy_rate == pytest.approx(base.entropy_rate)
    assert chain.unigram_loss == pytest.approx(base.unigram_loss)
    law = enumerate_law(chain, lag + 2)
    assert conditional_entropy_last(law, lag + 2) == pytest.approx(base.entropy_rate, abs=1e-12)
    # the context law is a product of stationary laws: the generic solver agrees
    np.testing.assert_allclose(
        MarkovChain(chain.kernel).stationary_contexts, chain.stationary_contexts, atol=1e-10
    )


# --------------------------------------------------------------------------------------------
# Sampler statistics
# --------------------------------------------------------------------------------------------


def assert_frequencies(counts: np.ndarray, kernel: np.ndarray, z: float = 5.0) -> None:
    """Each row's empirical frequencies are within z binomial standard errors of the kernel."""
    rows = counts.reshape(-1, counts.shape[-1])
    kern = kernel.reshape(-1, kernel.shape[-1])
    for c, prob in zip(rows, kern, strict=True):
        n = c.sum()
        if n < 100:
            continue
        se = np.sqrt(prob * (1 - prob) / n) + 1e-12
        np.testing.assert_array_less(np.abs(c / n - prob), z * se + 1e-9)


@pytest.mark.parametrize(
    "p,q", [(0.5, 0.8), (0.2, 0.3), (0.05, 0.02), (0.95, 0.9), (0.3, 0.7), (1.0, 1.0)]
)
def test_binary_sampler_statistics(p, q):
    chain = BinaryChain(p, q)
    gen = torch.Generator().manual_seed(123)
    x = chain.sample(512, 256, generator=gen)
    assert x.dtype == torch.int64 and x.shape == (512, 256)
    assert set(x.unique().tolist()) <= {0, 1}
    # first-order transitions
    assert_frequencies(transition_counts(x, 2), chain.kernel)
    # the Markov property: the symbol before x_n does not matter
    assert_frequencies(transition_counts(x, 2, order=2), np.stack([chain.kernel, chain.kernel]))
    # the first symbol follows the stationary law (independent across sequences)
    first = x[:, 0].double().mean().item()
    pi1 = chain.stationary[1]
    assert abs(first - pi1) <= 5 * math.sqrt(pi1 * (1 - pi1) / 512) + 1e-12
    # the last symbol too (stationarity is kept along the sequence)
    last = x[:, -1].double().mean().item()
    assert abs(last - pi1) <= 5 * math.sqrt(pi1 * (1 - pi1) / 512) + 1e-12


def test_absorbing_chain():
    chain = BinaryChain(0.0, 0.4)  # state 0 absorbing: the stationary law is (1, 0)
    np.testing.assert_allclose(chain.stationary, [1.0, 0.0])
    x = chain.sample(64, 100, generator=torch.Generator().manual_seed(0))
    assert int(x.sum()) == 0
    assert chain.entropy_rate == 0.0 and chain.unigram_loss == 0.0


def test_per_run_binary_sampler():
    gen = torch.Generator().manual_seed(7)
    p = torch.tensor([0.1, 0.5, 0.9])
    q = torch.tensor([0.2, 0.8, 0.9])
    x = sample_binary_chains(p, q, 256, 200, generator=gen)
    assert x.shape == (3, 256, 200)
    for r in range(3):
        assert_frequencies(transition_counts(x[r], 2), BinaryChain(float(p[r]), float(q[r])).kernel)


@pytest.mark.parametrize("S,k", [(3, 1), (2, 2), (3, 2)])
def test_general_sampler_statistics(S, k):
    chain = random_chain(S, k, seed=5)
    x = chain.sample(400, 200, generator=torch.Generator().manual_seed(1))
    assert x.shape == (400, 200) and x.dtype == torch.int64
    assert_frequencies(transition_counts(x, S, order=k), chain.kernel)
    first = np.bincount(x[:, 0].numpy(), minlength=S) / 400
    np.testing.assert_array_less(np.abs(first - chain.stationary), 5 * np.sqrt(0.25 / 400))


@pytest.mark.parametrize("lag", [2, 3])
def test_lag_sampler_statistics(lag):
    chain = LagChain(0.2, 0.7, lag)
    x = chain.sample(300, 301, generator=torch.Generator().manual_seed(2))
    assert x.shape == (300, 301)
    assert_frequencies(transition_counts(x, 2, order=lag), chain.kernel)


def test_short_sequences():
    gen = torch.Generator().manual_seed(0)
    assert BinaryChain(0.3, 0.4).sample(5, 1, generator=gen).shape == (5, 1)
    assert random_chain(3, 3, seed=0).sample(5, 2, generator=gen).shape == (5, 2)
    assert LagChain(0.3, 0.4, 4).sample(5, 3, generator=gen).shape == (5, 3)


@pytest.mark.parametrize(
    "make",
    [lambda: BinaryChain(0.5, 0.8), lambda: random_chain(3, 2), lambda: LagChain(0.2, 0.3, 2)],
)
def test_seeded_sampling_is_reproducible(make):
    chain = make()
    a = chain.sample(8, 64, generator=torch.Generator().manual_seed(42))
    b = chain.sample(8, 64, generator=torch.Generator().manual_seed(42))
    c = chain.sample(8, 64, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --------------------------------------------------------------------------------------------
# Exact conditional loss
# --------------------------------------------------------------------------------------------


def _some_logits(x: torch.Tensor) -> torch.Tensor:
    """A fixed, imperfect predictor that looks at the last two symbols."""
    prev = torch.nn.functional.pad(x[..., :-1], (1, 0))
    return 0.3 + 1.1 * x.double() - 0.7 * prev.double()


@pytest.mark.parametrize("p,q", [(0.5, 0.8), (0.2, 0.3)])
def test_exact_loss_is_unbiased_with_lower_variance(p, q):
    chain = BinaryChain(p, q)
    gen = torch.Generator().manual_seed(0)
    exact, mc = [], []
    for _ in range(400):
        x = chain.sample(4, 64, generator=gen)
        logits = _some_logits(x)[..., :-1]  # the last position has no sampled target
        exact.append(chain.exact_conditional_loss(x[..., :-1], logits=logits).item())
        target = x[..., 1:].double()
        mc.append(torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item())
    exact, mc = np.array(exact), np.array(mc)
    se = np.sqrt(exact.var() / len(exact) + mc.var() / len(mc))
    assert abs(exact.mean() - mc.mean()) < 4 * se
    assert exact.var() < 0.5 * mc.var()


def test_exact_loss_of_true_law_is_entropy_rate_and_excess_is_kl():
    chain = BinaryChain(0.5, 0.8)
    x = chain.sample(2000, 50, generator=torch.Generator().manual_seed(3))
    t1 = chain.prob_one(x, dtype=torch.float64)
    exact = chain.exact_conditional_loss(x, probs=t1).item()
    # every position of a stationary first-order chain has conditional entropy = entropy rate
    stderr = 0.01
    assert exact == pytest.approx(chain.entropy_rate, abs=stderr)
    assert chain.excess_loss(x, probs=t1).item() == pytest.approx(0.0, abs=1e-12)
    # a context-free predictor at the stationary law: cross-entropy = unigram in expectation
    f = torch.full(x.shape, chain.stationary[1], dtype=torch.float64)
    assert chain.exact_conditional_loss(x, probs=f).item() == pytest.approx(
        chain.unigram_loss, abs=stderr
    )
    logits = _some_logits(x)
    ce = chain.exact_conditional_loss(x, logits=logits, reduction="none")
    kl = chain.excess_loss(x, logits=logits, reduction="none")
    assert torch.all(kl >= -1e-12)
    # CE - KL = conditional entropy of the true law at each position
    h = torch.tensor(binary_entropy(t1.numpy()))
    torch.testing.assert_close(ce - kl, h)
    # the tensor-level function used by the trainer agrees
    ce2, kl2 = binary_exact_loss(x, logits, 0.5, 0.8)
    torch.testing.assert_close(ce, ce2)
    torch.testing.assert_close(kl, kl2)


def test_logits_and_probs_agree_and_categorical_form():
    chain = BinaryChain(0.2, 0.3)
    x = chain.sample(4, 32, generator=torch.Generator().manual_seed(0))
    logits = _some_logits(x)
    a = chain.exact_conditional_loss(x, logits=logits)
    b = chain.exact_conditional_loss(x, probs=torch.sigmoid(logits))
    two = torch.stack([torch.zeros_like(logits), logits], -1)  # categorical logits
    c = chain.exact_conditional_loss(x, logits=two)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_higher_order_exact_loss_unbiased():
    chain = random_chain(3, 2, seed=4)
    gen = torch.Generator().manual_seed(0)
    S = 3
    w = torch.randn(S, S, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    exact, mc = [], []
    for _ in range(300):
        x = chain.sample(4, 40, generator=gen)
        logits = w[x]  # a first-order predictor of a second-order chain
        exact.append(chain.exact_conditional_loss(x[:, :-1], logits=logits[:, :-1]).item())
        mc.append(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, S), x[:, 1:].reshape(-1)
            ).item()
        )
    exact, mc = np.array(exact), np.array(mc)
    se = np.sqrt(exact.var() / len(exact) + mc.var() / len(mc))
    assert abs(exact.mean() - mc.mean()) < 4 * se
    assert exact.var() < mc.var()
    # the true law reaches the entropy rate from position k-1 on
    x = chain.sample(3000, 12, generator=gen)
    law = chain.next_symbol_law(x, dtype=torch.float64)
    torch.testing.assert_close(law.sum(-1), torch.ones(x.shape, dtype=torch.float64))
    ce = chain.exact_conditional_loss(x, probs=law, reduction="none")
    assert ce[:, 1:].mean().item() == pytest.approx(chain.entropy_rate, abs=0.02)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p,q,match",
    [
        (-0.1, 0.5, r"p must be .*\[0, 1\].*-0.1"),
        (1.5, 0.5, r"p must be .*\[0, 1\].*1.5"),
        (0.5, float("nan"), r"q must be .*\[0, 1\].*nan"),
        (float("inf"), 0.5, r"p must be .*inf"),
        (0.0, 0.0, r"p \+ q must be > 0"),
        ("0.3", 0.5, r"p must be a real number"),
        (True, 0.5, r"p must be a real number"),
    ],
)
def test_binary_chain_rejects_bad_parameters(p, q, match):
    with pytest.raises(ValueError, match=match):
        BinaryChain(p, q)


@pytest.mark.parametrize(
    "kernel,match",
    [
        ([[0.5, 0.4], [0.3, 0.7]], "sum to 1"),
        ([[1.2, -0.2], [0.3, 0.7]], ">= 0"),
        ([[float("nan"), 0.5], [0.3, 0.7]], "finite"),
        ([0.5, 0.5], "shape"),
        (np.ones((2, 3)) / 3, "shape"),
        ([[1.0]], "S >= 2"),
        ([[1.0, 0.0], [0.0, 1.0]], "more than one stationary law"),
    ],
)
def test_markov_chain_rejects_bad_kernels(kernel, match):
    with pytest.raises(ValueError, match=match):
        MarkovChain(kernel)


def test_bad_sampling_arguments():
    chain = BinaryChain(0.3, 0.4)
    with pytest.raises(ValueError, match="length must be an integer >= 1, got 0"):
        chain.sample(4, 0)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got -2"):
        chain.sample(-2, 10)
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        random_chain(3).sample(2, 0)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        sample_binary_chains(torch.tensor([0.2, 1.3]), torch.tensor([0.2, 0.3]), 2, 5)
    with pytest.raises(ValueError, match="same length"):
        sample_binary_chains(torch.tensor([0.2, 0.3]), 0.3, 2, 5)


def test_bad_loss_arguments():
    chain = BinaryChain(0.3, 0.4)
    x = chain.sample(2, 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="exactly one of logits= or probs="):
        chain.exact_conditional_loss(x)
    with pytest.raises(ValueError, match=r"shape \(2, 5, 2\) or \(2, 5\), got \(2, 4\)"):
        chain.exact_conditional_loss(x, logits=torch.zeros(2, 4))
    bad = torch.tensor([[0, 2, 1, 0, 1], [1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 1\], got range \[0, 2\]"):
        chain.exact_conditional_loss(bad, logits=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="integer symbols"):
        chain.exact_conditional_loss(x.float(), logits=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="reduction must be"):
        chain.exact_conditional_loss(x, logits=torch.zeros(2, 5), reduction="avg")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="n_states must be an integer >= 2, got 1"):
        symmetric_chain(1, 0.1)
    with pytest.raises(ValueError, match=r"p must be .*\[0, 1\].*1.1"):
        symmetric_chain(3, 1.1)
    with pytest.raises(ValueError, match="lag must be an integer >= 1, got 0"):
        LagChain(0.2, 0.3, 0)
    with pytest.raises(ValueError, match="order must be an integer >= 1, got 0"):
        random_chain(3, 0)
