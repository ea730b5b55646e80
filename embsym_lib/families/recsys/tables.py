"""The recsys family's own report content: convergence, the relevance-counter correlations, the
cross-evaluation matrix, norm diagnostics and the training curves (pure functions; the verdicts are the
claims engine's, the per-variant test metrics the report layer's)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...stats import format_mean_std
from .. import ReportItem, metric_column, param_column

PAPER_CLAIM = (
    "Recommendation is asymmetric (user → item): the paper (v3) reports, qualitatively and without numbers, "
    "that the one-sided variants (qnorm / dnorm) beat cosine. Its gradient argument also predicts that "
    'items relevant to many users grow in norm ("relevance counter": item norm ↔ popularity).'
)
# Variants whose score carries the item's magnitude (the item side is not normalized).
ITEM_MAGNITUDE_SCORED: tuple[str, ...] = ("dot", "qnorm", "learn")
DIAGNOSTICS: tuple[str, ...] = ("item_norm_cv", "user_norm_cv", "magnitude_d_top10", "gamma_q", "gamma_d")
CURVES: tuple[tuple[str, str], ...] = (
    ("valid_ndcg_at_10", "valid NDCG@10"),
    ("spearman_item_norm_popularity", "ρ(item norm, popularity)"),
    ("item_norm_by_popularity", "mean item norm by popularity decile"),
)


def with_groups(df: pd.DataFrame) -> pd.DataFrame:
    """The records with the grid axes (dataset, model, loss) as columns, wherever they were recorded."""
    return df.assign(**{c: param_column(df, c) for c in ("dataset", "model", "loss")})


def group_columns(df: pd.DataFrame) -> list[str]:
    """The model always; the dataset and the loss only when the records hold more than one of them."""
    return [
        c
        for c in ("dataset", "model", "loss")
        if c in df.columns and df[c].notna().any() and (c == "model" or df[c].nunique() > 1)
    ]


def _groups(df: pd.DataFrame, groups: list[str]):
    for key, part in df.groupby([*groups, "variant"], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield dict(zip([*groups, "variant"], key, strict=True)), part


def relevance_counter_table(df: pd.DataFrame) -> pd.DataFrame:
    """ρ(item norm, popularity) per setting and variant: mean ± sd over seeds, and its sign over seeds."""
    df = with_groups(df).assign(_rho=lambda d: metric_column(d, "spearman_item_norm_popularity"))
    rows = []
    for key, part in _groups(df, group_columns(df)):
        values = part["_rho"].dropna().tolist()
        rows.append(
            {
                **key,
                "rho(item norm, popularity)": format_mean_std(values, digits=3),
                "positive in": f"{sum(v > 0 for v in values)}/{len(values)} seeds",
                "item magnitude scored": key["variant"] in ITEM_MAGNITUDE_SCORED,
            }
        )
    return pd.DataFrame(rows)


def convergence_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and variant: epochs run, best epoch, and how many runs were still improving when the
    epoch cap stopped them (best validation at the last allowed epoch): an unconverged variant's test
    numbers understate it, which matters when variants converge at different speeds."""
    df = with_groups(df).assign(
        _best=lambda d: metric_column(d, "best_epoch"),
        _run=lambda d: metric_column(d, "epochs_run"),
        _cap=lambda d: pd.to_numeric(param_column(d, "epochs"), errors="coerce"),
    )
    rows = []
    for key, part in _groups(df, group_columns(df)):
        capped = (part["_run"] >= part["_cap"]) & (part["_best"] >= part["_run"] - 1)
        rows.append(
            {
                **key,
                "epochs run": format_mean_std(part["_run"].dropna().tolist(), digits=1),
                "best epoch": format_mean_std(part["_best"].dropna().tolist(), digits=1),
                "still improving at the cap": f"{int(capped.sum())}/{len(part)}",
            }
        )
    return pd.DataFrame(rows)


def cross_table(df: pd.DataFrame) -> pd.DataFrame:
    """Test NDCG@10 (mean over seeds), rows: model and trained variant, columns: scored with."""
    rows = []
    for _, r in with_groups(df).iterrows():
        extra = r.get("extra")
        cross = extra.get("cross_ndcg_at_10") if isinstance(extra, dict) else None
        for scored, value in (cross or {}).items():
            rows.append({"model": r.get("model"), "trained": r["variant"], "scored": scored, "ndcg": value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.pivot_table(index=["model", "trained"], columns="scored", values="ndcg", aggfunc="mean")


def diagnostics_table(df: pd.DataFrame) -> pd.DataFrame:
    """Norm CVs, Cohen's d of item norms and learn's γ per setting and variant, mean ± sd over seeds."""
    df = with_groups(df)
    present = [c for c in DIAGNOSTICS if metric_column(df, c).notna().any()]
    if not present or df.empty:
        return pd.DataFrame()
    df = df.assign(**{c: metric_column(df, c) for c in present})
    return df.groupby([*group_columns(df), "variant"], dropna=False)[present].agg(
        lambda s: format_mean_std(s.dropna().tolist(), digits=3)
    )


def curves_figure(df: pd.DataFrame):
    """Per model: valid NDCG@10 and ρ(item norm, popularity) per epoch, and the mean item norm per
    popularity decile of the final model; means over seeds, one line per variant."""
    import matplotlib.pyplot as plt

    df = with_groups(df)
    models = list(df["model"].dropna().unique()) if "model" in df.columns else []
    if not models or "curves" not in df.columns:
        return None
    fig, axes = plt.subplots(len(models), len(CURVES), figsize=(14, 3.4 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        part = df[df["model"] == model]
        for col, (curve, label) in enumerate(CURVES):
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
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    items = [ReportItem(f"**Paper:** {PAPER_CLAIM}")]
    if df is None or df.empty:
        return items
    convergence = convergence_table(df)
    if not convergence.empty:
        items.append(
            ReportItem(
                "**Convergence** (early stopping on valid NDCG@10; epoch 0 is the first). A run still "
                "improving when the epoch cap stopped it understates what its variant reaches with a longer "
                "budget: a comparison against it measures convergence speed as much as the end point.",
                convergence,
            )
        )
    relevance = relevance_counter_table(df)
    if not relevance.empty:
        items.append(
            ReportItem(
                "**Relevance counter**: Spearman ρ between item norm and training popularity. The gradient "
                "argument predicts ρ > 0 where the item magnitude is trained (dot, qnorm, learn); a normalized "
                "vector can still lengthen through tangential updates, and a LightGCN item embedding is a sum "
                "over its neighbours, so ρ can be positive where the norm never enters the score.",
                relevance,
            )
        )
    cross = cross_table(df)
    if not cross.empty:
        items.append(
            ReportItem(
                "**Cross-evaluation** (trained with the row's variant, scored with the column's), test "
                "NDCG@10. Per-user ranking means qnorm ranks like dot and dnorm like cosine at test time: "
                "the one-sided variants differ from their inference twins only through training.",
                cross.round(4),
            )
        )
    diagnostics = diagnostics_table(df)
    if not diagnostics.empty:
        items.append(
            ReportItem(
                "**Norm diagnostics** (CV = σ/μ; d = Cohen's d of item norms, held-out vs top-10 ranked; "
                "learn's γ), mean ± sd over seeds.",
                diagnostics,
            )
        )
    figure = curves_figure(df)
    if figure is not None:
        items.append(
            ReportItem("**Training curves and item norm by popularity**, mean over seeds.", figure=figure)
        )
    return items
