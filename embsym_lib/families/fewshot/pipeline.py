"""The few-shot family's steps, in the order its notebook runs them: data (checked against the episode
shapes), the ProtoNet with the run's arm at its scoring step, episodic training, and the test episodes
scored with the run's arm and every fixed arm (the cross-evaluation), with the norms of queries and
prototypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ... import stats
from ...adapters.learn2learn import ADAPTER, evaluate_arms
from ...data import fewshot as data
from ...diagnostics import cross_evaluate, fisher_wanted, norm_stats
from ...records import project_path
from ...runtime import rng_preserved
from .tables import CROSS_ARMS

TEST_EPISODE_SEED = 10_000  # + the run's seed: every arm of one seed is tested on the same episodes


def load_data(params: dict[str, Any]) -> data.FewShotSplits:
    """The dataset's splits, checked against the episode shapes before any training."""
    local = params["dataset"] != "glyphs"
    splits = data.load(
        params["dataset"],
        str(project_path(params["data_dir"])) if local else params["data_dir"],
        params["class_split"],
        params["samples_per_class"],
        params["data_seed"],
        params["jitter"],
        params.get("image_size", data.IMAGE_SIZE),
        params.get("image_channels", 1),
    )
    check_episode_classes(splits, params)
    return splits


def data_extra(splits: data.FewShotSplits) -> dict[str, Any]:
    """What the run's record says about its data: each split's classes and images, and for a user's
    folder where it was read from, how its classes were split and the image format."""
    extra: dict[str, Any] = {"data_sizes": splits.sizes()}
    if splits.details:
        extra["data"] = splits.details
    return extra


def sample_images(split, classes: int = 8):
    """The first image of each of the first ``classes`` classes of ``split`` ([n, C, H, W]), for a figure."""
    from ...adapters.learn2learn import dataset_labels

    first: dict[int, int] = {}
    for i, label in enumerate(dataset_labels(split)):
        if label not in first and len(first) < classes:
            first[label] = i
    return torch.stack([split[i][0] for i in sorted(first.values())])


def check_episode_classes(splits: data.FewShotSplits, params: dict[str, Any]) -> None:
    """Every split must hold as many classes as its episodes draw (local datasets are only counted once
    loaded: miniImageNet's split is fixed by its pickles, Omniglot's by the folders present)."""
    needed = {"train": params["train_ways"], "validation": params["ways"], "test": params["ways"]}
    short = {
        split: len(splits.class_names[split])
        for split, ways in needed.items()
        if len(splits.class_names[split]) < ways
    }
    if short:
        have = ", ".join(f"{split} has {n}" for split, n in short.items())
        raise ValueError(
            f"{splits.name}: episodes need train_ways={needed['train']} and ways={needed['validation']} "
            f"classes per split, but {have}"
        )


def build_model(params: dict[str, Any], splits: data.FewShotSplits, device: str = "cpu"):
    """The ProtoNet (Conv-4 backbone, scorer of the run's arm) on ``device``."""
    return ADAPTER.build_model(params, channels=splits.channels).to(device)


def fisher_prediction(params: dict[str, Any], model, splits: data.FewShotSplits) -> dict[str, Any]:
    """The Fisher predictor (``diagnostics.predict_side``) before training, on the *validation* classes
    embedded by the untrained backbone (eval mode: no statistic changes, no random draw): pairs (an image,
    the prototype of its class from the class's other images), batches of distinct classes so that the
    in-batch negatives are other classes' prototypes, as in an episode. Empty when ``fisher_pairs`` is 0 or
    there are fewer than 2 validation classes."""
    if not fisher_wanted(params):
        return {}
    with rng_preserved():
        return _fisher_prediction(params, model, splits)


def _validation_pairs(params: dict[str, Any], model, splits: data.FewShotSplits):
    """(images, prototypes, batch): pairs (an image, the prototype of its class from the class's other
    images) of the validation classes, in consecutive batches of ``batch`` distinct classes; None when
    ``fisher_pairs`` is 0 or there are fewer than 2 validation classes."""
    emb, labels = ADAPTER.embed(model, splits.validation, params)
    classes = torch.unique(labels)
    batch = min(params["fisher_batch"], classes.numel())
    if not params["fisher_pairs"] or batch < 2:
        return None
    g = torch.Generator().manual_seed(int(params["seed"]))
    queries, prototypes = [], []
    for _ in range(max(1, params["fisher_pairs"] // batch)):
        for c in classes[torch.randperm(classes.numel(), generator=g)[:batch]]:
            members = torch.nonzero(labels == c).flatten()
            pick = members[torch.randint(members.numel(), (1,), generator=g)].item()
            others = members[members != pick]
            queries.append(emb[pick])
            prototypes.append(emb[others].mean(0))
    return torch.stack(queries), torch.stack(prototypes), batch


def _fisher_prediction(params: dict[str, Any], model, splits: data.FewShotSplits) -> dict[str, Any]:
    from ...diagnostics import predict_side

    found = _validation_pairs(params, model, splits)
    if found is None:
        return {}
    queries, prototypes, batch = found
    return predict_side(queries, prototypes, scale=params["scale"], batch_size=batch)


def score_test(params: dict[str, Any], model, splits: data.FewShotSplits) -> dict[str, Any]:
    """The Fisher score test (``diagnostics.magnitude_score_test``) in the dot run, after training: the
    predictor's validation pairs embedded by the trained backbone, each image against the prototypes of
    its batch (an episode of distinct classes). ``{"score_test": ...}`` to merge into the run's
    ``fisher``; empty in other runs."""
    from ...diagnostics import magnitude_score_test, score_test_wanted

    if not score_test_wanted(params):
        return {}
    with rng_preserved():
        found = _validation_pairs(params, model, splits)
    if found is None:
        return {}
    queries, prototypes, batch = found
    episode = torch.arange(len(queries)) // batch
    visible = episode[:, None] == episode[None, :]
    return {
        "score_test": magnitude_score_test(queries, prototypes, visible=visible, seed=int(params["seed"]))
    }


def train(params: dict[str, Any], model, splits: data.FewShotSplits, log=print) -> dict[str, Any]:
    """Episodic training of the run's arm, keeping the best validation checkpoint."""
    return ADAPTER.fit(model, ADAPTER.make_loss(model, params), splits, params, log)


def evaluate(params: dict[str, Any], model, splits: data.FewShotSplits) -> dict[str, Any]:
    """Test accuracy of the run's arm with its 95% CI, the cross-evaluation row on the same episodes,
    the norms of test queries and prototypes, learn's γ; ``{metrics, units}`` (per-episode units).

    Episodes are drawn with ``TEST_EPISODE_SEED + seed``, and every arm is scored on each episode in one
    pass (the embeddings once), so paired comparisons across arms are matched episode by episode.
    """
    variant = params["variant"]
    arms = CROSS_ARMS if variant in CROSS_ARMS else (*CROSS_ARMS, variant)
    result = evaluate_arms(
        model.backbone,
        splits.test,
        {arm: model.scorer_for(arm) for arm in arms},
        params["ways"],
        params["shots"],
        params["queries"],
        params["test_episodes"],
        TEST_EPISODE_SEED + params["seed"],
        model.prototype,
        splits.rotate_classes,
        model.device,
        return_norms=True,
    )
    accuracy = result["accuracy"]
    own = accuracy[variant]
    low, high = stats.t_confidence_interval(own)
    cross = cross_evaluate(lambda arm: accuracy[arm].mean(), CROSS_ARMS)
    metrics = {
        "accuracy": float(own.mean()),
        "accuracy_ci95": float((high - low) / 2),
        **{f"cross_{arm}": value for arm, value in cross.items()},
    }
    # norm_stats takes row norms, so each norm goes in as a 1-d embedding.
    query_norms = norm_stats(result["query_norms"].unsqueeze(-1))
    proto_norms = norm_stats(result["prototype_norms"].unsqueeze(-1))
    metrics.update(
        {
            "query_norm_mean": query_norms["mean"],
            "query_norm_cv": query_norms["cv"],
            "prototype_norm_mean": proto_norms["mean"],
            "prototype_norm_cv": proto_norms["cv"],
        }
    )
    metrics.update(model.scorer.gammas())
    episodes = [f"episode{i}" for i in range(len(own))]
    units = {"accuracy": (episodes, own.tolist())}
    units.update({f"cross_{arm}": (episodes, accuracy[arm].tolist()) for arm in CROSS_ARMS})
    return {"metrics": metrics, "units": units}


def record_of(history: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The run's metrics (test and validation) and curves (loss, validation accuracy, learn's γ)."""
    metrics = {
        **results["metrics"],
        "val_accuracy": history["best_val_accuracy"],
        "best_episode": float(history["best_episode"]),
        "train_seconds": history["train_seconds"],
    }
    curves = {
        "train_loss": {"x": list(range(1, len(history["loss"]) + 1)), "y": history["loss"]},
        "val_accuracy": {"x": history["val_episode"], "y": history["val_accuracy"]},
    }
    if history["gamma_curve"]:
        steps = list(range(1, len(history["gamma_curve"]) + 1))
        curves["gamma_q"] = {"x": steps, "y": [g["gamma_q"] for g in history["gamma_curve"]]}
        curves["gamma_d"] = {"x": steps, "y": [g["gamma_d"] for g in history["gamma_curve"]]}
    return {"metrics": metrics, "curves": curves}


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over ``window`` values (shorter at the start), for plotting noisy episode losses."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return []
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(idx - window, 0)
    return ((c[idx] - c[lo]) / (idx - lo)).tolist()
