"""Contrastive losses over any grid variant.

The paper trains every variant with InfoNCE, in-batch negatives, and one scale alpha = 1/tau = 20
applied to *every* variant, dot included. Unnormalized encoders can have norms of 10-30, so dot
logits reach ~20 * 30 * 30 = 18000: still finite in float32, and ``cross_entropy`` subtracts the row
maximum, so the loss stays finite. Never compute these logits in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .similarity import Similarity, as_similarity


def info_nce_logits(
    q: torch.Tensor,
    d_pos: torch.Tensor,
    similarity: str | Similarity,
    scale: float = 20.0,
    d_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [N, N + K] of each query against all in-batch positives and the hard negatives.

    q, d_pos: [N, D]; the positive of query i is d_pos[i] (column i). d_neg: [K, D] shared hard
    negatives, or [N, k, D] per-query hard negatives (flattened into the shared pool, as
    sentence-transformers' MultipleNegativesRankingLoss does).
    """
    sim = as_similarity(similarity)
    candidates = d_pos
    if d_neg is not None:
        candidates = torch.cat([d_pos, d_neg.reshape(-1, d_neg.shape[-1])], dim=0)
    return scale * sim.pairwise(q, candidates)


def info_nce(
    q: torch.Tensor,
    d_pos: torch.Tensor,
    similarity: str | Similarity,
    scale: float = 20.0,
    d_neg: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE: cross-entropy of each query's positive among in-batch positives and hard negatives."""
    logits = info_nce_logits(q, d_pos, similarity, scale=scale, d_neg=d_neg)
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def symmetric_info_nce(
    a: torch.Tensor, b: torch.Tensor, similarity: str | Similarity, scale: float = 20.0
) -> torch.Tensor:
    """Mean of the a->b and b->a InfoNCE losses (CLIP-style). For qnorm/dnorm the b->a direction
    makes ``b`` the query, so the normalized side switches with the direction."""
    return 0.5 * (info_nce(a, b, similarity, scale) + info_nce(b, a, similarity, scale))
