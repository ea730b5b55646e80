"""End-to-end time and peak memory of a sweep, per family, read from its run records.

    .venv/bin/python benchmarks/bench_reproduce.py [--outputs outputs] [--profile offline]

Run it after ``make reproduce`` (or any ``embsym run``). Per family: runs complete / failed, the
family's elapsed wall time (first run started to last run finished: what ``--jobs N`` actually took), the
sum of the runner's per-run wall times (papermill and kernel start included), the median run, and the
largest peak RSS of a run's kernel and of its CUDA allocations. Failed and interrupted runs count in the
times (they used the machine) but are listed separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path

from embsym_lib.records import RECORD_NAME


def family_rows(outputs: Path, profile: str | None) -> list[dict]:
    by_family: dict[str, list[dict]] = {}
    for path in sorted(outputs.glob(f"*/*/{RECORD_NAME}")):
        rec = json.loads(path.read_text())
        if profile and rec.get("profile") != profile:
            continue
        by_family.setdefault(rec["family"], []).append(rec)
    rows = []
    for family, recs in sorted(by_family.items()):
        starts = [datetime.fromisoformat(r["started"]) for r in recs if r.get("started")]
        ends = [datetime.fromisoformat(r["finished"]) for r in recs if r.get("finished")]
        walls = [r.get("runner_wall_time_s") or r.get("wall_time_s") or 0.0 for r in recs]
        memory = [r.get("memory") or {} for r in recs]
        rss = [m["peak_rss_mib"] for m in memory if m.get("peak_rss_mib")]
        cuda = [m["cuda_peak_mib"] for m in memory if m.get("cuda_peak_mib")]
        rows.append(
            {
                "family": family,
                "complete": sum(r["status"] == "complete" for r in recs),
                "not complete": sum(r["status"] != "complete" for r in recs),
                "elapsed (min)": (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else None,
                "sum of runs (min)": sum(walls) / 60,
                "median run (s)": statistics.median(walls) if walls else None,
                "peak RSS (MiB)": max(rss) if rss else None,
                "peak CUDA (MiB)": max(cuda) if cuda else None,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", default="outputs", type=Path)
    ap.add_argument("--profile", default="offline", help="'' for every profile")
    args = ap.parse_args()
    if not args.outputs.is_dir():
        ap.error(f"--outputs {str(args.outputs)!r} is not a directory")
    rows = family_rows(args.outputs, args.profile or None)
    if not rows:
        ap.error(f"no run records under {args.outputs} (profile {args.profile!r})")
    cols = list(rows[0])
    fmt = {float: "{:.1f}", int: "{}", type(None): "{}"}

    def cell(v):
        return fmt.get(type(v), "{}").format("—" if v is None else v)

    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(cell(r[c]) for c in cols) + " |")
    total = sum(r["sum of runs (min)"] for r in rows)
    print(
        f"\nsum of all runs: {total:.1f} min over {sum(r['complete'] + r['not complete'] for r in rows)} runs"
    )


if __name__ == "__main__":
    main()
