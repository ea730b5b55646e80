import math

import numpy as np
import pytest

from embsym_lib import stats
from embsym_lib.symmetry import MAGNITUDE_PRESERVING, TaskSymmetry, asymmetric, bidirectional, unordered


def test_mean_std_and_format():
    assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert stats.format_mean_std([0.1, 0.2], scale=100) == "15.00 ± 7.07"
    assert stats.format_mean_std([]) == "—"


def test_confidence_intervals_contain_the_mean():
    x = np.random.default_rng(0).normal(0.5, 0.1, size=600)
    lo, hi = stats.bootstrap_ci(x, n_resamples=2000)
    tlo, thi = stats.t_confidence_interval(x)
    assert lo < x.mean() < hi and tlo < x.mean() < thi
    assert thi - tlo == pytest.approx(2 * 1.964 * x.std(ddof=1) / np.sqrt(600), rel=1e-2)


def test_relative_gain():
    assert stats.relative_gain(12.74, 7.41) == pytest.approx(0.7193, rel=1e-3)
    assert math.isnan(stats.relative_gain(1.0, 0.0))


def test_symmetry_classification():
    retrieval = asymmetric("retrieval", "query", "document")
    assert not retrieval.symmetric and retrieval.query_role == "query"
    assert retrieval.predicted_variants() == MAGNITUDE_PRESERVING
    clip_sym = bidirectional("clip", "image", "text")
    assert clip_sym.symmetric and clip_sym.predicted_variants() == ("cosine",)
    assert unordered("sts").symmetric
    lopsided = TaskSymmetry("mixed", {("image", "text"): 1.0, ("text", "image"): 0.5})
    assert not lopsided.symmetric and lopsided.query_role == "image"
    assert clip_sym.other_variants() == ("dot", "qnorm", "dnorm", "learn")
    with pytest.raises(ValueError):
        TaskSymmetry("empty")
