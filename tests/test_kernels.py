"""Attention kernels (softmax, Gaussian) and the GDD multi-head layer of chapter 6."""

import math

import numpy as np
import pytest
import torch

from markovformer import gdd
from markovformer.kernels import (
    GaussianKernel,
    NormalizedGaussianKernel,
    PrefixGaussianKernel,
    SoftmaxKernel,
    available_kernels,
    gaussian_bandwidth,
    get_kernel,
)
from markovformer.markov import BinaryChain
from markovformer.model import TransformerConfig
from markovformer.rng import make_generator
from markovformer.train import TrainConfig, train

NEW_KERNELS = ("gaussian", "gaussian-rownorm", "gaussian-prefix")
ALL_KERNELS = ("softmax", *NEW_KERNELS)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny programs: one thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def qk(n=5, d=3, batch=2, heads=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, d, generator=g, dtype=dtype)
    k = torch.randn(batch, heads, n, d, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, n, 4, generator=g, dtype=dtype)
    return q, k, v


# -- kernels -------------------------------------------------------------------------------


def test_new_kernels_are_registered_and_validate_c():
    assert set(ALL_KERNELS) <= set(available_kernels())
    for name in NEW_KERNELS:
        assert get_kernel(name).c == 2.0  # the book's default
        assert get_kernel(name, c=0.5).c == 0.5
        with pytest.raises(ValueError, match="-1"):
            get_kernel(name, c=-1.0)
        with pytest.raises(ValueError, match="inf"):
            get_kernel(name, c=math.inf)
    with pytest.raises(ValueError, match="nope"):
        get_kernel("nope")


def test_gaussian_kernel_is_exp_of_minus_squared_distance_over_c_sqrt_d():
    q, k, _ = qk(d=6)
    for c in (0.5, 2.0, 3.0):
        tau = c * math.sqrt(6)
        assert gaussian_bandwidth(c, 6) == pytest.approx(tau)
        brute = torch.exp(-((q[..., :, None, :] - k[..., None, :, :]) ** 2).sum(-1) / tau)
        S = GaussianKernel(c).weights(q, k, causal=False)
        torch.testing.assert_close(S, brute, rtol=1e-12, atol=1e-14)
        assert bool((S > 0).all() and (S <= 1).all())
    # a query equal to a key gets weight exactly 1; rows are not normalised
    S = GaussianKernel().weights(q, q, causal=False)
    torch.testing.assert_close(S.diagonal(dim1=-2, dim2=-1), torch.ones(2, 2, 5, dtype=q.dtype))
    assert not torch.allclose(S.sum(-1), torch.ones_like(S.sum(-1)))


@pytest.mark.parametrize("c", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("causal", [False, True])
def test_row_normalised_gaussian_is_softmax_of_2qk_minus_k2_over_tau(c, causal):
    """exp(-|q-k|^2/tau) / sum_j ... = softmax_j((2 q.k_j - |k_j|^2) / tau), tau = c sqrt(d)."""
    q, k, _ = qk(d=4, seed=1)
    tau = c * math.sqrt(4)
    scores = (2 * q @ k.transpose(-1, -2) - (k * k).sum(-1)[..., None, :]) / tau
    if causal:
        scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), -math.inf)
    expected = scores.softmax(-1)
    got = NormalizedGaussianKernel(c).weights(q, k, causal=causal)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    # and it is the Gaussian kernel divided by its row sums
    raw = GaussianKernel(c).weights(q, k, causal=causal)
    torch.testing.assert_close(got, raw / raw.sum(-1, keepdim=True), rtol=1e-10, atol=1e-14)


def test_c2_row_normalised_gaussian_is_softmax_when_keys_have_equal_norms():
    q, k, _ = qk(d=4, seed=2)
    k = 1.3 * k / k.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(
        NormalizedGaussianKernel(2.0).weights(q, k), SoftmaxKernel().weights(q, k)
    )


@pytest.mark.parametrize("name", ALL_KERNELS)
def test_causal_masks(name):
    q, k, v = qk(n=6, seed=3)
    kern = get_kernel(name)
    S = kern.weights(q, k, causal=True)
    assert bool((S.triu(1) == 0).all()), "a causal row looks at a future key"
    k2, v2 = k.clone(), v.clone()
    k2[..., 3:, :] += 5.0
    v2[..., 3:, :] -= 7.0
    out, out2 = kern.apply(q, k, v, causal=True), kern.apply(q, k2, v2, causal=True)
    torch.testing.assert_close(out[..., :3, :], out2[..., :3, :])  # rows 0..2 ignore the future
    torch.testing.assert_close(out, S @ v)
    full = kern.weights(q, k, causal=False)
    assert full.shape == (2, 2, 6, 6) and bool((full.triu(1) != 0).any())


def test_prefix_gaussian_divides_by_the_number_of_visible_keys():
    q, k, _ = qk(n=6, seed=4)
    raw = GaussianKernel().weights(q, k, causal=True)
    pre = PrefixGaussianKernel().weights(q, k, causal=True)
    torch.testing.assert_close(pre * torch.arange(1, 7, dtype=q.dtype)[:, None], raw)
    full = PrefixGaussianKernel().weights(q, k, causal=False)
    torch.testing.assert_close(full * 6, GaussianKernel().weights(q, k, causal=False))
    # near the origin every kernel is uniform averaging over the prefix, like softmax
    small = 1e-4 * q, 1e-4 * k
    torch.testing.assert_close(
        PrefixGaussianKernel().weights(*small), SoftmaxKernel().weights(*small), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("name", ALL_KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_finite_differences(name, causal):
    q, k, v = qk(n=4, d=3, batch=1, heads=1, seed=5)
    kern = get_kernel(name)
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: kern.apply(a, b, c, causal=causal), inputs)


def test_gaussian_gradient_matches_the_closed_form():
    """d S_ij / d q_i = -2 (q_i - k_j) S_ij / tau."""
    q, k, _ = qk(n=3, d=2, batch=1, heads=1, seed=6)
    q.requires_grad_(True)
    S = GaussianKernel(2.0).weights(q, k, causal=False)
    (g,) = torch.autograd.grad(S[0, 0, 1, 2], q)
    tau = 2.0 * math.sqrt(2)
    expected = -2 * (q[0, 0, 1] - k[0, 0, 2]) * S[0, 0, 1, 2] / tau
    torch.testing.assert_close(g[0, 0, 1], expected.detach())
    assert float(g[0, 0, [0, 2]].abs().sum()) == 0.0


@pytest.mark.parametrize("name", NEW_KERNELS)
def test_markov_transformer_trains_with_each_new_kernel(name):
    cfg = TransformerConfig(d=4, seq_len=16, kernel=name, kernel_options=(("c", 2.0),))
    res = train(cfg, TrainConfig(steps=4, batch_size=4), [0, 1], BinaryChain(0.2, 0.3))
    loss = res.metrics["exact_loss"]
    assert loss.shape == (2, 4) and np.isfinite(loss).all() and not res.failures


# -- the GDD multi-head layer --------------------------------------------------------------


def layer(kernel="gaussian", N=3, n=4, D=4, H=2, **kw):
    opts = () if kernel == "softmax" else (("c", 2.0),)
    return gdd.LayerConfig(N, n, D, H, kernel=kernel, kernel_options=opts, **kw)


def draw(cfg, seed=0, **kw):
    g = make_generator(seed, "test-gdd")
    X, Y = gdd.random_data(cfg, g)
    return gdd.init_params(cfg, g, **kw), X, Y


def test_layer_output_is_B_times_stacked_value_output_products():
    cfg = layer(value_dim=3, out_dim=2)
    params, X, _ = draw(cfg)
    B = gdd.value_design(params, X, cfg)
    assert B.shape == (cfg.n_samples * cfg.seq_len, cfg.heads * cfg.dim)
    wo = params["wo"].reshape(cfg.heads, 3, 2)
    stacked = torch.cat([params["wv"][h] @ wo[h] for h in range(cfg.heads)])  # (H D, D_y)
    out = gdd.forward(params, X, cfg).reshape(-1, 2)
    torch.testing.assert_close(out, B @ stacked)
    A = gdd.value_map(params, X, cfg)  # the same map on vec(W_V)
    torch.testing.assert_close(A @ params["wv"].reshape(-1), out.reshape(-1))


def test_layer_batches_independent_runs():
    cfg = layer()
    runs = [draw(cfg, seed=s) for s in range(3)]
    P = gdd.stack_runs([r[0] for r in runs])
    X, Y = torch.stack([r[1] for r in runs]), torch.stack([r[2] for r in runs])
    per_run = gdd.loss_per_run(P, X, Y, cfg)
    for i, (p, x, y) in enumerate(runs):
        torch.testing.assert_close(per_run[i], gdd.loss(p, x, y, cfg))
    losses, _ = gdd.gd(P, X, Y, cfg, lr=0.01, steps=3, blocks="all")
    single, _ = gdd.gd(runs[1][0], runs[1][1], runs[1][2], cfg, lr=0.01, steps=3, blocks="all")
    np.testing.assert_allclose(losses[1], single, rtol=1e-10)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_lambda_B_is_positive_exactly_from_the_threshold_on(kernel):
    """rank(B) = min(H D, N n) for generic data; lambda_B > 0 iff H D >= N n."""
    for H in range(1, 6):  # N n = 12, D = 4: threshold at H = 3
        cfg = layer(kernel, N=3, n=4, D=4, H=H)
        params, X, Y = draw(cfg, seed=H)
        B = gdd.value_design(params, X, cfg)
        assert int(torch.linalg.matrix_rank(B)) == min(4 * H, 12)
        lam = gdd.lambda_B(B)
        assert (lam > 1e-6) == (4 * H >= 12)
        opt, _ = gdd.ls_optimum(params, X, Y, cfg)
        assert (opt < 1e-18) == (4 * H >= 12)


@pytest.mark.parametrize(("H", "seed"), [(1, 0), (4, 1)])  # below and above N n = 6 (D = 3)
def test_wv_only_gd_reaches_the_exact_least_squares_optimum(H, seed):
    cfg = layer("gaussian", N=2, n=3, D=3, H=H)
    params, X, Y = draw(cfg, seed=seed, wo="orthogonal")
    opt, w = gdd.ls_optimum(params, X, Y, cfg)
    assert (opt > 0.1) == (H == 1)
    rate = gdd.wv_rate(params, X, cfg)
    losses, final = gdd.gd(params, X, Y, cfg, lr=1.0 / rate["L"], steps=3000, blocks="v")
    assert abs(losses[-1] - opt) <= 1e-7 * losses[0]
    assert bool((np.diff(losses) <= 1e-12).all())  # monotone for eta <= 1 / L
    assert torch.equal(final["wq"], params["wq"]) and torch.equal(final["wo"], params["wo"])
    # the minimiser attains the optimum
    assert float(gdd.loss({**params, "wv": w}, X, Y, cfg)) == pytest.approx(opt, abs=1e-10)


@pytest.mark.parametrize("wo", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_wv_only_gd_decreases_at_least_at_the_rate_bound(wo, kernel):
    """f_t <= (1 - eta omega^2 lambda_B^2)^(2t) f_0 for eta = 1 / L, when H D >= N n."""
    cfg = layer(kernel, N=2, n=3, D=3, H=3)
    params, X, Y = draw(cfg, seed=8, wo=wo)
    rate = gdd.wv_rate(params, X, cfg)
    assert rate["lambda_B"] > 0 and rate["omega"] > 0
    assert rate["alpha"] <= rate["mu_min"] * (1 + 1e-9)  # the bound is a lower bound
    if wo == "orthogonal":
        assert rate["omega"] == pytest.approx(1.0)
        assert rate["mu_min"] == pytest.approx(rate["lambda_B"] ** 2)  # tight: A A^T = I x B B^T
    eta = 1.0 / rate["L"]
    losses, _ = gdd.gd(params, X, Y, cfg, lr=eta, steps=200, blocks="v")
    t = np.arange(201)
    bound = losses[0] * (1 - eta * rate["alpha"]) ** (2 * t)
    assert bool((losses <= bound * (1 + 1e-9) + 1e-14).all())
    assert losses[-1] < losses[0]


def test_layer_rejects_bad_input():
    with pytest.raises(ValueError, match="heads"):
        gdd.LayerConfig(2, 3, 4, 0)
    with pytest.raises(ValueError, match="nope"):
        gdd.LayerConfig(2, 3, 4, 1, kernel="nope")
    cfg = layer()
    params, X, Y = draw(cfg)
    with pytest.raises(ValueError, match="blocks"):
        gdd.gd(params, X, Y, cfg, lr=0.1, steps=1, blocks="o")
    with pytest.raises(ValueError, match="lr"):
        gdd.gd(params, X, Y, cfg, lr=-1.0, steps=1)
    with pytest.raises(ValueError, match="wq"):
        gdd.forward({**params, "wq": params["wq"][:, :2]}, X, cfg)
    with pytest.raises(ValueError, match="X must"):
        gdd.forward(params, X[..., :2], cfg)
    with pytest.raises(ValueError, match="Generator"):
        gdd.init_params(cfg, None)
    with pytest.raises(ValueError, match="qk_scale"):
        gdd.init_params(cfg, torch.Generator(), qk_scale=-1.0)


def test_init_is_reproducible_from_the_generator():
    cfg = layer()
    a, b = draw(cfg, seed=3)[0], draw(cfg, seed=3)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["wq"], draw(cfg, seed=4)[0]["wq"])


# -- stand-in tasks, sharpness, landscape ----------------------------------------------------


def test_counting_task_labels_follow_the_signed_count_with_negation():
    x, y = gdd.counting_task(400, np.random.default_rng(0), seq_len=12, vocab=5)
    assert x.shape == (400, 12) and y.shape == (400,)
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        score = 0
        for t, tok in enumerate(row):
            s = {1: 1, 2: -1}.get(tok, 0)
            score += -s if t > 0 and row[t - 1] == 3 else s
        assert score != 0 and label == int(score > 0)
    assert 0.4 < float(y.double().mean()) < 0.6
    with pytest.raises(ValueError, match="vocab"):
        gdd.counting_task(5, np.random.default_rng(0), vocab=3)


def _connected(img: np.ndarray, a: tuple, b: tuple) -> bool:
    seen, todo = {a}, [a]
    while todo:
        r, c = todo.pop()
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            inside = 0 <= rr < img.shape[0] and 0 <= cc < img.shape[1]
            if inside and img[rr, cc] > 0 and (rr, cc) not in seen:
                seen.add((rr, cc))
                todo.append((rr, cc))
    return b in seen


def test_pathfinder_label_is_whether_the_dots_are_joined():
    x, y = gdd.pathfinder_task(60, np.random.default_rng(1), grid=6, length=4)
    assert x.shape == (60, 36) and int(y.sum()) == 30
    for img, label in zip(x.numpy().reshape(-1, 6, 6), y.tolist(), strict=True):
        assert (img == 2).sum() == 2 and (img > 0).sum() == 8  # two paths of 4 cells
        dots = [tuple(p) for p in np.argwhere(img == 2)]
        assert _connected(img, dots[0], dots[1]) == bool(label)
    with pytest.raises(ValueError, match="length"):
        gdd.pathfinder_task(2, np.random.default_rng(0), grid=6, length=9)


def test_top_hessian_eigenvalue_of_a_quadratic():
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    top = gdd.top_hessian_eigenvalue(
        lambda: 0.5 * x @ A @ x, [x], torch.Generator().manual_seed(0), iters=100
    )
    assert top == pytest.approx(float(torch.linalg.eigvalsh(A).max()), rel=1e-8)


def test_stand_in_classifier_landscape_and_training():
    g = torch.Generator().manual_seed(0)
    model = gdd.StandInClassifier(8, 12, g, dim=8, heads=2, ffn=8, kernel="gaussian")
    x, y = gdd.counting_task(96, np.random.default_rng(2), seq_len=12)
    assert model(x).shape == (96, 2)
    rec = gdd.train_classifier(model, (x, y), (x, y), g, optimizer="adam", lr=1e-2, steps=4,
                               batch_size=32, eval_every=2)  # fmt: skip
    assert list(rec["step"]) == [0, 2, 4] and rec["train_loss"].shape == (4,)
    before = [p.detach().clone() for p in model.parameters()]

    def loss_fn():
        return torch.nn.functional.cross_entropy(model(x), y)

    land = gdd.landscape_2d(model, loss_fn, g, span=0.5, points=3)
    assert land["loss"].shape == (3, 3)
    assert land["loss"][1, 1] == pytest.approx(
        float(loss_fn().detach()), rel=1e-6
    )  # centre = trained
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="optimizer"):
        gdd.train_classifier(model, (x, y), (x, y), g, optimizer="lbfgs")
