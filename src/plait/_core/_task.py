"""The Task: one coroutine driven by the kernel. Layer L3.

A task is born runnable, alternates between running, ready and parked, and ends done
with a result, an error, or cancelled. The kernel (``_kernel.Loop``) owns every field
whose name starts with ``_k``-style underscores; users see the read-only surface below.

Memory: ``__slots__``, and the only per-task objects besides the coroutine are the task
and its ``contextvars.Context``; callbacks and joiners get a list only when they exist.
Nothing here points back from the task to its waiters after it is done, so a finished
task, its frames and its exception are freed by reference counting.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._exceptions import TaskCancelled
from ._inspect import TaskFrame, task_stack
from ._traps import Abort, RaiseCancelT, checkpoint, wait_task_rescheduled

if TYPE_CHECKING:
    from ._cancel import CancelScope
    from ._kernel import Loop

__all__ = ["Task"]

_ids = itertools.count(1)


class Task:
    """A running coroutine, owned by a :class:`plait.TaskGroup`.

    Create tasks with ``TaskGroup.spawn``; never instantiate this class yourself.
    ``await task`` waits for it and returns its result or raises its exception.
    """

    __slots__ = (
        "__weakref__",
        "_abort_fn",
        "_context",
        "_coro",
        "_done",
        "_exception",
        "_exception_tb",
        "_group",
        "_joiners",
        "_loop",
        "_next_exc",
        "_next_value",
        "_own_scope",
        "_result",
        "_scope",
        "_send",
        "_was_cancelled",
        "id",
        "name",
    )

    def __init__(  # noqa: PLR0917 - kernel-internal constructor
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any],
        loop: Loop,
        name: str | None,
        context: contextvars.Context,
        scope: CancelScope,
        group: Any,
    ) -> None:
        self._coro = coro
        self._send = coro.send
        self._context = context
        self._loop = loop
        self.id = next(_ids)
        self.name: str = name if name is not None else getattr(coro, "__qualname__", "task")
        self._next_value: Any = None
        self._next_exc: BaseException | None = None
        # Invariant: _abort_fn is not None exactly while the task is parked.
        self._abort_fn: Callable[[RaiseCancelT], Abort] | None = None
        # Innermost cancel scope in force for this task (never None while it runs).
        self._scope = scope
        # Set by Task.cancel(): a scope spliced in below the task's own scopes.
        self._own_scope: CancelScope | None = None
        self._group = group
        self._done = False
        self._was_cancelled = False
        self._result: Any = None
        self._exception: BaseException | None = None
        # The traceback the exception had when the task ended: every re-raise starts
        # from it again, so joining many times does not grow it.
        self._exception_tb: TracebackType | None = None
        # None, or a list of callables(task) run when the task is done (joiners first).
        self._joiners: list[Callable[[Task], object]] | None = None

    def __repr__(self) -> str:
        return f"<plait.Task #{self.id} {self.name!r} {self._state()}>"

    def _state(self) -> str:
        """ "running", "parked", or how it ended: "returned", "cancelled" or "raised
        ValueError" (the repr, and the exit events of plait.trace)."""
        if not self._done:
            return "parked" if self._abort_fn is not None else "running"
        if self._was_cancelled:
            return "cancelled"
        if self._exception is not None:
            return f"raised {type(self._exception).__name__}"
        return "returned"

    # -- the public surface ------------------------------------------------------

    def stack(self, *, locals: bool = False) -> list[TaskFrame]:
        """The frames of the task's await chain, outermost (the task's own function)
        first, through coroutines, ``@plait.coroutine`` generators and async
        generators, down to where it is suspended: each a ``TaskFrame`` with
        ``filename``, ``lineno``, ``name`` and, with ``locals=True``, ``locals`` (a dict
        of the frame's local variables' reprs). Empty once the task has finished."""
        return task_stack(self, with_locals=locals)

    def done(self) -> bool:
        """True once the task has finished (returned, raised, or was cancelled)."""
        return self._done

    def cancelled(self) -> bool:
        """True if the task ended by being cancelled (by :meth:`cancel`, its group, or
        any cancel scope around it)."""
        return self._was_cancelled

    def _check_done(self, what: str) -> None:
        if not self._done:
            raise RuntimeError(
                f"Task.{what}() called on {self!r}, which has not finished yet; "
                "use 'await task' to wait for it first"
            )

    def result(self) -> Any:
        """The task's return value; re-raises its exception; raises
        :class:`plait.TaskCancelled` if it was cancelled; ``RuntimeError`` if it has not
        finished."""
        self._check_done("result")
        if self._was_cancelled:
            raise TaskCancelled(f"task {self.name!r} was cancelled")
        exc = self._exception
        if exc is not None:
            try:
                raise exc.with_traceback(self._exception_tb)
            finally:
                del exc, self  # this frame joins the traceback: keep no cycle
        return self._result

    def exception(self) -> BaseException | None:
        """The exception the task raised, or None; a :class:`plait.TaskCancelled` if it
        was cancelled. ``RuntimeError`` if it has not finished."""
        self._check_done("exception")
        if self._was_cancelled:
            return TaskCancelled(f"task {self.name!r} was cancelled")
        return self._exception

    def cancel(self) -> None:
        """Cancel this task: its next (or current) checkpoint raises ``Cancelled``.

        Level-triggered: every later checkpoint raises too, until the task ends. If the
        task ends by that ``Cancelled``, it counts as cancelled (``cancelled()`` is
        True) rather than as failed, and its group is not disturbed. Must be called
        from the loop's thread. Cancelling a finished task does nothing.
        """
        if self._done:
            return
        self._loop._kernel_cancel_task(self)

    def add_done_callback(self, fn: Callable[[Task], object]) -> None:
        """Call ``fn(task)`` soon after the task finishes (at once if it has)."""
        if self._done:
            self._loop.call_soon(fn, self)
            return
        loop = self._loop
        if self._joiners is None:
            self._joiners = []
        self._joiners.append(lambda task: loop.call_soon(fn, task))

    def __await__(self) -> Generator[Any, Any, Any]:
        return self._join().__await__()

    async def _join(self) -> Any:
        """Wait for the task; a checkpoint. Cancelling the wait leaves the task alone."""
        if not self._done:
            loop = self._loop
            if loop._current_task is self:
                raise RuntimeError(f"{self!r} cannot await itself: that would wait forever")
            if loop._current_task is None:
                raise RuntimeError("'await task' must be used inside a plait task")
            # The waiter sits in a one-item list that is emptied when the wait ends, so
            # that no frame or closure left in a traceback still points at a task.
            box = [loop._current_task]

            def wake(_: Task) -> None:
                if box and box[0]._abort_fn is not None:
                    loop._kernel_reschedule(box.pop(), None, None)

            if self._joiners is None:
                self._joiners = []
            joiners = self._joiners
            joiners.append(wake)

            def abort(_: RaiseCancelT) -> Abort:
                joiners.remove(wake)
                box.clear()
                return Abort.SUCCEEDED

            try:
                await wait_task_rescheduled(abort)
            finally:
                box.clear()
                del joiners
        else:
            await checkpoint()
        task = self
        del self
        try:
            return task.result()
        finally:
            del task
