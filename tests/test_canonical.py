"""Tests of the canonical (e, w, b) / (e, w, a) models and the rank-one initialisations."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from markovformer import canonical as C
from markovformer.init import (
    authors_good_,
    canonical_coordinates,
    gaussian_,
    guideline_,
    rank_one_,
    rank_one_energy,
)
from markovformer.markov import BinaryChain
from markovformer.model import MarkovTransformer, TransformerConfig
from markovformer.train import TrainConfig, train

CHAINS = [(0.5, 0.8), (0.2, 0.3), (0.1, 0.1), (0.9, 0.9), (0.3, 0.9)]


def torch_loss(land: C.CanonicalLandscape, e, w, b):
    """L(e, w, b) written independently in torch (float64) for autograd."""
    A = e**2 * (1 + 2 * w * w.abs())
    bp = b - e**2 / 2
    ls = torch.nn.functional.logsigmoid
    l0 = -(land.p * ls(bp) + (1 - land.p) * ls(-bp))
    l1 = -((1 - land.q) * ls(A + bp) + land.q * ls(-A - bp))
    return land.pi0 * l0 + land.pi1 * l1


@pytest.mark.parametrize("p,q", CHAINS)
def test_closed_form_loss_matches_monte_carlo(p, q):
    land = C.CanonicalLandscape(p, q)
    chain = BinaryChain(p, q)
    x = chain.sample(400, 256, generator=torch.Generator().manual_seed(1))
    for e, w, b in [(0.7, 0.4, 0.1), (1.3, -1.2, -0.5), (0.2, 2.0, 0.3)]:
        model = C.CanonicalModel(1).double().set_(e, w, b)
        with torch.no_grad():
            logits = model(x[None])[0]
        mc = chain.exact_conditional_loss(x, logits=logits).item()
        sampled = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, :-1], x[:, 1:].double()
        ).item()
        closed = float(land.loss(e, w, b))
        assert mc == pytest.approx(closed, abs=4e-3)
        assert sampled == pytest.approx(closed, abs=8e-3)


@pytest.mark.parametrize("p,q", CHAINS)
def test_optimal_bias_and_profile(p, q):
    land = C.CanonicalLandscape(p, q)
    for A in (-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 60.0):
        res = minimize_scalar(
            lambda b, A=A: float(land.loss_gap_bias(A, b)), bounds=(-80, 80), method="bounded",
            options={"xatol": 1e-12},
        )  # fmt: skip
        assert float(land.loss_gap_bias(A, land.optimal_shifted_bias(A))) <= res.fun + 1e-12
        if abs(A) <= 10:  # beyond, the loss is flat in b to machine precision
            assert float(land.optimal_shifted_bias(A)) == pytest.approx(res.x, abs=1e-4)
    assert float(land.profile(0.0)) == pytest.approx(land.unigram_loss, abs=1e-12)
    assert float(land.profile(land.a_star)) == pytest.approx(land.entropy_rate, abs=1e-12)
    assert float(land.profile_grad(land.a_star)) == pytest.approx(0.0, abs=1e-12)
    assert float(land.profile_grad(0.0)) == pytest.approx(
        p * q * (p + q - 1) / (p + q) ** 2, abs=1e-12
    )
    A = np.linspace(-8, 8, 801)
    G = land.profile(A)
    assert np.all(np.diff(G, 2) > -1e-12)  # convex
    assert G.min() >= land.entropy_rate - 1e-12
    assert np.sign(land.a_star) == np.sign(1 - p - q)
    # optimal bias: dL/db = 0 there
    e, w = 0.8, -0.3
    _, _, gb = land.grad_ewb(e, w, land.optimal_bias(e, w))
    assert float(gb) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("p,q", CHAINS)
def test_gradients_match_autograd_and_finite_differences(p, q):
    land = C.CanonicalLandscape(p, q)
    rng = np.random.default_rng(0)
    for e, w, b in rng.normal(0, 1.2, size=(6, 3)):
        et, wt, bt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (e, w, b))
        torch_loss(land, et, wt, bt).backward()
        np.testing.assert_allclose(land.grad_ewb(e, w, b), [et.grad, wt.grad, bt.grad], atol=1e-10)
        assert float(land.loss(e, w, b)) == pytest.approx(
            float(torch_loss(land, et, wt, bt).detach()), abs=1e-12
        )
        # gradient of the profile loss L(e, w) = G(A(e, w)) vs central differences
        h = 1e-6
        ge, gw = land.grad(e, w)
        fd_e = (land.loss_at_optimal_bias(e + h, w) - land.loss_at_optimal_bias(e - h, w)) / (2 * h)
        fd_w = (land.loss_at_optimal_bias(e, w + h) - land.loss_at_optimal_bias(e, w - h)) / (2 * h)
        assert float(ge) == pytest.approx(float(fd_e), abs=1e-7)
        assert float(gw) == pytest.approx(float(fd_w), abs=1e-7)
        # and in 3-D, away from the kinks
        a = float(rng.normal(0, 0.5))
        g3 = land.grad_3d(e, w, a)
        for i, (de, dw, da) in enumerate(((h, 0, 0), (0, h, 0), (0, 0, h))):
            fd = (land.loss_3d(e + de, w + dw, a + da) - land.loss_3d(e - de, w - dw, a - da)) / (
                2 * h
            )
            assert float(g3[i]) == pytest.approx(float(fd), abs=1e-7)


def test_3d_model_reduces_to_2d_at_a_zero():
    land = C.CanonicalLandscape(0.5, 0.8)
    e, w = np.linspace(-2, 2, 7), np.linspace(-2, 2, 7)
    np.testing.assert_allclose(C.gap_3d(e, w, 0.0, land.pi1), C.gap(e, w))
    np.testing.assert_allclose(land.loss_3d(e, w, 0.0), land.loss_at_optimal_bias(e, w))
    np.testing.assert_allclose(land.bias_3d(e, w, 0.0), land.optimal_bias(e, w))


@pytest.mark.parametrize("p,q", [(0.5, 0.8), (0.2, 0.3)])
def test_3d_population_loss_matches_monte_carlo(p, q):
    """The N -> infinity loss: model with uniform attention on long sequences, late positions."""
    land = C.CanonicalLandscape(p, q)
    chain = BinaryChain(p, q)
    x = chain.sample(64, 4096, generator=torch.Generator().manual_seed(5))
    for e, w, a in [(1.0, 0.6, 0.8), (1.2, -1.1, -0.7), (0.9, 0.3, 1.5)]:
        b = float(land.bias_3d(e, w, a))
        model = C.CanonicalModel(1, attention=True).double().set_(e, w, b, a)
        with torch.no_grad():
            logits = model(x[None])[0]
        mc = chain.exact_conditional_loss(x[:, 2048:], logits=logits[:, 2048:]).item()
        assert mc == pytest.approx(float(land.loss_3d(e, w, a)), abs=3e-3)


@pytest.mark.parametrize("p,q", [(0.5, 0.8), (0.1, 0.1), (0.9, 0.9), (0.2, 0.3)])
def test_energy_is_conserved_and_labels_match_trajectories(p, q):
    land = C.CanonicalLandscape(p, q)
    rng = np.random.default_rng(1)
    starts = rng.uniform(-2.5, 2.5, size=(40, 2))
    agree = 0
    for e0, w0 in starts:
        if abs(e0) < 0.05 or abs(w0) < 0.02:
            continue
        flow = C.gradient_flow(land, e0, w0)
        E = C.energy(*flow.y.T)
        assert np.ptp(E) < 1e-6, f"energy drift {np.ptp(E)} from ({e0}, {w0})"
        assert flow.converged
        # near the separatrix the label is numerically ambiguous; skip those starts
        if abs(C.energy(e0, w0) - C.E_SADDLE) < 1e-3:
            continue
        assert flow.label == int(land.basin(e0, w0)), (e0, w0)
        agree += 1
    assert agree >= 30


@pytest.mark.parametrize("p,q", [(0.5, 0.8), (0.2, 0.3)])
def test_critical_points_have_zero_gradient(p, q):
    land = C.CanonicalLandscape(p, q)
    w = np.linspace(-3, 3, 61)
    e_star = land.global_minimum_curve(w)
    ok = np.isfinite(e_star)
    assert ok.sum() > 10
    ge, gw = land.grad(e_star[ok], w[ok])
    assert np.abs(ge).max() < 1e-9 and np.abs(gw).max() < 1e-9
    np.testing.assert_allclose(
        land.loss_at_optimal_bias(e_star[ok], w[ok]), land.entropy_rate, atol=1e-12
    )
    lo, hi = land.local_minimum_range()
    w_ok = w[ok]
    assert np.all((w_ok > C.W_SADDLE) if not land.switching else (w_ok < C.W_SADDLE))
    ge, gw = land.grad(np.zeros_like(w), w)  # the unigram line
    assert np.abs(ge).max() == 0 and np.abs(gw).max() == 0
    # second derivative in e on the line: positive exactly on the local-minimum range
    h = 1e-4
    curv = (land.loss_at_optimal_bias(h, w) - land.unigram_loss) / h**2
    inside = (w > lo) & (w < hi)
    assert np.all(curv[inside & (np.abs(w - C.W_SADDLE) > 0.05)] > 0)
    assert np.all(curv[~inside & (np.abs(w - C.W_SADDLE) > 0.05)] < 0)
    assert C.energy(0.0, C.W_SADDLE) == pytest.approx(C.E_SADDLE)


def test_basin_probabilities_of_gaussian_init():
    """SPEC section 3 table (there 1e6 samples; here 2e5 and a tolerance of 0.01)."""
    table = {0.02: (0.000, 1.000), 0.5: (0.189, 0.969), 1.0: (0.381, 0.887), 3.0: (0.485, 0.791)}
    prob = C.basin_probabilities(list(table), n=200_000)
    for i, (switching, sticky) in enumerate(table.values()):
        assert prob["switching"][i] == pytest.approx(switching, abs=0.01)
        assert prob["sticky"][i] == pytest.approx(sticky, abs=0.01)


def test_gradient_descent_follows_the_flow():
    land = C.CanonicalLandscape(0.2, 0.3)
    gd = C.gradient_descent(land, 0.3, 0.5, lr=0.5, steps=4000)
    assert np.all(np.diff(gd["loss"]) <= 1e-12)
    assert gd["loss"][-1] == pytest.approx(land.entropy_rate, abs=1e-5)
    land = C.CanonicalLandscape(0.5, 0.8)
    gd = C.gradient_descent(land, 0.3, 0.5, lr=0.5, steps=4000)
    assert gd["loss"][-1] == pytest.approx(land.unigram_loss, abs=1e-4)


@pytest.mark.parametrize("attention_scalar", [0.0, 0.9])
@pytest.mark.parametrize("e,w", [(1.1, 0.7), (0.8, -1.3), (-0.9, 2.0)])
def test_full_model_at_a_rank_one_point_gives_the_canonical_logits(e, w, attention_scalar):
    cfg = TransformerConfig(d=8, seq_len=64)
    model = MarkovTransformer(cfg, 2).double()
    rank_one_(model, [0, 1], e=e, w=w, a=attention_scalar)
    with torch.no_grad():
        model.bias.fill_(0.3)
    x = (
        BinaryChain(0.5, 0.8)
        .sample(2 * 5, 64, generator=torch.Generator().manual_seed(0))
        .view(2, 5, 64)
    )
    canon = C.CanonicalModel(2, attention=attention_scalar != 0).double()
    canon.set_(e, w, 0.3, attention_scalar if attention_scalar else None)
    with torch.no_grad():
        torch.testing.assert_close(model(x), canon(x), rtol=1e-12, atol=1e-12)
    for r in range(2):
        coords = canonical_coordinates(model.run_state(r))
        assert coords["e"] == pytest.approx(abs(e)) and coords["w"] == pytest.approx(w)
        assert coords["a"] == pytest.approx(attention_scalar, abs=1e-12)
        st = model.run_state(r)
        for name in ("w1", "w2"):
            assert rank_one_energy(st[name][0]) == pytest.approx(1.0)
        torch.testing.assert_close(st["w2"][0], math.copysign(1, w) * st["w1"][0].T)
        torch.testing.assert_close(st["pos"], (-st["emb"] / 2).expand(64, 8))


def test_named_inits_promise_their_structure():
    cfg = TransformerConfig(d=8, seq_len=1024)
    m = MarkovTransformer(cfg, 1)
    authors_good_(m, [0])
    c = canonical_coordinates(m.run_state(0))
    assert c["e"] == pytest.approx(math.sqrt(2)) and c["w"] == pytest.approx(-8.0)
    guideline_(m, [3])
    c = canonical_coordinates(m.run_state(0))
    assert c["w"] < -1 / math.sqrt(2)
    assert C.basin_label(c["e"], c["w"], switching=True) == 1
    assert abs(float(m.wq.detach().std()) - 0.02) < 0.01  # attention left at its default init
    with pytest.raises(ValueError, match=r"needs w < -1/sqrt\(2\)"):
        guideline_(m, [0], w=-0.5)
    gaussian_(m, [0], std=0.5)
    c = canonical_coordinates(m.run_state(0))
    assert rank_one_energy(m.w1[0, 0]) < 0.5  # a Gaussian matrix is far from rank one
    with pytest.raises(ValueError, match="std must be a number >= 0"):
        gaussian_(m, [0], std=-1)
    with pytest.raises(ValueError, match="attention must be 'zero' or 'gaussian'"):
        rank_one_(m, [0], attention="other")


def test_canonical_model_trains_in_the_engine_and_logs_coordinates():
    model = C.CanonicalModel(2).set_([0.3, 0.3], [0.5, 0.5], 0.0)
    res = train(
        TransformerConfig(seq_len=128), TrainConfig(steps=200, lr=5e-2, diagnostic_steps=(0, 200)),
        [0, 1], BinaryChain(0.2, 0.3), model=model,
    )  # fmt: skip
    assert res.metrics["exact_loss"][:, -10:].mean() < BinaryChain(0.2, 0.3).entropy_rate + 0.01
    assert res.diagnostics["canon/e"].shape == (2, 2)
    assert res.diagnostics["canon/e"][0, 0] == pytest.approx(0.3)


def test_bad_landscape_arguments():
    with pytest.raises(ValueError, match="p \\+ q = 1 makes the chain i.i.d."):
        C.CanonicalLandscape(0.3, 0.7)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        C.CanonicalLandscape(1.0, 0.5)
