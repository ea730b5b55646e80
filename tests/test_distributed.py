"""embsym_lib.distributed: torchrun launching, gradient averaging outside DDP, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from embsym_lib import distributed
from embsym_lib.params import ParamError, expand

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture
def helpers_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HELPERS))


def test_gradients_outside_ddp_are_averaged_over_ranks(tmp_path, helpers_on_path):
    distributed.launch("ddp_targets:average_check", {"out": str(tmp_path)}, 2, tmp_path / "work")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank r's own gradient is r + 1; averaged over the two ranks: 1.5 on both
    assert [r["grad"] for r in ranks] == [1.5, 1.5]
    assert {r["world_size"] for r in ranks} == {2}
    assert (tmp_path / "work" / distributed.LOG_FILE).exists()


def test_single_process_leaves_gradients_alone():
    import torch

    module = distributed.average_gradients_across_ranks(torch.nn.Linear(1, 1, bias=False))
    (module.weight.sum() * 3).backward()
    assert module.weight.grad.item() == 3.0


def test_failing_worker_raises_with_its_message(tmp_path, helpers_on_path):
    with pytest.raises(RuntimeError, match="2-process training .* failed") as info:
        distributed.launch("ddp_targets:fail", {"message": "worker says boom"}, 2, tmp_path)
    assert "worker says boom" in str(info.value)
    assert "worker says boom" in (tmp_path / distributed.LOG_FILE).read_text()


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
def test_bad_process_counts(bad):
    with pytest.raises(ValueError, match="train_processes must be an integer >= 1"):
        distributed.check_processes(bad)


def test_bad_target():
    with pytest.raises(ValueError, match="package.module:function"):
        distributed.resolve("embsym_lib.distributed")


def test_more_processes_than_declared_gpus(tmp_path):
    profile = tmp_path / "offline"
    profile.mkdir()
    (profile / "retrieval.yaml").write_text(
        yaml.safe_dump(
            {
                "variants": ["cosine"],
                "parameters": {"encoder": "scratch", "train_processes": 2},
                "resources": {"cpus": 2, "gpus": 1},
            }
        )
    )
    with pytest.raises(ParamError, match="train_processes=2 needs one GPU per process .* gpus: 1"):
        expand("retrieval", "offline", params_dir=tmp_path)
    points = expand("retrieval", "offline", params_dir=tmp_path, overrides={"train_processes": 1})
    assert points and points[0].params["train_processes"] == 1


def test_gathered_negatives_reproduce_the_full_batch_loss(tmp_path, helpers_on_path):
    """Two processes with half a batch each and gather_across_devices: the rank-averaged loss and the
    DDP-averaged gradients equal the grid's InfoNCE on the whole batch in one process. Without gathering,
    each query only sees its own process's documents and the loss is smaller."""
    import torch

    from embsym_lib.losses import info_nce

    per_rank, variants = 4, ["qnorm", "dot", "cosine"]
    spec = {"out": str(tmp_path), "per_rank": per_rank, "variants": variants}
    distributed.launch("ddp_targets:gathered_loss", spec, 2, tmp_path / "work")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    for variant in variants:
        g = torch.Generator().manual_seed(0)
        n = 2 * per_rank
        q = (torch.randn(n, 6, generator=g) * (0.5 + 3 * torch.rand(n, 1, generator=g))).requires_grad_()
        d = (torch.randn(n, 6, generator=g) * (0.5 + 3 * torch.rand(n, 1, generator=g))).requires_grad_()
        full = info_nce(q, d, variant, scale=20.0)
        full.backward()

        gathered = [r[f"{variant}-True"] for r in ranks]
        assert sum(r["loss"] for r in gathered) / 2 == pytest.approx(full.item(), rel=1e-5)
        q_grad = torch.tensor([row for r in gathered for row in r["q_grad"]]) / 2  # DDP's mean over ranks
        d_grad = torch.tensor([row for r in gathered for row in r["d_grad"]]) / 2
        torch.testing.assert_close(q_grad, q.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(d_grad, d.grad, rtol=1e-4, atol=1e-6)
        assert sum(r[f"{variant}-False"]["loss"] for r in ranks) / 2 < full.item()
