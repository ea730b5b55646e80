"""The retrieval family's steps, in the order its notebook runs them: data, the encoder with the grid at
sentence-transformers' scoring hook, the Fisher predictor (before training), training (here or in DDP
processes), evaluation with the cross-evaluation row and the magnitude diagnostics, the record's
metrics, curves and per-query units. RAG is ``rag.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.sentence_transformers import ADAPTER, GridEncoder, with_overrides
from ...data import retrieval as rdata
from ...diagnostics import fisher_metrics, fisher_wanted, score_test_wanted, wants_heldout_pairs
from ...records import project_path
from ...similarity import FIXED_VARIANTS
from .evaluation import IR_METRICS, aggregate_note, evaluate, evaluate_set, group_means

__all__ = ["aggregate_note", "evaluate", "evaluate_set", "group_means"]  # the notebook's evaluation steps

TRAINED_STATE = "trained.pt"
WORKER = "embsym_lib.families.retrieval.pipeline:train_worker"


# ----------------------------------------------------------------------------------------------
# data


def data_root(params: dict[str, Any]) -> Path:
    """Where the data lives: the generated pydoc folder (offline) or ``data_dir`` (paper profile)."""
    if params["data_source"] == "pydoc" and not params["data_dir"]:
        return rdata.pydoc_dir()
    return project_path(params["data_dir"])


def subsample(data, n_queries: int = 0, corpus_size: int = 0):
    """The first ``n_queries`` judged queries, their relevant documents, then other documents in corpus
    order up to ``corpus_size`` (0 = keep all). Deterministic. A set of forums (CQADupStack) is subsampled
    forum by forum, each as a set of its own."""
    from ...data.beir import RetrievalSet, merge_parts

    if data.parts:
        return merge_parts([subsample(part, n_queries, corpus_size) for part in data.parts], data.name)
    qids = data.query_ids()[: n_queries or None]
    qrels = {q: data.qrels[q] for q in qids}
    if corpus_size:
        keep = {d for q in qids for d in qrels[q] if d in data.corpus}
        for d in data.corpus:
            if len(keep) >= corpus_size:
                break
            keep.add(d)
        corpus = {d: doc for d, doc in data.corpus.items() if d in keep}
    else:
        corpus = data.corpus
    return RetrievalSet(
        data.name,
        corpus,
        {q: data.queries[q] for q in qids},
        qrels,
        {q: data.excluded[q] for q in qids if q in data.excluded},
        dict(data.notes),
    )


def needs_data_root(params: dict[str, Any]) -> bool:
    """Whether the run reads anything under the data root (training, a registry test set, the Fisher
    predictor's held-out pairs, RAG): an evaluation-only run of users' folders alone does not, and then
    generates no pydoc benchmark."""
    return bool(
        params.get("train", True)
        or any(not rdata.resolve_test_set(e).user for e in params["test_sets"])
        or wants_heldout_pairs(params)
        or params["rag_sets"]
    )


def prepare_training_data(
    params: dict[str, Any], tests: dict[str, Any] | None = None, dev_query_ids: list[str] | None = None
) -> dict[str, Any]:
    """What training needs: the training pairs and the dev set, without any query a test set asks
    (``tests``), or exactly the dev queries the notebook selected on (``dev_query_ids``: what a
    distributed worker gets). An evaluation-only run (``train`` false) loads neither."""
    p = with_overrides(params)
    if not p.get("train", True):
        return {"root": data_root(p) if needs_data_root(p) else None, "train": [], "dev": None}
    root, source = data_root(p), p["data_source"]
    dev = rdata.load_dev_set(source, root, p["dev_corpus"])  # msmarco_passage: read no more
    if dev_query_ids is not None:  # the same queries, hence the same sub-corpus, as the notebook's
        dev = subsample(rdata.only_queries(dev, dev_query_ids), 0, p["dev_corpus"])
    else:
        dev = subsample(
            rdata.without_test_queries(dev, tests) if tests else dev, p["dev_queries"], p["dev_corpus"]
        )
    return {"root": root, "train": rdata.load_training_pairs(source, root, p["n_train_pairs"]), "dev": dev}


def prepare_data(params: dict[str, Any]) -> dict[str, Any]:
    """Training pairs, dev set (checkpoint selection, disjoint from the test sets' queries), held-out
    pairs (predictor) and the test sets, keyed by their names (a user's ``path:<folder>`` by the
    folder's name)."""
    p = with_overrides(params)
    root = data_root(p) if p.get("train", True) or needs_data_root(p) else None
    tests = {
        rdata.resolve_test_set(entry).name: subsample(
            rdata.load_test_set(entry, root), p["test_queries"], p["test_corpus"]
        )
        for entry in p["test_sets"]
    }
    training = prepare_training_data(p, tests)
    wanted = wants_heldout_pairs(p)
    heldout = rdata.load_heldout_pairs(p["data_source"], root, p["fisher_pairs"]) if wanted else []
    return {**training, "heldout": heldout, "tests": tests}


def user_data_report(tests: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a user should know about each of their own folders: where it is, what the run evaluates
    (after ``test_queries`` / ``test_corpus``) and what it could not use."""
    return {name: {**data.notes, "evaluated": data.sizes()} for name, data in tests.items() if data.notes}


# ----------------------------------------------------------------------------------------------
# the encoder, the Fisher predictor, training


def build(params: dict[str, Any]) -> tuple[GridEncoder, Any]:
    """The run's encoder (the grid plugged into ``similarity_fct``) and its MultipleNegativesRankingLoss."""
    p = with_overrides(params)
    encoder = ADAPTER.build_model(p, objective="ranking")
    return encoder, ADAPTER.make_loss(encoder, p)


def fisher_prediction(encoder: GridEncoder, heldout_pairs, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher condition-number predictor (``diagnostics.predict_side``) on held-out pairs embedded by
    the encoder *before* training: no compared run has trained on them, or from this state. Computed in
    the runs whose variant is in ``fisher_variants`` (it depends on the encoder and seed only)."""
    from ...diagnostics import predict_side

    if not fisher_wanted(params):
        return {}
    n = len(heldout_pairs) - len(heldout_pairs) % params["fisher_batch"]
    if n < params["fisher_batch"]:
        return {}
    q, d = ADAPTER.embed(encoder, heldout_pairs[:n], params)
    out = predict_side(q.cpu(), d.cpu(), scale=params["scale"], batch_size=params["fisher_batch"])
    out["n_pairs"] = n
    return out


def score_test(encoder: GridEncoder, heldout_pairs, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher score test (``diagnostics.magnitude_score_test``) in the dot run, after training: the
    held-out pairs embedded by the trained encoder, each query against every held-out document (its own
    the target). ``{"score_test": ...}`` to merge into the run's ``fisher``; empty in other runs."""
    from ...diagnostics import magnitude_score_test

    if not score_test_wanted(params) or len(heldout_pairs) < 2:
        return {}
    q, d = ADAPTER.embed(encoder, heldout_pairs, params)
    return {"score_test": magnitude_score_test(q.cpu(), d.cpu(), seed=int(params["seed"]))}


def train(
    encoder: GridEncoder, loss, data: dict[str, Any], params: dict[str, Any], log=print
) -> dict[str, Any]:
    """Fine-tune with sentence-transformers' trainer; the best dev-nDCG@10 checkpoint (scored with the run's
    own variant) is restored into the encoder (and learn's γ). With ``train_processes`` > 1 the training
    runs in that many DDP processes (torchrun; gloo on the CPU without CUDA), ``batch_size`` per process,
    and the trained state is loaded back. Returns the history and, under ``similarity``, the run's score."""
    p = with_overrides(params)
    if not p.get("train", True):
        return evaluation_only(encoder)
    if p["train_processes"] > 1:
        trained = train_distributed(encoder, p, data["dev"].query_ids())
    else:
        trained = ADAPTER.fit(encoder, loss, data, p, log)
    return {**trained, "similarity": ADAPTER.similarity(encoder)}


def evaluation_only(encoder: GridEncoder) -> dict[str, Any]:
    """``train``'s result when the run does not train (``train`` false): the encoder as loaded (learn at
    its initial γ), no steps, no dev evaluation."""
    nothing = {"history": [], "best_step": None, "best_dev_ndcg10": None, "total_steps": 0}
    facts = {"world_size": 0, "global_batch_size": 0, "gather_across_devices": False}
    return {**nothing, **facts, "similarity": ADAPTER.similarity(encoder)}


def train_distributed(
    encoder: GridEncoder, params: dict[str, Any], dev_query_ids: list[str]
) -> dict[str, Any]:
    import torch

    from ...distributed import launch

    workdir = Path(params["run_dir"]) / "ddp"
    device = encoder.model.device
    encoder.model.to("cpu")  # rank 0 trains on this GPU: keep it free of the notebook's copy meanwhile
    if device.type == "cuda":
        torch.cuda.empty_cache()
    launch(WORKER, {"params": params, "dev_query_ids": dev_query_ids}, params["train_processes"], workdir)
    state = torch.load(workdir / TRAINED_STATE, map_location="cpu", weights_only=False)
    encoder.model.load_state_dict(state.pop("model"))
    encoder.model.to(device)
    score_state = state.pop("similarity")
    if score_state is not None:
        encoder.score.load_state_dict(score_state)
    return state


def train_worker(spec: dict[str, Any]) -> None:
    """One DDP process of ``train_distributed`` (run by torchrun through ``embsym_lib.distributed``).
    Every process rebuilds the same data and initial encoder from the parameters; rank 0 saves the
    restored best state. Each rank also writes a fingerprint of its final parameters, which must agree."""
    import torch

    from ...distributed import is_main_process, local_device, rank
    from ...runtime import seed_everything

    params = spec["params"]
    seed_everything(params["seed"])
    encoder, loss = build({**params, "device": local_device()})
    data = prepare_training_data(params, dev_query_ids=spec["dev_query_ids"])
    trained = ADAPTER.fit(encoder, loss, data, params, print)
    workdir = Path(params["run_dir"]) / "ddp"
    score = encoder.score
    score_state = score.state_dict() if isinstance(score, torch.nn.Module) else None
    tensors = [t for t in encoder.model.state_dict().values() if t.is_floating_point()]
    tensors += list((score_state or {}).values())
    fingerprint = {
        "rank": rank(),
        "sum": float(sum(t.double().sum().item() for t in tensors)),
        "sq": float(sum(t.double().square().sum().item() for t in tensors)),
        "gather_across_devices": trained["gather_across_devices"],
        "total_steps": trained["total_steps"],
    }
    (workdir / f"rank{rank()}.json").write_text(json.dumps(fingerprint))
    if is_main_process():
        cpu = {k: v.detach().cpu() for k, v in encoder.model.state_dict().items()}
        torch.save({**trained, "model": cpu, "similarity": score_state}, workdir / TRAINED_STATE)


def flat_metrics(
    results: dict[str, Any], trained: dict[str, Any], fisher: dict[str, Any], rag_scores: dict[str, float]
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, r in results.items():
        for m in IR_METRICS:
            metrics[f"{m}_{name}"] = r[m]
        metrics[f"cohen_d_{name}"] = r["cohen_d"]
        metrics[f"query_norm_cv_{name}"] = r["query_norm_cv"]
    for m in IR_METRICS:
        for g, v in group_means(results, lambda r, m=m: r[m]).items():
            metrics[f"{m}_{g}"] = v
    for scored_with in FIXED_VARIANTS:
        metrics[f"xeval_ndcg10_{scored_with}"] = group_means(
            results, lambda r, s=scored_with: r["cross_ndcg10"][s]
        )["mean"]
    paper = {n: r for n, r in results.items() if not r.get("user")} or results  # as group_means does
    metrics["cohen_d_mean"] = float(np.nanmean([r["cohen_d"] for r in paper.values()]))
    metrics["query_norm_cv_mean"] = float(np.nanmean([r["query_norm_cv"] for r in paper.values()]))
    if trained["best_dev_ndcg10"] is not None:  # None: an evaluation-only run has no dev evaluation
        metrics["dev_ndcg10_best"] = trained["best_dev_ndcg10"]
    if hasattr(trained["similarity"], "gammas"):
        metrics.update(trained["similarity"].gammas())  # of the restored best checkpoint
    metrics.update(fisher_metrics(fisher))
    metrics.update(rag_scores)
    return metrics


def training_curves(history: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    if not history:  # an evaluation-only run
        return {}
    steps = [h["step"] for h in history]
    curves = {
        "dev_ndcg10_own": [h["ndcg10"] for h in history],
        "dev_ndcg10_cosine": [h["ndcg10_cosine"] for h in history],
        "dev_query_norm_mean": [h["query_norm"]["mean"] for h in history],
        "dev_query_norm_cv": [h["query_norm"]["cv"] for h in history],
        "dev_doc_norm_mean": [h["doc_norm"]["mean"] for h in history],
        "dev_doc_norm_cv": [h["doc_norm"]["cv"] for h in history],
    }
    for key in ("gamma_q", "gamma_d"):
        if key in history[-1]:
            curves[key] = [h.get(key) for h in history]
    return {name: {"x": steps, "y": ys} for name, ys in curves.items()}


def json_results(results: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in r.items() if k != "per_query"} for name, r in results.items()}


def units(results: dict[str, Any]) -> dict[str, tuple[list[str], list[float]]]:
    """Per-query results of every test set, for the record's sidecar: ``<metric>/<test set>``."""
    out = {}
    for name, r in results.items():
        qids = list(r["per_query"])
        for m in IR_METRICS:
            out[f"{m}/{name}"] = (qids, [r["per_query"][q][m] for q in qids])
    return out


def record_extra(encoder: GridEncoder, data, results, trained, fisher, rag_out, params) -> dict[str, Any]:
    """The record's ``extra``: per-set results, the Fisher prediction, RAG examples, training facts
    (``train`` false: an evaluation-only run, the pretrained encoder), what the means average and, for
    users' own folders, what the run used of them."""
    info = encoder.info
    return {
        "train": bool(params.get("train", True)),
        "stage": "fine-tuned" if params.get("train", True) else "pretrained (evaluation only)",
        "aggregates": aggregate_note(results),
        "user_data": user_data_report(data["tests"]),
        "datasets": json_results(results),
        "fisher": fisher,
        "rag_examples": rag_out["examples"],
        "best_step": trained["best_step"],
        "total_steps": trained["total_steps"],
        "encoder": {
            "name": info.name,
            "checkpoint": info.checkpoint,
            "pooling": info.pooling if params["pooling"] == "auto" else params["pooling"],
            "precision": encoder.precision,
        },
        "data_root": str(data["root"]) if data["root"] is not None else "",
        "train_pairs": len(data["train"]),
        "training": {k: trained[k] for k in ("world_size", "global_batch_size", "gather_across_devices")},
    }
