"""``python -m benchmarks [--reps N] [--quick] [--only W[,..]] [--runtimes R[,..]]
[--write PATH]``: measure, print the table, write the Markdown report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import harness, report
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
    p.add_argument("--reps", type=int, default=5, help="repetitions per workload and runtime")
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
        help="write the Markdown report here ('-' for none); default: docs/benchmarks.md, "
        "or none with --quick (quick numbers are meaningless)",
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
    try:
        workloads = names(args.only, list(WORKLOADS), "workload") if args.only else [*WORKLOADS]
        runtimes = (
            names(args.runtimes, list(RUNTIMES), "runtime")
            if args.runtimes
            else [r for r in DEFAULT_RUNTIMES if r in RUNTIMES]
        )
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.write is None:
        target = None if args.quick else DEFAULT_REPORT
    else:
        target = None if args.write == "-" else Path(args.write)
    timeout = args.timeout if args.timeout is not None else (60.0 if args.quick else 600.0)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = harness.run(
        workloads, runtimes, reps=args.reps, quick=args.quick, timeout=timeout, progress=progress
    )
    print()
    print(report.table(results))
    print()
    print(report.RATIO_NOTE)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(report.markdown(results, command_line(argv)))
        print(f"\nreport written to {target}")
    failed = [c for c in results.cells.values() if c.status and c.status.startswith("error")]
    return 1 if failed else 0
