"""Worker threads: ``to_thread.run_sync`` and the way back, ``from_thread``. Layer L6.

Theory of operation. ``to_thread.run_sync`` borrows a token from a ``CapacityLimiter``
(40 per loop by default), hands the call to a cached worker thread
(``_core/_thread_cache.py``) and parks the task. The worker runs ``fn`` inside a copy
of the task's ``contextvars`` context and hands the outcome back through the loop's
thread-safe door; the loop thread releases the limiter token and reschedules the task.
An exception keeps the traceback it had in the thread; the task's frames are added on
top as it propagates.

Cancellation. By default the task keeps waiting for the thread (a thread cannot be
interrupted), but the job is marked: ``from_thread.check_cancelled()`` in the thread
then raises ``Cancelled``, and tasks the thread started with ``from_thread.run`` are
cancelled, so cooperative code stops early; the ``Cancelled`` (or the result) comes back
to the task, whose cancelled scope then does the rest. With ``abandon_on_cancel=True``
the task is cancelled at once; the thread finishes on its own, its outcome is dropped,
and it holds its limiter token until then (so a limiter still bounds the real threads).

The way back. A worker thread knows its job through a thread-local. ``from_thread.run``
starts the async function as a task of the loop (a system task, in a copy of the
thread's context) and blocks the thread until it finishes; ``from_thread.run_sync``
calls a function on the loop's thread. A thread that is not a worker passes
``token=plait.lowlevel.current_token()`` obtained on the loop's thread. If the loop
ends before it could serve the request, the thread gets ``RuntimeError`` instead of
waiting forever.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._core._instrument import finish_job, start_job
from ._core._local import current_loop, current_loop_or_none
from ._core._spawn import coerce_coroutine
from ._core._thread_cache import start_thread_soon
from ._core._traps import Abort, RaiseCancelT, wait_task_rescheduled
from ._exceptions import Cancelled, WouldBlock
from ._sync import CapacityLimiter
from ._util import describe

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "check_cancelled",
    "current_default_thread_limiter",
    "from_thread_run",
    "from_thread_run_sync",
    "to_thread_run_sync",
]

T = TypeVar("T")

_FunctionType = types.FunctionType
_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

DEFAULT_THREAD_LIMIT = 40

# How often a thread blocked in from_thread re-checks that its loop is still alive.
_LOOP_CHECK_INTERVAL = 0.25


class _Job:
    """One ``to_thread.run_sync`` call, as its worker thread sees it."""

    __slots__ = ("cancel_requested", "children", "loop", "task", "waiting")

    def __init__(self, loop: Any, task: Any) -> None:
        self.loop = loop
        # The waiting task, until it has its outcome (then None: no reference cycle
        # through an error's traceback, which holds the waiting frame).
        self.task = task
        self.cancel_requested = False
        self.waiting = True
        self.children: set[Any] = set()


class _WorkerState(threading.local):
    job: _Job | None = None


_worker = _WorkerState()


def current_default_thread_limiter() -> CapacityLimiter:
    """The loop's default limiter for ``to_thread.run_sync`` (40 tokens; change its
    ``total_tokens`` to allow more or fewer threads at once)."""
    loop = current_loop("plait.to_thread.current_default_thread_limiter()")
    limiter: CapacityLimiter | None = loop._default_thread_limiter
    if limiter is None:
        limiter = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        loop._default_thread_limiter = limiter
    return limiter


def _refuse_async(fn: Any) -> None:
    raise TypeError(
        f"to_thread.run_sync() runs a synchronous function in a thread, but "
        f"{_name_of(fn)} is async: await it directly instead"
    )


def _thread_name(fn: Any) -> str:
    # The worker thread's name while it runs fn (shown by debuggers and ``plait ps``).
    name = getattr(fn, "__qualname__", None)
    return "plait.to_thread: " + (name if name.__class__ is str else _name_of(fn))


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


async def to_thread_run_sync(
    fn: Callable[..., T],
    *args: Any,
    abandon_on_cancel: bool = False,
    limiter: CapacityLimiter | None = None,
) -> T:
    """Run ``fn(*args)`` in a worker thread and return its result (or raise its error).

    See the module notes for cancellation. ``limiter`` (default: the loop's
    ``CapacityLimiter(40)``) bounds how many threads run at once."""
    if fn.__class__ is _FunctionType:
        if fn.__code__.co_flags & _ASYNC_FLAGS:
            _refuse_async(fn)
    elif not callable(fn):
        raise TypeError(f"to_thread.run_sync() needs a function, got {describe(fn)}")
    elif inspect.iscoroutinefunction(fn) or inspect.iscoroutine(fn):
        _refuse_async(fn)
    loop = current_loop("plait.to_thread.run_sync()")

    task = loop._current_task
    if task is None:
        raise RuntimeError("plait.to_thread.run_sync() must be awaited in a task")
    if limiter is None:
        limiter = loop._default_thread_limiter or current_default_thread_limiter()
    elif not isinstance(limiter, CapacityLimiter):
        raise TypeError(f"limiter must be a plait.CapacityLimiter, got {describe(limiter)}")
    if task._scope._eff:
        raise Cancelled
    job = _Job(loop, task)
    del task
    try:
        # No wait for a free token: the park below is this call's schedule point.
        limiter.acquire_on_behalf_of_nowait(job)
    except WouldBlock:
        await limiter.acquire_on_behalf_of(job)
    context = contextvars.copy_context()

    def work() -> Any:
        _worker.job = job
        try:
            return context.run(fn, *args)
        finally:
            _worker.job = None

    seen = start_job(loop, "thread", fn)

    def back(value: Any, error: BaseException | None) -> None:
        limiter.release_on_behalf_of(job)
        finish_job(loop, seen)
        if job.waiting:
            job.waiting = False
            loop._kernel_reschedule(job.task, value, error)

    def deliver(value: Any, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(back, value, error)
        except RuntimeError:
            pass  # the loop is closed; nobody waits any more

    def abort(_: RaiseCancelT) -> Abort:
        job.cancel_requested = True
        for child in tuple(job.children):
            child.cancel()
        if abandon_on_cancel:
            job.waiting = False
            return Abort.SUCCEEDED
        return Abort.FAILED

    try:
        start_thread_soon(work, deliver, name=_thread_name(fn))
    except BaseException:
        limiter.release_on_behalf_of(job)
        finish_job(loop, seen)
        raise
    try:
        result: T = await wait_task_rescheduled(abort)
    finally:
        job.task = None  # see _Job.task
    return result


def _job_loop(token: Any, what: str) -> tuple[_Job | None, Any]:
    job = _worker.job
    if token is None and job is None and current_loop_or_none() is not None:
        raise RuntimeError(
            f"{what} was called from the loop's own thread; it would wait for itself. "
            "In a task, await the function directly (or call the sync one)."
        )
    if token is not None:
        loop = getattr(token, "_loop", None)
        if loop is None:
            raise TypeError(
                f"{what}: token must come from plait.lowlevel.current_token(), got "
                f"{describe(token)}"
            )
        if job is not None and job.loop is not loop:
            job = None
    elif job is None:
        raise RuntimeError(
            f"{what} was called from a thread that plait did not start: only threads "
            "running plait.to_thread.run_sync() know their loop. From another thread, "
            "pass token=plait.lowlevel.current_token() (taken on the loop's thread)."
        )
    else:
        loop = job.loop
    here = current_loop_or_none()
    if here is loop:
        raise RuntimeError(
            f"{what} was called from the loop's own thread; it would wait for itself. "
            "In a task, await the function directly (or call the sync one)."
        )
    if here is not None:
        raise RuntimeError(
            f"{what} blocks its thread, and this thread runs another plait loop that it "
            "would freeze; use a plait task of that loop to talk to the other one"
        )
    return job, loop


def _wait_for(done: threading.Event, box: list[Any], loop: Any, what: str) -> Any:
    while not done.wait(_LOOP_CHECK_INTERVAL):
        if loop.is_closed():
            raise RuntimeError(f"{what}: the plait loop ended before it could run the call")
    value, error = box
    box.clear()
    if error is not None:
        try:
            raise error
        finally:
            del error
    return value


def from_thread_run_sync(fn: Callable[..., T], *args: Any, token: Any = None) -> T:
    """From a worker thread: call ``fn(*args)`` on the loop's thread and return its
    result (or raise its error). Blocks this thread meanwhile."""
    what = "plait.from_thread.run_sync()"
    if not callable(fn):
        raise TypeError(f"{what} needs a function, got {describe(fn)}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} calls a synchronous function; use from_thread.run() for async")
    _, loop = _job_loop(token, what)
    done = threading.Event()
    box: list[Any] = []

    def call() -> None:
        try:
            box[:] = [fn(*args), None]
        except BaseException as exc:
            box[:] = [None, exc]
        done.set()

    try:
        loop.call_soon_threadsafe(call, context=contextvars.copy_context())
    except RuntimeError:
        raise RuntimeError(f"{what}: the plait loop has ended") from None
    return _wait_for(done, box, loop, what)  # type: ignore[no-any-return]


def from_thread_run(fn: Callable[..., Awaitable[T]], *args: Any, token: Any = None) -> T:
    """From a worker thread: run ``await fn(*args)`` as a task of the loop and return
    its result (or raise its error). Blocks this thread meanwhile. The task is
    cancelled if the ``to_thread.run_sync`` call that started this thread is."""
    what = "plait.from_thread.run()"
    if not callable(fn):
        raise TypeError(f"{what} needs an async function, got {describe(fn)}")
    job, loop = _job_loop(token, what)
    done = threading.Event()
    box: list[Any] = []
    context = contextvars.copy_context()

    def start() -> None:
        try:
            coro: Any = coerce_coroutine(fn, args, what)
            if loop._system_group is None or loop._system_scope is None:
                coro.close()
                raise RuntimeError(f"{what}: the plait run has ended")
        except BaseException as exc:
            box[:] = [None, exc]
            done.set()
            return
        holder: list[Any] = []

        async def runner() -> None:
            try:
                box[:] = [await coro, None]
            except BaseException as exc:
                box[:] = [None, exc]
            finally:
                if job is not None and holder:
                    job.children.discard(holder[0])
                holder.clear()
                done.set()

        child = loop._spawn(
            runner(),
            loop._system_group,
            loop._system_scope,
            f"from_thread: {_name_of(fn)}",
            context,
        )
        if job is not None:
            holder.append(child)
            job.children.add(child)
            if job.cancel_requested:
                child.cancel()

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:
        raise RuntimeError(f"{what}: the plait loop has ended") from None
    return _wait_for(done, box, loop, what)  # type: ignore[no-any-return]


def check_cancelled() -> None:
    """In a ``to_thread.run_sync`` worker: raise ``Cancelled`` if the task waiting for
    this thread has been cancelled (so the thread can stop early). ``RuntimeError``
    anywhere else."""
    job = _worker.job
    if job is None:
        if current_loop_or_none() is not None:
            raise RuntimeError(
                "plait.from_thread.check_cancelled() was called from the loop's thread; "
                "in a task, cancellation is delivered at every await"
            )
        raise RuntimeError(
            "plait.from_thread.check_cancelled() only works in a thread started by "
            "plait.to_thread.run_sync()"
        )
    if job.cancel_requested:
        raise Cancelled
