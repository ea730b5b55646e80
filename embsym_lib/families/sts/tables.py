"""The STS family's own report content (pure functions): the paper's Table 5 layout beside its numbers,
before vs after training, the cross-evaluation matrix, sentence 2 as the query, the magnitudes of the test
embeddings, learn's γ and the training-loss curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...similarity import FIXED_VARIANTS, VARIANTS
from .. import ReportItem, param_column

PAPER_NAMES = {"cosine": "cosine", "dot": "dot", "qnorm": "Sent1Norm", "dnorm": "Sent2Norm", "learn": "learn"}
TABLE_ORDER = ("cosine", "dot", "qnorm", "dnorm", "learn")


def reference() -> pd.DataFrame:
    """The paper's Table 5 (STS-B test Spearman) as (setting, metric, variant, value)."""
    from ...reference import load_reference

    table = load_reference("rag_sts_clip")
    table = table[table["experiment"] == "sts"]
    long = table.melt(id_vars=["setting", "metric"], value_vars=list(VARIANTS), var_name="variant")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def ours_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean ± sd over seeds per encoder (rows) and variant under the paper's names (columns)."""
    from ...stats import format_mean_std

    rows = {}
    for encoder, group in df.groupby("encoder", sort=True):
        rows[encoder] = {
            PAPER_NAMES[v]: format_mean_std(group.loc[group["variant"] == v, metric].dropna(), digits=3)
            for v in TABLE_ORDER
            if v in set(group["variant"])
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def is_trained(df: pd.DataFrame) -> pd.Series:
    """Which runs fine-tuned (``train`` true, the default); the others are evaluation-only (PT) runs."""

    def trained(t) -> bool:  # records from before the parameter existed trained
        return t is None or (isinstance(t, float) and np.isnan(t)) or bool(t)

    return param_column(df, "train", True).map(trained).astype(bool)


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """Ours (test Spearman) above the paper's Table 5 rows; evaluation-only runs (``train`` false) as
    rows of their own, ``(PT)``."""
    trained = is_trained(df)
    ours = ours_table(df[trained], "spearman")
    ours.index = [f"ours: {i}" for i in ours.index]
    if (~trained).any():
        pt = ours_table(df[~trained], "spearman")
        pt.index = [f"ours: {i} (PT, evaluation only)" for i in pt.index]
        ours = pd.concat([ours, pt])
    theirs = (
        reference()
        .pivot_table(index="setting", columns="variant", values="value")
        .rename(columns=PAPER_NAMES)
    )
    theirs.index = [f"paper: {i}" for i in theirs.index]
    theirs = theirs[[PAPER_NAMES[v] for v in TABLE_ORDER if PAPER_NAMES[v] in theirs]].map(
        lambda x: f"{x:.3f}"
    )
    return pd.concat([ours, theirs]).fillna("—")


def cross_evaluation_table(df: pd.DataFrame, encoder: str) -> pd.DataFrame:
    """Mean Spearman: rows = trained variant, columns = variant the same embeddings are scored with."""
    group = df[df["encoder"] == encoder]
    table = {}
    for variant in TABLE_ORDER:
        runs = group[group["variant"] == variant]
        if not runs.empty:
            table[f"trained {variant}"] = {
                f"scored {v}": float(np.nanmean([m.get(f"spearman_as_{v}", np.nan) for m in runs["metrics"]]))
                for v in FIXED_VARIANTS
            }
    return pd.DataFrame.from_dict(table, orient="index")


def loss_figure(df: pd.DataFrame):
    """Training loss per step, one panel per encoder, one line per run."""
    import matplotlib.pyplot as plt

    curves = [
        (r["encoder"], r["variant"], (r["curves"] or {}).get("train_loss"))
        for _, r in df.iterrows()
        if isinstance(r.get("curves"), dict)
    ]
    curves = [c for c in curves if c[2] and c[2].get("x")]
    if not curves:
        return None
    encoders = sorted({c[0] for c in curves})
    fig, axes = plt.subplots(1, len(encoders), figsize=(5 * len(encoders), 3.2), squeeze=False)
    colors = dict(zip(TABLE_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    seen = set()
    for enc, variant, curve in curves:
        ax = axes[0, encoders.index(enc)]
        ax.plot(
            curve["x"],
            curve["y"],
            color=colors.get(variant),
            alpha=0.7,
            label=None if (enc, variant) in seen else variant,
        )
        seen.add((enc, variant))
        ax.set_title(f"STS training loss ({enc})")
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    if df is None or df.empty:
        return []
    df = df.copy()
    df["encoder"] = param_column(df, "encoder", "?")
    items = [
        ReportItem(
            "**Table 5 layout**: Spearman on the test split, mean ± sd over seeds. Sent1Norm = qnorm and "
            "Sent2Norm = dnorm, with sentence 1 as the query. The paper's rows are STS-B with "
            "Contriever/RetroMAE; ours are whatever profile the records come from (offline: the generated "
            "pair set). `(PT, evaluation only)`: the pretrained encoder scored without training "
            "(`train: false`).",
            table5(df),
        )
    ]
    df = df[is_trained(df)]  # the rest is about training
    if df.empty:
        return items
    by_run = df.groupby(["encoder", "variant"])
    if "spearman_untrained" in df:
        items.append(
            ReportItem(
                "**Before vs after training**: the untrained encoder scored with each run's variant, and the "
                "trained one.",
                by_run[["spearman_untrained", "spearman"]].mean().round(3),
            )
        )
    for enc in sorted(df["encoder"].unique()):
        items.append(
            ReportItem(
                f"**Cross-evaluation, encoder {enc}**: each trained model's test embeddings scored under every "
                "fixed variant (STS is a cross-query metric, so qnorm/dnorm differ from dot/cosine at "
                "inference).",
                cross_evaluation_table(df, enc).round(3),
            )
        )
    if "spearman_swapped" in df:
        items.append(
            ReportItem(
                "**Sentence 2 as the query** (the learn and one-sided variants are order-sensitive).",
                by_run[["spearman", "spearman_swapped"]].mean().round(3),
            )
        )
    diag = [c for c in ("norm_mean", "norm_cv", "norm_product_spearman") if c in df]
    if diag:
        items.append(
            ReportItem(
                "**Magnitudes of the test embeddings after training** (norm_product_spearman: Spearman of "
                "|s1||s2| with the gold score).",
                by_run[diag].mean().round(3),
            )
        )
    learn = df[df["variant"] == "learn"]
    if not learn.empty and "gamma_q" in learn:
        items.append(
            ReportItem(
                "**Learned γ** (initial 0.5).",
                learn.groupby("encoder")[["gamma_q", "gamma_d"]].agg(["mean", "std"]).round(4),
            )
        )
    figure = loss_figure(df)
    if figure is not None:
        items.append(ReportItem("**Training loss**, one line per run.", figure=figure))
    return items
