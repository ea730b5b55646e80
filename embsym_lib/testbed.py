"""The controlled synthetic testbed: tasks with a known ground truth, encoders trained from scratch.

The paper has no such testbed; its referee asked for one. The tasks form a 2 x 2 design, symmetry x what
magnitude carries, plus the referee's ablation:

| | magnitude carries label signal | magnitude is a nuisance |
|---|---|---|
| asymmetric (query -> document) | ``asymmetric``: rel(q, d) = cos(u_q, u_d) + quality_weight * s_d, a document-side quality that queries do not carry | ``asymmetric_nuisance``: rel = cos(u_q, u_d) only; documents carry a random positive scale |
| symmetric (unordered pairs) | ``symmetric_signal``: label = cos(u_a, u_b) + magnitude_signal * (s_a + s_b) / 2, each input scaled by exp(magnitude_noise * s) | ``symmetric``: label = cos(u_a, u_b), inputs with a random positive scale |

The functional-symmetry rule predicts a magnitude-preserving winner for both asymmetric tasks and cosine
for both symmetric ones; the off-diagonal cells are where it can lose (``asymmetric_nuisance``: nothing
for a magnitude to encode; ``symmetric_signal``: a symmetric task where magnitude helps).

``ablation`` (the referee's): the ``asymmetric`` task with (i) every variant's logits divided by the
stop-gradient batch mean of its un-normalized magnitude factor (``similarity.ScaleMatched``), so the
*total* embedding scale (the effective temperature) is the same for every variant, and (ii) plain SGD on
the normalized gradient, so every update has the same norm (``sgd_lr``). A variant's advantage that
survives comes from what magnitude encodes, not from a different logit scale or SGD trajectory.

Data are generated once from ``data_seed`` (the same for every run); the run ``seed`` only changes
initialization and batch order, so seeds measure training variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats as st
from torch import nn

from .ir_metrics import evaluate_run, mean_over_queries, to_run
from .similarity import ScaleMatched, make_similarity

TASKS = ("asymmetric", "asymmetric_nuisance", "symmetric", "symmetric_signal", "ablation")


def ranking_metrics(
    scores: torch.Tensor, relevant: list[list[int]], depth: int = 100, per_query: bool = False
) -> dict[str, Any]:
    """nDCG@10, MRR@10 and Recall@100 (pytrec_eval, via ``ir_metrics``) over each query's top ``depth``;
    with ``per_query`` also ``per_query``: {query index: nDCG@10} (the run's units)."""
    top_scores, top_idx = scores.topk(min(depth, scores.shape[1]), dim=1)
    query_ids = [str(i) for i in range(scores.shape[0])]
    doc_ids = [str(j) for j in range(scores.shape[1])]
    qrels = {str(i): {str(j): 1 for j in docs} for i, docs in enumerate(relevant)}
    rows = evaluate_run(qrels, to_run(query_ids, doc_ids, top_scores, top_idx), per_query=True)
    out = mean_over_queries(rows)
    metrics: dict[str, Any] = {
        "ndcg@10": out["ndcg10"],
        "mrr@10": out["mrr10"],
        "recall@100": out["recall100"],
    }
    if per_query:
        metrics["per_query"] = {q: r["ndcg10"] for q, r in rows.items()}
    return metrics


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@dataclass
class AsymmetricTask:
    doc_x: torch.Tensor  # [M, p] document inputs
    doc_quality: torch.Tensor  # [M] ground-truth quality s_d
    train_q_x: torch.Tensor  # [N, p]
    train_pos: torch.Tensor  # [N] index of a relevant document
    test_q_x: torch.Tensor  # [T, p]
    test_relevant: list[list[int]]  # relevant documents per test query
    heldout_q_x: torch.Tensor  # [H, p] held out from training: for the Fisher predictor
    heldout_pos: torch.Tensor  # [H]


def make_asymmetric_task(
    data_seed: int = 1234,
    n_docs: int = 2000,
    n_train: int = 6000,
    n_test: int = 500,
    n_heldout: int = 512,
    latent_dim: int = 16,
    input_dim: int = 32,
    quality_weight: float = 0.5,
    input_noise: float = 0.1,
    n_relevant: int = 5,
    doc_magnitude_noise: float = 0.0,
) -> AsymmetricTask:
    """``doc_magnitude_noise`` > 0 scales each document input by exp(noise * N(0, 1)), a nuisance
    magnitude (drawn after everything else: the other draws are those of the default task)."""
    g = torch.Generator().manual_seed(data_seed)
    u_d = _unit(torch.randn(n_docs, latent_dim, generator=g))
    quality = torch.randn(n_docs, generator=g)
    w_doc = torch.randn(latent_dim + 1, input_dim, generator=g) / math.sqrt(latent_dim + 1)
    w_query = torch.randn(latent_dim, input_dim, generator=g) / math.sqrt(latent_dim)
    doc_x = torch.cat([u_d, quality[:, None]], dim=1) @ w_doc
    doc_x = doc_x + input_noise * torch.randn(doc_x.shape, generator=g)

    def queries(n: int):
        u_q = _unit(torch.randn(n, latent_dim, generator=g))
        relevance = u_q @ u_d.T + quality_weight * quality[None, :]
        relevant = relevance.topk(n_relevant, dim=1).indices
        x = u_q @ w_query + input_noise * torch.randn(n, input_dim, generator=g)
        return x, relevant

    train_x, train_rel = queries(n_train)
    pick = torch.randint(0, n_relevant, (n_train,), generator=g)
    test_x, test_rel = queries(n_test)
    held_x, held_rel = queries(n_heldout)
    if doc_magnitude_noise > 0:
        doc_x = doc_x * torch.exp(doc_magnitude_noise * torch.randn(n_docs, 1, generator=g))
    return AsymmetricTask(
        doc_x,
        quality,
        train_x,
        train_rel[torch.arange(n_train), pick],
        test_x,
        test_rel.tolist(),
        held_x,
        held_rel[:, 0],
    )


def magnitude_signal_pairs(
    side: str | None,
    data_seed: int = 0,
    n_queries: int = 512,
    n_docs: int = 1000,
    latent_dim: int = 16,
    signal: float = 0.8,
    nuisance: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings in which one side's magnitude carries the label signal and the other's is a nuisance:
    ground truth for the side predictors. Returns (queries [N, D], documents [M, D], the target
    document of each query [N]).

    The ``asymmetric`` task's world: documents with a direction u_d and a quality s_d, each query's
    target the document maximizing cos(u_q, u_d) + 0.5 s_d when the signal is on the ``"document"`` side
    (|d| = exp(signal * s_d): the magnitude says how likely a document is to be anyone's answer). On the
    ``"query"`` side the target maximizes cos(u_q, u_d) alone, each query is observed through its own
    noise level sigma_q ~ U(0, 1.5) and |q| = exp(-signal * sigma_q): the magnitude says how sure its
    answer is. ``None``: the clean task, both magnitudes nuisance. Every magnitude that carries no signal
    is exp(nuisance * N(0, 1))."""
    if side not in ("document", "query", None):
        raise ValueError(f"side must be 'document', 'query' or None, got {side!r}")
    g = torch.Generator().manual_seed(data_seed)
    u_d = _unit(torch.randn(n_docs, latent_dim, generator=g))
    quality = torch.randn(n_docs, generator=g)
    u_q = _unit(torch.randn(n_queries, latent_dim, generator=g))
    prior = 0.5 * quality if side == "document" else torch.zeros(n_docs)
    targets = (u_q @ u_d.T + prior).argmax(dim=1)
    sigma = 1.5 * torch.rand(n_queries, 1, generator=g)
    q_dir = _unit(u_q + sigma * torch.randn(n_queries, latent_dim, generator=g)) if side == "query" else u_q

    def nuisance_norms(k: int) -> torch.Tensor:
        return torch.exp(nuisance * torch.randn(k, 1, generator=g))

    d_norm = torch.exp(signal * quality)[:, None] if side == "document" else nuisance_norms(n_docs)
    q_norm = torch.exp(-signal * sigma) if side == "query" else nuisance_norms(n_queries)
    return q_dir * q_norm, u_d * d_norm, targets


@dataclass
class SymmetricTask:
    train_a: torch.Tensor
    train_b: torch.Tensor
    train_y: torch.Tensor
    test_a: torch.Tensor
    test_b: torch.Tensor
    test_y: torch.Tensor


def make_symmetric_task(
    data_seed: int = 1234,
    n_train: int = 6000,
    n_test: int = 2000,
    latent_dim: int = 16,
    input_dim: int = 32,
    magnitude_noise: float = 0.5,
    input_noise: float = 0.1,
    magnitude_signal: float = 0.0,
) -> SymmetricTask:
    """Each input is scaled by exp(magnitude_noise * s), s ~ N(0, 1). With ``magnitude_signal`` = 0
    (``symmetric``) s is a nuisance; otherwise (``symmetric_signal``) the label also carries
    magnitude_signal * (s_a + s_b) / 2, symmetric in the two inputs, which only their norms reveal."""
    g = torch.Generator().manual_seed(data_seed + 1)
    w = torch.randn(latent_dim, input_dim, generator=g) / math.sqrt(latent_dim)

    def pairs(n: int):
        u_a = _unit(torch.randn(n, latent_dim, generator=g))
        spread = 2.0 * torch.rand(n, 1, generator=g)
        u_b = _unit(u_a + spread * torch.randn(n, latent_dim, generator=g))
        y = (u_a * u_b).sum(-1)

        def observe(u):
            s = torch.randn(n, 1, generator=g)
            return torch.exp(magnitude_noise * s) * (u @ w) + input_noise * torch.randn(
                n, input_dim, generator=g
            ), s[:, 0]

        (a, s_a), (b, s_b) = observe(u_a), observe(u_b)
        return a, b, y + magnitude_signal * (s_a + s_b) / 2

    a, b, y = pairs(n_train)
    ta, tb, ty = pairs(n_test)
    return SymmetricTask(a, b, y, ta, tb, ty)


def mlp(input_dim: int, hidden: int, output_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(input_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, output_dim),
    )


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for i in range(0, n - batch_size + 1, batch_size):
        yield order[i : i + batch_size]


def _step(params, optimizer, loss, fixed_update_norm: float | None) -> float | None:
    """One optimizer step; with ``fixed_update_norm`` the gradient is rescaled to that norm first and the
    norm of the update actually applied is returned (plain SGD: exactly lr x the fixed norm)."""
    optimizer.zero_grad()
    loss.backward()
    if fixed_update_norm is None:
        optimizer.step()
        return None
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g**2).sum() for g in grads)).clamp_min(1e-12)
    for g in grads:
        g.mul_(fixed_update_norm / total)
    before = [p.detach().clone() for p in params]
    optimizer.step()
    return float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(params, before, strict=True))))


def train_asymmetric(
    task: AsymmetricTask,
    variant: str,
    seed: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    scale: float = 20.0,
    hidden: int = 64,
    embed_dim: int = 32,
    ablation: bool = False,
    sgd_lr: float = 0.05,
) -> dict:
    """Two towers trained with in-batch InfoNCE under ``variant``; returns the models and curves."""
    torch.manual_seed(seed)
    q_enc = mlp(task.train_q_x.shape[1], hidden, embed_dim)
    d_enc = mlp(task.doc_x.shape[1], hidden, embed_dim)
    sim = make_similarity(variant)
    scorer = ScaleMatched(sim) if ablation else sim
    params = [*q_enc.parameters(), *d_enc.parameters(), *sim.parameters()]
    if ablation:
        # Plain SGD on the normalized gradient: every update has norm sgd_lr (momentum would let it vary).
        optimizer = torch.optim.SGD(params, lr=sgd_lr)  # update norm = sgd_lr x the normalized gradient's 1
    else:
        optimizer = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    curves: dict[str, dict[str, list]] = {
        k: {"x": [], "y": []} for k in ("loss", "q_norm_mean", "d_norm_mean", "val_ndcg@10")
    }
    if variant == "learn":
        curves.update({"gamma_q": {"x": [], "y": []}, "gamma_d": {"x": [], "y": []}})
    if ablation:
        curves["update_norm"] = {"x": [], "y": []}
    labels = torch.arange(batch_size)
    for epoch in range(1, epochs + 1):
        losses, updates = [], []
        for idx in _batches(task.train_q_x.shape[0], batch_size, g):
            q = q_enc(task.train_q_x[idx])
            d = d_enc(task.doc_x[task.train_pos[idx]])
            logits = scale * scorer.pairwise(q, d)
            # Duplicate positives in a batch are rare (2000 docs); they count as negatives, as in ST's MNRL.
            loss = nn.functional.cross_entropy(logits, labels)
            update = _step(params, optimizer, loss, 1.0 if ablation else None)
            losses.append(loss.item())
            if update is not None:
                updates.append(update)
        ev = evaluate_asymmetric(task, q_enc, d_enc, sim)
        if updates:
            curves["update_norm"]["x"].append(epoch)
            curves["update_norm"]["y"].append(float(np.mean(updates)))
        for key, value in (
            ("loss", float(np.mean(losses))),
            ("q_norm_mean", ev["q_norm_mean"]),
            ("d_norm_mean", ev["d_norm_mean"]),
            ("val_ndcg@10", ev["ndcg@10"]),
        ):
            curves[key]["x"].append(epoch)
            curves[key]["y"].append(value)
        if variant == "learn":
            for key, value in sim.gammas().items():
                curves[key]["x"].append(epoch)
                curves[key]["y"].append(value)
    return {"q_encoder": q_enc, "d_encoder": d_enc, "similarity": sim, "curves": curves}


@torch.no_grad()
def evaluate_asymmetric(
    task: AsymmetricTask, q_enc, d_enc, similarity, score_variant: str | None = None, per_query: bool = False
) -> dict:
    """Ranking metrics over the whole corpus, plus magnitude diagnostics against the ground truth (and
    per-query nDCG@10 under ``per_query`` with ``per_query=True``)."""
    from .diagnostics import coefficient_of_variation, relevance_magnitude_d

    q = q_enc(task.test_q_x)
    d = d_enc(task.doc_x)
    sim = make_similarity(score_variant) if score_variant else similarity
    scores = sim.pairwise(q, d)
    out = ranking_metrics(scores, task.test_relevant, per_query=per_query)
    d_norms = d.norm(dim=-1).numpy()
    q_norms = q.norm(dim=-1).numpy()
    relevant = dict(enumerate(task.test_relevant))
    out.update(
        {
            "q_norm_mean": float(q_norms.mean()),
            "d_norm_mean": float(d_norms.mean()),
            "q_norm_cv": coefficient_of_variation(q_norms),
            "d_norm_cv": coefficient_of_variation(d_norms),
            "cohens_d_corpus": relevance_magnitude_d(d_norms, relevant, pool="corpus"),
            "cohens_d_top100": relevance_magnitude_d(
                d_norms, relevant, pool="top_k", scores=scores.numpy(), k=100
            ),
            "spearman_dnorm_quality": float(st.spearmanr(d_norms, task.doc_quality.numpy()).statistic),
        }
    )
    return out


@torch.no_grad()
def magnitude_shuffle(task: AsymmetricTask, q_enc, d_enc, similarity, seed: int = 0) -> dict:
    """Re-evaluate with document norms permuted across documents (directions kept): the drop in nDCG
    is what the document magnitudes carried. Zero by construction when the document side is normalized."""
    q = q_enc(task.test_q_x)
    d = d_enc(task.doc_x)
    norms = d.norm(dim=-1, keepdim=True)
    perm = torch.randperm(d.shape[0], generator=torch.Generator().manual_seed(seed))
    shuffled = d / norms * norms[perm]
    base = ranking_metrics(similarity.pairwise(q, d), task.test_relevant)["ndcg@10"]
    after = ranking_metrics(similarity.pairwise(q, shuffled), task.test_relevant)["ndcg@10"]
    return {"ndcg@10_norm_shuffled": after, "ndcg@10_drop_norm_shuffled": base - after}


@torch.no_grad()
def heldout_embeddings(task: AsymmetricTask, q_enc, d_enc) -> tuple[torch.Tensor, torch.Tensor]:
    return q_enc(task.heldout_q_x), d_enc(task.doc_x[task.heldout_pos])


def train_symmetric(
    task: SymmetricTask,
    variant: str,
    seed: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    hidden: int = 64,
    embed_dim: int = 32,
) -> dict:
    """One shared encoder; a regression of the calibrated pair score a*s(f(x1), f(x2)) + b on the label.
    The first input is the query side (the paper's Sent1Norm = qnorm, Sent2Norm = dnorm)."""
    torch.manual_seed(seed)
    enc = mlp(task.train_a.shape[1], hidden, embed_dim)
    sim = make_similarity(variant)
    calibration = nn.Linear(1, 1)
    # Start from the identity map: a random (possibly negative) slope lets the regression collapse to
    # predicting the mean label.
    nn.init.ones_(calibration.weight)
    nn.init.zeros_(calibration.bias)
    params = [*enc.parameters(), *sim.parameters(), *calibration.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    curves: dict[str, dict[str, list]] = {
        k: {"x": [], "y": []} for k in ("loss", "norm_mean", "val_spearman")
    }
    for epoch in range(1, epochs + 1):
        losses = []
        for idx in _batches(task.train_a.shape[0], batch_size, g):
            s = sim.paired(enc(task.train_a[idx]), enc(task.train_b[idx]))
            loss = nn.functional.mse_loss(calibration(s[:, None]).squeeze(1), task.train_y[idx])
            _step(params, optimizer, loss, None)
            losses.append(loss.item())
        ev = evaluate_symmetric(task, enc, sim)
        for key, value in (
            ("loss", float(np.mean(losses))),
            ("norm_mean", ev["norm_mean"]),
            ("val_spearman", ev["spearman"]),
        ):
            curves[key]["x"].append(epoch)
            curves[key]["y"].append(value)
    return {"encoder": enc, "similarity": sim, "curves": curves}


@torch.no_grad()
def evaluate_symmetric(task: SymmetricTask, enc, similarity, score_variant: str | None = None) -> dict:
    from .diagnostics import coefficient_of_variation

    a, b = enc(task.test_a), enc(task.test_b)
    sim = make_similarity(score_variant) if score_variant else similarity
    s = sim.paired(a, b).numpy()
    s_swapped = sim.paired(b, a).numpy()
    y = task.test_y.numpy()
    norms = torch.cat([a, b]).norm(dim=-1).numpy()
    return {
        "spearman": float(st.spearmanr(s, y).statistic),
        "pearson": float(st.pearsonr(s, y).statistic),
        # Swap test: does the score depend on which input is called the query?
        "spearman_swapped": float(st.spearmanr(s_swapped, y).statistic),
        "swap_max_abs_diff": float(np.abs(s - s_swapped).max()),
        "norm_mean": float(norms.mean()),
        "norm_cv": coefficient_of_variation(norms),
    }
