"""The pool interface, ``plait.abc.Pool``, and what every pool shares. Layer L6.

Theory of operation. A pool runs synchronous calls ``fn(*args)`` on workers other than
the loop's thread: threads (:class:`plait.ThreadPool`), processes
(``plait.ProcessPool``) or a cluster (``plait.cluster.DaskPool``). Every pool offers the
same things, and this base class implements all of them but the call itself:

- ``await pool.run_sync(fn, *args)``;
- ``pool.map(fn, iterable, ordered=True, read_ahead=None, progress=None)``, an async
  iterator that reads a bounded amount ahead (``_poolmap.py``);
- ``pool.executor()``, a ``concurrent.futures.Executor`` for plain threads;
- a lifecycle: ``async with pool:`` / ``await pool.aclose()``. Once closed, new calls
  raise ``ClosedResourceError``; ``aclose`` waits for the calls already made (those
  submitted through an executor included), then releases the workers.

A subclass implements ``max_workers`` and ``_run(fn, args, claim)``, and may override
``_aclose_workers()``. ``claim`` is None, or (for executor calls) a function that
``_run`` must call right before ``fn`` starts on its worker, after any wait for a free
one: if it returns False the future was cancelled meanwhile, and ``_run`` must not run
``fn`` but return :data:`UNCLAIMED`. That is how a submitted future stays PENDING, and
cancellable, until its call really starts, as with ``ThreadPoolExecutor``.

The executor facade. ``submit`` may be called from any thread and never waits for the
loop: under a lock it registers the future (refused once the facade is shut down),
then hands the call to the loop through its thread-safe door; on the loop a system
task runs it through the pool (the pool's limits apply) and completes the future.
``Future.cancel()`` on a call still waiting for a worker cancels that task. A facade
belongs to the ``plait.run`` in which ``executor()`` was called: when that run ends, or
the pool closes, it stops accepting work; at the end of the run the futures that had
not started are cancelled, so no thread waits forever on a future nobody will
complete. Rejected: running ``fn`` directly on a thread from ``submit`` (a pool's
limits are loop-side state, so the call has to pass through the loop anyway, and
process and cluster pools have no local thread to run it on).
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextvars
import enum
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._core._instrument import finish_job, start_job
from ._core._local import current_loop, current_loop_or_none
from ._exceptions import Cancelled, ClosedResourceError
from ._poolmap import MapProgress, PoolMap, check_sync_fn, fn_name
from ._sync import Event
from ._util import describe

if TYPE_CHECKING:
    from ._core._kernel import Loop
    from ._core._task import Task

__all__ = ["UNCLAIMED", "Pool", "check_max_workers"]

T = TypeVar("T")

# How often executor.shutdown(wait=True) checks that its loop still exists.
_LOOP_CHECK_INTERVAL = 0.25


def check_max_workers(value: object, pool: str, default: Callable[[], int]) -> int:
    """A pool's ``max_workers`` argument: ``default()`` for None, else an int >= 1."""
    if value is None:
        return default()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{pool} max_workers must be an int, got {describe(value)}")
    if value < 1:
        raise ValueError(
            f"{pool} max_workers must be >= 1, got {value}; leave it out for the default "
            f"({default()} on this machine)"
        )
    return value


class _Unclaimed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<plait._pool.UNCLAIMED>"


UNCLAIMED: Any = _Unclaimed()
"""What ``Pool._run`` returns when its ``claim()`` said no: the call did not run."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # no new calls; waiting for the calls in progress
    CLOSED = "closed"


class Pool(abc.ABC):
    """A pool of workers that run synchronous functions: ``plait.abc.Pool``.

    ``plait.ThreadPool`` and ``plait.ProcessPool`` implement it (and
    ``plait.cluster.DaskPool``), so code written against it can move from threads to
    processes to a cluster by changing the line that creates the pool::

        async with plait.ThreadPool(4) as pool:
            one = await pool.run_sync(fn, arg)
            async for result in pool.map(fn, items):
                ...
            executor = pool.executor()  # for code running in other threads

    Implementing a pool: subclass, call ``super().__init__()``, and implement
    :attr:`max_workers` and ``async _run(fn, args, claim)``; see ``plait/_pool.py``.
    """

    _job_kind: str | None = "pool"
    """What instruments see a call as (``plait.lowlevel.Job.kind``), None: nothing."""

    def __init__(self) -> None:
        self._state = _State.OPEN
        # Invariant: _calls == calls inside _call() (admitted and not finished).
        self._calls = 0
        self._idle: Event | None = None  # set when nothing is in progress (aclose waits)
        self._released = Event()  # set once _aclose_workers() has run
        self._executors: weakref.WeakSet[_PoolExecutor] = weakref.WeakSet()

    def __repr__(self) -> str:
        return (
            f"<plait.{type(self).__name__} max_workers={self.max_workers} "
            f"{self._state.value} calls={self._calls}>"
        )

    # -- what a pool implements --------------------------------------------------------

    @property
    @abc.abstractmethod
    def max_workers(self) -> int:
        """How many calls may run at once. ``map`` reads twice this far ahead by
        default."""

    @abc.abstractmethod
    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], claim: Callable[[], bool] | None
    ) -> Any:
        """Run ``fn(*args)`` on a worker; return its result or raise its error.

        If ``claim`` is not None, call it right before ``fn`` starts on its worker
        (after any wait for a free one); if it returns False, do not run ``fn`` and
        return :data:`UNCLAIMED`."""

    async def _aclose_workers(self) -> None:  # noqa: B027 - an optional hook
        """Release the workers: called once by :meth:`aclose`, after the last call."""

    # -- the interface -----------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._state is not _State.OPEN:
            raise ClosedResourceError(
                f"{type(self).__name__}.{what}: the pool is {self._state.value}; create a "
                "new pool (and close it only once all of its users are done)"
            )

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on one of the pool's workers and return its result.

        A checkpoint. Waits for a free worker if all are busy. Raises what ``fn``
        raised, with the traceback it had on the worker; ``ClosedResourceError`` if
        the pool is closed. What cancellation does depends on the pool (a thread
        cannot be interrupted: ``ThreadPool`` waits for it, as ``to_thread.run_sync``).
        For keyword arguments, pass ``functools.partial(fn, key=value)``.
        """
        check_sync_fn(fn, f"{type(self).__name__}.run_sync()")
        self._check_open("run_sync()")
        result: T = await self._call(fn, args, None)
        return result

    async def _call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], claim: Callable[[], bool] | None
    ) -> Any:
        """Run an admitted call (even if the pool has started closing since)."""
        return await self._counted(self._run(fn, args, claim), fn)

    async def _counted(self, call: Coroutine[Any, Any, Any], fn: Callable[..., Any]) -> Any:
        """Await ``call``, the run of ``fn``, as a call in progress (``aclose`` waits
        for it), shown to the instruments as a job."""
        self._calls += 1
        loop = current_loop("a pool call")
        job = None if self._job_kind is None else start_job(loop, self._job_kind, fn)
        try:
            return await call
        finally:
            finish_job(loop, job)
            self._calls -= 1
            if not self._calls:
                self._maybe_idle()

    def map(
        self,
        fn: Callable[[Any], T],
        iterable: Iterable[Any],
        *,
        ordered: bool = True,
        read_ahead: int | None = None,
        progress: Callable[[MapProgress], object] | bool | None = None,
    ) -> PoolMap[T]:
        """Call ``fn(item)`` on the workers for each item; iterate over the results.

        ``async for result in pool.map(fn, items):``. Results come in the items' order
        (``ordered=True``) or as they are ready (``ordered=False``). Items are taken
        from ``iterable`` (on the loop's thread) only while fewer than ``read_ahead``
        (default: twice :attr:`max_workers`) are taken and not yet delivered, so a slow
        consumer holds the producer back. The first failing call ends the iteration:
        the other calls are cancelled, and once they have ended its error is raised
        (an ``ExceptionGroup`` if several failed). Leaving early -- ``break``,
        ``await results.aclose()``, or the end of ``async with pool.map(...) as
        results`` (which also waits for them) -- cancels the calls still running.
        ``progress(MapProgress)`` is called on the loop's thread each time a call has
        finished; ``progress=True`` draws a progress bar on stderr instead (if stderr
        is not a terminal: one summary line when the map ends). ``ClosedResourceError``
        if the pool is closed; a call that starts after the pool was closed fails with
        it.
        """
        what = f"{type(self).__name__}.map()"
        check_sync_fn(fn, what)
        self._check_open("map()")
        if read_ahead is None:
            read_ahead = 2 * self.max_workers
        return PoolMap(
            self, fn, iterable, ordered=ordered, read_ahead=read_ahead, progress=progress
        )

    def executor(self) -> concurrent.futures.Executor:
        """A ``concurrent.futures.Executor`` that runs calls on this pool, for code
        running in other threads (``submit``, ``map``, ``shutdown``).

        Call it in a task; ``submit`` works from any thread and never blocks. Calls
        take the pool's workers like ``run_sync`` does, in a copy of the submitting
        thread's context. ``Future.cancel()`` succeeds until the call starts on a
        worker. ``shutdown()`` stops this facade (not the pool) and from a thread
        waits for its futures; never call it with ``wait=True``, or block on a
        future, in the loop's own thread (use ``await pool.aclose()``). The facade
        stops when the pool closes (its futures still complete) and when the
        ``plait.run`` it was made in ends (futures not yet started are cancelled).
        """
        self._check_open("executor()")
        loop = current_loop(f"{type(self).__name__}.executor()")
        if loop._system_group is None:
            raise RuntimeError(
                f"{type(self).__name__}.executor() must be called inside plait.run()"
            )
        executor = _PoolExecutor(self, loop)
        self._executors.add(executor)
        return executor

    async def aclose(self) -> None:
        """Close the pool: new calls raise ``ClosedResourceError``; wait for the calls
        in progress (executor futures included), then release the workers.

        Idempotent. A checkpoint. If cancelled while waiting, the pool stays closed
        to new calls, the calls in progress go on in their tasks, and the workers are
        released by the next ``aclose()``.
        """
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSING
            for executor in list(self._executors):
                executor._stop(cancel_futures=False)
            while self._busy():
                if self._idle is None:
                    self._idle = Event()
                await self._idle.wait()
            if self._state is _State.CLOSING:
                self._state = _State.CLOSED
                try:
                    await self._aclose_workers()
                finally:
                    self._released.set()
        await self._released.wait()  # (another aclose() may still be releasing them)

    def _busy(self) -> bool:
        return bool(self._calls) or any(e._outstanding for e in list(self._executors))

    def _maybe_idle(self) -> None:
        idle = self._idle
        if idle is not None and not self._busy():
            self._idle = None
            idle.set()

    async def __aenter__(self: _P) -> _P:
        self._check_open("__aenter__()")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


_P = TypeVar("_P", bound=Pool)


class _Claim:
    """``claim`` for one executor call. ``Future.set_running_or_notify_cancel()``
    must be called exactly once: by the call, right before it starts (then True means
    run it), or, for a future cancelled first, by the facade (so that threads in
    ``concurrent.futures.wait()`` hear of it). Whoever takes the future calls it."""

    __slots__ = ("future", "lock")

    def __init__(self, future: concurrent.futures.Future[Any], lock: threading.Lock) -> None:
        self.future: concurrent.futures.Future[Any] | None = future
        self.lock = lock

    def take(self) -> concurrent.futures.Future[Any] | None:
        with self.lock:
            future, self.future = self.future, None
        return future

    def __call__(self) -> bool:
        future = self.take()
        return future is not None and future.set_running_or_notify_cancel()


class _PoolExecutor(concurrent.futures.Executor):
    """``Pool.executor()``: a ``concurrent.futures.Executor`` facade of a pool."""

    def __init__(self, pool: Pool, loop: Loop) -> None:
        self._pool = pool
        self._loop = loop
        self._lock = threading.Lock()
        # Invariant: futures submitted here and not done yet (with their claims); it
        # only grows while not _shutdown (both read and written under _lock).
        self._outstanding: dict[concurrent.futures.Future[Any], _Claim] = {}
        self._shutdown = False
        self._drained_seen = False
        # Both set once shut down with nothing outstanding: one for threads, one
        # (set on the loop's thread) for tasks.
        self._drained = threading.Event()
        self._drained_on_loop = Event()
        # Loop thread only: the task running each started call.
        self._tasks: dict[concurrent.futures.Future[Any], Task] = {}
        assert loop._system_group is not None and loop._system_scope is not None
        loop._spawn(self._watch(), loop._system_group, loop._system_scope, f"plait: {self!r}")

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return f"<plait executor of {self._pool!r} {state}>"

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on the pool; return its future. Any thread."""
        check_sync_fn(fn, "executor.submit()")
        with self._lock:
            if self._shutdown:
                raise RuntimeError(
                    f"cannot schedule new futures after shutdown: {self!r} was shut down "
                    "(by shutdown(), by closing the pool, or because the plait.run it "
                    "was made in has ended)"
                )
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._outstanding[future] = claim = _Claim(future, self._lock)
        future.add_done_callback(self._forget)
        context = contextvars.copy_context()
        try:
            self._loop.call_soon_threadsafe(self._start, claim, fn, args, kwargs, context)
        except RuntimeError:  # pragma: no cover - the run's end shuts us down first
            future.cancel()
            raise RuntimeError(f"{self!r}: its plait loop has ended") from None
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; with ``cancel_futures``, cancel those not started;
        with ``wait``, block until every future is done. The pool stays open."""
        if wait and current_loop_or_none() is self._loop:
            raise RuntimeError(
                "executor.shutdown(wait=True) was called in the loop's own thread, where "
                "it would wait for itself; in a task, use 'await pool.aclose()' (or "
                "shutdown(wait=False))"
            )
        self._stop(cancel_futures)
        if wait:
            while not self._drained.wait(_LOOP_CHECK_INTERVAL):
                if self._loop.is_closed():  # pragma: no cover - an abandoned run
                    return

    # -- machinery ---------------------------------------------------------------------

    def _soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop's thread: now if this is it (a callback left
        queued when the run ends would keep this facade and the loop alive in a
        cycle), else through its thread-safe door."""
        if current_loop_or_none() is self._loop:
            fn(*args)
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to tell

    def _stop(self, cancel_futures: bool) -> None:
        """Shut down (any thread)."""
        with self._lock:
            self._shutdown = True
            pending = list(self._outstanding) if cancel_futures else []
            drained = self._check_drained()
        for future in pending:
            future.cancel()  # does nothing to a running one
        del pending
        if drained:
            self._set_drained()

    def _check_drained(self) -> bool:
        """Under the lock: True exactly once, when shut down with nothing outstanding."""
        if self._shutdown and not self._outstanding and not self._drained_seen:
            self._drained_seen = True
            return True
        return False

    def _set_drained(self) -> None:
        self._drained.set()
        self._soon(self._on_drained)

    def _on_drained(self) -> None:
        self._drained_on_loop.set()
        self._pool._maybe_idle()

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        """Done callback of every future (in whichever thread completed it)."""
        with self._lock:
            claim = self._outstanding.pop(future, None)
            drained = self._check_drained()
        if future.cancelled():
            if claim is not None and claim.take() is not None:
                future.set_running_or_notify_cancel()  # wakes concurrent.futures.wait()
            self._soon(self._cancel_task, future)
        del claim
        if drained:
            self._set_drained()

    def _cancel_task(self, future: concurrent.futures.Future[Any]) -> None:
        task = self._tasks.get(future)
        if task is not None:
            task.cancel()

    def _start(
        self,
        claim: _Claim,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
    ) -> None:
        """On the loop's thread: start the task that runs a submitted call."""
        loop = self._loop
        future = claim.future
        if future is None or future.done():
            return  # cancelled while on its way
        if loop._system_group is None or loop._system_scope is None:  # pragma: no cover
            future.cancel()  # the run has ended (its end cancelled the others)
            return
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        job = self._job(future, claim, fn, args)
        name = f"executor: {fn_name(fn)}"
        self._tasks[future] = loop._spawn(
            job, loop._system_group, loop._system_scope, name, context
        )

    async def _job(
        self,
        future: concurrent.futures.Future[Any],
        claim: _Claim,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        try:
            value = await self._pool._call(fn, args, claim)
        except Cancelled:
            # Before the call started, the future is still pending: cancel it. If it
            # was running (its function raised Cancelled from check_cancelled()),
            # report the cancellation to the waiting thread the way it expects.
            self._tasks.pop(future, None)
            if not future.cancel() and not future.done():
                future.set_exception(concurrent.futures.CancelledError())
            raise
        except BaseException as exc:
            self._tasks.pop(future, None)
            try:
                future.set_exception(exc)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled (by another thread) before the call started
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            del exc
        else:
            self._tasks.pop(future, None)
            if value is not UNCLAIMED:
                future.set_result(value)  # running: nobody else can complete it
            del value
        finally:
            claim.take()  # keep no future alive through a traceback that reaches it
            del future, claim

    async def _watch(self) -> None:
        """A system task: it ends when the facade is drained, or is cancelled when the
        run ends, and then cancels the futures that have not started."""
        try:
            await self._drained_on_loop.wait()
        finally:
            self._stop(cancel_futures=True)
