"""Helpers that keep family notebooks thin: capture parameters, seed, log, save figures, write the record.

A family notebook looks like::

    import embsym_lib.notebook as nb
    nb.begin(globals())
    # --- cell tagged "parameters" ---
    variant = "cosine"; seed = 0; profile = "offline"; run_dir = ""; ...
    # ---
    run = nb.collect(globals(), family="synthetic")   # validates, seeds, writes a 'running' record
    ...                                              # calls into the library
    run.finish(metrics={...}, curves={...}, extra={...})

Every name assigned in the parameters cell (and in papermill's injected cell) becomes a parameter.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from . import records, runtime
from .families import FamilySpec, get_family

_MARK = "__embsym_names_before_parameters__"
_PLAIN = (bool, int, float, str, list, dict, tuple, type(None))
DEFAULT_OUTPUTS = records.PROJECT_ROOT / "outputs"


def begin(namespace: dict[str, Any]) -> None:
    """Remember which names exist before the parameters cell."""
    namespace[_MARK] = set(namespace) | {_MARK}


class RunContext:
    """One run of a family notebook: its validated parameters, directory, and record."""

    def __init__(self, spec: FamilySpec, params: dict[str, Any], run_dir: Path, device: str = "cpu"):
        self.spec = spec
        self.params = params
        self.device = device
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = records.now_iso()
        self._t0 = time.perf_counter()
        records.write_record(
            self.run_dir, family=spec.name, params=params, status="running", started=self.started
        )

    @property
    def variant(self) -> str:
        return self.params["variant"]

    @property
    def seed(self) -> int:
        return self.params["seed"]

    @property
    def symmetry(self):
        return self.spec.symmetry_of(self.params)

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def log(self, msg: str) -> None:
        print(f"[{self.spec.name} {self.variant} seed={self.seed} +{self.elapsed():.1f}s] {msg}", flush=True)

    def save_figure(self, fig, name: str) -> Path:
        path = self.run_dir / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def finish(
        self,
        metrics: dict[str, float],
        curves: dict[str, dict[str, list]] | None = None,
        extra: dict[str, Any] | None = None,
        units: dict[str, tuple[Any, Any]] | None = None,
    ) -> dict[str, Any]:
        """Write the complete record; returns it. ``units``: per-unit results of the test sets, name ->
        (unit ids, values), written first to ``units.npz`` (``records.write_units``) so that a complete
        record always has its sidecar.

        A run whose training loss or whose family metrics are not finite diverged: its record is written
        ``failed`` (metrics and curves kept for inspection) and ``RunDiverged`` is raised, so the run
        never counts as complete."""
        problem = self.divergence(metrics, curves or {})
        common = {"metrics": metrics, "curves": curves, "extra": extra}
        if problem:
            self._write("failed", **common, error=f"RunDiverged: {problem}")
            raise RunDiverged(problem)
        sizes = records.write_units(self.run_dir, units) if units else None
        return self._write("complete", **common, units=sizes)

    def _write(self, status: str, **fields: Any) -> dict[str, Any]:
        return records.write_record(
            self.run_dir,
            family=self.spec.name,
            params=self.params,
            status=status,
            started=self.started,
            wall_time_s=self.elapsed(),
            **fields,
        )

    def divergence(self, metrics: dict[str, Any], curves: dict[str, dict[str, list]]) -> str | None:
        """Why the run cannot count (a non-finite loss, step included, or a missing or non-finite family
        metric), or None."""
        for name, curve in curves.items():
            if "loss" in name:
                for x, y in zip(curve.get("x", []), curve.get("y", []), strict=False):
                    if not _finite(y):
                        return f"the training loss {name!r} is {y} at step {x}"
        primary = self.spec.primary_metric_of(self.params)
        if primary not in metrics:
            return f"the primary metric {primary!r} was not recorded"
        for name in dict.fromkeys([primary, *self.spec.metrics]):
            if name in metrics and not _finite(metrics[name]):
                return f"the metric {name!r} is {metrics[name]}"
        return None


class RunDiverged(RuntimeError):
    """A run whose loss or metrics are not finite: recorded as failed, never complete."""


def _finite(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def collect(namespace: dict[str, Any], family: str) -> RunContext:
    """Parameters = plain values named after ``begin``; validate them (the family's schema: unknown
    names and bad values are refused, naming the parameter), seed, set threads and device, open the run."""
    from .params import ParamError, params_key, validate_point

    spec = get_family(family)
    before = namespace.get(_MARK)
    if before is None:
        raise RuntimeError("call embsym_lib.notebook.begin(globals()) before the parameters cell")
    params = {
        k: v
        for k, v in namespace.items()
        if k not in before and not k.startswith("_") and isinstance(v, _PLAIN)
    }
    for required in ("variant", "seed", "profile", "run_dir"):
        if required not in params:
            raise ValueError(f"the {family} notebook's parameters cell must define {required!r}")
    params = validate_point(spec, params)
    # A run by hand (no run_dir) gets a folder of its own: another run with other parameters never
    # overwrites it, and the report lists it apart from the grid (collate.load_records' in_grid).
    run_dir = params["run_dir"] or str(
        DEFAULT_OUTPUTS / family / f"adhoc-{params['variant']}-s{params['seed']}-{params_key(params)[:8]}"
    )
    params["run_dir"] = str(run_dir)
    existing = records.read_record(Path(run_dir))
    if (
        existing
        and existing.get("status") == "complete"
        and params_key(existing.get("params") or {}) != params_key(params)
    ):
        raise ParamError(
            f"{run_dir} holds a complete run with other parameters: choose another run_dir (or none) "
            "rather than overwrite it"
        )
    device = runtime.configure(params)
    return RunContext(spec, params, Path(run_dir), device)
