"""The CLIP family's own report content (pure functions): the paper's configuration names for the grid
points, Table 6 beside ours, the zero-shot analysis and the training trajectories."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...stats import format_mean_std
from .. import ReportItem, metric_column, param_column

# Which modality is the query in each one-direction loss.
QUERY_OF = {"i2t": "image", "t2i": "text"}
# The paper's six configurations (v1, Table 6) as grid points (variant, loss_direction).
PAPER_CONFIGS: dict[tuple[str, str], str] = {
    ("cosine", "sym"): "norm_sym",
    ("dot", "sym"): "nonorm_sym",
    ("qnorm", "i2t"): "imgnorm_i2t",
    ("dot", "i2t"): "nonorm_i2t",
    ("qnorm", "t2i"): "txtnorm_t2i",
    ("dot", "t2i"): "nonorm_t2i",
}
PAPER_CLAIM = (
    "CLIP as trained (symmetric loss, both directions evaluated) is functionally symmetric: cosine should "
    "win. Zero-shot ViT-B/32 on COCO has Cohen's d ≈ 0 for magnitudes and dot scoring hurts. From scratch, "
    "magnitude is learned (large |d|) only with a one-direction loss, at the cost of the other direction."
)
TABLE6_COLUMNS: dict[str, tuple[str, float]] = {
    # paper column -> (our metric, scale to the paper's units)
    "cohen_d_image": ("cohen_d_image", 1.0),
    "cohen_d_text": ("cohen_d_text", 1.0),
    "cos_r1_i2t": ("r1_i2t_cosine", 100.0),
    "cos_r1_t2i": ("r1_t2i_cosine", 100.0),
    "dot_r1_i2t": ("r1_i2t_dot", 100.0),
    "dot_r1_t2i": ("r1_t2i_dot", 100.0),
}
ZERO_SHOT_COLUMNS = (
    "r1_i2t_cosine",
    "r1_i2t_dot",
    "r1_t2i_cosine",
    "r1_t2i_dot",
    "cohen_d_image",
    "cohen_d_text",
)
TRAJECTORIES = ("loss", "image_norm", "text_norm")


def config_name(variant: str, loss_direction: str) -> str:
    """The paper's configuration name (norm_sym, imgnorm_i2t, ...), or one in the same style."""
    if variant in ("cosine", "dot"):
        return f"{'norm' if variant == 'cosine' else 'nonorm'}_{loss_direction}"
    if variant == "learn":
        return f"learn_{loss_direction}"
    if loss_direction == "sym":
        return f"{'query' if variant == 'qnorm' else 'cand'}norm_sym"
    query = QUERY_OF[loss_direction]
    other = "text" if query == "image" else "image"
    side = query if variant == "qnorm" else other
    return f"{'img' if side == 'image' else 'txt'}norm_{loss_direction}"


def _paper() -> pd.DataFrame:
    from ...reference import load_reference

    return load_reference("clip_scratch")


def reference() -> pd.DataFrame:
    """The paper's Table 6 as (setting = loss_direction, metric = our name, variant, value, config);
    R@1 on the paper's ×100 scale (= ours × metric_scale)."""
    by_config = {name: key for key, name in PAPER_CONFIGS.items()}
    rows = []
    for _, r in _paper().iterrows():
        variant, direction = by_config[r["config"]]
        for column, (metric, _) in TABLE6_COLUMNS.items():
            rows.append(
                {
                    "setting": direction,
                    "metric": metric,
                    "variant": variant,
                    "value": float(r[column]),
                    "config": r["config"],
                }
            )
    return pd.DataFrame(rows)


def with_config(df: pd.DataFrame) -> pd.DataFrame:
    """The records with their ``loss_direction`` and paper configuration name as columns."""
    df = df.copy()
    df["loss_direction"] = param_column(df, "loss_direction")
    df["config"] = [config_name(v, d) for v, d in zip(df["variant"], df["loss_direction"], strict=True)]
    return df


def table6(df: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean ± sd over seeds) beside the paper's Table 6, one row per configuration."""
    df = with_config(df)
    try:
        paper = _paper().set_index("config")
    except (ValueError, FileNotFoundError):
        paper = pd.DataFrame()
    order = list(PAPER_CONFIGS.values()) + sorted(set(df["config"]) - set(PAPER_CONFIGS.values()))
    rows = []
    for config in order:
        sub = df[df["config"] == config]
        if sub.empty and config not in paper.index:
            continue
        row: dict[Any, Any] = {"config": config, "seeds": len(sub)}
        for column, (metric, scale) in TABLE6_COLUMNS.items():
            row[(column, "ours")] = (
                format_mean_std(metric_column(sub, metric).tolist(), scale) if len(sub) else "—"
            )
            row[(column, "paper")] = f"{paper.loc[config, column]:.2f}" if config in paper.index else ""
        rows.append(row)
    table = pd.DataFrame(rows).set_index("config")
    table.columns = pd.MultiIndex.from_tuples([c if isinstance(c, tuple) else (c, "") for c in table.columns])
    return table


def zero_shot_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run that made the zero-shot analysis: its source, R@1 under cosine and dot, Cohen's d."""
    rows = []
    for _, r in df.iterrows():
        extra = r.get("extra")
        zs = extra.get("zero_shot") if isinstance(extra, dict) else None
        if zs:
            m = zs["metrics"]
            rows.append(
                {"seed": r["seed"], "source": zs["source"], **{k: m.get(k) for k in ZERO_SHOT_COLUMNS}}
            )
    return pd.DataFrame(rows)


# --- the paper's zero-shot numbers (reference/mechanism.csv, Table 6 text) beside ours -------------------

ZERO_SHOT_NOT_RUN = "not run (needs the paper profile's pretrained CLIP weights)"
# paper quantity -> (our zero-shot metric, "{variant}" filled with the row's scoring; scale to the paper's
# unit; digits shown: the paper's d are ~1e-4, its R@1 ×100)
MECHANISM_METRICS: dict[str, tuple[str, float, int]] = {
    "r1_t2i": ("r1_t2i_{variant}", 100.0, 2),
    "cohens_d_image": ("cohen_d_image", 1.0, 4),
    "cohens_d_text": ("cohen_d_text", 1.0, 4),
}
MECHANISM_NOTES = {
    "r1_t2i": "text-to-image R@1 ×100 of the zero-shot model, scored with the variant",
    "cohens_d_image": "Cohen's d of image magnitudes, matched vs the top-k unmatched by cosine",
    "cohens_d_text": "Cohen's d of text magnitudes, matched vs the top-k unmatched by cosine",
}


def pretrained_zero_shot(df: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """The zero-shot metrics of runs analysed with pretrained weights, by "ours: <checkpoint>, <dataset>".
    The offline stand-in (the run's own trained model) and a random-init checkpoint are left out: neither
    is the paper's pretrained CLIP, so neither may sit beside its numbers."""
    models = param_column(df, "zero_shot_model", "")
    weights = param_column(df, "zero_shot_pretrained", "")
    datasets = param_column(df, "dataset", "?")
    out: dict[str, list[dict[str, float]]] = {}
    for i, extra in df["extra"].items():
        zs = extra.get("zero_shot") if isinstance(extra, dict) else None
        if zs and all(isinstance(v, str) and v for v in (models[i], weights[i])):  # NaN: a record without it
            out.setdefault(f"ours: {zs['source']}, {datasets[i]}", []).append(zs["metrics"])
    return out


def our_zero_shot_value(runs: list[dict[str, float]], quantity: str, variant: str) -> str:
    """Mean ± sd over seeds of the zero-shot metric matching (quantity, variant), in the paper's unit."""
    template, scale, digits = MECHANISM_METRICS[quantity]
    metric = template.format(variant=variant)
    values = [m[metric] for m in runs if metric in m]
    if not values:  # no pretrained analysis at all, or one from before the metric existed
        return "not run" if runs else ZERO_SHOT_NOT_RUN
    return format_mean_std(values, scale, digits)


def mechanism_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per CLIP row of the paper's mechanism table (zero-shot R@1 t2i under cosine and dot, Cohen's
    d of image and text magnitudes): the paper's value unchanged, then ours per pretrained checkpoint."""
    from ...reference import mechanism_beside_ours

    ours = pretrained_zero_shot(df) if df is not None and "extra" in df else {}
    table = mechanism_beside_ours(MECHANISM_METRICS, ours, our_zero_shot_value, nobody=[])
    table["note"] = table["quantity"].map(MECHANISM_NOTES)
    return table


MECHANISM_TEXT = (
    "**The paper's zero-shot numbers beside ours** (v1 Table 6 text: CLIP ViT-B/32 with OpenAI weights on "
    "MS-COCO; `paper` as printed). Ours: the zero-shot analysis of a pretrained checkpoint "
    "(`zero_shot_model` + `zero_shot_pretrained`, the paper profile), mean ± sd over seeds, one column per "
    "checkpoint and dataset. The offline stand-in (this grid's own trained model) is not the paper's model: "
    "its numbers are in the zero-shot analysis below, not here. Whether dot hurts is tested by the claims "
    "engine (claim clip.zero_shot.dot_hurts)."
)


def trajectories_figure(df: pd.DataFrame):
    """Training loss and mean feature norms per step, first seed of each configuration; None without curves."""
    import matplotlib.pyplot as plt

    if df.empty or not any(isinstance(c, dict) and c.get("loss") for c in df["curves"]):
        return None
    df = with_config(df)
    fig, axes = plt.subplots(1, len(TRAJECTORIES), figsize=(5 * len(TRAJECTORIES), 3.4))
    for config, sub in df.groupby("config"):
        first = sub.sort_values("seed").iloc[0]["curves"] or {}
        for ax, name in zip(axes, TRAJECTORIES, strict=True):
            if name in first:
                ax.plot(first[name]["x"], first[name]["y"], label=config)
    for ax, name in zip(axes, TRAJECTORIES, strict=True):
        ax.set_title(f"{name} (first seed)")
        ax.set_xlabel("step")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    if df is None or df.empty:
        return []
    items = [
        ReportItem(f"**The paper's claim.** {PAPER_CLAIM}"),
        ReportItem(
            "**Table 6 layout** (R@1 ×100; Cohen's d of magnitudes, matched vs the top-k unmatched by "
            "cosine). Ours: mean ± sd over seeds. Configurations beyond the paper's six are our controls.",
            table6(df),
        ),
        ReportItem(MECHANISM_TEXT, mechanism_table(df)),
    ]
    zs = zero_shot_table(df)
    if not zs.empty:
        items.append(
            ReportItem(
                "**Zero-shot analysis** (R@1 scored with cosine and with dot; Cohen's d of magnitudes). The "
                "paper: d ≈ 0 and dot hurts for ViT-B/32 (OpenAI weights) on COCO.",
                zs.round(4),
            )
        )
    figure = trajectories_figure(df)
    if figure is not None:
        items.append(
            ReportItem(
                "**Training trajectories**: loss and mean feature norms per step (first seed).", figure=figure
            )
        )
    return items
