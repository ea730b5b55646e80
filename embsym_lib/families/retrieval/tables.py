"""The retrieval family's own report content (pure functions): the paper's Table-1 layout beside its
numbers, the cross-evaluation matrix, the magnitude diagnostics (Cohen's d of document norms, the
query-norm CV ratio), the Fisher predictor's inputs, RAG, and the dev trajectories."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...diagnostics import score_test_summary
from ...similarity import FIXED_VARIANTS, VARIANTS
from ...stats import format_mean_std
from .. import ReportItem, metric_column, param_column

PRIMARY = "ndcg10_mean"


def reference() -> pd.DataFrame:
    """The paper's retrieval numbers (Table 1 and Tables 2/16) as (setting, metric, variant, value, std)."""
    from ...reference import load_reference

    rows = []
    for _, r in load_reference("retrieval_main").iterrows():
        for v in VARIANTS:
            rows.append(
                {
                    "setting": f"{r['encoder']}/{r['benchmark']}",
                    "metric": "ndcg10",
                    "variant": v,
                    "value": r[v],
                    "std": r[f"{v}_std"],
                }
            )
    for _, r in load_reference("retrieval_other").iterrows():
        for v in VARIANTS:
            if not pd.isna(r[v]):
                rows.append(
                    {
                        "setting": f"{r['table']}/{r['benchmark']}",
                        "metric": "ndcg10",
                        "variant": v,
                        "value": r[v],
                        "std": float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def _datasets_of(df: pd.DataFrame) -> list[str]:
    names: list[str] = []
    for extra in df["extra"]:
        for name in (extra or {}).get("datasets", {}):
            if name not in names:
                names.append(name)
    return names


PT, FT = "PT (evaluation only)", "fine-tuned"


def _flag(df: pd.DataFrame, name: str, default: bool) -> pd.Series:
    """A boolean parameter per run; ``default`` for records from before the parameter existed."""

    def value(t) -> bool:
        return default if t is None or (isinstance(t, float) and math.isnan(t)) else bool(t)

    return param_column(df, name, default).map(value).astype(bool)


def is_trained(df: pd.DataFrame) -> pd.Series:
    """Which runs fine-tuned (``train`` true, the default); the others are evaluation-only (PT) runs."""
    return _flag(df, "train", True)


def _groups(df: pd.DataFrame, metric: str) -> tuple[list[str], list[str]]:
    """(the paper's groups and the aggregates id / ood / mean, users' folder groups and ``user``) present."""
    named, user = [], []
    for extra in df["extra"]:
        for r in (extra or {}).get("datasets", {}).values():
            g = r.get("group")
            target = user if r.get("user") else named
            if g and g not in named and g not in user:
                target.append(g)
    present = [g for g in [*named, "id", "ood", "mean"] if f"{metric}_{g}" in df.columns]
    mine = [g for g in [*user, "user"] if f"{metric}_{g}" in df.columns and (g != "user" or len(user) > 1)]
    return list(dict.fromkeys(present)), mine


def ours_table(df: pd.DataFrame, metric: str = "ndcg10") -> pd.DataFrame:
    """Table-1 layout: one row per (encoder, benchmark group, stage), mean ± sd over seeds ×100 per
    variant; stage PT = the evaluation-only runs of the pretrained encoder (``train`` false), beside the
    fine-tuned runs as in the paper's PT column. Users' own folders come last, marked, apart from the
    paper's groups and their means."""
    paper_groups, user_groups = _groups(df, metric)
    stage = is_trained(df).map({True: FT, False: PT})
    rows = []
    for encoder, sub in df.groupby("encoder", sort=True):
        stages = [s for s in (PT, FT) if (stage[sub.index] == s).any()]
        for g in [*paper_groups, *user_groups]:
            col = f"{metric}_{g}"
            label = (
                g
                if g in paper_groups
                else ("user (mean of your folders)" if g == "user" else f"{g} (your folder)")
            )
            for st in stages:
                row = {"encoder": encoder, "benchmark": label, "stage": st}
                runs = sub[stage[sub.index] == st]
                for v in VARIANTS:
                    vs = runs[runs["variant"] == v]
                    if not vs.empty and col in vs:
                        row[v] = format_mean_std(vs[col].astype(float).dropna().tolist(), 100.0)
                rows.append(row)
    table = pd.DataFrame(rows)
    if len(table) and set(table["stage"]) == {FT}:
        table = table.drop(columns="stage")  # no evaluation-only runs: the layout as before
    return table


def paper_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Table 1 and Tables 2/16 (nDCG@10 ×100)."""
    from ...reference import load_reference

    main = load_reference("retrieval_main")
    other = load_reference("retrieval_other").rename(columns={"table": "encoder"})
    cols = ["encoder", "benchmark", *VARIANTS]
    return main[["encoder", "benchmark", "pretrained", *VARIANTS]], other[[c for c in cols if c in other]]


def cross_matrix(df: pd.DataFrame, encoder: str) -> pd.DataFrame:
    """Rows: trained with X (incl. learn); columns: scored with Y; mean nDCG@10 ×100 over seeds."""
    sub = df[df["encoder"] == encoder]
    rows = {}
    for v in VARIANTS:
        vs = sub[sub["variant"] == v]
        if not vs.empty:
            rows[v] = {y: 100 * _mean(vs.get(f"xeval_ndcg10_{y}", [])) for y in FIXED_VARIANTS}
    return pd.DataFrame(rows).T.rename_axis("trained with (rows) / scored with (columns)")


def per_dataset_table(df: pd.DataFrame, encoder: str, key: str) -> pd.DataFrame:
    """Mean over seeds of extra.datasets[name][key] per (variant, dataset)."""
    sub = df[df["encoder"] == encoder]
    table = {}
    for v in VARIANTS:
        vs = sub[sub["variant"] == v]
        if not vs.empty:
            table[v] = {
                name: _mean([(e or {}).get("datasets", {}).get(name, {}).get(key) for e in vs["extra"]])
                for name in _datasets_of(sub)
            }
    return pd.DataFrame(table)


def delta_cv(df: pd.DataFrame, encoder: str) -> pd.DataFrame | None:
    """Query-norm CV(dnorm-trained) / CV(dot-trained) per dataset (the paper's ΔCV)."""
    cv = per_dataset_table(df, encoder, "query_norm_cv")
    if "dnorm" not in cv or "dot" not in cv:
        return None
    return pd.DataFrame((cv["dnorm"] / cv["dot"]).rename("ΔCV = CV(dnorm)/CV(dot)"))


def predictor_table(df: pd.DataFrame) -> pd.DataFrame:
    """The side predictors per encoder beside the mean primary metric of qnorm and dnorm: the condition
    number (held-out pairs, encoder before training) and the score test (the dot-trained encoder); their
    hit rates are claims of the engine."""
    rows = []
    for encoder, sub in df.groupby("encoder", sort=True):
        preds = [p for p in ((e or {}).get("fisher", {}).get("predicted") for e in sub["extra"]) if p]
        q = sub.loc[sub["variant"] == "qnorm", PRIMARY] if PRIMARY in sub else pd.Series(dtype=float)
        d = sub.loc[sub["variant"] == "dnorm", PRIMARY] if PRIMARY in sub else pd.Series(dtype=float)
        predicted = max(set(preds), key=preds.count) if preds else ""
        rows.append(
            {
                "encoder": encoder,
                "predicted (majority over runs)": predicted,
                "runs agreeing": f"{preds.count(predicted)}/{len(preds)}" if preds else "",
                "log10 κ qnorm": _mean(sub.get("fisher_log10_kappa_qnorm", [])),
                "log10 κ dnorm": _mean(sub.get("fisher_log10_kappa_dnorm", [])),
                "κ underdetermined (share of runs)": _mean(sub.get("fisher_underdetermined", [])),
                "qnorm − dnorm (x100)": 100 * (q.mean() - d.mean()) if len(q) and len(d) else float("nan"),
            }
            | {k: v for k, v in score_test_summary(sub["extra"]).items() if k != "by run"}
        )
    return pd.DataFrame(rows)


# --- the paper's mechanism numbers (reference/mechanism.csv) beside ours ---------------------------------

NOT_RUN = "not run"
SEE_CLAIMS = "see the claims table"
# Tests and correlations over datasets: ours exists only in the claims engine (the one place a test is
# computed), so this table points there instead of computing a second, possibly diverging, number.
CLAIMS_ONLY: dict[str, str] = {
    "cohens_d_dataset": "per-dataset d of qnorm-trained runs: the input of claim "
    "retrieval.cohen_d_tracks_relative_gain (ours per dataset: the Cohen's d tables below)",
    "d_gain_correlation": "Pearson r over test sets: claim retrieval.cohen_d_tracks_relative_gain",
    "paired_p": "paired test over seeds, variant vs cosine: the p of each claim in the claims table",
}
# quantity -> (our metric, ``None``: the row's variant is the one trained, else the trained variant and
# the row's variant is the scoring; scale to the paper's unit; digits shown; what differs)
MECHANISM_METRICS: dict[str, tuple[str, str | None, float, int, str]] = {
    "cohens_d": (
        "cohen_d_mean",
        None,
        1.0,
        2,
        "paper: mean over a category's datasets; ours: over our test sets",
    ),
    "query_cv": ("query_norm_cv_mean", None, 100.0, 2, "percent; ours: query_norm_cv_mean ×100"),
    "collapse": (
        "xeval_ndcg10_{variant}",
        "dot",  # the paper's rows are dot-trained models, the same embeddings scored with each variant
        1.0,
        3,
        "fraction; paper: validation nDCG@10; ours: test-set nDCG@10 (mean over groups)",
    ),
    "validation_ndcg10": ("dev_ndcg10_best", None, 100.0, 2, "×100; ours: best dev nDCG@10"),
}
RETRIEVAL_QUANTITIES = (*MECHANISM_METRICS, *CLAIMS_ONLY)


def mechanism_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs the paper's mechanism numbers compare with: fine-tuned, not the fixed-scale ablation."""
    runs = df[is_trained(df) & ~_flag(df, "scale_matched", False)].copy()
    runs["encoder"] = param_column(runs, "encoder", "?")
    return runs


def our_mechanism_value(runs: pd.DataFrame, quantity: str, variant: str) -> str:
    """Mean ± sd over seeds of our metric matching (quantity, variant) in ``runs`` (one encoder), in the
    paper's unit; "not run" where no run has it."""
    if quantity in CLAIMS_ONLY:
        return SEE_CLAIMS
    template, trained_with, scale, digits, _ = MECHANISM_METRICS[quantity]
    if runs.empty:
        return NOT_RUN
    metric = template.format(variant=variant)
    values = metric_column(runs[runs["variant"] == (trained_with or variant)], metric).dropna().tolist()
    return format_mean_std(values, scale, digits) if values else NOT_RUN


def mechanism_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per retrieval row of the paper's mechanism table: the paper's value unchanged, then ours per
    our encoder (a column ``ours: <encoder>``; ours are not the paper's encoders), then what differs."""
    from ...reference import mechanism_beside_ours

    runs = mechanism_runs(df if df is not None else pd.DataFrame())
    ours = {f"ours: {e}": runs[runs["encoder"] == e] for e in sorted(runs["encoder"].dropna().unique())}
    table = mechanism_beside_ours(RETRIEVAL_QUANTITIES, ours, our_mechanism_value, nobody=runs)
    table["note"] = [CLAIMS_ONLY.get(q) or MECHANISM_METRICS[q][-1] for q in table["quantity"]]
    return table


MECHANISM_TEXT = (
    "**The paper's mechanism numbers beside ours** (v1 Tables 3, 18, 19a/b, 22, 23; `paper` as printed). "
    "Ours: mean ± sd over seeds of our fine-tuned runs (`train: true`, not scale-matched) trained with the "
    "row's variant (collapse: dot-trained, scored with it), one column per *our* encoder — not the "
    "paper's encoder of the row: our `scratch` trains from scratch like the paper's `from scratch` rows, "
    "the others start from pretrained weights like its `fine-tuned` rows. Tests and correlations are the "
    "claims engine's: see the claims table. `not run`: no run of ours has the metric."
)


def trajectories_figure(df: pd.DataFrame):
    """Dev norms and nDCG@10 (own scoring, cosine) per step, one row per encoder, one line per run."""
    import matplotlib.pyplot as plt

    panels = [
        ("dev_query_norm_mean", "dev query norm (mean)"),
        ("dev_doc_norm_mean", "dev document norm (mean)"),
        ("dev_ndcg10_own", "dev nDCG@10, own scoring"),
        ("dev_ndcg10_cosine", "dev nDCG@10, scored with cosine"),
    ]
    encoders = sorted(df["encoder"].dropna().unique())
    if not encoders:
        return None
    fig, axes = plt.subplots(
        len(encoders), len(panels), figsize=(4 * len(panels), 3 * len(encoders)), squeeze=False
    )
    for row, encoder in enumerate(encoders):
        sub = df[df["encoder"] == encoder]
        for col, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for v in VARIANTS:
                for i, curves in enumerate(sub[sub["variant"] == v]["curves"]):
                    c = (curves or {}).get(key)
                    if c:
                        ax.plot(
                            c["x"],
                            c["y"],
                            color=f"C{VARIANTS.index(v)}",
                            alpha=0.7,
                            label=v if i == 0 else None,
                        )
            ax.set_title(f"{encoder}: {title}", fontsize=9)
            ax.set_xlabel("step")
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def gamma_figure(df: pd.DataFrame):
    """learn's γ per step, one line per run and side."""
    import matplotlib.pyplot as plt

    learn = df[df["variant"] == "learn"]
    if learn.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    for _, r in learn.iterrows():
        for key, style in (("gamma_q", "-"), ("gamma_d", "--")):
            c = (r["curves"] or {}).get(key)
            if c:
                ax.plot(c["x"], c["y"], style, label=f"{r['encoder']} s{r['seed']} {key}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_title("learn: γ trajectories")
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
    return fig


def sections(df: pd.DataFrame) -> list[ReportItem]:
    if df is None or df.empty:
        return []
    df = df.copy()
    df["encoder"] = param_column(df, "encoder", "?")
    # the fixed-scale ablation's runs are an arm of their own in every table (never pooled with the rest)
    matched = _flag(df, "scale_matched", False)
    df.loc[matched, "encoder"] = df.loc[matched, "encoder"] + " (scale-matched)"
    main, other = paper_tables()
    items = [
        ReportItem(
            "**Ours, Table-1 layout** — nDCG@10 ×100, mean ± sd over seeds. Groups: `id` = in-domain, "
            "`ood` = mean of out-of-domain groups, `mean` = mean over groups. Stage `PT (evaluation only)`: "
            "the pretrained encoder scored under each variant without training (`train: false`; a fixed "
            "model, the same at every seed), the paper's PT column; `fine-tuned`: the trained runs. A "
            "user's own BEIR folder (`path:<folder>`) is a group of its own, listed last; `id`, `ood` and "
            "`mean` leave it out.",
            ours_table(df),
        ),
        ReportItem(
            "**The paper's numbers** (v1 Table 1, nDCG@10 ×100). Our `scratch` encoder is the analogue of the "
            "paper's `scratch` (Table 2); our `minilm` (all-MiniLM-L6-v2, cosine-trained, Normalize stripped) "
            "of its E5 arm (Table 16).",
            main,
        ),
        ReportItem("The paper's Tables 2/16 (scratch, E5).", other),
        ReportItem(MECHANISM_TEXT, mechanism_table(df)),
    ]
    df = df[is_trained(df)]  # the rest is about training: evaluation-only runs only enter Table 1
    if df.empty:
        return items
    pool = ", ".join(sorted({str((p or {}).get("irrelevant_pool")) for p in df["params"]}))
    for encoder in sorted(df["encoder"].dropna().unique()):
        items.append(
            ReportItem(
                f"**Cross-evaluation, {encoder}** (mean over test groups, nDCG@10 ×100; rows: trained with, "
                "columns: scored with). At inference qnorm ranks like dot and dnorm like cosine, so those "
                "column pairs must match.",
                cross_matrix(df, encoder).round(2),
            )
        )
        items.append(
            ReportItem(
                f"**Cohen's d of document norms, relevant vs irrelevant ({encoder}; pool = {pool})**",
                per_dataset_table(df, encoder, "cohen_d").round(2),
            )
        )
        dcv = delta_cv(df, encoder)
        if dcv is not None:
            items.append(
                ReportItem(
                    f"**Query-norm CV ratio ({encoder})** — paper: RetroMAE 4–9× (prefers dnorm), Contriever "
                    "0.5–2× (prefers qnorm).",
                    dcv.round(2),
                )
            )
    items.append(
        ReportItem(
            "**Side predictors** beside the qnorm − dnorm difference of the primary metric: the Fisher "
            "condition number (held-out pairs, encoder before training) and the Fisher score test "
            "(held-out pairs, the dot-trained encoder; docs/predictors.md).",
            predictor_table(df),
        )
    )
    from .rag import rag_table

    items.append(
        ReportItem(
            "**RAG** (EM / token F1 ×100, mean ± sd over seeds) beside the paper's Table 4. Offline the reader "
            "is a random-init tiny T5: our numbers there mean nothing beyond 'the code path runs'.",
            rag_table(df),
        )
    )
    for text, figure in (
        ("**Dev trajectories** during training, one line per run.", trajectories_figure(df)),
        ("**learn's γ** during training (initial 0.5).", gamma_figure(df)),
    ):
        if figure is not None:
            items.append(ReportItem(text, figure=figure))
    return items
