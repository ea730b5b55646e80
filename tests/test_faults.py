"""Fault injection: runs that cannot lie. A run that diverges, a kernel killed mid-run, a record truncated
on disk, a run with other parameters in the same folder or the same grid point, a Ray worker killed
mid-task: each leaves the records and the report correct."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import pytest

from embsym_lib import records
from embsym_lib.collate import load_records
from embsym_lib.params import ParamError, expand
from embsym_lib.runner import run_grid

TINY = {"n_docs": 200, "n_train": 256, "n_test": 50, "n_heldout": 64, "epochs": 1, "batch_size": 64}


@pytest.mark.slow
def test_a_diverging_run_is_failed_with_its_reason_and_the_sweep_goes_on(tmp_path):
    diverging = expand(
        "synthetic",
        "offline",
        variants=["dot"],
        seeds=[0],
        overrides={**TINY, "lr": 1e9, "task": "asymmetric"},
    )
    healthy = expand(
        "synthetic", "offline", variants=["dot"], seeds=[0], overrides={**TINY, "task": "symmetric"}
    )
    results = run_grid([*diverging, *healthy], tmp_path)
    assert [r.status for r in results] == ["failed", "complete"]
    record = records.read_record(results[0].run_dir)
    assert record["status"] == "failed" and record["error"].startswith("RunDiverged: the training loss")
    assert "at step 1" in record["error"]
    df = load_records(tmp_path, profile="offline")
    assert list(df["run_id"]) == [results[1].point.run_id], "a failed run is never averaged in"


def test_a_killed_kernel_fails_its_point_only(dummy_family, tmp_path):
    _, params_dir = dummy_family
    killed = expand(
        "dummy",
        "offline",
        variants=["cosine"],
        seeds=[0],
        overrides={"crash": "kernel"},
        params_dir=params_dir,
    )
    fine = expand("dummy", "offline", variants=["dot"], seeds=[1], params_dir=params_dir)
    results = run_grid([*killed, *fine], tmp_path)
    assert [r.status for r in results] == ["failed", "complete"]
    assert records.read_record(results[0].run_dir)["status"] == "failed"


def test_a_truncated_record_is_run_again_and_said(dummy_family, tmp_path):
    _, params_dir = dummy_family
    points = expand("dummy", "offline", variants=["cosine"], seeds=[0], params_dir=params_dir)
    (first,) = run_grid(points, tmp_path)
    path = first.run_dir / records.RECORD_NAME
    path.write_text(path.read_text()[:40])  # a disk filled up, a copy cut short
    with pytest.warns(UserWarning, match="unreadable run records skipped"):
        df = load_records(tmp_path, params_dir=params_dir)
    assert df.empty and str(path) in df.attrs["unreadable"][0]
    (again,) = run_grid(points, tmp_path)
    assert again.status == "complete", "a record that cannot be read is not taken as complete"


def test_runs_with_other_parameters_are_listed_apart_never_substituted(dummy_family, tmp_path):
    _, params_dir = dummy_family
    grid = expand("dummy", "offline", variants=["cosine"], seeds=[0], params_dir=params_dir)
    other = expand(
        "dummy", "offline", variants=["cosine"], seeds=[0], overrides={"value": 99.0}, params_dir=params_dir
    )
    run_grid(grid, tmp_path)
    run_grid(other, tmp_path)  # finishes last: it used to replace the grid's run in the report
    df = load_records(tmp_path, params_dir=params_dir)
    assert len(df) == 2
    pooled = df[df["in_grid"]]
    assert list(pooled["run_id"]) == [grid[0].run_id]
    assert pooled.iloc[0]["metrics"]["score"] == 2.0


def test_a_run_by_hand_never_overwrites_another_runs_folder(tmp_path):
    import embsym_lib.notebook as nb

    def run_by_hand(**params):
        namespace: dict = {}
        nb.begin(namespace)
        namespace.update(
            {
                "variant": "dot",
                "seed": 0,
                "profile": "offline",
                "run_dir": str(tmp_path / "run"),
                **TINY,
                **params,
            }
        )
        return nb.collect(namespace, family="synthetic")

    run = run_by_hand()
    run.finish(metrics={"ndcg@10": 0.5}, curves={"loss": {"x": [1], "y": [1.0]}})
    with pytest.raises(ParamError, match="holds a complete run with other parameters"):
        run_by_hand(epochs=2)
    run_by_hand()  # the same parameters again: a re-run of the same point is fine


def test_papermill_parameters_are_checked_like_the_runner_does(tmp_path):
    import embsym_lib.notebook as nb

    for bad, message in (
        ({"epochs": "abc"}, "parameter 'epochs'"),
        ({"nosuch": 3}, "unknown parameter 'nosuch'"),
    ):
        namespace: dict = {}
        nb.begin(namespace)
        namespace.update(
            {"variant": "dot", "seed": 0, "profile": "offline", "run_dir": str(tmp_path / "x"), **bad}
        )
        with pytest.raises(ParamError, match=message):
            nb.collect(namespace, family="synthetic")


def test_an_ad_hoc_run_gets_a_folder_of_its_own(tmp_path, monkeypatch):
    import embsym_lib.notebook as nb

    monkeypatch.setattr(nb, "DEFAULT_OUTPUTS", tmp_path)
    dirs = set()
    for epochs in (1, 2):
        namespace: dict = {}
        nb.begin(namespace)
        namespace.update(
            {"variant": "dot", "seed": 0, "profile": "offline", "run_dir": "", **TINY, "epochs": epochs}
        )
        dirs.add(nb.collect(namespace, family="synthetic").run_dir)
    assert len(dirs) == 2 and all(d.name.startswith("adhoc-dot-s0-") for d in dirs)


def test_records_are_readable_by_others(tmp_path):
    records.write_record(tmp_path, family="dummy", params={"variant": "dot", "seed": 0})
    records.write_units(tmp_path, {"m": (["a"], [1.0])})
    for name in (records.RECORD_NAME, records.UNITS_NAME):
        assert (tmp_path / name).stat().st_mode & 0o044 == 0o044, name


def _ray(*args: str) -> subprocess.CompletedProcess:
    ray = shutil.which("ray") or str(__import__("pathlib").Path(sys.executable).parent / "ray")
    return subprocess.run([ray, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_task_fails_its_point_on_a_two_node_cluster(
    dummy_family, tmp_path, monkeypatch
):
    """Two Ray nodes on the loopback; one task's worker process dies mid-run. The point is failed with
    the reason (its record said 'running'), the other completes, a re-run resumes."""
    from embsym_lib.runner import run_grid_ray

    _, params_dir = dummy_family
    port = 6391
    # A loopback cluster: no token (a token left in ~/.ray by another cluster would lock the second node out).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # A session of its own (a fresh temp dir): never a leftover cluster's persisted state.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    _ray("stop", "--force")
    try:
        head = _ray(
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        )
        assert head.returncode == 0, head.stderr[-800:]
        node = _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats")
        assert node.returncode == 0, node.stderr[-800:]
        dying = expand(
            "dummy",
            "offline",
            variants=["cosine"],
            seeds=[0],
            overrides={"crash": "worker"},
            params_dir=params_dir,
        )
        fine = expand("dummy", "offline", variants=["dot"], seeds=[1], params_dir=params_dir)
        results = run_grid_ray([*dying, *fine], tmp_path, address=f"127.0.0.1:{port}")
        assert [r.status for r in results] == ["failed", "complete"]
        record = json.loads((results[0].run_dir / records.RECORD_NAME).read_text())
        assert record["status"] == "failed" and record["error"].startswith("ray task failed")
        again = run_grid_ray(fine, tmp_path, address=f"127.0.0.1:{port}")
        assert [r.status for r in again] == ["skipped"]
    finally:
        _ray("stop", "--force")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow  # Ray's client waits ~30 s before it gives up
def test_an_unreachable_ray_cluster_is_one_clear_error(dummy_family, tmp_path):
    from embsym_lib.runner import run_grid_ray

    _, params_dir = dummy_family
    points = expand("dummy", "offline", variants=["dot"], seeds=[0], params_dir=params_dir)
    with pytest.raises(ValueError, match="cannot connect to the Ray cluster at 'ray://127.0.0.1:1'"):
        run_grid_ray(points, tmp_path, address="ray://127.0.0.1:1")
