"""Worker functions that tests launch through ``embsym_lib.distributed`` (importable via PYTHONPATH)."""

import json
import os
from pathlib import Path

import torch

from embsym_lib.distributed import average_gradients_across_ranks, rank, world_size


def average_check(spec):
    """Each rank backpropagates a rank-dependent loss into a parameter outside any DDP wrapper."""
    module = average_gradients_across_ranks(torch.nn.Linear(1, 1, bias=False))
    torch.distributed.init_process_group("gloo")  # after the hooks, as the trainer does it
    (module.weight.sum() * (rank() + 1)).backward()
    out = {"rank": rank(), "world_size": world_size(), "grad": module.weight.grad.item()}
    Path(spec["out"], f"rank{rank()}.json").write_text(json.dumps(out))
    torch.distributed.destroy_process_group()


def fail(spec):
    if rank() == int(os.environ.get("FAIL_RANK", "1")):
        raise ValueError(spec["message"])
