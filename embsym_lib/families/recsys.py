"""Recommender systems: user -> item top-k recommendation, scored with the grid inside RecBole.

The paper (v3) reports only a qualitative outcome here (the one-sided variants beat cosine) and no setup,
so the setup is the field's standard one (see notebooks/recsys.ipynb): RecBole's BPR (matrix
factorisation) and LightGCN, subclassed so that the user -> item score of the loss and of full-sort
prediction goes through ``embsym_lib.similarity`` (``embsym_lib.adapters.recbole``); RecBole's Config,
data preparation, uniform negative sampler, Trainer (early stopping on valid NDCG@10) and evaluator
(Recall@10, MRR@10, NDCG@10, full ranking over all items, training items masked).

The "relevance counter" prediction of the paper's gradient argument (an item that is the positive of many
users grows in norm) is tested per variant as the Spearman correlation between an item's embedding norm
and its popularity (training interaction count).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..diagnostics import norm_stats, relevance_magnitude_d
from ..records import project_path
from ..similarity import FIXED_VARIANTS
from ..stats import format_mean_std
from ..symmetry import asymmetric
from . import FamilySpec

TOPK = 10
METRICS: tuple[str, ...] = ("ndcg_at_10", "recall_at_10", "mrr_at_10")
# Our metric name -> RecBole's result key.
RECBOLE_KEYS: dict[str, str] = {"ndcg_at_10": "ndcg@10", "recall_at_10": "recall@10", "mrr_at_10": "mrr@10"}
# Kept in step with embsym_lib.adapters.recbole.MODELS / LOSSES, named here so that discovering the family
# and validating parameters never imports RecBole (seconds).
MODELS: tuple[str, ...] = ("bpr", "lightgcn")
LOSSES: tuple[str, ...] = ("bpr", "infonce")
# Items whose magnitude enters the score under each variant (the item side is not normalized).
ITEM_MAGNITUDE_SCORED: tuple[str, ...] = ("dot", "qnorm", "learn")

# The field's standard preprocessing per dataset (RecBole keys). Every rating counts as an implicit
# interaction unless a rating floor is given; k-core filters drop users/items with fewer interactions.
DATASETS: dict[str, dict[str, Any]] = {
    # RecBole's shipped example, used as is (RecBole's own ml-100k defaults: no filtering).
    "ml-100k": {},
    # RecBole's MovieLens-1M benchmark setting: ratings >= 3 are positives, 10-core users and items.
    "ml-1m": {
        "val_interval": {"rating": "[3,inf)"},
        "user_inter_num_interval": "[10,inf)",
        "item_inter_num_interval": "[10,inf)",
    },
    # Amazon review categories as RecBole atomic files (RecSysDatasets' conversion): the usual 5-core.
    **{
        name: {"user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)"}
        for name in ("Amazon_Beauty", "Amazon_Sports_and_Outdoors", "Amazon_Toys_and_Games")
    },
}
SHIPPED_DATASETS: tuple[str, ...] = ("ml-100k",)
INTER_COLUMNS: list[str] = ["user_id", "item_id", "rating", "timestamp"]

PAPER_CLAIM = (
    "Recommendation is asymmetric (user → item): the paper (v3) reports, qualitatively and without numbers, "
    "that the one-sided variants (qnorm / dnorm) beat cosine. Its gradient argument also predicts that "
    'items relevant to many users grow in norm ("relevance counter": item norm ↔ popularity).'
)
TASK = asymmetric(
    "recommendation",
    query="user",
    candidate="item",
    description="s(user, item); full-sort ranking of all items per user, training items masked",
)


def _adapter():
    from ..adapters import recbole as recbole_adapter

    return recbole_adapter


# --- data -------------------------------------------------------------------------------------------


def shipped_dataset_dir(dataset: str) -> Path:
    """RecBole's packaged example folder, located without importing RecBole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise ValueError("recbole is not installed in this environment")
    return Path(spec.origin).parent / "dataset_example" / dataset


def inter_file(dataset: str, data_path: str) -> Path:
    """Where RecBole will read the dataset's interactions from (ml-100k: the copy inside recbole)."""
    if dataset in SHIPPED_DATASETS:
        return shipped_dataset_dir(dataset) / f"{dataset}.inter"
    return project_path(data_path) / dataset / f"{dataset}.inter"


def check_dataset(dataset: Any, data_path: Any) -> Path:
    """One clear error for an unknown dataset or a missing atomic file, before RecBole starts (a missing
    folder would make RecBole try to download it, and prompt on ``input()`` for large ones)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown recsys dataset {dataset!r}; valid datasets are: {', '.join(DATASETS)}")
    if dataset not in SHIPPED_DATASETS and not data_path:
        raise ValueError(
            f"dataset {dataset!r} needs data_path: the folder holding {dataset}/{dataset}.inter "
            "(RecBole atomic files; only ml-100k ships offline)"
        )
    path = inter_file(dataset, str(data_path))
    if not path.is_file():
        raise ValueError(
            f"RecBole atomic file not found: {path} (expected <data_path>/{dataset}/{dataset}.inter, "
            "tab-separated with a header like 'user_id:token\\titem_id:token\\trating:float\\ttimestamp:float')"
        )
    header = path.open().readline().rstrip("\n").split("\t")
    fields = {column.split(":")[0] for column in header}
    missing = {"user_id", "item_id"} - fields
    if missing:
        raise ValueError(f"{path}: header {header} lacks {sorted(missing)} (RecBole 'name:type' columns)")
    return path


def recbole_settings(params: dict[str, Any]) -> dict[str, Any]:
    """RecBole config keys for one grid point: the dataset's standard preprocessing, the split and full-sort
    evaluation protocol, the training hyperparameters, and our grid keys."""
    path = inter_file(params["dataset"], params.get("data_path", ""))
    available = {c.split(":")[0] for c in path.open().readline().rstrip("\n").split("\t")}
    return {
        **DATASETS[params["dataset"]],
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
        "embedding_size": params["embedding_size"],
        "n_layers": params["n_layers"],
        "reg_weight": params["reg_weight"],
        "require_pow": False,
        "epochs": params["epochs"],
        "stopping_step": params["stopping_step"],
        "eval_step": 1,
        "train_batch_size": params["train_batch_size"],
        "eval_batch_size": params["eval_batch_size"],
        "learner": "adam",
        "learning_rate": params["learning_rate"],
        "weight_decay": 0.0,
        "similarity_variant": params["variant"],
        "score_scale": float(params["scale"]),
        "grid_loss": params["loss"],
    }


# --- validation -------------------------------------------------------------------------------------


def validate(params: dict[str, Any]) -> None:
    check_dataset(params.get("dataset"), params.get("data_path", ""))
    if params.get("model") not in MODELS:
        raise ValueError(
            f"unknown recommender model {params.get('model')!r}; valid models are: {', '.join(MODELS)}"
        )
    if params.get("loss") not in LOSSES:
        raise ValueError(f"unknown loss {params.get('loss')!r}; valid losses are: {', '.join(LOSSES)}")
    for name in ("embedding_size", "epochs", "stopping_step", "train_batch_size", "eval_batch_size"):
        if name in params and (not isinstance(params[name], int) or params[name] < 1):
            raise ValueError(f"{name} must be a positive integer, got {params[name]!r}")
    if "n_layers" in params and (not isinstance(params["n_layers"], int) or params["n_layers"] < 0):
        raise ValueError(f"n_layers must be a non-negative integer, got {params['n_layers']!r}")
    for name in ("learning_rate", "scale"):
        if name in params and not (isinstance(params[name], (int, float)) and params[name] > 0):
            raise ValueError(f"{name} must be a positive number, got {params[name]!r}")
    if "reg_weight" in params and not (
        isinstance(params["reg_weight"], (int, float)) and params["reg_weight"] >= 0
    ):
        raise ValueError(f"reg_weight must be a non-negative number, got {params['reg_weight']!r}")


# --- pipeline ---------------------------------------------------------------------------------------


def configure_torch(params: dict[str, Any]) -> None:
    """Thread count for the CPU (0 keeps torch's default). On a shared 2-core machine two spinning
    threads per process make an MF epoch ~30x slower than one thread."""
    threads = int(params.get("cpu_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def build(params: dict[str, Any], run_dir: Path):
    """RecBole Config -> dataset -> split dataloaders -> our grid model (``adapters.recbole.RecBoleSetup``)."""
    adapter = _adapter()
    adapter.attach_log_file(run_dir)
    data_path = str(project_path(params["data_path"])) if params.get("data_path") else ""
    return adapter.build_recbole(
        params["model"], params["dataset"], data_path, recbole_settings(params), Path(run_dir), params["seed"]
    )


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


def train(setup, run_dir: Path):
    """RecBole's Trainer.fit (early stopping on valid NDCG@10, best checkpoint in run_dir), then the best
    checkpoint reloaded. Returns the trainer (``valid_history`` holds every epoch's validation)."""
    adapter = _adapter()
    popularity = adapter.item_popularity(setup.train_data)
    with adapter.working_directory(Path(run_dir)):
        trainer = adapter.RecordingTrainer(
            setup.config, setup.model, on_valid=lambda model: norm_snapshot(model, popularity)
        )
        trainer.fit(setup.train_data, setup.valid_data, saved=True, verbose=True, show_progress=False)
        trainer.tensorboard.close()
    adapter.load_best_checkpoint(trainer)
    return trainer


def _ours(result) -> dict[str, float]:
    return {name: float(result[key]) for name, key in RECBOLE_KEYS.items()}


def evaluate(trainer, setup) -> dict[str, Any]:
    """Test metrics with RecBole's evaluator (full ranking), plus the best validation NDCG@10 and its epoch,
    and ``per_user``: each test user's NDCG@10 from RecBole's own NDCG metric (for ``units``)."""
    from recbole.evaluator.metrics import NDCG

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
    metrics["per_user"] = ([f"user{int(u)}" for u in setup.test_data.uid_list], per_user.tolist())
    history = trainer.valid_history
    if history:
        best = max(range(len(history)), key=lambda i: (history[i]["valid_score"], -i))
        metrics["valid_ndcg_at_10"] = float(history[best]["valid_score"])
        metrics["best_epoch"] = float(best)
        metrics["epochs_run"] = float(len(history))
    metrics.update({k: float(v) for k, v in setup.model.gammas().items()})
    return metrics


def units(metrics: dict[str, Any]) -> dict[str, Any]:
    """The record's per-user sidecar (popped from ``evaluate``'s metrics); its mean is ``ndcg_at_10``."""
    return {"ndcg_at_10": metrics.pop("per_user")}


def cross_evaluate(trainer, setup) -> dict[str, float]:
    """The trained embeddings re-scored with each fixed variant, test NDCG@10 (RecBole's evaluator)."""
    adapter = _adapter()
    out = {}
    for variant in FIXED_VARIANTS:
        with adapter.scored_with(setup.model, variant):
            out[variant] = _ours(trainer.evaluate(setup.test_data, load_best_model=False))["ndcg_at_10"]
    return out


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
    users, items = model.scoring_embeddings()
    popularity = _adapter().item_popularity(setup.train_data)
    item_norms = items.norm(dim=-1).cpu().numpy()
    user_stats, item_stats = norm_stats(users[1:]), norm_stats(items[1:])
    out = {
        "item_norm_mean": item_stats["mean"],
        "item_norm_cv": item_stats["cv"],
        "user_norm_mean": user_stats["mean"],
        "user_norm_cv": user_stats["cv"],
        "spearman_item_norm_popularity": _spearman(item_norms[1:], popularity[1:]),
    }
    positives = _test_positives(setup)
    test_users = torch.as_tensor(sorted(positives))
    scores = model.similarity.pairwise(users[test_users], items).cpu().numpy()
    history = setup.train_data.dataset.inter_matrix(form="csr")[test_users.numpy()]
    scores[history.nonzero()] = -np.inf
    scores[:, 0] = -np.inf
    relevant = {row: positives[int(u)] for row, u in enumerate(test_users.tolist())}
    out["magnitude_d_top10"] = relevance_magnitude_d(
        item_norms, relevant, pool="top_k", scores=scores, k=TOPK
    )
    return out


def popularity_profile(setup, bins: int = 10) -> dict[str, list[float]]:
    """Mean item norm per popularity decile (for the report's relevance-counter plot)."""
    _, items = setup.model.scoring_embeddings()
    norms = items[1:].detach().norm(dim=-1).cpu().numpy()
    popularity = _adapter().item_popularity(setup.train_data)[1:]
    order = np.argsort(popularity, kind="stable")
    chunks = np.array_split(order, bins)
    return {
        "x": [float(np.mean(popularity[c])) for c in chunks],
        "y": [float(np.mean(norms[c])) for c in chunks],
    }


def curves(trainer, profile: dict[str, list[float]] | None = None) -> dict[str, dict[str, list]]:
    losses = trainer.train_loss_dict
    out = {"train_loss": {"x": [int(e) for e in losses], "y": [float(v) for v in losses.values()]}}
    epochs = [h["epoch"] for h in trainer.valid_history]
    for key in ("valid_score", "spearman_item_norm_popularity", "item_norm_mean", "user_norm_mean"):
        name = "valid_ndcg_at_10" if key == "valid_score" else key
        out[name] = {"x": epochs, "y": [float(h[key]) for h in trainer.valid_history]}
    if profile:
        out["item_norm_by_popularity"] = profile
    return out


# --- report -----------------------------------------------------------------------------------------


def _display(obj) -> None:
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        print(obj)
        return
    display(Markdown(obj) if isinstance(obj, str) else obj)


def _group_columns(df: pd.DataFrame) -> list[str]:
    """The model always; the dataset and the loss only when the records hold more than one of them."""
    return [
        c
        for c in ("dataset", "model", "loss")
        if c in df.columns and df[c].notna().any() and (c == "model" or df[c].nunique() > 1)
    ]


def _metric_column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce")
    if "metrics" in df.columns:
        return (
            df["metrics"].map(lambda m: m.get(name, np.nan) if isinstance(m, dict) else np.nan).astype(float)
        )
    return pd.Series(np.nan, index=df.index, dtype=float)


def _param_column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    if "params" in df.columns:
        return df["params"].map(lambda p: p.get(name) if isinstance(p, dict) else None)
    return pd.Series(None, index=df.index)


def _with_groups(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(**{c: _param_column(df, c) for c in ("dataset", "model", "loss")})


def _by_seed(part: pd.DataFrame, variant: str, column: str) -> pd.Series:
    rows = part[part["variant"] == variant]
    return rows.groupby("seed")[column].mean().dropna()


def relevance_counter_table(df: pd.DataFrame) -> pd.DataFrame:
    """ρ(item norm, popularity) per variant: mean ± std over seeds, and the sign over seeds."""
    df = _with_groups(df).assign(_rho=lambda d: _metric_column(d, "spearman_item_norm_popularity"))
    groups = _group_columns(df)
    rows = []
    for key, part in df.groupby([*groups, "variant"], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        values = part["_rho"].dropna().tolist()
        row = dict(zip([*groups, "variant"], key, strict=True))
        row.update(
            {
                "rho(item norm, popularity)": format_mean_std(values, digits=3),
                "positive in": f"{sum(v > 0 for v in values)}/{len(values)} seeds",
                "item magnitude scored": row["variant"] in ITEM_MAGNITUDE_SCORED,
                "_mean": float(np.mean(values)) if values else float("nan"),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def convergence_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and variant: epochs run, best epoch, and how many runs were still improving when the
    epoch cap stopped them (best validation at the last allowed epoch): an unconverged variant's test
    numbers understate it, which matters when variants converge at different speeds."""
    df = _with_groups(df).assign(
        _best=lambda d: _metric_column(d, "best_epoch"),
        _run=lambda d: _metric_column(d, "epochs_run"),
        _cap=lambda d: pd.to_numeric(_param_column(d, "epochs"), errors="coerce"),
    )
    groups = _group_columns(df)
    rows = []
    for key, part in df.groupby([*groups, "variant"], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        capped = (part["_run"] >= part["_cap"]) & (part["_best"] >= part["_run"] - 1)
        rows.append(
            {
                **dict(zip([*groups, "variant"], key, strict=True)),
                "epochs run": format_mean_std(part["_run"].dropna().tolist(), digits=1),
                "best epoch": format_mean_std(part["_best"].dropna().tolist(), digits=1),
                "still improving at the cap": f"{int(capped.sum())}/{len(part)}",
                "_capped": int(capped.sum()),
            }
        )
    return pd.DataFrame(rows)


def _cross_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in _with_groups(df).iterrows():
        cross = (r.get("extra") or {}).get("cross_ndcg_at_10") if isinstance(r.get("extra"), dict) else None
        for scored, value in (cross or {}).items():
            rows.append({"model": r.get("model"), "trained": r["variant"], "scored": scored, "ndcg": value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.pivot_table(index=["model", "trained"], columns="scored", values="ndcg", aggfunc="mean")


def _plot_curves(df: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    df = _with_groups(df)
    models = [m for m in df["model"].dropna().unique()]
    if not models or "curves" not in df.columns:
        return
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.4 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        part = df[df["model"] == model]
        for col, (curve, label) in enumerate(
            (
                ("valid_ndcg_at_10", "valid NDCG@10"),
                ("spearman_item_norm_popularity", "ρ(item norm, popularity)"),
                ("item_norm_by_popularity", "mean item norm by popularity decile"),
            )
        ):
            ax = axes[row][col]
            for variant, runs in part.groupby("variant"):
                series = [r[curve] for r in runs["curves"] if isinstance(r, dict) and curve in r]
                if not series:
                    continue
                length = min(len(s["y"]) for s in series)
                y = np.nanmean([np.asarray(s["y"][:length], dtype=float) for s in series], axis=0)
                ax.plot(series[0]["x"][:length], y, marker="o", ms=3, label=variant)
            ax.set_title(f"{model}: {label}", fontsize=9)
            ax.set_xlabel("training interactions (decile mean)" if col == 2 else "epoch")
            if col == 2:
                ax.set_xscale("log")
        axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    plt.show()


def report(df: pd.DataFrame) -> None:
    """Recsys section: test metrics per model × variant, convergence, the relevance-counter correlations,
    cross-evaluation, curves (the verdicts are the claims engine's)."""
    _display("### Recommender systems\n\n**Paper:** " + PAPER_CLAIM)
    if df is None or df.empty:
        _display("_No complete recsys runs yet._")
        return
    df = _with_groups(df)
    groups = _group_columns(df)
    data = df.assign(**{m: _metric_column(df, m) for m in METRICS})
    _display("**Test metrics, full ranking (mean ± std over seeds):**")
    _display(
        data.groupby([*groups, "variant"], dropna=False)[list(METRICS)].agg(
            lambda s: format_mean_std(s.dropna().tolist(), digits=4)
        )
    )
    _display(
        "Per-user ranking means qnorm ranks like dot and dnorm like cosine at test time: the one-sided "
        "variants differ from their inference twins only through training."
    )
    convergence = convergence_table(df)
    if not convergence.empty:
        _display("**Convergence** (early stopping on valid NDCG@10; epoch 0 is the first):")
        _display(convergence.drop(columns="_capped"))
        unconverged = convergence[convergence["_capped"] > 0]
        if not unconverged.empty:
            _display(
                "Still improving when the epoch cap stopped them: "
                + ", ".join(
                    f"{' / '.join(str(r[g]) for g in groups)} {r['variant']} ({r['still improving at the cap']})"
                    for _, r in unconverged.iterrows()
                )
                + ". Their test numbers understate what the variant reaches with a longer budget, so a "
                "comparison against them measures convergence speed as much as the end point."
            )
    relevance = relevance_counter_table(df)
    if not relevance.empty:
        _display(
            "**Relevance counter** — Spearman ρ between item norm and training popularity. The gradient "
            "argument predicts ρ > 0 where the item magnitude is trained (dot, qnorm, learn); a normalized "
            "vector can still lengthen through tangential updates, and a LightGCN item embedding is a sum "
            "over its neighbours, so ρ can be positive where the norm never enters the score."
        )
        _display(relevance.drop(columns="_mean"))
    cross = _cross_table(df)
    if not cross.empty:
        _display(
            "**Cross-evaluation** (trained with the row's variant, scored with the column's), test NDCG@10:"
        )
        _display(cross.round(4))
    diagnostics = [
        c
        for c in ("item_norm_cv", "user_norm_cv", "magnitude_d_top10", "gamma_q", "gamma_d")
        if _metric_column(df, c).notna().any()
    ]
    if diagnostics:
        diag = df.assign(**{c: _metric_column(df, c) for c in diagnostics})
        _display("**Norm diagnostics** (CV = σ/μ; d = Cohen's d of item norms, held-out vs top-10 ranked):")
        _display(
            diag.groupby([*groups, "variant"], dropna=False)[diagnostics].agg(
                lambda s: format_mean_std(s.dropna().tolist(), digits=3)
            )
        )
    try:
        _plot_curves(df)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not hide the tables above
        _display(f"_(curves not plotted: {e})_")


SPEC = FamilySpec(
    name="recsys",
    title="Recommender systems",
    notebook="recsys.ipynb",
    tasks={"recommendation": TASK},
    primary_metric="ndcg_at_10",
    metrics=METRICS,
    grid_axes=("model", "dataset", "loss"),
    description="Top-10 recommendation with RecBole (BPR-MF, LightGCN): query user, candidate item; full ranking.",
    validate=validate,
    report=report,
    extra={"paper_claim": PAPER_CLAIM},
)
