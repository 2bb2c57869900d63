"""Tests of the batched transformer and the training engine."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from markovformer.init import gaussian_, initialise
from markovformer.kernels import SoftmaxKernel, get_kernel
from markovformer.markov import BinaryChain, LagChain, symmetric_chain
from markovformer.model import MarkovTransformer, TransformerConfig
from markovformer.train import SCHEDULE_ENDS, TrainConfig, one_cycle_lr, train

SMALL = TransformerConfig(d=8, seq_len=32)


def reference_logits(model: MarkovTransformer, run: int, x: torch.Tensor) -> torch.Tensor:
    """The SPEC section 2 formulas, written position by position for one run and one sequence."""
    st = model.run_state(run)
    cfg = model.config
    N, d = x.shape[0], cfg.d
    if cfg.binary:
        h = torch.stack([x[n] * st["emb"] + st["pos"][n] for n in range(N)])
    else:
        h = torch.stack([st["emb"][x[n]] + st["pos"][n] for n in range(N)])
    for layer in range(cfg.depth):
        wq, wk, wv = st["wq"][layer], st["wk"][layer], st["wv"][layer]
        ys = []
        for n in range(N):
            scores = torch.stack([(wq @ h[n]) @ (wk @ h[i]) / math.sqrt(d) for i in range(n + 1)])
            att = torch.softmax(scores, 0)
            mix = sum(att[i] * (wv @ h[i]) for i in range(n + 1))
            if cfg.attn_out_proj:
                mix = st["wo"][layer] @ mix
            ys.append(h[n] + mix)
        y = torch.stack(ys)
        h = y + (st["w2"][layer] @ torch.relu(st["w1"][layer] @ y.T)).T
    a = st["emb"] if cfg.tied else st["out"]
    return h @ a.T + st["bias"] if not cfg.binary else h @ a + st["bias"]


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        TransformerConfig(d=4, seq_len=12, tied=False),
        TransformerConfig(d=4, seq_len=12, depth=2, attn_out_proj=False),
        TransformerConfig(d=4, seq_len=12, n_states=3),
        TransformerConfig(d=4, seq_len=12, n_states=3, tied=False, depth=2),
    ],
    ids=["binary-tied", "binary-untied", "depth2-noWO", "3state-tied", "3state-untied-depth2"],
)
def test_forward_matches_reference_formulas(cfg):
    model = MarkovTransformer(cfg, n_runs=2).double()
    gaussian_(model, [3, 4], std=0.5)  # large weights so every term matters
    with torch.no_grad():
        model.bias.add_(0.1)
    N = min(cfg.seq_len, 12)
    x = torch.randint(0, cfg.n_states, (2, 3, N), generator=torch.Generator().manual_seed(0))
    out = model(x)
    for r in range(2):
        for b in range(3):
            torch.testing.assert_close(out[r, b], reference_logits(model, r, x[r, b]))
    logits, atts = model(x, return_attention=True)
    torch.testing.assert_close(logits, out)
    assert len(atts) == cfg.depth and atts[0].shape == (2, 3, N, N)
    torch.testing.assert_close(atts[0].sum(-1), torch.ones(2, 3, N, dtype=torch.float64))
    assert torch.all(atts[0].triu(1) == 0)  # causal


def test_parameter_counts():
    assert (
        MarkovTransformer(TransformerConfig(d=8, seq_len=1024), 1).num_parameters_per_run() == 8969
    )
    untied = TransformerConfig(d=8, seq_len=1024, tied=False)
    assert MarkovTransformer(untied, 3).num_parameters_per_run() == 8969 + 8
    no_wo = TransformerConfig(d=8, seq_len=1024, attn_out_proj=False)
    assert MarkovTransformer(no_wo, 1).num_parameters_per_run() == 8969 - 64


def test_shapes_of_parameters():
    m = MarkovTransformer(TransformerConfig(d=8, seq_len=16, depth=2, n_states=5, tied=False), 3)
    shapes = {n: tuple(p.shape) for n, p in m.named_run_parameters().items()}
    assert shapes == {
        "emb": (3, 5, 8), "pos": (3, 16, 8), "wq": (3, 2, 8, 8), "wk": (3, 2, 8, 8),
        "wv": (3, 2, 8, 8), "wo": (3, 2, 8, 8), "w1": (3, 2, 32, 8), "w2": (3, 2, 8, 32),
        "out": (3, 5, 8), "bias": (3, 5),
    }  # fmt: skip
    assert "pos" not in m.decay_parameter_names() and "bias" not in m.decay_parameter_names()
    assert {"emb", "wq", "w1", "out"} <= set(m.decay_parameter_names())


def test_runs_do_not_interact():
    model = MarkovTransformer(SMALL, 2).double()
    gaussian_(model, [0, 1], std=0.3)
    x = torch.randint(0, 2, (2, 4, 32), generator=torch.Generator().manual_seed(1))

    def grads_of_run0():
        model.zero_grad()
        model.loss_per_run(model(x[..., :-1]), x[..., 1:]).sum().backward()
        return {n: p.grad[0].clone() for n, p in model.named_run_parameters().items()}

    before = grads_of_run0()
    with torch.no_grad():
        for p in model.parameters():
            p[1].mul_(-3.0).add_(0.7)  # change run 1 completely
    after = grads_of_run0()
    for n in before:
        torch.testing.assert_close(before[n], after[n], rtol=0, atol=0)


def test_gaussian_init_is_per_seed_and_has_the_right_scale():
    a = MarkovTransformer(TransformerConfig(), 2)
    b = MarkovTransformer(TransformerConfig(), 1)
    gaussian_(a, [5, 9])
    gaussian_(b, [9])
    for n, p in a.named_run_parameters().items():
        torch.testing.assert_close(p[1], b.named_run_parameters()[n][0], rtol=0, atol=0)
    assert torch.all(a.bias == 0)
    assert a.pos.std().item() == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="one seed per run: 2 runs, got 1"):
        gaussian_(a, [1])


@pytest.mark.parametrize("depth", [1, 4])
def test_gaussian_init_scales_the_residual_projections_as_the_authors_code(depth):
    """W_O and W_2 ("c_proj") get 0.02 / sqrt(2 * depth); every other matrix 0.02 (SPEC 2)."""
    m = MarkovTransformer(TransformerConfig(d=16, seq_len=256, depth=depth), 2)
    gaussian_(m, [0, 1])
    proj = 0.02 / math.sqrt(2 * depth)
    for name, want in (("wq", 0.02), ("w1", 0.02), ("emb", 0.02), ("wo", proj), ("w2", proj)):
        got = getattr(m, name).std().item()
        assert got == pytest.approx(want, rel=0.06), name
    flat = MarkovTransformer(TransformerConfig(d=16, seq_len=256, depth=depth), 2)
    gaussian_(flat, [0, 1], residual="flat")
    assert flat.w2.std().item() == pytest.approx(0.02, rel=0.06)
    # same stream: the flat draw is the scaled one times sqrt(2 * depth)
    torch.testing.assert_close(flat.wo * proj / 0.02, m.wo, rtol=1e-6, atol=0)
    torch.testing.assert_close(flat.wq, m.wq, rtol=0, atol=0)
    with pytest.raises(ValueError, match="residual must be one of .*'gpt2'.*got 'nope'"):
        gaussian_(m, [0, 1], residual="nope")


def test_guideline_and_authors_inits_draw_attention_output_like_the_default_init():
    for init in ("guideline", "authors_good"):
        m = MarkovTransformer(TransformerConfig(d=32, seq_len=16), 1)
        initialise(m, [3], init)
        assert m.wq.std().item() == pytest.approx(0.02, rel=0.1), init
        assert m.wo.std().item() == pytest.approx(0.02 / math.sqrt(2), rel=0.1), init


def test_softmax_kernel_weights_agree_with_fused_apply():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 10, 4, generator=g, dtype=torch.float64) for _ in range(3))
    kern = SoftmaxKernel()
    for causal in (True, False):
        torch.testing.assert_close(kern.weights(q, k, causal) @ v, kern.apply(q, k, v, causal))
    with pytest.raises(ValueError, match="unknown attention kernel 'nope'; available"):
        get_kernel("nope")


def test_one_cycle_schedule_matches_torch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=2e-3,
        total_steps=1000,
        pct_start=0.02,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=100,
        final_div_factor=0.05,
    )  # fmt: skip  (the authors' schedule, SPEC section 2)
    for t in range(1000):
        assert one_cycle_lr(t, 1000, 2e-3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()
    tc = TrainConfig()
    assert tc.final_div_factor == SCHEDULE_ENDS["authors"]
    assert one_cycle_lr(999, 1000, tc.lr) == pytest.approx(0.2 * tc.lr, rel=1e-12)
    end = one_cycle_lr(999, 1000, tc.lr, final_div_factor=SCHEDULE_ENDS["tenth"])
    assert end == pytest.approx(0.1 * tc.lr, rel=1e-12)


def test_training_learns_a_sticky_chain_and_logs_exact_loss():
    chain = BinaryChain(0.2, 0.3)
    cfg = TransformerConfig(d=8, seq_len=64)
    res = train(
        cfg, TrainConfig(steps=300, batch_size=32, lr=1e-2, probe_steps=(0, 300)), [0], chain
    )
    ex = res.metrics["exact_loss"][0]
    assert ex.shape == (300,)
    assert ex[:10].mean() > chain.unigram_loss - 0.02  # starts near ln 2 / the unigram level
    assert ex[-20:].mean() < chain.entropy_rate + 0.01  # learns the bigram
    # excess = exact - conditional entropy, and the exact loss is less noisy than the train loss
    assert np.all(res.metrics["excess"][0] > -1e-6)
    assert np.std(np.diff(ex[-100:])) < np.std(np.diff(res.metrics["train_loss"][0][-100:]))
    # probes: Pr(1 | x_n = 0) -> p and Pr(1 | x_n = 1) -> 1 - q at the end
    assert res.probes.shape == (1, 2, 2, 64)
    final = np.nanmean(res.probes[0, 1, :, 8:], axis=-1)
    assert final == pytest.approx([0.2, 0.7], abs=0.05)


def test_logged_exact_loss_equals_recomputation():
    chain = BinaryChain(0.5, 0.8)
    cfg = TransformerConfig(d=8, seq_len=16)
    seen = {}

    def cb(step, model, metrics):
        if step == 3:
            seen["state"] = {n: p.detach().clone() for n, p in model.named_run_parameters().items()}

    res = train(cfg, TrainConfig(steps=4, batch_size=8), [11, 12], chain, callback=cb)
    # replay step 4's batch: same data stream, same parameters
    from markovformer.rng import make_generator

    model = MarkovTransformer(cfg, 2)
    with torch.no_grad():
        for n, p in model.named_run_parameters().items():
            p.copy_(seen["state"][n])
    gens = [make_generator(s, "data") for s in (11, 12)]
    for _ in range(4):
        u = torch.stack([torch.rand(8, 18, generator=g) for g in gens])
    from markovformer.markov import binary_chains_from_uniforms

    x = binary_chains_from_uniforms(u, [0.5, 0.5], [0.8, 0.8])
    with torch.no_grad():
        logits = model(x[..., :-1])
    for r in range(2):
        exact = chain.exact_conditional_loss(x[r, :, :-1], logits=logits[r]).item()
        assert res.metrics["exact_loss"][r, 3] == pytest.approx(exact, rel=1e-5)
        train_loss = F.binary_cross_entropy_with_logits(logits[r], x[r, :, 1:].float()).item()
        assert res.metrics["train_loss"][r, 3] == pytest.approx(train_loss, rel=1e-5)


def test_same_seed_same_numbers_and_batching_does_not_change_a_run():
    cfg = TransformerConfig(d=8, seq_len=32)
    tc = TrainConfig(steps=25, batch_size=8)
    chains = [BinaryChain(0.5, 0.8), BinaryChain(0.2, 0.3)]
    a = train(cfg, tc, [1, 2], chains)
    b = train(cfg, tc, [1, 2], chains)
    np.testing.assert_array_equal(a.metrics["exact_loss"], b.metrics["exact_loss"])
    alone = train(cfg, tc, [2], [chains[1]])
    np.testing.assert_allclose(
        alone.metrics["exact_loss"][0], a.metrics["exact_loss"][1], rtol=1e-5
    )
    np.testing.assert_allclose(
        alone.final_state["w1"][0], a.final_state["w1"][1], rtol=1e-4, atol=1e-6
    )


def test_nan_run_is_stopped_and_reported_while_others_train():
    cfg = TransformerConfig(d=8, seq_len=32)
    tc = TrainConfig(steps=20, batch_size=8)
    chain = BinaryChain(0.2, 0.3)
    model = MarkovTransformer(cfg, 2)
    gaussian_(model, [7, 8])
    with torch.no_grad():
        model.w1[1].fill_(float("inf"))  # run with seed 8 blows up at its first step
    res = train(cfg, tc, [7, 8], chain, model=model)
    assert res.failures == [{"seed": 8, "step": 1, "loss": res.failures[0]["loss"]}]
    assert not math.isfinite(res.failures[0]["loss"])
    assert np.all(np.isnan(res.metrics["exact_loss"][1]))
    alone = train(cfg, tc, [7], chain)
    np.testing.assert_allclose(
        res.metrics["exact_loss"][0], alone.metrics["exact_loss"][0], rtol=1e-5
    )
    assert int(res.record(1)["failed_step"]) == 1 and int(res.record(0)["failed_step"]) == -1


def test_per_run_gradient_clipping_and_sgd():
    cfg = TransformerConfig(d=8, seq_len=16)
    res = train(cfg, TrainConfig(steps=5, batch_size=4, grad_clip=1e-3, optimizer="sgd"), [0, 1],
                BinaryChain(0.3, 0.3))  # fmt: skip
    assert np.all(np.isfinite(res.metrics["exact_loss"]))


def test_multistate_and_higher_order_training_runs():
    cfg = TransformerConfig(d=8, seq_len=32, n_states=5)
    chain = symmetric_chain(5, 0.1)
    res = train(cfg, TrainConfig(steps=150, batch_size=16, lr=1e-2, probe_steps=(150,)), [0], chain)
    assert res.metrics["exact_loss"][0, -10:].mean() < chain.unigram_loss - 0.5
    assert res.probes.shape == (1, 1, 5, 32, 5)
    lag = LagChain(0.2, 0.3, 2)
    res = train(TransformerConfig(d=8, seq_len=32), TrainConfig(steps=3, batch_size=4), [0], lag)
    assert np.all(np.isfinite(res.metrics["exact_loss"]))


def test_snapshots():
    cfg = TransformerConfig(d=8, seq_len=16)
    res = train(cfg, TrainConfig(steps=6, batch_size=4, snapshot_steps=(0, 3, 6)), [0, 1],
                BinaryChain(0.5, 0.5))  # fmt: skip
    assert res.snapshots["w1"].shape == (2, 3, 1, 32, 8)
    np.testing.assert_array_equal(res.snapshots["w1"][:, -1], res.final_state["w1"])
    rec = res.record(0)
    assert rec["snapshot/pos"].shape == (3, 16, 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"optimizer": "lion"}, "optimizer must be 'adamw' or 'sgd'"),
        ({"schedule": "step"}, "schedule must be"),
        ({"probe_steps": (5, 2000)}, r"probe_steps must lie in \[0, steps=1000\], got \[2000\]"),
    ],
)
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_model_config_and_inputs():
    with pytest.raises(ValueError, match="d must be an integer >= 1, got 0"):
        TransformerConfig(d=0)
    with pytest.raises(ValueError, match="n_states must be an integer >= 2, got 1"):
        TransformerConfig(n_states=1)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        TransformerConfig(kernel="gauss?")
    m = MarkovTransformer(SMALL, 2)
    with pytest.raises(ValueError, match=r"shape \(n_runs=2, batch, length\), got \(3, 4, 8\)"):
        m(torch.zeros(3, 4, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="sequence length 40 exceeds the model's seq_len 32"):
        m(torch.zeros(2, 4, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="need one chain per run: 2 runs, got 1"):
        train(SMALL, TrainConfig(steps=1), [0, 1], [BinaryChain(0.1, 0.2)])
    with pytest.raises(ValueError, match="n_states=2 but a chain has"):
        train(SMALL, TrainConfig(steps=1), [0], symmetric_chain(3, 0.1))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        train(SMALL, TrainConfig(steps=1), [0, 0], BinaryChain(0.1, 0.2))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' was requested"):
            train(SMALL, TrainConfig(steps=1), [0], BinaryChain(0.1, 0.2), device="cuda")
