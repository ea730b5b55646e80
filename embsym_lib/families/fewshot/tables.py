"""The few-shot family's own report content (pure functions): the per-run episode CI beside the seed
spread, the cross-evaluation matrix, the test-episode norms, learn's γ and the accuracy per arm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...similarity import VARIANTS
from .. import ReportItem, param_column

EUCLIDEAN = "euclidean"
#: the grid plus ProtoNets' squared-Euclidean default; the fixed ones score the cross-evaluation
ARMS: tuple[str, ...] = (*VARIANTS, EUCLIDEAN)
CROSS_ARMS: tuple[str, ...] = tuple(a for a in ARMS if a != "learn")
NORMS = ("query_norm_mean", "query_norm_cv", "prototype_norm_cv")


def _arms(sub: pd.DataFrame) -> list[str]:
    return [a for a in ARMS if a in set(sub["variant"])]


def prepared(df: pd.DataFrame) -> pd.DataFrame:
    """Complete runs with an accuracy, with ``dataset`` and an integer ``shots`` column (the records frame
    holds every family's axes, so an int axis may arrive as float)."""
    if df is None or df.empty or "accuracy" not in df.columns:
        return pd.DataFrame()
    df = df.copy()
    df["dataset"] = param_column(df, "dataset", "glyphs")
    df["shots"] = param_column(df, "shots", 1).map(lambda v: int(v) if pd.notna(v) else v)
    return df[df["accuracy"].notna()]


def episode_ci_table(df: pd.DataFrame) -> pd.DataFrame:
    """The few-shot convention beside the seed spread: each run's 95% CI half-width over its test
    episodes (accuracy %), mean over seeds, per arm."""
    rows = []
    if "accuracy_ci95" not in df.columns:
        return pd.DataFrame(rows)
    for (dataset, shots), sub in df.groupby(["dataset", "shots"], sort=True):
        for arm in _arms(sub):
            rows.append(
                {
                    "dataset": dataset,
                    "shots": shots,
                    "arm": arm,
                    "± 95% CI over episodes (per run, %)": round(
                        float(sub[sub["variant"] == arm]["accuracy_ci95"].mean()) * 100, 2
                    ),
                }
            )
    return pd.DataFrame(rows)


def cross_matrix(sub: pd.DataFrame) -> pd.DataFrame:
    """Rows: arm trained with; columns: arm scored with; mean test accuracy (%) over seeds."""
    out = {}
    for arm in _arms(sub):
        runs = sub[sub["variant"] == arm]
        out[arm] = {
            col: float(np.nanmean([(m or {}).get(f"cross_{col}", np.nan) for m in runs["metrics"]])) * 100
            for col in CROSS_ARMS
        }
    return pd.DataFrame(out).T.reindex(columns=list(CROSS_ARMS)).round(2)


def norms_table(sub: pd.DataFrame) -> pd.DataFrame | None:
    """Test-episode query and prototype norms per training arm, mean over seeds."""
    columns = [c for c in NORMS if c in sub.columns]
    if not columns:
        return None
    return sub.groupby("variant")[columns].mean().reindex(_arms(sub)).round(3)


def gamma_text(learn: pd.DataFrame) -> str | None:
    """learn's trained γq, γd as mean ± sd over seeds."""
    if learn.empty or not {"gamma_q", "gamma_d"} <= set(learn.columns):
        return None
    from ... import stats

    q = stats.format_mean_std(learn["gamma_q"].astype(float).tolist(), 1, 3)
    d = stats.format_mean_std(learn["gamma_d"].astype(float).tolist(), 1, 3)
    return f"learn: γq = {q}, γd = {d} (1 = that side normalized; dnorm is γq=0, γd=1)"


def accuracy_figure(df: pd.DataFrame):
    """Test accuracy per arm (mean ± sd over seeds), one panel per dataset and shot setting."""
    import matplotlib.pyplot as plt

    groups = list(df.groupby(["dataset", "shots"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, ((dataset, shots), sub) in zip(axes[0], groups, strict=True):
        arms = _arms(sub)
        accuracy = [sub[sub["variant"] == a]["accuracy"].astype(float) for a in arms]
        means = [a.mean() * 100 for a in accuracy]
        stds = [np.nan_to_num(a.std(ddof=1)) * 100 for a in accuracy]
        ax.bar(arms, means, yerr=stds, capsize=3, color=["C0" if a != "dnorm" else "C3" for a in arms])
        margin = 2 * max(stds + [1.0])
        ax.set_ylim(max(0.0, min(means) - margin), min(100.0, max(means) + margin))
        ax.set_title(f"{dataset} {shots}-shot")
        ax.set_ylabel("test accuracy %")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    df = prepared(df)
    if df.empty:
        return []
    items = [
        ReportItem(
            "**Paper (v3, qualitative only):** dnorm beats cosine and the squared-Euclidean default of "
            "Prototypical Networks; no numbers are published (the claims table tests the direction over "
            "seeds). Accuracy is the mean over a run's test episodes; below, each run's 95% CI over its "
            "episodes, mean over seeds.",
            episode_ci_table(df),
        )
    ]
    for (dataset, shots), sub in df.groupby(["dataset", "shots"], sort=True):
        ways = int((sub["params"].iloc[0] or {}).get("ways", 5))
        matrix = cross_matrix(sub)
        text = (
            f"**Cross-evaluation, {dataset} {ways}-way {shots}-shot** (rows: trained with; columns: scored "
            "with; accuracy %). dnorm columns equal cosine and qnorm equal dot by construction: for one "
            "query they rank prototypes identically."
        )
        if {"cosine", "dnorm"} <= set(matrix.index):
            text += (
                f" Scored with cosine, cosine-trained runs reach {matrix.loc['cosine', 'cosine']:.2f} and "
                f"dnorm-trained runs {matrix.loc['dnorm', 'cosine']:.2f}: a dnorm − cosine difference comes "
                "from training (query magnitude in the gradients), not from the score at inference."
            )
        items.append(ReportItem(text, matrix))
        norms = norms_table(sub)
        if norms is not None:
            items.append(
                ReportItem("Test-episode norms per training arm (mean over seeds; CV = σ/μ):", norms)
            )
        gammas = gamma_text(sub[sub["variant"] == "learn"])
        if gammas:
            items.append(ReportItem(gammas))
    items.append(
        ReportItem(
            "**Test accuracy per arm** (mean ± sd over seeds; dnorm in red).", figure=accuracy_figure(df)
        )
    )
    return items
