"""Task families, declared as data: one module per family, each defining ``SPEC = FamilySpec(...)``.

Adding a family = adding ``embsym_lib/families/NAME.py`` (its spec), ``notebooks/NAME.ipynb`` and
``params/<profile>/NAME.yaml``. Discovery is automatic.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..similarity import VARIANTS
from ..symmetry import TaskSymmetry


class UnknownFamilyError(ValueError):
    pass


@dataclass(frozen=True)
class FamilySpec:
    """What the runner, validation and report need to know about a task family.

    - ``tasks``: the family's task(s) and their scoring symmetry; ``task_axis`` names the grid axis
      whose value picks the task (None: the family has one task).
    - ``variants``: accepted values of ``variant`` (the grid, plus family-specific arms such as
      few-shot's squared-Euclidean baseline).
    - ``grid_axes``: extra axes a params file may sweep besides variant and seed.
    - ``metrics``: metrics the report tabulates (higher is better), ``primary_metric`` the one used
      for significance tests and the symmetry verdict (a dict task -> metric when tasks differ);
      ``metric_scale`` multiplies them for display.
    - ``validate(params)``: family-specific checks of one grid point's parameters (known dataset,
      existing file, ...), raising ValueError with one clear message, called before any compute.
    - ``report(records)``: optional extra report content (figures, matrices) from the records frame.
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
    metric_scale: float = 1.0
    description: str = ""
    validate: Callable[[dict[str, Any]], None] | None = None
    report: Callable[[Any], None] | None = None
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


def registry() -> dict[str, FamilySpec]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, FamilySpec] = {}
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("_"):
                continue
            spec = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "SPEC", None)
            if isinstance(spec, FamilySpec):
                found[spec.name] = spec
        _REGISTRY = dict(sorted(found.items()))
    return _REGISTRY


def get_family(name: str) -> FamilySpec:
    families = registry()
    if name not in families:
        raise UnknownFamilyError(f"unknown family {name!r}; valid families are: {', '.join(families)}")
    return families[name]
