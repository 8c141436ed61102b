"""The ``plait`` command (also ``python -m plait``). Layer L7.

    plait run [--trace OUT.html] [--perfetto OUT.json] [--slow-step SECONDS] [--monitor]
              script.py [args...]
    plait run [options] -m module [args...]
    plait ps PID
    plait pstree PID
    plait demo [--clients N] [--duration SECONDS] [--jobs N] [--trace FILE.html]

``plait run`` loads the script (or module) without running its ``if __name__ ==
"__main__":`` block, then runs its ``async def main()`` with ``plait.run``: the traces
are written when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import inspect
import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plait", description="Run and inspect plait programs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a script's (or module's) async main() under plait",
        description="Run the async main() of a script or module with plait.run.",
    )
    run.add_argument("--trace", metavar="OUT.html", help="write the HTML timeline here")
    run.add_argument("--perfetto", metavar="OUT.json", help="write Perfetto trace JSON here")
    run.add_argument(
        "--slow-step",
        metavar="SECONDS",
        type=float,
        help="log task steps that block the loop this long",
    )
    run.add_argument(
        "--monitor", action="store_true", help="let 'plait ps/pstree PID' see its tasks"
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, not a script")
    run.add_argument("target", nargs=argparse.REMAINDER, help="script.py [args...]")
    for name, what in (
        ("ps", "list the tasks of a running plait program"),
        ("pstree", "show the task tree of a running plait program"),
    ):
        sub = commands.add_parser(
            name,
            help=what,
            description=f"{what[0].upper()}{what[1:]} that runs with the monitor on "
            "(plait.run(main, monitor=True), PLAIT_MONITOR=1, or 'plait run --monitor').",
        )
        sub.add_argument("pid", type=int, help="the program's process id")
    commands.add_parser(
        "demo",
        help="a showcase: a TCP service, process pool, threads, subprocesses, at once",
        add_help=False,  # (plait demo --help: the demo's own options)
    )
    return parser


def _load(module: str | None, target: list[str]) -> tuple[dict[str, Any], str]:
    """The namespace of the script or module, loaded as ``__plait_main__`` (its
    ``__main__`` block does not run), and what it is called."""
    if module is not None:
        sys.argv = [module, *target]
        return runpy.run_module(module, run_name="__plait_main__", alter_sys=True), module
    if not target:
        raise SystemExit("plait run: name a script to run (plait run script.py) or -m MODULE")
    path, *args = target
    if not os.path.exists(path):
        raise SystemExit(f"plait run: {path}: no such file")
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    return runpy.run_path(path, run_name="__plait_main__"), path


def _run(args: argparse.Namespace) -> int:
    import plait
    from plait.trace import Tracer

    namespace, what = _load(args.module, list(args.target))
    entry = namespace.get("main")
    if entry is None:
        raise SystemExit(f"plait run: {what} has no main(): define async def main() in it")
    if not inspect.iscoroutinefunction(entry):
        raise SystemExit(
            f"plait run: {what}'s main is {type(entry).__name__} {entry!r}, not an async "
            "function: define it with async def"
        )
    tracer = Tracer() if args.trace or args.perfetto else None
    try:
        plait.run(
            entry,
            instruments=[tracer] if tracer is not None else [],
            slow_step=args.slow_step,
            monitor=True if args.monitor else None,
        )
    finally:
        if tracer is not None:
            if args.trace:
                tracer.write_html(args.trace, title=f"plait run {what}")
                print(
                    f"plait: timeline written to {args.trace} (open it in a browser)",
                    file=sys.stderr,
                )
            if args.perfetto:
                tracer.write_perfetto(args.perfetto)
                print(
                    f"plait: trace written to {args.perfetto} (https://ui.perfetto.dev)",
                    file=sys.stderr,
                )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        from ._demo import main as demo

        return demo(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    from ._monitor import ask

    try:
        sys.stdout.write(ask(args.pid, args.command))
    except FileNotFoundError as exc:
        print(f"plait {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"plait {args.command}: cannot reach process {args.pid}: {exc}", file=sys.stderr)
        return 1
    return 0
