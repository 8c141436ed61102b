"""Synchronisation primitives: Event, Lock, Semaphore, BoundedSemaphore, Condition and
CapacityLimiter. Layer L4, built only on the ParkingLot and the kernel's traps.

Theory of operation. Every primitive is FIFO-fair by *handing over*: when a lock is
released while tasks wait, ownership passes straight to the longest waiter, which is
then woken already holding it; a late arrival cannot barge in ahead. Every ``async``
operation is a checkpoint even when it does not block: it first raises ``Cancelled``
if the task is cancelled (before touching any state), then does its work, then yields
with an *uncancellable* schedule point, so that a cancellation can never strike after
the work is done (a task would otherwise hold a lock it does not know it holds). A
waiter that is cancelled is removed from the queue and never receives what was meant
for it: a lock, a token, a notification.

Rejected: asyncio's design (waiters are futures, the releaser wakes one and the woken
task retries the acquisition): it lets a newcomer barge in ahead of a woken waiter and
needs extra machinery to pass on a wake-up that a cancelled waiter swallowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._core._local import current_loop
from ._core._parking_lot import ParkingLot, _Ticket
from ._core._traps import checkpoint, schedule_point, wait_task_rescheduled
from ._exceptions import Cancelled, WouldBlock
from ._util import describe, public

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._core._task import Task

__all__ = [
    "BoundedSemaphore",
    "CapacityLimiter",
    "CapacityLimiterStatistics",
    "Condition",
    "ConditionStatistics",
    "Event",
    "EventStatistics",
    "Lock",
    "LockStatistics",
    "Semaphore",
    "SemaphoreStatistics",
]


def _current_task(what: str) -> Task:
    task = current_loop(what)._current_task
    if task is None:
        raise RuntimeError(f"{what} must be called from a plait task, not a loop callback")
    return task


def _raise_if_cancelled(task: Task) -> None:
    """The cancel half of a checkpoint, done before an operation changes any state."""
    if task._scope._eff:
        raise Cancelled


class _AsyncLockLike:
    """``async with x:`` is ``await x.acquire()`` ... ``x.release()``."""

    __slots__ = ()

    async def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


# -- Event -----------------------------------------------------------------------------


@public
@dataclass(frozen=True, slots=True)
class EventStatistics:
    tasks_waiting: int


@public
class Event:
    """A flag tasks can wait for. Once set it stays set; waiting is then immediate.

    There is no ``clear()``: an event is a one-shot signal (create a new one for the
    next round). ``bool(event)`` is an error: use :meth:`is_set`.
    """

    __slots__ = ("_flag", "_lot")

    def __init__(self) -> None:
        self._flag = False
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        return f"<plait.Event {'set' if self._flag else 'unset'} waiting={len(self._lot)}>"

    def __bool__(self) -> bool:
        raise TypeError(
            "the truth value of a plait.Event is ambiguous; use event.is_set() to test it "
            "or 'await event.wait()' to wait for it"
        )

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter. Idempotent; not a checkpoint."""
        if not self._flag:
            self._flag = True
            self._lot.unpark_all()

    async def wait(self) -> None:
        """Wait until the event is set. A checkpoint (also if it is set already);
        cancellation stops the wait."""
        if self._flag:
            await checkpoint()
        else:
            await self._lot.park_task(_current_task("Event.wait()"))

    def statistics(self) -> EventStatistics:
        return EventStatistics(tasks_waiting=len(self._lot))


# -- Lock -------------------------------------------------------------------------------


@public
@dataclass(frozen=True, slots=True)
class LockStatistics:
    locked: bool
    owner: Task | None
    tasks_waiting: int


class _LockBase(_AsyncLockLike):
    __slots__ = ("_lot", "_owner")

    def __init__(self) -> None:
        self._owner: Task | None = None
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        owner = f" owner={self._owner.name!r}" if self._owner is not None else ""
        return f"<plait.{type(self).__name__} {'locked' if self._owner else 'unlocked'}{owner}>"

    def locked(self) -> bool:
        return self._owner is not None

    def acquire_nowait(self) -> None:
        """Take the lock now or raise :class:`plait.WouldBlock`."""
        task = _current_task(f"{type(self).__name__}.acquire_nowait()")
        if self._owner is task:
            raise RuntimeError(
                f"{self!r} is already held by this task; a plait Lock is not re-entrant"
            )
        if self._owner is not None or self._lot._live:
            raise WouldBlock
        self._owner = task

    async def acquire(self) -> None:
        """Take the lock, waiting (FIFO) while another task holds it. A checkpoint;
        a cancelled waiter never ends up holding the lock."""
        task = _current_task(f"{type(self).__name__}.acquire()")
        _raise_if_cancelled(task)
        if self._owner is None and not self._lot._live:
            self._owner = task
            await schedule_point()
            return
        if self._owner is task:
            raise RuntimeError(
                f"{self!r} is already held by this task; a plait Lock is not re-entrant"
            )
        await self._lot.park(what=f"{type(self).__name__}.acquire()")  # woken as owner

    def release(self) -> None:
        """Release the lock; the longest waiter, if any, gets it. Not a checkpoint.
        ``RuntimeError`` if the current task does not hold it."""
        task = current_loop(f"{type(self).__name__}.release()")._current_task
        if task is None:
            raise RuntimeError(
                f"{type(self).__name__}.release() called from a loop callback; a lock is "
                "owned by a task and must be released by that task"
            )
        if self._owner is not task:
            who = "nobody" if self._owner is None else f"task {self._owner.name!r}"
            raise RuntimeError(
                f"{type(self).__name__}.release() called by a task that does not hold the "
                f"lock (it is held by {who}); release it from the task that acquired it"
            )
        self._release()

    def _release(self) -> None:
        if self._lot:
            self._owner = self._lot.unpark()
        else:
            self._owner = None

    def statistics(self) -> LockStatistics:
        return LockStatistics(
            locked=self._owner is not None, owner=self._owner, tasks_waiting=len(self._lot)
        )


@public
class Lock(_LockBase):
    """A mutual-exclusion lock, FIFO-fair, owned by the task that acquired it.

    ``async with lock: ...``. Not re-entrant; only the owner may release it.
    """

    __slots__ = ()


# -- Semaphore -------------------------------------------------------------------------


@public
@dataclass(frozen=True, slots=True)
class SemaphoreStatistics:
    value: int
    max_value: int | None
    tasks_waiting: int


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {describe(value)}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


@public
class Semaphore(_AsyncLockLike):
    """A counter of tokens: ``acquire`` takes one (waiting, FIFO, while none is left),
    ``release`` gives one back. Any task may release."""

    __slots__ = ("_lot", "_value")

    def __init__(self, value: int = 1) -> None:
        self._value = _check_count(value, "Semaphore initial value")
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        return f"<plait.{type(self).__name__} value={self._value} waiting={len(self._lot)}>"

    @property
    def value(self) -> int:
        return self._value

    def acquire_nowait(self) -> None:
        """Take a token now or raise :class:`plait.WouldBlock`."""
        if self._value <= 0 or self._lot._live:
            raise WouldBlock
        self._value -= 1

    async def acquire(self) -> None:
        """Take a token, waiting FIFO while there is none. A checkpoint; a cancelled
        waiter never takes a token."""
        task = _current_task(f"{type(self).__name__}.acquire()")
        _raise_if_cancelled(task)
        if self._value > 0 and not self._lot._live:
            self._value -= 1
            await schedule_point()
            return
        await self._lot.park(what=f"{type(self).__name__}.acquire()")  # token handed over

    def release(self) -> None:
        """Give a token back (to the longest waiter, if any). Not a checkpoint."""
        if self._lot:
            self._lot.unpark()
        else:
            self._value += 1

    def statistics(self) -> SemaphoreStatistics:
        return SemaphoreStatistics(value=self._value, max_value=None, tasks_waiting=len(self._lot))


@public
class BoundedSemaphore(Semaphore):
    """A Semaphore that refuses to be released above its initial value."""

    __slots__ = ("_max",)

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._max = self._value

    def release(self) -> None:
        """Give a token back; ``ValueError`` if that would exceed the initial value
        (more releases than acquires: a bug in the caller)."""
        if not self._lot and self._value >= self._max:
            raise ValueError(
                f"BoundedSemaphore released too many times (value would exceed "
                f"{self._max}); every release() must match an acquire()"
            )
        super().release()

    def statistics(self) -> SemaphoreStatistics:
        return SemaphoreStatistics(
            value=self._value, max_value=self._max, tasks_waiting=len(self._lot)
        )


# -- Condition -------------------------------------------------------------------------


@public
@dataclass(frozen=True, slots=True)
class ConditionStatistics:
    tasks_waiting: int
    lock_statistics: LockStatistics


@public
class Condition(_AsyncLockLike):
    """Wait for a notification while holding a lock (``Condition(lock=None)`` makes
    its own :class:`Lock`).

    ``async with cond: await cond.wait_for(lambda: ready)``; another task, holding the
    lock, changes the state and calls ``cond.notify()``. Notified waiters get the lock
    back in FIFO order. A waiter cancelled after being notified passes the
    notification on to the next waiter, so none is lost.
    """

    __slots__ = ("_lock", "_lot")

    def __init__(self, lock: Lock | None = None) -> None:
        if lock is None:
            lock = Lock()
        elif not isinstance(lock, Lock):
            raise TypeError(f"Condition(lock) needs a plait.Lock, got {describe(lock)}")
        self._lock = lock
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        return f"<plait.Condition waiting={len(self._lot)} lock={self._lock!r}>"

    def locked(self) -> bool:
        return self._lock.locked()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    async def acquire(self) -> None:
        await self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def _check_owner(self, what: str) -> Task:
        task = _current_task(f"Condition.{what}()")
        if self._lock._owner is not task:
            raise RuntimeError(
                f"Condition.{what}() needs the condition's lock: call it inside "
                "'async with condition:'"
            )
        return task

    async def wait(self) -> None:
        """Release the lock, wait for a notification, and take the lock back (FIFO
        among the notified). A checkpoint. On cancellation the lock is taken back
        before ``Cancelled`` propagates, so the caller's ``async with`` stays correct.
        Wake-ups can be spurious from the caller's point of view: re-check your
        predicate, or use :meth:`wait_for`."""
        task = self._check_owner("wait")
        _raise_if_cancelled(task)
        ticket = _Ticket(self._lot, task, None)
        self._lot._add(ticket)
        self._lock._release()
        try:
            await wait_task_rescheduled(ticket)  # woken holding the lock (handover)
        except BaseException:
            notified = ticket.moved
            if self._lock._owner is not task:
                await _acquire_shielded(self._lock, task)
            if notified:
                self.notify(1)  # we were cancelled after a notify: pass it on
            raise

    async def wait_for(self, predicate: Callable[[], Any]) -> Any:
        """Wait until ``predicate()`` is true (it is checked first, then after every
        wake-up); returns its last value. A checkpoint."""
        task = self._check_owner("wait_for")
        result = predicate()
        if result:
            _raise_if_cancelled(task)
            await schedule_point()
            return result
        while not result:
            await self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (they then queue for the lock). Needs the lock."""
        self._check_owner("notify")
        self._lot.repark(self._lock._lot, _check_count(n, "notify() count"))

    def notify_all(self) -> None:
        """Wake every waiter. Needs the lock."""
        self._check_owner("notify_all")
        self._lot.repark(self._lock._lot, len(self._lot))

    def statistics(self) -> ConditionStatistics:
        return ConditionStatistics(
            tasks_waiting=len(self._lot), lock_statistics=self._lock.statistics()
        )


async def _acquire_shielded(lock: _LockBase, task: Task) -> None:
    """Take ``lock`` back without being cancellable (cleanup after a cancelled wait)."""
    if lock._owner is None and not lock._lot:
        lock._owner = task
        return
    ticket = _Ticket(lock._lot, task, None)
    lock._lot._add(ticket)
    await wait_task_rescheduled(_refuse_abort)


def _refuse_abort(_: Any) -> Any:
    from ._core._traps import Abort

    return Abort.FAILED


# -- CapacityLimiter --------------------------------------------------------------------


@public
@dataclass(frozen=True, slots=True)
class CapacityLimiterStatistics:
    borrowed_tokens: int
    total_tokens: float
    borrowers: list[object]
    tasks_waiting: int


@public
class CapacityLimiter(_AsyncLockLike):
    """At most ``total_tokens`` borrowers at a time (e.g. concurrent worker threads).

    Each borrower (by default the current task) holds at most one token.
    ``total_tokens`` may be changed while in use; raising it wakes waiters.
    """

    __slots__ = ("_borrowers", "_lot", "_total", "_waiting")

    def __init__(self, total_tokens: float) -> None:
        self._total = self._check_total(total_tokens)
        self._borrowers: set[object] = set()
        # Borrower -> its ticket in _lot; it waits while the ticket is still there (an
        # aborted wait leaves the lot at once, before the cancelled task runs again).
        self._waiting: dict[object, _Ticket] = {}
        self._lot = ParkingLot()

    @staticmethod
    def _check_total(value: object) -> float:
        if value == math.inf:
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"CapacityLimiter total_tokens must be an int or math.inf, got {describe(value)}"
            )
        if value < 1:
            raise ValueError(f"CapacityLimiter total_tokens must be >= 1, got {value}")
        return value

    def __repr__(self) -> str:
        return (
            f"<plait.CapacityLimiter {len(self._borrowers)}/{self._total} borrowed, "
            f"waiting={len(self._lot)}>"
        )

    @property
    def total_tokens(self) -> float:
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self._total = self._check_total(value)
        self._wake()

    @property
    def borrowed_tokens(self) -> int:
        return len(self._borrowers)

    @property
    def available_tokens(self) -> float:
        return self._total - len(self._borrowers)

    def _wake(self) -> None:
        while self._lot and len(self._borrowers) < self._total:
            _task, borrower = self._lot.first()
            del self._waiting[borrower]
            self._borrowers.add(borrower)
            self._lot.unpark()

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Borrow a token for ``borrower`` now or raise :class:`plait.WouldBlock`."""
        ticket = self._waiting.get(borrower)
        waiting = ticket is not None and ticket.lot is self._lot
        if borrower in self._borrowers or waiting:
            state = "already holds" if borrower in self._borrowers else "is already waiting for"
            raise RuntimeError(
                f"{borrower!r} {state} a token of this CapacityLimiter; each borrower "
                "may hold (or wait for) one"
            )
        if len(self._borrowers) >= self._total or self._lot._live:
            raise WouldBlock
        self._borrowers.add(borrower)

    def acquire_nowait(self) -> None:
        self.acquire_on_behalf_of_nowait(_current_task("CapacityLimiter.acquire_nowait()"))

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Borrow a token for ``borrower``, waiting FIFO. A checkpoint."""
        task = _current_task("CapacityLimiter.acquire()")
        _raise_if_cancelled(task)
        try:
            self.acquire_on_behalf_of_nowait(borrower)
        except WouldBlock:
            ticket = self._waiting[borrower] = _Ticket(self._lot, task, borrower)
            self._lot._add(ticket)
            try:
                await wait_task_rescheduled(ticket)
            finally:
                if self._waiting.get(borrower) is ticket:
                    del self._waiting[borrower]
        else:
            await schedule_point()

    async def acquire(self) -> None:
        await self.acquire_on_behalf_of(_current_task("CapacityLimiter.acquire()"))

    def release_on_behalf_of(self, borrower: object) -> None:
        """Return ``borrower``'s token. ``RuntimeError`` if it holds none."""
        if borrower not in self._borrowers:
            raise RuntimeError(
                f"CapacityLimiter.release(): {borrower!r} holds no token of this limiter"
            )
        self._borrowers.remove(borrower)
        self._wake()

    def release(self) -> None:
        self.release_on_behalf_of(_current_task("CapacityLimiter.release()"))

    def statistics(self) -> CapacityLimiterStatistics:
        return CapacityLimiterStatistics(
            borrowed_tokens=len(self._borrowers),
            total_tokens=self._total,
            borrowers=list(self._borrowers),
            tasks_waiting=len(self._lot),
        )
