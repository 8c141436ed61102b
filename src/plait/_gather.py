"""Running awaitables concurrently: ``gather``, ``as_completed``, ``@coroutine``. Layer L4.

Both are built on task groups, so no task outlives the call that started it:
``gather`` waits for all of them; ``as_completed`` cancels the ones still running when
the iteration is closed (``aclose()``, the end of ``async with``, or garbage collection
of an abandoned iterator), and when the run ends.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ._core._cancel import CancelScope
from ._core._kernel import Loop
from ._core._local import current_loop, current_loop_or_none
from ._core._spawn import coerce_coroutine
from ._core._task import Task
from ._core._taskgroup import TaskGroup
from ._core._traps import Abort, RaiseCancelT, checkpoint, wait_task_rescheduled
from ._exceptions import BusyResourceError
from ._util import describe, public

__all__ = ["as_completed", "coroutine", "gather"]

T = TypeVar("T")


def _check_awaitable(aw: object, what: str) -> None:
    if isinstance(aw, Task) or inspect.isawaitable(aw):
        return
    if callable(aw):
        raise TypeError(
            f"{what} takes awaitables (coroutine objects or tasks), got the function "
            f"{describe(aw)}; call it: {what[:-1]}f(), g())"
        )
    raise TypeError(f"{what} takes awaitables (coroutine objects or tasks), got {describe(aw)}")


def _close_all(aws: Iterable[object]) -> None:
    for aw in aws:
        if isinstance(aw, types.CoroutineType):
            aw.close()


@public
async def gather(*aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    """Run the awaitables concurrently and return their results, in argument order.

    Coroutines run as child tasks of a TaskGroup; a :class:`Task` argument is joined.
    If one fails, the others are cancelled and its exception is raised as it is; if
    several fail, an ``ExceptionGroup`` of all of them. With ``return_exceptions=True``
    an ``Exception`` becomes that position's result instead (``Cancelled`` still
    propagates). A checkpoint; cancelling it cancels the children.
    """
    for aw in aws:
        try:
            _check_awaitable(aw, "plait.gather()")
        except TypeError:
            _close_all(aws)
            raise
    if not aws:
        await checkpoint()
        return []
    # Each child *returns* its result (or, with return_exceptions, its exception) and
    # the list is built from the finished tasks. Children never write into a list that
    # their frames can reach: a stored exception's traceback reaches the child's frame
    # (and, on Python 3.12+, through f_back the frames that awaited it), and that would
    # close a reference cycle.
    tasks: list[Task] | None = []
    assert tasks is not None
    error: BaseException | None = None
    try:
        async with TaskGroup() as tg:
            for aw in aws:
                name = getattr(aw, "name", None) or getattr(aw, "__qualname__", None)
                tasks.append(tg.spawn(_gather_one, aw, return_exceptions, name=name))
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
            tasks = None
            raise
        error = group.exceptions[0]
    if error is None:
        return [task._result for task in tasks]
    try:
        raise error
    finally:
        del error, tasks


async def _gather_one(aw: Awaitable[Any], return_exceptions: bool) -> Any:
    if not return_exceptions:
        return await aw
    try:
        return await aw
    except Exception as exc:
        return exc


class _Collector:
    """The group of an ``as_completed`` iterator's own tasks, and the watcher of the
    tasks it was given. Tasks refer to it, not to the iterator, so an abandoned
    iterator can be garbage collected (and then cancels its tasks)."""

    __slots__ = ("abandoned", "done", "foreign", "loop", "own", "scope", "waiter")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.done: deque[Task] = deque()
        self.own = 0  # own tasks still running
        self.foreign: dict[Task, Callable[[Task], None]] = {}  # watched, not done yet
        self.waiter: Task | None = None
        self.abandoned = False
        self.scope = CancelScope()
        task = loop._current_task
        parent = task._scope if task is not None else loop._system_scope
        assert parent is not None
        self.scope._attach(parent, loop)

    def pending(self) -> int:
        return self.own + len(self.foreign)

    def watch(self, task: Task) -> None:
        def finished(t: Task) -> None:
            del self.foreign[t]
            self.arrived(t)

        self.foreign[task] = finished
        if task._joiners is None:
            task._joiners = []
        task._joiners.append(finished)

    def unwatch_all(self) -> None:
        for task, fn in self.foreign.items():
            if task._joiners is not None and fn in task._joiners:
                task._joiners.remove(fn)
        self.foreign.clear()

    def _kernel_child_exited(self, task: Task, exc: BaseException | None) -> None:
        self.own -= 1
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            # Never swallowed: they end the whole run, as from any other task.
            group = self.loop._system_group
            if group is not None:
                group.crash(exc)
        self.arrived(task)
        if not self.own and self.scope._cancel_called and not self.scope._exited:
            self.scope._detach()

    def arrived(self, task: Task) -> None:
        if self.abandoned:
            self.report(task)
            return
        self.done.append(task)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop._kernel_reschedule(waiter, None, None)

    def report(self, task: Task) -> None:
        exc = task._exception
        if exc is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            self.loop.call_exception_handler(
                {
                    "message": f"as_completed(): task {task.name!r} failed after the "
                    "iteration was abandoned",
                    "exception": exc,
                    "task": task,
                }
            )

    def abandon(self) -> None:
        """The iterator was garbage collected: cancel, stop watching, report errors."""
        self.abandoned = True
        self.unwatch_all()
        self.scope.cancel()
        if not self.own and not self.scope._exited:
            self.scope._detach()
        while self.done:
            self.report(self.done.popleft())


@public
class as_completed(AsyncIterator[Task]):
    """Iterate over the awaitables' tasks in the order they finish.

    ``async for task in plait.as_completed([f(), g()]): print(task.result())``.
    Coroutines are started as tasks (inside the caller's cancel scopes: cancelling the
    caller cancels them) on the first iteration; :class:`Task` arguments are only
    watched. Each yielded task is done: ``task.result()`` returns its value or raises.
    Cancelling one ``__anext__`` (a timeout around it) only stops that wait. Leaving
    early and calling ``await it.aclose()`` -- or using ``async with
    plait.as_completed(...) as it`` -- cancels the tasks it started and raises the
    errors of those that failed without being consumed; an abandoned iterator cancels
    them when garbage collected.
    """

    def __init__(self, aws: Iterable[Awaitable[Any]]) -> None:
        self._collector: _Collector | None = None
        self._closed = False
        self._aws: list[Any] | None = list(aws)
        for aw in self._aws:
            try:
                _check_awaitable(aw, "plait.as_completed()")
            except TypeError:
                _close_all(self._aws)
                self._aws = None
                raise
        # Created in a task, the tasks will live in the cancel scopes in force *here*
        # (a timeout around one later iteration does not reach them).
        loop = current_loop_or_none()
        if loop is not None and loop._current_task is not None:
            self._collector = _Collector(loop)

    def _start(self) -> _Collector:
        aws, self._aws = self._aws, None
        assert aws is not None
        c = self._collector
        if c is None:
            c = self._collector = _Collector(current_loop("plait.as_completed()"))
        for aw in aws:
            if isinstance(aw, Task):
                if aw.done():
                    c.done.append(aw)
                else:
                    c.watch(aw)
            else:
                coro = coerce_coroutine(aw, (), "plait.as_completed()")
                c.own += 1
                c.loop._spawn(coro, c, c.scope, None)
        return c

    async def __anext__(self) -> Task:
        c = self._start() if self._aws is not None else self._collector
        if c is None or self._closed:
            raise StopAsyncIteration
        if not c.done and c.pending():
            if c.waiter is not None:
                raise BusyResourceError(
                    "another task is already iterating over this as_completed(); "
                    "iterate from one task only"
                )
            c.waiter = current_loop("plait.as_completed()")._current_task

            def abort(_: RaiseCancelT) -> Abort:
                c.waiter = None
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        else:
            await checkpoint()
        if c.done:
            return c.done.popleft()
        if not c.scope._exited:
            c.scope._detach()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the tasks this iterator started, stop watching the others, and wait
        for its own to finish. Raises an ``ExceptionGroup`` of the errors of tasks that
        finished but were never consumed. A checkpoint; cancellable."""
        if self._closed:
            await checkpoint()
            return
        self._closed = True
        if self._aws is not None:
            _close_all(self._aws)
            self._aws = None
            await checkpoint()
            return
        c = self._collector
        assert c is not None
        c.unwatch_all()
        c.scope.cancel()
        while c.own:
            c.waiter = current_loop("as_completed.aclose()")._current_task

            def abort(_: RaiseCancelT) -> Abort:
                c.waiter = None
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        if not c.scope._exited:
            c.scope._detach()
        errors = [
            t._exception
            for t in c.done
            if t._exception is not None
            and not isinstance(t._exception, KeyboardInterrupt | SystemExit)
        ]
        c.done.clear()
        if errors:
            raise BaseExceptionGroup(
                "as_completed(): tasks failed and were never consumed", errors
            )

    async def __aenter__(self) -> as_completed:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        c = self._collector
        if c is None or self._closed or c.loop.is_closed():
            return
        if self._aws is not None:  # never iterated: nothing started
            _close_all(self._aws)
            c.loop.call_soon_threadsafe(c.abandon)
        elif c.pending() or c.done:
            c.loop.call_soon_threadsafe(c.abandon)


@public
def coroutine(fn: Callable[..., Generator[Any, Any, T]]) -> Callable[..., Awaitable[T]]:
    """Turn a generator function into a coroutine function the kernel can drive.

    Inside it, ``yield from`` other ``@plait.coroutine`` generators or plait
    awaitables (e.g. ``yield from plait.sleep(1)``) and get their results; a bare
    ``yield`` is a checkpoint. Async functions can ``await`` the result.
    """
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"@plait.coroutine is for generator functions; {describe(fn)} is already an "
            "async function: use it as it is"
        )
    if not inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"@plait.coroutine needs a generator function (one that uses 'yield'), got "
            f"{describe(fn)}"
        )
    wrapped = types.coroutine(fn)
    functools.update_wrapper(wrapped, fn)
    return wrapped
