"""The generalised transformer (heads, attention-only, layer norm), the in-context training path
and the chapter-8 experiments' storage; existing artifacts keep their identity."""

import math

import numpy as np
import pytest
import torch

from markovformer import cli
from markovformer.experiments import get, guide
from markovformer.experiments import icl as icl_exp
from markovformer.experiments.base import RunSpec, run_specs
from markovformer.icl import RandomChains
from markovformer.init import gaussian_
from markovformer.model import MarkovTransformer, TransformerConfig
from markovformer.train import TrainConfig, train


def test_existing_artifacts_keep_their_hash():
    """Anchors: the new TransformerConfig / TrainConfig / RunSpec fields stay out of identities
    at their defaults, so the committed runs of chapters 2-5 keep their directories."""
    assert guide._l2g4_jobs(None, None)[0][0].store("book/data").hash == "f4632659b90d"
    assert guide.reduced_spec(0.5, 0.8, None).store("book/data").hash == "edd74578d6e2"
    spec = guide._l2g4_jobs(None, None)[0][0]
    assert spec.store("book/data").dir.name == (
        "binary-p0.5-q0.8_tied_L1_d8_N1024_T1000_gaussian-f4632659b90d"
    )
    assert "n_heads" not in spec.model.to_dict() and "icl_steps" not in spec.train.to_dict()


def test_new_options_enter_the_identity_only_when_set():
    base = TransformerConfig(d=8, seq_len=16)
    for kw in ({"n_heads": 2}, {"mlp": False}, {"layer_norm": True}):
        d = TransformerConfig(d=8, seq_len=16, **kw).to_dict()
        ((name, value),) = kw.items()
        assert d[name] == value and name not in base.to_dict()
    tc = TrainConfig(steps=10, icl_steps=(0, 5), icl_map_len=4).to_dict()
    assert tc["icl_steps"] == (0, 5) and tc["icl_map_len"] == 4
    with pytest.raises(ValueError, match="n_heads must be an integer >= 1 dividing d=8, got 3"):
        TransformerConfig(d=8, n_heads=3)
    with pytest.raises(ValueError, match="icl_map_len must be an integer >= 0, got -1"):
        TrainConfig(icl_map_len=-1)
    with pytest.raises(ValueError, match=r"icl_steps must lie in \[0, steps=10\]"):
        TrainConfig(steps=10, icl_steps=(11,))


def reference_logits(model: MarkovTransformer, run: int, x: torch.Tensor) -> torch.Tensor:
    """Heads, optional MLP and pre-LN, written position by position for one run and sequence."""
    st, cfg = model.run_state(run), model.config
    N, d, H = x.shape[0], cfg.d, cfg.n_heads
    dh = d // H

    def ln(v):
        if not cfg.layer_norm:
            return v
        mu, var = v.mean(), v.var(unbiased=False)
        return (v - mu) / torch.sqrt(var + 1e-5)

    h = [st["emb"][x[n]] + st["pos"][n] for n in range(N)]
    for layer in range(cfg.depth):
        wq, wk, wv = st["wq"][layer], st["wk"][layer], st["wv"][layer]
        src = [ln(v) for v in h]
        ys = []
        for n in range(N):
            heads = []
            for hd in range(H):
                sl = slice(hd * dh, (hd + 1) * dh)
                q = wq[sl] @ src[n]
                scores = torch.stack([q @ (wk[sl] @ src[i]) / math.sqrt(dh) for i in range(n + 1)])
                att = torch.softmax(scores, 0)
                heads.append(sum(att[i] * (wv[sl] @ src[i]) for i in range(n + 1)))
            mix = torch.cat(heads)
            if cfg.attn_out_proj:
                mix = st["wo"][layer] @ mix
            ys.append(h[n] + mix)
        if cfg.mlp:
            h = [y + st["w2"][layer] @ torch.relu(st["w1"][layer] @ ln(y)) for y in ys]
        else:
            h = ys
    a = st["emb"] if cfg.tied else st["out"]
    return torch.stack([a @ ln(v) + st["bias"] for v in h])


@pytest.mark.parametrize(
    "cfg",
    [
        TransformerConfig(d=8, seq_len=10, n_states=3, n_heads=2, tied=False),
        TransformerConfig(d=8, seq_len=10, n_states=3, depth=2, mlp=False, tied=False),
        TransformerConfig(d=8, seq_len=10, n_states=3, depth=2, layer_norm=True, tied=False),
        TransformerConfig(
            d=12, seq_len=10, n_states=4, depth=2, n_heads=3, layer_norm=True, mlp=False
        ),  # fmt: skip
    ],
    ids=["2heads", "attn-only-depth2", "ln-depth2", "3heads-ln-attn-only"],
)
def test_forward_matches_reference_formulas(cfg):
    model = MarkovTransformer(cfg, n_runs=2).double()
    gaussian_(model, [1, 2], std=0.5)
    with torch.no_grad():
        model.bias.add_(0.1)
    x = torch.randint(0, cfg.n_states, (2, 3, 10), generator=torch.Generator().manual_seed(0))
    out = model(x)
    for r in range(2):
        for b in range(3):
            torch.testing.assert_close(out[r, b], reference_logits(model, r, x[r, b]))
    logits, atts = model(x, return_attention=True)
    torch.testing.assert_close(logits, out)
    shape = (2, 3, 10, 10) if cfg.n_heads == 1 else (2, 3, cfg.n_heads, 10, 10)
    assert all(a.shape == shape for a in atts)
    if not cfg.mlp:
        assert model.w1 is None and "w1" not in model.named_run_parameters()


def test_attention_only_model_counts_its_parameters():
    cfg = TransformerConfig(d=8, seq_len=10, n_states=3, depth=2, mlp=False, tied=False)
    m = MarkovTransformer(cfg, 1)
    # emb 24, pos 80, 4 x 2 x 64 attention, out 24, bias 3
    assert m.num_parameters_per_run() == 24 + 80 + 4 * 2 * 64 + 24 + 3


def tiny_icl_config(depth: int = 2) -> TransformerConfig:
    return TransformerConfig(d=8, seq_len=12, n_states=3, depth=depth, tied=False, layer_norm=True)


def test_in_context_training_logs_bayes_loss_strategies_scores_and_maps():
    tc = TrainConfig(steps=6, batch_size=4, lr=3e-3, schedule="constant", icl_steps=(0, 3, 6),
                     icl_map_len=5, probe_batch=8)  # fmt: skip
    res = train(tiny_icl_config(), tc, [0, 1], RandomChains(3, 1, 1.0))
    assert res.metrics["bayes_loss"].shape == (2, 6)
    assert np.all(np.isfinite(res.metrics["bayes_loss"]))
    assert res.icl["kl/unigram"].shape == (2, 3) and res.icl["prev_token"].shape == (2, 3, 2, 1)
    assert res.icl["maps"].shape == (2, 3, 2, 1, 5, 5) and res.icl["maps"].dtype == np.float16
    assert res.icl["map_x"].shape == (2, 3, 5)
    # the exact loss of a near-uniform model at step 0 is about ln 3, above the Bayes loss
    assert abs(res.icl["exact_loss"][0, 0] - math.log(3)) < 0.05
    assert np.all(res.icl["exact_loss"][:, 0] > res.icl["bayes_loss"][:, 0])
    rec = res.record(1)
    assert {"bayes_loss", "icl_steps", "icl/kl/bigram", "icl/maps"} <= set(rec)
    # a run does not depend on its batch neighbours
    alone = train(tiny_icl_config(), tc, [1], RandomChains(3, 1, 1.0))
    np.testing.assert_allclose(alone.metrics["exact_loss"][0], res.metrics["exact_loss"][1],
                               rtol=1e-5)  # fmt: skip


def test_binary_in_context_training_uses_the_sigmoid_model():
    cfg = TransformerConfig(d=8, seq_len=12, n_states=2, depth=1, layer_norm=True, tied=False)
    tc = TrainConfig(steps=3, batch_size=4, icl_steps=(3,), probe_batch=8)
    res = train(cfg, tc, [0], RandomChains(2, 3, 1.0))
    assert set(k for k in res.icl if k.startswith("kl/")) == {
        "kl/uniform", "kl/unigram", "kl/bigram", "kl/trigram", "kl/4-gram"
    }  # fmt: skip


def test_icl_steps_need_random_chain_data():
    from markovformer.markov import BinaryChain

    with pytest.raises(ValueError, match="icl_steps need random-chain data"):
        train(TransformerConfig(d=8, seq_len=8), TrainConfig(steps=2, icl_steps=(1,)), [0],
              BinaryChain(0.3, 0.4))  # fmt: skip
    with pytest.raises(ValueError, match="the model has n_states=2 but the prior has S=3"):
        train(TransformerConfig(d=8, seq_len=8), TrainConfig(steps=2), [0], RandomChains(3, 1))


def test_icl_specs_store_under_their_namespace_and_resume(tmp_path):
    prior = RandomChains(3, 1, 1.0)
    spec = RunSpec(chain=prior.spec(), model=tiny_icl_config(1),
                   train=TrainConfig(steps=4, batch_size=4, icl_steps=(0, 4), probe_batch=8),
                   keep_final_state=False, namespace="icl")  # fmt: skip
    assert spec.slug() == "random-S3-k1-alpha1.0_untied_L1_d8_N12_T4_gaussian_ln"
    out = run_specs([(spec, [0, 1])], tmp_path)
    assert (tmp_path / "icl" / spec.store(tmp_path).dir.name / "seed_0001.npz").exists()
    again = run_specs([(spec, [0, 1])], tmp_path)  # loads, trains nothing
    np.testing.assert_array_equal(out[0][1]["exact_loss"], again[0][1]["exact_loss"])
    assert "bayes_loss" in out[0][0] and "icl/kl/bigram" in out[0][0]


def test_chapter_ids_are_registered_and_listed(capsys):
    for exp_id in ("icl-mc", "icl-stages", "icl-heads", "icl-order"):
        exp = get(exp_id)
        assert exp.chapter == "08_in_context"
        for spec, seeds in exp.jobs(None, None):
            assert spec.namespace == "icl" and len(seeds) >= 3
    assert cli.main(["list"]) == 0
    assert "icl-order" in capsys.readouterr().out


def test_stage_steps_reads_the_order_of_the_stages():
    steps = np.array([0, 10, 20, 30, 40, 50])
    kls = {
        "uniform": np.array([0.0, 0.05, 0.09, 0.10, 0.11, 0.12]),
        "unigram": np.array([0.10, 0.02, 0.03, 0.08, 0.09, 0.10]),
        "bigram": np.array([0.20, 0.12, 0.10, 0.05, 0.02, 0.01]),
    }
    st = icl_exp.stage_steps(kls, steps)
    assert st["closest"] == ["uniform", "unigram", "unigram", "bigram", "bigram", "bigram"]
    assert st["unigram_from"] == 10 and st["bigram_from"] == 30 and st["unigram_steps"] == 2
    kls["bigram"][-1] = 0.5  # not closest at the end: no transition
    assert icl_exp.stage_steps(kls, steps)["bigram_from"] is None


def test_eval_steps_grid():
    assert icl_exp.eval_steps(100, fine_until=40, fine=20, coarse=30) == (0, 20, 40, 70, 100)
    assert icl_exp.eval_steps(30, fine_until=40, fine=20) == (0, 20, 30)
    assert icl_exp.eval_steps(2000)[:3] == (0, 25, 50) and len(icl_exp.eval_steps(2000)) == 51


def _fake_mc(
    one_layer_gap: float, two_layer_gap: float, transition: bool = True, unigram: bool = True
):
    """icl-mc results made by hand: 3 seeds, 100 steps, evaluations every 25 steps."""
    jobs = icl_exp._mc_jobs(3, 100)
    steps = np.array(icl_exp.eval_steps(100))  # 0, 25, 50, 75, 100
    results = []
    for sp, seeds in jobs:
        L = sp.model.depth
        gap = two_layer_gap if L == 2 else one_layer_gap
        big = (
            np.array([0.2, 0.1, 0.05, 0.01, 0.005]) if (L == 2 and transition) else np.full(5, 0.1)
        )
        rec = {
            "exact_loss": np.full(100, 0.9 + gap),
            "bayes_loss": np.full(100, 0.9),
            "icl_steps": steps,
            "icl/kl/uniform": np.array([0.0, 0.06, 0.1, 0.2, 0.2]),
            "icl/kl/unigram": np.array([0.1, 0.02, 0.08, 0.1, 0.1]) if unigram else np.full(5, 0.5),
            "icl/kl/bigram": big,
            "icl/prev_token": np.full((5, L, 1), 0.9),
            "icl/induction": np.full((5, L, 1), 0.95),
        }
        results.append({s: rec for s in seeds})
    return results, jobs


def test_stage_and_head_claims_pass_and_fail_on_hand_made_runs():
    ok = icl_exp.stage_claims(None, *_fake_mc(one_layer_gap=0.1, two_layer_gap=0.004))
    assert [c.passed for c in ok] == [True, True, True, True]
    assert ok[0].measured == 3  # all three seeds: unigram closest at step 25,
    assert ok[1].measured == 3  # and bigram from 75 on
    bad = icl_exp.stage_claims(None, *_fake_mc(one_layer_gap=0.004, two_layer_gap=0.004))
    assert [c.passed for c in bad] == [True, True, True, False]  # one layer reaching Bayes
    none = icl_exp.stage_claims(None, *_fake_mc(0.1, 0.03, transition=False))
    assert [c.passed for c in none] == [True, False, False, True]  # no transition
    skip = icl_exp.stage_claims(None, *_fake_mc(0.1, 0.004, unigram=False))
    assert [c.passed for c in skip] == [False, True, True, True]  # no unigram stage
    heads = icl_exp.head_claims(None, *_fake_mc(0.1, 0.004))
    assert all(c.passed for c in heads)


def test_chapter_pipeline_on_a_tiny_run(tmp_path):
    """icl-mc at 30 steps and 2 seeds: stored, reloaded, the live data, figures and the trained
    models (their predictions must match the stored final loss path: same weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, jobs = icl_exp.MC.run(tmp_path, n_seeds=2, steps=30)
    again, _ = icl_exp.MC.load(tmp_path, n_seeds=2, steps=30)
    np.testing.assert_array_equal(again[1][0]["icl/maps"], results[1][0]["icl/maps"])
    data = icl_exp.step_explorer_data(results, jobs, depth=2, seed=1)
    P = len(data["steps"])
    assert data["steps"].tolist() == [0, 25, 30] and data["maps"].shape == (P, 2, 1, 24, 24)
    assert set(data["kl"]) == {"uniform", "unigram", "bigram"} and len(data["closest"]) == P
    assert data["symbols"].shape == (24,) and data["gap"].shape == (P,)
    plt.close(icl_exp.step_explorer_figure(data, 26))
    model = icl_exp.trained_models(results, jobs)
    torch.testing.assert_close(model.wq[1], torch.as_tensor(results[1][1]["final/wq"]))
    curves = icl_exp.position_curves(results, jobs, n_sequences=20)
    assert curves["model"].shape == (2, 100) and curves["bayes"].shape == (100,)
    plt.close(icl_exp.plot_position_curves(curves))
    for exp in (icl_exp.MC, icl_exp.STAGES, icl_exp.HEADS):
        plt.close(exp.figure(results, jobs))
        assert exp.summary(results, jobs)
    with pytest.raises(ValueError, match="without their final weights"):
        icl_exp.trained_models(results, jobs, depth=1)


def test_worker_processes_give_the_runs_of_one_process(tmp_path):
    """run_specs(workers=2) trains independent chunks in spawned processes: same records."""
    prior = RandomChains(3, 1, 1.0)
    tc = TrainConfig(steps=5, batch_size=4, icl_steps=(0, 5), probe_batch=8)
    specs = [RunSpec(chain=prior.spec(), model=tiny_icl_config(L), train=tc,
                     keep_final_state=False, namespace="icl") for L in (1, 2)]  # fmt: skip
    jobs = [(sp, [0, 1]) for sp in specs]
    seq = run_specs(jobs, tmp_path / "one")
    logs: list[str] = []
    par = run_specs(jobs, tmp_path / "two", workers=2, log=logs.append)
    assert any("2 local worker processes" in m for m in logs)  # the Dask LocalCluster
    for a, b in zip(seq, par, strict=True):
        for s in (0, 1):
            for key in ("exact_loss", "bayes_loss", "icl/kl/bigram"):
                np.testing.assert_array_equal(a[s][key], b[s][key])
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        run_specs(jobs, tmp_path / "three", workers=0)


@pytest.mark.parametrize(
    "exp_id", ["icl-mc", "icl-stages", "icl-heads", "icl-ablation", "icl-order"]
)
def test_committed_chapter8_artifacts_load_verify_and_report(exp_id):
    """The runs chapter 8 loads are under book/data/icl with intact checksums, and each id's
    summary is JSON (`markovformer report` prints it)."""
    import json
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "book" / "data"
    exp = get(exp_id)
    results, jobs = exp.load(data)
    for (spec, seeds), res in zip(jobs, results, strict=True):
        assert sorted(res) == sorted(seeds)
        assert spec.store(data).dir.parent.name == "icl"
        assert spec.store(data).verify() == []
    json.dumps(exp.summary(results, jobs))
