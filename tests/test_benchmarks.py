"""The benchmark scripts that read records run on real records (their timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    (row,) = [line for line in out.splitlines() if line.startswith("| synthetic")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(len(synthetic_runs["points"])) and cells[2] == "0"
    assert float(cells[3]) > 0 and float(cells[6]) > 100  # elapsed minutes, peak RSS in MiB


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
