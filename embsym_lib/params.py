"""Parameter sets: ``params/<profile>/<family>.yaml`` -> validated grid points, before any compute.

A params file::

    description: what this profile is for
    variants: [cosine, dot, qnorm, dnorm, learn]
    seeds: [0, 1, 2]
    grid:            # optional extra axes, each must be one of the family's grid_axes
      task: [asymmetric, symmetric]
    # or a list of blocks whose points are united, each with optional variants/seeds of its own:
    # grid:
    #   - {task: [asymmetric]}
    #   - {task: [symmetric], variants: [cosine, dot]}
    parameters:      # values for the notebook's parameters cell (names and types checked against it)
      epochs: 3
    resources: {cpus: 1, gpus: 0}

The family's parameter schema (``families/<name>/spec.py``) checks every name and value set here; its
defaults are the offline profile, so a params file holds only the grid and the deviations.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import schema
from .families import FamilySpec, get_family
from .records import PROJECT_ROOT
from .schema import ParamError
from .similarity import check_variant

PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
RESERVED = schema.RESERVED
TOP_LEVEL_KEYS = ("description", "variants", "seeds", "grid", "parameters", "resources")


@dataclass(frozen=True)
class GridPoint:
    family: str
    profile: str
    params: dict[str, Any]
    axes: dict[str, Any]
    run_id: str
    resources: dict[str, Any] = field(default_factory=dict)
    notebook: str = ""  # resolved at expansion, so a worker process needs no family registry

    @property
    def label(self) -> str:
        axes = " ".join(f"{k}={v}" for k, v in self.axes.items())
        return f"{self.family} {axes} variant={self.params['variant']} seed={self.params['seed']}".replace(
            "  ", " "
        )


def available_profiles(params_dir: Path = PARAMS_DIR) -> list[str]:
    return (
        sorted(p.name for p in Path(params_dir).iterdir() if p.is_dir()) if Path(params_dir).exists() else []
    )


def notebook_path(spec: FamilySpec) -> Path:
    return NOTEBOOKS_DIR / spec.notebook


def validate_point(
    spec: FamilySpec, params: dict[str, Any], where: str | None = None, check_data: bool = True
) -> dict[str, Any]:
    """One fully-resolved grid point checked (the family's schema, variant, task, the family's own
    checks); returns the parameters as the schema completes and normalizes them. ``check_data=False``
    skips the checks that local data exist."""
    where = where or f"{spec.name}"
    params = schema.validate(spec.params, params, where, check_data)
    try:
        check_variant(params.get("variant"), spec.variants)
    except ValueError as e:
        raise ParamError(f"{where}: {e}") from None
    seed = params.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ParamError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    if spec.task_axis is not None and str(params.get(spec.task_axis)) not in spec.tasks:
        raise ParamError(
            f"{where}: unknown {spec.task_axis} {params.get(spec.task_axis)!r}; "
            f"valid values are: {', '.join(spec.tasks)}"
        )
    return params


def load_profile(family: str, profile: str, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    spec = get_family(family)
    profiles = available_profiles(params_dir)
    if profile not in profiles:
        raise ParamError(
            f"unknown profile {profile!r}; valid profiles are: {', '.join(profiles) or '(none)'}"
        )
    path = Path(params_dir) / profile / f"{spec.name}.yaml"
    if not path.exists():
        raise ParamError(f"profile {profile!r} has no parameters for family {family!r} (missing {path})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise ParamError(f"{path}: unknown keys {sorted(unknown)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    raw["_path"] = str(path)
    return raw


def _as_list(value: Any, name: str, where: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int)):
        return [value]
    raise ParamError(f"{where}: {name} must be a list, got {value!r}")


def run_id_for(profile: str, axes: dict[str, Any], params: dict[str, Any]) -> str:
    """Readable and unique: profile, axes, variant, seed, and a hash of every parameter."""
    digest = hashlib.sha1(
        json.dumps({k: v for k, v in params.items() if k != "run_dir"}, sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    parts = [profile, *(f"{k}={v}" for k, v in axes.items()), params["variant"], f"s{params['seed']}", digest]
    return "-".join(re.sub(r"[^A-Za-z0-9._=+-]", "_", str(p)) for p in parts)


def _override_axis(blocks: list[dict], name: str, value: Any, where: str) -> list[dict]:
    """An override of a grid axis: the blocks that sweep the value keep only it; a block that sweeps
    the axis without that value goes (``--set encoder=scratch`` must not also run the minilm-only
    evaluation block as scratch) unless no block has the value (a value the file does not sweep: every
    block sweeping the axis runs with it); a block that does not sweep the axis takes it as fixed."""
    sweeping = [b for b in blocks if name in b["axes"]]
    if not sweeping:
        return blocks
    having = [b for b in sweeping if value in _as_list(b["axes"][name], f"grid.{name}", where)]
    out = []
    for block in blocks:
        if name in block["axes"] and having and block not in having:
            continue
        out.append({**block, "axes": {**block["axes"], name: [value]}})
    return out


def expand(
    family: str,
    profile: str = "offline",
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    params_dir: Path = PARAMS_DIR,
    check_data: bool = True,
) -> list[GridPoint]:
    """All grid points of a family under a profile, each validated; raises ParamError on the first problem.

    ``variants``/``seeds`` (the command line's) replace the file's everywhere, in every grid block.
    An override of a grid axis restricts the sweep to that value (``_override_axis``). ``check_data=False``: without the
    checks that local data exist (a dry run, or the report's grid)."""
    spec = get_family(family)
    raw = load_profile(family, profile, params_dir)
    where = raw["_path"]
    defaults = schema.defaults(spec.params)

    file_variants = _as_list(raw.get("variants", list(spec.variants)), "variants", where)
    file_seeds = _as_list(raw.get("seeds", [0]), "seeds", where)
    base = dict(raw.get("parameters") or {})
    blocks = _grid_blocks(raw.get("grid"), spec, where)
    for name, value in (overrides or {}).items():
        blocks = _override_axis(blocks, name, value, where)
        if not any(name in block["axes"] for block in blocks):
            base[name] = value
    for name in RESERVED:
        if name in base or any(name in b["axes"] for b in blocks):
            raise ParamError(
                f"{where}: {name!r} is set by the runner (use variants/seeds), not by parameters"
            )

    resources = dict(raw.get("resources") or {})
    points: dict[tuple[str, int], GridPoint] = {}  # by parameters: blocks may overlap (the first names it)
    for block in blocks:
        variant_list = variants if variants is not None else block.get("variants", file_variants)
        seed_list = seeds if seeds is not None else block.get("seeds", file_seeds)
        _check_variants_and_seeds(variant_list, seed_list, spec, where)
        axis_names = list(block["axes"])
        axis_values = [_as_list(block["axes"][a], f"grid.{a}", where) for a in axis_names]
        empty = [a for a, vals in zip(axis_names, axis_values, strict=True) if not vals]
        if empty:
            raise ParamError(f"{where}: grid axis {empty[0]!r} has no values: nothing would run")
        for combo in itertools.product(*axis_values):
            axes = dict(zip(axis_names, combo, strict=True))
            for variant in variant_list:
                for seed in seed_list:
                    params = {
                        **defaults,
                        **base,
                        **axes,
                        "variant": variant,
                        "seed": seed,
                        "profile": profile,
                    }
                    params["run_dir"] = ""
                    params = validate_point(
                        spec,
                        params,
                        where=f"{where} [{' '.join(f'{k}={v}' for k, v in axes.items())} variant={variant} seed={seed}]",
                        check_data=check_data,
                    )
                    _check_processes_fit(params, resources, where)
                    rid = run_id_for(profile, axes, params)
                    points.setdefault(
                        (params_key(params), params["seed"]),
                        GridPoint(family, profile, params, axes, rid, resources, str(notebook_path(spec))),
                    )
    return list(points.values())


def params_key(params: dict[str, Any]) -> str:
    """What makes runs replicates of one grid point: every parameter but the seed and the folder."""
    body = {k: v for k, v in params.items() if k not in ("run_dir", "seed")}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def grid_keys(family: str, profile: str, params_dir: Path = PARAMS_DIR) -> set[str] | None:
    """The ``params_key`` of every grid point of a profile (None where the profile does not expand here)."""
    try:
        return {
            params_key(p.params) for p in expand(family, profile, params_dir=params_dir, check_data=False)
        }
    except ParamError:
        return None


def _grid_blocks(grid: Any, spec: FamilySpec, where: str) -> list[dict[str, Any]]:
    """``grid`` is one mapping of axis -> values, or a list of such blocks whose points are united; a
    block may also set its own ``variants`` and ``seeds`` (e.g. only the paper's six CLIP configurations:
    ``[{loss_direction: [sym], variants: [cosine, dot]}, {loss_direction: [i2t, t2i], variants: [qnorm, dot]}]``)."""
    raw_blocks = grid if isinstance(grid, list) else [grid or {}]
    if not raw_blocks:
        raise ParamError(f"{where}: grid is an empty list; leave it out for no axes")
    blocks = []
    for i, block in enumerate(raw_blocks):
        label = "grid" if not isinstance(grid, list) else f"grid[{i}]"
        if not isinstance(block, dict):
            raise ParamError(f"{where}: {label} must be a mapping of axis -> list of values")
        axes = {k: v for k, v in block.items() if k not in ("variants", "seeds")}
        for axis in axes:
            if axis not in spec.grid_axes:
                raise ParamError(
                    f"{where}: unknown grid axis {axis!r} in {label} for {spec.name}; valid axes are: "
                    f"{', '.join(spec.grid_axes) or '(none)'}"
                )
        blocks.append(
            {
                "axes": axes,
                **{k: _as_list(block[k], f"{label}.{k}", where) for k in ("variants", "seeds") if k in block},
            }
        )
    return blocks


def _check_variants_and_seeds(variant_list: list, seed_list: list, spec: FamilySpec, where: str) -> None:
    if not variant_list or not seed_list:
        raise ParamError(
            f"{where}: {'variants' if not variant_list else 'seeds'} is empty: nothing would run"
        )
    for v in variant_list:
        try:
            check_variant(v, spec.variants)
        except ValueError as e:
            raise ParamError(f"{where}: {e}") from None
    for s in seed_list:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= schema.SEED_MAX:
            raise ParamError(f"{where}: seeds must be integers from 0 to {schema.SEED_MAX}, got {s!r}")


def _check_processes_fit(params: dict[str, Any], resources: dict[str, Any], where: str) -> None:
    """A run that trains in N processes (one GPU each) must declare at least N GPUs, so that the Ray
    backend reserves them."""
    processes = params.get("train_processes", 1)
    gpus = resources.get("gpus", 0)
    if isinstance(processes, int) and processes > 1 and gpus and processes > gpus:
        raise ParamError(
            f"{where}: train_processes={processes} needs one GPU per process but resources declares "
            f"gpus: {gpus}"
        )


def parse_override(text: str) -> tuple[str, Any]:
    """``name=value`` from the command line; the value is parsed as YAML (numbers, lists, booleans; the
    family's schema then reads ``1e-3`` as a number)."""
    if "=" not in text:
        raise ParamError(f"--set expects name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ParamError(
            f"--set {name.strip()}: cannot read the value {value!r} (YAML: a number, a word, [a, b])"
        ) from None
