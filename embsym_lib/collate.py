"""Collation: every run record -> one frame, provenance, and the executed results notebook and HTML report.

Verdicts come from ``claims``; tables and figures from ``report``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from . import records
from .families import FamilySpec, registry
from .params import NOTEBOOKS_DIR

TEMPLATES = Path(__file__).resolve().parent / "templates"
BASE_COLUMNS = ["family", "profile", "run_id", "variant", "seed", "status", "wall_time_s", "finished"]


def load_records(
    outputs_dir: Path, complete_only: bool = True, profile: str | None = None, params_dir: Path | None = None
) -> pd.DataFrame:
    """One row per run record under ``outputs_dir/<family>/<run_id>/record.json``.

    Columns: family, profile, run_id, variant, seed, status, wall_time_s, finished, record_dir, one
    column per grid axis of the family and per metric, the dicts params, metrics, curves, extra,
    versions, git, device, and ``in_grid``: whether the run's parameters (all but the seed) are those of
    a grid point of its profile (``params/<profile>/<family>.yaml``). The report pools only runs in the
    grid; a run with other parameters (a ``--set`` sweep, an ad hoc notebook run) is listed apart and
    never replaces one. Of records with identical parameters and seed (a re-run), the latest is kept.
    ``df.attrs["unreadable"]`` lists record files that could not be read (also warned about).
    """
    from .params import PARAMS_DIR, grid_keys, params_key

    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    families = registry()
    keys: dict[tuple[str, str], set[str] | None] = {}
    for path in sorted(Path(outputs_dir).glob("*/*/" + records.RECORD_NAME)):
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            unreadable.append(f"{path}: {e}")
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
        row["params_key"] = params_key(params)
        group = (str(rec.get("family")), str(rec.get("profile")))
        if group not in keys:
            keys[group] = grid_keys(*group, params_dir or PARAMS_DIR) if spec else set()
        row["in_grid"] = keys[group] is None or row["params_key"] in keys[group]
        rows.append(row)
    if unreadable:
        warnings.warn("unreadable run records skipped: " + "; ".join(unreadable), stacklevel=2)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[*BASE_COLUMNS, "in_grid"])
        df.attrs["unreadable"] = unreadable
        return df
    # Keep grid-axis values as recorded: a family without an axis must not turn another's ints to floats.
    for axis in {a for spec in families.values() for a in spec.grid_axes} & set(df.columns):
        df[axis] = pd.Series([row.get(axis) for row in rows], dtype=object, index=df.index)
    df = df.sort_values("finished").drop_duplicates(
        ["family", "profile", "params_key", "variant", "seed", "status"], keep="last"
    )
    df = df.drop(columns="params_key").reset_index(drop=True)
    df.attrs["unreadable"] = unreadable
    return df


def grid_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs the report pools: parameters (all but the seed) of a grid point of their profile."""
    return df[df["in_grid"].astype(bool)].reset_index(drop=True) if len(df) else df


def outside_grid(df: pd.DataFrame) -> pd.DataFrame:
    """The runs the report does not pool: parameters other than any grid point of their profile."""
    if df.empty or "in_grid" not in df:
        return pd.DataFrame()
    out = df[~df["in_grid"].astype(bool)]
    return pd.DataFrame(
        {
            "family": out["family"],
            "profile": out["profile"],
            "variant": out["variant"],
            "seed": out["seed"],
            "run": out["run_id"],
            "finished": out["finished"],
        }
    ).reset_index(drop=True)


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


def render_report(outputs_dir: Path, profile: str = "offline", params_dir: Path | None = None) -> Path:
    """Execute notebooks/results.ipynb over the records and export outputs/report.html (self-contained).
    ``params_dir``: the parameter sets that define each profile's grid (default: the project's params/)."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    from .runner import KERNEL_ARGUMENTS, environment_restored, kernel_environment

    outputs_dir = Path(outputs_dir)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    executed = outputs_dir / "results.ipynb"
    with environment_restored():
        kernel_environment(profile)
        pm.execute_notebook(
            str(NOTEBOOKS_DIR / "results.ipynb"),
            str(executed),
            parameters={
                "profile": profile,
                "outputs_dir": str(outputs_dir.resolve()),
                "params_dir": str(Path(params_dir).resolve()) if params_dir else "",
            },
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
