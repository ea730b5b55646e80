"""What a run sets once, before any work: the seeds, torch's threads and the device.

Called by ``notebook.collect`` for every run (and by each process of a distributed training step),
so that no family sets them again."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np

# Imported at the first optimizer step (sympy, triton: ~3 s); warm kernel servers import it beforehand.
WARM_IMPORTS = ("torch._dynamo",)

# Set by the runner to the CPUs a run may use (its profile's cpus, within its share of the machine when
# several runs share it): a run's ``threads`` never exceeds it.
THREAD_CAP = "EMBSYM_THREAD_CAP"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries draw from the legacy global state
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


@contextlib.contextmanager
def rng_preserved():
    """A block that leaves Python's, NumPy's and torch's random streams as it found them: a diagnostic run
    before training (the Fisher predictor) must not change what the training draws (a DataLoader, for
    one, takes a seed from torch's stream even when it does not shuffle)."""
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())  # noqa: NPY002
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


PRECISIONS = ("fp32", "bf16", "auto")
_PRECISION_ATTRIBUTE = "_embsym_precision"


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto``: bf16 where the device has bf16 matrix units (a CPU with AMX, measured ~1.6-2x faster
    in docs/performance.md; a CUDA GPU that supports bf16), else fp32: without them bf16 is emulated and
    can be several times slower. ``fp32`` and ``bf16`` stay as they are."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent = no
    return "bf16" if has_amx is not None and has_amx() else "fp32"


def compute_in(module, precision: str):
    """Run every forward pass of ``module`` (training, evaluation, diagnostics alike) under torch's
    autocast to ``precision`` (``auto``: ``resolve_precision`` on the module's device) and hand its
    floating outputs on as float32, so that what is computed from them (the grid's scores, the loss,
    norms) stays float32: bf16 rounds relative to magnitude, and an unnormalized variant's logits are ten
    times a cosine's. ``fp32`` leaves the module's computation as it is. Returns the module; what it
    computes in is ``precision_of(module)``, for the run's record."""
    import torch

    try:
        device = next(module.parameters()).device.type
    except StopIteration:
        device = "cpu"
    precision = resolve_precision(precision, device)
    setattr(module, _PRECISION_ATTRIBUTE, precision)
    if precision == "fp32":
        return module
    active: list = []

    def enter(mod, args):
        active.append(torch.autocast(next(mod.parameters()).device.type, dtype=torch.bfloat16))
        active[-1].__enter__()

    def leave(mod, args, output):
        active.pop().__exit__(None, None, None)
        return _as_float32(output)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)
    return module


def precision_of(module) -> str:
    """What ``compute_in`` made ``module`` compute in: fp32 or bf16 (fp32 when it never saw it)."""
    return getattr(module, _PRECISION_ATTRIBUTE, "fp32")


def _as_float32(value):
    """A forward's output with its half-precision tensors as float32 (dicts updated in place, as a
    SentenceTransformer's features are)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        value.update({k: _as_float32(v) for k, v in value.items()})
    elif type(value) in (list, tuple):
        return type(value)(_as_float32(v) for v in value)
    return value


def resolve_device(name: str) -> str:
    """``auto`` is cuda where torch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no GPU on this machine (use device=auto or cpu)")
    return name


def configure(params: dict) -> str:
    """Seed, set torch's threads; returns the device the run uses."""
    import torch

    seed_everything(int(params["seed"]))
    # Subnormal floats (softmax tails of large unnormalized logits, e.g. dot) cost x86 CPUs ~100x per
    # operation: dot-product training ran 2x slower than cosine here. Flushing them to zero changes
    # values below 1.2e-38 only (docs/performance.md); a no-op where the CPU cannot do it.
    torch.set_flush_denormal(True)
    if "threads" in params:
        torch.set_num_threads(thread_count(int(params["threads"])))
    return resolve_device(params.get("device", "cpu"))


def thread_count(threads: int) -> int:
    """``threads``, at most the runner's cap for this run (``EMBSYM_KEEP_THREADS`` lifts it)."""
    cap = os.environ.get(THREAD_CAP)
    if cap and "EMBSYM_KEEP_THREADS" not in os.environ:
        return max(1, min(threads, int(cap)))
    return threads
