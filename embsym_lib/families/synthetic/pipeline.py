"""The synthetic testbed's steps, in the order its notebook runs them: task, Fisher prediction (before
training), training, evaluation with cross-evaluation and the magnitude diagnostics."""

from __future__ import annotations

from typing import Any

import torch

from ... import testbed
from ...diagnostics import (
    fisher_metrics,
    fisher_wanted,
    magnitude_score_test,
    predict_side,
    score_test_wanted,
)
from ...similarity import FIXED_VARIANTS

SYMMETRIC_TASKS = ("symmetric", "symmetric_signal")


def make_task(params: dict[str, Any]):
    """The generated task (``testbed``'s 2 x 2 design or the ablation); its data come from ``data_seed``,
    the same for every run."""
    if params["task"] in SYMMETRIC_TASKS:
        return testbed.make_symmetric_task(
            params["data_seed"],
            params["n_train"],
            params["n_test"],
            params["latent_dim"],
            params["input_dim"],
            params["magnitude_noise"],
            params["input_noise"],
            magnitude_signal=params["magnitude_signal"] if params["task"] == "symmetric_signal" else 0.0,
        )
    nuisance = params["task"] == "asymmetric_nuisance"
    return testbed.make_asymmetric_task(
        params["data_seed"],
        params["n_docs"],
        params["n_train"],
        params["n_test"],
        params["n_heldout"],
        params["latent_dim"],
        params["input_dim"],
        0.0 if nuisance else params["quality_weight"],
        params["input_noise"],
        params["n_relevant"],
        doc_magnitude_noise=params["magnitude_noise"] if nuisance else 0.0,
    )


def fisher_prediction(task, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher predictor on held-out queries embedded by this seed's *untrained* encoders: nothing any
    compared run trained on (the referee's non-circularity condition). Empty for the symmetric task."""
    if params["task"] in SYMMETRIC_TASKS or not fisher_wanted(params):
        return {}
    torch.manual_seed(int(params["seed"]))
    init_q = testbed.mlp(task.train_q_x.shape[1], params["hidden"], params["embedding_dim"])
    init_d = testbed.mlp(task.doc_x.shape[1], params["hidden"], params["embedding_dim"])
    return predict_side(*testbed.heldout_embeddings(task, init_q, init_d), scale=params["scale"])


def score_test(task, q_encoder, d_encoder, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher score test (``diagnostics.magnitude_score_test``) in the dot run, after training: the
    held-out queries embedded by the trained encoders, each against every document, its first relevant
    document the target. ``{"score_test": ...}``; empty in other runs."""
    if not score_test_wanted(params):
        return {}
    with torch.no_grad():
        q, docs = q_encoder(task.heldout_q_x), d_encoder(task.doc_x)
    return {"score_test": magnitude_score_test(q, docs, task.heldout_pos, seed=int(params["seed"]))}


def train(task, params: dict[str, Any]) -> dict[str, Any]:
    """Train the run's variant (the testbed's own loop: no domain library to patch)."""
    common = dict(
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        hidden=params["hidden"],
        embed_dim=params["embedding_dim"],
    )
    variant, seed = params["variant"], int(params["seed"])
    if params["task"] in SYMMETRIC_TASKS:
        return testbed.train_symmetric(task, variant, seed, **common)
    return testbed.train_asymmetric(
        task,
        variant,
        seed,
        scale=params["scale"],
        ablation=params["task"] == "ablation",
        sgd_lr=params["sgd_lr"],
        **common,
    )


def evaluate(task, trained: dict[str, Any], params: dict[str, Any], fisher: dict[str, Any]) -> dict[str, Any]:
    """Test metrics under the run's own scoring, the cross-evaluation row (the same embeddings scored with
    each fixed variant), magnitude diagnostics, the per-query units; ``{metrics, extra, units}``."""
    if params["task"] in SYMMETRIC_TASKS:
        metrics = testbed.evaluate_symmetric(task, trained["encoder"], trained["similarity"])
        cross = {
            v: testbed.evaluate_symmetric(task, trained["encoder"], None, v)["spearman"]
            for v in FIXED_VARIANTS
        }
        metrics.update({f"xeval_{v}_spearman": s for v, s in cross.items()})
        extra: dict[str, Any] = {"cross_eval": {"metric": "spearman", "scores": cross}}
        units: dict[str, Any] = {}  # Spearman over pairs is not a mean over units
    else:
        encoders = trained["q_encoder"], trained["d_encoder"]
        metrics = testbed.evaluate_asymmetric(task, *encoders, trained["similarity"], per_query=True)
        per_query = metrics.pop("per_query")
        units = {"ndcg@10": (list(per_query), list(per_query.values()))}
        metrics.update(testbed.magnitude_shuffle(task, *encoders, trained["similarity"], int(params["seed"])))
        cross = {v: testbed.evaluate_asymmetric(task, *encoders, None, v)["ndcg@10"] for v in FIXED_VARIANTS}
        metrics.update({f"xeval_{v}_ndcg@10": s for v, s in cross.items()})
        fisher = {**fisher, **score_test(task, *encoders, params)}
        metrics.update(fisher_metrics(fisher))
        extra = {"cross_eval": {"metric": "ndcg@10", "scores": cross}, "fisher": fisher}
    if params["variant"] == "learn":
        metrics.update(trained["similarity"].gammas())
    return {"metrics": metrics, "extra": extra, "units": units}


def run_task(params: dict[str, Any]) -> dict[str, Any]:
    """Every step at once (benchmarks and tests): ``{metrics, curves, extra, units}``."""
    task = make_task(params)
    fisher = fisher_prediction(task, params)
    trained = train(task, params)
    return {**evaluate(task, trained, params, fisher), "curves": trained["curves"]}
