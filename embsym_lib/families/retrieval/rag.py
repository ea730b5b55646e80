"""The RAG step: retrieve top-k passages with the trained retriever, answer with a seq2seq reader, score
exact match and token F1 (SQuAD-style). Offline the reader is a random-init tiny T5: its answers mean
nothing, it exercises the code path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...adapters.sentence_transformers import GridEncoder, encode_texts
from ...data import retrieval as rdata
from ...records import project_path


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


def load_reader(params: dict[str, Any]):
    """(tokenizer, seq2seq model). ``offline:tiny-t5`` is a T5 built from a config with random weights
    and MiniLM's tokenizer: it exercises the code path only, its answers mean nothing."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if params["reader"] == "offline:tiny-t5":
        from ...adapters.sentence_transformers import offline_minilm_path

        tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
        return tokenizer, tiny_t5(tokenizer, params["seed"]).eval()
    path = (
        str(project_path(params["model_dir"]) / params["reader"]) if params["model_dir"] else params["reader"]
    )
    return AutoTokenizer.from_pretrained(path), AutoModelForSeq2SeqLM.from_pretrained(path).eval()


def rag_prompt(question: str, passages: list[str]) -> str:
    """The paper's reader prompt (v1 App. I.3): the question, an instruction, the retrieved passages
    numbered in rank order, one per line, then "Answer:"."""
    context = "\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    return f"Question: {question}\nAnswer the question based on the following context:\n{context}\nAnswer:"


def rag(encoder: GridEncoder, similarity, params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Retrieve top-k passages with the trained retriever, generate with the reader, score EM / token F1:
    ``{metrics, examples}`` (``rag_em_<set>``, ``rag_f1_<set>`` and their means ``rag_em``, ``rag_f1``)."""
    import torch

    from ...data.beir import doc_text
    from ...ir_metrics import exact_match, exact_search, token_f1
    from ...runtime import resolve_device

    if not params["rag_sets"]:
        return {"metrics": {}, "examples": {}}
    tokenizer, reader = load_reader(params)
    reader.to(resolve_device(params["device"]))
    info, batch_size = encoder.info, params["eval_batch_size"]
    metrics, examples = {}, {}
    for name in params["rag_sets"]:
        questions, corpus = rdata.load_rag_set(name, root)
        questions = questions[: params["rag_questions"] or None]
        # offline the reader means nothing and encoding a whole corpus cost more than the test sets
        ids = list(corpus)[: params["rag_corpus"] or None]
        texts = [doc_text(corpus[i]) for i in ids]
        q = encode_texts(encoder.model, [x["question"] for x in questions], batch_size, info.query_prefix)
        d = encode_texts(encoder.model, texts, batch_size, info.doc_prefix)
        _, idx = exact_search(q, d, similarity, k=params["rag_top_k"])
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


def rag_table(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's RAG numbers (Table 4: Contriever retrievers, Flan-T5-Large) beside ours, EM and token F1
    x100 per question set and variant: ours as mean ± sd over seeds per (encoder, reader), "not run" for
    the paper's sets that no record answers."""
    from ...reference import load_reference
    from ...similarity import VARIANTS
    from ...stats import format_mean_std
    from .. import param_column

    paper = load_reference("rag_sts_clip")
    paper = paper[paper["experiment"] == "rag"]
    variants = [v for v in VARIANTS if v in paper.columns]
    rows = []
    for _, r in paper.iterrows():
        rows.append(
            {"source": "paper (Contriever, Flan-T5-Large)", "set": r["setting"], "metric": r["metric"]}
        )
        rows[-1].update({v: f"{r[v]:.1f}" for v in variants})
    if not df.empty:
        df = df.assign(encoder=param_column(df, "encoder", "?"), reader=param_column(df, "reader", "?"))
    ours_sets = sorted({c.split("_", 2)[2] for c in df.columns if c.startswith(("rag_em_", "rag_f1_"))})
    for (encoder, reader), group in df.groupby(["encoder", "reader"]) if ours_sets else []:
        for name in ours_sets:
            for metric in ("em", "f1"):
                col = f"rag_{metric}_{name}"
                if col not in group or group[col].isna().all():
                    continue
                row = {"source": f"ours ({encoder}, reader {reader})", "set": name, "metric": metric}
                row.update(
                    {
                        v: format_mean_std(group.loc[group["variant"] == v, col].dropna(), 100.0, 1)
                        for v in variants
                    }
                )
                rows.append(row)
    for name in sorted(set(paper["setting"]) - set(ours_sets)):
        rows.append(
            {"source": "ours", "set": name, "metric": "em / f1", **dict.fromkeys(variants, "not run")}
        )
    return pd.DataFrame(rows).set_index(["source", "set", "metric"])
