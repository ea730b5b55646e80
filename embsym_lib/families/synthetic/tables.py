"""The synthetic family's own report content: mechanism tables, cross-evaluation matrices, the
ablation side by side, the Fisher predictor's inputs and the training curves (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...similarity import FIXED_VARIANTS, VARIANTS
from .. import ReportItem

MECHANISM = (
    "spearman_dnorm_quality",
    "cohens_d_corpus",
    "cohens_d_top100",
    "ndcg@10_drop_norm_shuffled",
    "q_norm_cv",
    "d_norm_cv",
)


def _means(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby("variant")[column].mean() if column in df.columns else pd.Series(dtype=float)


def _task(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df[df["task"] == name] if "task" in df.columns else df.iloc[0:0]


def mechanism_table(sub: pd.DataFrame) -> pd.DataFrame:
    """What document magnitude carries, per training variant (means over seeds)."""
    table = pd.DataFrame({c: _means(sub, c) for c in MECHANISM if c in sub.columns})
    return table.rename_axis("trained with")


def cross_matrix(sub: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Rows: trained with; columns: the same embeddings scored with each fixed variant."""
    cols = [f"xeval_{v}_{metric}" for v in FIXED_VARIANTS]
    if sub.empty or not all(c in sub.columns for c in cols):
        return None
    matrix = sub.groupby("variant")[cols].mean()
    matrix.columns = [f"scored {v}" for v in FIXED_VARIANTS]
    return matrix.rename_axis("trained with")


def ablation_table(asym: pd.DataFrame, abl: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, sub in (("standard", asym), ("scale & step fixed", abl)):
        m = _means(sub, "ndcg@10")
        rows.append({"training": name, **{v: m.get(v, np.nan) for v in VARIANTS}})
    return pd.DataFrame(rows)


def curves_figure(df: pd.DataFrame):
    """Validation metric per epoch, mean over seeds, one panel per task."""
    import matplotlib.pyplot as plt

    panels = [
        (n, s, k)
        for n, k in (
            ("asymmetric", "val_ndcg@10"),
            ("ablation", "val_ndcg@10"),
            ("symmetric", "val_spearman"),
        )
        if not (s := _task(df, n)).empty
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, sub, key) in zip(axes[0], panels, strict=True):
        for variant, vs in sub.groupby("variant"):
            ys = [c[key]["y"] for c in vs["curves"] if key in c]
            if ys:
                n = min(map(len, ys))
                ax.plot(range(1, n + 1), np.mean([y[:n] for y in ys], axis=0), label=variant)
        ax.set_title(f"{name}: {key}")
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    asym, abl, sym = (_task(df, n) for n in ("asymmetric", "ablation", "symmetric"))
    items = []
    for name, sub in (("asymmetric", asym), ("ablation", abl)):
        if not sub.empty:
            items.append(
                ReportItem(
                    f"**Mechanism ({name} task)**, mean over seeds. `spearman_dnorm_quality`: rank correlation "
                    "of a document's embedding norm with its ground-truth quality; `ndcg@10_drop_norm_shuffled`: "
                    "nDCG lost when document norms are permuted across documents (directions kept).",
                    mechanism_table(sub),
                )
            )
    for name, sub, metric in (
        ("asymmetric", asym, "ndcg@10"),
        ("ablation", abl, "ndcg@10"),
        ("symmetric", sym, "spearman"),
    ):
        matrix = cross_matrix(sub, metric)
        if matrix is not None:
            items.append(
                ReportItem(
                    f"**Cross-evaluation ({name}, {metric})**: rows trained with, columns scored with.",
                    matrix,
                )
            )
    if not asym.empty and not abl.empty:
        items.append(
            ReportItem(
                "**Ablation**: mean nDCG@10 per variant, standard training vs total scale and update norm held "
                "fixed (the claims table tests whether qnorm's advantage survives).",
                ablation_table(asym, abl),
            )
        )
    if "fisher_kappa_qnorm" in asym.columns and not asym.empty:
        votes = asym["extra"].map(lambda e: (e or {}).get("fisher_predicted")).value_counts().to_dict()
        items.append(
            ReportItem(
                "**Fisher predictor** (held-out queries, untrained encoders): "
                f"κ(qnorm) mean {asym['fisher_kappa_qnorm'].mean():.3g}, κ(dnorm) mean "
                f"{asym['fisher_kappa_dnorm'].mean():.3g}; predicted side by run: {votes} (its hit rate is a claim)."
            )
        )
    figure = curves_figure(df)
    if figure is not None:
        items.append(
            ReportItem("**Training curves**: validation metric per epoch, mean over seeds.", figure=figure)
        )
    return items
