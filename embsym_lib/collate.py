"""Collation: every run record -> one frame, provenance, and the executed results notebook and HTML report.

Verdicts come from ``claims``; tables and figures from ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from . import records
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
        row["record_dir"] = str(path.parent)
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
