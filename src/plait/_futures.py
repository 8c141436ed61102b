"""``plait.wait_future``: await a ``concurrent.futures.Future`` from a task. Layer L6.

Theory of operation. The task registers a done-callback on the future and parks. The
callback runs in whichever thread completes the future; it hands the wake-up to the
loop through ``call_soon_threadsafe``, or reschedules the task directly when it runs
on the loop's own thread (a task or loop callback completed the future). Once awake,
the task reads the outcome from the future itself, so no value or exception crosses a
thread through plait: the future is the one place the outcome lives.

Cancellation. Cancelling the waiting task calls ``f.cancel()``. A future that has not
started (still queued in its executor) is cancelled, and the task gets ``Cancelled``
at once. A future that is already running cannot be cancelled (that is
``concurrent.futures``' rule); the task stops waiting anyway and gets ``Cancelled`` at
once, and the future runs on in its executor and keeps its outcome (``f.result()``
still has it: nothing is lost). Rejected alternative: waiting for a running future to
finish, as ``to_thread.run_sync`` does by default. That is right for a thread plait
started and can ask to stop (``from_thread.check_cancelled``), but a future belongs to
its executor, which bounds its lifetime; waiting would make a ``move_on_after`` around
``wait_future`` as slow as the slowest job, with no way to cut it short.

A future cancelled by someone else raises ``concurrent.futures.CancelledError`` (as
``f.result()`` does), not ``plait.Cancelled``: it reports the future's fate, and a
``plait.Cancelled`` that no cancel scope caused would escape every scope.

Memory. A future keeps its callbacks for as long as it lives and has no way to remove
one. The callback therefore holds a small ``_Waiter`` that forgets the loop and the
task as soon as the wait ends, so a long-lived future keeps nothing of the task alive.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, TypeVar

from ._core._local import current_loop
from ._core._traps import Abort, RaiseCancelT, schedule_point, wait_task_rescheduled
from ._exceptions import Cancelled
from ._util import describe, public

__all__ = ["wait_future"]

T = TypeVar("T")


class _Waiter:
    """What the future's done-callback holds: the loop and the task, until the wait ends."""

    __slots__ = ("loop", "parked", "task")

    def __init__(self, loop: Any, task: Any) -> None:
        # Invariant: loop and task are both set exactly while the task still waits for
        # this future (or is about to park for it); both None once the wait is over.
        self.loop = loop
        self.task = task
        self.parked = False

    def on_done(self, _: object) -> None:
        """The future's done-callback: any thread, called once."""
        loop = self.loop
        if loop is None:
            return  # the wait is over (the task was cancelled): nobody to wake
        if threading.current_thread() is loop._thread:
            self.wake()
            return
        try:
            loop.call_soon_threadsafe(self.wake)
        except RuntimeError:
            pass  # the loop is closed: the task is gone with it

    def wake(self) -> None:
        """Loop thread only."""
        task = self.task
        if task is None:
            return  # cancelled meanwhile: the abort already rescheduled it
        loop = self.loop
        self.task = self.loop = None
        # Discussion: the callback runs at once, inside add_done_callback(), if the
        # future finished between the done() test and the registration; the task has
        # not parked yet then, and must not be rescheduled (see wait_future).
        if self.parked:
            loop._kernel_reschedule(task, None, None)


def _not_a_future(f: object) -> TypeError:
    if hasattr(f, "_asyncio_future_blocking"):
        return TypeError(
            f"plait.wait_future() waits for a concurrent.futures.Future, and {describe(f)} "
            "is an asyncio future: plait tasks cannot wait on asyncio objects. Run the "
            "asyncio code through plait.aio, or get a concurrent future from it with "
            "asyncio.run_coroutine_threadsafe()."
        )
    return TypeError(
        f"plait.wait_future() needs a concurrent.futures.Future (from an Executor's "
        f"submit(), for example), got {describe(f)}"
    )


@public
async def wait_future(f: concurrent.futures.Future[T]) -> T:
    """Wait for the ``concurrent.futures.Future`` ``f`` and return its result.

    ``f`` may be completed by any thread (an executor's worker, a plain thread, a
    ``plait.Portal``, or a task of this loop). The waiting task does not block the loop.

    A checkpoint: raises ``Cancelled`` before touching ``f`` if the caller is already
    cancelled; a future that is already done is returned after a schedule point.

    Cancellation: cancelling the waiting task cancels ``f`` if it has not started, and
    the task gets ``Cancelled`` at once. If ``f`` is already running, it cannot be
    cancelled: the task still stops waiting at once, and ``f`` runs on and keeps its
    outcome for whoever asks ``f.result()``.

    Raises:
        Exception: whatever ``f`` raised, with the traceback it had in its thread.
        concurrent.futures.CancelledError: ``f`` was cancelled by someone else.
        TypeError: ``f`` is not a ``concurrent.futures.Future``.
    """
    if not isinstance(f, concurrent.futures.Future):
        raise _not_a_future(f)
    loop = current_loop("plait.wait_future()")
    task = loop._current_task
    if task is None:
        raise RuntimeError("plait.wait_future() must be awaited in a plait task")
    if task._scope._eff:
        raise Cancelled
    del task
    try:
        if f.done():
            await schedule_point()
        else:
            await _park(f, loop)
        return _outcome(f)
    finally:
        # f's exception passes through this frame: holding f would close a cycle.
        del f


async def _park(f: concurrent.futures.Future[Any], loop: Any) -> None:
    """Park the current task until ``f`` is done (or the task is cancelled)."""
    waiter = _Waiter(loop, loop._current_task)
    f.add_done_callback(waiter.on_done)
    if waiter.task is None:  # it finished just now: the callback already ran
        await schedule_point()
        return

    def abort(_: RaiseCancelT) -> Abort:
        # Forget the task first: f.cancel() runs the callbacks right here.
        waiter.task = waiter.loop = None
        f.cancel()
        return Abort.SUCCEEDED

    waiter.parked = True
    await wait_task_rescheduled(abort)


def _outcome(f: concurrent.futures.Future[T]) -> T:
    """The done future's result, or raise its exception. (A frame that holds the future
    while its exception passes through closes a reference cycle: ``del`` it.)"""
    try:
        if f.cancelled():
            raise concurrent.futures.CancelledError(f"the future was cancelled: {f!r}")
        error = f.exception(timeout=0)
        if error is None:
            return f.result(timeout=0)
        try:
            raise error
        finally:
            del error
    finally:
        del f
