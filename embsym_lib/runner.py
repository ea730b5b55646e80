"""Execute grid points: each one a papermill run of its family notebook into outputs/<family>/<run_id>/.

- A grid point whose ``record.json`` says ``complete`` is skipped (resume after a crash or Ctrl-C).
- A failing run is recorded as ``failed`` (its executed notebook is kept) and the others go on.
- Ctrl-C marks the run in progress ``interrupted`` and stops; completed records are never touched.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import records, runtime, warm_kernels
from .families import get_family
from .params import GridPoint

DEFAULT_OUTPUTS = records.PROJECT_ROOT / "outputs"
THREAD_CAP = runtime.THREAD_CAP
# Kernels listen on loopback only; ipykernel's per-kernel warning about unencrypted TCP would bury a
# sweep's progress lines, and every healthy shutdown (jupyter_client interrupts the kernel before it asks
# it to stop) logged "ERROR | KeyboardInterrupt caught in kernel", which reads as a failure. A cell's
# error reaches papermill through the messaging protocol, and so the record, not through this log.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


@dataclass
class RunResult:
    point: GridPoint
    status: str  # complete | skipped | failed | interrupted
    run_dir: Path
    record: dict[str, Any] | None
    error: str | None = None
    wall_time_s: float = 0.0


@contextmanager
def environment_restored():
    """The process environment as it was before the block: ``kernel_environment`` sets variables for the
    kernels a sweep starts, and a sweep run from a test or a notebook must not leave them behind."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for var in set(os.environ) - set(saved):
            del os.environ[var]
        os.environ.update(saved)


def kernel_environment(profile: str, cpus: int | None = None) -> None:
    # The notebook kernel must be this environment's Python, even when the venv is not activated.
    bindir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bindir + os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if cpus and "EMBSYM_KEEP_THREADS" not in os.environ:
        # A kernel's BLAS/OpenMP pools default to every core: N parallel runs would oversubscribe the
        # machine (3-30x slower here). Each run gets the CPUs its profile declares.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", THREAD_CAP):
            os.environ[var] = str(cpus)
    if profile == "offline":
        # The offline profile must never reach a model hub, even by accident.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_point(
    point: GridPoint,
    outputs_dir: Path = DEFAULT_OUTPUTS,
    execution_timeout: int | None = None,
    max_threads: int | None = None,
    warm: bool = False,
) -> RunResult:
    """Run one grid point (or skip it if already complete). Its kernel gets the CPU threads its profile
    declares, at most ``max_threads`` (the machine's share of each of the parallel runs); with ``warm``,
    the kernel is forked from a server that has already imported the notebook's modules
    (``warm_kernels``)."""
    import papermill as pm

    run_dir = Path(outputs_dir) / point.family / point.run_id
    existing = records.read_record(run_dir)
    if existing is not None and existing.get("status") == "complete":
        return RunResult(point, "skipped", run_dir, existing)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[records.OUTPUTS_ENV] = str(Path(outputs_dir).resolve())  # the kernel's generated data go there
    cpus = int(point.resources.get("cpus", 0)) or None
    kernel_environment(point.profile, min(cpus, max_threads) if cpus and max_threads else cpus)
    params = {**point.params, "run_dir": str(run_dir)}
    notebook = Path(point.notebook)
    engine_options: dict[str, Any] = {}
    if warm:
        engine_options["kernel_manager_class"] = warm_kernels.kernel_manager_class(notebook)
    t0 = time.perf_counter()
    started = records.now_iso()
    error: str | None = None
    try:
        pm.execute_notebook(
            str(notebook),
            str(run_dir / f"{point.family}.ipynb"),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(records.PROJECT_ROOT),  # relative paths in params are relative to the project root
            execution_timeout=execution_timeout,
            extra_arguments=KERNEL_ARGUMENTS,
            # The record is written (atomically) by the last cell and every output has reached papermill
            # once the kernel is idle: a graceful shutdown only waits ~2 s per run for the interpreter's
            # teardown (benchmarks/bench_reproduce.py: "kernel stop").
            shutdown_kernel="immediate",
            **engine_options,
        )
    except KeyboardInterrupt:
        _mark_unfinished(run_dir, point, params, "interrupted", "interrupted by the user", started, t0)
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run must not stop the sweep
        error = _describe(e)
    wall = time.perf_counter() - t0
    record = records.read_record(run_dir)
    if error is None and (record is None or record.get("status") != "complete"):
        error = "the notebook finished without writing a complete record (run.finish was not reached)"
    if error is not None:
        record = _mark_unfinished(run_dir, point, params, "failed", error, started, t0)
        return RunResult(point, "failed", run_dir, record, error, wall)
    record = records.update_record(run_dir, runner_wall_time_s=wall, profile=point.profile)
    return RunResult(point, "complete", run_dir, record, None, wall)


def _describe(e: Exception) -> str:
    name = type(e).__name__
    if name == "PapermillExecutionError":
        return f"{e.ename}: {e.evalue}"
    return "".join(traceback.format_exception_only(type(e), e)).strip()


def _mark_unfinished(run_dir, point, params, status, error, started, t0) -> dict[str, Any]:
    """Keep whatever the notebook recorded (curves, partial metrics), flag status and error."""
    record = records.read_record(run_dir)
    wall = time.perf_counter() - t0
    if record is None:
        return records.write_record(
            run_dir,
            family=point.family,
            params=params,
            status=status,
            error=error,
            started=started,
            wall_time_s=wall,
        )
    return records.update_record(run_dir, status=status, error=error, runner_wall_time_s=wall)


def run_grid(
    points: Sequence[GridPoint],
    outputs_dir: Path = DEFAULT_OUTPUTS,
    jobs: int = 1,
    on_result: Callable[[int, int, RunResult], None] | None = None,
    execution_timeout: int | None = None,
    warm: bool | None = None,
) -> list[RunResult]:
    """Run every grid point (``jobs`` at a time); returns one RunResult per point, in order.
    ``warm`` (default: unless $EMBSYM_FRESH_KERNELS is set): fork each kernel from a server that has
    already imported its notebook's modules (``warm_kernels``)."""
    _check_local_gpu_jobs(points, jobs)
    warm = warm_kernels.enabled() if warm is None else warm
    with environment_restored():
        try:
            return _run_grid(points, outputs_dir, jobs, on_result, execution_timeout, warm)
        finally:
            warm_kernels.stop_servers()


def _run_grid(points, outputs_dir, jobs, on_result, execution_timeout, warm) -> list[RunResult]:
    results: list[RunResult | None] = [None] * len(points)
    lock = threading.Lock()
    done = 0
    left_per_notebook = Counter(p.notebook for p in points)

    def report(i: int, res: RunResult) -> None:
        nonlocal done
        with lock:
            done += 1
            results[i] = res
            left_per_notebook[res.point.notebook] -= 1
            if warm and not left_per_notebook[res.point.notebook]:
                warm_kernels.stop_servers(Path(res.point.notebook))  # its memory is not needed any more
            if on_result:
                on_result(done, len(points), res)

    # Parallel runs share the cores: a profile's cpus: 2 with --jobs 2 on two cores would oversubscribe.
    max_threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    if jobs <= 1:
        for i, p in enumerate(points):
            report(i, run_point(p, outputs_dir, execution_timeout, max_threads, warm))
    else:
        in_flight: set[int] = set()  # idents of the worker threads inside run_point

        def run_tracked(point: GridPoint) -> RunResult:
            with lock:
                in_flight.add(threading.get_ident())
            try:
                return run_point(point, outputs_dir, execution_timeout, max_threads, warm)
            finally:
                with lock:
                    in_flight.discard(threading.get_ident())

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = {pool.submit(run_tracked, p): i for i, p in enumerate(points)}
            for fut in as_completed(futures):
                report(futures[fut], fut.result())
        except KeyboardInterrupt:
            # Ctrl-C reaches only this thread. Queued points are dropped; each running thread gets a
            # KeyboardInterrupt (raised at its next poll of the kernel), so each run stops its kernel and
            # marks its record `interrupted` exactly as a serial run does, instead of running on.
            pool.shutdown(wait=False, cancel_futures=True)
            with lock:
                running = list(in_flight)
            for ident in running:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
                )
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def _check_local_gpu_jobs(points: Sequence[GridPoint], jobs: int) -> None:
    """Parallel local runs would all start on the same GPUs (this backend does not partition them)."""
    import torch

    if jobs > 1 and torch.cuda.is_available() and any(p.resources.get("gpus", 0) for p in points):
        raise ValueError(
            f"--jobs {jobs} with runs that declare GPUs: the local backend would put every parallel run "
            "on the same GPUs; use --jobs 1, or --backend ray, which gives each run the GPUs it declares"
        )


def run_grid_ray(
    points: Sequence[GridPoint],
    outputs_dir: Path = DEFAULT_OUTPUTS,
    address: str | None = None,
    on_result: Callable[[int, int, RunResult], None] | None = None,
    execution_timeout: int | None = None,
) -> list[RunResult]:
    """Run every grid point as a Ray task that requests the CPUs/GPUs its profile declares
    (``resources: {cpus: N, gpus: M}`` in the params file).

    ``address=None`` starts a local Ray instance (and stops it afterwards); otherwise connects to an
    existing cluster (``"auto"`` or ``"ray://host:10001"``). Every node must have this environment
    installed and see ``outputs_dir`` (a shared filesystem on a multi-node cluster): records are
    written by the workers, exactly as by the local backend, so resume and failure isolation are the same.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, TimeoutError) as e:
            ray.shutdown()  # a failed client connection leaves half-initialized state behind
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise ValueError(
                f"cannot connect to {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                "Start one with `ray start --head`, or leave out --address to start a local instance."
            ) from None
    task = ray.remote(max_retries=0)(run_point)
    results: list[RunResult | None] = [None] * len(points)
    refs = {}
    for i, p in enumerate(points):
        options = {
            "num_cpus": float(p.resources.get("cpus", 1)),
            "num_gpus": float(p.resources.get("gpus", 0)),
        }
        refs[task.options(**options).remote(p, Path(outputs_dir), execution_timeout)] = i
    pending, done_count = list(refs), 0
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = refs[ref]
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a lost worker fails one point, not the sweep
                    point = points[i]
                    run_dir = Path(outputs_dir) / point.family / point.run_id
                    error = f"ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    # The worker may have died mid-run and left its record 'running': say what happened.
                    record = records.read_record(run_dir)
                    if record is not None and record.get("status") != "complete":
                        record = records.update_record(run_dir, status="failed", error=error)
                    res = RunResult(point, "failed", run_dir, record, error)
                results[i] = res
                done_count += 1
                if on_result:
                    on_result(done_count, len(points), res)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return [r for r in results if r is not None]


class SweepProgress:
    """One line per finished run: runs done, failures, time elapsed and an estimate of the time left.

    The estimate sums, over the runs still to do, the mean wall time of this sweep's finished runs of
    the same family (of all families until one of it has finished), divided by the parallel jobs (with
    ``jobs=None``, as on a Ray cluster, by the parallelism measured so far: run time finished per second
    elapsed); runs skipped as already complete count neither way.
    """

    def __init__(
        self, points: Sequence[GridPoint], jobs: int | None = 1, clock: Callable[[], float] = time.monotonic
    ):
        self.points = list(points)
        self.jobs = jobs
        self.clock = clock
        self.start = clock()
        self.reported: set[str] = set()
        self.walls: dict[str, list[float]] = {}
        self.failed = 0
        self.skipped = 0

    def eta_s(self) -> float | None:
        every = [w for walls in self.walls.values() for w in walls]
        if not every:
            return None
        overall = sum(every) / len(every)
        left = 0.0
        for p in self.points:
            if p.run_id in self.reported:
                continue
            mine = self.walls.get(p.family)
            left += sum(mine) / len(mine) if mine else overall
        parallel = self.jobs or sum(every) / max(self.clock() - self.start, 1e-9)
        return left / max(1.0, parallel)

    def line(self, done: int, total: int, res: RunResult) -> str:
        self.reported.add(res.point.run_id)
        if res.status == "skipped":
            self.skipped += 1
        else:
            self.walls.setdefault(res.point.family, []).append(res.wall_time_s)
        self.failed += res.status in ("failed", "interrupted")
        counts = "".join(
            f" {n} {what}" for n, what in ((self.failed, "failed"), (self.skipped, "skipped")) if n
        )
        eta = self.eta_s()
        timing = f"{_clock(self.clock() - self.start)} elapsed" + (
            f", ~{_clock(eta)} left" if eta is not None and done < total else ""
        )
        primary = get_family(res.point.family).primary_metric_of(res.point.params)
        metric = (res.record or {}).get("metrics", {}).get(primary)
        detail = {
            "complete": f"{res.wall_time_s:.1f}s"
            + (f"  {primary}={metric:.4f}" if isinstance(metric, float) else ""),
            "skipped": "already complete",
            "failed": f"FAILED: {res.error}",
        }.get(res.status, res.status)
        return f"[{done}/{total}{counts} | {timing}] {res.point.label}: {detail}"

    def __call__(self, done: int, total: int, res: RunResult) -> None:
        print(self.line(done, total, res), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
