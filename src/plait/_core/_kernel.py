"""The loop: callbacks, timers, fd readiness, other threads, and the task kernel.

Layer L3. This module is longer than the house norm because :meth:`Loop._run_once` and
the task step it inlines are the hot path: splitting them into more functions costs a
Python call per task step, which is most of what a checkpoint costs.

Theory of operation. One iteration (``_run_once``):

1. Decide how long the OS poll may block: 0 if anything is runnable; else until the
   next timer, or until an idleness cushion (``wait_all_tasks_blocked``, MockClock
   autojump) expires.
2. Poll the reactor. Ready callback fds queue their handle; a task waiting on an fd is
   rescheduled. Items other threads sent through the wake-up channel are queued.
3. Fire due timers (a callback handle is queued; a sleeping task is rescheduled; a
   cancel scope's deadline cancels it).
4. If the poll was an idleness wait and nothing became runnable, wake the idle waiters
   with the smallest cushion, or jump the mock clock to the next deadline.
5. Run the callbacks that were ready at the start of this step, then the tasks that
   were ready at the start of this step. Work made ready meanwhile waits for the next
   iteration, so a task that checkpoints in a loop cannot starve timers or I/O.

Tasks and callbacks are kept in two queues: a task step is inlined here (no handle per
wake-up), a callback is a :class:`Handle`.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import math
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .._exceptions import Cancelled, ClosedResourceError, Deadlock
from .._util import check_deadline, check_seconds, describe
from ._asyncgens import AsyncGenHooks
from ._cancel import CancelScope
from ._clock import Clock, SystemClock
from ._handles import Handle, TimerHandle
from ._instrument import Instrument, Instruments
from ._interrupt import install_sigint_handler
from ._local import run_state
from ._reactor import READABLE, WRITABLE, Reactor, _fileno
from ._schedule import SchedulePolicy, check_schedule
from ._slowstep import WATCHDOG_NAME
from ._spawn import coerce_coroutine
from ._task import Task
from ._thread_cache import IDLE_WORKER_NAME, jobs_in_flight
from ._timers import TimerQueue
from ._traps import _SCHEDULE_POINT, Abort, RaiseCancelT, _Park
from ._traps import checkpoint as _checkpoint
from ._wakeup import WakeupChannel

__all__ = ["Loop"]

logger = logging.getLogger("plait")

ExceptionHandler = Callable[["Loop", dict[str, Any]], object]

_WAKEUP = object()  # reactor marker for the wake-up channel's fd

# A task's _next_value while it is ready after a checkpoint. Every path that makes a
# task ready sets _next_value (or _next_exc, which wins), so a stale marker is harmless.
_AT_CHECKPOINT = object()


def _raise_cancel() -> Any:
    raise Cancelled


# plait's monitor thread (plait/_monitor.py): it calls in only to read the task tree
MONITOR_NAME = "plait monitor"
# plait's own threads that never wake a task
_QUIET_THREADS = frozenset({IDLE_WORKER_NAME, WATCHDOG_NAME, MONITOR_NAME})


class _RootGroup:
    """Owner of the main task and of system tasks; ends the run on a system crash."""

    __slots__ = ("crashes", "loop", "system")

    def __init__(self, loop: Loop, system: bool) -> None:
        self.loop = loop
        self.system = system
        self.crashes: list[BaseException] = []

    def _kernel_child_exited(self, task: Task, exc: BaseException | None) -> None:
        if exc is None or not self.system:
            return
        assert self.loop._system_scope is not None
        if type(exc) is Cancelled and self.loop._system_scope._eff:
            return
        self.crash(exc)

    def crash(self, exc: BaseException) -> None:
        """End the run: cancel every task; ``plait.run`` raises ``exc`` at the end."""
        self.crashes.append(exc)
        assert self.loop._root_scope is not None
        self.loop._root_scope.cancel()


def _crash_error(main_error: BaseException | None, crashes: list[BaseException]) -> BaseException:
    """What ``plait.run`` raises when system tasks crashed: KeyboardInterrupt or
    SystemExit as they are; one crash as it is; else a group. The main task's
    Cancelled is dropped: the crash caused it."""
    for exc in crashes:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return exc
    errors = (
        crashes if type(main_error) is Cancelled or main_error is None else [main_error, *crashes]
    )
    if len(errors) == 1:
        return errors[0]
    return BaseExceptionGroup("plait system task(s) crashed", errors)


class _AsyncioGuard:
    """Stands in for asyncio's running loop inside ``plait.run``, so asyncio calls fail
    with an error that says what to do instead of "no running event loop"."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"asyncio was used inside plait.run() (asyncio loop method {name!r}): plait's "
            "loop is not an asyncio event loop. Use plait's own primitives (plait.sleep, "
            "plait.Event, plait.TaskGroup, ...), or run asyncio code through plait.aio."
        )

    def __repr__(self) -> str:
        return "<plait: asyncio is not available inside plait.run()>"


def _default_exception_handler(loop: Loop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    logger.error(
        "%s",
        context.get("message", "Unhandled error in a plait callback"),
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
    )


class Loop:
    """plait's event loop: callbacks, timers, fd readiness and thread-safe calls.

    It is usable on its own, without coroutines (``call_soon``, ``call_later``,
    ``add_reader`` ... then ``run()``), and it is the kernel that ``plait.run`` drives.
    A callback that raises is reported to the exception handler and the loop goes on.
    Only ``call_soon_threadsafe`` may be called from other threads.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        instruments: Iterable[Instrument] = (),
        schedule: SchedulePolicy | None = None,
    ) -> None:
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise TypeError(
                f"clock must be a plait clock (plait.testing.MockClock or a "
                f"plait.lowlevel.Clock subclass), got {describe(clock)}"
            )
        self._clock = clock
        self._instruments = Instruments(instruments)
        self._schedule = check_schedule(schedule)
        if self._schedule is not None:
            self._schedule._begin()
        self._ready: deque[Handle] = deque()
        self._runq: deque[Task] = deque()
        self._timers = TimerQueue()
        self._reactor = Reactor()
        self._wakeup = WakeupChannel()
        self._reactor.set(self._wakeup.fileno(), READABLE, _WAKEUP)
        self._current_task: Task | None = None
        # Invariant: _ntasks == number of tasks spawned and not yet exited.
        self._ntasks = 0
        # fds with a callback reader/writer, and outside work (threads, ...) in flight.
        self._nfd_callbacks = 0
        self._keepalive = 0
        # Things outside the kernel's sight that may wake a task (open signal receivers,
        # asyncio signal handlers): while any is there, no deadlock is declared.
        self._external_wakers = 0
        # None, or a function that runs a ready callback in its stead (plait.aio's
        # debug mode: it times each one).
        self._callback_watch: Callable[[Any], None] | None = None
        # The Deadlock found in this run, raised when the run ends (see _kernel_deadlock).
        self._deadlock: Deadlock | None = None
        self._idle_waiters: list[list[Any]] = []
        self._idle_seq = itertools.count()
        self._exception_handler: ExceptionHandler | None = None
        self._stopping = False
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._root_scope: CancelScope | None = None
        self._system_scope: CancelScope | None = None
        self._system_group: _RootGroup | None = None
        # Ctrl-C: set by the SIGINT handler when it fires inside plait's own code.
        self._ki_pending = False
        # Created on first use by plait.to_thread (a CapacityLimiter; L6 owns it).
        self._default_thread_limiter: Any = None
        self._default_process_pool: Any = None  # plait.to_process's, made on first use
        # What asyncio sees as the running loop during a run: a plait.aio.EventLoop on
        # this loop, or None for a guard whose every method explains the mistake.
        self._asyncio_loop: Any = None
        self._ki: KeyboardInterrupt | None = None
        # A second Ctrl-C came during the run: raise KeyboardInterrupt, run no more tasks.
        self._ki_forced = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._running else "idle")
        return f"<plait.Loop {state} tasks={self._ntasks} clock={self._clock!r}>"

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Loop:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the loop's OS resources. Idempotent; not allowed while running."""
        if self._running:
            raise RuntimeError("Loop.close() called while the loop is running; stop() it first")
        if self._closed:
            return
        self._closed = True
        self._reactor.close()
        self._wakeup.close()
        self._ready.clear()
        self._runq.clear()

    def stop(self) -> None:
        """Make ``run()`` return after the current iteration."""
        self._stopping = True
        if self._running and threading.current_thread() is not self._thread:
            self._wakeup.wake()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this plait.Loop is closed; create a new Loop()")

    def _enter_run(self, what: str) -> None:
        self._check_open()
        if self._running:
            raise RuntimeError(f"{what}: this loop is already running")
        other = run_state.loop
        if other is not None:
            task = other._current_task
            where = f" (called from task {task.name!r})" if task is not None else ""
            raise RuntimeError(
                f"{what} cannot start a plait loop inside a running plait loop{where}. "
                "Await the async function directly, or spawn it in a TaskGroup."
            )
        self._running = True
        self._stopping = False
        self._thread = threading.current_thread()
        run_state.loop = self
        self._clock.start_clock()
        self._asyncio_saved = self._install_asyncio_guard()
        if self._instruments.before_run:
            self._instruments.call(self._instruments.before_run)

    def _exit_run(self) -> None:
        if self._instruments.after_run:
            self._instruments.call(self._instruments.after_run)
        self._restore_asyncio(self._asyncio_saved)
        run_state.loop = None
        self._running = False
        self._thread = None
        self._current_task = None

    def _install_asyncio_guard(self) -> Any:
        events = sys.modules.get("asyncio.events")
        if events is None:
            return None
        saved = events._get_running_loop()
        events._set_running_loop(self._asyncio_loop or _AsyncioGuard())
        return (events, saved)

    @staticmethod
    def _restore_asyncio(saved: Any) -> None:
        if saved is not None:
            saved[0]._set_running_loop(saved[1])

    # -- callbacks ---------------------------------------------------------------------

    def time(self) -> float:
        """The loop's current time, from its clock (monotonic seconds)."""
        return self._clock.current_time()

    def call_soon(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """Run ``callback(*args)`` on the next iteration, after those queued before it."""
        if not callable(callback):
            raise TypeError(f"call_soon() needs a callable, got {describe(callback)}")
        self._check_open()
        handle = Handle(callback, args, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """Like :meth:`call_soon`, from any thread; wakes the loop if it is waiting."""
        if not callable(callback):
            raise TypeError(f"call_soon_threadsafe() needs a callable, got {describe(callback)}")
        self._check_open()
        handle = Handle(callback, args, context)
        self._wakeup.send(handle)
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds (>= 0)."""
        delay = check_seconds(delay, "call_later() delay")
        return self.call_at(self._clock.current_time() + delay, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> TimerHandle:
        """Run ``callback(*args)`` at loop time ``when`` (see :meth:`time`).

        Callbacks due at the same time run in the order they were scheduled.
        """
        when = check_deadline(when, "call_at() time")
        if not callable(callback):
            raise TypeError(f"call_at() needs a callable, got {describe(callback)}")
        self._check_open()
        handle = TimerHandle(when, callback, args, context, self)
        if when != math.inf:
            handle._entry = self._timers.push(when, self._ready.append, handle)
        return handle

    def set_exception_handler(self, handler: ExceptionHandler | None) -> None:
        """``handler(loop, context)`` receives errors raised by callbacks; ``context`` has
        ``message``, ``exception`` and ``handle``. ``None`` restores the default (log)."""
        if handler is not None and not callable(handler):
            raise TypeError(f"exception handler must be callable or None, got {describe(handler)}")
        self._exception_handler = handler

    def get_exception_handler(self) -> ExceptionHandler | None:
        return self._exception_handler

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Report an error through the handler; an error in the handler is logged."""
        handler = self._exception_handler or _default_exception_handler
        try:
            handler(self, context)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            logger.exception("Error in the plait exception handler")

    def _callback_failed(self, handle: Any, exc: BaseException) -> None:
        if not isinstance(handle, Handle) and self._asyncio_loop is not None:
            # an asyncio handle (plait.aio): reported as asyncio reports it
            self._asyncio_loop._callback_failed(handle, exc)
            return
        self.call_exception_handler(
            {"message": f"Exception in callback {handle!r}", "exception": exc, "handle": handle}
        )

    # -- file descriptors --------------------------------------------------------------

    def _set_fd_callback(
        self, which: int, fd: Any, callback: Callable[..., object], args: Any
    ) -> None:
        if not callable(callback):
            raise TypeError(f"fd callback must be callable, got {describe(callback)}")
        self._set_fd_handle(which, fd, Handle(callback, args, None))

    def _set_fd_handle(self, which: int, fd: Any, handle: Any) -> None:
        """Run ``handle`` (``_run()``, ``cancel()``, ``_cancelled``: a plait or an
        asyncio handle) whenever ``fd`` is ready for ``which``, instead of the callback
        registered before (if any)."""
        self._check_open()
        old = self._reactor.get(fd, which)
        if isinstance(old, Task):
            raise RuntimeError(
                f"fd {fd!r} is already awaited by task {old.name!r}; one fd can have one "
                "reader and one writer"
            )
        if old is _WAKEUP:
            raise RuntimeError(f"fd {fd!r} is the loop's own wake-up socket")
        self._reactor.set(fd, which, handle)
        if old is None:
            self._nfd_callbacks += 1
        else:
            old.cancel()  # it may be queued by this very poll: it must not run

    def _clear_fd_callback(self, which: int, fd: Any) -> bool:
        old = self._reactor.get(fd, which)
        if old is None or old is _WAKEUP or isinstance(old, Task):
            return False
        self._nfd_callbacks -= 1
        old.cancel()  # it may be queued by this very poll: it must not run
        self._reactor.clear(fd, which, eager=True)
        return True

    def _notify_closing(self, fd: Any) -> None:
        """``fd`` is about to be closed: wake its waiting tasks with
        ClosedResourceError, drop its callbacks, and unregister it from the OS."""
        for which in (READABLE, WRITABLE):
            old = self._reactor.get(fd, which)
            if isinstance(old, Task):
                self._reactor.clear(fd, which)
                if old._abort_fn is not None:
                    self._kernel_reschedule(
                        old,
                        None,
                        ClosedResourceError(f"fd {fd!r} was closed while this task waited on it"),
                    )
            elif old is not None:
                self._clear_fd_callback(which, fd)
        self._reactor.forget(fd)

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable (replaces an earlier one)."""
        self._set_fd_callback(READABLE, fd, callback, args)

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable (replaces an earlier one)."""
        self._set_fd_callback(WRITABLE, fd, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; True if a reader was registered."""
        return self._clear_fd_callback(READABLE, fd)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; True if a writer was registered."""
        return self._clear_fd_callback(WRITABLE, fd)

    # -- running -----------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(
            self._runq
            or self._ready
            or self._wakeup.queue
            or len(self._timers)
            or self._ntasks
            or self._nfd_callbacks
            or self._keepalive
        )

    def run(self) -> None:
        """Run until nothing is scheduled (no callbacks, timers, watched fds or tasks)
        or until :meth:`stop` is called."""
        self._enter_run("Loop.run()")
        try:
            while not self._stopping and self._has_work():
                self._run_once()
        finally:
            self._stopping = False
            self._exit_run()

    def run_until_complete(self, fn_or_coro: Any, *args: Any, name: str | None = None) -> Any:
        """Run ``fn_or_coro(*args)`` (or the coroutine) as the main task, with the
        loop's callbacks and timers, until it finishes; return its result or raise its
        exception. Tasks it leaves behind are impossible: every task belongs to a
        TaskGroup, and system tasks are cancelled when the main task ends.

        Async generators the tasks abandon unfinished are closed (``aclose()``) in
        system tasks; those still alive when the main task ends are closed before the
        system tasks are cancelled. The thread's previous async generator hooks are
        restored when this returns (see ``plait._asyncgens``)."""
        coro = coerce_coroutine(fn_or_coro, args, "plait.run()")
        try:
            self._enter_run("plait.run()")
        except BaseException:
            coro.close()
            raise
        root = CancelScope()
        root._attach(None, self)
        system_scope = CancelScope()
        system_scope._attach(root, self)
        self._root_scope, self._system_scope = root, system_scope
        self._system_group = _RootGroup(self, system=True)
        self._ki = None
        restore_sigint = install_sigint_handler(self)
        asyncgens = AsyncGenHooks(self)
        asyncgens.install()
        try:
            main = self._spawn(coro, _RootGroup(self, system=False), root, name)
            while not main._done:
                if self._stopping:
                    raise RuntimeError("the loop was stopped before the main task finished")
                try:
                    self._run_once()
                except KeyboardInterrupt as interrupt:  # from a callback: end cleanly
                    self._kernel_interrupted(interrupt)
                    del interrupt
            if asyncgens.has_work():
                self._kernel_close_asyncgens(asyncgens, system_scope)
            system_scope.cancel()
            while self._ntasks or asyncgens.pending():
                self._run_once()
            if self._ki_pending:  # Ctrl-C during the last iteration: not lost
                self._kernel_interrupted(KeyboardInterrupt())
        finally:
            system_scope._detach()  # unlink the run's scope tree: no cycle via _loop
            root._detach()
            asyncgens.uninstall()
            if restore_sigint is not None:
                restore_sigint()
            self._ki_forced = False
            self._exit_run()
        crashes = self._system_group.crashes
        self._system_group = self._root_scope = self._system_scope = None
        result, error = main._result, main._exception
        if main._was_cancelled:
            error = Cancelled(f"the main task {main.name!r} was cancelled")
        del main
        ki = self._kernel_take_ki()
        deadlock, self._deadlock = self._deadlock, None
        if ki is not None:
            error = ki
        elif deadlock is not None:
            if error is not None and not isinstance(error, Cancelled):
                deadlock.__context__ = error
            error = deadlock
        elif crashes:
            error = _crash_error(error, crashes)
        if error is not None:
            try:
                raise error
            finally:
                del error, crashes, ki
        return result

    def _kernel_close_asyncgens(self, asyncgens: AsyncGenHooks, system_scope: CancelScope) -> None:
        """The main task has ended: close the async generators still alive, in a system
        task, before the system tasks are cancelled (a ``finally`` may need them)."""
        closer = self._spawn(
            asyncgens.close_remaining(),
            self._system_group,
            system_scope,
            "plait: close the async generators left alive",
        )
        while not closer._done:
            try:
                self._run_once()
            except KeyboardInterrupt as interrupt:  # from a callback: end cleanly
                self._kernel_interrupted(interrupt)
                del interrupt

    # -- the kernel --------------------------------------------------------------------

    def _spawn(
        self,
        coro: Any,
        group: Any,
        scope: CancelScope,
        name: str | None,
        context: contextvars.Context | None = None,
    ) -> Task:
        if context is None:
            context = contextvars.copy_context()
        task = Task(coro, self, name, context, scope, group)
        scope._tasks[task] = None
        self._ntasks += 1
        self._runq.append(task)
        instruments = self._instruments
        if instruments._all:
            if instruments.task_spawned:
                instruments.call(instruments.task_spawned, task)
            if instruments.task_scheduled:
                instruments.call(instruments.task_scheduled, task)
        return task

    def _kernel_take_ki(self) -> KeyboardInterrupt | None:
        ki, self._ki = self._ki, None
        return ki

    def _kernel_interrupted(self, ki: KeyboardInterrupt) -> None:
        """Ctrl-C hit plait's own code: cancel everything, raise ``ki`` at the end.
        After a second Ctrl-C (``_ki_forced``), raise it now: the run is abandoned."""
        self._ki_pending = False
        if self._ki_forced:
            raise ki
        if self._ki is None:
            self._ki = ki
        if self._root_scope is not None:
            self._root_scope.cancel()

    def _kernel_reschedule(self, task: Task, value: Any, error: BaseException | None) -> None:
        if task._abort_fn is None:
            raise RuntimeError(
                f"reschedule({task!r}) called, but the task is not waiting in "
                "wait_task_rescheduled(); a wait must be completed exactly once"
            )
        task._abort_fn = None
        task._next_value = value
        task._next_exc = error
        self._runq.append(task)
        if self._instruments.task_scheduled:
            self._instruments.call(self._instruments.task_scheduled, task)

    def _kernel_try_abort(self, task: Task) -> None:
        abort_fn = task._abort_fn
        if abort_fn is None:
            return
        # A broken abort_fn is a bug in the primitive that parked the task, not in the
        # kernel or in whoever cancelled: the error goes to the parked task.
        try:
            outcome: object = abort_fn(_raise_cancel)
        except BaseException as exc:
            if exc.__traceback__ is not None:  # drop this kernel frame
                exc.__traceback__ = exc.__traceback__.tb_next
            self._kernel_reschedule(task, None, exc)
            del exc
            return
        if outcome is Abort.SUCCEEDED:
            self._kernel_reschedule(task, None, Cancelled())
        elif outcome is not Abort.FAILED:
            self._kernel_reschedule(
                task,
                None,
                TypeError(
                    f"abort_fn {abort_fn!r} returned {outcome!r}; it must return "
                    "plait.lowlevel.Abort.SUCCEEDED or Abort.FAILED"
                ),
            )

    def _kernel_wake(self, task: Task) -> None:
        """Timer and fd callback: reschedule a parked task with no value."""
        if task._abort_fn is not None:
            self._kernel_reschedule(task, None, None)

    def _kernel_bad_yield(self, task: Task, req: Any) -> None:
        if hasattr(req, "_asyncio_future_blocking"):
            msg = (
                f"task {task.name!r} awaited an asyncio future/task ({req!r}) inside "
                "plait.run(): plait cannot wait on asyncio objects. Use plait primitives "
                "(plait.Event, plait.sleep, ...), or run the asyncio code through plait.aio."
            )
        else:
            msg = (
                f"task {task.name!r} yielded {describe(req)} to the plait kernel; only plait "
                "operations may suspend a task. Await plait functions, and inside a "
                "@plait.coroutine generator use a bare 'yield' (a checkpoint) or "
                "'yield from' another plait coroutine."
            )
        task._next_exc = TypeError(msg)
        self._runq.append(task)
        if self._instruments.task_scheduled:
            self._instruments.call(self._instruments.task_scheduled, task)

    def _kernel_cancel_task(self, task: Task) -> None:
        own = task._own_scope
        if own is None:
            own = task._own_scope = CancelScope()
            bottom: CancelScope | None = None
            scope = task._scope
            while scope._owner is task:
                bottom = scope
                assert scope._parent is not None
                scope = scope._parent
            own._attach(scope, self)
            own._owner = task
            if bottom is None:
                scope._tasks.pop(task, None)
                own._tasks[task] = None
                task._scope = own
            else:
                bottom._reparent(own)
        own.cancel()

    def _kernel_task_exited(self, task: Task, result: Any, exc: BaseException | None) -> None:
        self._ntasks -= 1
        scope = task._scope
        scope._tasks.pop(task, None)
        while scope._owner is task and scope is not task._own_scope:
            # A scope the coroutine entered and never exited: unlink it.
            scope._detach()
            assert scope._parent is not None
            scope = scope._parent
        if type(exc) is Cancelled:
            # Ended by a cancellation: the task is "cancelled", not "failed". Its group
            # still gets the Cancelled (its scope, or an outer one, catches it) unless
            # the task's own scope (from Task.cancel()) caused it.
            task._was_cancelled = True
            own = task._own_scope
            if own is not None and own._cancel_called:
                parent = own._parent
                if not (parent is not None and parent._eff):
                    exc = None
        else:
            task._exception = exc
            if exc is not None:
                task._exception_tb = exc.__traceback__
        own = task._own_scope
        if own is not None:
            own._detach()
            own._owner = None
            task._own_scope = None
        task._done = True
        task._result = result
        task._coro = task._send = task._context = None  # type: ignore[assignment]
        joiners, task._joiners = task._joiners, None
        group, task._group = task._group, None
        group._kernel_child_exited(task, exc)
        if joiners:
            for fn in joiners:
                fn(task)
        if self._instruments.task_exited:
            self._instruments.call(self._instruments.task_exited, task)
        if self._ki_forced:  # a second Ctrl-C: run no other task (see _interrupt.py)
            raise exc if isinstance(exc, KeyboardInterrupt) else KeyboardInterrupt

    def _run_once(self) -> None:
        runq = self._runq
        ready = self._ready
        timers = self._timers
        wakeup = self._wakeup
        clock = self._clock
        idle = math.inf
        deadline = math.inf
        if runq or ready or wakeup.queue:
            timeout = 0.0
        else:
            deadline = timers.next_deadline()
            timeout = math.inf if deadline == math.inf else clock.deadline_to_sleep_time(deadline)
            if self._idle_waiters:
                idle = self._idle_waiters[0][0]
            if deadline != math.inf:
                idle = min(idle, clock.autojump_threshold)
            if idle < timeout:
                timeout = idle
            else:
                idle = math.inf
            timeout = max(timeout, 0.0)
            if timeout == math.inf and self._root_scope is not None and self._deadlocked():
                self._kernel_deadlock()
                return  # the tasks it cancelled run in the next iteration

        reactor = self._reactor
        if timeout == 0.0 and len(reactor._fds) == 1 and not reactor._always_ready:
            # Nothing but the wake-up fd is registered, and other threads' items are
            # taken from the deque below without it: while there is work to do, the
            # poll syscall would find nothing. (Its byte stays, so a later blocking
            # poll returns at once.)
            events = None
            reactor.raw_events = 0  # as if it had timed out at once
        elif self._instruments._all:
            events = self._kernel_poll_instrumented(timeout)
        else:
            events = reactor.poll(timeout)
        if events:
            fds = reactor._fds
            for obj, fd, which in events:
                if obj.__class__ is Task:
                    st = fds[fd]
                    if which == READABLE:
                        st.reader = None
                    else:
                        st.writer = None
                    st.want &= ~which
                    if not st.want and fd in reactor._always_ready:
                        reactor.clear(fd, which)  # drops the always-ready entry
                    if obj._abort_fn is not None:
                        self._kernel_reschedule(obj, None, None)
                elif obj is _WAKEUP:
                    wakeup.drain()
                else:
                    ready.append(obj)
        if wakeup.queue:
            pending = wakeup.queue
            while pending:
                ready.append(pending.popleft())

        if timers._heap:
            timers.fire_due(clock.current_time())
        if self._ki_pending:
            self._kernel_interrupted(KeyboardInterrupt())

        if idle != math.inf and not runq and not ready and not self._reactor.raw_events:
            # The poll timed out (it did not return early for an fd nobody waits
            # on any more) and nothing became runnable: the cushion has passed.
            self._kernel_idle(idle, deadline)

        # Run the callbacks that were ready when this step began.
        n = len(ready)
        watch = self._callback_watch
        while n:
            n -= 1
            handle = ready.popleft()
            if handle._cancelled:  # (an asyncio handle keeps no callback once cancelled)
                continue
            # handle._run(), inlined: one frame less per callback, which is most of
            # the work of an asyncio program (plait.aio). plait's handles (context
            # may be None) and asyncio's keep the callback in the same slots.
            context = handle._context
            try:
                if watch is not None:
                    watch(handle)  # runs it (and times it: asyncio's debug mode)
                elif context is None:
                    handle._callback(*handle._args)
                else:
                    context.run(handle._callback, *handle._args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._callback_failed(handle, exc)
                del exc
        # A finished callback must not stay alive in this frame while the tasks run:
        # on Python 3.12+ their frames link back here (f_back), and a callback's
        # arguments (e.g. an error handed to a task) would close a reference cycle.
        handle = context = events = watch = None  # type: ignore[assignment]

        # Run the tasks that were ready when this step began.
        if self._schedule is not None and runq:
            self._schedule._order(runq)  # (plait.testing.Seeded, Replay)
        instruments = self._instruments
        if (
            instruments.before_task_step
            or instruments.after_task_step
            or (instruments.task_scheduled)
        ):
            self._kernel_run_tasks_instrumented(len(runq))
        else:
            self._kernel_run_tasks(len(runq))

    def _kernel_run_tasks(self, n: int) -> None:
        """Run the first ``n`` tasks of the run queue, one step each. (The hot path:
        no instrument is called here, see _kernel_run_tasks_instrumented.)"""
        runq = self._runq
        popleft = runq.popleft
        append = runq.append
        while n:
            n -= 1
            task = popleft()
            self._current_task = task
            throw = task._next_exc
            try:
                if throw is None:
                    value = task._next_value
                    if value is _AT_CHECKPOINT:
                        # Decided now, not when it yielded: a deadline that passed
                        # meanwhile (timers fire before tasks run) cancels this very
                        # checkpoint.
                        if task._scope._eff:
                            req = task._context.run(task._coro.throw, Cancelled())
                        else:
                            req = task._context.run(task._send, None)
                    elif value is None:
                        req = task._context.run(task._send, None)
                    else:
                        task._next_value = None
                        req = task._context.run(task._send, value)
                else:
                    task._next_exc = None
                    req = task._context.run(task._coro.throw, throw)
            except StopIteration as stop:
                self._kernel_task_exited(task, stop.value, None)
                continue
            except BaseException as error:
                if error.__traceback__ is not None:  # drop this kernel frame
                    error.__traceback__ = error.__traceback__.tb_next
                self._kernel_task_exited(task, None, error)
                del error
                continue
            if req is None:
                task._next_value = _AT_CHECKPOINT
                append(task)
            elif req.__class__ is _Park:
                # The _Park stays referenced by the trap's frame (and so by tracebacks
                # through the wait): keep nothing in it once the kernel has the abort_fn.
                task._abort_fn, req.abort_fn = req.abort_fn, None
                if task._scope._eff:
                    self._kernel_try_abort(task)
            elif req is _SCHEDULE_POINT:
                task._next_value = None  # a schedule point only: never raises Cancelled
                append(task)
            else:
                self._kernel_bad_yield(task, req)
        self._current_task = None
        # This frame can outlive the call (Python 3.12+ links finished coroutine frames
        # to it through f_back): hold nothing that could close a reference cycle.
        task = throw = value = req = None  # type: ignore[assignment]

    def _kernel_run_tasks_instrumented(self, n: int) -> None:
        """_kernel_run_tasks with instruments: each task's step runs alone between the
        step hooks. A task that its step put back in the run queue by itself (a
        checkpoint or schedule point: no error to deliver) is reported scheduled here;
        every other way into the queue reports itself (_spawn, _kernel_reschedule)."""
        instruments = self._instruments
        runq = self._runq
        while n:
            n -= 1
            task = runq[0]
            if instruments.before_task_step:
                instruments.call(instruments.before_task_step, task)
            self._kernel_run_tasks(1)
            if instruments.after_task_step:
                instruments.call(instruments.after_task_step, task)
            if (
                instruments.task_scheduled
                and runq
                and runq[-1] is task
                and task._next_exc is None
                and not task._done
            ):
                instruments.call(instruments.task_scheduled, task)

    def _kernel_poll_instrumented(self, timeout: float) -> Any:
        instruments = self._instruments
        if instruments.before_io_wait:
            instruments.call(instruments.before_io_wait, timeout)
        try:
            return self._reactor.poll(timeout)
        finally:
            if instruments.after_io_wait:
                instruments.call(instruments.after_io_wait, timeout)

    def _deadlocked(self) -> bool:
        """Nothing but a task can wake any task: no fd is watched, no timer is set (the
        caller knows), no thread, process or signal can reach the loop, and nothing
        is queued. Conservative: any thread but plait's idle workers may call in
        (except under a scheduling policy, see below)."""
        reactor = self._reactor
        if len(reactor._fds) != 1 or reactor._always_ready or self._nfd_callbacks:
            return False
        if self._external_wakers or not self._ntasks:
            return False
        if self._ki is not None:
            # Ctrl-C is being handled and a cleanup hangs: its user is there, and a
            # second Ctrl-C ends it with the KeyboardInterrupt they asked for.
            return False
        if jobs_in_flight():
            return False  # a to_thread job (or a subprocess's reaper) is running
        if self._schedule is None:
            # Under a scheduling policy (Seeded, Replay) the run is a closed world: a
            # thread calling in would make it irreproducible anyway, and explore and
            # test runners keep other threads alive (executors, earlier tests').
            me = threading.current_thread()
            for thread in threading.enumerate():
                if thread is not me and thread.name not in _QUIET_THREADS:
                    return False  # it might call in (call_soon_threadsafe, a portal)
        # Whatever a finished job or thread handed in is in the queue by now.
        if self._wakeup.queue:
            return False
        from ._inspect import awaits_cancellation, live_tasks

        return not awaits_cancellation(live_tasks(self))

    def _kernel_deadlock(self) -> None:
        """Every task waits for another task: cancel them all, and raise ``Deadlock``
        (naming the tasks) when the run ends. If it happens again while they unwind
        (a shielded wait), raise it now: the run cannot end by itself."""
        from ._inspect import deadlock_report

        report = deadlock_report(self)
        if self._deadlock is not None:
            raise Deadlock(
                f"{report}\n(again, while the tasks were being cancelled after the first "
                "deadlock: the run is abandoned)"
            )
        self._deadlock = Deadlock(report)
        assert self._root_scope is not None
        self._root_scope.cancel()

    def _kernel_idle(self, cushion: float, deadline: float) -> None:
        waiters = self._idle_waiters
        if waiters and waiters[0][0] <= cushion:
            while waiters and waiters[0][0] == cushion:
                entry = heapq.heappop(waiters)
                task = entry[2]
                entry[2] = None
                self._kernel_reschedule(task, None, None)
        elif deadline != math.inf:
            self._clock._autojump(deadline)
            self._timers.fire_due(self._clock.current_time())

    # -- services for the layers above -------------------------------------------------

    def _wait_fd(self, fd: Any, which: int, token: int = 0) -> Any:
        """Park the current task until ``fd`` is readable/writable (an awaitable).

        ``token``: see ``Reactor.set`` (only for owners that forget() before close)."""
        reactor = self._reactor
        if fd.__class__ is not int or fd < 0:
            fd = _fileno(fd)
        st = reactor._fds.get(fd)
        old = None if st is None else st.reader if which == READABLE else st.writer
        if old is not None:
            from .._exceptions import BusyResourceError

            owner = f"task {old.name!r}" if isinstance(old, Task) else "a callback"
            raise BusyResourceError(
                f"another waiter ({owner}) is already waiting for fd {fd!r} to become "
                f"{'readable' if which == READABLE else 'writable'}; only one task may "
                "wait per fd and direction"
            )
        if st is not None and token and st.token == token and st.registered & which:
            # An owner's fd that epoll still watches for this: just take the slot (the
            # same bookkeeping Reactor.set does, without its checks and syscall).
            if which == READABLE:
                st.reader = self._current_task
            else:
                st.writer = self._current_task
            st.want |= which
        else:
            reactor.set(fd, which, self._current_task, token)
        fdn = fd

        def abort(_: RaiseCancelT) -> Abort:
            reactor.clear(fdn, which)
            return Abort.SUCCEEDED

        return _checkpoint(_Park(abort))

    def _wait_idle(self, cushion: float) -> Any:
        task = self._current_task
        assert task is not None
        entry = [cushion, next(self._idle_seq), task]
        heapq.heappush(self._idle_waiters, entry)
        waiters = self._idle_waiters

        def abort(_: RaiseCancelT) -> Abort:
            waiters.remove(entry)
            heapq.heapify(waiters)
            entry[2] = None
            return Abort.SUCCEEDED

        from ._traps import wait_task_rescheduled

        return wait_task_rescheduled(abort)
