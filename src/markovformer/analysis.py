"""Summaries of training curves: escape from the unigram plateau, success, gap fractions.

A curve is the exact conditional loss of one run against the step (index 0 = step 1). For a chain
with unigram loss U and entropy rate H (gap U - H > 0):

* the run has **escaped** the unigram plateau at step t once its loss fell below the midpoint
  U - (U - H) / 2 at some step <= t (the exact loss of one batch has a standard deviation far below
  half the gap, so this is not triggered by noise: see chapter 1);
* the run **succeeded** if its final loss (mean of the last ``window`` steps) is within ``tol``
  (default 0.005 nats) of H;
* the **gap fraction** (L - H) / (U - H) is 0 at the global minimum and 1 at the unigram one.

Escape is an event in time, and a run that has not escaped by its last step T is **right-censored**
at T: its escape step is only known to be > T. Statistics of escape steps must therefore not be
taken over the escaped runs alone (that biases them low); :func:`kaplan_meier` estimates the
fraction still on the plateau against the step with pointwise confidence bands, and reads the
median escape step, with its interval, off that curve (it may be "> T"); :func:`logrank`
compares the escape steps of two groups of runs, censored ones included.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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
    "escape_times",
    "Survival",
    "kaplan_meier",
    "plateau_survival",
    "LogRank",
    "logrank",
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


# --------------------------------------------------------------------------------------------
# Escape steps as censored data
# --------------------------------------------------------------------------------------------


def escape_times(curves: np.ndarray, unigram: float, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per run (rows): the escape step and True, or the last step T and False (censored at T:
    the run had not escaped by T; its escape step is > T)."""
    curves = np.atleast_2d(curves)
    T = curves.shape[1]
    steps = [escape_step(c, unigram, rate) for c in curves]
    times = np.array([T if s is None else s for s in steps], dtype=float)
    observed = np.array([s is not None for s in steps])
    return times, observed


@dataclass(frozen=True)
class Survival:
    """Kaplan-Meier estimate of the fraction of runs still on the plateau after each step.

    ``steps[i]``: a step at which the estimate may change (0 first); ``surviving[i]``, ``low[i]``,
    ``high[i]``: the estimate and its pointwise confidence band from that step on. The median
    escape step is the first step at which the estimate is <= 1/2 (None: not reached by
    ``horizon``, so the median is > horizon); its interval comes from the band (the first steps
    at which ``low`` and ``high`` are <= 1/2; None: > horizon).
    """

    steps: np.ndarray
    surviving: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int
    escaped: int
    horizon: int
    confidence: float
    median: float | None
    median_low: float | None
    median_high: float | None

    def at(self, step: float) -> float:
        """Estimated fraction still on the plateau after ``step``."""
        return float(self.surviving[np.searchsorted(self.steps, step, side="right") - 1])

    def describe(self, what: str = "median escape step") -> str:
        """E.g. 'median escape step 707 (95% CI 618-817)' or '... > 1000 (95% CI 912->1000)'."""

        def fmt(v):
            return f"> {self.horizon}" if v is None else f"{v:g}"

        lo = fmt(self.median_low)
        hi = fmt(self.median_high)
        return f"{what} {fmt(self.median)} ({self.confidence:.0%} CI {lo} to {hi})"

    def summary(self) -> dict:
        return {
            "runs": self.runs,
            "escaped": self.escaped,
            "censored": self.runs - self.escaped,
            "horizon": self.horizon,
            "median escape step": self.median,
            "median CI": [self.median_low, self.median_high],
            "still on the plateau at the horizon": round(self.at(self.horizon), 4),
        }


def _first_at_or_below(steps: np.ndarray, values: np.ndarray, level: float = 0.5) -> float | None:
    hit = np.flatnonzero(values <= level + 1e-12)
    return float(steps[hit[0]]) if hit.size else None


def kaplan_meier(
    times: np.ndarray, observed: np.ndarray, confidence: float = 0.95, horizon: int | None = None
) -> Survival:
    """Kaplan-Meier estimate for right-censored escape steps (scipy.stats.ecdf), with
    log-log pointwise confidence bands. ``times``: escape steps, or censoring steps where
    ``observed`` is False; ``horizon``: the last step of the runs (default: max time)."""
    from scipy import stats

    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.ndim != 1 or times.shape != observed.shape or times.size == 0:
        raise ValueError(
            f"times and observed must be non-empty 1-D arrays of one shape, got {times.shape} "
            f"and {observed.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    horizon = int(times.max()) if horizon is None else int(horizon)
    steps, surv, low, high = [0.0], [1.0], [1.0], [1.0]
    if observed.any():
        data = stats.CensoredData(uncensored=times[observed], right=times[~observed])
        sf = stats.ecdf(data).sf
        with warnings.catch_warnings():  # undefined where S is 0 or 1: handled just below
            warnings.filterwarnings("ignore", "The confidence interval is undefined")
            band = sf.confidence_interval(confidence, method="log-log")
        # NaN in the band where the estimate is 1 (no event yet) or 0 (none left): use the estimate
        lo = np.where(np.isnan(band.low.probabilities), sf.probabilities, band.low.probabilities)
        hi = np.where(np.isnan(band.high.probabilities), sf.probabilities, band.high.probabilities)
        steps += list(sf.quantiles)
        surv += list(sf.probabilities)
        low += list(lo)
        high += list(hi)
    steps, surv, low, high = (np.asarray(a, dtype=float) for a in (steps, surv, low, high))
    return Survival(
        steps=steps,
        surviving=surv,
        low=low,
        high=high,
        runs=int(times.size),
        escaped=int(observed.sum()),
        horizon=horizon,
        confidence=confidence,
        median=_first_at_or_below(steps, surv),
        median_low=_first_at_or_below(steps, low),
        median_high=_first_at_or_below(steps, high),
    )


def plateau_survival(curves: np.ndarray, unigram: float, rate: float, **kw) -> Survival:
    """:func:`kaplan_meier` of the escape steps of training curves (rows)."""
    times, observed = escape_times(curves, unigram, rate)
    return kaplan_meier(times, observed, horizon=np.atleast_2d(curves).shape[1], **kw)


# --------------------------------------------------------------------------------------------
# Comparing two groups of censored escape steps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRank:
    """The log-rank test of two groups of right-censored times.

    ``statistic`` Z = (O_a - E_a) / sqrt(V): O_a the escapes observed in group a, E_a those
    expected under the null hypothesis (both groups escape at the same rate: at every escape
    step, the escapes are shared in proportion to the runs still at risk), V its
    hypergeometric variance. Z > 0: group a escapes earlier than group b. ``pvalue``: two-sided,
    from Z^2 ~ chi-square(1); 1 when V = 0 (no escape, or nothing to tell the groups apart).
    """

    statistic: float
    pvalue: float
    observed_a: int
    expected_a: float
    events: int


def logrank(
    times_a: np.ndarray, observed_a: np.ndarray, times_b: np.ndarray, observed_b: np.ndarray
) -> LogRank:
    """Log-rank test (Mantel 1966; scipy.stats.logrank) of two groups of escape steps (see
    :func:`escape_times`: a step and True, or the censoring step and False)."""
    from scipy import stats

    groups = []
    for t, o in ((times_a, observed_a), (times_b, observed_b)):
        t, o = np.asarray(t, dtype=float), np.asarray(o, dtype=bool)
        if t.ndim != 1 or t.shape != o.shape or t.size == 0:
            raise ValueError(f"times and observed must be non-empty 1-D arrays of one shape, got "
                             f"{t.shape} and {o.shape}")  # fmt: skip
        groups.append((t, o))
    (ta, oa), (tb, ob) = groups
    events = int(oa.sum() + ob.sum())
    # expected escapes of group a under the null hypothesis (what scipy's statistic compares)
    times = np.unique(np.concatenate([ta[oa], tb[ob]]))
    at_risk_a = (ta[None, :] >= times[:, None]).sum(1)
    at_risk = at_risk_a + (tb[None, :] >= times[:, None]).sum(1)
    d = (ta[oa][None, :] == times[:, None]).sum(1) + (tb[ob][None, :] == times[:, None]).sum(1)
    if events == 0:
        return LogRank(0.0, 1.0, 0, 0.0, 0)
    share = at_risk_a / at_risk
    expected = float(np.sum(d * share))
    with np.errstate(invalid="ignore", divide="ignore"):
        tie = np.where(at_risk > 1, (at_risk - d) / np.maximum(at_risk - 1, 1), 0.0)
    variance = float(np.sum(d * share * (1 - share) * tie))
    if variance <= 0:  # e.g. every escape at one step, where both groups are all at risk
        return LogRank(0.0, 1.0, int(oa.sum()), expected, events)
    res = stats.logrank(
        stats.CensoredData(uncensored=ta[oa], right=ta[~oa]),
        stats.CensoredData(uncensored=tb[ob], right=tb[~ob]),
    )
    return LogRank(float(res.statistic), float(res.pvalue), int(oa.sum()), expected, events)
