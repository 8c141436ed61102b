"""TaskGroup: the only way to start a task, and the place its errors go. Layer L3.

Theory of operation (trio's nursery): the group's cancel scope is entered in the parent
task when the ``async with`` block starts, and every child starts inside it. A child
that fails cancels the group (so its siblings and the parent's block get ``Cancelled``);
the parent waits at the end of the block until every child has exited, then raises
all the errors together as an ``ExceptionGroup``. ``Cancelled`` that the group itself
caused is filtered out by the group's scope. ``KeyboardInterrupt``/``SystemExit`` from a
child end the group and are re-raised as they are, not wrapped, so they reach
``plait.run``'s caller.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._exceptions import Cancelled
from .._util import public
from ._cancel import CancelScope
from ._local import current_loop, run_state
from ._spawn import callable_name, coerce_coroutine
from ._traps import Abort, RaiseCancelT, wait_task_rescheduled

if TYPE_CHECKING:
    from ._kernel import Loop
    from ._task import Task

__all__ = ["TASK_STATUS_IGNORED", "TaskGroup", "TaskStatus"]


@public
class TaskGroup:
    """A group of child tasks whose lifetime is bounded by an ``async with`` block.

    ``tg.spawn(fn, *args)`` starts ``fn(*args)`` as a child task. The block does not end
    until all children have finished. If a child (or the block body) raises, the group
    is cancelled and the errors are raised as an ``ExceptionGroup``.
    """

    __slots__ = (
        "_abort_recorded",
        "_closed",
        "_entered",
        "_errors",
        "_loop",
        "_nchildren",
        "_parent_task",
        "_pending_starts",
        "_scope",
        "_waiting",
    )

    def __init__(self) -> None:
        self._scope = CancelScope()
        # Children spawned and not yet exited. (A count, not a set: 100k idle tasks
        # would otherwise pay ~100 bytes each.)
        self._nchildren = 0
        self._errors: list[BaseException] = []
        self._parent_task: Task | None = None
        self._loop: Loop | None = None
        self._entered = False
        self._closed = False
        # Invariant: _waiting is True exactly while the parent is parked in __aexit__.
        self._waiting = False
        self._abort_recorded = False
        # start() calls whose task has not moved in yet: they keep the group open.
        self._pending_starts = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._entered else "new")
        return f"<plait.TaskGroup {state} children={self._nchildren}>"

    @property
    def cancel_scope(self) -> CancelScope:
        """The group's scope: ``tg.cancel_scope.cancel()`` cancels every child and the
        body of the ``async with`` block."""
        return self._scope

    async def __aenter__(self) -> TaskGroup:
        loop = current_loop("async with plait.TaskGroup()")
        if self._entered:
            raise RuntimeError("a TaskGroup can be entered only once; create a new TaskGroup")
        self._scope.__enter__()
        self._parent_task = loop._current_task
        self._loop = loop
        self._entered = True
        return self

    def spawn(self, fn: Any, *args: Any, name: str | None = None) -> Task:
        """Start ``fn(*args)`` as a child task and return its :class:`Task`.

        ``fn`` is an async function (or a coroutine object, without ``args``). Not a
        checkpoint: the child first runs at the caller's next checkpoint.
        """
        loop = self._check_open("spawn")
        coro = coerce_coroutine(fn, args, "TaskGroup.spawn()")
        return self._adopt(loop._spawn(coro, self, self._scope, name))

    def _adopt(self, task: Task) -> Task:
        self._nchildren += 1
        return task

    def _check_open(self, what: str) -> Loop:
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                f"TaskGroup.{what}() called before the group was entered; use "
                "'async with plait.TaskGroup() as tg: tg.spawn(...)'"
            )
        if self._closed:
            raise RuntimeError(
                f"TaskGroup.{what}() called on a group that has already finished; spawn "
                "into a group whose 'async with' block is still running"
            )
        if run_state.loop is not loop:
            raise RuntimeError(
                f"TaskGroup.{what}() must be called from the thread running the group's "
                "loop; from another thread use plait.from_thread.run_sync()"
            )
        return loop

    async def start(self, fn: Any, *args: Any, name: str | None = None) -> Any:
        """Start ``fn(*args, task_status=...)`` and wait until it calls
        ``task_status.started(value)``; return ``value``.

        Until then the child runs as if in the caller (its error is raised here); after
        that it belongs to this group. A checkpoint. If the caller is cancelled while
        waiting, the child is cancelled too.
        """
        self._check_open("start")
        if not callable(fn):
            raise TypeError(
                "TaskGroup.start() needs an async function that accepts a task_status "
                f"keyword argument, got {fn!r}"
            )
        status = TaskStatus(self)
        error: BaseException | None = None
        self._pending_starts += 1
        try:
            async with TaskGroup() as temp:
                status._temp = temp
                loop = temp._loop
                assert loop is not None
                coro = coerce_coroutine(fn, args, "TaskGroup.start()", {"task_status": status})
                status._task = temp._adopt(loop._spawn(coro, temp, temp._scope, name))
        except BaseExceptionGroup as group:
            # The child failed before started(): as if it ran in the caller, raise its
            # error as it is rather than wrapped in the temporary group's ExceptionGroup.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
        finally:
            self._pending_starts -= 1
            self._maybe_release_parent()
        if error is not None:
            try:
                raise error
            finally:
                del error
        if not status._started:
            child, status._task = status._task, None
            if child is not None and child.cancelled():
                raise RuntimeError(
                    f"{callable_name(fn)}() was cancelled before it called task_status.started()"
                )
            raise RuntimeError(
                f"{callable_name(fn)}() returned without calling task_status.started(); a "
                "function passed to TaskGroup.start() must call it once it is ready"
            )
        value, status._value = status._value, None
        return value

    async def __aexit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None:
            self._add_error(exc)
        if self._nchildren or self._pending_starts:
            self._waiting = True
            await wait_task_rescheduled(self._abort_wait)
        self._closed = True
        self._parent_task = None
        errors, self._errors = self._errors, []
        if not errors:
            return self._scope.__exit__(None, None, None)
        raising: BaseException | None = None
        for err in errors:
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raising = err
                break
        if raising is None:
            raising = BaseExceptionGroup("errors in a plait.TaskGroup", errors)
            if self._scope.__exit__(type(raising), raising, raising.__traceback__):
                return True
            if all(type(e) is Cancelled for e in errors):
                raising = errors[0]
        else:
            self._scope.__exit__(type(raising), raising, raising.__traceback__)
        if raising is exc:
            return False  # re-raise the body's own exception untouched
        try:
            raise raising
        finally:
            del raising, errors, exc

    def _abort_wait(self, raise_cancel: RaiseCancelT) -> Abort:
        # The parent is cancelled from outside while waiting for children. The same
        # cancellation reaches the children through the scope tree; the parent keeps
        # waiting (a group never returns before its children) and remembers the
        # Cancelled so that it reaches the scope that caused it.
        if not self._abort_recorded:
            self._abort_recorded = True
            self._errors.append(Cancelled())
        return Abort.FAILED

    def _add_error(self, exc: BaseException) -> None:
        self._errors.append(exc)
        if type(exc) is not Cancelled:
            # A real error cancels the siblings. (A Cancelled means an enclosing scope
            # is cancelled already; cancelling ours too would only misreport it.)
            self._scope.cancel()

    def _kernel_child_exited(self, task: Task, exc: BaseException | None) -> None:
        self._nchildren -= 1
        if exc is not None:
            self._add_error(exc)
        self._maybe_release_parent()

    def _maybe_release_parent(self) -> None:
        """Once nothing can join any more, close the group (synchronously, so no task
        can spawn into it between now and the parent's next step) and wake the parent."""
        if self._waiting and not self._nchildren and not self._pending_starts:
            self._waiting = False
            self._closed = True
            parent = self._parent_task
            assert parent is not None
            assert self._loop is not None
            self._loop._kernel_reschedule(parent, None, None)


class TaskStatus:
    """Handed to a function started with ``TaskGroup.start`` as ``task_status``."""

    __slots__ = ("_started", "_target", "_task", "_temp", "_value")

    def __init__(self, target: TaskGroup) -> None:
        self._target = target
        self._temp: TaskGroup | None = None
        self._task: Task | None = None
        self._started = False
        self._value: Any = None

    def __repr__(self) -> str:
        return f"<plait.TaskStatus {'started' if self._started else 'starting'}>"

    def started(self, value: Any = None) -> None:
        """Tell ``TaskGroup.start`` that the task is ready; ``value`` is what it returns.

        The task then moves into the target group. Call it once.
        """
        if self._started:
            raise RuntimeError("task_status.started() was already called; call it once")
        temp, task, target = self._temp, self._task, self._target
        assert temp is not None and task is not None
        loop = target._loop
        assert loop is not None
        if loop._current_task is not task:
            raise RuntimeError("task_status.started() must be called by the started task itself")
        if target._closed:
            raise RuntimeError(
                "task_status.started(): the target TaskGroup has already finished, so the "
                "task cannot move into it"
            )
        self._started = True
        self._value = value
        temp._nchildren -= 1
        target._nchildren += 1
        task._group = target
        _reparent_task(task, temp._scope, target._scope)
        self._task = None
        temp._maybe_release_parent()


def _reparent_task(task: Task, old_root: CancelScope, new_root: CancelScope) -> None:
    bottom: CancelScope | None = None
    scope = task._scope
    while scope is not old_root:
        bottom = scope
        assert scope._parent is not None
        scope = scope._parent
    if bottom is not None:
        bottom._reparent(new_root)
        return
    old_root._tasks.pop(task, None)
    new_root._tasks[task] = None
    task._scope = new_root


class _IgnoredStatus(TaskStatus):
    __slots__ = ()

    def __init__(self) -> None:
        pass

    def __repr__(self) -> str:
        return "plait.TASK_STATUS_IGNORED"

    def started(self, value: Any = None) -> None:
        pass


TASK_STATUS_IGNORED: TaskStatus = _IgnoredStatus()
"""Default for ``task_status`` parameters: ``started()`` does nothing when the function is
called directly instead of through ``TaskGroup.start``."""
