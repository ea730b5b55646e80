"""The benchmark scripts that read records run on real records (their timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_reproduce_tables_real_records(synthetic_runs):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_reproduce.py"),
            "--outputs",
            str(synthetic_runs["outputs"]),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| synthetic")]
    assert len(rows) == 2  # the per-family table, then the split of a run's seconds
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == str(len(synthetic_runs["points"])) and cells[2] == "0"
    assert float(cells[3]) > 0 and float(cells[6]) > 100  # elapsed minutes, peak RSS in MiB
    # the split of each run's seconds: parts add up to the runner's wall time
    parts = [float(c) for c in rows[1].strip("|").split("|")[2:]]
    kernel_start, setup, work, kernel_stop, runner, overhead_pct = parts
    assert work > 0 and kernel_start > 0 and setup > 0 and kernel_stop < 1.0  # the kernel is stopped at once
    assert abs(overhead_pct - 100 * (kernel_start + setup + kernel_stop + runner) / sum(parts[:5])) < 3


def test_bench_reproduce_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_reproduce.py"),
            "--outputs",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_bench_precision_prints_both_precisions_and_their_fidelity():
    import os

    from embsym_lib.records import DATA_ENV, PROJECT_ROOT

    env = {**os.environ, DATA_ENV: os.environ.get(DATA_ENV) or str(PROJECT_ROOT / "outputs" / "data")}
    args = ["--encoder", "scratch", "--steps", "1", "--repeats", "1", "--texts", "16", "--batch-size", "8"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_precision.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    rows = {
        line[:24].strip(): line[24:].split()
        for line in out.splitlines()
        if line.endswith(tuple("0123456789"))
    }
    for name in ("training examples/s", "encoding texts/s"):
        fp32, bf16, ratio = (float(x) for x in rows[name])
        assert fp32 > 0 and bf16 > 0 and ratio == pytest.approx(bf16 / fp32, abs=0.01)
    assert 0.99 < float(rows["min cosine(fp32, bf16)"][0]) <= 1.0
    assert 0 < float(rows["median |norm error|"][0]) < 0.02  # bf16 was on, and close
