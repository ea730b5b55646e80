"""Exact (brute-force) search under any grid variant, and IR metrics computed by pytrec_eval.

Exact search scores every query against the whole corpus in blocks (queries x documents), keeping a
running top-k, so memory stays bounded on CPU and GPU alike. Scores come from the variant's
``Similarity`` module (``embsym_lib.similarity``); nothing here re-implements normalization.

Metrics (trec_eval definitions, via pytrec_eval): nDCG@10 = ``ndcg_cut_10``, Recall@100 =
``recall_100``, MRR@10 = ``recip_rank`` on each query's run truncated to its top 10 (trec_eval's
reciprocal rank has no cutoff of its own). Queries without any relevant document are skipped, as
trec_eval does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytrec_eval
import torch

from .similarity import Similarity, as_similarity

METRICS: dict[str, str] = {"ndcg10": "ndcg_cut_10", "mrr10": "recip_rank", "recall100": "recall_100"}


@torch.no_grad()
def exact_search(
    queries: torch.Tensor,
    docs: torch.Tensor,
    similarity: str | Similarity,
    k: int = 100,
    query_batch: int = 1024,
    doc_batch: int = 65536,
    exclude: Mapping[int, list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, document indices) per query, each [n_queries, min(k, n_docs)], best first.

    ``exclude`` maps a query index to document indices removed from its ranking (BRIGHT's
    excluded_ids). Runs on the device of ``queries``/``docs``.
    """
    sim = as_similarity(similarity)
    k = min(k, docs.shape[0])
    n_q = queries.shape[0]
    best_scores = torch.full((n_q, k), float("-inf"), device=queries.device)
    best_idx = torch.zeros((n_q, k), dtype=torch.long, device=queries.device)
    for qs in range(0, n_q, query_batch):
        q = queries[qs : qs + query_batch]
        top_s, top_i = best_scores[qs : qs + query_batch], best_idx[qs : qs + query_batch]
        for ds in range(0, docs.shape[0], doc_batch):
            scores = sim.pairwise(q, docs[ds : ds + doc_batch]).float()
            if exclude:
                for qi in range(q.shape[0]):
                    cols = [j - ds for j in exclude.get(qs + qi, ()) if ds <= j < ds + scores.shape[1]]
                    if cols:
                        scores[qi, cols] = float("-inf")
            kk = min(k, scores.shape[1])
            s, i = scores.topk(kk, dim=1)
            if ds == 0 and kk == k:  # the first block fills the running top-k: nothing to merge yet
                top_s, top_i = s, i
                continue
            merged_s = torch.cat([top_s, s], dim=1)
            merged_i = torch.cat([top_i, i + ds], dim=1)
            top_s, order = merged_s.topk(k, dim=1)
            top_i = merged_i.gather(1, order)
        best_scores[qs : qs + query_batch], best_idx[qs : qs + query_batch] = top_s, top_i
    return best_scores, best_idx


def to_run(
    query_ids: list[str], doc_ids: list[str], scores: torch.Tensor, indices: torch.Tensor
) -> dict[str, dict[str, float]]:
    """pytrec_eval's run format {qid: {docid: score}} from exact_search's output."""
    s, i = scores.cpu().double().numpy(), indices.cpu().numpy()
    return {
        qid: {doc_ids[j]: float(v) for j, v in zip(i[row], s[row], strict=True) if np.isfinite(v)}
        for row, qid in enumerate(query_ids)
    }


def truncate_run(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    return {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k]) for q, docs in run.items()}


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]], run: dict[str, dict[str, float]], per_query: bool = False
) -> dict[str, float] | dict[str, dict[str, float]]:
    """nDCG@10, MRR@10 and Recall@100 (means over judged queries), or per query when ``per_query``."""
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if q in run}
    if not judged:
        raise ValueError("no query of the run has relevance judgments")
    main = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(truncate_run(run, 10))
    rows = {
        q: {
            "ndcg10": main[q]["ndcg_cut_10"],
            "recall100": main[q]["recall_100"],
            "mrr10": mrr[q]["recip_rank"],
        }
        for q in main
    }
    return rows if per_query else mean_over_queries(rows)


def mean_over_queries(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows.values()])) for m in METRICS}


def search_and_evaluate(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    query_ids: list[str],
    doc_ids: list[str],
    qrels: Mapping[str, Mapping[str, int]],
    similarity: str | Similarity,
    k: int = 100,
    exclude: Mapping[int, list[int]] | None = None,
    per_query: bool = False,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Exact search + metrics; also returns the top-k (scores, indices) for diagnostics and RAG.
    With ``per_query`` the metrics also hold ``per_query``: {qid: {metric: value}} (the run's units)."""
    scores, idx = exact_search(query_emb, doc_emb, similarity, k=k, exclude=exclude)
    rows = evaluate_run(qrels, to_run(query_ids, doc_ids, scores, idx), per_query=True)
    metrics: dict[str, Any] = mean_over_queries(rows)
    if per_query:
        metrics["per_query"] = rows
    return metrics, scores, idx


# ----------------------------------------------------------------------------------------------
# Reader metrics for RAG: SQuAD-style answer normalization (lowercase, no punctuation, no articles).

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = Counter(pred) & Counter(gold)
    overlap = sum(common.values())
    if not pred or not gold:
        return float(pred == gold)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)
