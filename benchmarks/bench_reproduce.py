"""End-to-end time and peak memory of a sweep, per family, read from its run records.

    .venv/bin/python benchmarks/bench_reproduce.py [--outputs outputs] [--profile offline]

Run it after ``make reproduce`` (or any ``embsym run``). Per family: runs complete / failed, the
family's elapsed wall time (first run started to last run finished: what ``--jobs N`` actually took), the
sum of the runner's per-run wall times (papermill and kernel start included), the median run, and the
largest peak RSS of a run's kernel and of its CUDA allocations. Failed and interrupted runs count in the
times (they used the machine) but are listed separately.

A second table splits each complete run's wall time, read from the executed notebook's papermill cell
times and the record's own clock: *kernel start* (papermill start to the first cell), *setup* (first cell
to the record opening: imports, parameter validation), *work* (the record's wall time: data, training,
evaluation, figures), *kernel stop* (last cell to papermill's end: kernel shutdown, final notebook
write) and *runner* (the rest: reading the notebook, injecting parameters, updating the record).
Everything but *work* is the per-run overhead of one papermill notebook per grid point.

    .venv/bin/python benchmarks/bench_reproduce.py --compare-kernels synthetic kg [--seeds 0] [--jobs 2]

runs the named families' offline grids twice in one go, into a temporary folder: once with fresh kernels
(papermill's stock path, one new interpreter per run) and once with warm kernels (forked from a server
that has imported the notebook's modules, ``embsym_lib.warm_kernels``, the default), prints the split of
each, the ratio of their elapsed times, and whether every run's metrics are bit-identical between the
two.
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


SPLIT = ("kernel start", "setup", "work", "kernel stop", "runner")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_split(run_dir: Path, rec: dict) -> dict[str, float] | None:
    """Seconds of one complete run in each part of SPLIT (None without its executed notebook)."""
    notebook = run_dir / f"{rec['family']}.ipynb"
    runner_wall, work = rec.get("runner_wall_time_s"), rec.get("wall_time_s")
    if rec.get("status") != "complete" or not notebook.is_file() or not runner_wall or work is None:
        return None
    nb = json.loads(notebook.read_text())
    pm = nb.get("metadata", {}).get("papermill", {})
    times = [c.get("metadata", {}).get("papermill", {}) for c in nb["cells"] if c["cell_type"] == "code"]
    if not pm.get("start_time") or not pm.get("end_time") or not times or not times[0].get("start_time"):
        return None
    first, last = _seconds(times[0]["start_time"]), _seconds(times[-1]["end_time"])
    start, end = _seconds(pm["start_time"]), _seconds(pm["end_time"])
    return {
        "kernel start": first - start,
        "setup": max(0.0, (last - first) - work),
        "work": work,
        "kernel stop": end - last,
        "runner": max(0.0, runner_wall - (end - start)),
    }


def split_rows(outputs: Path, profile: str | None) -> list[dict]:
    by_family: dict[str, list[dict[str, float]]] = {}
    for path in sorted(outputs.glob(f"*/*/{RECORD_NAME}")):
        rec = json.loads(path.read_text())
        if profile and rec.get("profile") != profile:
            continue
        split = run_split(path.parent, rec)
        if split is not None:
            by_family.setdefault(rec["family"], []).append(split)
    rows = []
    for family, splits in sorted(by_family.items()) + [("all", [s for v in by_family.values() for s in v])]:
        if not splits:
            continue
        total = sum(sum(s.values()) for s in splits)
        row = {"family": family, "runs": len(splits)}
        row.update({f"{part} (s/run)": sum(s[part] for s in splits) / len(splits) for part in SPLIT})
        row["overhead (% of run time)"] = 100 * (total - sum(s["work"] for s in splits)) / total
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    fmt = {float: "{:.1f}", int: "{}", type(None): "{}"}

    def cell(v):
        return fmt.get(type(v), "{}").format("—" if v is None else v)

    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(cell(r[c]) for c in cols) + " |")


def compare_kernels(families: list[str], seeds: list[int] | None, jobs: int) -> None:
    import tempfile
    import time

    from embsym_lib.params import expand
    from embsym_lib.runner import run_grid

    points = [p for f in families for p in expand(f, "offline", seeds=seeds)]
    print(
        f"{len(points)} runs of {', '.join(families)} (offline), {jobs} at a time, fresh then warm kernels\n"
    )
    elapsed, metrics = {}, {}
    with tempfile.TemporaryDirectory(prefix="embsym-bench-") as tmp:
        for kind in ("fresh", "warm"):
            outputs = Path(tmp) / kind
            t0 = time.perf_counter()
            results = run_grid(points, outputs, jobs=jobs, warm=kind == "warm")
            elapsed[kind] = time.perf_counter() - t0
            failed = [r.point.label for r in results if r.status != "complete"]
            if failed:
                raise SystemExit(f"{kind} kernels: {len(failed)} run(s) did not complete, e.g. {failed[0]}")
            metrics[kind] = {r.point.run_id: r.record["metrics"] for r in results}
            print(f"{kind} kernels: {elapsed[kind]:.1f} s elapsed\n")
            print_table(split_rows(outputs, "offline"))
            print()
    same = metrics["fresh"] == metrics["warm"]
    print(f"elapsed, warm / fresh: {elapsed['warm'] / elapsed['fresh']:.2f}")
    print(f"every run's metrics bit-identical between fresh and warm kernels: {'yes' if same else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", default="outputs", type=Path)
    ap.add_argument("--profile", default="offline", help="'' for every profile")
    ap.add_argument("--compare-kernels", nargs="+", metavar="FAMILY", help="time fresh against warm kernels")
    ap.add_argument("--seeds", type=int, nargs="+", help="with --compare-kernels: these seeds only")
    ap.add_argument("--jobs", type=int, default=2, help="with --compare-kernels: runs at a time")
    args = ap.parse_args()
    if args.compare_kernels:
        compare_kernels(args.compare_kernels, args.seeds, args.jobs)
        return
    if not args.outputs.is_dir():
        ap.error(f"--outputs {str(args.outputs)!r} is not a directory")
    rows = family_rows(args.outputs, args.profile or None)
    if not rows:
        ap.error(f"no run records under {args.outputs} (profile {args.profile!r})")
    print_table(rows)
    total = sum(r["sum of runs (min)"] for r in rows)
    print(
        f"\nsum of all runs: {total:.1f} min over {sum(r['complete'] + r['not complete'] for r in rows)} runs"
    )
    split = split_rows(args.outputs, args.profile or None)
    if split:
        print("\nwhere a complete run's seconds go (mean per run):\n")
        print_table(split)


if __name__ == "__main__":
    main()
