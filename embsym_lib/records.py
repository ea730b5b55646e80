"""Run records: one ``record.json`` per run, beside its executed notebook, written atomically.

A record holds everything needed to trust and re-create a number: family, variant, seed, every
parameter, metrics, curves, package versions, git commit, device, wall time and status.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

RECORD_NAME = "record.json"
UNITS_NAME = "units.npz"
SCHEMA_VERSION = 1
STATUSES = ("complete", "failed", "interrupted", "running")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(path: str | Path) -> Path:
    """Where a data path from a params file points: ``~`` expanded; a relative path is relative to the
    project root, whatever the working directory (the CLI's, or a notebook kernel's notebooks/)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


OUTPUTS_ENV = "EMBSYM_OUTPUTS"  # set by the runner for its kernels: the sweep's outputs folder
DATA_ENV = "EMBSYM_DATA"  # a user's data root for every family (downloads, generated sets)
KERNEL_ENV = "EMBSYM_KERNEL"  # "warm" in a kernel forked by warm_kernels' server


def outputs_dir() -> Path:
    """The outputs folder of the sweep this process belongs to (the runner's ``--outputs``)."""
    return Path(os.environ[OUTPUTS_ENV]) if os.environ.get(OUTPUTS_ENV) else PROJECT_ROOT / "outputs"


def generated_data_dir(family: str) -> Path:
    """Where a family's generated or downloaded data live: ``$EMBSYM_DATA/<family>``, else the sweep's
    outputs folder's ``data/<family>`` (so ``--outputs`` elsewhere keeps the project tree clean)."""
    root = Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV) else outputs_dir() / "data"
    return root / family


TRACKED_PACKAGES = (
    "embsym",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "transformers",
    "sentence-transformers",
    "open_clip_torch",
    "pykeen",
    "recbole",
    "learn2learn",
    "papermill",
    "pytrec-eval-terrier",
    "ray",
)


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """HEAD's commit and whether the working tree differs from it (``dirty``)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = "cuda"
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
        else:
            info["device"] = "cpu"
    except ImportError:
        info["device"] = "cpu"
    return info


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (the notebook kernel) and peak CUDA memory, in MiB."""
    import resource

    out: dict[str, float | None] = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import torch

        out["cuda_peak_mib"] = (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        )
    except ImportError:
        out["cuda_peak_mib"] = None
    return out


def kernel_start() -> str | None:
    """How the notebook kernel writing this record started: "warm" (forked from a server that had
    imported its modules, ``warm_kernels``), "fresh" (a new interpreter), None outside a kernel."""
    if os.environ.get(KERNEL_ENV) == "warm":
        return "warm"
    return "fresh" if "ipykernel" in sys.modules else None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _jsonable(x: Any) -> Any:
    """Plain JSON: numpy/torch scalars to Python numbers, NaN/inf to None, tuples to lists."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _readable(path: str) -> None:
    """mkstemp creates files 0600; a record must be readable like any file the user writes (umask), e.g.
    by the group on a shared outputs folder that Ray workers write to."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and ``os.replace``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, indent=1, sort_keys=False, allow_nan=False)
            f.write("\n")
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_units(run_dir: Path, units: dict[str, tuple[Any, Any]]) -> dict[str, int]:
    """Write the per-unit sidecar ``run_dir/units.npz`` atomically; returns name -> number of units.

    ``units``: name (e.g. ``ndcg10/pydoc_scientific``) -> (unit ids, values), one value per unit of a
    test set (query, triple, episode, user), so two runs' results can be paired unit by unit.
    """
    import numpy as np

    arrays: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for name, (ids, values) in units.items():
        ids = np.asarray([str(i) for i in ids])
        values = np.asarray(values, dtype=float)
        if ids.shape != values.shape or ids.ndim != 1:
            raise ValueError(f"units[{name!r}]: {ids.shape[0]} ids for {values.shape} values")
        if len(set(ids.tolist())) != ids.size:
            raise ValueError(f"units[{name!r}]: unit ids repeat")
        arrays[f"{name}::ids"], arrays[f"{name}::values"] = ids, values
        sizes[name] = int(ids.size)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=run_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        _readable(tmp)
        os.replace(tmp, run_dir / UNITS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sizes


def read_units(run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The per-unit sidecar of a run: name -> (ids, values); empty when the run has none."""
    import numpy as np

    path = Path(run_dir) / UNITS_NAME
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        names = sorted({k.rsplit("::", 1)[0] for k in data.files})
        return {n: (data[f"{n}::ids"], data[f"{n}::values"]) for n in names}


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_record(
    run_dir: Path,
    *,
    family: str,
    params: dict[str, Any],
    status: str = "complete",
    metrics: dict[str, float] | None = None,
    curves: dict[str, dict[str, list]] | None = None,
    extra: dict[str, Any] | None = None,
    units: dict[str, int] | None = None,
    error: str | None = None,
    started: str | None = None,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """Write ``run_dir/record.json`` with the run's provenance; returns the record.

    ``metrics``: flat name -> number. ``curves``: name -> {"x": [...], "y": [...]} (e.g. norms per
    step). ``extra``: any other JSON-able results (matrices, per-dataset tables).
    """
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
    record = {
        "schema": SCHEMA_VERSION,
        "family": family,
        "run_id": Path(run_dir).name,
        "profile": params.get("profile"),
        "variant": params.get("variant"),
        "seed": params.get("seed"),
        "status": status,
        "params": params,
        "metrics": metrics or {},
        "curves": curves or {},
        "extra": extra or {},
        "units": units or {},
        "error": error,
        "started": started,
        "finished": now_iso(),
        "wall_time_s": wall_time_s,
        "versions": package_versions(),
        "git": git_commit(),
        "device": device_info(),
        "memory": peak_memory(),
        "argv": sys.argv[:1],
        "kernel": kernel_start(),
    }
    atomic_write_json(Path(run_dir) / RECORD_NAME, record)
    return record


def update_record(run_dir: Path, **fields: Any) -> dict[str, Any] | None:
    """Merge ``fields`` into an existing record (atomically); None if there is no record."""
    record = read_record(run_dir)
    if record is None:
        return None
    record.update(fields)
    atomic_write_json(Path(run_dir) / RECORD_NAME, record)
    return record
