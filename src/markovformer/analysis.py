"""Summaries of training curves: escape from the unigram plateau, success, gap fractions.

A curve is the exact conditional loss of one run against the step (index 0 = step 1). For a chain
with unigram loss U and entropy rate H (gap U - H > 0):

* the run has **escaped** the unigram plateau at step t once its loss fell below the midpoint
  U - (U - H) / 2 at some step <= t (the exact loss of one batch has a standard deviation far below
  half the gap, so this is not triggered by noise: see chapter 1);
* the run **succeeded** if its final loss (mean of the last ``window`` steps) is within ``tol``
  (default 0.005 nats) of H;
* the **gap fraction** (L - H) / (U - H) is 0 at the global minimum and 1 at the unigram one.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "escape_step",
    "on_plateau",
    "final_loss",
    "succeeded",
    "first_within",
    "gap_fraction",
    "mean_std",
    "outcome",
]


def _midpoint(unigram: float, rate: float) -> float:
    if not unigram > rate:
        raise ValueError(f"need unigram > entropy rate, got {unigram!r} <= {rate!r}")
    return unigram - 0.5 * (unigram - rate)


def escape_step(curve: np.ndarray, unigram: float, rate: float) -> int | None:
    """First step (1-based) at which the loss is below the midpoint of the gap; None if never."""
    below = np.flatnonzero(np.asarray(curve) < _midpoint(unigram, rate))
    return int(below[0]) + 1 if below.size else None


def on_plateau(curves: np.ndarray, step: int, unigram: float, rate: float) -> np.ndarray:
    """For each curve (rows), True if it has not escaped by ``step`` (1-based)."""
    curves = np.atleast_2d(curves)
    if not 1 <= step <= curves.shape[1]:
        raise ValueError(f"step must be in [1, {curves.shape[1]}], got {step}")
    return ~np.any(curves[:, :step] < _midpoint(unigram, rate), axis=1)


def final_loss(curves: np.ndarray, window: int = 20) -> np.ndarray:
    """Mean of the last ``window`` steps of each curve."""
    curves = np.atleast_2d(curves)
    return curves[:, -window:].mean(axis=1)


def succeeded(curves: np.ndarray, rate: float, tol: float = 0.005, window: int = 20) -> np.ndarray:
    """True for curves whose final loss is within ``tol`` of the entropy rate."""
    return final_loss(curves, window) <= rate + tol


def first_within(
    curves: np.ndarray, level: float, tol: float = 0.005, window: int = 20
) -> list[int | None]:
    """For each curve, the first step (1-based) at which the mean of the last ``window`` steps is
    within ``tol`` of ``level`` (the step that ends that window); None if it never is."""
    curves = np.atleast_2d(curves)
    running = np.lib.stride_tricks.sliding_window_view(curves, window, axis=1).mean(-1)
    hit = np.abs(running - level) <= tol
    return [int(np.argmax(h)) + window if h.any() else None for h in hit]


def gap_fraction(loss: np.ndarray, unigram: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """(loss - H) / (U - H): 0 at the bigram (global) minimum, 1 at the unigram one."""
    loss, unigram, rate = (np.asarray(a, dtype=float) for a in (loss, unigram, rate))
    gap = unigram - rate
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 1e-9, (loss - rate) / np.where(gap > 1e-9, gap, 1.0), np.nan)


def mean_std(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over runs (rows), ignoring NaN (stopped runs)."""
    curves = np.atleast_2d(curves)
    return np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)


def outcome(curves: np.ndarray, rate: float, unigram: float, tol: float = 0.005) -> dict:
    """Final losses of runs (rows) and how many ended at the entropy rate or the unigram loss."""
    curves = np.atleast_2d(curves)
    final = final_loss(curves)
    return {
        "final_loss": [round(float(v), 4) for v in final],
        "reached_bigram": int(np.sum(final <= rate + tol)),
        "at_unigram": int(np.sum(np.abs(final - unigram) < tol)),
        "runs": int(curves.shape[0]),
    }
