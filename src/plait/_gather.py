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
from ._core._local import current_loop
from ._core._task import Task
from ._core._taskgroup import TaskGroup
from ._core._traps import Abort, RaiseCancelT, checkpoint, wait_task_rescheduled
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
    results: list[Any] = [None] * len(aws)
    if not aws:
        await checkpoint()
        return results

    async def collect(index: int, aw: Awaitable[Any]) -> None:
        if return_exceptions:
            try:
                results[index] = await aw
            except Exception as exc:
                results[index] = exc
        else:
            results[index] = await aw

    error: BaseException | None = None
    try:
        async with TaskGroup() as tg:
            for index, aw in enumerate(aws):
                name = getattr(aw, "name", None) or getattr(aw, "__qualname__", None)
                tg.spawn(collect, index, aw, name=name)
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
            raise
        error = group.exceptions[0]
    if error is None:
        return results
    try:
        raise error
    finally:
        del error


class _Collector:
    """The group of the tasks an ``as_completed`` iterator started."""

    __slots__ = ("done", "loop", "pending", "scope", "waiter")

    def __init__(self) -> None:
        self.done: deque[Task] = deque()
        self.pending = 0
        self.waiter: Task | None = None
        self.scope = CancelScope()
        self.loop: Any = None

    def _kernel_child_exited(self, task: Task, exc: BaseException | None) -> None:
        self.finished(task)

    def finished(self, task: Task) -> None:
        self.pending -= 1
        self.done.append(task)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop._kernel_reschedule(waiter, None, None)


@public
class as_completed(AsyncIterator[Task]):
    """Iterate over the awaitables' tasks in the order they finish.

    ``async for task in plait.as_completed([f(), g()]): print(task.result())``.
    Coroutines are started as tasks on the first iteration; :class:`Task` arguments are
    watched. Each yielded task is done: ``task.result()`` returns its value or raises.
    Leaving early (``break``) and then ``await it.aclose()`` — or using
    ``async with plait.as_completed(...) as it`` — cancels the tasks still running.
    """

    def __init__(self, aws: Iterable[Awaitable[Any]]) -> None:
        self._collector = _Collector()
        self._closed = False
        self._aws: list[Any] | None = list(aws)
        for aw in self._aws:
            try:
                _check_awaitable(aw, "plait.as_completed()")
            except TypeError:
                _close_all(self._aws)
                self._aws = None
                raise

    def _start(self) -> None:
        aws, self._aws = self._aws, None
        assert aws is not None
        loop = current_loop("plait.as_completed()")
        c = self._collector
        c.loop = loop
        assert loop._system_scope is not None
        c.scope._attach(loop._system_scope, loop)
        for aw in aws:
            c.pending += 1
            if isinstance(aw, Task):
                if aw.done():
                    c.finished(aw)
                else:
                    if aw._joiners is None:
                        aw._joiners = []
                    aw._joiners.append(c.finished)
            else:
                from ._core._spawn import coerce_coroutine

                coro = coerce_coroutine(aw, (), "plait.as_completed()")
                loop._spawn(coro, c, c.scope, None)

    async def __anext__(self) -> Task:
        if self._aws is not None:
            self._start()
        c = self._collector
        if not c.done and c.pending and not self._closed:
            c.waiter = current_loop("plait.as_completed()")._current_task

            def abort(_: RaiseCancelT) -> Abort:
                c.waiter = None
                c.scope.cancel()  # the consumer is cancelled: so are its tasks
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        else:
            await checkpoint()
        if c.done:
            return c.done.popleft()
        c.scope._detach()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the tasks still running and wait for them. A checkpoint."""
        if self._aws is not None:
            _close_all(self._aws)
            self._aws = None
            return
        c = self._collector
        c.scope.cancel()
        while c.pending:
            c.waiter = current_loop("as_completed.aclose()")._current_task
            await wait_task_rescheduled(lambda _: Abort.FAILED)
        c.done.clear()
        c.scope._detach()
        self._closed = True

    async def __aenter__(self) -> as_completed:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        c = self._collector
        if c.pending and c.loop is not None and not c.loop.is_closed():
            c.loop.call_soon_threadsafe(c.scope.cancel)


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
