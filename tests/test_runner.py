import json
import os

import nbformat
import pytest

from embsym_lib import cli
from embsym_lib.params import expand
from embsym_lib.runner import run_grid


@pytest.mark.slow
def test_resume_and_failure_isolation(dummy_family, tmp_path):
    _, params_dir = dummy_family
    outputs = tmp_path / "out"
    points = expand("dummy", "offline", params_dir=params_dir)
    assert len(points) == 4
    # One grid point fails; the others must complete.
    failing = expand(
        "dummy", "offline", variants=["dot"], seeds=[5], overrides={"fail": True}, params_dir=params_dir
    )
    environment = dict(os.environ)
    results = run_grid([points[0], *failing, points[1]], outputs)
    assert dict(os.environ) == environment, "the kernels' environment stays with the sweep"
    assert [r.status for r in results] == ["complete", "failed", "complete"]
    assert "fails on purpose" in results[1].error
    failed_record = json.loads((results[1].run_dir / "record.json").read_text())
    assert failed_record["status"] == "failed" and "fails on purpose" in failed_record["error"]
    assert (results[1].run_dir / "dummy.ipynb").exists(), "the failed executed notebook is kept"
    assert results[0].record["metrics"] == {"score": 2.0}
    assert results[0].record["runner_wall_time_s"] > 0
    # Resume: completed points are skipped, the rest run.
    before = (results[0].run_dir / "record.json").read_text()
    again = run_grid(points, outputs)
    assert [r.status for r in again] == ["skipped", "skipped", "complete", "complete"]
    assert (results[0].run_dir / "record.json").read_text() == before


def test_cli_rejects_bad_input_before_any_compute(tmp_path, capsys):
    outputs = tmp_path / "out"
    for argv, message in [
        (["run", "nope"], "unknown family 'nope'"),
        (["run", "synthetic", "--variants", "cosin"], "unknown similarity variant 'cosin'"),
        (["run", "synthetic", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", "synthetic", "--set", "epochs=two"], "parameter 'epochs': input should be a valid integer"),
        (["run", "synthetic", "--set", "n_docs=3"], "n_relevant (5) must be smaller than n_docs (3)"),
        (["run", "synthetic", "--jobs", "0"], "--jobs must be >= 1"),
    ]:
        assert cli.main([*argv, "--outputs", str(outputs)]) == 2
        assert message in capsys.readouterr().err
    assert not outputs.exists(), "nothing may be computed or written on bad input"


def test_cli_dry_run_and_list(capsys, tmp_path):
    assert cli.main(["run", "synthetic", "--dry-run", "--variants", "dot", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "5 grid point(s)" in out and "task=symmetric variant=dot seed=0" in out
    assert cli.main(["list", "--outputs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "offline" in out and "records: none" in out


def test_every_notebook_is_committed_without_outputs():
    from embsym_lib.families import registry
    from embsym_lib.params import NOTEBOOKS_DIR

    paths = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    assert {p.name for p in paths} >= {"results.ipynb", *(s.notebook for s in registry().values())}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.slow
def test_ray_backend_runs_two_families_with_resume_and_failure_isolation(dummy_family, tmp_path):
    from embsym_lib.runner import run_grid_ray

    _, params_dir = dummy_family
    outputs = tmp_path / "out"
    dummy = expand("dummy", "offline", seeds=[0], params_dir=params_dir)
    failing = expand(
        "dummy", "offline", variants=["dot"], seeds=[7], overrides={"fail": True}, params_dir=params_dir
    )
    tiny = {"n_docs": 200, "n_train": 256, "n_test": 50, "n_heldout": 64, "epochs": 1, "batch_size": 64}
    synthetic = expand(
        "synthetic", "offline", variants=["dot"], seeds=[0], overrides={**tiny, "task": "symmetric"}
    )
    points = [*dummy, *failing, *synthetic]
    results = run_grid_ray(points, outputs)
    assert [r.status for r in results] == ["complete", "complete", "failed", "complete"]
    assert "fails on purpose" in results[2].error
    assert results[3].record["family"] == "synthetic" and results[3].record["metrics"]["spearman"] > -1
    again = run_grid_ray(points, outputs)
    assert [r.status for r in again] == ["skipped", "skipped", "failed", "skipped"]


def test_parallel_local_gpu_runs_are_refused_before_any_compute(dummy_family, tmp_path, monkeypatch):
    import dataclasses

    import torch

    _, params_dir = dummy_family
    points = [
        dataclasses.replace(p, resources={"gpus": 1})
        for p in expand("dummy", "offline", params_dir=params_dir)
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="--jobs 2 with runs that declare GPUs"):
        run_grid(points, tmp_path / "out", jobs=2)
    assert not (tmp_path / "out").exists()


def test_parallel_runs_share_the_cores(dummy_family, tmp_path, monkeypatch):
    """A profile's cpus are capped at the machine's share per parallel run (kernels inherit the env)."""
    import dataclasses
    import os

    from embsym_lib.runner import run_point

    _, params_dir = dummy_family
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "99")  # restored after the test
    point = dataclasses.replace(expand("dummy", "offline", params_dir=params_dir)[0], resources={"cpus": 4})
    assert run_point(point, tmp_path / "a", max_threads=1).status == "complete"
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert run_point(point, tmp_path / "b").status == "complete"
    assert os.environ["OMP_NUM_THREADS"] == "4"


@pytest.mark.slow
def test_ctrl_c_stops_parallel_runs_promptly(dummy_family, tmp_path, request):
    """With --jobs 2, Ctrl-C stops the running kernels and marks their records interrupted (it used to
    wait for them to finish); queued points never start."""
    import signal
    import threading
    import time

    _, params_dir = dummy_family
    points = expand("dummy", "offline", params_dir=params_dir, overrides={"sleep": 120.0})
    assert len(points) == 4
    # A shell that starts a job in the background sets SIGINT to ignored, and Python keeps that: install
    # the handler an interactive terminal gives, so this test does not depend on how it was launched.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    main = threading.main_thread().ident
    timer = threading.Timer(10.0, signal.pthread_kill, (main, signal.SIGINT))  # Ctrl-C
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_grid(points, tmp_path / "out", jobs=2)
    assert time.perf_counter() - t0 < 60
    recs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("dummy/*/record.json")]
    assert sorted(r["status"] for r in recs) == ["interrupted", "interrupted"]
    assert all(r["error"] == "interrupted by the user" for r in recs)


@pytest.mark.parametrize("family", ["synthetic", "retrieval", "sts", "clip", "kg", "fewshot", "recsys"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lr=.nan"], "parameter 'lr': input should be a finite number"),
        (["--set", "lr=.inf"], "parameter 'lr': input should be a finite number"),
        (["--set", "lr=-1e-3"], "parameter 'lr': input should be greater than 0"),
        (["--set", "device=tpu"], "parameter 'device'"),
        (["--set", "threads=0"], "parameter 'threads'"),
        (["--set", "epochs=[8"], "--set epochs: cannot read the value"),
        (["--set", "no_such_parameter=3"], "unknown parameter 'no_such_parameter'"),
        (["--seeds", str(2**32)], "seeds must be integers from 0 to 4294967295"),
    ],
    ids=["nan", "inf", "negative", "device", "threads", "malformed", "unknown", "seed"],
)
def test_every_family_refuses_bad_values_before_any_compute(family, args, message, capsys, tmp_path):
    """The issue's list of bad inputs, through the CLI, in every family: exit 2 and one clear error."""
    assert cli.main(["run", family, "--dry-run", "--outputs", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir()), "nothing ran"


@pytest.mark.parametrize("family", ["clip", "recsys", "kg", "fewshot", "sts", "retrieval"])
def test_a_dry_run_lists_the_points_and_the_missing_data(capsys, tmp_path, monkeypatch, family):
    """The paper profile without any of its data: every family lists its points and says what is missing
    (recsys once refused the dry run itself on a missing atomic file)."""
    monkeypatch.setenv("EMBSYM_DATA", str(tmp_path / "no-data"))
    assert cli.main(["run", family, "--profile", "paper", "--dry-run", "--outputs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"grid point(s) in {family} (profile paper)" in out
    assert "missing data (a real run would stop here)" in out
    if family == "kg":  # PyKEEN's data sets, in the cache_root `embsym data fetch kg` fills
        assert "`embsym data fetch kg` downloads it there" in out


def test_the_progress_line_counts_failures_and_estimates_the_time_left():
    from pathlib import Path

    from embsym_lib.params import GridPoint
    from embsym_lib.runner import RunResult, SweepProgress

    def point(family, i):
        params = {
            "variant": "dot",
            "seed": i,
            "task": "asymmetric",
            "dataset": "nations",
            "composition": "distmult",
        }
        return GridPoint(family, "offline", params, {}, f"{family}-{i}")

    points = [point("synthetic", 0), point("synthetic", 1), point("kg", 0), point("kg", 1)]
    now = [0.0]
    progress = SweepProgress(points, jobs=2, clock=lambda: now[0])

    def finish(i, status, wall):
        return RunResult(points[i], status, Path("."), None, "boom" if status == "failed" else None, wall)

    now[0] = 10.0
    line = progress.line(1, 4, finish(0, "complete", 10.0))
    # three runs left at the only mean so far (10 s), two at a time
    assert line.startswith("[1/4 | 0m10s elapsed, ~0m15s left] synthetic")
    now[0] = 30.0
    line = progress.line(2, 4, finish(2, "failed", 30.0))
    # left: one synthetic run (10 s) and one kg run (30 s), two at a time
    assert line.startswith("[2/4 1 failed | 0m30s elapsed, ~0m20s left] kg") and "FAILED: boom" in line
    line = progress.line(3, 4, finish(1, "skipped", 0.0))
    assert "1 failed 1 skipped" in line and "~0m15s left" in line
    now[0] = 3700.0
    assert progress.line(4, 4, finish(3, "complete", 40.0)).startswith(
        "[4/4 1 failed 1 skipped | 1h01m elapsed]"
    )
    # a cluster's parallelism is measured: 80 s of runs finished in 3,700 s -> no faster than serial
    cluster = SweepProgress(points, jobs=None, clock=lambda: now[0])
    now[0] = 3700.0
    cluster.start = 3690.0
    cluster.line(1, 4, finish(0, "complete", 20.0))  # 20 s of runs in 10 s: two at a time
    assert cluster.eta_s() == 30.0


def test_sigterm_stops_a_sweep_as_ctrl_c_does(dummy_family, tmp_path):
    """A job scheduler's SIGTERM: the running notebook is stopped and marked interrupted, exit code 130,
    and the next run resumes from there."""
    import signal
    import threading

    _, params_dir = dummy_family
    argv = ["run", "dummy", "--params-dir", str(params_dir), "--outputs", str(tmp_path), "--seeds", "0"]
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert cli.main([*argv, "--variants", "cosine", "--set", "sleep=120.0"]) == 130
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGTERM) == before, "the CLI gives SIGTERM back as it found it"
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("dummy/*/record.json")]
    assert record["status"] == "interrupted"
