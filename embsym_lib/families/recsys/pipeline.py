"""The recsys family's steps, in the order its notebook runs them: RecBole's data and our grid model,
training (RecBole's Trainer), test evaluation with the per-user units, cross-evaluation, the norm
diagnostics, the curves.

The setup is the field's standard one (the paper gives none): RecBole's BPR (matrix factorisation) and
LightGCN, subclassed so that the user -> item score of the loss and of full-sort prediction goes through
``embsym_lib.similarity`` (``embsym_lib.adapters.recbole``); RecBole's Config, data preparation, uniform
negative sampler, Trainer (early stopping on valid NDCG@10) and evaluator (Recall@10, MRR@10, NDCG@10,
full ranking over all items, training items masked).

The "relevance counter" prediction of the paper's gradient argument (an item that is the positive of many
users grows in norm) is measured as the Spearman correlation between an item's embedding norm and its
popularity (training interaction count).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ... import diagnostics
from ...adapters.recbole import ADAPTER, item_popularity
from ...runtime import rng_preserved
from .spec import DATASETS, TOPK, inter_columns, inter_file

# Our metric name -> RecBole's result key.
RECBOLE_KEYS: dict[str, str] = {"ndcg_at_10": "ndcg@10", "recall_at_10": "recall@10", "mrr_at_10": "mrr@10"}
INTER_COLUMNS: list[str] = ["user_id", "item_id", "rating", "timestamp"]


def recbole_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The family's RecBole keys: the dataset's standard preprocessing, the split and full-sort evaluation
    protocol and the fixed training choices (the run's own hyperparameters: ``recbole.recbole_keys``)."""
    available = set(inter_columns(inter_file(params["dataset"], params.get("data_dir", ""))))
    return {
        **DATASETS.get(params["dataset"], {}),  # a user's own dataset: every interaction, unfiltered
        "load_col": {"inter": [c for c in INTER_COLUMNS if c in available]},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [TOPK],
        "valid_metric": f"NDCG@{TOPK}",
        "metric_decimal_place": 6,
        "train_neg_sample_args": {
            "distribution": "uniform",
            "sample_num": 1,
            "alpha": 1.0,
            "dynamic": False,
            "candidate_num": 0,
        },
        "reproducibility": True,
        "require_pow": False,
        "eval_step": 1,
        "learner": "adam",
        "weight_decay": 0.0,
    }


# --- 1. data ----------------------------------------------------------------------------------------


def build(params: dict[str, Any]):
    """RecBole Config -> dataset -> split dataloaders -> our grid model (``adapters.recbole.RecBoleSetup``),
    in ``params["run_dir"]``."""
    return ADAPTER.build_model(params, recbole_settings(params))


def fisher_prediction(setup, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher predictor (``diagnostics.predict_side``) before training: the *validation*
    interactions' (user, item) pairs, embedded as the untrained model scores them — data no compared run
    trained on, from a state no run has trained. Empty when ``fisher_pairs`` is 0 or too few pairs."""
    if not diagnostics.fisher_wanted(params):
        return {}
    with rng_preserved():
        return _fisher_prediction(setup, params)


def _validation_pairs(setup, params: dict[str, Any]):
    """(user ids, item ids, user embeddings, item embeddings) of up to ``fisher_pairs`` validation
    interactions (a seeded sample), as the model scores them; None when there are fewer than one batch."""
    if not params["fisher_pairs"]:
        return None
    valid = setup.valid_data._dataset
    users = valid.inter_feat[valid.uid_field].long()
    items = valid.inter_feat[valid.iid_field].long()
    n = min(params["fisher_pairs"], users.numel())
    n -= n % params["fisher_batch"]
    if n < params["fisher_batch"]:
        return None
    order = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(int(params["seed"])))[:n]
    with torch.no_grad():
        user_e, item_e = setup.model.scoring_embeddings()
    return users[order], items[order], user_e.detach().cpu(), item_e.detach().cpu()


def _fisher_prediction(setup, params: dict[str, Any]) -> dict[str, Any]:
    found = _validation_pairs(setup, params)
    if found is None:
        return {}
    users, items, user_e, item_e = found
    return diagnostics.predict_side(
        user_e[users], item_e[items], scale=params["scale"], batch_size=params["fisher_batch"]
    )


def score_test(setup, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher score test (``diagnostics.magnitude_score_test``) in the dot run, after training: the
    predictor's validation (user, item) pairs, each user against every item (unfiltered; RecBole's
    padding item 0 hidden), the validation item the target. ``{"score_test": ...}`` to merge into the
    run's ``fisher``; empty in other runs."""
    if not diagnostics.score_test_wanted(params):
        return {}
    with rng_preserved():
        found = _validation_pairs(setup, params)
    if found is None:
        return {}
    users, items, user_e, item_e = found
    visible = torch.ones(len(users), len(item_e), dtype=torch.bool)
    visible[:, 0] = False
    out = diagnostics.magnitude_score_test(user_e[users], item_e, items, visible, seed=int(params["seed"]))
    return {"score_test": out}


def describe_data(setup) -> dict[str, Any]:
    train = setup.train_data.dataset
    return {
        "dataset": setup.config["dataset"],
        "users": int(setup.dataset.user_num - 1),
        "items": int(setup.dataset.item_num - 1),
        "interactions": int(setup.dataset.inter_num),
        "train_interactions": int(train.inter_num),
        "valid_interactions": int(setup.valid_data._dataset.inter_num),
        "test_interactions": int(setup.test_data._dataset.inter_num),
        "sparsity": float(setup.dataset.sparsity),
    }


# --- 3. training ------------------------------------------------------------------------------------


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


@torch.no_grad()
def norm_snapshot(model, popularity: np.ndarray) -> dict[str, float]:
    """Item/user norm statistics of the scoring embeddings and ρ(item norm, item popularity)."""
    users, items = model.scoring_embeddings()
    item_norms = items[1:].norm(dim=-1).cpu().numpy()
    return {
        "item_norm_mean": float(item_norms.mean()),
        "user_norm_mean": float(users[1:].norm(dim=-1).mean()),
        "spearman_item_norm_popularity": _spearman(item_norms, popularity[1:]),
    }


def train(setup, params: dict[str, Any], log=None) -> dict[str, Any]:
    """RecBole's Trainer.fit (early stopping on valid NDCG@10, best checkpoint in run_dir), then the best
    checkpoint reloaded; every validation also records the norm snapshot. ``ADAPTER.fit``'s history."""
    popularity = item_popularity(setup.train_data)
    return ADAPTER.fit(
        setup.model,
        ADAPTER.make_loss(setup, params),
        setup,
        params,
        log,
        on_valid=lambda model: norm_snapshot(model, popularity),
    )


def curves(
    history: dict[str, Any], profile: dict[str, list[float]] | None = None
) -> dict[str, dict[str, list]]:
    out = {"train_loss": {"x": history["train_epoch"], "y": history["train_loss"]}}
    epochs = [h["epoch"] for h in history["valid"]]
    for key in ("valid_score", "spearman_item_norm_popularity", "item_norm_mean", "user_norm_mean"):
        name = "valid_ndcg_at_10" if key == "valid_score" else key
        out[name] = {"x": epochs, "y": [float(h[key]) for h in history["valid"]]}
    if profile:
        out["item_norm_by_popularity"] = profile
    return out


# --- 4. evaluation and cross-evaluation -------------------------------------------------------------


def _ours(result) -> dict[str, float]:
    return {name: float(result[key]) for name, key in RECBOLE_KEYS.items()}


def evaluate(setup, history: dict[str, Any]) -> dict[str, Any]:
    """Test metrics with RecBole's evaluator (full ranking), the best validation NDCG@10 and its epoch,
    learn's γ; ``{metrics, units}``, ``units`` holding each test user's NDCG@10 from RecBole's own NDCG
    metric on the evaluation struct it just computed (its mean is ``ndcg_at_10``)."""
    from recbole.evaluator.metrics import NDCG

    trainer = history["trainer"]
    captured = {}
    evaluate_struct = trainer.evaluator.evaluate

    def keep(struct):
        captured["struct"] = struct
        return evaluate_struct(struct)

    trainer.evaluator.evaluate = keep
    try:
        metrics: dict[str, Any] = _ours(trainer.evaluate(setup.test_data, load_best_model=False))
    finally:
        trainer.evaluator.evaluate = evaluate_struct
    ndcg = NDCG(setup.config)
    per_user = ndcg.metric_info(*ndcg.used_info(captured["struct"]))[:, TOPK - 1]
    # FullSortEvalDataLoader evaluates its users in uid_list order (it cannot shuffle)
    users = [f"user{int(u)}" for u in setup.test_data.uid_list]
    valid = history["valid"]
    if valid:
        best = max(range(len(valid)), key=lambda i: (valid[i]["valid_score"], -i))
        metrics["valid_ndcg_at_10"] = float(valid[best]["valid_score"])
        metrics["best_epoch"] = float(best)
        metrics["epochs_run"] = float(len(valid))
    metrics.update({k: float(v) for k, v in setup.model.gammas().items()})
    return {"metrics": metrics, "units": {"ndcg_at_10": (users, per_user.tolist())}}


def cross_evaluate(setup, history: dict[str, Any]) -> dict[str, float]:
    """The trained embeddings re-scored with each fixed variant, test NDCG@10 (RecBole's evaluator)."""
    trainer = history["trainer"]

    def ndcg_scored_with(variant: str) -> float:
        with ADAPTER.scored_with(setup, variant):
            return _ours(trainer.evaluate(setup.test_data, load_best_model=False))["ndcg_at_10"]

    return diagnostics.cross_evaluate(ndcg_scored_with)


# --- 5. diagnostics ---------------------------------------------------------------------------------


def _test_positives(setup) -> dict[int, list[int]]:
    test = setup.test_data._dataset
    users = test.inter_feat[test.uid_field].numpy()
    items = test.inter_feat[test.iid_field].numpy()
    positives: dict[int, list[int]] = {}
    for u, i in zip(users, items, strict=True):
        positives.setdefault(int(u), []).append(int(i))
    return positives


@torch.no_grad()
def norm_diagnostics(setup) -> dict[str, float]:
    """Norms of the scoring embeddings and the relevance-counter statistics.

    - ``item_norm_mean`` / ``item_norm_cv`` / ``user_norm_mean`` / ``user_norm_cv``.
    - ``spearman_item_norm_popularity``: Spearman ρ between an item's norm and its number of training
      interactions, over every item of the dataset (RecBole's padding row excluded).
    - ``magnitude_d_top10``: Cohen's d of item norms, each test user's held-out items vs the top-10
      non-held-out items it ranks (training items masked, as in full-sort evaluation).
    """
    model = setup.model
    model.eval()
    users, items = ADAPTER.embed(setup)
    popularity = item_popularity(setup.train_data)
    item_norms = items.norm(dim=-1).cpu().numpy()
    user_stats, item_stats = diagnostics.norm_stats(users[1:]), diagnostics.norm_stats(items[1:])
    out = {
        "item_norm_mean": item_stats["mean"],
        "item_norm_cv": item_stats["cv"],
        "user_norm_mean": user_stats["mean"],
        "user_norm_cv": user_stats["cv"],
        "spearman_item_norm_popularity": _spearman(item_norms[1:], popularity[1:]),
    }
    positives = _test_positives(setup)
    test_users = torch.as_tensor(sorted(positives))
    scores = ADAPTER.similarity(setup).pairwise(users[test_users], items).cpu().numpy()
    seen = setup.train_data.dataset.inter_matrix(form="csr")[test_users.numpy()]
    scores[seen.nonzero()] = -np.inf
    scores[:, 0] = -np.inf
    relevant = {row: positives[int(u)] for row, u in enumerate(test_users.tolist())}
    out["magnitude_d_top10"] = diagnostics.relevance_magnitude_d(
        item_norms, relevant, pool="top_k", scores=scores, k=TOPK
    )
    return out


def popularity_profile(setup, bins: int = 10) -> dict[str, list[float]]:
    """Mean item norm per popularity decile (the relevance-counter plot)."""
    _, items = ADAPTER.embed(setup)
    norms = items[1:].detach().norm(dim=-1).cpu().numpy()
    popularity = item_popularity(setup.train_data)[1:]
    order = np.argsort(popularity, kind="stable")
    chunks = np.array_split(order, bins)
    return {
        "x": [float(np.mean(popularity[c])) for c in chunks],
        "y": [float(np.mean(norms[c])) for c in chunks],
    }


def run_task(params: dict[str, Any]) -> dict[str, Any]:
    """Every step at once (tests, benchmarks): ``{metrics, curves, extra, units}`` as the notebook records."""
    setup = build(params)
    data = describe_data(setup)
    history = train(setup, params)
    result = evaluate(setup, history)
    cross = cross_evaluate(setup, history) if params["cross_evaluate"] else {}
    result["metrics"].update(norm_diagnostics(setup))
    return {
        **result,
        "curves": curves(history, popularity_profile(setup)),
        "extra": {"data": data, "cross_ndcg_at_10": cross, "valid_history": history["valid"]},
    }
