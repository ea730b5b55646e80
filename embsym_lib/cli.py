"""The ``embsym`` command: run grids, collate the report, list what exists."""

from __future__ import annotations

import argparse
import signal
import sys
from collections import Counter
from pathlib import Path

from .families import UnknownFamilyError, registry
from .params import PARAMS_DIR, ParamError, available_profiles, expand, parse_override
from .runner import DEFAULT_OUTPUTS, SweepProgress, run_grid, run_grid_ray


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embsym", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a family's grid (variant x seed x axes) with papermill")
    r.add_argument("family", help="a family name, or 'all' for every family")
    r.add_argument("--profile", default="offline", help="parameter set under params/ (default: offline)")
    r.add_argument("--variants", nargs="+", help="restrict to these variants")
    r.add_argument("--seeds", nargs="+", type=int, help="restrict to these seeds")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a notebook parameter (YAML value), repeatable",
    )
    r.add_argument("--outputs", type=Path, default=DEFAULT_OUTPUTS, help="outputs directory")
    r.add_argument("--params-dir", type=Path, default=PARAMS_DIR, help=argparse.SUPPRESS)
    r.add_argument("--jobs", type=int, default=1, help="grid points run at once, local backend (default 1)")
    r.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="start every run's kernel as a new interpreter instead of forking it from a server that has "
        "imported the notebook's modules (local backend; the same as EMBSYM_FRESH_KERNELS=1)",
    )
    r.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local process pool (default) or Ray tasks requesting each profile's resources",
    )
    r.add_argument(
        "--address",
        default=None,
        help="Ray cluster address ('auto', 'ray://host:10001'); default: start a local Ray instance",
    )
    r.add_argument("--dry-run", action="store_true", help="validate and list the grid points only")

    c = sub.add_parser(
        "collate", help="collate every record into outputs/results.ipynb and outputs/report.html"
    )
    c.add_argument("--profile", default="offline")
    c.add_argument("--outputs", type=Path, default=DEFAULT_OUTPUTS)
    c.add_argument("--params-dir", type=Path, default=PARAMS_DIR, help=argparse.SUPPRESS)

    cl = sub.add_parser("claims", help="test the paper's claims on the records and print the verdicts")
    cl.add_argument("families", nargs="*", help="only these families (default: all)")
    cl.add_argument("--profile", default="offline")
    cl.add_argument("--outputs", type=Path, default=DEFAULT_OUTPUTS)
    cl.add_argument(
        "--null-redraw",
        type=int,
        metavar="SEED",
        default=None,
        help="first shuffle the variant labels among the runs of each setting and seed (every variant drawn "
        "from one distribution): a calibrated engine then finds (almost) no variant effect",
    )

    ls = sub.add_parser("list", help="families, profiles and what has run")
    ls.add_argument("--outputs", type=Path, default=DEFAULT_OUTPUTS)

    d = sub.add_parser("data", help="fetch a profile's data sets, or list what it needs (docs/data.md)")
    dsub = d.add_subparsers(dest="data_command", required=True)
    df = dsub.add_parser("fetch", help="download and convert a family's data sets into the data root")
    df.add_argument("family")
    df.add_argument("--only", nargs="+", metavar="NAME", help="only these data sets")
    dl = dsub.add_parser("list", help="what each profile needs, whether it is present, its size")
    dl.add_argument("families", nargs="*", help="only these families (default: all)")
    for a in (df, dl):
        a.add_argument("--profile", default="paper")
        a.add_argument("--root", type=Path, help="data root (default: $EMBSYM_DATA, else <project>/data)")
    return p


def _cmd_run(args) -> int:
    families = list(registry()) if args.family == "all" else [args.family]
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.jobs < 1:
        raise ParamError(f"--jobs must be >= 1, got {args.jobs}")
    if args.family == "all" and overrides:
        raise ParamError("--set applies to one family; run families one at a time to override parameters")
    # Validate every grid point of every family before any compute (a dry run: all but the data on disk).
    points, missing = [], []
    for fam in families:
        expand_args = (fam, args.profile, args.variants, args.seeds, overrides, args.params_dir)
        if not args.dry_run:
            points += _expand_or_name_fetch(expand_args)
            continue
        points += expand(*expand_args, check_data=False)
        try:
            expand(*expand_args)
        except ParamError as e:
            missing.append(str(e))
    print(
        f"embsym: {len(points)} grid point(s) in {', '.join(families)} (profile {args.profile}) -> {args.outputs}"
    )
    if args.dry_run:
        for p in points:
            print(f"  {p.label}  [{p.run_id}]")
        for problem in missing:
            print(f"embsym: missing data (a real run would stop here): {problem}")
        return 0
    if args.address and args.backend != "ray":
        raise ParamError("--address needs --backend ray")
    progress = SweepProgress(points, jobs=None if args.backend == "ray" else args.jobs)
    previous = _sigterm_as_interrupt()
    try:
        if args.backend == "ray":
            results = run_grid_ray(points, args.outputs, address=args.address, on_result=progress)
        else:
            results = run_grid(
                points,
                args.outputs,
                jobs=args.jobs,
                on_result=progress,
                warm=False if args.fresh_kernels else None,
            )
    except KeyboardInterrupt:
        print("\nembsym: interrupted; completed runs are kept and will be skipped next time", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = Counter(r.status for r in results)
    print("embsym: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(
            f"  failed: {r.point.label}: {r.error}\n    notebook: {r.run_dir / (r.point.family + '.ipynb')}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _expand_or_name_fetch(expand_args: tuple) -> list:
    """The grid points; where only the data on disk are missing, the error names the fetch command."""
    try:
        return expand(*expand_args)
    except ParamError as e:
        try:
            expand(*expand_args, check_data=False)
        except ParamError:
            raise e from None
        family, profile = expand_args[0], expand_args[1]
        raise ParamError(
            f"{e}\n  the data are not there: `embsym data fetch {family} --profile {profile}` downloads them "
            f"(`embsym data list --profile {profile}` shows what is present; docs/data.md), or point "
            "--set data_dir=... at your own copy"
        ) from None


def _sigterm_as_interrupt():
    """A sweep stopped by SIGTERM (a job scheduler's time limit, ``kill``) ends as Ctrl-C does: the running
    notebooks are stopped and marked ``interrupted``, the warm kernel servers stopped, and the next
    ``embsym run`` resumes. Returns the handler it replaced."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _cmd_collate(args) -> int:
    from .collate import render_report

    html = render_report(args.outputs, args.profile, args.params_dir)
    print(f"embsym: report written to {html}")
    return 0


def _cmd_claims(args) -> int:
    from . import claims
    from .collate import grid_runs, load_records

    unknown = [f for f in args.families if f not in registry()]
    if unknown:
        raise UnknownFamilyError(
            f"unknown family {unknown[0]!r}; valid families are: {', '.join(registry())}"
        )
    records = grid_runs(load_records(args.outputs, profile=args.profile))
    if args.null_redraw is not None and not records.empty:
        records = claims.null_redraw(records, seed=args.null_redraw)
    rows = claims.evaluate(records, claims.load_claims(args.families or None))
    for _, r in rows.iterrows():
        effect = (
            ""
            if r["effect"] != r["effect"]
            else f"  effect {r['effect']:+.4g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
        )
        p = "" if r["p"] != r["p"] else f"  p {r['p']:.3g}"
        print(f"{r['verdict']:16s} {r['id']}" + (f" [{r['setting']}]" if r["setting"] else "") + effect + p)
        if r["verdict"] == claims.UNTESTABLE or r["reason"] and r["verdict"] == claims.INCONCLUSIVE:
            print(f"{'':17s}{r['reason']}")
    counts = claims.verdict_counts(rows)
    print(
        "embsym: "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f" ({len(records)} records, profile {args.profile})"
    )
    return 0


def _cmd_list(args) -> int:
    from .collate import load_records

    print("families:")
    for name, spec in registry().items():
        tasks = ", ".join(f"{t} ({s.verdict})" for t, s in spec.tasks.items())
        print(f"  {name:10s} {spec.title} — tasks: {tasks}")
    print("profiles: " + ", ".join(available_profiles()))
    df = load_records(args.outputs, complete_only=False)
    if df.empty:
        print(f"records: none under {args.outputs}")
    else:
        print("records:")
        for (fam, prof, status), n in df.groupby(["family", "profile", "status"]).size().items():
            print(f"  {fam:10s} {prof:8s} {status:11s} {n}")
    return 0


def _cmd_data(args) -> int:
    from . import fetch

    try:
        if args.data_command == "fetch":
            fetch.fetch(args.family, args.profile, args.only, args.root)
        else:
            print(fetch.format_table(fetch.table(args.families or list(registry()), args.profile, args.root)))
    except fetch.FetchError as e:
        print(f"embsym: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {
            "run": _cmd_run,
            "collate": _cmd_collate,
            "claims": _cmd_claims,
            "list": _cmd_list,
            "data": _cmd_data,
        }
        return commands[args.command](args)
    except (ParamError, UnknownFamilyError, ValueError, FileNotFoundError) as e:
        print(f"embsym: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
