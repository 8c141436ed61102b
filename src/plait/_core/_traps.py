"""The trap door: the only place where a plait task suspends itself. Layer L3.

Theory of operation: a task talks to the kernel by *yielding a request* out of its
coroutine stack, through :func:`checkpoint`, the single ``types.coroutine`` function in
plait. There are two requests:

- ``None``: a schedule point. The kernel puts the task at the back of the ready queue,
  or, if a cancel scope around it is cancelled, throws :class:`Cancelled` into it.
  (A bare ``yield`` in a ``@plait.coroutine`` generator, and ``asyncio.sleep(0)``,
  yield ``None`` too, so both are checkpoints.)
- a :class:`_Park`: the task blocks until somebody calls ``reschedule(task, ...)``.
  ``abort_fn`` is how the kernel tries to cancel the wait.
- the schedule-point marker: back of the ready queue, and never ``Cancelled`` (for a
  primitive that has already done something it must not lose, e.g. taken a lock).

No Future or handle is allocated per wake-up: the kernel calls ``coro.send`` and
``coro.throw`` directly. Anything else yielded (an asyncio future, a number) is a
misuse, and the kernel throws a ``TypeError`` that says so back into the task.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Abort", "RaiseCancelT", "checkpoint", "schedule_point", "wait_task_rescheduled"]

RaiseCancelT = Callable[[], "Any"]


class Abort(enum.Enum):
    """What an ``abort_fn`` answers when the kernel asks it to cancel a wait."""

    SUCCEEDED = 1
    """The wait was undone; the kernel will raise ``Cancelled`` in the task."""
    FAILED = 2
    """The wait cannot be undone now; whoever completes it must still ``reschedule``."""


Abort.__module__ = "plait.lowlevel"


class _Park:
    __slots__ = ("abort_fn",)

    def __init__(self, abort_fn: Callable[[RaiseCancelT], Abort]) -> None:
        # The kernel takes it (and sets None) as soon as the task parks.
        self.abort_fn: Callable[[RaiseCancelT], Abort] | None = abort_fn

    def __repr__(self) -> str:
        return (
            "<plait wait: a plait operation was awaited outside plait.run(); start the "
            "program with plait.run(main), or call plait code from asyncio through "
            "plait.aio.run_plait()>"
        )


class _SchedulePoint:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<plait schedule point: awaited outside plait.run()>"


_SCHEDULE_POINT: Any = _SchedulePoint()


@types.coroutine
def checkpoint(_request: _Park | _SchedulePoint | None = None) -> Generator[Any, Any, Any]:
    """A checkpoint: let other tasks run, and raise ``Cancelled`` if cancelled.

    ``await plait.checkpoint()`` is the cheapest way to be a good citizen inside a long
    computation. It is a schedule point and a cancel point: it raises
    :class:`plait.Cancelled` when a cancel scope around the caller is cancelled.

    This generator is also plait's one trap door: every other wait passes a ``_Park``
    request as ``_request`` (kernel-internal; never pass it yourself). Making the
    commonest wait *be* the door, instead of a function that calls it, saves a Python
    call per checkpoint (about 15% of a checkpoint's cost, measured).
    """
    return (yield _request)


def schedule_point() -> Any:
    """Let other tasks run, but never raise ``Cancelled``: for primitives that have
    already done their work (taken a lock, handed over an item) and must not lose it
    to a cancellation. Pair it with :func:`raise_if_cancelled` before the work, so the
    whole operation is still a checkpoint."""
    return checkpoint(_SCHEDULE_POINT)


def wait_task_rescheduled(abort_fn: Callable[[RaiseCancelT], Abort]) -> Any:
    """Park the current task until somebody calls ``reschedule(task, value, error)``.

    The awaited value is ``value`` (or ``error`` is raised). Before parking, register the
    task with whatever will wake it; ``abort_fn(raise_cancel)`` must undo that
    registration and return ``Abort.SUCCEEDED`` (the kernel then raises ``Cancelled``),
    or return ``Abort.FAILED`` and later call ``reschedule`` itself, passing
    ``error=`` the exception ``raise_cancel()`` raises if it gave up the wait.
    ``abort_fn`` may be called any number of times until the task is rescheduled.
    """
    return checkpoint(_Park(abort_fn))
