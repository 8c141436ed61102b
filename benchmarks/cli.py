"""``python -m benchmarks [--reps N] [--quick] [--only W[,..]] [--runtimes R[,..]]
[--write PATH]``: measure, print the table, write the Markdown report and next to it the
chart (same name, ``.svg``) and the results (``.json``).

``python -m benchmarks --from-json PATH.json [--write PATH]`` renders the table, the
report and the chart again from saved results, without measuring."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import chart, harness, report
from benchmarks.harness import Results
from benchmarks.registry import RUNTIMES, WORKLOADS, load_all

DEFAULT_REPORT = harness.ROOT / "docs" / "benchmarks.md"
DEFAULT_RUNTIMES = ("plait", "asyncio", "uvloop", "plait.aio", "trio")


def names(text: str, known: Sequence[str], what: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown or not chosen:
        given = ", ".join(unknown) or "(none given)"
        raise argparse.ArgumentTypeError(f"unknown {what} {given}; choose from {', '.join(known)}")
    return list(dict.fromkeys(chosen))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare plait with asyncio, asyncio+uvloop and trio. Each measurement "
        "runs in a fresh subprocess; runtimes alternate round-robin; reports medians.",
    )
    p.add_argument(
        "--reps", type=int, default=None, help="repetitions per workload and runtime (5)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    p.add_argument("--only", metavar="WORKLOAD[,..]", help="run only these workloads")
    p.add_argument(
        "--runtimes",
        metavar="RUNTIME[,..]",
        help=f"runtimes to compare (default: {','.join(DEFAULT_RUNTIMES)})",
    )
    p.add_argument(
        "--write",
        metavar="PATH",
        help="write the Markdown report here ('-' for none), the chart and the results "
        "next to it (same name, .svg and .json); default: docs/benchmarks.md, or none with "
        "--quick (quick numbers are meaningless)",
    )
    p.add_argument(
        "--from-json",
        metavar="PATH",
        type=Path,
        help="do not measure: render the table, report and chart from results saved by an "
        "earlier run (the .json next to its report); the report shows that run's command",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per measurement (600; 60 quick)"
    )
    p.add_argument("--list", action="store_true", help="list workloads and runtimes and exit")
    return p


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run, e.g. ``.venv/bin/python -m benchmarks``."""
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(Path.cwd())
    except ValueError:
        pass
    cmd = shlex.join([str(exe), "-m", "benchmarks", *argv])
    if Path.cwd().resolve() != harness.ROOT:
        cmd = f"cd {shlex.quote(os.getcwd())} && {cmd}"
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load_all()
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        for w in WORKLOADS.values():
            print(f"workload {w.name:<14} {w.unit}, {w.direction}: {w.doc}")
        for r in RUNTIMES.values():
            print(f"runtime  {r.name:<14} {r.unavailable() or 'available'}: {r.doc}")
        return 0
    results = measure(p, args, argv) if args.from_json is None else load(p, args)
    if args.write is None:
        target = None if results.quick else DEFAULT_REPORT
    else:
        target = None if args.write == "-" else Path(args.write)
    if target is not None and target.suffix in (".svg", ".json"):
        p.error(f"--write {target}: the chart and the results go next to the report (.svg, .json)")
    print()
    print(report.table(results))
    print()
    print(report.RATIO_NOTE)
    if target is not None:
        write(results, target)
    failed = [c for c in results.cells.values() if c.status and c.status.startswith("error")]
    return 1 if failed else 0


def load(p: argparse.ArgumentParser, args: argparse.Namespace) -> Results:
    """The results saved in ``args.from_json``; errors if measuring options are given."""
    given = [o for o in ("reps", "only", "runtimes", "timeout") if vars(args)[o] is not None]
    if given or args.quick:
        p.error(f"--from-json renders saved results: no --{(given or ['quick'])[0]}")
    try:
        results = Results.from_json(args.from_json.read_text())
    except (OSError, ValueError) as exc:
        p.error(f"--from-json {args.from_json}: {exc}")
    unknown = [w for w in results.workloads if w not in WORKLOADS]
    unknown += [r for r in results.runtimes if r not in RUNTIMES]
    if unknown:
        p.error(f"--from-json {args.from_json}: unknown workload or runtime {unknown[0]!r}")
    return results


def measure(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> Results:
    try:
        workloads = names(args.only, list(WORKLOADS), "workload") if args.only else [*WORKLOADS]
        runtimes = (
            names(args.runtimes, list(RUNTIMES), "runtime")
            if args.runtimes
            else [r for r in DEFAULT_RUNTIMES if r in RUNTIMES]
        )
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    reps = 5 if args.reps is None else args.reps
    if reps < 1:
        p.error("--reps must be at least 1")
    timeout = args.timeout if args.timeout is not None else (60.0 if args.quick else 600.0)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = harness.run(
        workloads, runtimes, reps=reps, quick=args.quick, timeout=timeout, progress=progress
    )
    results.command = command_line(argv)
    return results


def write(results: Results, target: Path) -> None:
    """Write the report to ``target``, and next to it the chart (``.svg``) and the
    results (``.json``), which the report links to."""
    svg, data = target.with_suffix(".svg"), target.with_suffix(".json")
    again = command_line(["--from-json", shown(data), "--write", shown(target)])
    target.parent.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results, chart=svg.name, data=data.name, rerender=again)
    target.write_text(text)
    svg.write_text(chart.svg(results))
    data.write_text(results.to_json())
    print(f"\nreport written to {target}, chart to {svg.name}, results to {data.name}")


def shown(path: Path) -> str:
    """``path`` relative to the current directory if it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
