import numpy as np
import pytest
import torch
from scipy import stats as st

from embsym_lib import diagnostics as D
from embsym_lib.similarity import pairwise


def test_cohens_d_matches_the_pooled_sd_formula():
    a, b = [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 4.0]
    pooled = np.sqrt((3 * np.var(a, ddof=1) + 2 * np.var(b, ddof=1)) / 5)
    assert D.cohens_d(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled)
    assert np.isnan(D.cohens_d([1.0], [2.0, 3.0]))
    assert D.effect_size_band(0.9) == "large" and D.effect_size_band(-0.3) == "small"


def test_relevance_magnitude_d_pools():
    norms = np.array([10.0, 9.0, 1.0, 2.0, 1.5, 8.0])
    relevant = {0: [0], 1: [1]}
    corpus_d = D.relevance_magnitude_d(norms, relevant, pool="corpus")
    assert corpus_d == pytest.approx(D.cohens_d([10.0, 9.0], [1.0, 2.0, 1.5, 8.0]))
    scores = np.array([[5, 1, 0, 0, 0, 4], [1, 5, 0, 0, 3, 0]], dtype=float)
    top_d = D.relevance_magnitude_d(norms, relevant, pool="top_k", scores=scores, k=1)
    # Query 0's top non-relevant candidate is document 5 (norm 8), query 1's is document 4 (norm 1.5).
    assert top_d == pytest.approx(D.cohens_d([10.0, 9.0], [8.0, 1.5]))
    with pytest.raises(ValueError, match="valid pools"):
        D.relevance_magnitude_d(norms, relevant, pool="rest")


def test_coefficient_of_variation_and_norm_stats():
    assert D.coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)
    stats = D.norm_stats(torch.tensor([[3.0, 4.0], [6.0, 8.0]]))
    assert stats["mean"] == pytest.approx(7.5) and stats["cv"] == pytest.approx(2.5 / 7.5)


def test_cross_evaluate_scores_the_same_embeddings_with_every_variant():
    q, d = torch.randn(3, 4), torch.randn(5, 4)
    out = D.cross_evaluate(D.on_embeddings(q, d, lambda s: float(s.sum())))
    assert set(out) == {"cosine", "dot", "qnorm", "dnorm"}
    assert out["dot"] == pytest.approx(float(pairwise(q, d, "dot").sum()), rel=1e-5)


@pytest.mark.parametrize("variant", ["cosine", "dot", "qnorm", "dnorm"])
def test_per_example_gradients_match_brute_force(variant):
    torch.manual_seed(0)
    q, d = torch.randn(5, 3, dtype=torch.float64) * 2, torch.randn(5, 3, dtype=torch.float64)
    got = D.per_example_info_nce_grads(q, d, variant, scale=4.0)
    for i in range(5):
        qi = q.clone().requires_grad_()
        di = d.clone().requires_grad_()
        loss_i = -torch.log_softmax(4.0 * pairwise(qi, di, variant)[i], 0)[i]
        gq, gd = torch.autograd.grad(loss_i, (qi, di))
        assert torch.allclose(got[i].double(), torch.cat([gq[i], gd[i]]).float().double(), atol=1e-5)


@pytest.mark.parametrize(("variant", "normalized"), [("qnorm", (0,)), ("dnorm", (1,)), ("cosine", (0, 1))])
def test_per_example_gradients_have_no_radial_part_on_a_normalized_side(variant, normalized):
    torch.manual_seed(0)
    q, d = torch.randn(32, 4, dtype=torch.float64) * 3, torch.randn(32, 4, dtype=torch.float64) * 2
    g = D.per_example_info_nce_grads(q, d, variant)
    for side in normalized:
        x, gx = (q, d)[side], g[:, 4 * side : 4 * side + 4]
        assert (gx * x).sum(-1).abs().max() < 1e-12
    for side in {0, 1} - set(normalized):
        x, gx = (q, d)[side], g[:, 4 * side : 4 * side + 4]
        assert (gx * x).sum(-1).abs().max() > 1e-3


def test_fisher_condition_number_and_predictor():
    torch.manual_seed(0)
    q, d = torch.randn(640, 4) * 3, torch.randn(640, 4) * 2
    out = D.fisher_condition_number(q, d, "dot", batch_size=64)
    assert out["rank"] == 8 and out["n_pairs"] == 640 and out["kappa"] >= 1
    assert out["log10_kappa"] == pytest.approx(np.log10(out["kappa"]))
    pred = D.predict_side(q, d, batch_size=64)
    assert pred["predicted"] in {"qnorm", "dnorm"}
    assert pred["predicted"] == ("qnorm" if pred["kappa_qnorm"] < pred["kappa_dnorm"] else "dnorm")
    with pytest.raises(ValueError, match="batch_size"):
        D.fisher_condition_number(q[:10], d[:10], "dot", batch_size=64)


def test_spearman_helper_consistency():
    # Sanity for the statistics used across families: scipy's Spearman on identical rankings is 1.
    assert st.spearmanr([1, 2, 3], [10, 20, 30]).statistic == pytest.approx(1.0)
