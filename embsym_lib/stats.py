"""Descriptive statistics: summaries over seeds, confidence intervals of a mean, relative gains.

Every hypothesis test and verdict lives in ``claims`` (one place)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for a single value) and count, NaNs dropped."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size)


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "—"
    if n == 1:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (scipy.stats.bootstrap)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2 or np.all(x == x[0]):
        m = float(x.mean()) if x.size else float("nan")
        return m, m
    res = _st.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (the few-shot convention: mean ± 1.96 SE for large n)."""
    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if x.size < 2:
        return m, m
    half = float(_st.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m - half, m + half


def relative_gain(value: float, baseline: float) -> float:
    """(value - baseline) / |baseline|; NaN when the baseline is 0."""
    if baseline == 0 or math.isnan(baseline):
        return float("nan")
    return (value - baseline) / abs(baseline)
