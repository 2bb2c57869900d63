"""Tests of the realisable next-token prediction module (NTP, chapter 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from markovformer import ntp
from markovformer.experiments import get
from markovformer.experiments import ntp as E
from markovformer.markov import BinaryChain


@pytest.fixture(scope="module")
def data():
    return ntp.make_dataset(10, 60, 2, 6, 0)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def test_generator_is_realisable_and_consistent(data):
    K = data.n_tokens
    assert np.array_equal(np.sort(data.collocation), np.arange(K))
    opt = ntp.check_realisable(data.tokens, data.next_tokens, data.collocation, K, data.lengths)
    assert np.array_equal(opt, data.optimal)
    for j, s in enumerate(data.sentences()):
        q = s[-1]
        assert len(set(s)) == len(s) and 2 <= len(s) <= 6
        best = max(s, key=lambda x: data.priority[q, x])
        assert best == data.optimal[j]
        assert data.next_tokens[j] == data.collocation[best]


def test_generator_is_seeded():
    a, b = ntp.make_dataset(12, 30, 2, 7, 5), ntp.make_dataset(12, 30, 2, 7, 5)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.priority, b.priority)


def test_partial_collocation_redraws_sentences():
    n = np.array([1, 2, 0, -1, -1, -1])
    ds = ntp.make_dataset(6, 40, 2, 4, 1, collocation=n)
    assert np.all(np.isin(ds.optimal, [0, 1, 2]))
    assert len(ds.collocation_batch()) == 3


def test_check_realisable_rejects_a_cycle():
    # query 2: sentence [0, 1, 2] -> n(0) says 0 > 1; sentence [1, 0, 2] -> n(1) says 1 > 0
    n = [1, 2, 0]
    with pytest.raises(ValueError, match="query 2 contain a cycle"):
        ntp.check_realisable([[0, 1, 2], [1, 0, 2]], [1, 2], n, 3)
    ntp.check_realisable([[0, 1, 2], [0, 1, 2]], [1, 1], n, 3)  # consistent: no error


def test_check_realisable_rejects_bad_data():
    with pytest.raises(ValueError, match="no token in it has follower 0"):
        ntp.check_realisable([[0, 1]], [0], [1, 2, 0], 3)  # 0 follows token 2, absent
    with pytest.raises(ValueError, match="identical sentence 0 is followed by 0"):
        ntp.check_realisable([[0], [0]], [0, 1], [0, 1], 2)  # a binary chain's context
    with pytest.raises(ValueError, match="injective"):
        ntp.check_collocation([1, 1, 0], 3)
    with pytest.raises(ValueError, match=r"n\(2\) = 5 is out of range"):
        ntp.check_collocation([1, 2, 5], 3)
    with pytest.raises(ValueError, match="token 7 at position 1 of sentence 0 is out of range"):
        ntp.make_batch([[0, 7]], [1], 3)
    with pytest.raises(ValueError, match="max_len must be <= n_tokens"):
        ntp.sample_sentences(5, 3, 2, 6, 0)


def test_transitive_closure_hand_made():
    R = np.zeros((4, 4), dtype=bool)
    R[0, 1] = R[1, 2] = R[3, 2] = True  # 0 > 1 > 2 and 3 > 2
    C = ntp.transitive_closure(R)
    expected = R.copy()
    expected[0, 2] = True
    assert np.array_equal(C, expected)
    stack = ntp.transitive_closure(np.stack([R, R.T]))
    assert np.array_equal(stack[1], expected.T)
    # sentences for a query whose order is the closure above (query token 2 for all)
    closure = np.zeros((4, 4, 4), dtype=bool)
    closure[2] = C
    det, top = ntp.determined([[0, 1, 2], [3, 1, 2], [0, 2], [1, 3, 0, 2]], None, closure)
    assert det.tolist() == [True, False, True, False]
    assert top.tolist() == [0, -1, 0, -1]


def test_training_relations_and_closure_of_a_chain():
    # query 3: [0, 1, 3] with x* = 0; [1, 2, 3] with x* = 1  =>  0 > 2 by transitivity
    R = ntp.training_relations([[0, 1, 3], [1, 2, 3]], None, [0, 1], 4)
    C = ntp.transitive_closure(R)
    assert R[3, 0, 1] and R[3, 1, 2] and R[3, 0, 3] and not R[3, 0, 2]
    assert C[3, 0, 2] and C.sum() == R.sum() + 1
    det, top = ntp.determined([[2, 0, 3]], None, C)
    assert det[0] and top[0] == 0


# --------------------------------------------------------------------------------------------
# Model, losses and gradients
# --------------------------------------------------------------------------------------------


def _torch_loss(W_ov, W_kq, sentences, targets, weights):
    """A plain per-sentence implementation of the model, for autograd."""
    total = 0.0
    for s, t, w in zip(sentences, targets, weights, strict=True):
        E = torch.eye(W_ov.shape[0], dtype=torch.float64)[:, s]  # E_X, (d, L)
        a = torch.softmax(E.T @ W_kq @ E[:, -1], dim=0)
        z = W_ov @ (E @ a)  # E^T T(X): the full embedding E is the identity
        total = total - w * (torch.as_tensor(t) * torch.log_softmax(z, 0)).sum()
    return total


def test_gradients_match_autograd():
    g = np.random.default_rng(3)
    K = 7
    sents = [g.choice(K, size=g.integers(1, 6), replace=True).tolist() for _ in range(9)]
    T = g.dirichlet(np.ones(K), size=9)
    w = g.random(9)
    batch = ntp.make_batch(sents, n_tokens=K, target_probs=T, weights=w)
    W_ov, W_kq = g.standard_normal((K, K)), 2 * g.standard_normal((K, K))
    val, gov, gkq = ntp.loss_and_grads(W_ov, W_kq, batch)
    to = torch.tensor(W_ov, requires_grad=True)
    tk = torch.tensor(W_kq, requires_grad=True)
    ref = _torch_loss(to, tk, sents, T, w / w.sum())
    ref.backward()
    assert val == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(gov, to.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gkq, tk.grad.numpy(), rtol=1e-10, atol=1e-13)
    assert ntp.loss(W_ov, W_kq, batch) == pytest.approx(val, rel=1e-14)
    np.testing.assert_allclose(ntp.next_token_probs(W_ov, W_kq, batch).sum(1), 1.0)


def test_tiny_losses_are_computed_without_cancellation():
    batch = ntp.make_batch([[0], [1]], [1, 0], 2)
    W_ov = np.array([[-25.0, 25.0], [25.0, -25.0]])  # margin 50 on both contexts
    val, gov, _ = ntp.loss_and_grads(W_ov, np.zeros((2, 2)), batch)
    assert val == pytest.approx(math.log1p(math.exp(-50.0)), rel=1e-12)  # 1.9e-22, not 0
    assert np.abs(gov).max() == pytest.approx(math.exp(-50) / (1 + math.exp(-50)), rel=1e-12)


def test_excess_loss_is_loss_minus_floor(data):
    g = np.random.default_rng(0)
    K = data.n_tokens
    W_ov = 3 * ntp.wov_max_margin(data.collocation, K) + 0.3 * g.standard_normal((K, K))
    W_kq = g.standard_normal((K, K))
    L = ntp.loss(W_ov, W_kq, data.batch())
    assert ntp.excess_loss(W_ov, W_kq, data) == pytest.approx(
        L - ntp.loss_floor(W_ov, data), rel=1e-10
    )
    # along the max-margin direction of W_kq, attention concentrates and L -> L*
    Wk, _ = ntp.wkq_max_margin(data.tokens, data.lengths, data.optimal, K)
    ex = [ntp.excess_loss(W_ov, c * Wk, data) for c in (5, 10, 20, 40)]
    assert all(a > b > 0 for a, b in zip(ex, ex[1:], strict=False))
    assert ex[-1] < 1e-12


def test_bad_inputs_raise(data):
    K = data.n_tokens
    b = data.batch()
    with pytest.raises(ValueError, match=r"W_ov must have shape \(K, K\) = \(10, 10\)"):
        ntp.loss(np.zeros((3, 3)), np.zeros((K, K)), b)
    with pytest.raises(ValueError, match="W_kq must be finite"):
        ntp.loss(np.zeros((K, K)), np.full((K, K), np.nan), b)
    with pytest.raises(ValueError, match="eta must be a finite number > 0, got 0"):
        ntp.normalised_step(np.zeros((2, 2)), np.ones((2, 2)), 0)
    with pytest.raises(ValueError, match="eta0|eta"):
        ntp.two_stage_ngd(data, eta0=-1.0, eta=0.1, steps0=2, steps=2)
    with pytest.raises(ValueError, match="expected a SentenceBatch"):
        ntp.attention(np.zeros((K, K)), [[0, 1]])


# --------------------------------------------------------------------------------------------
# Normalised gradient descent
# --------------------------------------------------------------------------------------------


def test_normalised_steps_have_the_stated_length(data):
    K = data.n_tokens
    W0 = ntp.small_random(K, 0.02, 1)
    W1, _ = ntp.stage1_ngd(data, W0, 0.3, 1)
    assert np.linalg.norm(W1 - W0) == pytest.approx(0.3, rel=1e-13)
    Wk1, _ = ntp.stage2_ngd(data, W1, 0.05, 1)
    assert np.linalg.norm(Wk1) == pytest.approx(0.05, rel=1e-13)
    G = np.random.default_rng(0).standard_normal((K, K))
    assert np.linalg.norm(ntp.normalised_step(W0, G, 0.7) - W0) == pytest.approx(0.7, rel=1e-13)
    with pytest.raises(ValueError, match="non-zero gradient"):
        ntp.normalised_step(W0, np.zeros((K, K)), 0.1)
    j = ntp.joint_ngd(data, eta=0.2, steps=1, seed=4)
    step = math.hypot(np.linalg.norm(j["W_ov"] - ntp.small_random(K, 0.02, 4)),
                      np.linalg.norm(j["W_kq"]))  # fmt: skip
    assert step == pytest.approx(0.2, rel=1e-13)


def test_two_stage_losses_decrease_and_norms_grow(data):
    res = ntp.two_stage_ngd(data, eta0=0.1, eta=0.05, steps0=150, steps=300)
    h1, h2 = res["stage1"], res["stage2"]
    assert np.all(np.diff(h1["loss"]) < 0) and np.all(np.diff(h2["loss"]) < 0)
    assert np.all(np.diff(h2["excess"]) < 0) and np.all(h2["excess"] > 0)
    assert np.all(h2["floor"] == h2["floor"][0])
    assert h2["loss"][-1] == pytest.approx(h2["floor"][-1] + h2["excess"][-1], rel=1e-9)
    # norms grow at most by eta per step and close to it
    assert np.all(np.diff(h2["norm_kq"]) <= 0.05 + 1e-12)
    assert h2["norm_kq"][-1] > 0.8 * 0.05 * 300


def test_stage2_stops_on_a_zero_gradient():
    # one-token sentences: attention is trivial, so the W_kq gradient is exactly zero
    ds = ntp.NTPDataset.from_data([[0], [1], [2]], [1, 2, 0], [1, 2, 0], 3)
    Wk, h = ntp.stage2_ngd(ds, np.eye(3), 0.1, 10)
    assert int(h["stopped_at"]) == 0 and np.all(Wk == 0) and h["step"].tolist() == [0]


def test_plain_gd_reaches_the_entropy_rate_on_a_binary_chain():
    chain = BinaryChain(0.5, 0.8)
    b = ntp.markov_sentence_batch(chain, 4)
    assert b.weights.sum() == pytest.approx(1.0) and len(b) == 2 + 4 + 8 + 16
    # the optimum of the output layer with attention on the query: loss = entropy rate
    W_ov = np.log(chain.kernel).T
    assert ntp.loss(W_ov, 60 * np.eye(2), b) == pytest.approx(chain.entropy_rate, abs=1e-12)
    assert ntp.loss(W_ov, np.zeros((2, 2)), b) > chain.entropy_rate + 1e-3


# --------------------------------------------------------------------------------------------
# Max-margin solutions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collocation", [[3, 0, 4, 1, 2], [2, -1, 0, -1, 1]])
def test_wov_max_margin(collocation):
    K = 5
    n = np.array(collocation)
    W = ntp.wov_max_margin(n, K)
    dom = np.flatnonzero(n >= 0)
    assert np.linalg.norm(W) == pytest.approx(math.sqrt(len(dom) * (K - 1) / K), rel=1e-14)
    for x in dom:
        others = np.delete(W[:, x], n[x])
        np.testing.assert_allclose(W[n[x], x] - others, 1.0, rtol=0, atol=1e-14)
    assert np.all(W[:, n < 0] == 0)
    # the closed form is the least-norm solution (same answer as the generic QP solver)
    for x in dom:
        G = np.eye(K)[[n[x]] * (K - 1)] - np.delete(np.eye(K), n[x], axis=0)
        w, lam = ntp._ldp(G, np.ones(K - 1))
        np.testing.assert_allclose(w, W[:, x], atol=1e-12)
        assert np.all(lam >= -1e-12)


def test_wov_max_margin_norm_at_k20():
    n = ntp.random_collocation(20, 0)
    assert np.linalg.norm(ntp.wov_max_margin(n, 20)) == pytest.approx(4.3589, abs=5e-5)


def test_wkq_max_margin_satisfies_kkt_and_is_optimal(data):
    K = data.n_tokens
    W, info = ntp.wkq_max_margin(data.tokens, data.lengths, data.optimal, K)
    assert set(info) == set(np.unique(data.tokens[np.arange(len(data)), data.lengths - 1]))
    g = np.random.default_rng(1)
    for q, inf in info.items():
        pairs, lam, w = inf["pairs"], inf["multipliers"], W[:, q]
        G = np.zeros((len(pairs), K))
        G[np.arange(len(pairs)), pairs[:, 0]] = 1
        G[np.arange(len(pairs)), pairs[:, 1]] -= 1
        slack = G @ w - 1
        assert slack.min() >= -1e-9  # primal feasibility: margins >= 1
        assert lam.min() >= -1e-12  # dual feasibility
        np.testing.assert_allclose(w, G.T @ lam, atol=1e-9)  # stationarity
        assert np.abs(lam * slack).max() < 1e-9  # complementary slackness
        # an independent solver agrees, and feasible perturbations are never shorter
        ref = minimize(
            lambda v: v @ v, np.ones(K), jac=lambda v: 2 * v, method="SLSQP",
            constraints=[{"type": "ineq", "fun": lambda v, G=G: G @ v - 1, "jac": lambda v, G=G: G}],
            options={"ftol": 1e-14, "maxiter": 500},
        )  # fmt: skip
        assert ref.fun == pytest.approx(w @ w, rel=1e-6)
        for _ in range(20):
            v = w + 0.1 * g.standard_normal(K)
            if np.all(G @ v >= 1):
                assert v @ v >= w @ w - 1e-12
    # columns of queries that never occur are zero
    unused = sorted(set(range(K)) - set(info))
    assert np.all(W[:, unused] == 0)


def test_wkq_of_a_deterministic_cycle_ranks_the_query_first():
    ds = ntp.cyclic_chain_dataset([2, 0, 3, 1], 4)
    assert np.array_equal(ds.optimal, ds.tokens[np.arange(len(ds)), ds.lengths - 1])
    W, _ = ntp.wkq_max_margin(ds.tokens, ds.lengths, ds.optimal, 4)
    np.testing.assert_allclose(W, np.eye(4) - 0.25, atol=1e-12)


def test_direction_metrics():
    A = np.array([[1.0, 0], [0, 0]])
    B = np.array([[0.0, 2], [0, 0]])
    assert ntp.cosine(A, 3 * A) == pytest.approx(1.0)
    assert ntp.cosine(A, B) == 0.0 and ntp.direction_distance(A, B) == pytest.approx(math.sqrt(2))
    assert ntp.direction_distance(A, 5 * A) == pytest.approx(0.0, abs=1e-7)


def test_stage1_from_zero_stays_on_the_max_margin_ray():
    ds = ntp.make_dataset(6, 10, 2, 4, 2)
    target = ntp.wov_max_margin(ds.collocation, 6)
    _, h = ntp.stage1_ngd(ds, np.zeros((6, 6)), 0.1, 30, target=target)
    np.testing.assert_allclose(h["cos_ov"][1:], 1.0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Experiments (small settings)
# --------------------------------------------------------------------------------------------


def test_fits_recover_known_rates():
    t = np.arange(0, 101.0)
    assert E.fit_log_linear(t, 3 * np.exp(-0.02 * t), 0, 100)["rate"] == pytest.approx(-0.02)
    assert E.fit_linear(t, 1 + 0.5 * t, 10, 100)["slope"] == pytest.approx(0.5)
    p = E.fit_power(t[1:], 2 * t[1:] ** -0.7, 1, 100)
    assert p["alpha"] == pytest.approx(0.7) and p["r2"] > p["r2_geometric"]


def test_small_figure2_run_and_rates():
    run = E.figure2_run(n_tokens=8, n_sentences=30, max_len=5, steps0=200, steps=300)
    rates = E.figure2_rates(run)
    assert rates["L0"]["rate"] < 0 and rates["excess"]["rate"] < 0
    assert rates["L0"]["rate"] == pytest.approx(rates["L0_predicted_rate"], rel=0.1)
    assert rates["norm_ov"]["slope"] == pytest.approx(run["eta0"], rel=0.02)
    assert 0 < rates["dir_ov"]["alpha"] and 0 < rates["dir_kq"]["alpha"]
    sh = E.shift_eval(run, n_test=100, min_len=6, max_len=8)
    assert sh["closure_top_is_optimal"] == 1.0
    assert 0 <= sh["determined_directly_fraction"] <= sh["determined_fraction"] <= 1


def test_experiments_are_registered():
    for eid in ("ntp-2", "ntp-shift", "ntp-joint", "ntp-markov"):
        exp = get(eid)
        assert exp.jobs(None, None) == [] and exp.chapter == "07_max_margin"


def test_general_qp_agrees_with_the_closed_form_and_the_nnls_route():
    data = ntp.make_dataset(n_tokens=7, n_sentences=40, min_len=2, max_len=5, seed=3)
    W_ov = ntp.wov_max_margin_qp(data.collocation, 7)
    assert np.abs(W_ov - ntp.wov_max_margin(data.collocation, 7)).max() < 1e-8
    W_kq, _ = ntp.wkq_max_margin(data.tokens, data.lengths, data.optimal, 7)
    W_kq_qp = ntp.wkq_max_margin_qp(data.tokens, data.lengths, data.optimal, 7)
    assert np.abs(W_kq_qp - W_kq).max() < 1e-6
    # a QP with contradictory constraints is refused, not answered
    with pytest.raises(ValueError, match="did not converge"):
        ntp.min_norm_qp(np.array([[1.0], [-1.0]]), np.array([1.0, 1.0]))
