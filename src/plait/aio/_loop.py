"""``plait.aio.EventLoop``: an asyncio event loop on plait's kernel. Layer L6.

Theory of operation. An ``EventLoop`` owns a :class:`plait.Loop` and runs asyncio's
generic pieces on it: ``asyncio.Future`` and ``asyncio.Task`` (the C versions), and
``asyncio.Handle``/``asyncio.TimerHandle`` for callbacks, which go straight into the
plait loop's ready queue, timer heap and reactor (a plait loop runs any object with
``_run()``, ``cancel()`` and ``_cancelled``). So a callback costs what it costs in
asyncio's own loop, and an asyncio callback, a plait task and a plait callback share
one queue, one clock and one poll.

``run_forever()`` is ``plait.Loop.run_until_complete`` of a *host* task that waits
for ``stop()``; during it asyncio sees this object as the running loop (the plait
loop presents it instead of its guard). The host makes every ``run_forever`` a plait
run: plait code started from asyncio (``run_plait``) runs in the host's task group.
``stop()`` wakes the host: the callbacks of the current iteration run, then
``run_forever`` returns; the callbacks they schedule wait for the next run, as in
asyncio.

Async generators: during ``run_forever`` asyncio-style hooks keep the generators
first iterated by asyncio code (``shutdown_asyncgens`` closes those still alive, and an
abandoned one is closed in a new asyncio task); the plait run inside installs its own
hooks over them, which adopt only generators of plait tasks and hand the others down
to these (see ``plait._core._asyncgens``).

Rejected: subclassing or wrapping asyncio's ``BaseEventLoop`` (its ``_run_once`` and
selector would replace plait's kernel, not run on it).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import concurrent.futures
import contextvars
import errno
import functools
import io
import logging
import os
import signal
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import events, format_helpers
from collections.abc import Callable
from typing import Any

from .._core._cancel import CancelScope
from .._core._kernel import Loop
from .._core._reactor import READABLE, WRITABLE
from .._core._traps import Abort, wait_task_rescheduled
from .._threads import to_thread_run_sync
from .._timeouts import sleep_forever
from .._util import describe
from . import _network, _subprocess
from ._transports import PipeTransport, set_result_unless_cancelled

__all__ = ["EventLoop", "EventLoopPolicy", "install", "new_event_loop", "run"]

logger = logging.getLogger("asyncio")


class _TimerHandle(asyncio.TimerHandle):
    """An asyncio timer handle that remembers its entry in the plait timer heap."""

    __slots__ = ("_entry",)
    _entry: Any  # [when, seq, fn, arg] in the plait timer heap
    _scheduled: bool  # (asyncio's: in the heap, neither fired nor cancelled)


def _made_by_caller(handle: Any) -> None:
    """(debug mode) Make the traceback of where ``handle`` was made end in the caller
    of the loop's method, not in the method (as asyncio's loops do)."""
    made_at = handle._source_traceback
    if made_at:
        del made_at[-1]


def _stop_when_done(future: asyncio.Future[Any]) -> None:
    future.get_loop().stop()


# Typed as Any: mypy would check every method against typeshed's stubs of
# AbstractEventLoop, whose generic signatures (TypeVarTuple) only restate the interface.
_AbstractEventLoop: Any = asyncio.AbstractEventLoop


class EventLoop(_AbstractEventLoop):  # type: ignore[misc]
    """A complete asyncio event loop running on plait's kernel (reactor, timers and the
    thread-safe door of a :class:`plait.Loop`)."""

    def __init__(self) -> None:
        self._setup(Loop(), owner=True)

    @classmethod
    def _on_running(cls, plait_loop: Loop) -> EventLoop:
        """An EventLoop on ``plait_loop``, which runs ``plait.run`` (for
        ``run_asyncio``): asyncio sees it as the running loop until the run ends,
        when a system task winds it down (its asyncio tasks cancelled and awaited, its
        executor shut down)."""
        self = cls.__new__(cls)
        self._setup(plait_loop, owner=False)
        events._set_running_loop(self)  # (the run restores what was there before it)
        self._spawn_plait(self._lifetime(), "plait.aio: the asyncio loop of this run")
        return self

    def _setup(self, plait_loop: Loop, *, owner: bool) -> None:
        self._plait = plait_loop
        self._owner = owner  # closing this closes the plait loop
        plait_loop._asyncio_loop = self
        self._plait.set_exception_handler(self._plait_exception)
        self._ready: collections.deque[Any] = self._plait._ready
        self._timers = self._plait._timers
        self._closed = False
        self._stopping = False
        self._host: Any = None  # the plait task that runs while run_forever() does
        self._thread_id: int | None = None
        self._debug = sys.flags.dev_mode or bool(os.environ.get("PYTHONASYNCIODEBUG"))
        if self._debug:
            plait_loop._callback_watch = self._run_timed
        self.slow_callback_duration = 0.1
        self._exception_handler: Callable[..., object] | None = None
        self._task_factory: Callable[..., Any] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet[Any] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers: dict[int, asyncio.Handle] = {}
        self._signals_before: dict[int, Any] = {}  # the handlers ours replaced
        # socket transports by fd (add_reader() and sock_*() on their fds are refused)
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.is_running() else "idle"
        return f"<plait.aio.EventLoop {state} debug={self._debug}>"

    # -- running and stopping ----------------------------------------------------------

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_closed()
        self._check_running()
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )
        self._thread_id = threading.get_ident()
        try:
            self._plait.run_until_complete(self._serve)
        finally:
            self._stopping = False
            self._thread_id = None
            sys.set_asyncgen_hooks(*hooks)

    async def _serve(self) -> None:
        """The host task: wait until stop() is called (at once if it already was)."""
        if self._stopping:
            return

        def abort(_: Any) -> Abort:
            return Abort.SUCCEEDED

        self._host = self._plait._current_task
        try:
            await wait_task_rescheduled(abort)
        finally:
            self._host = None

    def run_until_complete(self, future: Any) -> Any:
        """Run until ``future`` (a future, task or coroutine) is done; return its result
        or raise its exception."""
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        future = asyncio.ensure_future(future, loop=self)
        if new_task:
            # An exception raised here is the caller's to see: no "never retrieved".
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()  # (retrieved: the caller sees the error raised)
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def stop(self) -> None:
        """Make ``run_forever`` return once the callbacks of this iteration have run."""
        self._stopping = True
        host = self._host
        if host is not None and host._abort_fn is not None:
            self._host = None
            self._plait._kernel_reschedule(host, None, None)

    def is_running(self) -> bool:
        return self._plait.is_running()

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the loop: drop pending callbacks, shut the default executor down
        without waiting. Not allowed while running; idempotent."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        self._release()

    def _release(self) -> None:
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._closed = True
        if threading.current_thread() is threading.main_thread():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        executor, self._default_executor = self._default_executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        self._plait._asyncio_loop = None  # (no cycle left between the two loops)
        self._plait._callback_watch = None
        self._plait.set_exception_handler(None)
        if self._owner:
            self._plait.close()

    # -- plait tasks -------------------------------------------------------------------

    def _spawn_plait(self, coro: Any, name: Any) -> None:
        """Start ``coro`` as a plait system task of the run (cancelled when the run
        ends: when ``run_forever`` returns, or the main task of ``plait.run`` ends)."""
        plait_loop = self._plait
        if plait_loop._system_group is None or plait_loop._system_scope is None:
            raise RuntimeError(
                "plait.aio: plait code can only start while the loop runs (inside "
                "run_forever, run_until_complete or plait.run)"
            )
        if not isinstance(name, str):
            name = getattr(name, "__qualname__", None) or repr(name)
        plait_loop._spawn(coro, plait_loop._system_group, plait_loop._system_scope, name)

    async def _lifetime(self) -> None:
        """System task of an EventLoop put on a running ``plait.run``."""
        try:
            await sleep_forever()
        finally:
            with CancelScope(shield=True):
                await self._wind_down()

    async def _wind_down(self) -> None:
        pending = [task for task in asyncio.all_tasks(self) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            host = self._plait._current_task
            assert host is not None  # (a task: this one)
            left = [len(pending)]

            def one_done(_: Any) -> None:
                left[0] -= 1
                if left[0] == 0:
                    self._plait._kernel_reschedule(host, None, None)

            for task in pending:
                task.add_done_callback(one_done)
            await wait_task_rescheduled(lambda _: Abort.FAILED)
            for task in pending:
                if not task.cancelled() and task.exception() is not None:
                    self.call_exception_handler(
                        {
                            "message": "unhandled exception during plait.run() shutdown",
                            "exception": task.exception(),
                            "task": task,
                        }
                    )
        executor, self._default_executor = self._default_executor, None
        if executor is not None:
            await to_thread_run_sync(executor.shutdown)
        self._release()

    async def shutdown_asyncgens(self) -> None:
        """Close the async generators of asyncio code that are still alive."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(
            *[agen.aclose() for agen in closing], return_exceptions=True
        )
        for result, agen in zip(results, closing, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of asynchronous "
                        f"generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                "loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Shut the default executor down and wait for its threads (up to ``timeout``
        seconds, then warn and stop waiting)."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._shutdown_executor, args=(executor, future))
        thread.start()
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            warnings.warn(
                f"The executor did not finish joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    def _shutdown_executor(
        self, executor: concurrent.futures.Executor, future: asyncio.Future[None]
    ) -> None:
        try:
            executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(set_result_unless_cancelled, future, None)
        except Exception as exc:  # pragma: no cover - shutdown() does not raise
            if not self.is_closed():
                self.call_soon_threadsafe(future.set_exception, exc)

    # -- callbacks and timers ----------------------------------------------------------

    def time(self) -> float:
        return self._plait.time()

    def _check_callback(self, callback: Any, method: str) -> None:
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _check_thread(self) -> None:
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def call_soon(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_soon")
        handle = asyncio.Handle(callback, args, self, context)
        if self._debug:
            _made_by_caller(handle)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self._check_closed()
        if self._debug:
            self._check_callback(callback, "call_soon_threadsafe")
        handle = asyncio.Handle(callback, args, self, context)
        if self._debug:
            _made_by_caller(handle)
        # Straight into the ready queue (a deque: appending is thread-safe), so that
        # it keeps its place among call_soon()s of the loop's own thread; then wake the
        # loop if it polls.
        self._ready.append(handle)
        self._plait._wakeup.wake()
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if delay is None:
            raise TypeError("delay must not be None")
        timer = self.call_at(self.time() + delay, callback, *args, context=context)
        if self._debug:
            _made_by_caller(timer)
        return timer

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _TimerHandle(when, callback, args, self, context)
        if self._debug:
            _made_by_caller(timer)
        timer._entry = self._timers.push(when, self._timer_due, timer)
        timer._scheduled = True
        return timer

    def _timer_due(self, timer: _TimerHandle) -> None:
        timer._scheduled = False
        self._ready.append(timer)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        # (asyncio.TimerHandle.cancel() calls this)
        if isinstance(handle, _TimerHandle) and handle._scheduled:
            self._timers.cancel(handle._entry)
            handle._scheduled = False

    # -- futures and tasks -------------------------------------------------------------

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: collections.abc.Coroutine[Any, Any, Any] | collections.abc.Generator[Any, None, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        self._check_closed()
        if self._task_factory is None:
            task = asyncio.Task(coro, loop=self, name=name, context=context, **kwargs)
            created_at = getattr(task, "_source_traceback", None)
            if created_at:  # (debug mode) where the caller created it, not here
                del created_at[-1]
            return task
        if context is None:
            task = self._task_factory(self, coro, **kwargs)
        else:
            task = self._task_factory(self, coro, context=context, **kwargs)
        if name is not None:
            task.set_name(name)
        result: asyncio.Task[Any] = task
        return result

    def set_task_factory(self, factory: Callable[..., Any] | None) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> Callable[..., Any] | None:
        return self._task_factory

    # -- errors and debugging ----------------------------------------------------------

    def get_exception_handler(self) -> Callable[..., object] | None:
        return self._exception_handler

    def set_exception_handler(self, handler: Callable[..., object] | None) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log ``context`` (its message, exception and other entries) to the
        ``asyncio`` logger, as asyncio's own loops do."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info: Any = False
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key in ("source_traceback", "handle_traceback"):
                what = "Object" if key == "source_traceback" else "Handle"
                where = "".join(traceback.format_list(value)).rstrip()
                value = f"{what} created at (most recent call last):\n{where}"
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            # In the context of what failed (its task, future or handle), as asyncio's
            # loops do (3.12+): a handler reading context variables sees its values.
            thing = context.get("task")
            if thing is None:
                thing = context.get("future")  # (a Task, sometimes)
            if thing is None:
                thing = context.get("handle")
            get_context = getattr(thing, "get_context", None)
            ctx = get_context() if get_context is not None else None
            if isinstance(ctx, contextvars.Context):
                ctx.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )

    def _callback_failed(self, handle: asyncio.Handle, exc: BaseException) -> None:
        # The plait loop runs asyncio's handles itself (Handle._run inlined); an error
        # is reported with the context asyncio's Handle._run would give.
        callback, args = handle._callback, handle._args  # type: ignore[attr-defined]
        if sys.version_info >= (3, 13):
            where = format_helpers._format_callback_source(callback, args, debug=self._debug)
        else:
            where = format_helpers._format_callback_source(callback, args)
        context: dict[str, Any] = {
            "message": f"Exception in callback {where}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:  # type: ignore[attr-defined]
            context["source_traceback"] = handle._source_traceback  # type: ignore[attr-defined]
        self.call_exception_handler(context)

    def _plait_exception(self, loop: Loop, context: dict[str, Any]) -> None:
        # errors of plait callbacks on the same loop go where asyncio's go
        self.call_exception_handler(context)

    def get_debug(self) -> bool:
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        self._debug = bool(enabled)
        self._plait._callback_watch = self._run_timed if self._debug else None

    def _run_timed(self, handle: Any) -> None:
        """Debug mode: run a ready callback, and log it if it took
        ``slow_callback_duration`` seconds or more, as asyncio's loop does."""
        start = self.time()
        try:
            if handle._context is None:
                handle._callback(*handle._args)
            else:
                handle._context.run(handle._callback, *handle._args)
        finally:
            took = self.time() - start
            if took >= self.slow_callback_duration:
                logger.warning("Executing %s took %.3f seconds", _describe_handle(handle), took)
            # Python 3.12+: the frames the callback ran (a task's coroutine, kept by its
            # exception's traceback) link back here; holding the handle (and through it
            # the task) would make a cycle, and the task would not be freed -- nor its
            # "exception was never retrieved" reported -- until the cyclic GC runs.
            handle = None

    # -- file descriptors --------------------------------------------------------------

    def _fd_handle(
        self, which: int, fd: Any, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self._check_closed()
        if self._debug:
            self._check_callback(callback, "add_reader" if which == READABLE else "add_writer")
        fileno = _fileno(fd)
        self._check_no_transport(fd, fileno)
        self._plait._set_fd_handle(which, fileno, asyncio.Handle(callback, args, self, None))

    def _check_no_transport(self, fd: Any, fileno: int) -> None:
        """Refuse to watch (or stop watching) the socket of an open transport: its
        callbacks would replace the transport's (as asyncio's loops refuse)."""
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(
                f"File descriptor {fd!r} is used by transport {transport!r}: close the "
                "transport first, or read and write through it"
            )

    # (for transports: fds known to be valid, callbacks known to be right)
    def _add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self._plait._set_fd_handle(READABLE, fd, asyncio.Handle(callback, (), self, None))

    def _add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self._plait._set_fd_handle(WRITABLE, fd, asyncio.Handle(callback, (), self, None))

    def _remove_reader(self, fd: int) -> bool:
        return self._plait._clear_fd_callback(READABLE, fd)

    def _remove_writer(self, fd: int) -> bool:
        return self._plait._clear_fd_callback(WRITABLE, fd)

    def _forget_fd(self, fd: int) -> None:
        """``fd`` is about to be closed: drop its callbacks and registration."""
        if not self._plait.is_closed():
            self._plait._notify_closing(fd)

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._fd_handle(READABLE, fd, callback, args)

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._fd_handle(WRITABLE, fd, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        fileno = _fileno(fd)
        self._check_no_transport(fd, fileno)
        if self._closed:
            return False
        return self._plait._clear_fd_callback(READABLE, fileno)

    def remove_writer(self, fd: Any) -> bool:
        fileno = _fileno(fd)
        self._check_no_transport(fd, fileno)
        if self._closed:
            return False
        return self._plait._clear_fd_callback(WRITABLE, fileno)

    # -- executors ---------------------------------------------------------------------

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: Any) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError(
                f"executor must be a concurrent.futures.ThreadPoolExecutor, got "
                f"{describe(executor)}"
            )
        self._default_executor = executor

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        infos: list[Any] = await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        names: tuple[str, str] = await self.run_in_executor(
            None, socket.getnameinfo, sockaddr, flags
        )
        return names

    # -- signals -----------------------------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` in the loop whenever signal ``sig`` arrives (main
        thread only; replaces this loop's earlier handler for ``sig``)."""
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        _check_signal(sig)
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, None)
        door = self._plait._wakeup

        def on_signal(signum: int, frame: Any) -> None:
            # Between any two bytecodes of the main thread: only atomic work here.
            door.queue.append(handle)
            door.wake_from_signal()

        try:
            previous = signal.signal(sig, on_signal)
        except ValueError as exc:  # not the main thread
            raise RuntimeError(
                f"add_signal_handler() works only in the main thread: {exc}"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if sig not in self._signal_handlers:
            self._signals_before[sig] = previous
            self._plait._external_wakers += 1  # a signal may wake it: no plait.Deadlock
        self._signal_handlers[sig] = handle
        signal.siginterrupt(sig, False)  # (interrupted system calls are restarted)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove this loop's handler for ``sig``; True if there was one."""
        _check_signal(sig)
        handle = self._signal_handlers.pop(sig, None)
        if handle is None:
            return False
        self._plait._external_wakers -= 1
        handle.cancel()
        previous = self._signals_before.pop(sig, None)
        if previous is None:
            previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, previous)
        except ValueError as exc:
            raise RuntimeError(
                f"remove_signal_handler() works only in the main thread: {exc}"
            ) from None
        return True

    # -- connections and servers (see _network.py) ------------------------------------

    async def create_connection(
        self, protocol_factory: Callable[[], Any], host: Any = None, port: Any = None, **kw: Any
    ) -> tuple[Any, Any]:
        return await _network.create_connection(self, protocol_factory, host, port, **kw)

    async def create_server(
        self, protocol_factory: Callable[[], Any], host: Any = None, port: Any = None, **kw: Any
    ) -> _network.Server:
        return await _network.create_server(self, protocol_factory, host, port, **kw)

    async def create_unix_connection(
        self, protocol_factory: Callable[[], Any], path: Any = None, **kw: Any
    ) -> tuple[Any, Any]:
        return await _network.create_unix_connection(self, protocol_factory, path, **kw)

    async def create_unix_server(
        self, protocol_factory: Callable[[], Any], path: Any = None, **kw: Any
    ) -> _network.Server:
        return await _network.create_unix_server(self, protocol_factory, path, **kw)

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: Any = None,
        remote_addr: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        return await _network.create_datagram_endpoint(
            self, protocol_factory, local_addr, remote_addr, **kw
        )

    async def connect_accepted_socket(
        self, protocol_factory: Callable[[], Any], sock: socket.socket, **kw: Any
    ) -> tuple[Any, Any]:
        return await _network.connect_accepted_socket(self, protocol_factory, sock, **kw)

    async def start_tls(self, transport: Any, protocol: Any, sslcontext: Any, **kw: Any) -> Any:
        return await _network.start_tls(self, transport, protocol, sslcontext, **kw)

    async def connect_read_pipe(
        self, protocol_factory: Callable[[], Any], pipe: Any
    ) -> tuple[Any, Any]:
        """Read from ``pipe`` (a file object of a pipe, socket or character device)."""
        return await self._connect_pipe(protocol_factory, pipe, readable=True)

    async def connect_write_pipe(
        self, protocol_factory: Callable[[], Any], pipe: Any
    ) -> tuple[Any, Any]:
        """Write to ``pipe`` (a file object of a pipe, socket or character device)."""
        return await self._connect_pipe(protocol_factory, pipe, readable=False)

    async def _connect_pipe(
        self, protocol_factory: Callable[[], Any], pipe: Any, *, readable: bool
    ) -> tuple[Any, Any]:
        self._check_closed()
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = PipeTransport(self, pipe, protocol, readable=readable, waiter=waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def subprocess_exec(
        self, protocol_factory: Callable[[], Any], program: Any, *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        return await _subprocess.subprocess_exec(self, protocol_factory, program, *args, **kwargs)

    async def subprocess_shell(
        self, protocol_factory: Callable[[], Any], cmd: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        return await _subprocess.subprocess_shell(self, protocol_factory, cmd, **kwargs)

    async def sendfile(
        self,
        transport: Any,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Send ``file`` on ``transport``: with ``os.sendfile`` on a plain socket
        transport, else (if ``fallback``) by reading and writing with flow control."""
        return await _network.sendfile(self, transport, file, offset, count, fallback=fallback)

    # -- non-blocking sockets ----------------------------------------------------------

    async def _sock_io(
        self, which: int, sock: socket.socket, attempt: Callable[[], Any], *, now: bool = True
    ) -> Any:
        """``attempt()`` now (unless ``now`` is false), and again each time ``sock`` is
        ready for ``which`` while it raises ``BlockingIOError``; its result, or what
        else it raised."""
        _check_nonblocking(sock)
        if now:
            try:
                return attempt()
            except (BlockingIOError, InterruptedError):
                pass
        future = self.create_future()

        def ready() -> None:
            if future.done():
                return
            try:
                result = attempt()
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        fd = sock.fileno()
        self._check_closed()
        self._check_no_transport(sock, fd)
        handle = asyncio.Handle(ready, (), self, None)
        self._plait._set_fd_handle(which, fd, handle)
        try:
            return await future
        finally:
            # (unless a later sock_* call on this fd replaced ours meanwhile, which
            # cancelled ours: as when a cancelled sock_recv() is followed at once by
            # another, whose reader must stay)
            if not handle.cancelled():
                self._plait._clear_fd_callback(which, fd)

    async def sock_recv(self, sock: socket.socket, nbytes: int) -> bytes:
        """Receive up to ``nbytes`` from the non-blocking socket ``sock``."""
        data: bytes = await self._sock_io(READABLE, sock, lambda: sock.recv(nbytes))
        return data

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        n: int = await self._sock_io(READABLE, sock, lambda: sock.recv_into(buf))
        return n

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        got: tuple[bytes, Any] = await self._sock_io(
            READABLE, sock, lambda: sock.recvfrom(bufsize)
        )
        return got

    async def sock_recvfrom_into(
        self, sock: socket.socket, buf: Any, nbytes: int = 0
    ) -> tuple[int, Any]:
        nbytes = nbytes or len(buf)
        got: tuple[int, Any] = await self._sock_io(
            READABLE, sock, lambda: sock.recvfrom_into(buf, nbytes)
        )
        return got

    async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> int:
        n: int = await self._sock_io(WRITABLE, sock, lambda: sock.sendto(data, address))
        return n

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        """Send all of ``data`` (bytes-like) on the non-blocking socket ``sock``."""
        view = memoryview(data).cast("B")
        sent = [0]

        def attempt() -> None:
            while sent[0] < len(view):
                sent[0] += sock.send(view[sent[0] :])  # BlockingIOError: wait, go on

        await self._sock_io(WRITABLE, sock, attempt)

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """Connect the non-blocking socket ``sock`` to ``address`` (a host name is
        resolved first)."""
        _check_nonblocking(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_numeric(address):
            infos = await self.getaddrinfo(
                address[0], address[1], family=sock.family, type=sock.type, proto=sock.proto
            )
            if not infos:
                raise OSError(f"getaddrinfo({address[0]!r}) returned empty list")
            address = infos[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def attempt() -> None:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
                raise BlockingIOError
            if error != 0:
                raise OSError(error, f"Connect call failed {address}")

        await self._sock_io(WRITABLE, sock, attempt, now=False)

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Accept a connection on the listening non-blocking ``sock``; the new socket
        is non-blocking too."""

        def attempt() -> tuple[socket.socket, Any]:
            conn, address = sock.accept()
            conn.setblocking(False)
            return conn, address

        accepted: tuple[socket.socket, Any] = await self._sock_io(READABLE, sock, attempt)
        return accepted

    async def sock_sendfile(
        self,
        sock: socket.socket,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Send ``count`` bytes (all, if None) of ``file`` from ``offset`` on ``sock``
        with ``os.sendfile``, or by reading and sending if that is not possible and
        ``fallback`` allows; returns the bytes sent."""
        _check_nonblocking(sock)
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        _network.check_sendfile(file, offset, count)
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            fileno = None
        if fileno is None or not hasattr(os, "sendfile"):
            if not fallback:
                raise asyncio.SendfileNotAvailableError(
                    "os.sendfile() cannot send this file (it has no file descriptor)"
                )
            return await _network.copy_file(
                self, file, offset, count, functools.partial(self.sock_sendall, sock)
            )
        total = [0]

        def attempt() -> int:
            while count is None or total[0] < count:
                chunk = 1 << 20 if count is None else min(count - total[0], 1 << 20)
                sent = os.sendfile(sock.fileno(), fileno, offset + total[0], chunk)
                if sent == 0:
                    break  # end of file
                total[0] += sent
            return total[0]

        try:
            return int(await self._sock_io(WRITABLE, sock, attempt))
        finally:
            if total[0] > 0:
                file.seek(offset + total[0])


def _check_signal(sig: Any) -> None:
    if not isinstance(sig, int):
        raise TypeError(f"sig must be an int, not {sig!r}")
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}")


def _check_nonblocking(sock: Any) -> None:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"a socket.socket was expected, got {describe(sock)}")
    if sock.gettimeout() != 0:
        raise ValueError(
            "the socket must be non-blocking: call sock.setblocking(False) before "
            "passing it to the loop"
        )


def _is_numeric(address: Any) -> bool:
    host = address[0]
    if not isinstance(host, str):
        return True
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.partition("%")[0])
        except OSError:
            continue
        return True
    return False


def _fileno(fd: Any) -> int:
    if isinstance(fd, int):
        result = fd
    else:
        try:
            result = int(fd.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fd!r}") from None
    if result < 0:
        raise ValueError(f"Invalid file descriptor: {result}")
    return result


def new_event_loop() -> EventLoop:
    """A new :class:`EventLoop` (for ``asyncio.run(..., loop_factory=...)`` and
    ``asyncio.Runner``)."""
    return EventLoop()


class EventLoopPolicy(asyncio.events.BaseDefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are :class:`EventLoop`:
    ``asyncio.set_event_loop_policy(plait.aio.EventLoopPolicy())`` (or
    :func:`install`)."""

    _loop_factory = EventLoop

    # Child watchers (Python < 3.14; deprecated from 3.12): asyncio's own Unix loops
    # learn that a subprocess exited from the watcher the policy holds. plait's loop
    # watches its subprocesses itself (a pidfd, or a waitid thread) and never asks the
    # watcher; the policy keeps one, as asyncio's does, for code that sets or gets it.
    # (A watcher that reaps every child, asyncio.FastChildWatcher, takes the exit
    # status of plait's subprocesses too: do not use one with plait's loop.)
    _watcher: Any = None

    def get_child_watcher(self) -> Any:
        _child_watcher_deprecated("get_child_watcher")
        if self._watcher is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._watcher = asyncio.ThreadedChildWatcher()  # type: ignore[attr-defined,unused-ignore]
        return self._watcher

    def set_child_watcher(self, watcher: Any) -> None:
        if watcher is not None and not isinstance(
            watcher,
            asyncio.AbstractChildWatcher,  # type: ignore[attr-defined,unused-ignore]
        ):
            raise TypeError(f"expected an asyncio.AbstractChildWatcher or None, got {watcher!r}")
        if self._watcher is not None:
            self._watcher.close()
        self._watcher = watcher
        _child_watcher_deprecated("set_child_watcher")

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        super().set_event_loop(loop)
        # as asyncio's Unix policy: the watcher follows the main thread's loop
        if self._watcher is not None and threading.current_thread() is threading.main_thread():
            self._watcher.attach_loop(loop)


def _describe_handle(handle: Any) -> str:
    # as asyncio's loop says it: a task's step is shown as the task
    owner = getattr(handle._callback, "__self__", None)
    return repr(owner) if isinstance(owner, asyncio.Task) else str(handle)


def _child_watcher_deprecated(name: str) -> None:
    if sys.version_info >= (3, 12):
        warnings.warn(
            f"{name!r} is deprecated as of Python 3.12 and will be removed in Python 3.14.",
            DeprecationWarning,
            stacklevel=3,
        )


def install() -> None:
    """Make :class:`EventLoop` asyncio's loop in this process: set
    :class:`EventLoopPolicy` as the event loop policy."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: collections.abc.Coroutine[Any, Any, Any], *, debug: bool | None = None) -> Any:
    """``asyncio.run(main)`` on a new :class:`EventLoop`: run the coroutine, then
    cancel the tasks left, close the async generators, shut the default executor down
    and close the loop."""
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
