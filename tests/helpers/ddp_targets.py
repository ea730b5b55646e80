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


def gathered_loss(spec):
    """Each rank holds its slice of one fixed batch and computes the retrieval loss (sentence-transformers'
    MultipleNegativesRankingLoss with the grid's scoring), per variant, with and without cross-rank
    negatives."""
    from embsym_lib.adapters.sentence_transformers import retrieval_loss, score_function

    torch.distributed.init_process_group("gloo")
    n, per_rank = spec["per_rank"] * world_size(), spec["per_rank"]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, 6, generator=g) * (0.5 + 3 * torch.rand(n, 1, generator=g))
    d = torch.randn(n, 6, generator=g) * (0.5 + 3 * torch.rand(n, 1, generator=g))
    mine = slice(rank() * per_rank, (rank() + 1) * per_rank)
    out = {}
    for variant in spec["variants"]:
        for gather in (True, False):
            q_local, d_local = q[mine].clone().requires_grad_(), d[mine].clone().requires_grad_()
            loss_fn = retrieval_loss(None, score_function(variant), 20.0, gather)
            loss = loss_fn.compute_loss_from_embeddings([q_local, d_local], labels=None)
            loss.backward()
            out[f"{variant}-{gather}"] = {
                "loss": loss.item(),
                "q_grad": q_local.grad.tolist(),
                "d_grad": d_local.grad.tolist(),
            }
    Path(spec["out"], f"rank{rank()}.json").write_text(json.dumps(out))
    torch.distributed.destroy_process_group()
