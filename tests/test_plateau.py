"""Chapter 9: the doubly stochastic prior, the planted previous-token head, the log-rank test and
the escape statistics of the plateau experiments."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from markovformer import analysis
from markovformer.experiments import plateau as P
from markovformer.experiments.base import RunSpec, data_from_spec
from markovformer.experiments.icl import icl_config
from markovformer.icl import (
    PRIORS,
    SINKHORN_TOL,
    DoublyStochasticChains,
    RandomChains,
    bayes_risk,
    ngram_predictor,
    posterior_predictive_mc,
    sinkhorn,
)
from markovformer.init import (
    initialise,
    layer_one_margin,
    planted_basis,
    planted_code,
    planted_rotation,
    positional_kernel,
)
from markovformer.interp import offset_margins, previous_token_score
from markovformer.model import MarkovTransformer
from markovformer.rng import make_generator

# --------------------------------------------------------------------------------------------
# Sinkhorn and the doubly stochastic prior
# --------------------------------------------------------------------------------------------


def test_sinkhorn_makes_rows_and_columns_sum_to_one():
    M = torch.rand(500, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M = M + 1e-3
    P_ = sinkhorn(M)
    assert (P_.sum(-1) - 1).abs().max() <= SINKHORN_TOL
    assert (P_.sum(-2) - 1).abs().max() <= SINKHORN_TOL
    # the limit is D1 M D2: the ratios M_ij M_kl / (M_il M_kj) are invariant under scalings
    cross = lambda A: A[:, 0, 0] * A[:, 1, 1] / (A[:, 0, 1] * A[:, 1, 0])  # noqa: E731
    torch.testing.assert_close(cross(P_), cross(M), rtol=1e-9, atol=0)
    # a doubly stochastic matrix is a fixed point
    torch.testing.assert_close(sinkhorn(P_), P_, rtol=0, atol=1e-9)


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        sinkhorn(torch.ones(2, 3))
    with pytest.raises(ValueError, match="positive"):
        sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_doubly_stochastic_prior_draws_doubly_stochastic_kernels():
    prior = DoublyStochasticChains(3, 1, 1.0)
    K = prior.draw_kernels(2000, make_generator(0, "test"))
    assert K.shape == (2000, 3, 3) and K.dtype == torch.float64
    assert (K.sum(-1) - 1).abs().max() <= SINKHORN_TOL
    assert (K.sum(-2) - 1).abs().max() <= SINKHORN_TOL
    assert K.min() > 0
    # exchangeable symbols: every entry has mean 1/S
    assert np.allclose(K.mean(0).numpy(), 1 / 3, atol=0.01)


def test_doubly_stochastic_chains_have_a_uniform_stationary_law():
    prior = DoublyStochasticChains(3, 1, 1.0)
    x, K = prior.sample(4000, 60, make_generator(1, "test"))
    # uniform start and a doubly stochastic kernel: every position is uniform
    freq = torch.stack([(x == j).double().mean(0) for j in range(3)])
    assert (freq - 1 / 3).abs().max() < 0.035
    # the transitions follow each sequence's kernel
    law = prior.next_law(x[:, :-1], K)
    onehot = torch.nn.functional.one_hot(x[:, 1:], 3).double()
    assert (onehot.mean((0, 1)) - law.mean((0, 1))).abs().max() < 0.01


def test_prior_spec_round_trips_and_names_the_prior():
    ds = DoublyStochasticChains(3, 1, 0.5)
    spec = ds.spec()
    assert spec == {"kind": "random", "S": 3, "k": 1, "alpha": 0.5, "prior": "doubly-stochastic"}
    back = RandomChains.from_spec(spec)
    assert isinstance(back, DoublyStochasticChains) and back.alpha == 0.5
    assert type(data_from_spec(RandomChains(3, 1, 1.0).spec())) is RandomChains  # unchanged
    assert "prior" not in RandomChains(3, 1, 1.0).spec()  # older artifacts keep their hash
    assert set(PRIORS) == {"dirichlet", "doubly-stochastic"}
    with pytest.raises(ValueError, match="unknown prior 'nope'"):
        RandomChains.from_spec({**spec, "prior": "nope"})
    with pytest.raises(ValueError, match="order \\(k\\) must be 1"):
        DoublyStochasticChains(3, 2, 1.0)


def test_posterior_mc_recovers_the_add_alpha_predictor_for_dirichlet_rows():
    """For Dirichlet rows the posterior predictive is known exactly (add-alpha counts): the
    Monte-Carlo estimator must find it."""
    prior = RandomChains(3, 1, 1.0)
    x, _ = prior.sample(12, 40, make_generator(2, "test"))
    pos = [0, 3, 10, 25]
    pred, ess = posterior_predictive_mc(prior, x, pos, n_draws=100_000, seed=1)
    exact = ngram_predictor(x, 3, 1, 1.0)[:, pos]
    assert pred.shape == (12, 4, 3) and ess.shape == (12, 4)
    torch.testing.assert_close(pred.sum(-1), torch.ones(12, 4, dtype=torch.float64))
    assert (pred - exact).abs().max() < 0.02
    assert float(ess[:, 0].min()) > 99_000  # no transition seen yet: every weight equal


def test_posterior_mc_for_the_doubly_stochastic_prior_is_not_add_alpha():
    prior = DoublyStochasticChains(3, 1, 1.0)
    x, _ = prior.sample(40, 30, make_generator(3, "test"))
    pred, ess = posterior_predictive_mc(prior, x, [0, 20], n_draws=50_000, seed=0)
    addalpha = ngram_predictor(x, 3, 1, 1.0)[:, [0, 20]]
    torch.testing.assert_close(pred[:, 0], addalpha[:, 0], rtol=0, atol=5e-3)  # 1/3 each
    kl = (pred[:, 1] * (pred[:, 1].log() - addalpha[:, 1].log())).sum(-1)
    assert float(kl.mean()) > 0.005  # the reference is measurably off
    with pytest.raises(ValueError, match="positions must lie in"):
        posterior_predictive_mc(prior, x, [30], n_draws=10)


def test_unigram_strategy_is_no_better_than_uniform_under_the_doubly_stochastic_prior():
    r = bayes_risk(DoublyStochasticChains(3, 1, 1.0), 100, n_sequences=2000, seed=0)
    assert r["unigram"].mean() > r["uniform"].mean()
    r0 = bayes_risk(RandomChains(3, 1, 1.0), 100, n_sequences=2000, seed=0)
    assert r0["unigram"].mean() < r0["uniform"].mean() - 0.05


# --------------------------------------------------------------------------------------------
# The planted previous-token head
# --------------------------------------------------------------------------------------------


def test_positional_kernel_is_the_inner_product_of_the_code():
    z = planted_code(100)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)
    gram = z @ z.T
    n, i = np.meshgrid(np.arange(100), np.arange(100), indexing="ij")
    assert np.allclose(gram, positional_kernel(n - i), atol=1e-12)
    for offset in (1, 2):
        R = planted_rotation(offset)
        assert np.allclose(R @ R.T, np.eye(12), atol=1e-12)
        assert np.allclose(z[:-offset] @ R.T, z[offset:], atol=1e-12)  # R z_i = z_(i + offset)


def test_positional_kernel_peaks_at_zero_and_keeps_offsets_one_and_two_low():
    k = positional_kernel(np.arange(1, 99))
    assert positional_kernel(0) == pytest.approx(1.0)
    assert k.max() < 0.36  # margin of the peak over every other distance >= 0.64
    assert k[0] < k.mean() and k[1] < k.mean()  # |delta| = 1, 2 below the average distance


def test_planted_basis_is_orthonormal_and_orthogonal_to_ones_and_tokens():
    tokens = np.random.default_rng(0).normal(0, 0.02, (3, 16))
    U = planted_basis(tokens, 12)
    assert U.shape == (16, 12)
    assert np.allclose(U.T @ U, np.eye(12), atol=1e-12)
    assert np.abs(U.T @ np.ones(16)).max() < 1e-12
    assert np.abs(U.T @ tokens.T).max() < 1e-12
    with pytest.raises(ValueError, match="only 12 dimensions"):
        planted_basis(tokens, 13)


def _step0(seeds, **kw):
    cfg = icl_config(2)
    model = MarkovTransformer(cfg, len(seeds))
    initialise(model, seeds, **kw)
    x, _ = RandomChains(3, 1, 1.0).sample(48, 100, make_generator(9, "test"))
    X = x.unsqueeze(0).expand(len(seeds), -1, -1).contiguous()
    with torch.no_grad():
        _, atts = model(X, return_attention=True)
    return model, atts


@pytest.mark.parametrize(("margin", "offset"), [(1.0, 1), (3.0, 1), (3.0, 2)])
def test_planted_margin_at_step_zero_is_the_intended_one(margin, offset):
    """Measured on the model's own layer-1 attention (its logits' differences), on sequences of
    the prior the runs train on: the intended margin, averaged over positions and seeds."""
    seeds = [0, 1, 2, 3]
    _, atts = _step0(seeds, name="planted", margin=margin, offset=offset)
    got = offset_margins(atts[0], offset)  # (R, B, N - offset)
    assert float(got.mean()) == pytest.approx(margin, rel=0.03)
    assert float((got > 0).double().mean()) > 0.99  # the target key wins at (almost) every query
    other = 3 - offset  # the other small offset is not favoured
    assert float(offset_margins(atts[0], other).mean()) < -0.5 * margin
    assert float(offset_margins(atts[1], offset).mean()) < 0.1  # layer 2 is untouched


def test_planted_init_changes_only_positions_and_layer_one_queries_and_keys():
    seeds = [5, 6]
    planted, _ = _step0(seeds, name="planted", margin=3.0)
    standard, _ = _step0(seeds, name="gaussian")
    for name, p in planted.named_run_parameters().items():
        q = getattr(standard, name)
        if name == "pos":
            assert not torch.equal(p, q)
            # the code has the norm of a Gaussian position row on average: 0.02 sqrt(16)
            torch.testing.assert_close(p.norm(dim=-1), torch.full_like(p[..., 0], 0.08))
        elif name in ("wq", "wk"):
            assert not torch.equal(p[:, 0], q[:, 0])
            assert torch.equal(p[:, 1], q[:, 1])
        else:
            assert torch.equal(p, q), name


def test_margin_zero_leaves_the_attention_weights_gaussian():
    planted, atts = _step0([0, 1], name="planted", margin=0.0)
    standard, _ = _step0([0, 1], name="gaussian")
    assert torch.equal(planted.wq, standard.wq) and torch.equal(planted.wk, standard.wk)
    assert abs(float(offset_margins(atts[0], 1).mean())) < 0.05


def test_layer_one_margin_matches_the_model_attention():
    model, atts = _step0([0], name="planted", margin=1.0)
    x, _ = RandomChains(3, 1, 1.0).sample(48, 100, make_generator(9, "test"))
    got = layer_one_margin(model, 0, model.wq[0, 0].double(), model.wk[0, 0].double(), x)
    assert got == pytest.approx(float(offset_margins(atts[0], 1).mean()), abs=1e-4)


def test_planted_init_rejects_bad_arguments():
    model = MarkovTransformer(icl_config(2), 1)
    with pytest.raises(ValueError, match="margin must be"):
        initialise(model, [0], "planted", margin=-1.0)
    with pytest.raises(ValueError, match="offset must be"):
        initialise(model, [0], "planted", offset=0)
    wide = MarkovTransformer(icl_config(2).__class__(d=4, seq_len=10, n_states=3, depth=2), 1)
    with pytest.raises(ValueError, match="no room"):
        initialise(wide, [0], "planted")


def test_offset_margins_by_hand():
    att = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.1, 0.6, 0.3]])
    m = offset_margins(att, 1)
    assert m.shape == (2,)
    assert float(m[0]) == pytest.approx(math.log(0.7 / 0.3))
    assert float(m[1]) == pytest.approx(math.log(0.6 / 0.3))
    assert float(offset_margins(att, 2)[0]) == pytest.approx(math.log(0.1 / 0.6))
    with pytest.raises(ValueError, match="offset must be"):
        offset_margins(att, 3)


def test_previous_token_score_rises_with_the_margin():
    scores = [float(previous_token_score(_step0([0, 1], name="planted", margin=m)[1][0]).mean())
              for m in (0.0, 1.0, 3.0)]  # fmt: skip
    assert scores[0] < 0.05 < scores[1] < scores[2]


# --------------------------------------------------------------------------------------------
# The log-rank test
# --------------------------------------------------------------------------------------------


def _logrank_by_hand(ta, oa, tb, ob):
    """Textbook log-rank Z (Mantel-Haenszel, hypergeometric variance with ties)."""
    ta, oa, tb, ob = map(np.asarray, (ta, oa, tb, ob))
    times = np.unique(np.concatenate([ta[oa.astype(bool)], tb[ob.astype(bool)]]))
    O = E = V = 0.0
    for t in times:
        na, nb = (ta >= t).sum(), (tb >= t).sum()
        da = ((ta == t) & oa.astype(bool)).sum()
        d = da + ((tb == t) & ob.astype(bool)).sum()
        n = na + nb
        O += da
        E += d * na / n
        if n > 1:
            V += d * (na / n) * (nb / n) * (n - d) / (n - 1)
    return (O - E) / math.sqrt(V)


def test_logrank_matches_the_textbook_statistic_with_ties_and_censoring():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ta = rng.integers(1, 8, 12) * 25.0
        tb = rng.integers(3, 10, 10) * 25.0
        oa, ob = rng.random(12) < 0.8, rng.random(10) < 0.7
        res = analysis.logrank(ta, oa, tb, ob)
        z = _logrank_by_hand(ta, oa, tb, ob)
        assert res.statistic == pytest.approx(z, rel=1e-9)
        assert res.pvalue == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_logrank_sign_and_degenerate_cases():
    early = analysis.logrank([100, 150, 200, 250], [1, 1, 1, 1], [3000] * 4, [0] * 4)
    assert early.statistic > 0 and early.pvalue < 0.05 and early.observed_a == 4
    none = analysis.logrank([3000] * 3, [0] * 3, [3000] * 3, [0] * 3)
    assert (none.statistic, none.pvalue, none.events) == (0.0, 1.0, 0)
    same = analysis.logrank([100, 100], [1, 1], [100, 100], [1, 1])
    assert same.pvalue == 1.0
    with pytest.raises(ValueError, match="non-empty 1-D"):
        analysis.logrank([], [], [1.0], [True])


# --------------------------------------------------------------------------------------------
# The experiments
# --------------------------------------------------------------------------------------------


def test_arms_are_distinct_configurations_and_found_back():
    specs = {k: P.arm_spec(a) for k, a in P.ARMS.items()}
    assert len({sp.store("/tmp").hash for sp in specs.values()}) == len(specs)
    for key, sp in specs.items():
        assert P.arm_of(sp) == key
        assert isinstance(sp, RunSpec) and sp.namespace == "plateau"
        assert sp.train.icl_steps[-1] == P.PLATEAU_T
    assert specs["doubly stochastic"].chain["prior"] == "doubly-stochastic"
    assert specs["one layer"].model.depth == 1 and specs["one layer"].train.icl_map_len == 0
    assert dict(specs["offset 2"].init_kwargs) == {"margin": 3.0, "offset": 2}
    assert "std" not in dict(specs["standard"].init_kwargs)  # chapter 8's default init
    for exp_id, arms in P.EXPERIMENT_ARMS.items():
        for a, b in P.COMPARISONS[exp_id]:
            assert a in arms and b in arms


def _fake_run(kl_bigram: np.ndarray, steps: np.ndarray) -> dict:
    return {"icl_steps": steps, "icl/kl/uniform": np.full(len(steps), 0.2),
            "icl/kl/unigram": np.full(len(steps), 0.05), "icl/kl/bigram": kl_bigram}  # fmt: skip


def test_escape_times_are_the_chapter_8_event_censored_at_the_last_step():
    steps = np.arange(0, 201, 25)
    big = np.full(len(steps), 0.1)
    escaped = big.copy()
    escaped[4:] = 0.01  # closest from step 100 on
    blip = big.copy()
    blip[2] = 0.01  # closest once, then not: no escape
    res = {0: _fake_run(escaped, steps), 1: _fake_run(blip, steps), 2: _fake_run(big, steps)}
    times, observed = P.escape_times(res)
    assert times.tolist() == [100.0, 200.0, 200.0]
    assert observed.tolist() == [True, False, False]
    km = P.survival(res)
    assert km.runs == 3 and km.escaped == 1 and km.median is None and km.horizon == 200


def _fake_results(arms=("standard", "m = 3"), seeds=(0, 1, 2), T=200, m=12):
    """Records of the shape the plateau runs store, for the given arms."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, T + 1, 25)
    P_ = len(steps)
    jobs, results = [], []
    for a in arms:
        spec = P.arm_spec(P.ARMS[a], T)
        jobs.append((spec, list(seeds)))
        res = {}
        for s in seeds:
            z = rng.normal(0, 2, (P_, 2, 1, m, m))
            z[..., ~np.tri(m, dtype=bool)] = -np.inf
            att = np.exp(z - z.max(-1, keepdims=True))
            att = (att / att.sum(-1, keepdims=True)).astype(np.float16)
            big = np.full(P_, 0.1, np.float32)
            big[2 + s + (a == "standard") * 3 :] = 0.01
            res[s] = {
                "icl_steps": steps, "icl/kl/uniform": np.full(P_, 0.2, np.float32),
                "icl/kl/unigram": np.full(P_, 0.05, np.float32), "icl/kl/bigram": big,
                "icl/exact_loss": (0.9 + 0.1 * rng.random(P_)).astype(np.float32),
                "icl/bayes_loss": np.full(P_, 0.89, np.float32),
                "icl/prev_token": rng.random((P_, 2, 1)).astype(np.float32),
                "icl/induction": rng.random((P_, 2, 1)).astype(np.float32),
                "icl/induction_uniform": np.full(P_, 0.4, np.float32),
                "icl/maps": att, "icl/map_x": rng.integers(0, 3, (1, m)).astype(np.int8),
            }  # fmt: skip
        results.append(res)
    return results, jobs


def test_escape_table_and_logrank_on_fake_runs():
    results, jobs = _fake_results()
    table = P.escape_table(results, jobs)
    assert table["m = 3"]["escape steps"] == [50, 75, 100]
    assert table["standard"]["escape steps"] == [125, 150, 175]
    assert table["m = 3"]["escaped"] == 3 and table["m = 3"]["censored"] == 0
    assert table["m = 3"]["median"] == 75.0
    tests = P.logrank_table(results, jobs, [("m = 3", "standard")])
    assert tests[("m = 3", "standard")].statistic > 0


def test_explorer_data_feeds_the_live_figure_and_the_panel():
    from markovformer import live

    results, jobs = _fake_results()
    runs = P.explorer_runs(results, jobs, arms=("standard", "m = 3"))
    assert [(r["arm"], r["seed"]) for r in runs] == [
        ("standard", 0), ("standard", 1), ("standard", 2), ("m = 3", 0), ("m = 3", 1),
        ("m = 3", 2)]  # fmt: skip
    d = runs[3]
    assert d["escape"] == 50 and d["maps"].shape == (9, 2, 1, 12, 12)
    lv = P.prior_levels("dirichlet", n_sequences=500)
    assert d["unigram_gap"] == pytest.approx(
        P.prior_levels()["unigram"] - P.prior_levels()["bayes"]
    )
    assert lv["unigram"] > lv["bayes"]
    fig = live.plateau_explorer(runs, "m = 3", 1, 100)
    assert set(fig.controls) == {"arm", "seed", "step"}
    state = live.plateau_state(runs, "m = 3", 1, 110)  # nearest stored step: 100
    assert state["props"]["marker.location"] == 100
    assert state["sources"]["escape"]["x"] == [75]
    assert state["titles"]["klFig"].endswith("escape at step 75")
    assert P.explorer_figure(d, 100) is not None
    assert P.plot_maps(results, jobs, step=100) is not None
    with pytest.raises(ValueError, match="not a stored run"):
        live.plateau_state(runs, "m = 1", 0, 0)
    import matplotlib.pyplot as plt

    plt.close("all")


PLATEAU_BREAKS = {  # wrong versions of update.plateau: each must be caught
    "the arm ignored": ("x.arm === arm && x.seed === seed", "x.seed === seed"),
    "ties to the later step": ("< Math.abs(s[k] - want)) { k = i; }",
                               "<= Math.abs(s[k] - want)) { k = i; }"),
    "curves kept from the previous run": ("if (shown.get(M.curves) !== r) {",
                                          "if (!shown.has(M.curves)) {"),
    "layers swapped": ("const rows = L.iclMap(r, k, l);", "const rows = L.iclMap(r, k, 1 - l);"),
}  # fmt: skip


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("broken", [None, *PLATEAU_BREAKS])
def test_plateau_callback_over_moves_and_broken_versions_are_caught(broken, tmp_path, monkeypatch):
    """One page, several moves, in node: what the figure shows is the package's state; a wrong
    callback (each of PLATEAU_BREAKS) is caught by the same comparison."""
    import live_compare
    from live_compare import assert_state, encode, spec

    from markovformer import live

    results, jobs = _fake_results()
    runs = P.explorer_runs(results, jobs, arms=("standard", "m = 3"))
    fig = live.plateau_explorer(runs, "standard", 0, 50)
    if broken is not None:
        live_compare.break_live_js(monkeypatch, tmp_path, *PLATEAU_BREAKS[broken])
    moves = [{"step": 60}, {"arm": "m = 3"}, {"step": 137.5}, {"seed": "2"}, {"arm": "standard"},
             {"step": 0}]  # fmt: skip
    values, expected = {"arm": "standard", "seed": "0", "step": 50}, []
    for move in moves:
        values = {**values, **move}
        expected.append(live.plateau_state(runs, values["arm"], int(values["seed"]),
                                           values["step"]))  # fmt: skip
    models: dict = {}
    M = encode(dict(fig.callback.args), models)
    code = ("(L, d) => d.moves.map((mv) => { for (const [k, v] of Object.entries(mv)) "
            "d.M[k].value = v; L.update.plateau(d.M); return mfShown(d.M, d.spec); })")  # fmt: skip
    shown, _ = live_compare.run_node(code, {"M": M, "moves": moves, "spec": spec(expected[0])},
                                     tmp_path, models)  # fmt: skip
    problems = 0
    for move, got, exp in zip(moves, shown, expected, strict=True):
        try:
            assert_state("plateau", got, exp, where=f"plateau after {move}")
        except AssertionError:
            if broken is None:
                raise
            problems += 1
    assert broken is None or problems > 0


def test_matched_alpha_gives_the_bigram_the_doubly_stochastic_advantage():
    """The control arm of plateau-prior: Dirichlet rows with alpha = MATCHED_ALPHA leave the
    bigram the same advantage over the uniform prediction as doubly stochastic kernels, and the
    unigram strategy a positive one (where the doubly stochastic prior leaves it none)."""
    ds = P.prior_levels("doubly-stochastic", n_sequences=2000)
    a = P.prior_levels("dirichlet", n_sequences=2000, alpha=P.MATCHED_ALPHA)
    assert abs((ds["uniform"] - ds["bigram"]) - (a["uniform"] - a["bigram"])) < 0.01
    assert a["uniform"] - a["unigram"] > 0.03
    assert ds["uniform"] - ds["unigram"] < 0
    assert P.arm_spec(P.ARMS["alpha 1.6"]).chain["alpha"] == P.MATCHED_ALPHA
