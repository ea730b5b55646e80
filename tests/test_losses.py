import math

import pytest
import torch

from embsym_lib import losses
from embsym_lib.similarity import FIXED_VARIANTS, pairwise


def _direct(q, d, variant, scale, d_neg=None):
    cands = d if d_neg is None else torch.cat([d, d_neg.reshape(-1, d.shape[1])])
    s = scale * pairwise(q.double(), cands.double(), variant)
    return -torch.stack([torch.log_softmax(s[i], 0)[i] for i in range(q.shape[0])]).mean()


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_info_nce_equals_direct_log_softmax(variant):
    torch.manual_seed(0)
    q, d = torch.randn(6, 8, dtype=torch.float64) * 2, torch.randn(6, 8, dtype=torch.float64)
    got = losses.info_nce(q, d, variant, scale=20.0)
    assert torch.allclose(got.double(), _direct(q, d, variant, 20.0), rtol=1e-5)


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_hard_negatives_join_the_candidate_pool(variant):
    torch.manual_seed(1)
    q, d = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    per_query = torch.randn(4, 2, 8, dtype=torch.float64)
    got = losses.info_nce(q, d, variant, scale=5.0, d_neg=per_query)
    assert torch.allclose(got.double(), _direct(q, d, variant, 5.0, per_query), rtol=1e-5)
    assert losses.info_nce_logits(q, d, variant, d_neg=per_query).shape == (4, 4 + 8)


@pytest.mark.parametrize("variant", [*FIXED_VARIANTS, "learn"])
def test_info_nce_is_finite_with_large_unnormalized_norms(variant):
    torch.manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(128, 768), dim=1).mul(30).requires_grad_()
    d = torch.nn.functional.normalize(torch.randn(128, 768), dim=1).mul(30).requires_grad_()
    loss = losses.info_nce(q, d, variant, scale=20.0)
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all()


def test_symmetric_info_nce_swaps_the_query_side():
    torch.manual_seed(3)
    a, b = torch.randn(5, 8) * 3, torch.randn(5, 8)
    both = losses.symmetric_info_nce(a, b, "qnorm", 10.0)
    expected = 0.5 * (losses.info_nce(a, b, "qnorm", 10.0) + losses.info_nce(b, a, "qnorm", 10.0))
    assert torch.allclose(both, expected)
    assert not torch.allclose(losses.info_nce(a, b, "qnorm", 10.0), losses.info_nce(b, a, "qnorm", 10.0))
