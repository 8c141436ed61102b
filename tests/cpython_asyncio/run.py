"""Run CPython's own asyncio test suite (``test.test_asyncio``) on plait's loop.

    python tests/cpython_asyncio/run.py [--exclusions FILE] [-v] [-j N] [module ...]

For the interpreter running it: every module of ``test.test_asyncio`` (or the ones
named: ``test_events``, ``test_tasks``...) runs in a subprocess of its own (``-j``
at a time, 2 by default), with plait's policy (``plait.aio.EventLoopPolicy``) as
asyncio's policy for the whole run, so that ``asyncio.new_event_loop()``,
``asyncio.run()``, ``asyncio.Runner()`` and ``unittest.IsolatedAsyncioTestCase``
make plait loops. Loops of asyncio's own classes that tests build on purpose
(``asyncio.SelectorEventLoop()``, ``test_utils.TestLoop``, ``asyncio.BaseEventLoop``)
stay asyncio's: those tests are of asyncio's implementation, and pass or fail as on
stock CPython.

How the tests get their loops (3.11 to 3.13 alike): ``test_utils.TestCase
.new_test_loop()`` makes a ``test_utils.TestLoop`` (an ``asyncio.BaseEventLoop`` with
a fake clock: asyncio's, whatever the policy); ``functional.FunctionalTestCaseMixin
.new_loop()`` and many ``setUp()`` call ``asyncio.new_event_loop()`` (the policy's:
plait's); ``unittest.IsolatedAsyncioTestCase`` and ``asyncio.run()`` use
``asyncio.Runner`` without a ``loop_factory`` (the policy's: plait's). The modules'
``tearDownModule`` calls ``asyncio.set_event_loop_policy(None)``, which here puts a
new plait policy in place; a test that leaves another policy behind gets plait's put
back before the next test (and the summary says so). ``test_utils.TestCase
.close_loop()`` asks the policy for its child watcher: plait's policy keeps one as
asyncio's does (plait's loop never asks it: it watches its children itself). The
summary counts the tests that made a plait loop.

The loop-parametrised test classes (a mixin of loop tests, and one class per asyncio
loop implementation with ``create_event_loop``/``new_loop``/``setUp`` making that
loop: ``SelectEventLoopTests``, ``PollEventLoopTests``, ``EPollEventLoopTests``...)
get a ``Plait...`` class of the same mixins whose loop is ``plait.aio.new_event_loop()``
(see ``PLAIT_CLASSES``). The per-implementation classes themselves are listed in the
exclusions file (they run the same tests on asyncio's ``SelectorEventLoop``).

The exclusions file (default: ``exclusions-<major>.<minor>.txt`` next to this file)
has one test id or id glob a line (ids without the ``test.test_asyncio.`` prefix:
``test_events.PlaitEventLoopTests.test_timeout_rounding``), each with a ``# reason``;
``## name`` lines start a category (counted apart in the summary). Excluded tests do
not run. ``--exclusions /dev/null`` runs everything (``--exclusions /dev/null
test_events.PlaitEventLoopTests.test_timeout_rounding``: does it still fail?).

Each test has a watchdog (``--test-timeout``, default 120 s without progress: the
worker dumps every thread's traceback and exits; the test counts as an error, and
the module goes on in a new worker after it).

Exit status: 0 if every test that ran passed (or was skipped), 1 otherwise.
``--stock`` runs the same modules on asyncio's own policy and loops (no plait, no
exclusions unless given), to tell plait's failures from the platform's.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "test.test_asyncio."

# Longest first (measured on a 2-core machine: test_tasks ~55 s, test_ssl and
# test_futures ~15 s, the rest under 10 s), so that the workers finish together;
# modules not named here run after these, by name.
HEAVY = [
    "test_tasks",
    "test_ssl",
    "test_futures",
    "test_events",
    "test_taskgroups",
    "test_sslproto",
    "test_subprocess",
    "test_sendfile",
    "test_sock_lowlevel",
    "test_base_events",
    "test_streams",
    "test_unix_events",
]

# The loop-parametrised test classes, made for plait's loop:
#   module: [(new class name, base class names of the module, how the loop is made)]
# "create_event_loop"/"new_loop": that method returns plait.aio.new_event_loop();
# "setUp": setUp() makes the loop as SubprocessProactorTests does on Windows.
# A base may be "utils.TestCase" (test.test_asyncio.utils.TestCase) or
# "unittest.TestCase". Bases missing from a module (other Python versions) are
# skipped with the entry.
PLAIT_CLASSES: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "test_events": [
        # (SubprocessTestsMixin: as in the Unix classes; UnixEventLoopTestsMixin only
        # adds an asyncio child watcher, which plait's loop does not use.)
        (
            "PlaitEventLoopTests",
            ("EventLoopTestsMixin", "SubprocessTestsMixin", "utils.TestCase"),
            "create_event_loop",
        ),
    ],
    "test_sendfile": [
        ("PlaitSendfileTests", ("SendfileTestsBase", "utils.TestCase"), "create_event_loop"),
    ],
    "test_sock_lowlevel": [
        ("PlaitSockTests", ("BaseSockTestsMixin", "utils.TestCase"), "create_event_loop"),
    ],
    "test_buffered_proto": [
        (
            "PlaitBufferedProtocolTests",
            ("BaseTestBufferedProtocol", "unittest.TestCase"),
            "new_loop",
        ),
    ],
    # (SelectorStartServerTests adds Unix-socket server tests to the mixin: kept.)
    "test_server": [("PlaitStartServerTests", ("SelectorStartServerTests",), "new_loop")],
    "test_sslproto": [("PlaitStartTLSTests", ("BaseStartTLS", "unittest.TestCase"), "new_loop")],
    "test_subprocess": [("PlaitSubprocessTests", ("SubprocessMixin", "utils.TestCase"), "setUp")],
}


# -- worker: runs one module's tests in this process -----------------------------------


def _install_plait_policy() -> None:
    """Make plait's policy asyncio's, for good: ``set_event_loop_policy(None)`` (which
    the modules' ``tearDownModule`` and some tests' ``tearDown`` call to restore
    "the default") installs a new plait policy instead of asyncio's default."""
    import asyncio
    import asyncio.events

    import plait.aio

    real_set = asyncio.events.set_event_loop_policy

    def set_event_loop_policy(policy: Any) -> None:
        real_set(plait.aio.EventLoopPolicy() if policy is None else policy)

    set_event_loop_policy.__doc__ = real_set.__doc__
    asyncio.events.set_event_loop_policy = set_event_loop_policy
    asyncio.set_event_loop_policy = set_event_loop_policy
    set_event_loop_policy(None)


def _make_plait_classes(module: Any) -> list[str]:
    import unittest

    from test.test_asyncio import utils as test_utils

    import plait.aio

    made = []
    short = module.__name__.rpartition(".")[2]
    for name, base_names, how in PLAIT_CLASSES.get(short, []):
        bases = []
        for base_name in base_names:
            if base_name == "utils.TestCase":
                bases.append(test_utils.TestCase)
            elif base_name == "unittest.TestCase":
                bases.append(unittest.TestCase)
            elif hasattr(module, base_name):
                bases.append(getattr(module, base_name))
            else:
                break
        else:
            namespace: dict[str, Any] = {"__module__": module.__name__, "__qualname__": name}
            if how != "setUp":

                def new_loop(self: Any) -> Any:
                    return plait.aio.new_event_loop()

                namespace[how] = new_loop
            cls = type(name, tuple(bases), namespace)
            if how == "setUp":
                cls.setUp = _plait_setup(cls)  # type: ignore[attr-defined]
            setattr(module, name, cls)
            made.append(name)
    return made


def _plait_setup(cls: type) -> Any:
    import plait.aio

    def setUp(self: Any) -> None:
        super(cls, self).setUp()
        self.loop = plait.aio.new_event_loop()
        self.set_event_loop(self.loop)

    return setUp


def _flatten(suite: Any) -> list[Any]:
    import unittest

    out: list[Any] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _short_id(test_id: str) -> str:
    return test_id[len(PREFIX) :] if test_id.startswith(PREFIX) else test_id


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import faulthandler
    import importlib
    import unittest

    import plait.aio

    report = open(args.report, "a", buffering=1)  # noqa: SIM115 - line buffered, to the end

    def emit(**event: Any) -> None:
        report.write(json.dumps(event) + "\n")

    watchdog = args.test_timeout

    def rearm() -> None:
        faulthandler.dump_traceback_later(watchdog, exit=True)

    rearm()  # (imports, setUpModule, tearDownModule: no progress for that long either)
    if not args.stock:
        _install_plait_policy()
    # (how many plait loops each test made: the tests that ran on plait's loop at all)
    loops_made = [0]
    setup = plait.aio.EventLoop._setup

    def counting_setup(self: Any, *args: Any, **kwargs: Any) -> None:
        loops_made[0] += 1
        setup(self, *args, **kwargs)

    plait.aio.EventLoop._setup = counting_setup  # type: ignore[method-assign]
    try:
        module = importlib.import_module(PREFIX + args.worker)
    except unittest.SkipTest as exc:  # (a whole module: test_windows_events...)
        emit(event="result", id=args.worker, outcome="skipped", detail=str(exc))
        emit(event="done")
        return 0
    if not args.stock:
        made = _make_plait_classes(module)
        emit(event="classes", names=made)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    skip = set(json.loads(args.skip_ids)) if args.skip_ids else set()
    only = json.loads(args.only) if args.only else []
    excluded = _read_exclusions(args.exclusions) if args.exclusions else []
    kept = []
    for test in _flatten(suite):
        test_id = _short_id(test.id())
        if test_id in skip:
            continue
        if type(test).__name__ == "_FailedTest":  # (an import or load error)
            kept.append(test)
            continue
        if only and not any(fnmatch.fnmatchcase(test_id, pattern) for pattern in only):
            continue
        rule = _match(excluded, test_id)
        if rule is not None:
            emit(event="excluded", id=test_id, rule=rule.pattern, category=rule.category)
            continue
        kept.append(test)

    class Result(unittest.TestResult):
        def startTest(self, test: Any) -> None:
            rearm()
            emit(event="start", id=_short_id(test.id()))
            policy = asyncio.events._event_loop_policy
            if not args.stock and not isinstance(policy, plait.aio.EventLoopPolicy):
                # A test before this one set a policy of its own and left it
                # (test_events.PolicyTests.test_set_event_loop_policy does): plait's
                # goes back, so that this test's loops are plait's.
                emit(event="policy", id=_short_id(test.id()), policy=repr(policy))
                asyncio.set_event_loop_policy(None)
            if args.verbose:
                print(f"  {_short_id(test.id())} ...", file=sys.stderr, flush=True)
            super().startTest(test)

        def stopTest(self, test: Any) -> None:
            super().stopTest(test)
            rearm()
            emit(event="stop", id=_short_id(test.id()), plait_loops=loops_made[0])
            loops_made[0] = 0

        def _outcome(self, test: Any, outcome: str, detail: str = "") -> None:
            # (errors of setUpClass/tearDownModule come as _ErrorHolder "tests")
            emit(event="result", id=_short_id(test.id()), outcome=outcome, detail=detail)

        def addSuccess(self, test: Any) -> None:
            super().addSuccess(test)
            self._outcome(test, "passed")

        def addFailure(self, test: Any, err: Any) -> None:
            super().addFailure(test, err)
            self._outcome(test, "failed", self.failures[-1][1])

        def addError(self, test: Any, err: Any) -> None:
            super().addError(test, err)
            self._outcome(test, "errored", self.errors[-1][1])

        def addSkip(self, test: Any, reason: str) -> None:
            super().addSkip(test, reason)
            self._outcome(test, "skipped", reason)

        def addExpectedFailure(self, test: Any, err: Any) -> None:
            super().addExpectedFailure(test, err)
            self._outcome(test, "passed", "expected failure")

        def addUnexpectedSuccess(self, test: Any) -> None:
            super().addUnexpectedSuccess(test)
            self._outcome(test, "failed", "unexpected success")

        def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = "failed" if issubclass(err[0], test.failureException) else "errored"
                detail = (self.failures if kind == "failed" else self.errors)[-1][1]
                emit(
                    event="subtest",
                    id=_short_id(test.id()),
                    outcome=kind,
                    detail=f"{subtest._subDescription()}\n{detail}",
                )

    result = Result()
    unittest.TestSuite(kept).run(result)
    emit(event="done")
    rearm()
    report.close()
    return 0


# -- exclusions -------------------------------------------------------------------------


@dataclass
class Rule:
    pattern: str
    reason: str
    category: str
    hits: int = 0


def _read_exclusions(path: str) -> list[Rule]:
    rules = []
    category = "uncategorised"
    with open(path) as file:
        for number, raw in enumerate(file, 1):
            line = raw.strip()
            if line.startswith("##"):
                category = line.lstrip("#").strip()
                continue
            if not line or line.startswith("#"):
                continue
            pattern, hash_, reason = line.partition("#")
            pattern, reason = pattern.strip(), reason.strip()
            if not hash_ or not reason:
                raise SystemExit(f"{path}:{number}: {pattern!r} has no '# reason'")
            rules.append(Rule(pattern, reason, category))
    return rules


def _match(rules: list[Rule], test_id: str) -> Rule | None:
    for rule in rules:
        if fnmatch.fnmatchcase(test_id, rule.pattern):
            return rule
    return None


# -- parent: runs the modules in workers, adds up ---------------------------------------


@dataclass
class ModuleRun:
    name: str
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> outcome
    details: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> rule, cat
    classes: list[str] = field(default_factory=list)
    foreign_policy: dict[str, str] = field(default_factory=dict)  # id -> policy then
    on_plait: set[str] = field(default_factory=set)  # tests that made a plait loop
    seconds: float = 0.0
    restarts: int = 0
    log: str = ""


def _read_report(path: str, run: ModuleRun) -> tuple[bool, str | None]:
    """Fold the worker's events into ``run``; (finished, id of a test still running)."""
    finished = False
    running: str | None = None
    with open(path) as file:
        for line in file:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # (a line cut short by the watchdog)
            kind = event["event"]
            if kind == "classes":
                run.classes = event["names"]
            elif kind == "excluded":
                run.excluded[event["id"]] = (event["rule"], event["category"])
            elif kind == "start":
                running = event["id"]
            elif kind == "stop":
                running = None
                if event.get("plait_loops"):
                    run.on_plait.add(event["id"])
            elif kind == "policy":
                run.foreign_policy[event["id"]] = event["policy"]
            elif kind in ("result", "subtest"):
                test_id, outcome = event["id"], event["outcome"]
                before = run.outcomes.get(test_id)
                # (a failed subtest fails the test: the test's own addSuccess that
                # follows does not undo it)
                if kind == "subtest" or before not in ("failed", "errored"):
                    run.outcomes[test_id] = outcome
                    run.details[test_id] = event["detail"]
            elif kind == "done":
                finished = True
    return finished, running


def _run_module(
    name: str, args: argparse.Namespace, exclusions: str | None, only: list[str]
) -> ModuleRun:
    run = ModuleRun(name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plait-cpyt-") as tmp:
        while True:
            report = os.path.join(tmp, f"report-{run.restarts}.jsonl")
            open(report, "w").close()
            done = sorted(run.outcomes)
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                name,
                "--report",
                report,
                "--test-timeout",
                str(args.test_timeout),
                "--skip-ids",
                json.dumps(done),
            ]
            if exclusions:
                command += ["--exclusions", exclusions]
            if only:
                command += ["--only", json.dumps(only)]
            if args.stock:
                command.append("--stock")
            if args.verbose:
                command.append("-v")
            try:
                proc = subprocess.run(
                    command,
                    check=False,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=args.module_timeout,
                    cwd=tmp,  # (tests that leave files behind leave them there)
                )
                output = proc.stdout.decode(errors="replace")
                code = proc.returncode
            except subprocess.TimeoutExpired as exc:
                output = (exc.stdout or b"").decode(errors="replace")
                output += f"\n[run.py: module {name} killed after {args.module_timeout} s]"
                code = None
            run.log += output
            finished, running = _read_report(report, run)
            if finished and code == 0:
                break
            # The worker died: a test hung (the watchdog) or crashed the interpreter.
            tail = "\n".join(output.rstrip().splitlines()[-60:])
            hung = "Timeout (" in output or code is None
            why = (
                f"hung: no progress for {args.test_timeout} s (the worker's dump of its "
                "threads is above; -v shows it)"
                if hung
                else f"the worker died (exit status {code})"
            )
            if running is not None:
                run.outcomes[running] = "errored"
                run.details[running] = f"{tail}\n{why}"
                run.restarts += 1
                if run.restarts <= 20:
                    continue  # the rest of the module in a new worker
            key = f"{name} (module)"
            if not finished or code != 0:
                run.outcomes[key] = "errored"
                run.details[key] = f"{tail}\n{why}, outside a test"
            break
    run.seconds = time.monotonic() - started
    return run


def _last_line(detail: str) -> str:
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _modules() -> list[str]:
    try:
        import test.test_asyncio
    except ImportError as exc:
        raise SystemExit(
            f"CPython's test suite is not installed for {sys.executable} ({exc}): install "
            "it (Debian: the libpython3.X-testsuite package; python.org and pyenv builds "
            "have it) to run the asyncio suite on plait's loop"
        ) from None

    names = [
        info.name
        for info in pkgutil.iter_modules(test.test_asyncio.__path__)
        if info.name.startswith("test_")
    ]
    order = {name: i for i, name in enumerate(HEAVY)}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def main() -> int:
    import signal

    # A shell without job control starts a background command with SIGINT ignored, and
    # the workers would inherit that: CPython's tests of Ctrl-C (test_runners) need it
    # delivered, or they wait forever. (A handler is not inherited: children start with
    # the default one.)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument(
        "modules",
        nargs="*",
        help="test_asyncio modules (default: all), or test ids/globs in them "
        "(test_events.PlaitEventLoopTests.test_sock_*)",
    )
    parser.add_argument("--exclusions", help="exclusions file (default: by version)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every test's outcome")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--test-timeout", type=float, default=120.0)
    parser.add_argument("--module-timeout", type=float, default=900.0)
    parser.add_argument("--stock", action="store_true", help="asyncio's own loop, no plait")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--skip-ids", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    exclusions = args.exclusions
    if exclusions is None and args.stock:
        exclusions = os.devnull  # (stock asyncio: everything, its own loop classes too)
    if exclusions is None:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        exclusions = os.path.join(HERE, f"exclusions-{version}.txt")
        if not os.path.exists(exclusions):
            raise SystemExit(f"no exclusions file for this Python: {exclusions} is missing")
    rules = _read_exclusions(exclusions)
    available = _modules()
    only: dict[str, list[str]] = {}  # module -> id globs (none: all its tests)
    for arg in args.modules:
        name, dot, _rest = arg.partition(".")
        globs = only.setdefault(name, [])
        if dot:
            globs.append(arg)
    modules = list(only) or available
    unknown = [name for name in modules if name not in available]
    if unknown:
        raise SystemExit(f"not modules of test.test_asyncio here: {', '.join(unknown)}")

    what = "asyncio's own policy (--stock)" if args.stock else "plait.aio.EventLoopPolicy"
    print(
        f"CPython {sys.version.split()[0]} test.test_asyncio on {what}: "
        f"{len(modules)} modules, {args.jobs} workers, exclusions {exclusions}",
        flush=True,
    )
    started = time.monotonic()
    runs: list[ModuleRun] = []
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(_run_module, name, args, exclusions, only.get(name, []))
            for name in modules
        ]
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            counts = Counter(run.outcomes.values())
            print(
                f"{run.name:24} {run.seconds:6.1f}s  run {len(run.outcomes):4}  "
                f"passed {counts['passed']:4}  failed {counts['failed']:3}  "
                f"errored {counts['errored']:3}  skipped {counts['skipped']:3}  "
                f"excluded {len(run.excluded):3}"
                + (f"  (+{', '.join(run.classes)})" if run.classes else "")
                + (f"  [{run.restarts} restarts]" if run.restarts else ""),
                flush=True,
            )
            if args.verbose:
                for test_id in sorted(run.outcomes):
                    outcome = run.outcomes[test_id]
                    why = "" if outcome == "passed" else _last_line(run.details[test_id])
                    print(f"    {outcome:8} {test_id}" + (f": {why[:200]}" if why else ""))
    elapsed = time.monotonic() - started

    totals: Counter[str] = Counter()
    bad: list[tuple[str, str, str]] = []
    by_category: Counter[str] = Counter()
    for run in runs:
        totals.update(run.outcomes.values())
        for test_id, outcome in run.outcomes.items():
            if outcome in ("failed", "errored"):
                bad.append((test_id, outcome, run.details.get(test_id, "")))
        for _rule, category in run.excluded.values():
            by_category[category] += 1
    hit = {rule for run in runs for rule, _category in run.excluded.values()}
    excluded = sum(len(run.excluded) for run in runs)
    print()
    print(
        f"{sum(totals.values())} run: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['errored']} errored, {totals['skipped']} skipped; {excluded} excluded; "
        f"{elapsed:.0f} s"
    )
    if not args.stock:
        on_plait = sum(len(run.on_plait) for run in runs)
        print(f"  {on_plait} of the tests run made a plait loop (others: no loop, or asyncio's)")
    for category, count in sorted(by_category.items()):
        print(f"  excluded, {category}: {count}")
    if not args.modules and not args.stock:
        stale = [rule.pattern for rule in rules if rule.pattern not in hit]
        for pattern in stale:
            print(f"  exclusion matching no test: {pattern}")
    foreign = sorted((i, p) for run in runs for i, p in run.foreign_policy.items())
    for test_id, policy in foreign:
        print(f"  plait's policy put back before {test_id} (an earlier test left {policy})")
    if bad:
        print("\nfailing tests:")
        for test_id, outcome, detail in sorted(bad):
            print(f"  {outcome.upper():7} {test_id}\n          {_last_line(detail)[:300]}")
    if args.verbose and bad:
        print("\ntracebacks:")
        for test_id, _outcome, detail in sorted(bad):
            print(f"\n== {test_id}\n{detail.rstrip()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
