"""Retrieval evaluation: each test set searched exactly with the run's own scoring, cross-evaluated with
every fixed variant, its norms and Cohen's d; a set of forums (CQADupStack) forum by forum; the means
over benchmark groups that the paper's category rows report."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...adapters.sentence_transformers import ADAPTER, GridEncoder
from ...data import retrieval as rdata

IR_METRICS = ("ndcg10", "mrr10", "recall100")


def evaluate(encoder: GridEncoder, tests: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Per test set (``evaluate_set``): metrics with the run's own scoring, the cross-evaluation row (the
    same embeddings scored with each fixed variant), Cohen's d of document norms (relevant vs irrelevant)
    and norm stats, with the set's benchmark group."""
    sim = ADAPTER.similarity(encoder)
    info = {i.name: i for i in map(rdata.resolve_test_set, params.get("test_sets", ()))}
    info.update({n: rdata.check_dataset(n) for n in tests if n not in info})
    results: dict[str, Any] = {}
    for name, data in tests.items():
        if data.parts:  # CQADupStack: each forum searched on its own, the set's score their mean (as BEIR)
            forums = {part.name: evaluate_set(encoder, sim, part, params) for part in data.parts}
            result = mean_over_parts(forums)
        else:
            result = evaluate_set(encoder, sim, data, params)
        results[name] = {
            **result,
            "group": info[name].group,
            "in_domain": info[name].in_domain,
            **({"user": True, "folder": info[name].path} if info[name].user else {}),
            "sizes": data.sizes(),
        }
    return results


def evaluate_set(encoder: GridEncoder, sim, data, params: dict[str, Any]) -> dict[str, Any]:
    """One searchable set, encoded once: its metrics with the run's own scoring, the cross-evaluation row,
    Cohen's d of document norms (relevant vs irrelevant), norm statistics and per-query results."""
    from ...diagnostics import (
        coefficient_of_variation,
        cohens_d,
        cross_evaluate,
        norm_stats,
        relevance_magnitude_d,
    )
    from ...ir_metrics import search_and_evaluate

    qids, dids = data.query_ids(), data.doc_ids()
    q, d = ADAPTER.embed(encoder, data, params)
    doc_index = {di: j for j, di in enumerate(dids)}
    exclude = {
        i: [doc_index[x] for x in data.excluded.get(qi, ()) if x in doc_index] for i, qi in enumerate(qids)
    }
    exclude = exclude if any(exclude.values()) else None
    own, _, top_idx = search_and_evaluate(
        q, d, qids, dids, data.qrels, sim, k=max(100, params["pool_k"]), exclude=exclude, per_query=True
    )
    per_query = own.pop("per_query")

    def scored_with(variant: str) -> float:
        if variant == sim.variant:
            return own["ndcg10"]
        return search_and_evaluate(q, d, qids, dids, data.qrels, variant, exclude=exclude)[0]["ndcg10"]

    cross = cross_evaluate(scored_with)
    doc_norms = d.norm(dim=-1).cpu().numpy()
    relevant = {
        i: [doc_index[x] for x, r in data.qrels[qi].items() if r > 0 and x in doc_index]
        for i, qi in enumerate(qids)
    }
    if params["irrelevant_pool"] == "corpus":
        d_eff = relevance_magnitude_d(doc_norms, relevant, pool="corpus")
    else:
        # The top-k pool from the exact search's own ranking (the hard negatives the ranking competes with).
        top = top_idx[:, : params["pool_k"]].cpu().numpy()
        rel_norms = [doc_norms[j] for js in relevant.values() for j in js]
        irr_norms = [doc_norms[j] for i, js in relevant.items() for j in top[i] if j not in set(js)]
        d_eff = cohens_d(rel_norms, irr_norms)
    return {
        **own,
        "cross_ndcg10": cross,
        "cohen_d": d_eff,
        "query_norm": norm_stats(q),
        "doc_norm": norm_stats(d),
        "query_norm_cv": coefficient_of_variation(q.norm(dim=-1).cpu().numpy()),
        "per_query": per_query,
    }


def mean_over_parts(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A set evaluated part by part (CQADupStack's forums): every number the mean over the parts, per-query
    results kept under ``<part>/<query>``, and each part's nDCG@10 under ``parts``."""
    first = next(iter(parts.values()))
    out: dict[str, Any] = {}
    for key, value in first.items():
        if key == "per_query":
            out[key] = {f"{p}/{q}": v for p, r in parts.items() for q, v in r["per_query"].items()}
        elif isinstance(value, dict):
            out[key] = {k: _finite_mean([r[key][k] for r in parts.values()]) for k in value}
        else:
            out[key] = _finite_mean([r[key] for r in parts.values()])
    out["parts"] = {p: r["ndcg10"] for p, r in parts.items()}
    return out


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN where there is none, e.g. Cohen's d of a part without negatives)."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def group_means(results: dict[str, Any], key) -> dict[str, float]:
    """Mean of ``key(result)`` per benchmark group, then ``id`` / ``ood`` (means over groups) and ``mean``
    (every group weighs the same, as the paper's category rows do). A user's folder is a group of its
    own that none of ``id``, ``ood``, ``mean`` counts (``mean`` averages users' groups only when a run has
    nothing else); ``user`` is the mean over users' groups."""
    groups: dict[str, list[float]] = {}
    in_domain: dict[str, bool | None] = {}
    for r in results.values():
        groups.setdefault(r["group"], []).append(key(r))
        in_domain[r["group"]] = r["in_domain"]
    out = {g: float(np.mean(v)) for g, v in groups.items()}
    user = {r["group"] for r in results.values() if r.get("user")}
    paper = [g for g in groups if g not in user]
    for label, flag in (("id", True), ("ood", False)):
        vals = [g for g in paper if in_domain[g] == flag]
        if vals:
            out[label] = float(np.mean([out[g] for g in vals]))
    if user:
        out["user"] = float(np.mean([out[g] for g in groups if g in user]))
    out["mean"] = float(np.mean([out[g] for g in (paper or groups)]))
    return out


def aggregate_note(results: dict[str, Any]) -> str:
    """What the run's ``*_mean`` metrics average, in words (for the log and the record)."""
    user = [n for n, r in results.items() if r.get("user")]
    if not user:
        return "the means average the benchmark groups of the test sets"
    if len(user) == len(results):
        return f"only your own folders ({', '.join(user)}): the means average them, nothing paper-comparable"
    return (
        f"your own folders ({', '.join(user)}) are groups of their own (metrics <metric>_<folder>, "
        "<metric>_user): the means, id and ood average the other test sets only"
    )
