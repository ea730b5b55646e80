"""The STS family's steps, in the order its notebook runs them: the pairs, the encoder with the grid's
pair score at sentence-transformers' hooks, the untrained baseline, training with the regression loss,
evaluation (the trained scoring, sentence 2 as the query, the cross-evaluation row) and the magnitude
diagnostics, the record's metrics and curves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from ...adapters.sentence_transformers import (
    ADAPTER,
    GridEncoder,
    pair_correlations,
    pair_evaluator,
    with_overrides,
)
from ...data import sts as data
from ...diagnostics import norm_stats
from ...records import project_path
from ...similarity import FIXED_VARIANTS


def load_pairs(params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Train/dev/test pairs (sentence1, sentence2, score in [0, 5]) for the run's dataset."""
    if params["dataset"] == "synthetic":
        splits = data.generate_pairs(
            params["n_train"], params["n_dev"], params["n_test"], params["data_seed"]
        )
    else:
        splits = data.load_stsb(project_path(params["data_dir"]))
        if params["nli_file"]:
            nli = data.load_allnli(
                project_path(params["nli_file"]), params["nli_max_pairs"], params["data_seed"]
            )
            splits["train"] = pd.concat([splits["train"], nli], ignore_index=True)
    if params.get("test_file"):
        splits["test"] = data.read_pairs_file(project_path(params["test_file"]))
    if params["max_train_pairs"]:
        splits["train"] = (
            splits["train"]
            .sample(n=min(params["max_train_pairs"], len(splits["train"])), random_state=params["data_seed"])
            .reset_index(drop=True)
        )
    return splits


def unit_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """The split with its gold score divided by 5 (sentence-transformers' STS convention: [0, 1])."""
    return frame.assign(score=frame["score"] / data.MAX_SCORE)


def build(params: dict[str, Any]) -> tuple[GridEncoder, Any]:
    """The run's encoder (the λ-scaled pair score plugged into the hooks) and its regression loss."""
    p = with_overrides(params)
    encoder = ADAPTER.build_model(p, objective="pairs")
    return encoder, ADAPTER.make_loss(encoder, p)


def trainable_parameters(encoder: GridEncoder) -> int:
    return sum(p.numel() for p in encoder.model.parameters() if p.requires_grad)


def evaluate(encoder: GridEncoder, frame: pd.DataFrame, params: dict[str, Any]) -> dict[str, float]:
    """Metrics of one split (the adapter's pair evaluator: pearson, spearman, spearman_swapped and the
    cross-evaluation ``spearman_as_<v>``/``pearson_as_<v>``) plus magnitude diagnostics of its embeddings."""
    evaluator = pair_evaluator(
        unit_scores(frame), encoder.score, name="", batch_size=params["eval_batch_size"]
    )
    metrics = dict(evaluator(encoder.model))
    a, b = evaluator.last_embeddings
    stats = norm_stats(torch.cat([a, b]))
    metrics["norm_mean"], metrics["norm_cv"] = stats["mean"], stats["cv"]
    # Do magnitudes themselves track similarity? (they must not, for a symmetric cosine-like use)
    norm_product = (a.norm(dim=-1) * b.norm(dim=-1)).numpy()
    metrics["norm_product_spearman"] = pair_correlations(
        np.asarray(frame["score"], dtype=float), norm_product
    )[1]
    metrics.update({k: float(v) for k, v in encoder.score.gammas().items()})
    return metrics


def train(
    encoder: GridEncoder, loss, splits: dict[str, pd.DataFrame], params: dict[str, Any], log=print
) -> dict:
    """SentenceTransformerTrainer with the regression loss (the encoder's overrides applied, e.g. scratch's
    learning rate and epochs); the dev split is evaluated after every epoch with ``evaluate_dev``."""
    if not params.get("train", True):
        return {"loss_x": [], "loss_y": [], "dev_x": [], "dev_y": []}  # evaluation only: nothing trained
    dev = unit_scores(splits["dev"]) if params["evaluate_dev"] else None
    return ADAPTER.fit(encoder, loss, {"train": unit_scores(splits["train"]), "dev": dev}, params, log)


def metrics_of(
    test: dict[str, float], untrained: dict[str, float], history: dict[str, list]
) -> dict[str, float]:
    """The record's metrics: the test split after training, its untrained baseline, the final loss."""
    metrics = dict(test)
    metrics["spearman_untrained"] = untrained["spearman"]
    metrics["pearson_untrained"] = untrained["pearson"]
    for v in FIXED_VARIANTS:
        metrics[f"spearman_untrained_as_{v}"] = untrained[f"spearman_as_{v}"]
    if history["loss_y"]:
        metrics["train_loss_final"] = history["loss_y"][-1]
    return metrics


def curves_of(history: dict[str, list]) -> dict[str, dict[str, list]]:
    if not history["loss_x"] and not history["dev_x"]:  # an evaluation-only run
        return {}
    curves = {"train_loss": {"x": history["loss_x"], "y": history["loss_y"]}}
    if history["dev_x"]:
        curves["dev_spearman"] = {"x": history["dev_x"], "y": history["dev_y"]}
    return curves


def record_extra(encoder: GridEncoder, splits: dict[str, pd.DataFrame], trainable: int, params) -> dict:
    from .tables import PAPER_NAMES

    trains = bool(params.get("train", True))
    return {
        "paper_name": PAPER_NAMES[params["variant"]],
        "query_side": "sentence1",
        "train_pairs": len(splits["train"]) if trains else 0,
        "test_pairs": len(splits["test"]),
        "trainable_parameters": trainable if trains else 0,
        "train": trains,
        "stage": "fine-tuned" if trains else "pretrained (evaluation only)",
        "test_data": test_data(params),
        "precision": encoder.precision,
    }


def test_data(params: dict[str, Any]) -> str:
    """Where the test pairs come from, in words (the record's ``extra`` and the notebook's log)."""
    if params.get("test_file"):
        return f"your file {project_path(params['test_file'])}"
    return "the generated pairs' test split" if params["dataset"] == "synthetic" else "STS-B's test split"
