"""plait.lowlevel: the kernel API for building new primitives.

Every blocking primitive in plait is built from these: register the current task
somewhere, ``await wait_task_rescheduled(abort_fn)``, and have whoever completes the
wait call ``reschedule(task, value)`` exactly once.
"""

from __future__ import annotations

from typing import Any

from ._core._clock import Clock as Clock
from ._core._clock import SystemClock as SystemClock
from ._core._instrument import Instrument
from ._core._kernel import Loop
from ._core._local import current_loop as _current_loop
from ._core._parking_lot import ParkingLot as ParkingLot
from ._core._parking_lot import ParkingLotStatistics as ParkingLotStatistics
from ._core._reactor import READABLE, WRITABLE
from ._core._task import Task
from ._core._traps import Abort as Abort
from ._core._traps import checkpoint as checkpoint
from ._core._traps import schedule_point as schedule_point
from ._core._traps import wait_task_rescheduled as wait_task_rescheduled
from ._run import current_task as current_task

__all__ = [
    "Abort",
    "Clock",
    "LoopToken",
    "ParkingLot",
    "ParkingLotStatistics",
    "SystemClock",
    "TrioToken",
    "add_instrument",
    "checkpoint",
    "current_clock",
    "current_loop",
    "current_task",
    "current_token",
    "notify_closing",
    "remove_instrument",
    "reschedule",
    "schedule_point",
    "spawn_system_task",
    "wait_readable",
    "wait_task_rescheduled",
    "wait_writable",
]


def current_loop() -> Loop:
    """The :class:`plait.Loop` running in this thread (``RuntimeError`` if none)."""
    return _current_loop("plait.lowlevel.current_loop()")


def add_instrument(instrument: Instrument) -> None:
    """Install ``instrument`` (a ``plait.abc.Instrument``) on the running loop; it
    takes effect from the next step. Installing one already installed does nothing."""
    _current_loop("plait.lowlevel.add_instrument()")._instruments.add(instrument)


def remove_instrument(instrument: Instrument) -> None:
    """Uninstall ``instrument`` from the running loop (``KeyError`` if it is not
    installed). Safe to call from the instrument's own hooks."""
    _current_loop("plait.lowlevel.remove_instrument()")._instruments.remove(instrument)


def reschedule(task: Task, value: Any = None, error: BaseException | None = None) -> None:
    """Wake ``task``, parked in ``wait_task_rescheduled``: its ``await`` returns
    ``value``, or raises ``error`` if given. Must be called exactly once per wait, from
    the loop's thread. ``RuntimeError`` if the task is not waiting."""
    task._loop._kernel_reschedule(task, value, error)


def current_clock() -> Clock:
    """The clock of the running loop."""
    return _current_loop("plait.lowlevel.current_clock()")._clock


class LoopToken:
    """A handle other threads use to enter a running loop."""

    __slots__ = ("_loop",)

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def __repr__(self) -> str:
        return f"<plait.lowlevel.LoopToken for {self._loop!r}>"

    def run_sync_soon(self, fn: Any, *args: Any) -> None:
        """Call ``fn(*args)`` on the loop's thread soon. Safe from any thread; never
        blocks. ``RuntimeError`` if the loop is closed."""
        self._loop.call_soon_threadsafe(fn, *args)


TrioToken = LoopToken  # familiar name for trio users


def current_token() -> LoopToken:
    """A token for the running loop, for use from other threads."""
    return LoopToken(_current_loop("plait.lowlevel.current_token()"))


def spawn_system_task(fn: Any, *args: Any, name: str | None = None) -> Task:
    """Start ``fn(*args)`` as a system task: not inside any user TaskGroup, cancelled
    when the main task ends; if it raises, the whole run is cancelled and
    ``plait.run`` raises its error."""
    from ._core._spawn import coerce_coroutine

    loop = _current_loop("plait.lowlevel.spawn_system_task()")
    if loop._system_scope is None or loop._system_group is None:
        raise RuntimeError("spawn_system_task() needs a loop running plait.run()")
    coro = coerce_coroutine(fn, args, "spawn_system_task()")
    return loop._spawn(coro, loop._system_group, loop._system_scope, name)


def notify_closing(fd: Any) -> None:
    """Call this *before* closing an fd that tasks may be waiting on: they wake with
    ``plait.ClosedResourceError``, callbacks registered on it are removed, and the OS
    poller forgets it (so a new fd that reuses the number starts clean)."""
    _current_loop("plait.lowlevel.notify_closing()")._notify_closing(fd)


async def wait_readable(fd: Any) -> None:
    """Wait until ``fd`` (an int or an object with ``fileno()``) is readable.

    A checkpoint; cancellation stops the wait. ``BusyResourceError`` if another task
    already waits to read the same fd.
    """
    await _current_loop("plait.lowlevel.wait_readable()")._wait_fd(fd, READABLE)


async def wait_writable(fd: Any) -> None:
    """Wait until ``fd`` is writable. As :func:`wait_readable`."""
    await _current_loop("plait.lowlevel.wait_writable()")._wait_fd(fd, WRITABLE)


for _public in (
    Clock,
    SystemClock,
    ParkingLot,
    ParkingLotStatistics,
    schedule_point,
    wait_task_rescheduled,
):
    _public.__module__ = "plait.lowlevel"
del _public
