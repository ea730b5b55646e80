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
def test_pair_gradients_are_the_batch_loss_gradient_on_both_sides(variant):
    torch.manual_seed(0)
    q, d = torch.randn(5, 3, dtype=torch.float64) * 2, torch.randn(5, 3, dtype=torch.float64)
    got = D.pair_gradients(q, d, variant, scale=4.0)
    qi, di = q.clone().requires_grad_(), d.clone().requires_grad_()
    total = torch.nn.functional.cross_entropy(
        4.0 * pairwise(qi, di, variant), torch.arange(5), reduction="sum"
    )
    gq, gd = torch.autograd.grad(total, (qi, di))
    assert torch.allclose(got, torch.cat([gq, gd], dim=-1), atol=1e-10)


@pytest.mark.parametrize(("variant", "normalized"), [("qnorm", (0,)), ("dnorm", (1,)), ("cosine", (0, 1))])
def test_pair_gradients_have_no_radial_part_on_a_normalized_side(variant, normalized):
    torch.manual_seed(0)
    q, d = torch.randn(32, 4, dtype=torch.float64) * 3, torch.randn(32, 4, dtype=torch.float64) * 2
    g = D.pair_gradients(q, d, variant)
    for side in normalized:
        x, gx = (q, d)[side], g[:, 4 * side : 4 * side + 4]
        assert (gx * x).sum(-1).abs().max() < 1e-12
    for side in {0, 1} - set(normalized):
        x, gx = (q, d)[side], g[:, 4 * side : 4 * side + 4]
        assert (gx * x).sum(-1).abs().max() > 1e-3


@pytest.mark.parametrize("n", [20, 200])
def test_shrunk_condition_number_is_that_of_the_ledoit_wolf_matrix(n):
    """Also with fewer rows than dimensions (the plain estimate would be singular)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    g = np.random.default_rng(0).normal(size=(n, 40)) * np.linspace(0.5, 3, 40)
    kappa, a = D.shrunk_condition_number(g)
    assert a == pytest.approx(ledoit_wolf_shrinkage(g, assume_centered=True))
    fisher = g.T @ g / n
    shrunk = (1 - a) * fisher + a * np.trace(fisher) / 40 * np.eye(40)
    eig = np.linalg.eigvalsh(shrunk)
    assert kappa == pytest.approx(eig.max() / eig.min(), rel=1e-8)


def test_fisher_condition_number_reports_its_estimate():
    torch.manual_seed(0)
    q, d = torch.randn(640, 4) * 3, torch.randn(640, 4) * 2
    out = D.fisher_condition_number(q, d, "dot", batch_size=64)
    assert out["n_pairs"] == 640 and out["dims"] == 8 and out["kappa"] >= 1 and not out["underdetermined"]
    assert out["log10_kappa"] == pytest.approx(np.log10(out["kappa"]))
    assert D.fisher_condition_number(q[:64], d[:64], "dot", batch_size=64)["underdetermined"] is False
    assert (
        D.fisher_condition_number(torch.randn(64, 32), torch.randn(64, 32), "dot")["underdetermined"] is True
    )
    with pytest.raises(ValueError, match="batch_size"):
        D.fisher_condition_number(q[:10], d[:10], "dot", batch_size=64)


def _pairs(seed: int, n: int = 512, dim: int = 8, q_spread: float = 0.3, d_spread: float = 0.3):
    """Aligned pairs around shared directions; log-normal norms per side (equal spreads: exchangeable)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, dim, generator=g)
    q = torch.nn.functional.normalize(u + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    d = torch.nn.functional.normalize(u + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    return q * torch.exp(q_spread * torch.randn(n, 1, generator=g)), d * torch.exp(
        d_spread * torch.randn(n, 1, generator=g)
    )


def test_fisher_predictor_says_no_preference_when_the_sides_are_exchangeable():
    """The issue's null: q and d from one distribution. The in-batch loss alone makes the kappas differ;
    the predictor compares them with their distribution under exchanged magnitudes, so it abstains."""
    answers = [D.predict_side(*_pairs(s), n_permutations=49)["predicted"] for s in range(8)]
    assert answers.count("none") >= 7, answers
    swapped = [D.predict_side(*_pairs(s)[::-1], n_permutations=49)["predicted"] for s in range(4)]
    assert swapped.count("none") >= 3, swapped


def test_fisher_predictor_answers_from_the_data_when_one_side_is_dispersed():
    """Query norms dispersed, documents not: the predictor decides (qnorm), and its answer follows the
    data when the roles are swapped."""
    answers = [D.predict_side(*_pairs(s, q_spread=0.9, d_spread=0.0), n_permutations=49) for s in range(3)]
    assert [a["predicted"] for a in answers] == ["qnorm"] * 3
    assert all(a["p_value"] < 0.05 and a["prefers_qnorm"] == 1 for a in answers)


@pytest.mark.xfail(
    strict=True,
    reason="measured limitation: with the dispersion on the document side the kappa ratio stays inside its "
    "exchangeable null (the in-batch loss is less sensitive to candidate norms), so the predictor abstains "
    "instead of answering dnorm",
)
def test_fisher_predictor_answers_dnorm_when_the_documents_are_dispersed():
    answers = [D.predict_side(*_pairs(s, q_spread=0.0, d_spread=0.9), n_permutations=49) for s in range(3)]
    assert [a["predicted"] for a in answers] == ["dnorm"] * 3


@pytest.mark.xfail(
    strict=True,
    reason="measured limitation: on the synthetic testbed, where document magnitude can carry the quality "
    "signal and qnorm trains better than dnorm, the predictor (held-out queries, untrained encoders) "
    "answers dnorm or abstains: the condition number sees magnitude dispersion, not whether it is signal",
)
def test_fisher_predictor_finds_the_side_the_testbed_says():
    from embsym_lib import testbed

    task = testbed.make_asymmetric_task(n_docs=600, n_train=64, n_test=10, n_heldout=512)
    answers = []
    for seed in range(3):
        torch.manual_seed(seed)
        q_enc = testbed.mlp(task.train_q_x.shape[1], 64, 32)
        d_enc = testbed.mlp(task.doc_x.shape[1], 64, 32)
        answers.append(
            D.predict_side(*testbed.heldout_embeddings(task, q_enc, d_enc), n_permutations=49)["predicted"]
        )
    assert answers == ["qnorm"] * 3


def test_spearman_helper_consistency():
    # Sanity for the statistics used across families: scipy's Spearman on identical rankings is 1.
    assert st.spearmanr([1, 2, 3], [10, 20, 30]).statistic == pytest.approx(1.0)


# --- the Fisher score test (magnitude_score_test) -----------------------------------------------------


def _null_sets(n_sets: int):
    """Data where no magnitude carries anything: the testbed's clean world with nuisance norms, and
    exchangeable aligned pairs with equal or very unequal norm dispersions (dispersion is not signal)."""
    for s in range(n_sets):
        yield _testbed_pairs(None, s)
        for q_spread, d_spread in ((0.3, 0.3), (0.9, 0.0), (0.0, 0.9)):
            q, d = _pairs(s, n=256, q_spread=q_spread, d_spread=d_spread)
            yield q, d, None


def _testbed_pairs(side, seed):
    from embsym_lib import testbed

    return testbed.magnitude_signal_pairs(side, data_seed=seed, n_queries=256, n_docs=500)


def test_score_test_keeps_no_magnitude_when_none_carries_signal():
    """The null, 60 data sets: each side's one-sided test rejects at its nominal 2.5% (binomial bound),
    its p-values are uniform where its norms vary, and swapping the roles changes nothing. Unlike the condition number, a
    dispersed side without signal is not kept."""
    outs = [
        D.magnitude_score_test(q, d, t, n_permutations=199, seed=i)
        for i, (q, d, t) in enumerate(_null_sets(15))
    ]
    for side in ("query", "document"):
        kept = sum(o[f"keep_{side}"] for o in outs)
        assert st.binomtest(kept, len(outs), 0.025, alternative="greater").pvalue > 0.01, (side, kept)
        tested = [o[f"p_{side}"] for o in outs if np.isfinite(o[f"z_{side}"])]  # a side of one norm: p = 1
        assert len(tested) >= 40 and st.kstest(tested, "uniform").pvalue > 0.001
    assert sum(o["predicted"] != "none" for o in outs) <= 6
    swapped = [D.magnitude_score_test(*_pairs(s, n=256)[::-1], n_permutations=199) for s in range(8)]
    assert sum(o["predicted"] != "none" for o in swapped) <= 1


@pytest.mark.parametrize(("side", "answer"), [("document", "qnorm"), ("query", "dnorm"), (None, "cosine")])
def test_score_test_finds_the_side_whose_magnitude_carries_the_label(side, answer):
    """Ground truth from the testbed's world: the document's magnitude carries its quality (keep it:
    qnorm), or the query's carries how sure its answer is (keep it: dnorm), or neither (cosine)."""
    outs = [D.magnitude_score_test(*_testbed_pairs(side, s), n_permutations=199) for s in range(5)]
    assert [o["recommended"] for o in outs] == [answer] * 5
    if side:
        assert all(o[f"z_{side}"] > 3 for o in outs)


def test_score_test_is_invariant_to_rescaling_a_side_and_checks_its_targets():
    q, d, t = _testbed_pairs("document", 0)
    a = D.magnitude_score_test(q, d, t, n_permutations=99)
    b = D.magnitude_score_test(7 * q, 0.1 * d, t, n_permutations=99)
    for key in ("z_query", "z_document", "p_query", "p_document", "temperature"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9)
    visible = torch.ones(len(t), len(d), dtype=torch.bool)
    visible[0, t[0]] = False
    with pytest.raises(ValueError, match="target"):
        D.magnitude_score_test(q, d, t, visible=visible)
    normalized = D.magnitude_score_test(q / q.norm(dim=-1, keepdim=True), d / d.norm(dim=-1, keepdim=True), t)
    assert normalized["recommended"] == "cosine" and np.isnan(normalized["z_query"])


def test_score_test_sees_only_the_visible_candidates():
    """Batches of candidates (few-shot episodes): a candidate no query sees is not tested, and its
    magnitude changes nothing."""
    q, d, _ = _testbed_pairs("document", 1)
    q, d = q[:128], d[:128]
    blocks = torch.arange(128) // 32
    visible = (blocks[:, None] == blocks[None, :])[:96]
    before = D.magnitude_score_test(q[:96], d, visible=visible, n_permutations=49)
    d[100] *= 50.0
    after = D.magnitude_score_test(q[:96], d, visible=visible, n_permutations=49)
    assert before["n_candidates"] == after["n_candidates"] == 96
    assert after["z_document"] == pytest.approx(before["z_document"])
    assert after["p_document"] == before["p_document"]
