import numpy as np
import pytest
import torch

from embsym_lib import similarity as S


def _reference(q: np.ndarray, d: np.ndarray, variant: str) -> np.ndarray:
    """An independent float64 implementation of the grid, in numpy."""
    nq, nd = {"cosine": (1, 1), "dot": (0, 0), "qnorm": (1, 0), "dnorm": (0, 1)}[variant]
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if nq else q
    dd = d / np.linalg.norm(d, axis=1, keepdims=True) if nd else d
    return qq @ dd.T


@pytest.fixture
def qd():
    rng = np.random.default_rng(0)
    # Norms spread over two orders of magnitude, as unnormalized encoders produce.
    q = rng.normal(size=(7, 16)) * rng.uniform(0.1, 30, size=(7, 1))
    d = rng.normal(size=(11, 16)) * rng.uniform(0.1, 30, size=(11, 1))
    return q, d


@pytest.mark.parametrize("variant", S.FIXED_VARIANTS)
def test_pairwise_and_paired_match_float64_reference(qd, variant):
    q, d = qd
    ref = _reference(q, d, variant)
    got = S.pairwise(torch.tensor(q), torch.tensor(d), variant).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    got32 = S.pairwise(torch.tensor(q, dtype=torch.float32), torch.tensor(d, dtype=torch.float32), variant)
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-3)
    paired = S.paired(torch.tensor(q), torch.tensor(d[:7]), variant).numpy()
    np.testing.assert_allclose(paired, np.diag(_reference(q, d[:7], variant)), rtol=1e-10)
    module = S.make_similarity(variant)
    np.testing.assert_allclose(module(torch.tensor(q), torch.tensor(d)).numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize(("variant", "ranks_like"), [("qnorm", "dot"), ("dnorm", "cosine")])
def test_per_query_rankings_are_equivalent(qd, variant, ranks_like):
    q, d = map(torch.tensor, qd)
    a = S.pairwise(q, d, variant).argsort(dim=1)
    b = S.pairwise(q, d, ranks_like).argsort(dim=1)
    assert torch.equal(a, b)
    # ... but not across queries: the four variants are distinct score functions.
    assert not torch.allclose(S.pairwise(q, d, variant), S.pairwise(q, d, ranks_like))


@pytest.mark.parametrize("variant", S.FIXED_VARIANTS)
def test_only_cosine_and_dot_are_symmetric(variant):
    a, b = torch.randn(5, 8, dtype=torch.float64) * 3, torch.randn(5, 8, dtype=torch.float64)
    symmetric = torch.allclose(S.pairwise(a, b, variant), S.pairwise(b, a, variant).T)
    assert symmetric == (variant in S.SYMMETRIC_VARIANTS) == S.is_symmetric(variant)


@pytest.mark.parametrize(("variant", "side"), [("qnorm", 0), ("dnorm", 1), ("cosine", 0), ("cosine", 1)])
def test_a_normalized_side_receives_no_radial_gradient(variant, side):
    q = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    d = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    (S.pairwise(q, d, variant) * torch.randn(4, 6, dtype=torch.float64)).sum().backward()
    x = (q, d)[side]
    radial = (x.grad * x).sum(-1)
    assert torch.allclose(radial, torch.zeros_like(radial), atol=1e-12)
    other = (q, d)[1 - side]
    if variant != "cosine":  # the un-normalized side does get radial gradient
        assert (other.grad * other).sum(-1).abs().max() > 1e-6


def test_rescaling_inputs_leaves_cosine_unchanged_and_scales_the_others(qd):
    q, d = map(torch.tensor, qd)
    c_q, c_d = 3.0, 0.25
    for variant, factor in {"cosine": 1, "dot": c_q * c_d, "qnorm": c_d, "dnorm": c_q}.items():
        assert torch.allclose(S.pairwise(c_q * q, c_d * d, variant), factor * S.pairwise(q, d, variant))


@pytest.mark.parametrize("variant", S.FIXED_VARIANTS)
def test_learn_corners_equal_the_fixed_variants(qd, variant):
    q, d = map(torch.tensor, qd)
    gq, gd = S.CORNERS[variant]
    learn = S.LearnableSimilarity(gq, gd).double()
    assert torch.allclose(learn.pairwise(q, d), S.pairwise(q, d, variant))
    assert torch.allclose(learn.paired(q, d[:7]), S.paired(q, d[:7], variant))


def test_learn_starts_at_one_half_and_trains_both_gammas(qd):
    q, d = map(torch.tensor, qd)
    learn = S.make_similarity("learn").double()
    assert learn.gammas() == pytest.approx({"gamma_q": 0.5, "gamma_d": 0.5})
    expected = (q / q.norm(dim=1, keepdim=True) ** 0.5) @ (d / d.norm(dim=1, keepdim=True) ** 0.5).T
    assert torch.allclose(learn(q, d), expected)
    learn(q, d).sum().backward()
    assert learn.raw_gamma_q.grad is not None and learn.raw_gamma_d.grad is not None
    assert {n for n, _ in learn.named_parameters()} == {"raw_gamma_q", "raw_gamma_d"}


def test_unknown_variant_error_lists_the_valid_names():
    with pytest.raises(S.UnknownVariantError, match="cosine, dot, qnorm, dnorm, learn"):
        S.make_similarity("cos")
    with pytest.raises(ValueError, match="unknown similarity variant 'learn'"):
        S.pairwise(torch.ones(1, 2), torch.ones(1, 2), "learn")


def test_normalize_is_safe_on_zero_vectors():
    x = torch.zeros(2, 4, requires_grad=True)
    y = S.normalize(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.equal(S.pairwise(x, torch.ones(3, 4), "cosine"), torch.zeros(2, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_stay_finite(dtype):
    """A zero vector normalizes to zero (an fp16 eps underflows), and dot products of norm-300 vectors
    (9e4 > fp16's 65504) do not overflow: half inputs are scored in float32."""
    q = torch.zeros(2, 8, dtype=dtype)
    q[1] = 300.0 / 8**0.5
    d = torch.full((3, 8), 300.0 / 8**0.5, dtype=dtype)
    for variant in S.VARIANTS:
        scores = S.make_similarity(variant).pairwise(q, d)
        assert torch.isfinite(scores).all(), variant
        assert torch.isfinite(S.make_similarity(variant).paired(q, d[:2])).all(), variant
    assert S.pairwise(q, d, "dot")[1, 0].item() == pytest.approx(9e4, rel=1e-2)
    assert S.pairwise(q, d, "cosine")[0].abs().max().item() == 0.0


def test_double_precision_is_kept():
    q, d = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    assert S.pairwise(q, d, "cosine").dtype == torch.float64
    assert S.make_similarity("learn").double().pairwise(q, d).dtype == torch.float64
