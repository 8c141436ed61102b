"""Queues between tasks: Queue (FIFO), LifoQueue and PriorityQueue. Layer L4.

Theory of operation: the items live in a container (deque, list or heap); blocked
getters wait in one ParkingLot, blocked putters in another, each putter's ticket
carrying its item. The rules that make the queue lose and duplicate nothing:

- A ``put`` that finds a getter waiting hands the item straight to it (the getter is
  woken *with* the item) and has then completed: the schedule point after it cannot be
  cancelled, so "the put raised Cancelled" always means "the item was not enqueued".
- A ``get`` takes the item, lets the oldest blocked putter's item into the freed place
  (that putter is woken as having completed), then yields uncancellably: "the get
  raised Cancelled" always means "no item was consumed".
- A blocked putter that is cancelled is removed with its item, which never enters the
  queue; a blocked getter that is cancelled is removed before any item reaches it.
- ``close()``: later ``put`` calls raise ``ClosedResourceError`` (blocked putters too:
  their items were not enqueued); ``get`` drains what is left, then raises
  ``EndOfStream`` (blocked getters at once: the queue is empty if they block).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._core._local import run_state
from ._core._parking_lot import ParkingLot
from ._core._traps import _SCHEDULE_POINT, checkpoint, schedule_point
from ._exceptions import Cancelled, ClosedResourceError, EndOfStream, WouldBlock
from ._sync import _current_task, _raise_if_cancelled
from ._util import describe, heappush_or_undo, public

__all__ = ["LifoQueue", "PriorityQueue", "Queue", "QueueStatistics"]

T = TypeVar("T")


@public
@dataclass(frozen=True, slots=True)
class QueueStatistics:
    qsize: int
    maxsize: float
    closed: bool
    tasks_waiting_get: int
    tasks_waiting_put: int
    unfinished_tasks: int


@public
class Queue(Generic[T]):
    """A FIFO queue between tasks. ``maxsize=0`` (or ``math.inf``) means unbounded.

    ``await put(x)`` / ``await get()`` wait while full / empty; the ``_nowait`` forms
    raise :class:`plait.WouldBlock` instead. ``close()`` ends it: ``get`` drains then
    raises :class:`plait.EndOfStream` (``async for item in queue`` stops there) and
    ``put`` raises :class:`plait.ClosedResourceError`. ``task_done()``/``join()`` as
    in :mod:`asyncio`.
    """

    def __init__(self, maxsize: float = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int | float):
            raise TypeError(f"Queue maxsize must be an int >= 0, got {describe(maxsize)}")
        if maxsize != math.inf and (math.isnan(maxsize) or maxsize < 0 or maxsize != int(maxsize)):
            raise ValueError(f"Queue maxsize must be an int >= 0 (0: unbounded), got {maxsize!r}")
        self._maxsize: float = math.inf if maxsize == 0 else maxsize
        self._init_items()
        self._getters = ParkingLot()
        self._putters = ParkingLot()
        self._joiners = ParkingLot()
        self._unfinished = 0
        self._closed = False

    # The container: overridden by LifoQueue and PriorityQueue.
    def _init_items(self) -> None:
        self._items: Any = deque()

    def _push(self, item: T) -> None:
        self._items.append(item)

    def _pop(self) -> T:
        return self._items.popleft()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        size = "" if self._maxsize == math.inf else f"/{int(self._maxsize)}"
        closed = " closed" if self._closed else ""
        return f"<plait.{type(self).__name__} {len(self._items)}{size}{closed}>"

    @property
    def maxsize(self) -> int:
        """The bound given to the constructor (0: unbounded)."""
        return 0 if self._maxsize == math.inf else int(self._maxsize)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def closed(self) -> bool:
        return self._closed

    # -- put ---------------------------------------------------------------------------

    def put_nowait(self, item: T) -> None:
        """Enqueue ``item`` now; :class:`plait.WouldBlock` if full,
        :class:`plait.ClosedResourceError` if closed."""
        if not self._try_put(item):
            raise WouldBlock

    def _try_put(self, item: T) -> bool:
        """Enqueue ``item`` if that needs no wait; False if the queue is full."""
        if self._closed:
            raise ClosedResourceError(f"put on a closed {type(self).__name__}")
        if self._getters._live:
            self._unfinished += 1
            self._getters.unpark(item)  # the getter wakes with it: no container trip
        elif len(self._items) < self._maxsize:
            self._push(item)  # may raise (PriorityQueue: incomparable): nothing counted
            self._unfinished += 1
        else:
            return False
        return True

    async def put(self, item: T) -> None:
        """Enqueue ``item``, waiting while the queue is full. A checkpoint. If it raises
        ``Cancelled``, the item was not enqueued; if it returns, it was."""
        loop = run_state.loop
        task = loop._current_task if loop is not None else None
        if task is None:
            task = _current_task(f"{type(self).__name__}.put()")
        if task._scope._eff:
            raise Cancelled
        if self._try_put(item):
            await checkpoint(_SCHEDULE_POINT)  # = schedule_point(): the put is done
        else:
            await self._putters.park_task(task, item)

    # -- get ---------------------------------------------------------------------------

    def get_nowait(self) -> T:
        """Dequeue an item now; :class:`plait.WouldBlock` if empty,
        :class:`plait.EndOfStream` if empty and closed."""
        if self._items:
            item = self._pop()
            if self._putters._live:
                self._admit_putters()
            return item
        if self._closed:
            raise EndOfStream(f"the {type(self).__name__} is closed and empty")
        raise WouldBlock

    def _admit_putters(self) -> None:
        """Room was made: the oldest blocked puts complete now (or fail, if their item
        cannot enter: the putter gets the error and its item stays out)."""
        putters = self._putters
        while putters._live and len(self._items) < self._maxsize:
            _task, waiting_item = putters.first()
            try:
                self._push(waiting_item)
            except Exception as exc:
                putters.unpark(error=exc)
                del exc
            else:
                self._unfinished += 1
                putters.unpark()

    async def get(self) -> T:
        """Dequeue an item, waiting while the queue is empty. A checkpoint. If it raises
        ``Cancelled``, no item was consumed. :class:`plait.EndOfStream` once the queue
        is closed and drained."""
        loop = run_state.loop
        task = loop._current_task if loop is not None else None
        if task is None:
            task = _current_task(f"{type(self).__name__}.get()")
        if task._scope._eff:
            raise Cancelled
        if not self._items and not self._closed:
            return await self._getters.park_task(task)  # type: ignore[no-any-return]
        item = self.get_nowait()  # an item, or EndOfStream when closed
        await checkpoint(_SCHEDULE_POINT)  # = schedule_point()
        return item

    # -- close, iteration, join ---------------------------------------------------------

    def close(self) -> None:
        """No more puts: blocked and later putters get ClosedResourceError; getters
        drain what is left, then get EndOfStream. Idempotent; not a checkpoint."""
        if self._closed:
            return
        self._closed = True
        name = type(self).__name__
        # Each waiter gets an exception of its own (a shared one would collect every
        # waiter's frames in one traceback).
        while self._putters._live:
            self._putters.unpark(error=ClosedResourceError(f"the {name} was closed during put()"))
        # Getters only block on an empty queue: they are done.
        while self._getters._live:
            self._getters.unpark(error=EndOfStream(f"the {name} was closed"))

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except EndOfStream:
            raise StopAsyncIteration from None

    def task_done(self) -> None:
        """Mark one item taken with ``get`` as processed (for :meth:`join`)."""
        if self._unfinished <= 0:
            raise ValueError(
                "task_done() called more times than there were items put in the queue"
            )
        self._unfinished -= 1
        if not self._unfinished:
            self._joiners.unpark_all()

    async def join(self) -> None:
        """Wait until every item put has been marked with :meth:`task_done`. A
        checkpoint."""
        task = _current_task(f"{type(self).__name__}.join()")
        _raise_if_cancelled(task)
        if self._unfinished:
            await self._joiners.park(what=f"{type(self).__name__}.join()")
        else:
            await schedule_point()

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            qsize=len(self._items),
            maxsize=self.maxsize,
            closed=self._closed,
            tasks_waiting_get=len(self._getters),
            tasks_waiting_put=len(self._putters),
            unfinished_tasks=self._unfinished,
        )


@public
class LifoQueue(Queue[T]):
    """A queue that returns the most recently added item first."""

    def _init_items(self) -> None:
        self._items = []

    def _push(self, item: T) -> None:
        self._items.append(item)

    def _pop(self) -> T:
        return self._items.pop()  # type: ignore[no-any-return]


@public
class PriorityQueue(Queue[T]):
    """A queue that returns the smallest item first (``heapq`` order; use
    ``(priority, seq, item)`` tuples for ties)."""

    def _init_items(self) -> None:
        self._items = []

    def _push(self, item: T) -> None:
        heappush_or_undo(self._items, item)  # incomparable items: refused, heap intact

    def _pop(self) -> T:
        return heapq.heappop(self._items)  # type: ignore[no-any-return]
