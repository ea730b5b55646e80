"""Multi-process (DDP) training inside one run: torchrun launches a worker function, the notebook waits.

Notebooks cannot run under torchrun, so a family's training step hands over to a worker instead:
``launch("embsym_lib.families.retrieval.pipeline:train_worker", spec, nproc, workdir)`` writes ``spec`` to JSON and
runs ``python -m torch.distributed.run --standalone --nproc_per_node=N -m embsym_lib.distributed TARGET
SPEC`` with this interpreter. Each process calls ``TARGET(spec)``; the library's own trainer (transformers'
Trainer via Accelerate) sees the torchrun environment and wraps the model in DDP. The worker's rank 0 writes
what the notebook needs back into ``workdir``. On a machine without CUDA the processes use the gloo backend
on the CPU (how the tests exercise this path); with CUDA each process takes the GPU of its local rank.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

SPEC_FILE = "spec.json"
LOG_FILE = "torchrun.log"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def local_device() -> str:
    """This process's device: the GPU of its local rank, or the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def check_processes(nproc: Any) -> int:
    """``nproc`` as a positive int, or one clear error; with CUDA present, at most one process per GPU."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"train_processes must be an integer >= 1, got {nproc!r}")
    if nproc > 1 and torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise ValueError(
            f"train_processes={nproc} needs {nproc} GPUs (one per process); this machine has "
            f"{torch.cuda.device_count()}"
        )
    return nproc


def average_gradients_across_ranks(module: torch.nn.Module) -> torch.nn.Module:
    """Average the gradients of ``module``'s parameters over the DDP ranks during backward.

    For parameters that live outside the DDP-wrapped model (e.g. a loss's learnable gammas, which the
    trainer optimizes but DDP never sees): without this, each rank would step them with its own shard's
    gradient and the replicas would drift apart. Hooks are registered whenever torchrun started more than
    one process; the process group itself may only be created later (by the trainer), before backward."""
    if world_size() <= 1:
        return module

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad / torch.distributed.get_world_size()

    for p in module.parameters():
        if p.requires_grad:
            p.register_hook(hook)
    return module


def _thread_count(nproc: int) -> str:
    total = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1
    return str(max(1, total // nproc))


def launch(target: str, spec: dict[str, Any], nproc: int, workdir: str | Path) -> None:
    """Run ``target`` ("package.module:function") in ``nproc`` torchrun processes and wait.

    Output of every process goes to ``workdir/torchrun.log`` (and is echoed); a failing worker raises
    RuntimeError with the worker's traceback (or the log's tail if no worker got as far as writing one)."""
    check_processes(nproc)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("error-rank*.txt"):
        stale.unlink()
    spec_path = workdir / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=1, default=str))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "embsym_lib.distributed",
        target,
        str(spec_path),
    ]
    # Threads are shared among the processes of this run, not multiplied by them.
    env = {**os.environ, "OMP_NUM_THREADS": _thread_count(nproc), "TOKENIZERS_PARALLELISM": "false"}
    log_path = workdir / LOG_FILE
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            print(line, end="", flush=True)
        rc = proc.wait()
    if rc != 0:
        errors = sorted(workdir.glob("error-rank*.txt"))
        detail = errors[0].read_text() if errors else "".join(log_path.read_text().splitlines(True)[-40:])
        raise RuntimeError(
            f"{nproc}-process training ({target}) failed with exit code {rc} (log: {log_path}):\n{detail}"
        )


def resolve(target: str):
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    target, spec_path = (argv if argv is not None else sys.argv[1:])[:2]
    try:
        resolve(target)(json.loads(Path(spec_path).read_text()))
    except BaseException:
        # torchrun's own summary rarely shows the worker's exception; launch() reports this file.
        Path(spec_path).with_name(f"error-rank{rank()}.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
