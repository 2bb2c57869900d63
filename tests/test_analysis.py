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
