"""The report's generic layer: the claims table and forest plot (from ``claims.evaluate``), and the
per-family tables every family shares. Pure functions: they return HTML strings, DataFrames or
figures; ``notebooks/results.ipynb`` displays them. No statistical test is computed here."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .claims import CONTRADICTED, INCONCLUSIVE, SUPPORTED, UNTESTABLE, VERDICTS
from .families import FamilySpec

VERDICT_COLOURS = {
    SUPPORTED: "#1a7f37",
    CONTRADICTED: "#cf222e",
    INCONCLUSIVE: "#6e7781",
    UNTESTABLE: "#9a6700",
}
STYLE = """
<style>
table.embsym { border-collapse: collapse; font-size: 12.5px; margin: 0.5em 0 1.2em 0; }
table.embsym th { text-align: left; border-bottom: 2px solid #444; padding: 4px 8px; vertical-align: bottom; }
table.embsym td { border-bottom: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
table.embsym td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.embsym .small { color: #57606a; font-size: 11px; }
table.embsym .verdict { font-weight: 600; white-space: nowrap; }
table.embsym details summary { cursor: pointer; color: #0969da; }
</style>
"""


def _fmt(x: float, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def effect_text(row: pd.Series) -> str:
    """Our effect in display units with its 95% interval, and relative to the second side."""
    if not math.isfinite(row["effect"]):
        return "—"
    if row["kind"] == "predictor":
        return f"{row['ours']} ({100 * row['effect']:.0f}% [{100 * row['ci_low']:.0f}, {100 * row['ci_high']:.0f}])"
    if row["kind"] == "correlation":
        ci = f" [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if math.isfinite(row["ci_low"]) else ""
        return f"r = {_fmt(row['effect'])}{ci}"
    s = row["scale"]
    digits = 2 if s != 1 else 3
    text = f"{_fmt(s * row['effect'], digits, True)} [{_fmt(s * row['ci_low'], digits, True)}, {_fmt(s * row['ci_high'], digits, True)}]"
    rel = relative_effect(row)
    if rel is not None:
        text += f" ({rel[0]:+.1f}%)"
    return text


def relative_effect(row: pd.Series) -> tuple[float, float, float] | None:
    """(effect, low, high) as % of the second side's mean, for contrasts of a performance metric
    between runs; None where a relative effect means nothing (constants, signed quantities)."""
    base = row.get("baseline")
    if (
        row["kind"] not in ("contrast", "rule")
        or not row.get("relative")
        or not base
        or not math.isfinite(base)
    ):
        return None
    return tuple(100 * row[k] / abs(base) for k in ("effect", "ci_low", "ci_high"))


def _runs_cell(runs: list[str]) -> str:
    if not runs:
        return ""
    links = "<br>".join(
        f'<a href="{html.escape(r)}/record.json">{html.escape(r.split("/", 1)[1])}</a>' for r in runs
    )
    return f"<details><summary>{len(runs)} runs</summary><span class='small'>{links}</span></details>"


def claims_html(frame: pd.DataFrame, table_id: str = "claims-table", show_family: bool = True) -> str:
    """The claims table: claim (and which paper arm our runs stand for), setting, the paper's numbers,
    our effect with its 95% interval, the test, p (Holm within a claim) and BH q (across the report),
    seeds/units, the smallest effect this design detects with 80% power, the verdict with its reason,
    and links to the records used."""
    if frame.empty:
        return "<p><em>No claims.</em></p>"
    head = [
        "Claim",
        "Setting",
        "Paper",
        "Ours: effect [95% CI]",
        "Test",
        "p",
        "q (BH)",
        "Seeds / units",
        "Detectable (80%)",
        "Verdict",
        "Records",
    ]
    if show_family:
        head.insert(0, "Family")
    out = [
        STYLE,
        f'<table class="embsym" id="{table_id}"><thead><tr>',
        *(f"<th>{h}</th>" for h in head),
        "</tr></thead><tbody>",
    ]
    for _, r in frame.iterrows():
        colour = VERDICT_COLOURS[r["verdict"]]
        claim = (
            f"{html.escape(r['statement'])}<br><span class='small'><code>{html.escape(r['id'])}</code> · "
            f"{html.escape(r['source'])}<br>our runs: {html.escape(r['stands_for'])}</span>"
        )
        n = (
            " / ".join(
                x
                for x in (
                    f"{r['n_seeds']} seeds" if r["n_seeds"] else "",
                    f"{r['n_units']} units" if r["n_units"] else "",
                )
                if x
            )
            or "—"
        )
        if r["kind"] == "predictor":
            mde = f"hit rate {100 * r['mde']:.0f}%" if math.isfinite(r["mde"]) else "—"
        elif r["kind"] == "correlation":
            mde = f"|r| {r['mde']:.2f}" if math.isfinite(r["mde"]) else "—"
        else:
            mde = _fmt(r["scale"] * r["mde"], 2 if r["scale"] != 1 else 3)
        reason = f"<br><span class='small'>{html.escape(r['reason'])}</span>" if r["reason"] else ""
        cells = [
            claim,
            html.escape(r["setting"]) or "—",
            html.escape(r["paper"]) or "—",
            f"<span class='num'>{html.escape(effect_text(r))}</span>",
            f"<span class='small'>{html.escape(r['test'])}</span>",
            _p(r["p"]),
            _p(r["q_bh"]),
            n,
            mde,
            f"<span class='verdict' style='color:{colour}'>{r['verdict']}</span>{reason}",
            _runs_cell(r["runs"]),
        ]
        if show_family:
            cells.insert(0, html.escape(r["family"]))
        num = {"p", "q (BH)", "Detectable (80%)"}
        out.append(
            "<tr>"
            + "".join(
                f"<td class='num'>{c}</td>" if h in num else f"<td>{c}</td>"
                for h, c in zip(head, cells, strict=True)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def verdict_summary(frame: pd.DataFrame) -> str:
    counts = {v: int((frame["verdict"] == v).sum()) for v in VERDICTS}
    return ", ".join(f"**{n}** {v}" for v, n in counts.items())


def forest_plot(frame: pd.DataFrame):
    """One row per tested claim: our effect with its 95% interval (coloured by verdict) beside the
    paper's value (a diamond). Left: performance contrasts as % of the second side; right: other
    quantities (hit rates, correlations, magnitudes) in their own units. Returns the figure."""
    import matplotlib.pyplot as plt

    rows = frame[frame["verdict"] != UNTESTABLE]
    rel, other = [], []
    for _, r in rows.iterrows():
        label = f"{r['id']}" + (f" · {r['setting']}" if r["setting"] else "")
        rel_effect = relative_effect(r)
        if rel_effect is not None:
            rel.append((label, *rel_effect, r["paper_relative"], r["verdict"]))
        elif math.isfinite(r["effect"]):
            scale = r["scale"] if r["kind"] in ("contrast", "rule") else 1.0
            paper = r["paper_effect"] if r["kind"] in ("correlation",) or r["scale"] == 1 else float("nan")
            other.append(
                (label, scale * r["effect"], scale * r["ci_low"], scale * r["ci_high"], paper, r["verdict"])
            )
    panels = [
        (p, t)
        for p, t in ((rel, "relative effect (% of the second side)"), (other, "effect (own units)"))
        if p
    ]
    if not panels:
        return None
    height = max(2.5, 0.28 * max(len(p) for p, _ in panels) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), height), squeeze=False)
    for ax, (items, title) in zip(axes[0], panels, strict=True):
        y = np.arange(len(items))[::-1]
        for yi, (_, eff, lo, hi, paper, verdict) in zip(y, items, strict=True):
            colour = VERDICT_COLOURS[verdict]
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
            ax.plot(eff, yi, "o", color=colour, ms=5)
            if paper is not None and math.isfinite(paper):
                ax.plot(paper, yi, "D", mfc="none", mec="black", ms=6)
        ax.axvline(0, color="grey", lw=0.8)
        if items is rel:
            # ±20% stays linear; the paper's collapses (a one-direction loss: +9000%) go logarithmic
            ax.set_xscale("symlog", linthresh=20)
        ax.set_yticks(y, [i[0] for i in items], fontsize=7.5)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Line2D([], [], color=c, marker="o", lw=2, label=v)
        for v, c in VERDICT_COLOURS.items()
        if v != UNTESTABLE
    ]
    handles.append(plt.Line2D([], [], color="black", marker="D", mfc="none", lw=0, label="paper"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def figure_html(fig, element_id: str, alt: str) -> str:
    """A figure as an embedded PNG with a stable id (the report stays self-contained)."""
    import matplotlib.pyplot as plt

    if fig is None:
        return "<p><em>Nothing to plot: no claim could be tested.</em></p>"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img id="{element_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def variant_table(spec: FamilySpec, df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds of the family's metrics (×metric_scale), one row per setting and variant,
    with readable headers; no index column."""
    axes = [a for a in spec.grid_axes if a in df.columns and df[a].notna().any()]
    order = {v: i for i, v in enumerate(spec.variants)}
    rows = []
    groups = df.groupby(axes, dropna=False, sort=True) if axes else [((), df)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for variant, vs in sorted(sub.groupby("variant"), key=lambda kv: order.get(kv[0], 99)):
            row: dict[str, Any] = {a: k for a, k in zip(axes, key, strict=True)}
            row.update({"variant": variant, "seeds": len(vs)})
            for m in spec.metrics:
                if m in vs.columns and vs[m].notna().any():
                    row[readable(m)] = stats.format_mean_std(vs[m].astype(float).tolist(), spec.metric_scale)
            rows.append(row)
    return pd.DataFrame(rows)


_METRIC_WORDS = [
    (
        re.compile(r"^r(\d+)_(i2t|t2i)(?:_(cosine|dot))?$"),
        lambda m: f"R@{m[1]} {_DIRECTION[m[2]]}" + (f", {m[3]}-scored" if m[3] else ""),
    ),
    (re.compile(r"^r1_mean$"), lambda m: "R@1 (mean of both directions)"),
    (
        re.compile(r"^(ndcg|mrr|recall)(\d+)_(.+)$"),
        lambda m: f"{_IR[m[1]]}@{m[2]} ({_GROUP.get(m[3], m[3])})",
    ),
    (re.compile(r"^(ndcg|mrr|recall)(?:@|_at_)(\d+)$"), lambda m: f"{_IR[m[1]]}@{m[2]}"),
    (re.compile(r"^hits_at_(\d+)$"), lambda m: f"Hits@{m[1]}"),
    (re.compile(r"^mrr$"), lambda m: "MRR"),
    (re.compile(r"^val_accuracy$"), lambda m: "validation accuracy"),
]
_IR = {"ndcg": "nDCG", "mrr": "MRR", "recall": "Recall"}
_DIRECTION = {"i2t": "image→text", "t2i": "text→image"}
_GROUP = {"id": "in-domain", "ood": "out-of-domain", "mean": "mean over groups"}


def readable(name: str) -> str:
    """A metric key as a column header (r1_i2t_cosine -> 'R@1 i2t, cosine-scored'); unknown keys as is."""
    for pattern, words in _METRIC_WORDS:
        m = pattern.match(name)
        if m:
            return words(m)
    return name.replace("_", " ")


def dataframe_html(table: pd.DataFrame, digits: int = 3) -> str:
    """How the report renders any DataFrame a family section displays: a plain 0, 1, 2, ... index is
    dropped (it means nothing), floats get ``digits`` decimals, missing values a dash."""
    styler = table.style.format(precision=digits, na_rep="—")
    if isinstance(table.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    return styler.to_html()


def install_table_format(digits: int = 3) -> None:
    """Make every DataFrame displayed in this IPython kernel render through ``dataframe_html``."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(
            pd.DataFrame, lambda t: dataframe_html(t, digits)
        )


def show_item(item) -> None:
    """Display one ``ReportItem`` of a family section in the report notebook."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if item.text:
        display(Markdown(item.text))
    if item.table is not None:
        display(item.table)
    if item.figure is not None:
        display(item.figure)
        plt.close(item.figure)
