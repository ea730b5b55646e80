"""The named scoring functions sentence-transformers' hooks call, one per fixed variant: module-level
and named, because the library's losses and evaluators store and print them."""

from __future__ import annotations

import torch

from ...similarity import ScaleMatched, Similarity, check_variant, pairwise


def cosine_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "cosine")


def dot_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dot")


def qnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "qnorm")


def dnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dnorm")


PAIRWISE_FUNCTIONS = {
    "cosine": cosine_scores,
    "dot": dot_scores,
    "qnorm": qnorm_scores,
    "dnorm": dnorm_scores,
}


def score_function(variant: str):
    """The named pairwise scoring function ([N, D] x [M, D] -> [N, M]) for a fixed variant."""
    return PAIRWISE_FUNCTIONS[check_variant(variant, tuple(PAIRWISE_FUNCTIONS))]


def grid_similarity(score) -> Similarity:
    """The ``Similarity`` module behind a run's score (a named function, a Similarity, a PairScore, or a
    ScaleMatched wrapper: its batch-mean divisor is a training device, so the variant itself scores)."""
    if isinstance(score, ScaleMatched):
        return score.similarity
    if isinstance(getattr(score, "similarity", None), Similarity):  # a PairScore
        return score.similarity
    if isinstance(score, Similarity):
        return score
    for name, f in PAIRWISE_FUNCTIONS.items():
        if f is score:
            return Similarity(name)
    raise ValueError(f"not a grid scoring function: {score!r}")
