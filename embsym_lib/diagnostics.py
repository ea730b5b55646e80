"""Diagnostics of embedding magnitude: Cohen's d, norm CV, cross-evaluation, Fisher condition number."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .similarity import FIXED_VARIANTS, Similarity, as_similarity, pairwise


def cohens_d(group_a: Iterable[float], group_b: Iterable[float]) -> float:
    """(mean_a - mean_b) / pooled SD, pooled SD = sqrt(((na-1)sa^2 + (nb-1)sb^2) / (na+nb-2)).

    Bands (Cohen): |d| >= 0.8 large, 0.5-0.8 medium, 0.2-0.5 small. NaN when either group has
    fewer than two values or both have zero spread.
    """
    a, b = np.asarray(list(group_a), dtype=float), np.asarray(list(group_b), dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if pooled == 0:
        return float("nan")
    return float((a.mean() - b.mean()) / pooled)


def effect_size_band(d: float) -> str:
    ad = abs(d)
    if np.isnan(ad):
        return "n/a"
    return "large" if ad >= 0.8 else "medium" if ad >= 0.5 else "small" if ad >= 0.2 else "negligible"


def relevance_magnitude_d(
    doc_norms: np.ndarray,
    relevant: Mapping[int, Iterable[int]],
    pool: str = "corpus",
    scores: np.ndarray | None = None,
    k: int = 100,
) -> float:
    """Cohen's d of candidate magnitudes, relevant vs irrelevant.

    ``relevant`` maps a query index to the indices of its relevant candidates; a candidate relevant to
    several queries counts once per query (the paper's per-pair view). The irrelevant pool (the paper
    leaves it open) is

    - ``"corpus"``: every candidate relevant to no query, once each;
    - ``"top_k"``: for each query, its top-``k`` candidates by ``scores`` [n_queries, n_candidates]
      that are not relevant to it: the hard, retrieved negatives the ranking actually competes with.
    """
    doc_norms = np.asarray(doc_norms, dtype=float)
    rel_norms = [doc_norms[j] for docs in relevant.values() for j in docs]
    if pool == "corpus":
        any_rel = np.zeros(doc_norms.size, dtype=bool)
        any_rel[[j for docs in relevant.values() for j in docs]] = True
        irr_norms = doc_norms[~any_rel]
    elif pool == "top_k":
        if scores is None:
            raise ValueError("pool='top_k' needs the score matrix")
        irr_norms = []
        for qi, docs in relevant.items():
            rel = set(docs)
            top = np.argsort(-scores[qi])[: k + len(rel)]
            irr_norms.extend(doc_norms[[j for j in top if j not in rel][:k]])
        irr_norms = np.asarray(irr_norms)
    else:
        raise ValueError(f"unknown irrelevant pool {pool!r}; valid pools are: corpus, top_k")
    return cohens_d(rel_norms, irr_norms)


def coefficient_of_variation(x: Iterable[float]) -> float:
    """sigma / mu (population SD) of a set of norms."""
    a = np.asarray(list(x), dtype=float)
    return float(a.std() / a.mean()) if a.size and a.mean() != 0 else float("nan")


def norm_stats(emb: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, SD, CV, min and max of the row norms of an embedding matrix."""
    n = torch.as_tensor(emb).float().norm(dim=-1).cpu().numpy()
    return {
        "mean": float(n.mean()),
        "std": float(n.std()),
        "cv": coefficient_of_variation(n),
        "min": float(n.min()),
        "max": float(n.max()),
    }


def cross_evaluate(
    evaluate: Callable[[str], float], variants: Iterable[str] = FIXED_VARIANTS
) -> dict[str, float]:
    """One row of the paper's cross-evaluation matrix: the run's trained model evaluated, by the family's
    own evaluation, under every fixed variant. ``evaluate(variant)`` scores the same embeddings with
    ``variant``: ``on_embeddings`` when a score matrix suffices, or the library's evaluator inside the
    adapter's ``scored_with`` context."""
    return {v: float(evaluate(v)) for v in variants}


def on_embeddings(
    q: torch.Tensor, d: torch.Tensor, metric: Callable[[torch.Tensor], float]
) -> Callable[[str], float]:
    """``evaluate`` for ``cross_evaluate`` from fixed embeddings: ``metric`` of the [N, M] score matrix."""
    return lambda variant: float(metric(pairwise(q, d, variant)))


def per_example_info_nce_grads(
    q: torch.Tensor, d: torch.Tensor, similarity: str | Similarity, scale: float = 20.0
) -> torch.Tensor:
    """Per-example gradients g_i = dL_i / d[q_i ; d_i] of in-batch InfoNCE, shape [B, 2D].

    L_i = -log softmax_j(scale * s(q_i, d_j))_i. L_j (j != i) does not depend on q_i, so the rows of
    d(sum L)/dq are exactly dL_i/dq_i. d_i enters every L_j as a negative; its own-example term is
    dL_i/dd_i = scale * (p_ii - 1) * ds(q_i, d_i)/dd_i, the gradient of a weighted paired score.
    """
    sim = as_similarity(similarity)
    q = q.detach().clone().requires_grad_(True)
    d = d.detach().clone().requires_grad_(True)
    logits = scale * sim.pairwise(q, d)
    labels = torch.arange(q.shape[0])
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (grad_q,) = torch.autograd.grad(loss, q)
    weight = scale * (torch.softmax(logits.detach(), dim=-1).diagonal() - 1.0)
    (grad_d,) = torch.autograd.grad((weight * sim.paired(q.detach(), d)).sum(), d)
    return torch.cat([grad_q, grad_d], dim=-1)


def fisher_condition_number(
    q: torch.Tensor,
    d: torch.Tensor,
    similarity: str | Similarity,
    scale: float = 20.0,
    batch_size: int = 64,
    rtol: float = 1e-9,
) -> dict[str, float]:
    """Condition number of the empirical Fisher information of InfoNCE in embedding space.

    Definition (the paper leaves it open; this is embsym's):

    - *Data*: aligned held-out pairs (q_i, d_i), embedded by an encoder that was **not** trained on
      them (e.g. the pretrained checkpoint, before any of the compared runs), so the predictor is not
      circular.
    - *Parameters*: the embedding coordinates theta_i = [q_i ; d_i] in R^{2D} (query side and its
      positive candidate side), not the encoder weights.
    - *Loss*: in-batch InfoNCE with ``scale`` under the variant's score, batches of ``batch_size``
      consecutive pairs (in-batch negatives only, as in training).
    - *Approximation*: the empirical Fisher F = mean_i g_i g_i^T, g_i = dL_i/dtheta_i
      (``per_example_info_nce_grads``). It needs many more pairs than its 2D dimensions; the result's
      ``underdetermined`` flag is set below 4 x 2D pairs, where kappa says more about the sample than
      about the curvature.
    - *Condition number*: kappa = lambda_max / lambda_min over the eigenvalues of F above
      ``rtol * lambda_max`` (computed in float64). Normalizing a side makes each g_i orthogonal to that
      side's own vector (no radial gradient), one lost direction per example under qnorm and under
      dnorm alike (the paper's "2d-1 effective dimensions"), so their kappas compare like for like.
      Summed over examples whose radial directions differ, F itself stays full rank.

    Decision rule (``predict_side``): normalize the side whose unilateral variant has the smaller kappa
    (better-conditioned curvature is easier to optimize).
    """
    # float64 throughout, so the exact zero eigenvalues of a normalized side's radial direction are
    # ~1e-16 of the largest and fall clearly below ``rtol``.
    q, d = q.detach().double(), d.detach().double()
    if not isinstance(similarity, str):
        similarity = similarity.double()
    grads = [
        per_example_info_nce_grads(q[i : i + batch_size], d[i : i + batch_size], similarity, scale)
        for i in range(0, q.shape[0] - batch_size + 1, batch_size)
    ]
    if not grads:
        raise ValueError(f"need at least batch_size={batch_size} pairs, got {q.shape[0]}")
    g = torch.cat(grads)
    fisher = g.T @ g / g.shape[0]
    eig = torch.linalg.eigvalsh(fisher).flip(0)
    # With fewer pairs than dimensions F has rank <= n_pairs; its other eigenvalues are rounding noise.
    kept = eig[eig > rtol * eig[0]][: g.shape[0]]
    return {
        "kappa": float(kept[0] / kept[-1]),
        "log10_kappa": float(torch.log10(kept[0] / kept[-1])),
        "rank": int(kept.numel()),
        "lambda_max": float(kept[0]),
        "n_pairs": int(g.shape[0]),
        # kappa of a rank-deficient estimate measures the sample, not the curvature: use n_pairs >> 2D.
        "underdetermined": bool(g.shape[0] < 4 * g.shape[1]),
    }


def predict_side(
    q: torch.Tensor, d: torch.Tensor, scale: float = 20.0, batch_size: int = 64
) -> dict[str, object]:
    """The Fisher predictor's choice between qnorm and dnorm, with both condition numbers."""
    kq = fisher_condition_number(q, d, "qnorm", scale, batch_size)
    kd = fisher_condition_number(q, d, "dnorm", scale, batch_size)
    return {
        "kappa_qnorm": kq["kappa"],
        "kappa_dnorm": kd["kappa"],
        "predicted": "qnorm" if kq["kappa"] < kd["kappa"] else "dnorm",
    }
