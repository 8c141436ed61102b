"""ParkingLot: a FIFO queue of parked tasks, the building block of every primitive.

Layer L3. Theory of operation: a task parks by registering itself (with an optional
datum, e.g. the item a blocked ``put`` carries) and waiting in
``wait_task_rescheduled``. Whoever wakes it removes it from the lot first and then
reschedules it exactly once, so a task is never both parked here and runnable.
Cancellation removes the entry (the abort function), so a cancelled waiter never
receives what was meant for the next one.

Each entry is one small ``_Ticket`` object: it is the abort function (``__call__``),
it remembers the task's datum, and it knows which lot it is in, so
:meth:`ParkingLot.repark` can move waiters to another lot (a Condition hands its
notified waiters to its lock's lot) and their abort still finds them. A ticket is
smaller than a closure plus its cells, which matters with 100k idle tasks.
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._local import current_loop
from ._traps import Abort, RaiseCancelT, _Park, checkpoint

if TYPE_CHECKING:
    from ._task import Task

__all__ = ["ParkingLot", "ParkingLotStatistics"]


@dataclass(frozen=True, slots=True)
class ParkingLotStatistics:
    tasks_waiting: int


class _Ticket:
    __slots__ = ("data", "lot", "moved", "task")

    def __init__(self, lot: ParkingLot, task: Task, data: Any) -> None:
        self.lot: ParkingLot | None = lot  # None once unparked or aborted
        self.task = task
        self.data = data
        self.moved = False  # set by repark()

    def __call__(self, _: RaiseCancelT) -> Abort:
        lot = self.lot
        if lot is not None:
            self.lot = None
            # A dead ticket may sit in the deque for a while: keep neither the task
            # nor its datum (a cancelled put's item) alive through it.
            self.task = self.data = None  # type: ignore[assignment]
            lot._live -= 1
            lot._dead += 1
            if lot._dead > 64 and lot._dead > lot._live:
                lot._compact()
        return Abort.SUCCEEDED


class ParkingLot:
    """Parked tasks in FIFO order. Loop thread only.

    A deque of tickets with lazy deletion: aborting marks a ticket dead in O(1) and
    unparking skips dead ones; when dead tickets outnumber live ones the deque is
    rebuilt. (A dict keyed by task would be O(1) to delete from, but popping its
    oldest entry is not: iteration walks over the holes deletions leave at the front.)
    """

    __slots__ = ("_dead", "_live", "_tickets")

    def __init__(self) -> None:
        self._tickets: deque[_Ticket] = deque()
        # Invariant: _live + _dead == len(_tickets); _live tickets have lot is self.
        self._live = 0
        self._dead = 0

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def __repr__(self) -> str:
        return f"<plait.lowlevel.ParkingLot waiting={self._live}>"

    def _compact(self) -> None:
        self._tickets = deque(t for t in self._tickets if t.lot is self)
        self._dead = 0

    def _pop(self) -> _Ticket:
        tickets = self._tickets
        while True:
            ticket = tickets.popleft()  # IndexError when empty: the caller's problem
            if ticket.lot is self:
                self._live -= 1
                ticket.lot = None
                return ticket
            self._dead -= 1

    def _peek(self) -> _Ticket:
        tickets = self._tickets
        while tickets[0].lot is not self:
            tickets.popleft()
            self._dead -= 1
        return tickets[0]

    def _add(self, ticket: _Ticket) -> None:
        ticket.lot = self
        self._tickets.append(ticket)
        self._live += 1

    @types.coroutine
    def park(
        self, data: Any = None, *, what: str = "ParkingLot.park()"
    ) -> Generator[Any, Any, Any]:
        """Park the current task until it is unparked; returns the value it is woken with.

        ``data`` travels with the entry (see :meth:`first`). Cancellation removes the
        entry and raises ``Cancelled``. The task registers when the await starts, not
        when this is called.
        """
        task = current_loop(what)._current_task
        if task is None:
            raise RuntimeError(f"{what} must be awaited in a plait task")
        return (yield from self.park_task(task, data))

    def park_task(self, task: Task, data: Any = None) -> Any:
        """:meth:`park` for callers that already know the current task (no lookup).
        Registers at once: await the result right away."""
        ticket = _Ticket(self, task, data)
        self._tickets.append(ticket)
        self._live += 1
        return checkpoint(_Park(ticket))  # = wait_task_rescheduled(ticket)

    def first(self) -> tuple[Task, Any]:
        """The task that has waited longest and its datum (without unparking it).
        ``IndexError`` if nobody waits."""
        if not self._live:
            raise IndexError("nobody is parked")
        ticket = self._peek()
        return ticket.task, ticket.data

    def unpark(self, value: Any = None, *, error: BaseException | None = None) -> Task:
        """Wake the task that has waited longest with ``value`` (or ``error``); return it.
        ``IndexError`` if nobody waits."""
        if not self._live:
            raise IndexError("nobody is parked")
        task = self._pop().task
        task._loop._kernel_reschedule(task, value, error)
        return task

    def unpark_all(self, value: Any = None) -> int:
        """Wake every parked task with ``value``, in FIFO order; return how many. (To
        wake them with an error, give each its own exception: loop over
        :meth:`unpark`.)"""
        woken = 0
        while self._live:
            task = self._pop().task
            task._loop._kernel_reschedule(task, value, None)
            woken += 1
        self._tickets.clear()
        self._dead = 0
        return woken

    def repark(self, other: ParkingLot, count: int = 1) -> int:
        """Move up to ``count`` waiters (oldest first) to the back of ``other``, still
        parked; return how many moved."""
        moved = 0
        while moved < count and self._live:
            ticket = self._pop()
            ticket.moved = True
            other._add(ticket)
            moved += 1
        return moved

    def tasks(self) -> list[Task]:
        """The parked tasks, oldest first."""
        return [t.task for t in self._tickets if t.lot is self]

    def statistics(self) -> ParkingLotStatistics:
        return ParkingLotStatistics(tasks_waiting=self._live)
