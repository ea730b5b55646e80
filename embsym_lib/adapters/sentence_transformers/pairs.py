"""The pair objective (STS): the grid's paired score scaled by λ in a regression loss and an evaluator
with their scoring step replaced, and training with the library's trainer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...similarity import FIXED_VARIANTS, Similarity, make_similarity


class PairScore(nn.Module):
    """λ-scaled grid score of aligned pairs (sentence 1 is the query side).

    The paper scales dot by λ = 0.01 so raw dot products land in the label range; it is silent on
    qnorm/dnorm. ``scale_rule``: ``"per_side"`` multiplies every embedding by √λ before scoring (cosine
    unchanged, dot gets λ, qnorm/dnorm √λ, learn λ^((2 - γq - γd) / 2): the factor follows the number of
    magnitudes left in the score); ``"any_side"`` multiplies the score by λ for every variant but cosine.
    A positive factor changes no correlation; it only sets where training starts relative to the labels.
    """

    def __init__(
        self, variant: str, score_scale: float = 0.01, scale_rule: str = "per_side", init_gamma: float = 0.5
    ):
        super().__init__()
        if scale_rule not in ("per_side", "any_side"):
            raise ValueError(f"unknown scale_rule {scale_rule!r}; valid rules are: per_side, any_side")
        if not score_scale > 0:
            raise ValueError(f"score_scale must be > 0, got {score_scale!r}")
        learn = {"init_gamma_q": init_gamma, "init_gamma_d": init_gamma} if variant == "learn" else {}
        self.similarity: Similarity = make_similarity(variant, **learn)
        self.variant, self.score_scale, self.scale_rule = variant, float(score_scale), scale_rule

    def forward(self, sentence1: torch.Tensor, sentence2: torch.Tensor) -> torch.Tensor:
        if self.scale_rule == "per_side":
            side = math.sqrt(self.score_scale)
            return self.similarity.paired(sentence1 * side, sentence2 * side)
        factor = 1.0 if self.variant == "cosine" else self.score_scale
        return factor * self.similarity.paired(sentence1, sentence2)

    def gammas(self) -> dict[str, float]:
        if not hasattr(self.similarity, "gammas"):
            return {}
        with torch.no_grad():
            return self.similarity.gammas()

    def extra_repr(self) -> str:
        return f"score_scale={self.score_scale}, scale_rule={self.scale_rule!r}"


class PairScoreRegressionLoss(nn.Module):
    """MSE between ``similarity_fct(u, v)`` and the gold score in [0, 1] (CosineSimilarityLoss's shape).
    ``similarity_fct`` is a module, so learn's γ are trained with the encoder."""

    def __init__(self, model, similarity_fct: PairScore, loss_fct: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.similarity_fct = similarity_fct
        self.loss_fct = loss_fct if loss_fct is not None else nn.MSELoss()

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        scores = self.similarity_fct(embeddings[0], embeddings[1])
        return self.loss_fct(scores.float(), labels.float().view(-1))

    def get_config_dict(self) -> dict[str, Any]:
        f = self.similarity_fct
        return {"variant": f.variant, "score_scale": f.score_scale, "scale_rule": f.scale_rule}


def pair_correlations(labels, scores) -> tuple[float, float]:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    scores = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(scores)) or np.ptp(scores) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(labels, scores).statistic), float(spearmanr(labels, scores).statistic)


def pair_evaluator(frame, pair_score: PairScore, name: str = "", batch_size: int = 64):
    """sentence-transformers' EmbeddingSimilarityEvaluator scoring with the run's ``PairScore`` over a
    frame (sentence1, sentence2, score in [0, 1]). Besides ``pearson``/``spearman`` it reports
    ``spearman_swapped`` (sentence 2 as the query) and ``spearman_as_<v>``/``pearson_as_<v>``: the same
    embeddings under every fixed variant (a row of the cross-evaluation matrix). ``last_embeddings``:
    the (sentence 1, sentence 2) embeddings of the last call."""
    import numpy as np
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from ...diagnostics import cross_evaluate, on_embeddings

    class GridSimilarityEvaluator(EmbeddingSimilarityEvaluator):
        def __init__(self):
            super().__init__(
                list(frame["sentence1"]),
                list(frame["sentence2"]),
                list(frame["score"]),
                name=name,
                write_csv=False,
                batch_size=batch_size,
            )
            self.pair_score, self.primary_metric = pair_score, "spearman"
            self.last_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            a = torch.as_tensor(self.embed_inputs(model, self.sentences1)).float()
            b = torch.as_tensor(self.embed_inputs(model, self.sentences2)).float()
            self.last_embeddings = (a, b)
            labels = np.asarray(self.scores, dtype=float)
            with torch.no_grad():
                device = next(self.pair_score.parameters(), torch.empty(0)).device
                trained = self.pair_score(a.to(device), b.to(device)).cpu().numpy()
                swapped = self.pair_score(b.to(device), a.to(device)).cpu().numpy()
            pearson, spearman = pair_correlations(labels, trained)
            metrics = {
                "pearson": pearson,
                "spearman": spearman,
                "spearman_swapped": pair_correlations(labels, swapped)[1],
            }
            cross_spearman = cross_evaluate(
                on_embeddings(a, b, lambda s: pair_correlations(labels, s.diagonal().numpy())[1])
            )
            cross_pearson = cross_evaluate(
                on_embeddings(a, b, lambda s: pair_correlations(labels, s.diagonal().numpy())[0])
            )
            for variant in FIXED_VARIANTS:
                metrics[f"spearman_as_{variant}"] = cross_spearman[variant]
                metrics[f"pearson_as_{variant}"] = cross_pearson[variant]
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return GridSimilarityEvaluator()


def train_pairs(
    model, loss, frame, p: dict[str, Any], output_dir: str, dev_evaluator=None
) -> dict[str, list]:
    """Fine-tune with SentenceTransformerTrainer (AdamW, linear decay, warm-up ``warmup_ratio``) on a
    frame (sentence1, sentence2, score in [0, 1]); learn's γ at ``gamma_lr`` (0: ``lr``). Returns the
    logged loss and, with a dev evaluator, the dev Spearman per epoch."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    mapping = {r"raw_gamma": p["gamma_lr"] or p["lr"]} if p["variant"] == "learn" else {}
    steps_per_epoch = max(1, math.ceil(len(frame) / p["batch_size"]))
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=p["epochs"],
        per_device_train_batch_size=p["batch_size"],
        learning_rate=p["lr"],
        warmup_steps=p["warmup_ratio"],  # a float < 1 is a fraction of all steps (transformers 5)
        weight_decay=p["weight_decay"],
        lr_scheduler_type="linear",
        seed=p["seed"],
        data_seed=p["seed"],
        logging_steps=max(1, steps_per_epoch // 4),
        eval_strategy="epoch" if dev_evaluator is not None else "no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=model.device.type == "cpu",
        learning_rate_mapping=mapping,
    )
    train = Dataset.from_dict(
        {
            "sentence1": list(frame["sentence1"]),
            "sentence2": list(frame["sentence2"]),
            "score": [float(s) for s in frame["score"]],
        }
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=loss, evaluator=dev_evaluator
    )
    trainer.train()
    history = trainer.state.log_history
    curve = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    dev = [(h["step"], h["eval_dev_spearman"]) for h in history if "eval_dev_spearman" in h]
    return {
        "loss_x": [s for s, _ in curve],
        "loss_y": [v for _, v in curve],
        "dev_x": [s for s, _ in dev],
        "dev_y": [v for _, v in dev],
    }
