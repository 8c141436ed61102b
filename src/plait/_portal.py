"""``plait.Portal``: a plait loop in a background thread, as an ``Executor``. Layer L6.

Theory of operation. ``Portal()`` starts a thread that runs ``plait.run`` on a main
task holding one ``TaskGroup`` open until shutdown. ``submit(fn, *args)`` (any thread)
creates a ``concurrent.futures.Future`` and a job, and hands the job to the loop with
``call_soon_threadsafe``; on the loop's thread the job becomes a child task of the
group, running in a copy of the submitting thread's ``contextvars`` context. The task
catches whatever the call raises, so one failing job never disturbs the others, and
puts the outcome in the future (an exception keeps its traceback: the caller of
``result()`` sees its own frames on top of the task's).

What runs where. An async function (``async def``, a ``functools.partial`` of one, an
object with an ``async def __call__``, a ``@plait.coroutine``) runs as that task. A
regular function runs in a worker thread, through ``plait.to_thread.run_sync`` (at most
40 at a time, the loop's default limiter), so a blocking call never stalls the loop:
that is what an ``Executor`` user expects, ``submit(time.sleep, 1)`` included. (anyio
and trio portals call sync functions on the loop's thread instead; rejected, because
one slow call would then freeze every task of the portal.) Such a thread may call
``plait.from_thread.run`` to use the portal's loop. A regular function that returns a
coroutine (a ``lambda`` around an async call, a decorator that hides ``async def``)
has that coroutine awaited on the loop.

Cancellation. ``concurrent.futures`` lets ``cancel()`` succeed only while a future is
*pending*. A portal future therefore stays pending until its task has finished: only
then does the task call ``set_running_or_notify_cancel()`` and set the outcome. So
``fut.cancel()`` works on a job that is already running: it returns True at once, the
future is cancelled, and a done-callback asks the loop to cancel the task (its
``finally`` blocks run on the loop soon after; a job in a worker thread is waited for,
and ``from_thread.check_cancelled()`` there raises ``Cancelled``). The price:
``fut.running()`` is never True. ``concurrent.futures.wait`` and ``as_completed`` see
a cancelled future as done once its task has finished (that is when the task notifies
them), so waiting for it also waits for its cleanup.

Shutdown. ``shutdown(wait=True, cancel_futures=False)``: no new jobs (``submit`` raises
``RuntimeError``); ``cancel_futures=True`` cancels every job not finished yet, running
ones included; the main task then leaves its ``TaskGroup``, which waits for the jobs
left, and the thread ends; ``wait=True`` joins it. The thread is not a daemon: a portal
the program forgot is shut down (``wait=True``, jobs finished, as ``ThreadPoolExecutor``
does) by a hook that runs at interpreter exit before non-daemon threads are joined, and
a portal that is garbage-collected is shut down with ``wait=False``. (A daemon thread
would be killed at exit in the middle of its tasks, without their ``finally`` blocks.)
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import inspect
import itertools
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from ._core._kernel import Loop
from ._core._local import current_loop, current_loop_or_none
from ._core._spawn import _is_kernel_drivable, callable_name, coerce_coroutine
from ._core._taskgroup import TaskGroup
from ._run import run
from ._sync import Event
from ._threads import to_thread_run_sync
from ._util import describe, public
from .lowlevel import LoopToken

__all__ = ["Portal"]

_names = itertools.count(1)
_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE


def _is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine (checked without calling it)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType) and code.co_flags & _CO_ITERABLE_COROUTINE:
        return True  # @plait.coroutine / @types.coroutine generator function
    if not inspect.isroutine(fn) and not isinstance(fn, type):
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method itself
        if call is not None and inspect.iscoroutinefunction(call):
            return True
    return False


class _Job:
    """One ``submit()``: what to call, and the future to complete."""

    __slots__ = ("args", "context", "fn", "future", "is_async", "kwargs", "name", "state", "task")

    def __init__(
        self,
        state: _State,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.state: _State | None = state
        # The future's done-callback holds the job: clear() breaks that cycle.
        self.future: concurrent.futures.Future[Any] | None = future
        self.fn: Callable[..., Any] | None = fn
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs
        self.is_async = _is_async_callable(fn)
        self.name = f"Portal.submit: {callable_name(fn)}"
        self.context = contextvars.copy_context()
        # Loop thread only. Invariant: task is set exactly while the job's task runs.
        self.task: Any = None

    def on_future_done(self, future: concurrent.futures.Future[Any]) -> None:
        """The future's done-callback (any thread). A future kept by its owner keeps this
        callback: after the job ends, ``state`` is None and the job holds nothing."""
        state = self.state
        if state is None or not future.cancelled():
            return
        loop = state.loop
        if loop is None:
            return
        if threading.current_thread() is state.thread:
            self.kill()
            return
        try:
            loop.call_soon_threadsafe(self.kill)
        except RuntimeError:
            pass  # the loop has ended: the job ended with it

    def kill(self) -> None:
        """Loop thread: the future was cancelled; cancel the task if it runs. (A job not
        started yet sees the cancelled future and never starts.)"""
        if self.task is not None:
            self.task.cancel()

    def clear(self) -> None:
        self.state = self.future = self.fn = self.task = None
        self.args = ()
        self.kwargs = {}
        self.context = None  # type: ignore[assignment]


class _State:
    """What the portal's thread shares with the ``Portal`` object: the thread never
    holds the ``Portal`` itself, so dropping it can shut the portal down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        # Guarded by lock. Invariant: jobs holds every job submitted and not finished;
        # shutdown never goes back to False.
        self.jobs: set[_Job] = set()
        self.shutdown = False
        # Set once the loop runs (by the loop's thread, before `started`); loop is None
        # again once the loop has ended.
        self.loop: Loop | None = None
        self.token: LoopToken | None = None
        self.group: TaskGroup | None = None
        self.stop: Event | None = None
        self.started = threading.Event()
        self.crash: BaseException | None = None
        self.thread = threading.Thread(target=self.main, name=name, daemon=False)

    # -- the portal's thread -------------------------------------------------------

    def main(self) -> None:
        try:
            run(self.serve, name=f"{self.name} (main task)")
        except BaseException as exc:
            self.crash = exc
        finally:
            with self.lock:
                self.shutdown = True
                self.loop = None
                left, self.jobs = self.jobs, set()
            self.group = self.stop = None
            for job in left:  # only if the loop died: every job normally finished
                self.finish(job, None, RuntimeError(f"{self.name}: the portal's loop ended"))
            self.started.set()
            _live.discard(self)

    async def serve(self) -> None:
        loop = current_loop("Portal")
        async with TaskGroup() as group:
            self.group = group
            self.stop = Event()
            self.token = LoopToken(loop)
            self.loop = loop
            self.started.set()
            await self.stop.wait()

    def start_job(self, job: _Job) -> None:
        """Loop thread: turn a submitted job into a task (unless it was cancelled)."""
        assert job.future is not None
        if job.future.cancelled():
            self.finish(job, None, None)
            return
        assert self.group is not None
        try:
            job.task = job.context.run(self.group.spawn, _run_job, job, name=job.name)
        except BaseException as exc:  # pragma: no cover - the group is open until stop
            self.finish(job, None, exc)

    def finish(self, job: _Job, value: Any, error: BaseException | None) -> None:
        """Complete the job's future (exactly once per job), and forget the job."""
        future = job.future
        assert future is not None
        with self.lock:
            self.jobs.discard(job)
        job.clear()
        if future.set_running_or_notify_cancel():  # False: cancelled (waiters notified)
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    # -- any thread ----------------------------------------------------------------

    def request_shutdown(self, cancel_futures: bool) -> None:
        with self.lock:
            first = not self.shutdown
            self.shutdown = True
            loop = self.loop
            # A job's future is set while the job is in self.jobs.
            futures = [job.future for job in self.jobs] if cancel_futures else []
        for future in futures:
            assert future is not None
            future.cancel()
        del futures
        if first and loop is not None and self.stop is not None:
            try:
                loop.call_soon_threadsafe(self.stop.set)
            except RuntimeError:
                pass  # the loop has ended already


async def _run_job(job: _Job) -> None:
    value: Any = None
    error: BaseException | None = None
    fn, args, kwargs = job.fn, job.args, job.kwargs
    job.fn, job.args, job.kwargs = None, (), {}
    try:
        assert fn is not None
        if job.is_async:
            coro: Any = coerce_coroutine(fn, args, "Portal.submit()", kwargs)
            value = await coro
        else:
            if kwargs:
                fn = functools.partial(fn, **kwargs)
            value = await to_thread_run_sync(fn, *args)
            if _is_kernel_drivable(value):  # a regular function that made a coroutine
                value = await value
    except BaseException as exc:  # the job's outcome, Cancelled included
        error = exc
        del exc
    fn = args = kwargs = None  # type: ignore[assignment]
    state = job.state
    assert state is not None
    try:
        state.finish(job, value, error)
    finally:
        # error's traceback holds this frame: drop what would close a cycle.
        del job, state, value, error


def _check_callable(fn: Any) -> None:
    if callable(fn):
        return
    if _is_kernel_drivable(fn):
        fn.close()  # rejected: close it so no "never awaited" warning follows
        raise TypeError(
            "Portal.submit() got a coroutine object; pass the async function and its "
            "arguments, e.g. portal.submit(worker, arg)"
        )
    raise TypeError(f"Portal.submit() needs a function, got {describe(fn)}")


_live: set[_State] = set()
_exit_hook_installed = False
_exit_hook_lock = threading.Lock()


def _shutdown_all_at_exit() -> None:
    """Interpreter exit, before non-daemon threads are joined: shut down every portal
    still running, as ``ThreadPoolExecutor`` does (the jobs submitted are finished)."""
    states = list(_live)
    for state in states:
        state.request_shutdown(cancel_futures=False)
    for state in states:
        state.thread.join()


def _install_exit_hook() -> None:
    global _exit_hook_installed
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # pragma: no cover - CPython >= 3.9 has it
            import atexit

            atexit.register(_shutdown_all_at_exit)
        else:
            try:
                register(_shutdown_all_at_exit)
            except RuntimeError:
                raise RuntimeError(
                    "cannot start a plait.Portal: the interpreter is shutting down"
                ) from None
        _exit_hook_installed = True


@public
class Portal(concurrent.futures.Executor):
    """A plait loop running in a background thread, for synchronous code.

    ``Portal`` is a ``concurrent.futures.Executor``: ``submit(fn, *args, **kwargs)``
    returns a ``concurrent.futures.Future``; async functions run as tasks of the
    portal's loop, regular functions in its worker threads (see the module notes).
    ``map``, ``shutdown(wait=True, *, cancel_futures=False)`` and ``with Portal() as
    portal:`` have the standard meanings. ``run(fn, *args)`` submits and waits.
    Cancelling a returned future cancels its task, even while it runs.

    Any thread may use a portal, several at once. ``name`` names the thread.
    """

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Portal name must be a str, got {describe(name)}")
        _install_exit_hook()
        state = _State(name if name is not None else f"plait.Portal-{next(_names)}")
        self._state = state
        _live.add(state)
        try:
            state.thread.start()
        except BaseException:
            _live.discard(state)
            raise
        state.started.wait()
        if state.loop is None:
            crash, state.crash = state.crash, None
            raise RuntimeError(f"{state.name}: the portal's loop failed to start") from crash
        # Dropping the portal without shutdown(): finish the jobs, end the thread.
        weakref.finalize(self, state.request_shutdown, False)

    def __repr__(self) -> str:
        state = self._state
        status = "shut down" if state.shutdown else "running"
        return f"<plait.Portal {state.name!r} {status} jobs={len(state.jobs)}>"

    @property
    def token(self) -> LoopToken:
        """The portal loop's :class:`plait.lowlevel.LoopToken` (for
        ``plait.from_thread.run(..., token=portal.token)`` and ``run_sync_soon``)."""
        token = self._state.token
        assert token is not None
        return token

    @property
    def name(self) -> str:
        """The portal's name (also its thread's name)."""
        return self._state.name

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Start ``fn(*args, **kwargs)`` on the portal and return its future at once.

        An async ``fn`` runs as a task of the portal's loop; a regular ``fn`` runs in
        one of its worker threads. The future stays pending until the call has ended
        (``running()`` is never True), so ``cancel()`` still works while it runs: it
        cancels the task. ``RuntimeError`` after :meth:`shutdown`."""
        _check_callable(fn)
        state = self._state
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        job = _Job(state, future, fn, args, kwargs)
        with state.lock:
            if state.shutdown:
                job.clear()
                raise RuntimeError(
                    f"cannot schedule new futures after shutdown: {state.name} is shut down"
                )
            loop = state.loop
            assert loop is not None
            state.jobs.add(job)
            future.add_done_callback(job.on_future_done)
            # Under the lock: a job handed over before shutdown() is always queued
            # before the stop request, so it becomes a task before the group closes.
            loop.call_soon_threadsafe(state.start_job, job)
        return future

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the portal, wait for it, return its result or
        raise its exception. If this thread is interrupted while it waits (e.g.
        ``KeyboardInterrupt``), the job is cancelled.

        ``RuntimeError`` if called from a thread running a plait loop (the portal's own
        would wait for itself; another would freeze): there, ``await
        plait.wait_future(portal.submit(fn, *args))`` instead."""
        here = current_loop_or_none()
        if here is not None:
            whose = (
                "the portal's own"
                if threading.current_thread() is self._state.thread
                else ("a plait loop's")
            )
            raise RuntimeError(
                f"Portal.run() blocks its thread until the call finishes, and was called "
                f"from {whose} thread, which it would freeze. In a task, use "
                "'await plait.wait_future(portal.submit(fn, *args))'."
            )
        future = self.submit(fn, *args, **kwargs)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted while waiting: stop the job (a no-op if done)
            raise
        finally:
            del future  # its exception passes through this frame: no cycle

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting jobs and end the portal's loop once its jobs are finished.

        ``cancel_futures=True`` cancels every job not finished, running ones included.
        ``wait=True`` returns only when the portal's thread has ended (every job and
        its worker threads finished). Calling it again does no harm."""
        state = self._state
        if wait and threading.current_thread() is state.thread:
            raise RuntimeError(
                "Portal.shutdown(wait=True) was called from the portal's own thread, which "
                "would wait for itself; use shutdown(wait=False)"
            )
        state.request_shutdown(cancel_futures)
        if wait:
            state.thread.join()
