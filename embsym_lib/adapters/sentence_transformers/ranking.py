"""The ranking objective (retrieval): MultipleNegativesRankingLoss with the grid's pairwise score, a dev
evaluator ranking by exact search, and training with the library's trainer."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...similarity import check_variant
from .encoders import GridEncoder, encode_texts
from .scores import grid_similarity, score_function

# ----------------------------------------------------------------------------------------------
# The scoring hooks


def retrieval_similarity(variant: str, init_gamma: float = 0.5, scale_matched: bool = False):
    """What scores a ranking run: the named function of a fixed variant, or a LearnableSimilarity
    module for ``learn`` (its gammas become parameters of the loss, which the trainer optimizes).
    ``scale_matched``: the variant wrapped in ``similarity.ScaleMatched`` (the fixed-scale ablation);
    the evaluators rank with the unwrapped variant (``grid_similarity``), which orders the same."""
    from ...similarity import LearnableSimilarity, ScaleMatched, make_similarity

    if scale_matched:
        return ScaleMatched(make_similarity(variant, init_gamma_q=init_gamma, init_gamma_d=init_gamma))
    if check_variant(variant) == "learn":
        return LearnableSimilarity(init_gamma, init_gamma)
    return score_function(variant)


def retrieval_loss(model, similarity, scale: float = 20.0, gather_across_devices: bool = False):
    """sentence-transformers' own MultipleNegativesRankingLoss (query -> document, in-batch negatives),
    patched only at the scoring step; ``scale`` = α = 1/τ for every variant. ``gather_across_devices``:
    under DDP each query also sees the other processes' documents (the library's all-gather)."""
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(
        model, scale=scale, similarity_fct=similarity, gather_across_devices=gather_across_devices
    )


# ----------------------------------------------------------------------------------------------
# Evaluators and trainers: the library's own, scoring through the grid


def retrieval_evaluator(
    dev_set, similarity, name: str = "dev", batch_size: int = 64, query_prefix: str = "", doc_prefix: str = ""
):
    """A sentence-transformers evaluator for validation during training: encodes the dev queries and
    corpus, ranks by exact search with the run's own scoring and with cosine, and records norm
    statistics (and γ for learn) in ``.history``. The trainer sees ``{name}_ndcg10`` (own scoring)."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    from ...diagnostics import norm_stats
    from ...ir_metrics import search_and_evaluate

    sim = grid_similarity(similarity)

    class RetrievalEvaluator(SentenceEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = "ndcg10"
            self.history: list[dict] = []

        def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
            qids = dev_set.query_ids()
            q = encode_texts(model, [dev_set.queries[i] for i in qids], batch_size, query_prefix)
            d = encode_texts(model, dev_set.doc_texts(), batch_size, doc_prefix)
            own, _, _ = search_and_evaluate(q, d, qids, dev_set.doc_ids(), dev_set.qrels, sim)
            cos, _, _ = search_and_evaluate(q, d, qids, dev_set.doc_ids(), dev_set.qrels, "cosine")
            entry = {
                "step": int(steps),
                "epoch": float(epoch),
                "ndcg10": own["ndcg10"],
                "ndcg10_cosine": cos["ndcg10"],
                "query_norm": norm_stats(q),
                "doc_norm": norm_stats(d),
            }
            if hasattr(sim, "gammas"):
                entry.update(sim.gammas())
            self.history.append(entry)
            metrics = {"ndcg10": own["ndcg10"], "ndcg10_cosine": cos["ndcg10"], "mrr10": own["mrr10"]}
            return self.prefix_name_to_metrics(metrics, name)

    return RetrievalEvaluator()


def best_checkpoint_callback(evaluator, modules: list[torch.nn.Module]):
    """A TrainerCallback that keeps, in memory, the state of ``modules`` (the encoder and, for learn, the
    similarity) at the best ``evaluator`` primary metric, and restores it when training ends."""
    import copy

    from transformers import TrainerCallback

    class BestCheckpoint(TrainerCallback):
        def __init__(self):
            self.best_metric, self.best_step, self.states = float("-inf"), None, None

        def on_step_end(self, args, state, control, **kwargs):
            # The last step is a candidate checkpoint too, even when it is not a multiple of eval_steps.
            if state.global_step >= state.max_steps:
                control.should_evaluate = True
            return control

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            last = evaluator.history[-1]
            if last["ndcg10"] > self.best_metric:
                self.best_metric, self.best_step = last["ndcg10"], last["step"]
                self.states = [
                    copy.deepcopy({k: v.detach().clone() for k, v in m.state_dict().items()}) for m in modules
                ]

        def on_train_end(self, args, state, control, **kwargs):
            if self.states is not None:
                for m, s in zip(modules, self.states, strict=True):
                    m.load_state_dict(s)

    return BestCheckpoint()


def train_retriever(
    model,
    pairs: list[tuple[str, str]],
    loss,
    evaluator,
    *,
    output_dir: str,
    seed: int,
    lr: float,
    batch_size: int,
    epochs: float = 1.0,
    max_steps: int = -1,
    n_evals: int = 3,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.0,
    gamma_lr: float = 0.0,
    query_prefix: str = "",
    doc_prefix: str = "",
):
    """Fine-tune with SentenceTransformerTrainer (the paper's optimizer: AdamW β 0.9/0.98, ε 1e-8,
    grad-norm 1.0, cosine decay), evaluating ``n_evals`` times; restores the best dev checkpoint.
    Returns the best-checkpoint callback (best_step, best_metric, total_steps)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    from ...distributed import world_size

    train = Dataset.from_dict(
        {"anchor": [query_prefix + q for q, _ in pairs], "positive": [doc_prefix + d for _, d in pairs]}
    )
    steps_per_epoch = len(pairs) // (batch_size * world_size())
    total = max_steps if max_steps > 0 else max(1, math.ceil(steps_per_epoch * epochs))
    eval_steps = max(1, math.ceil(total / max(1, n_evals)))
    learnable = isinstance(loss.similarity_fct, torch.nn.Module)
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.98,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_ratio,
        seed=seed,
        data_seed=seed,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_steps=max(1, eval_steps),
        report_to="none",
        dataloader_drop_last=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        disable_tqdm=True,
        use_cpu=model.device.type == "cpu",
        # Under torchrun on the CPU; naming a backend in a single process would make Accelerate expect a group.
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        learning_rate_mapping={r"raw_gamma_": gamma_lr} if gamma_lr > 0 and learnable else {},
    )
    best = best_checkpoint_callback(evaluator, [model] + ([loss.similarity_fct] if learnable else []))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=loss, evaluator=evaluator, callbacks=[best]
    )
    trainer.train()
    best.total_steps = trainer.state.global_step
    return best


def fit_retriever(
    enc: GridEncoder, loss, data: dict[str, Any], p: dict[str, Any], output_dir: str, log
) -> dict:
    """The ranking objective's ``fit``: the dev evaluator (its step-0 point is a trajectory's start, not a
    candidate), ``train_retriever``, the best dev checkpoint restored into the encoder (and γ)."""
    from ...distributed import world_size

    info = enc.info
    evaluator = retrieval_evaluator(
        data["dev"],
        enc.score,
        batch_size=p["eval_batch_size"],
        query_prefix=info.query_prefix,
        doc_prefix=info.doc_prefix,
    )
    evaluator(enc.model, epoch=0.0, steps=0)
    best = train_retriever(
        enc.model,
        data["train"],
        loss,
        evaluator,
        output_dir=output_dir,
        seed=p["seed"],
        lr=p["lr"],
        batch_size=p["batch_size"],
        epochs=p["epochs"],
        max_steps=p["max_steps"],
        n_evals=p["n_evals"],
        weight_decay=p["weight_decay"],
        warmup_ratio=p["warmup_ratio"],
        gamma_lr=p["gamma_lr"],
        query_prefix=info.query_prefix,
        doc_prefix=info.doc_prefix,
    )
    log(f"trained {best.total_steps} steps; best dev nDCG@10 {best.best_metric:.4f} at step {best.best_step}")
    return {
        "history": evaluator.history,
        "best_step": best.best_step,
        "best_dev_ndcg10": best.best_metric,
        "total_steps": best.total_steps,
        "world_size": world_size(),
        "global_batch_size": p["batch_size"] * world_size(),
        "gather_across_devices": bool(loss.gather_across_devices),
    }
