"""Few-shot classification with Prototypical Networks: the query -> prototype score under each variant.

The task is asymmetric: a query image is scored against class prototypes (means of support embeddings),
never the other way round. The paper (v3) reports only a qualitative outcome for this family: dnorm
(prototypes normalized, query magnitude kept) beats cosine and ProtoNets' squared-Euclidean default.
Setups are therefore the field's standard ones (see notebooks/fewshot.ipynb): Conv-4, N-way K-shot
episodes from learn2learn, accuracy with a 95% confidence interval over >= 600 test episodes of
classes never seen in meta-training.

Arms: the grid (cosine, dot, qnorm, dnorm, learn) times a temperature ``scale``, plus ``euclidean``
(-||q - p||^2 times ``euclidean_scale``). For one query, dnorm ranks prototypes like cosine and qnorm
like dot, so their accuracies differ from cosine / dot only through training; each run therefore also
scores its own embeddings with every fixed arm on the same test episodes (a cross-evaluation row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..data import fewshot as data
from ..records import project_path
from ..symmetry import asymmetric
from . import FamilySpec

ARMS: tuple[str, ...] = ("cosine", "dot", "qnorm", "dnorm", "learn", "euclidean")
CROSS_ARMS: tuple[str, ...] = ("cosine", "dot", "qnorm", "dnorm", "euclidean")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")
PAPER_CLAIM = "dnorm beats cosine and the squared-Euclidean default of Prototypical Networks"


# ------------------------------------------------------------------------------------------- validation


def _positive_int(params: dict[str, Any], name: str, minimum: int = 1) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_float(params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def validate(params: dict[str, Any]) -> None:
    """Family checks before any compute: dataset and its files, episode shapes, class counts, numbers."""
    dataset = params.get("dataset")
    if dataset not in data.DATASETS:
        raise ValueError(
            f"unknown few-shot dataset {dataset!r}; valid datasets are: {', '.join(data.DATASETS)}"
        )
    ways = _positive_int(params, "ways", 2)
    shots = _positive_int(params, "shots")
    queries = _positive_int(params, "queries")
    train_ways = _positive_int(params, "train_ways", 2)
    train_queries = _positive_int(params, "train_queries")
    for name in ("episodes", "eval_every", "val_episodes", "test_episodes", "hidden", "samples_per_class"):
        _positive_int(params, name)
    _positive_int(params, "lr_halve_every", 0)
    _positive_int(params, "torch_threads", 0)
    _positive_int(params, "data_seed", 0)
    for name in ("lr", "scale", "euclidean_scale"):
        _positive_float(params, name)
    jitter = params.get("jitter")
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter <= 2:
        raise ValueError(f"jitter must be a number in [0, 2], got {jitter!r}")
    if params.get("prototype") not in ("raw", "normalized"):
        raise ValueError(f"prototype must be 'raw' or 'normalized', got {params.get('prototype')!r}")
    if params.get("device") not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {params.get('device')!r}")

    if dataset in ("glyphs", "omniglot"):
        split = params.get("class_split")
        if (
            not isinstance(split, (list, tuple))
            or len(split) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in split)
        ):
            raise ValueError(
                f"class_split must be three positive integers [train, validation, test], got {split!r}"
            )
        n_train, n_val, n_test = split
        if n_train < train_ways:
            raise ValueError(
                f"class_split has {n_train} training classes, fewer than train_ways={train_ways}"
            )
        if min(n_val, n_test) < ways:
            raise ValueError(
                f"class_split {list(split)}: validation and test need at least ways={ways} classes each"
            )
    per_class = {"glyphs": params.get("samples_per_class"), "omniglot": 20, "miniimagenet": 600}[dataset]
    needed = shots + max(queries, train_queries)
    if needed > per_class:
        raise ValueError(
            f"shots + queries = {needed} images per class, but {dataset} has {per_class} per class"
        )
    if dataset == "glyphs":
        available = len(data.glyph_inventory())
        if sum(params["class_split"]) > available:
            raise ValueError(
                f"class_split {list(params['class_split'])} needs {sum(params['class_split'])} glyph "
                f"classes; the fonts give {available}"
            )
    else:
        root = params.get("data_root")
        if not isinstance(root, str) or not root:
            raise ValueError(
                f"dataset {dataset!r} needs data_root: a local directory (nothing is downloaded)"
            )
        (data.check_omniglot if dataset == "omniglot" else data.check_miniimagenet)(str(project_path(root)))


# ------------------------------------------------------------------------------------------- pipeline


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no GPU is visible")
    return name


def load_data(params: dict[str, Any]) -> data.FewShotSplits:
    """The dataset's splits, checked against the episode shapes before any training."""
    splits = data.load(
        params["dataset"],
        str(project_path(params["data_root"])) if params["dataset"] != "glyphs" else params["data_root"],
        params["class_split"],
        params["samples_per_class"],
        params["data_seed"],
        params["jitter"],
    )
    check_episode_classes(splits, params)
    return splits


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


def build_model(params: dict[str, Any], splits: data.FewShotSplits):
    """(Conv-4 backbone, scorer of the run's arm); the learn arm's gammas train with the backbone."""
    from ..adapters.learn2learn import PrototypeScorer, conv4

    backbone = conv4(splits.channels, params["hidden"])
    return backbone, PrototypeScorer(params["variant"], params["scale"], params["euclidean_scale"])


def train(params: dict[str, Any], backbone, scorer, splits: data.FewShotSplits, log=print) -> dict[str, Any]:
    from ..adapters.learn2learn import train_protonet

    return train_protonet(
        backbone,
        scorer,
        splits.train,
        splits.validation,
        train_ways=params["train_ways"],
        shots=params["shots"],
        train_queries=params["train_queries"],
        episodes=params["episodes"],
        lr=params["lr"],
        lr_halve_every=params["lr_halve_every"],
        eval_every=params["eval_every"],
        val_ways=params["ways"],
        val_queries=params["queries"],
        val_episodes=params["val_episodes"],
        val_seed=20_000 + params["seed"],
        prototype=params["prototype"],
        rotate_classes=splits.rotate_classes,
        device=resolve_device(params["device"]),
        log=log,
    )


def evaluate(params: dict[str, Any], backbone, scorer, splits: data.FewShotSplits) -> dict[str, Any]:
    """Test accuracy of the run's arm with its 95% CI, and the cross-evaluation row, on the same episodes.

    Episodes are drawn with ``10_000 + seed``: every arm at one seed is tested on the same episodes,
    so paired comparisons across arms are matched episode by episode.
    """
    from ..adapters.learn2learn import PrototypeScorer, evaluate_arms
    from ..diagnostics import norm_stats

    scorers = {arm: PrototypeScorer(arm, params["scale"], params["euclidean_scale"]) for arm in CROSS_ARMS}
    scorers[params["variant"]] = scorer
    result = evaluate_arms(
        backbone,
        splits.test,
        scorers,
        params["ways"],
        params["shots"],
        params["queries"],
        params["test_episodes"],
        10_000 + params["seed"],
        params["prototype"],
        splits.rotate_classes,
        resolve_device(params["device"]),
        return_norms=True,
    )
    own = result["accuracy"][params["variant"]]
    low, high = stats.t_confidence_interval(own)
    metrics = {
        "accuracy": float(own.mean()),
        "accuracy_ci95": float((high - low) / 2),
        **{f"cross_{arm}": float(result["accuracy"][arm].mean()) for arm in CROSS_ARMS},
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
    metrics.update(scorer.gammas())
    episodes = [f"episode{i}" for i in range(len(own))]
    units = {"accuracy": (episodes, own.tolist())}
    units.update({f"cross_{arm}": (episodes, result["accuracy"][arm].tolist()) for arm in CROSS_ARMS})
    return {"metrics": metrics, "units": units}


# --------------------------------------------------------------------------------------------- report


def _axis_values(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    if name in df.columns:
        return df[name]
    return df["params"].map(lambda p: (p or {}).get(name, default))


def episode_ci_table(df: pd.DataFrame) -> pd.DataFrame:
    """The few-shot convention beside the seed spread: each run's 95% CI half-width over its test
    episodes (accuracy %), mean over seeds, per arm."""
    rows = []
    order = {a: i for i, a in enumerate(ARMS)}
    for (dataset, shots), sub in df.groupby(["dataset", "shots"], sort=True):
        for arm, vs in sorted(sub.groupby("variant"), key=lambda kv: order.get(kv[0], 99)):
            if "accuracy_ci95" in vs:
                rows.append(
                    {
                        "dataset": dataset,
                        "shots": shots,
                        "arm": arm,
                        "± 95% CI over episodes (per run, %)": round(
                            float(vs["accuracy_ci95"].mean()) * 100, 2
                        ),
                    }
                )
    return pd.DataFrame(rows)


def cross_matrix(sub: pd.DataFrame) -> pd.DataFrame:
    """Rows: arm trained with; columns: arm scored with; mean test accuracy (%) over seeds."""
    order = [a for a in ARMS if a in set(sub.variant)]
    out = {}
    for arm in order:
        runs = sub[sub.variant == arm]
        out[arm] = {
            col: float(np.nanmean([(m or {}).get(f"cross_{col}", np.nan) for m in runs["metrics"]])) * 100
            for col in CROSS_ARMS
        }
    return pd.DataFrame(out).T.reindex(columns=list(CROSS_ARMS)).round(2)


def report(df: pd.DataFrame) -> None:
    """Ours beside the paper's qualitative claim, per dataset and shot setting; never crashes on partial data."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if df is None or df.empty or "accuracy" not in df.columns:
        display(Markdown("**Few-shot:** no complete runs with an accuracy yet."))
        return
    df = df.copy()
    df["dataset"] = _axis_values(df, "dataset", "glyphs")
    # The records frame holds every family's axes, so an int axis may arrive as float.
    df["shots"] = _axis_values(df, "shots", 1).map(lambda v: int(v) if pd.notna(v) else v)
    df = df[df["accuracy"].notna()]
    display(
        Markdown(
            f"**Paper (v3, qualitative only):** {PAPER_CLAIM}. No numbers are published; the claims engine "
            "tests the direction over seeds. Accuracy is the mean over the test episodes; the per-run 95% CI "
            "is over episodes, the ± over seeds."
        )
    )
    display(episode_ci_table(df))

    for (dataset, shots), sub in df.groupby(["dataset", "shots"], sort=True):
        display(
            Markdown(
                f"**Cross-evaluation, {dataset} {int(sub['params'].iloc[0].get('ways', 5))}-way {shots}-shot** "
                "(rows: trained with; columns: scored with; accuracy %). dnorm columns equal cosine and qnorm "
                "equal dot by construction: for one query they rank prototypes identically."
            )
        )
        matrix = cross_matrix(sub)
        display(matrix)
        if {"cosine", "dnorm"} <= set(matrix.index):
            display(
                Markdown(
                    f"Same embeddings, other score: cosine-trained runs score {matrix.loc['cosine', 'cosine']:.2f} and "
                    f"dnorm-trained runs {matrix.loc['dnorm', 'cosine']:.2f} when both are scored with cosine, so "
                    "any dnorm − cosine gap is a training effect (query magnitude changing the gradients), not an "
                    "inference one."
                )
            )
        norm_columns = [
            c for c in ("query_norm_mean", "query_norm_cv", "prototype_norm_cv") if c in sub.columns
        ]
        if norm_columns:
            norms = (
                sub.groupby("variant")[norm_columns]
                .mean()
                .reindex([a for a in ARMS if a in set(sub.variant)])
            )
            display(Markdown("Test-episode norms per training arm (mean over seeds; CV = σ/μ):"))
            display(norms.round(3))
        learn = sub[sub.variant == "learn"]
        if not learn.empty and "gamma_d" in learn.columns:
            display(
                Markdown(
                    f"learn: γq = {stats.format_mean_std(learn['gamma_q'].astype(float).tolist(), 1, 3)}, "
                    f"γd = {stats.format_mean_std(learn['gamma_d'].astype(float).tolist(), 1, 3)} "
                    "(1 = that side normalized; dnorm is γq=0, γd=1)"
                )
            )

    groups = list(df.groupby(["dataset", "shots"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, ((dataset, shots), sub) in zip(axes[0], groups, strict=True):
        arms = [a for a in ARMS if a in set(sub.variant)]
        means = [sub[sub.variant == a]["accuracy"].astype(float).mean() * 100 for a in arms]
        stds = [
            np.nan_to_num(sub[sub.variant == a]["accuracy"].astype(float).std(ddof=1)) * 100 for a in arms
        ]
        ax.bar(arms, means, yerr=stds, capsize=3, color=["C0" if a != "dnorm" else "C3" for a in arms])
        lo = min(means) - 2 * max(stds + [1.0])
        ax.set_ylim(max(0.0, lo), min(100.0, max(means) + 2 * max(stds + [1.0])))
        ax.set_title(f"{dataset} {shots}-shot")
        ax.set_ylabel("test accuracy %")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    plt.show()


SPEC = FamilySpec(
    name="fewshot",
    title="Few-shot classification (Prototypical Networks)",
    notebook="fewshot.ipynb",
    description=(
        "Prototypical Networks (Conv-4, learn2learn episodes): query embedding q scored against class "
        "prototypes d under each variant, plus the squared-Euclidean default; N-way K-shot accuracy with a "
        "95% CI over >= 600 test episodes of unseen classes. Offline: generated font glyphs; paper: "
        "Omniglot and miniImageNet."
    ),
    tasks={"fewshot": asymmetric("fewshot", "query", "prototype", "query image → class prototype")},
    primary_metric="accuracy",
    metrics=("accuracy", "val_accuracy"),
    variants=ARMS,
    grid_axes=("shots", "dataset"),
    metric_scale=100.0,
    validate=validate,
    report=report,
    extra={"paper_claim": PAPER_CLAIM},
)
