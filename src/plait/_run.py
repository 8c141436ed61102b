"""``plait.run``: the entry point of a plait program. Layer L4."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from ._core._clock import Clock
from ._core._inspect import TaskInfo
from ._core._inspect import print_task_tree as _print_task_tree
from ._core._inspect import task_tree as _task_tree
from ._core._instrument import Instrument, Instruments
from ._core._kernel import Loop
from ._core._local import current_loop
from ._core._schedule import SchedulePolicy
from ._core._slowstep import SlowStepDetector
from ._core._task import Task
from ._monitor import Monitor, monitor_enabled
from ._util import public

__all__ = ["current_task", "print_task_tree", "run", "task_tree"]


@public
def run(
    fn_or_coro: Any,
    *args: Any,
    clock: Clock | None = None,
    instruments: Iterable[Instrument] = (),
    name: str | None = None,
    slow_step: float | None = None,
    monitor: bool | None = None,
    schedule: SchedulePolicy | None = None,
) -> Any:
    """Run ``fn_or_coro(*args)`` as the main task of a new loop and return its result.

    Whatever the main task raises is re-raised here (``KeyboardInterrupt`` and
    ``SystemExit`` from any task included). Every task it spawned has finished by the
    time this returns. ``clock`` selects the clock (e.g. ``plait.testing.MockClock``);
    ``instruments`` are ``plait.abc.Instrument`` objects the kernel calls as it runs.
    ``slow_step`` (seconds): log every task step that runs that long without yielding,
    with the stack where it was blocking (logger ``plait.slow``). ``monitor=True`` (or
    ``PLAIT_MONITOR=1`` in the environment, when ``monitor`` is None) lets ``plait ps
    PID`` and ``plait pstree PID`` show the running tasks (a Unix socket of mode 0600
    in the user's runtime directory, removed when the run ends).
    ``schedule``: the order in which tasks that are ready together run; FIFO by default,
    ``plait.testing.Seeded(seed)`` or ``plait.testing.Replay(log)`` to explore and
    replay orderings (docs/testing.md).
    Calling ``plait.run`` inside a running plait loop raises ``RuntimeError``.
    """
    if slow_step is not None:
        instruments = [*_instrument_list(instruments), SlowStepDetector(slow_step)]
    watched = monitor_enabled(monitor)
    with Loop(clock=clock, instruments=instruments, schedule=schedule) as loop:
        if not watched:
            return loop.run_until_complete(fn_or_coro, *args, name=name)
        endpoint = Monitor(loop)
        try:
            return loop.run_until_complete(fn_or_coro, *args, name=name)
        finally:
            endpoint.close()


def _instrument_list(instruments: Iterable[Instrument]) -> list[Instrument]:
    return list(Instruments(instruments))  # (validated: the same errors as Loop's)


@public
def current_task() -> Task:
    """The task that is running now. ``RuntimeError`` outside a task."""
    task = current_loop("plait.current_task()")._current_task
    if task is None:
        raise RuntimeError("plait.current_task() was called from a loop callback, not a task")
    return task


@public
def task_tree(*, locals: bool = False) -> list[TaskInfo]:
    """The tasks of the running ``plait.run``, as a tree: a list of ``TaskInfo`` nodes
    (the main task, then plait's own system tasks), each with ``name``, ``id``,
    ``state`` ("running", "runnable", "waiting"), ``waiting_on`` (the plait call it is
    waiting in, with its arguments), ``stack`` (``Task.stack(locals=locals)``) and
    ``groups`` (per task group it has open, the ``TaskInfo`` of its children)."""
    return _task_tree(current_loop("plait.task_tree()"), with_locals=locals)


@public
def print_task_tree(
    file: IO[str] | None = None, *, stacks: bool = False, system: bool = False
) -> None:
    """Print the task tree of the running ``plait.run`` to ``file`` (stdout): a line
    per task -- name, id, state, what it waits on, and where in its code -- indented
    under the task group it belongs to. ``stacks=True`` adds each task's await stack;
    ``system=True`` adds plait's own system tasks."""
    _print_task_tree(current_loop("plait.print_task_tree()"), file, stacks=stacks, system=system)
