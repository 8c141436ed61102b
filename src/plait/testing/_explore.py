"""``plait.testing.explore``: run an async function under many schedules, keep the first
failure, shrink its schedule, report it. Layer L7.

Theory of operation. Run ``seed`` of ``runs`` is ``plait.run(fn, *args,
schedule=Seeded(seed), clock=<a fresh MockClock(autojump_threshold=0)>)``: virtual time,
so sleeps and timeouts cost nothing and the run depends on the seed alone. The first run
that raises stops the search. Its log (the batches that ran in another order than FIFO)
is then shrunk, by replaying candidate logs (:class:`Replay`) and keeping each one that
still fails the same way (the same exception type; for a group, the same set of leaf
types): first the FIFO run itself, then dropping runs of decisions (halves, quarters, ...
down to single ones, as in delta debugging), then replacing each remaining decision by
the smallest one that keeps the failure (only the task that ran first out of turn moved
to the front). A budget bounds the replays. The shrunk log is replayed one last time for
the report's exception and step trace, so what the report shows is a run one can
reproduce with ``plait.run(fn, *args, schedule=Replay(report.log), clock=MockClock(0))``.

Failures are exceptions (``AssertionError``, ``plait.Deadlock`` for tasks stuck on each
other, ``TimeoutError`` from a virtual-time ``plait.fail_after``, ...). A run that never
ends on its own (a task looping with sleeps) hangs explore as it would hang
``plait.run``: bound such code with ``plait.fail_after``; with virtual time it costs
nothing.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from .._core._clock import Clock, MockClock
from .._core._schedule import Replay, ScheduleLog, SchedulePolicy, Seeded, complete_order
from .._run import run

__all__ = ["ExploreReport", "explore"]

_PLAIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
SHRINK_BUDGET = 300  # replays spent shrinking one failure, at most


class ExploreReport:
    """What :func:`explore` found. ``failed``: whether a run failed; ``runs``: how many
    ran; and for a failure: ``seed`` (of the failing ``Seeded`` run), ``log`` (its
    shrunk ``ScheduleLog``: replay it with ``plait.testing.Replay(report.log)``),
    ``original_log`` (before shrinking), ``exception`` (raised by the replayed shrunk
    run), ``traceback`` (its text), ``trace`` (that run's step trace: one ``name#k``
    label per task step) and ``batch_starts`` (where each batch begins in it).
    ``reproducible`` is False when replaying the failing run's schedule did not fail
    the same way (then the report shows the run as it failed, unshrunk).
    ``str(report)`` says all of it; ``bool(report)`` is True when every run passed, so
    ``assert report, report`` reads well in a test."""

    def __init__(
        self,
        *,
        runs: int,
        seed: int | None = None,
        log: ScheduleLog | None = None,
        original_log: ScheduleLog | None = None,
        exception: BaseException | None = None,
        trace: list[str] | None = None,
        batch_starts: list[int] | None = None,
        reproducible: bool = True,
    ) -> None:
        self.failed = exception is not None
        self.reproducible = reproducible
        self.runs = runs
        self.seed = seed
        self.log = log
        self.original_log = original_log
        self.exception = exception
        self.trace = trace if trace is not None else []
        self.batch_starts = batch_starts if batch_starts is not None else []
        self.traceback = _format(exception) if exception is not None else ""

    def __bool__(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        if not self.failed:
            return f"explore: all {self.runs} runs passed (seeds 0 to {self.runs - 1})"
        assert self.log is not None and self.original_log is not None
        if self.log.decisions:
            how = f"schedule, shrunk from {_count(self.original_log)} to {_count(self.log)}:"
        else:
            how = "it fails in plain FIFO order too (no decision needed):"
        if not self.reproducible:
            how = (
                "NOT REPRODUCIBLE: replaying its schedule did not fail the same way, so "
                "the function depends on more than the schedule (real time, I/O, "
                "threads, or state kept from one run to the next). Its schedule:"
            )
        lines = [
            f"explore: run {self.runs} failed (Seeded({self.seed}))",
            how,
            f"  plait.testing.Replay({self.log!r})",
            "",
            self.traceback.rstrip(),
            "",
            f"steps of the replayed run ({len(self.trace)}; '|' between batches):",
        ]
        lines.extend(f"  {line}" for line in _wrap(self._batched_trace()))
        return "\n".join(lines)

    def _batched_trace(self) -> list[str]:
        words = list(self.trace)
        for start in reversed(self.batch_starts[1:]):
            words.insert(start, "|")
        return words

    def __repr__(self) -> str:
        if not self.failed:
            return f"<ExploreReport: {self.runs} runs passed>"
        return (
            f"<ExploreReport: run {self.runs} failed, seed {self.seed}, "
            f"{type(self.exception).__name__}, log {self.log!r}>"
        )


def _count(log: ScheduleLog) -> str:
    decisions = "decision" if len(log) == 1 else "decisions"
    tasks = "task" if log.deviations == 1 else "tasks"
    return f"{len(log)} {decisions} ({log.deviations} {tasks} out of FIFO order)"


def _format(exception: BaseException) -> str:
    """The traceback from the explored function down: without the frames of explore,
    plait.run and the kernel above it."""
    tb = exception.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PLAIT_DIR):
        tb = tb.tb_next
    if tb is None:  # raised by plait itself (Deadlock): its message says where
        return "".join(traceback.format_exception_only(exception))
    return "".join(traceback.format_exception(type(exception), exception, tb))


def _wrap(words: list[str], width: int = 88) -> Iterator[str]:
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            yield line
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        yield line


def explore(
    async_fn: Callable[..., Any],
    *args: Any,
    runs: int = 1000,
    clock: Callable[[], Clock] | None = None,
    shrink: bool = True,
) -> ExploreReport:
    """Run ``async_fn(*args)`` under ``runs`` seeded schedules (``Seeded(0)``,
    ``Seeded(1)``, ...), each in its own ``plait.run`` on virtual time, and stop at the
    first run that raises: return an :class:`ExploreReport` with its seed, its shrunk
    schedule log, the exception and the step trace (or a passing report).

    ``clock``: a callable that returns a new clock for each run (default:
    ``lambda: MockClock(autojump_threshold=0)``). ``shrink=False`` keeps the failing
    run's own log. A run fails by raising an ``Exception``; anything else
    (``KeyboardInterrupt``, ``SystemExit``, a test runner's timeout) stops explore.
    """
    if not callable(async_fn):
        raise TypeError(f"explore() needs an async function, got {type(async_fn).__name__}")
    if type(runs) is not int or runs < 1:
        raise ValueError(f"explore(runs=...) must be an int >= 1, got {runs!r}")
    if clock is None:
        clock = _virtual_clock
    elif isinstance(clock, Clock) or not callable(clock):
        raise TypeError(
            "explore(clock=...) takes a callable that returns a new clock for each run, "
            "e.g. lambda: MockClock(autojump_threshold=0), not a clock: one clock for "
            "all runs would carry time from one run to the next"
        )
    attempt = _Attempt(async_fn, args, clock)
    for seed in range(runs):
        policy = Seeded(seed)
        error = attempt(policy)
        if error is None:
            continue
        original = policy.log
        log = attempt.shrink(original, _signature(error)) if shrink else original
        replay = Replay(log)
        final = attempt(replay)
        ran: SchedulePolicy = replay
        reproducible = final is not None and _signature(final) == _signature(error)
        if not reproducible:
            # The function depends on more than the schedule (real time, I/O, threads,
            # state kept between runs): report the run as it failed.
            log, final, ran = original, error, policy
        shrunk = ScheduleLog(log.decisions, seed=seed)
        return ExploreReport(
            runs=seed + 1,
            seed=seed,
            log=shrunk,
            original_log=original,
            exception=final,
            trace=ran.trace,
            batch_starts=ran.batch_starts,
            reproducible=reproducible,
        )
    return ExploreReport(runs=runs)


def _virtual_clock() -> Clock:
    return MockClock(autojump_threshold=0)


def _signature(error: BaseException) -> tuple[str, ...]:
    """What a shrunk run must fail with to count as the same failure."""
    if isinstance(error, BaseExceptionGroup):
        leaves: set[str] = set()
        stack: list[BaseException] = [error]
        while stack:
            exc = stack.pop()
            if isinstance(exc, BaseExceptionGroup):
                stack.extend(exc.exceptions)
            else:
                leaves.add(type(exc).__qualname__)
        return (type(error).__qualname__, *sorted(leaves))
    return (type(error).__qualname__,)


class _Attempt:
    """One ``plait.run`` of the explored function under a given policy."""

    def __init__(
        self, async_fn: Callable[..., Any], args: tuple[Any, ...], clock: Callable[[], Clock]
    ) -> None:
        self.async_fn = async_fn
        self.args = args
        self.clock = clock

    def __call__(self, policy: SchedulePolicy) -> BaseException | None:
        try:
            run(self.async_fn, *self.args, clock=self.clock(), schedule=policy)
        except Exception as error:
            return error
        # (Anything else stops explore: KeyboardInterrupt, SystemExit, and a test
        # runner's own, e.g. pytest-timeout's failure raised from its alarm.)
        return None

    def shrink(self, log: ScheduleLog, signature: tuple[str, ...]) -> ScheduleLog:
        budget = SHRINK_BUDGET

        def fails(decisions: dict[int, tuple[int, ...]]) -> bool:
            nonlocal budget
            if budget <= 0:
                return False
            budget -= 1
            error = self(Replay(ScheduleLog(decisions)))
            return error is not None and _signature(error) == signature

        decisions = dict(log.decisions)
        if fails({}):
            return ScheduleLog()
        # Drop runs of decisions, halving the run length down to one.
        chunk = max(1, len(decisions) // 2)
        while decisions:
            keys = list(decisions)
            start = 0
            dropped = False
            while start < len(keys):
                trial = {
                    k: v for k, v in decisions.items() if k not in keys[start : start + chunk]
                }
                if len(trial) < len(decisions) and fails(trial):
                    decisions = trial
                    dropped = True
                    keys = list(decisions)
                else:
                    start += chunk
            if chunk == 1 and not dropped:
                break
            chunk = max(1, chunk // 2)
        # Make each decision left as small as it can be: move only the first task that
        # ran out of turn to where it ran.
        for batch, order in list(decisions.items()):
            smaller = _one_move(order)
            if smaller != order and fails({**decisions, batch: smaller}):
                decisions[batch] = smaller
        return ScheduleLog(decisions)


def _one_move(order: tuple[int, ...]) -> tuple[int, ...]:
    """The order that runs the tasks before the first change as FIFO did, then the task
    that ``order`` ran there, then the rest in FIFO order."""
    for place, i in enumerate(order):
        if place != i:
            return complete_order((*range(place), i), len(order))
    return order
