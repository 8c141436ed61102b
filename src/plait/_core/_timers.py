"""The deadline queue: a binary heap with lazy deletion. Pure data, layer L1.

Theory of operation: an entry is a small list ``[when, seq, fn, arg]``. ``seq`` is
unique and increasing, so heap comparisons never reach ``fn`` and equal deadlines fire
in insertion order. Cancelling sets ``fn`` to ``None`` in O(1); the dead entry is
dropped when it reaches the top. When more than half of a large heap is dead, the heap
is rebuilt, so a program that keeps moving deadlines cannot grow it without bound.
Rejected: a sorted container (O(n) insert) and a timer wheel (needs a tick; virtual
time would have to step through empty slots).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

__all__ = ["TimerEntry", "TimerQueue"]

# [when, seq, fn, arg]; fn is None once cancelled or fired.
TimerEntry = list[Any]

_COMPACT_MIN = 256


class TimerQueue:
    """Deadlines with callbacks. Not thread-safe: only the loop's thread touches it."""

    __slots__ = ("_counter", "_dead", "_heap")

    def __init__(self) -> None:
        self._heap: list[TimerEntry] = []
        self._counter = itertools.count()
        # Invariant: _dead == number of entries in _heap whose fn is None.
        self._dead = 0

    def __len__(self) -> int:
        """Live (not cancelled) entries."""
        return len(self._heap) - self._dead

    def push(self, when: float, fn: Callable[[Any], object], arg: Any) -> TimerEntry:
        """Schedule ``fn(arg)`` at ``when``; returns the entry to pass to :meth:`cancel`."""
        entry = [when, next(self._counter), fn, arg]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: TimerEntry) -> None:
        """Forget ``entry`` in O(1). Cancelling a fired or cancelled entry does nothing."""
        if entry[2] is None:
            return
        entry[2] = entry[3] = None
        self._dead += 1
        heap = self._heap
        if self._dead > _COMPACT_MIN and self._dead * 2 > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)
            self._dead = 0

    def next_deadline(self) -> float:
        """The earliest live deadline, or ``inf`` when there is none."""
        heap = self._heap
        while heap:
            top = heap[0]
            if top[2] is not None:
                return float(top[0])
            heapq.heappop(heap)
            self._dead -= 1
        return math.inf

    def fire_due(self, now: float) -> int:
        """Call ``fn(arg)`` for every live entry due at ``now``, earliest first.

        An entry that a callback schedules for ``now`` or earlier fires in the same call.
        Returns the number of callbacks made.
        """
        heap = self._heap
        pop = heapq.heappop
        fired = 0
        while heap and heap[0][0] <= now:
            entry = pop(heap)
            fn = entry[2]
            if fn is None:
                self._dead -= 1
                continue
            arg = entry[3]
            entry[2] = entry[3] = None
            fired += 1
            fn(arg)
        return fired
