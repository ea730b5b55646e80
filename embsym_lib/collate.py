"""Collation: every run record -> tables, the functional-symmetry verdicts, and the HTML report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import records, stats
from .families import FamilySpec, registry
from .params import NOTEBOOKS_DIR

TEMPLATES = Path(__file__).resolve().parent / "templates"
BASE_COLUMNS = ["family", "profile", "run_id", "variant", "seed", "status", "wall_time_s", "finished"]


def load_records(outputs_dir: Path, complete_only: bool = True, profile: str | None = None) -> pd.DataFrame:
    """One row per run record under ``outputs_dir/<family>/<run_id>/record.json``.

    Columns: family, profile, run_id, variant, seed, status, wall_time_s, finished, one column per grid
    axis of the family and per metric, and the dicts params, metrics, curves, extra, versions, git.
    Where one grid point (family, profile, axes, variant, seed) was run with different parameters,
    only the most recently finished record is kept.
    """
    rows: list[dict[str, Any]] = []
    families = registry()
    for path in sorted(Path(outputs_dir).glob("*/*/" + records.RECORD_NAME)):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if complete_only and rec.get("status") != "complete":
            continue
        if profile is not None and rec.get("profile") != profile:
            continue
        spec = families.get(rec.get("family"))
        row = {c: rec.get(c) for c in BASE_COLUMNS}
        params = rec.get("params") or {}
        for axis in spec.grid_axes if spec else ():
            row[axis] = params.get(axis)
        for k, v in (rec.get("metrics") or {}).items():
            row[k] = v
        for k in ("params", "metrics", "curves", "extra", "versions", "git", "device"):
            row[k] = rec.get(k) or {}
        row["axes_key"] = json.dumps(
            {a: params.get(a) for a in (spec.grid_axes if spec else ())}, sort_keys=True
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    # Keep grid-axis values as recorded: a family without an axis must not turn another's ints to floats.
    for axis in {a for spec in families.values() for a in spec.grid_axes} & set(df.columns):
        df[axis] = pd.Series([row.get(axis) for row in rows], dtype=object, index=df.index)
    df = df.sort_values("finished").drop_duplicates(
        ["family", "profile", "axes_key", "variant", "seed", "status"], keep="last"
    )
    return df.drop(columns="axes_key").reset_index(drop=True)


def _axis_groups(spec: FamilySpec, df: pd.DataFrame):
    axes = [a for a in spec.grid_axes if a in df.columns]
    if not axes:
        yield {}, df
        return
    for key, sub in df.groupby(axes, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield dict(zip(axes, key, strict=True)), sub


def summary_table(spec: FamilySpec, df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of every metric, one row per (axes, variant), plus p vs cosine."""
    out = []
    order = {v: i for i, v in enumerate(spec.variants)}
    for axes, sub in _axis_groups(spec, df):
        base = sub[sub["variant"] == "cosine"].set_index("seed")
        for variant, vs in sorted(sub.groupby("variant"), key=lambda kv: order.get(kv[0], 99)):
            row: dict[str, Any] = {**axes, "variant": variant, "seeds": len(vs)}
            for m in spec.metrics:
                if m in vs.columns:
                    row[m] = stats.format_mean_std(vs[m].astype(float).tolist(), spec.metric_scale)
            primary = spec.primary_metric_of({**sub.iloc[0]["params"], **axes})
            p = _p_vs_cosine(primary, vs, base)
            row[f"p vs cosine ({primary})"] = "" if math.isnan(p) else f"{p:.3g}{stats.significance_stars(p)}"
            out.append(row)
    return pd.DataFrame(out)


def _p_vs_cosine(m: str, vs: pd.DataFrame, base: pd.DataFrame) -> float:
    if vs["variant"].iloc[0] == "cosine" or m not in vs.columns or m not in base.columns:
        return float("nan")
    mine = vs.set_index("seed")[m]
    common = sorted(set(mine.index) & set(base.index))
    if len(common) < 2:
        return float("nan")
    return stats.paired_ttest(mine.loc[common].astype(float), base.loc[common, m].astype(float))[1]


def rule_check(spec: FamilySpec, df: pd.DataFrame) -> pd.DataFrame:
    """Per task (and axis group): does the paper's symmetry rule pick the winning variant?

    Predicted set: cosine for a symmetric task, the magnitude-preserving variants (dot, qnorm, dnorm,
    learn) for an asymmetric one. The winner is the variant with the best mean primary metric. The
    rule *holds* when the winner is in the predicted set; the paired t-test (over seeds) compares
    the best predicted variant with the best of the others.
    """
    rows = []
    for axes, sub in _axis_groups(spec, df):
        if sub.empty:
            continue
        point = {**sub.iloc[0]["params"], **axes}
        sym, m = spec.symmetry_of(point), spec.primary_metric_of(point)
        if m not in sub.columns:
            continue
        means = sub.groupby("variant")[m].mean().astype(float).dropna()
        if means.empty:
            continue
        predicted = [v for v in sym.predicted_variants() if v in means.index]
        others = [v for v in means.index if v not in sym.predicted_variants()]
        winner = means.idxmax()
        row = {
            "family": spec.name,
            **{k: v for k, v in axes.items()},
            "task": sym.name,
            "symmetry": sym.verdict,
            "predicted": ", ".join(sym.predicted_variants()),
            "metric": m,
            "winner": winner,
            "winner mean": means[winner] * spec.metric_scale,
        }
        if predicted and others:
            best_pred = max(predicted, key=means.get)
            best_other = max(others, key=means.get)
            a = sub[sub.variant == best_pred].set_index("seed")[m].astype(float)
            b = sub[sub.variant == best_other].set_index("seed")[m].astype(float)
            common = sorted(set(a.index) & set(b.index))
            p = stats.paired_ttest(a.loc[common], b.loc[common])[1] if len(common) >= 2 else float("nan")
            diff = (means[best_pred] - means[best_other]) * spec.metric_scale
            row.update(
                {"best predicted": best_pred, "best other": best_other, "Δ (pred − other)": diff, "p": p}
            )
            if winner in sym.predicted_variants():
                verdict = "supported" if p < 0.05 else "supported (n.s.)"
            else:
                verdict = "contradicted" if p < 0.05 else "contradicted (n.s.)"
            row["rule"] = verdict
        else:
            row["rule"] = "untestable (a variant class is missing)"
        rows.append(row)
    return pd.DataFrame(rows)


def mixed_parameters(spec: FamilySpec, df: pd.DataFrame) -> dict[str, list]:
    """Parameters that differ between runs pooled in one table (same grid axes, other values), e.g.
    after a sweep re-run with ``--set``: name -> the distinct values. Empty when the pooling is clean."""
    ignored = {"run_dir", "seed", "variant", "profile", *spec.grid_axes}
    mixed: dict[str, list] = {}
    for _, sub in _axis_groups(spec, df):
        values: dict[str, set] = {}
        for params in sub["params"]:
            for k, v in params.items():
                if k not in ignored:
                    values.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
        for k, vs in values.items():
            if len(vs) > 1:
                mixed.setdefault(k, sorted({*mixed.get(k, []), *vs}))
    return mixed


def provenance(df: pd.DataFrame) -> pd.DataFrame:
    """Commits, package versions and devices behind the records, per family."""
    rows = []
    for fam, sub in df.groupby("family"):
        commits = sorted(
            {(g.get("commit") or "?")[:10] + ("+dirty" if g.get("dirty") else "") for g in sub["git"]}
        )
        versions = sub["versions"].iloc[-1]
        rows.append(
            {
                "family": fam,
                "runs": len(sub),
                "seeds": ", ".join(map(str, sorted(sub["seed"].unique()))),
                "commits": ", ".join(commits),
                "devices": ", ".join(sorted({d.get("gpu") or d.get("device", "?") for d in sub["device"]})),
                "torch": versions.get("torch"),
                "python": versions.get("python"),
                "compute time (s)": round(float(sub["wall_time_s"].fillna(0).sum()), 1),
            }
        )
    return pd.DataFrame(rows)


def render_report(outputs_dir: Path, profile: str = "offline") -> Path:
    """Execute notebooks/results.ipynb over the records and export outputs/report.html (self-contained)."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    from .runner import KERNEL_ARGUMENTS, _kernel_environment

    outputs_dir = Path(outputs_dir)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    _kernel_environment(profile)
    executed = outputs_dir / "results.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS_DIR / "results.ipynb"),
        str(executed),
        parameters={"profile": profile, "outputs_dir": str(outputs_dir.resolve())},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS_DIR),
        extra_arguments=KERNEL_ARGUMENTS,
    )
    exporter = HTMLExporter(
        template_name="embsym",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = outputs_dir / "report.html"
    tmp = html.with_suffix(".html.tmp")
    tmp.write_text(body)
    tmp.replace(html)
    return html
