"""Task families, declared as data: one package per family (``families/<name>/``: ``spec.py`` with its
parameter schema and ``SPEC = FamilySpec(...)``, ``pipeline.py``, ``tables.py``), found automatically.

Adding a family: docs/architecture.md ("Adding things").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..schema import RunParams
from ..similarity import VARIANTS
from ..symmetry import TaskSymmetry


class UnknownFamilyError(ValueError):
    pass


def metric_column(df, name: str):
    """A metric of every run in a records frame: its column, or its value in the ``metrics`` dicts; NaN
    where a run has none (the report's tables run on partial records)."""
    import numpy as np
    import pandas as pd

    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce")
    if "metrics" in df.columns:
        return (
            df["metrics"].map(lambda m: m.get(name, np.nan) if isinstance(m, dict) else np.nan).astype(float)
        )
    return pd.Series(np.nan, index=df.index, dtype=float)


def param_column(df, name: str, default: Any = None):
    """A parameter of every run in a records frame: its column, or its value in the ``params`` dicts."""
    import pandas as pd

    if name in df.columns:
        return df[name]
    if "params" in df.columns:
        return df["params"].map(lambda p: p.get(name, default) if isinstance(p, dict) else default)
    return pd.Series(default, index=df.index, dtype=object)


@dataclass
class ReportItem:
    """One piece of a family's report section: a paragraph (markdown), then a table or a figure. A
    family's ``sections(records)`` returns a list of them and displays nothing."""

    text: str = ""
    table: Any = None  # a DataFrame
    figure: Any = None  # a matplotlib Figure


@dataclass(frozen=True)
class FamilySpec:
    """What the runner, validation and report need to know about a task family.

    - ``tasks``: the family's task(s) and their scoring symmetry; ``task_axis`` names the grid axis
      whose value picks the task (None: the family has one task).
    - ``variants``: accepted values of ``variant`` (the grid, plus family-specific arms such as
      few-shot's squared-Euclidean baseline).
    - ``grid_axes``: extra axes a params file may sweep besides variant and seed.
    - ``conditions``: grid axes that change the experiment rather than the setting (an evaluation-only
      arm, a fixed-scale ablation), with their reference value: a claim is tested on the runs at the
      reference value of every condition it does not name (in ``where`` or a side's ``where``).
    - ``metrics``: metrics the report tabulates (higher is better), ``primary_metric`` the one used
      for significance tests and the symmetry verdict (a dict task -> metric when tasks differ);
      ``metric_scale`` multiplies them for display.
    - ``params``: the parameter schema (``schema.RunParams`` subclass): types, ranges, defaults and the
      family's cross-field checks, one place; the notebook's parameters cell is generated from it.
    - ``sections(records)``: the family's own report content, a list of ``report.Item`` (text, table
      or figure), pure: it displays nothing.

    - ``reference()``: optional paper numbers as a DataFrame with columns
      (setting, metric, variant, value[, std]) to sit beside ours.
    """

    name: str
    title: str
    notebook: str
    tasks: dict[str, TaskSymmetry]
    primary_metric: str | dict[str, str]
    metrics: tuple[str, ...]
    task_axis: str | None = None
    variants: tuple[str, ...] = VARIANTS
    grid_axes: tuple[str, ...] = ()
    conditions: dict[str, Any] = field(default_factory=dict)
    metric_scale: float = 1.0
    description: str = ""
    params: type[RunParams] = RunParams
    sections: Callable[[Any], list] | None = None
    reference: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def task_of(self, params: dict[str, Any]) -> str:
        if self.task_axis is None:
            return next(iter(self.tasks))
        return str(params[self.task_axis])

    def symmetry_of(self, params: dict[str, Any]) -> TaskSymmetry:
        return self.tasks[self.task_of(params)]

    def primary_metric_of(self, params: dict[str, Any]) -> str:
        if isinstance(self.primary_metric, dict):
            return self.primary_metric[self.task_of(params)]
        return self.primary_metric


_REGISTRY: dict[str, FamilySpec] | None = None


def family_names() -> list[str]:
    """Every family module (its name is the family's name), found without importing any."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _load(module_name: str) -> FamilySpec:
    spec = getattr(importlib.import_module(f"{__name__}.{module_name}"), "SPEC", None)
    if not isinstance(spec, FamilySpec) or spec.name != module_name:
        raise TypeError(
            f"embsym_lib/families/{module_name}/ must export SPEC = FamilySpec(name={module_name!r}, ...)"
        )
    return spec


def registry() -> dict[str, FamilySpec]:
    """All families, by name (imports every family module: use ``get_family`` for one)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = {name: _load(name) for name in family_names()}
    return _REGISTRY


def get_family(name: str) -> FamilySpec:
    """One family's spec, importing only its module (a notebook kernel needs no other family)."""
    if _REGISTRY is not None and name in _REGISTRY:
        return _REGISTRY[name]
    if not isinstance(name, str) or name not in family_names():
        raise UnknownFamilyError(f"unknown family {name!r}; valid families are: {', '.join(family_names())}")
    return _load(name)
