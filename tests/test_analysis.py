"""Summaries of training curves on hand-made curves whose answers are known."""

import numpy as np
import pytest

from markovformer import analysis

RATE, UNI = 0.6, 0.7  # midpoint 0.65


def _curve(drop_at: int, length: int = 100) -> np.ndarray:
    """At the unigram loss, then at the entropy rate from step ``drop_at`` (1-based) on."""
    c = np.full(length, UNI)
    c[drop_at - 1 :] = RATE
    return c


def test_escape_step_and_plateau():
    curves = np.stack([_curve(30), _curve(80), np.full(100, UNI)])
    assert [analysis.escape_step(c, UNI, RATE) for c in curves] == [30, 80, None]
    np.testing.assert_array_equal(analysis.on_plateau(curves, 29, UNI, RATE), [True, True, True])
    np.testing.assert_array_equal(analysis.on_plateau(curves, 30, UNI, RATE), [False, True, True])
    with pytest.raises(ValueError, match="step must be in"):
        analysis.on_plateau(curves, 101, UNI, RATE)
    with pytest.raises(ValueError, match="unigram > entropy rate"):
        analysis.escape_step(curves[0], RATE, UNI)


def test_first_within_is_the_end_of_the_first_window_within_tolerance():
    curves = np.stack([_curve(30), _curve(95), np.full(100, UNI)])
    # window 20: the mean over steps 30..49 is the first one at the rate
    assert analysis.first_within(curves, RATE, tol=0.004, window=20) == [49, None, None]
    # a loose tolerance accepts a window that is partly on the plateau: 1 of 20 steps at +0.1
    assert analysis.first_within(curves[:1], RATE, tol=0.0051, window=20) == [48]
    assert analysis.first_within(curves[2], UNI) == [20]


def test_success_final_loss_and_outcome():
    curves = np.stack([_curve(30), _curve(95), np.full(100, UNI)])
    np.testing.assert_allclose(analysis.final_loss(curves, window=20), [RATE, 0.67, UNI])
    np.testing.assert_array_equal(analysis.succeeded(curves, RATE), [True, False, False])
    out = analysis.outcome(curves, RATE, UNI)
    assert out == {"final_loss": [RATE, 0.67, UNI], "reached_bigram": 1, "at_unigram": 1, "runs": 3}
    np.testing.assert_allclose(analysis.gap_fraction([RATE, 0.65, UNI], UNI, RATE), [0, 0.5, 1])
    assert np.isnan(analysis.gap_fraction(0.5, 0.5, 0.5))


def test_kaplan_meier_without_censoring_is_the_empirical_survival():
    times = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    km = analysis.kaplan_meier(times, np.ones(8, bool))
    for t in range(0, 11):
        assert km.at(t) == pytest.approx(np.mean(times > t))
    assert km.median == 3  # first step with at most half the runs left (4 of 8 after step 3)
    assert np.all(km.low <= km.surviving + 1e-12) and np.all(km.surviving <= km.high + 1e-12)
    assert km.median_low <= km.median <= km.median_high


def test_kaplan_meier_with_censoring_matches_the_product_limit_by_hand():
    # events at 5, 8, 12; censored at 8 and three times at 20 (the horizon)
    times = np.array([5, 8, 8, 12, 20, 20, 20])
    observed = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    km = analysis.kaplan_meier(times, observed, horizon=20)
    s5 = 6 / 7
    s8 = s5 * (1 - 1 / 6)  # 6 at risk at 8 (the censored one leaves after)
    s12 = s8 * (1 - 1 / 4)
    assert km.at(4) == 1 and km.at(5) == pytest.approx(s5) and km.at(8) == pytest.approx(s8)
    assert km.at(20) == pytest.approx(s12)
    assert s12 > 0.5 and km.median is None  # never at or below 1/2: the median is > 20
    assert "> 20" in km.describe()
    assert km.summary()["censored"] == 4


def test_censored_runs_raise_the_median_above_the_naive_one():
    """Half the runs never escape: the median over escaped runs only is biased low."""
    T = 1000
    curves = np.full((10, T), 0.66)
    for i, s in enumerate([100, 200, 300, 400, 500]):
        curves[i, s - 1 :] = 0.62
    km = analysis.plateau_survival(curves, unigram=0.6663, rate=0.6190)
    naive = np.median([100, 200, 300, 400, 500])
    assert km.escaped == 5 and km.runs == 10 and km.horizon == T
    assert naive == 300 and km.median == 500  # S drops to 0.5 at the fifth escape
    times, observed = analysis.escape_times(curves, 0.6663, 0.6190)
    assert list(times[:5]) == [100, 200, 300, 400, 500] and not observed[5:].any()
    assert np.all(times[5:] == T)


def test_kaplan_meier_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D arrays of one shape"):
        analysis.kaplan_meier(np.array([1, 2]), np.array([True]))
    with pytest.raises(ValueError, match="confidence must be in"):
        analysis.kaplan_meier(np.array([1]), np.array([True]), confidence=1.5)
    km = analysis.kaplan_meier(np.array([10, 10]), np.array([False, False]))
    assert km.median is None and km.at(10) == 1.0
