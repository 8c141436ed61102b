"""ThreadQueue: a ``queue.Queue`` that plait tasks can also await. Layer L4.

Theory of operation. One ``threading.Lock`` (``self.mutex``, as in ``queue.Queue``)
guards the container and three FIFO wait lists (getters, putters, joiners). A waiter is
a small object; a *thread* waiter owns a private lock that it acquires twice (the second
acquire blocks until a waker releases it: what ``threading.Condition`` does inside), a
*task* waiter names the task and its loop and parks in ``wait_task_rescheduled``. The
mutex is held only for bookkeeping and for the container hooks (``_put``, ``_get``,
``_qsize``), never across a wait, so a task taking it cannot block its loop for longer
than another thread's O(1) step.

Items move by *hand-over*, never by "wake up and retry": whoever changes the queue
(a put, a get, a ``maxsize`` grown) calls ``_settle``, which, under the mutex, gives
container items to the oldest blocked getters (``_get`` -> the waiter) and admits the
oldest blocked putters' items (``_put`` from the waiter), and wakes each one *with its
outcome*. A woken waiter has nothing left to do, so nobody barges in between (FIFO
among getters and among putters, threads and tasks alike), and items always pass
through the container hooks, so LIFO/priority subclasses and a hook that raises behave
as in ``queue.Queue`` (the error goes to the waiter whose operation failed).

Waking: a thread waiter's lock is released. A task waiter is rescheduled directly when
the waker runs on that task's loop thread, otherwise through the loop's thread-safe
door (``call_soon_threadsafe``), which never blocks.

No-loss rules (DESIGN.md section 6):

- ``aget``/``aput`` raise ``Cancelled`` before touching the queue if the task is
  cancelled; one that completes without blocking ends with an uncancellable schedule
  point. So "raised Cancelled" means "nothing was taken / nothing was enqueued".
- A parked task that is cancelled is removed from its wait list under the mutex
  (``Abort.SUCCEEDED``): it never receives anything.

Discussion (cancelled while the hand-over is in flight): another thread may already have
handed an item to a parked task (under the mutex) and posted the wake-up to the task's
loop when that loop cancels the task. The abort then finds the waiter no longer waiting
and answers ``Abort.FAILED``: the cancellation is refused for this wait, the posted
wake-up delivers the item (``aget`` returns it; ``aput`` returns, its item enqueued),
and the task sees ``Cancelled`` at its next checkpoint. Rejected: putting the item back
at the front of the queue: the container hooks have no "push front", and another
getter may already have taken the next item, so order would break anyway.

Discussion (threads): a thread whose timed wait expires takes the mutex; if its waiter
is still waiting it removes it and raises ``Empty``/``Full``, else the hand-over beat
the timeout and it returns the outcome. A blocking call made on a thread that is
running a plait loop would freeze that loop (and deadlock if a task of that loop is the
one that would unblock it): it raises ``RuntimeError`` instead, naming the awaitable
form. Non-blocking calls (``put_nowait``, a ``put`` with room, ...) are fine anywhere.
"""

from __future__ import annotations

import enum
import heapq
import math
import numbers
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._core._local import run_state
from ._core._traps import Abort, RaiseCancelT, schedule_point, wait_task_rescheduled
from ._exceptions import Cancelled
from ._sync import _current_task
from ._util import describe, heappush_or_undo, public

if TYPE_CHECKING:
    from ._core._kernel import Loop
    from ._core._task import Task

__all__ = ["ThreadLifoQueue", "ThreadPriorityQueue", "ThreadQueue", "ThreadQueueStatistics"]

T = TypeVar("T")

if sys.version_info >= (3, 13):
    _ShutDown: type[Exception] = queue.ShutDown
else:  # never raised: only shutdown() (3.13+) sets is_shutdown

    class _ShutDown(Exception):
        pass


_TIMEOUT_MAX = threading.TIMEOUT_MAX


class _State(enum.Enum):
    WAITING = 1  # in its wait list
    DONE = 2  # handed its outcome (the wake-up may still be on its way)
    GONE = 3  # removed: timed out, cancelled, interrupted


_WAITING, _DONE, _GONE = _State.WAITING, _State.DONE, _State.GONE


class _Waiter:
    """One blocked call. ``lock`` is set for a thread, ``task``/``loop`` for a task."""

    __slots__ = ("error", "lock", "loop", "mutex", "payload", "state", "task", "wlist")

    def __init__(self, wlist: _WaitList, payload: Any) -> None:
        self.wlist = wlist
        self.payload = payload  # a putter's item; then the outcome value
        self.error: BaseException | None = None
        self.state = _WAITING
        self.lock: Any = None
        self.task: Task | None = None
        self.loop: Loop | None = None
        self.mutex: Any = None

    def abort(self, _: RaiseCancelT) -> Abort:
        """The kernel cancels a parked task (loop thread): see the module docstring."""
        with self.mutex:
            if self.state is not _WAITING:
                return Abort.FAILED  # handed over: the posted wake-up completes the wait
            self.wlist.discard(self)
            self.task = self.loop = None
            return Abort.SUCCEEDED


def _deliver(waiter: _Waiter) -> None:
    """On the task's loop thread: complete a hand-over made by another thread."""
    task, value, error = waiter.task, waiter.payload, waiter.error
    waiter.task = waiter.loop = waiter.payload = waiter.error = None
    assert task is not None
    task._loop._kernel_reschedule(task, value, error)


class _WaitList:
    """Waiters in FIFO order, with lazy deletion (removal is O(1): mark and skip).

    Invariant: ``live + dead == len(waiters)``; ``live`` waiters are ``_WAITING``, and
    ``threads`` of them are threads (the others are tasks).
    """

    __slots__ = ("dead", "live", "threads", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[_Waiter] = deque()
        self.live = 0
        self.dead = 0
        self.threads = 0

    def push(self, waiter: _Waiter) -> None:
        self.waiters.append(waiter)
        self.live += 1
        if waiter.lock is not None:
            self.threads += 1

    def first(self) -> _Waiter:
        """The oldest live waiter (the caller checked ``live``)."""
        waiters = self.waiters
        while waiters[0].state is not _WAITING:
            waiters.popleft()
            self.dead -= 1
        return waiters[0]

    def pop(self) -> _Waiter:
        """Take the oldest live waiter out, marked DONE (the caller checked ``live``)."""
        waiter = self.first()
        self.waiters.popleft()
        self.live -= 1
        if waiter.lock is not None:
            self.threads -= 1
        waiter.state = _DONE
        return waiter

    def discard(self, waiter: _Waiter) -> None:
        """Remove a live waiter (timeout, cancellation): it receives nothing."""
        waiter.state = _GONE
        waiter.payload = None  # a cancelled put's item is not kept alive here
        self.live -= 1
        if waiter.lock is not None:
            self.threads -= 1
        self.dead += 1
        if self.dead > 64 and self.dead > self.live:
            self.waiters = deque(w for w in self.waiters if w.state is _WAITING)
            self.dead = 0


def _check_timeout(timeout: object) -> float | None:
    """None for "no limit"; ``TypeError``/``ValueError`` for a bad value."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"'timeout' must be a non-negative number of seconds or None, got {describe(timeout)}"
        )
    seconds = float(timeout)
    if not seconds >= 0:  # also NaN
        raise ValueError("'timeout' must be a non-negative number")
    return None if seconds == math.inf else seconds


@public
@dataclass(frozen=True, slots=True)
class ThreadQueueStatistics:
    qsize: int
    maxsize: int
    is_shutdown: bool
    unfinished_tasks: int
    tasks_waiting_get: int
    tasks_waiting_put: int
    tasks_waiting_join: int
    threads_waiting_get: int
    threads_waiting_put: int
    threads_waiting_join: int


@public
class ThreadQueue(Generic[T]):
    """A FIFO queue between threads and plait tasks, in any mix.

    For threads it is a :class:`queue.Queue`: ``put(item, block=True, timeout=None)``,
    ``get(block=True, timeout=None)``, ``put_nowait``, ``get_nowait``, ``qsize``,
    ``empty``, ``full``, ``task_done``, ``join``, the ``maxsize`` attribute, the
    standard :class:`queue.Full` and :class:`queue.Empty`, and on Python 3.13+
    ``shutdown(immediate=False)`` with :class:`queue.ShutDown`. Subclasses may
    override ``_init``, ``_qsize``, ``_put`` and ``_get`` (called with ``mutex`` held).
    ``maxsize <= 0`` means unbounded.

    For tasks: ``await aput(item)``, ``await aget()``, ``await ajoin()`` and
    ``async for item in q``, which never block the loop. The iteration ends when the
    queue is shut down and drained (``shutdown()``, Python 3.13+); before 3.13 it never
    ends by itself: break out of it or cancel it.

    Waiters are served first come, first served (threads and tasks in one line). Two
    differences from :class:`queue.Queue`, both about misuse: a call that would block
    on a thread running a plait loop raises ``RuntimeError`` (use the ``a`` form), and
    a negative ``timeout`` is rejected even where ``queue.Queue`` would not look at it.
    """

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(
                f"{type(self).__name__} maxsize must be an int (<= 0: unbounded), "
                f"got {describe(maxsize)}"
            )
        self.maxsize = maxsize
        self._init(maxsize)
        # Held for bookkeeping and the container hooks only, never across a wait.
        self.mutex = threading.Lock()
        self._getters = _WaitList()
        self._putters = _WaitList()
        self._joiners = _WaitList()
        self.unfinished_tasks = 0
        self.is_shutdown = False

    # The container, as in queue.Queue: override these for other orders.
    def _init(self, maxsize: int) -> None:
        self.queue: Any = deque()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: T) -> None:
        self.queue.append(item)

    def _get(self) -> T:
        return self.queue.popleft()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        size = f"/{self.maxsize}" if self.maxsize > 0 else ""
        down = " shut down" if self.is_shutdown else ""
        return f"<plait.{type(self).__name__} {self._qsize()}{size}{down}>"

    # -- inspection ------------------------------------------------------------------

    def qsize(self) -> int:
        """The number of items in the queue (a snapshot: other threads may change it)."""
        with self.mutex:
            return self._qsize()

    def empty(self) -> bool:
        with self.mutex:
            return not self._qsize()

    def full(self) -> bool:
        with self.mutex:
            return 0 < self.maxsize <= self._qsize()

    def statistics(self) -> ThreadQueueStatistics:
        with self.mutex:
            getters, putters, joiners = self._getters, self._putters, self._joiners
            return ThreadQueueStatistics(
                qsize=self._qsize(),
                maxsize=self.maxsize,
                is_shutdown=self.is_shutdown,
                unfinished_tasks=self.unfinished_tasks,
                tasks_waiting_get=getters.live - getters.threads,
                tasks_waiting_put=putters.live - putters.threads,
                tasks_waiting_join=joiners.live - joiners.threads,
                threads_waiting_get=getters.threads,
                threads_waiting_put=putters.threads,
                threads_waiting_join=joiners.threads,
            )

    # -- the hand-over (mutex held) ------------------------------------------------------

    def _wake(self, waiter: _Waiter, value: Any, error: BaseException | None) -> bool:
        """Complete ``waiter``'s call with ``value``/``error``. False if it cannot be
        woken (its loop is closed): then it got nothing."""
        lock = waiter.lock
        if lock is not None:
            waiter.payload, waiter.error = value, error
            lock.release()
            return True
        loop = waiter.loop
        assert loop is not None and waiter.task is not None
        if run_state.loop is loop:  # this thread runs the task's loop: wake it now
            task = waiter.task
            waiter.task = waiter.loop = waiter.payload = None
            loop._kernel_reschedule(task, value, error)
            return True
        waiter.payload, waiter.error = value, error
        try:
            loop.call_soon_threadsafe(_deliver, waiter)
        except RuntimeError:  # the loop is closed: nobody will ever run that task
            waiter.task = waiter.loop = waiter.payload = waiter.error = None
            return False
        return True

    def _settle(self) -> None:
        """Hand container items to blocked getters and admit blocked putters' items,
        oldest first, until neither can move.

        Invariant afterwards: getters wait only on an empty queue, putters only on a
        full one."""
        getters, putters = self._getters, self._putters
        while True:
            if getters.live and self._qsize():
                try:
                    item = self._get()
                except Exception as exc:  # the getter's get failed; the item stays
                    self._wake(getters.pop(), None, exc)
                    del exc
                    continue
                while not self._wake(getters.pop(), item, None):
                    if not getters.live:  # only dead loops were waiting: keep it
                        self._put(item)
                        break
            elif putters.live and not 0 < self.maxsize <= self._qsize():
                try:
                    self._put(putters.first().payload)
                except Exception as exc:  # the putter's put failed; nothing enqueued
                    self._wake(putters.pop(), None, exc)
                    del exc
                    continue
                self.unfinished_tasks += 1
                self._wake(putters.pop(), None, None)
            else:
                return

    def _try_put(self, item: T) -> bool:
        """Enqueue ``item`` if that needs no wait; False if full. Mutex held."""
        if self.is_shutdown:
            raise _ShutDown(f"put() on a {type(self).__name__} that was shut down")
        if self._putters.live:
            self._settle()  # maxsize may have grown since they blocked
            if self._putters.live:
                return False
        if 0 < self.maxsize <= self._qsize():
            return False
        self._put(item)  # may raise: then nothing was enqueued or counted
        self.unfinished_tasks += 1
        if self._getters.live:
            self._settle()
        return True

    def _try_get(self) -> tuple[bool, Any]:
        """``(True, item)`` if an item can be taken now, ``(False, None)`` if the caller
        must wait; ``ShutDown`` if shut down and empty. Mutex held."""
        if self._qsize():
            item = self._get()  # may raise: then nothing was taken
            if self._putters.live:
                self._settle()
            return True, item
        if self.is_shutdown:
            raise _ShutDown(f"get() on a {type(self).__name__} that was shut down and is empty")
        return False, None

    # -- threads ---------------------------------------------------------------------

    def _no_blocking_here(self, what: str, instead: str) -> None:
        if run_state.loop is not None:
            raise RuntimeError(
                f"{type(self).__name__}.{what} would block, and this thread runs a plait "
                f"loop, which would freeze until it returns; in a task use "
                f"'await queue.{instead}', or pass block=False / call the _nowait form"
            )

    def _thread_wait(self, waiter: _Waiter, timeout: float | None) -> bool:
        """Block this thread until ``waiter`` is woken (True) or ``timeout`` expires
        (False, and the waiter is gone). Mutex NOT held. Waiter's lock already held."""
        lock = waiter.lock
        try:
            if timeout is None:
                lock.acquire()
                return True
            deadline = time.monotonic() + timeout
            while True:
                if lock.acquire(True, min(timeout, _TIMEOUT_MAX)):
                    return True
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
        except BaseException:  # e.g. KeyboardInterrupt in the main thread
            with self.mutex:
                if waiter.state is _WAITING:
                    waiter.wlist.discard(waiter)
                elif waiter.wlist is self._getters and waiter.error is None:
                    # An item reached us as the interrupt struck: give it back (at the
                    # back of the queue, or to the next getter) rather than lose it.
                    self._put(waiter.payload)
                    self._settle()
            raise
        with self.mutex:
            if waiter.state is _WAITING:
                waiter.wlist.discard(waiter)
                return False
        return True  # the hand-over beat the timeout

    def _park_thread(self, wlist: _WaitList, payload: Any) -> _Waiter:
        waiter = _Waiter(wlist, payload)
        waiter.lock = lock = threading.Lock()
        lock.acquire()
        wlist.push(waiter)
        return waiter

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` into the queue, as :meth:`queue.Queue.put`: if full, wait (for
        at most ``timeout`` seconds, then :class:`queue.Full`); with ``block=False``,
        :class:`queue.Full` at once. ``queue.ShutDown`` once shut down."""
        if block:
            timeout = _check_timeout(timeout)
        with self.mutex:
            if self._try_put(item):
                return
            if not block or timeout == 0:
                raise queue.Full
            self._no_blocking_here("put()", "aput(item)")
            waiter = self._park_thread(self._putters, item)
        del item
        if not self._thread_wait(waiter, timeout):
            raise queue.Full
        if waiter.error is not None:
            try:
                raise waiter.error
            finally:
                waiter.error = None

    def put_nowait(self, item: T) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return an item, as :meth:`queue.Queue.get`: if empty, wait (for
        at most ``timeout`` seconds, then :class:`queue.Empty`); with ``block=False``,
        :class:`queue.Empty` at once. ``queue.ShutDown`` once shut down and empty (or
        shut down with ``immediate=True``)."""
        if block:
            timeout = _check_timeout(timeout)
        with self.mutex:
            done, item = self._try_get()
            if done:
                return item  # type: ignore[no-any-return]
            if not block or timeout == 0:
                raise queue.Empty
            self._no_blocking_here("get()", "aget()")
            waiter = self._park_thread(self._getters, None)
        if not self._thread_wait(waiter, timeout):
            raise queue.Empty
        if waiter.error is not None:
            try:
                raise waiter.error
            finally:
                waiter.error = None
        item, waiter.payload = waiter.payload, None
        return item  # type: ignore[no-any-return]

    def get_nowait(self) -> T:
        """``get(block=False)``."""
        return self.get(block=False)

    def task_done(self) -> None:
        """Mark one item taken out as processed (for :meth:`join` / :meth:`ajoin`).
        ``ValueError`` if called more times than items were put."""
        with self.mutex:
            if self.unfinished_tasks <= 0:
                raise ValueError("task_done() called too many times")
            self.unfinished_tasks -= 1
            if not self.unfinished_tasks:
                self._wake_joiners()

    def _wake_joiners(self) -> None:
        joiners = self._joiners
        while joiners.live:
            self._wake(joiners.pop(), None, None)

    def join(self) -> None:
        """Block until every item put has been marked with :meth:`task_done`."""
        with self.mutex:
            if not self.unfinished_tasks:
                return
            self._no_blocking_here("join()", "ajoin()")
            waiter = self._park_thread(self._joiners, None)
        self._thread_wait(waiter, None)

    if sys.version_info >= (3, 13):

        def shutdown(self, immediate: bool = False) -> None:
            """Shut the queue down, as :meth:`queue.Queue.shutdown` (Python 3.13+):
            later puts raise :class:`queue.ShutDown`, and so do gets once the queue is
            empty; blocked putters and getters (threads and tasks) are woken with it.
            ``immediate=True`` also discards the items left, counting each as done
            (which may release :meth:`join`)."""
            with self.mutex:
                self.is_shutdown = True
                name = type(self).__name__
                if immediate:
                    while self._qsize():
                        self._get()
                        if self.unfinished_tasks > 0:
                            self.unfinished_tasks -= 1
                    if not self.unfinished_tasks:
                        self._wake_joiners()
                # Getters block only on an empty queue, putters only on a full one: all
                # of them are done. Each gets an exception of its own.
                while self._putters.live:
                    error = _ShutDown(f"the {name} was shut down during put()")
                    self._wake(self._putters.pop(), None, error)
                while self._getters.live:
                    error = _ShutDown(f"the {name} was shut down during get()")
                    self._wake(self._getters.pop(), None, error)

    # -- tasks -----------------------------------------------------------------------

    def _park_task(self, task: Task, wlist: _WaitList, payload: Any) -> _Waiter:
        waiter = _Waiter(wlist, payload)
        waiter.task = task
        waiter.loop = task._loop
        waiter.mutex = self.mutex
        wlist.push(waiter)
        return waiter

    async def aput(self, item: T) -> None:
        """Put ``item`` into the queue, waiting while it is full. A checkpoint.

        If it raises ``Cancelled``, the item was not enqueued; if it returns, it was
        (a cancellation that arrives once another thread has admitted the item is
        refused for this wait and lands at the next checkpoint). Raises
        ``queue.ShutDown`` once the queue is shut down."""
        loop = run_state.loop
        task = loop._current_task if loop is not None else None
        if task is None:
            task = _current_task(f"{type(self).__name__}.aput()")
        if task._scope._eff:
            raise Cancelled
        with self.mutex:
            waiter = None if self._try_put(item) else self._park_task(task, self._putters, item)
        del item
        if waiter is None:
            await schedule_point()
        else:
            await wait_task_rescheduled(waiter.abort)

    async def aget(self) -> T:
        """Remove and return an item, waiting while the queue is empty. A checkpoint.

        If it raises ``Cancelled``, no item was taken; if an item was already handed to
        this task by another thread when the cancellation arrives, the cancellation is
        refused for this wait: ``aget`` returns the item and ``Cancelled`` comes at the
        next checkpoint. Raises ``queue.ShutDown`` once the queue is shut down and
        empty (or shut down with ``immediate=True``)."""
        loop = run_state.loop
        task = loop._current_task if loop is not None else None
        if task is None:
            task = _current_task(f"{type(self).__name__}.aget()")
        if task._scope._eff:
            raise Cancelled
        with self.mutex:
            done, item = self._try_get()
            waiter = None if done else self._park_task(task, self._getters, None)
        if waiter is None:
            await schedule_point()
            return item  # type: ignore[no-any-return]
        return await wait_task_rescheduled(waiter.abort)  # type: ignore[no-any-return]

    async def ajoin(self) -> None:
        """Wait until every item put has been marked with :meth:`task_done`. A
        checkpoint; cancellation stops the wait."""
        task = _current_task(f"{type(self).__name__}.ajoin()")
        if task._scope._eff:
            raise Cancelled
        with self.mutex:
            waiter = self._park_task(task, self._joiners, None) if self.unfinished_tasks else None
        if waiter is None:
            await schedule_point()
        else:
            await wait_task_rescheduled(waiter.abort)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.aget()
        except _ShutDown:
            raise StopAsyncIteration from None


class ThreadLifoQueue(ThreadQueue[T]):
    """A :class:`ThreadQueue` that returns the most recently added item first."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _put(self, item: T) -> None:
        self.queue.append(item)

    def _get(self) -> T:
        return self.queue.pop()  # type: ignore[no-any-return]


class ThreadPriorityQueue(ThreadQueue[T]):
    """A :class:`ThreadQueue` that returns the smallest item first (``heapq`` order).
    An item that cannot be compared is refused (the error goes to its putter) and
    leaves the heap as it was."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _put(self, item: T) -> None:
        heappush_or_undo(self.queue, item)  # incomparable items: refused, heap intact

    def _get(self) -> T:
        return heapq.heappop(self.queue)  # type: ignore[no-any-return]
