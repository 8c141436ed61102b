"""A drop-in replacement for the standard library's :mod:`sched`, whose waits a plait
:class:`~plait.Loop` does.

Usage is the standard library's: ``from plait.sched import scheduler``, then
``enter``/``enterabs``/``cancel``/``run`` exactly as with ``sched.scheduler``.

Theory of operation. The queue is the standard library's: a heap of :class:`Event`
tuples ordered by ``(time, priority, sequence)`` behind a re-entrant lock, so that
``enter``/``cancel``/``queue`` may be called from any thread, also from inside an action
or the delay function. :meth:`scheduler.run` keeps the standard loop step for step: under
the lock it peeks at the first event and reads ``timefunc()`` once; a due event is popped
and, outside the lock, its action is called and then ``delayfunc(0)``; otherwise
``run`` waits ``time - now`` and looks again. With a ``delayfunc`` of your own, every
call of ``timefunc`` and ``delayfunc`` happens exactly as the standard library makes it.

Only one thing differs, and only when ``delayfunc`` is ``time.sleep`` (the default, or
passed explicitly; any ``timefunc``): instead of ``time.sleep(time - now)``, ``run``
sleeps on a private :class:`~plait.Loop` (one per blocking ``run`` call, created at its
first wait and closed when it returns): a timer stops the loop after ``time - now``
seconds, and an ``enter`` of an earlier event from another thread (or a signal handler)
stops it at once through ``call_soon_threadsafe``, so the new event runs on time. The
standard library sleeps on and runs it late. An early return is safe because the
standard contract already says that a delay function that returns prematurely is simply
restarted; no other observable behaviour changes (``timefunc`` and ``delayfunc(0)`` are
called as before). ``run`` falls back to ``time.sleep`` itself for delays that are not
finite real numbers (so the errors are the standard ones) and when a plait loop already
runs in the calling thread (a plait loop cannot be nested; a blocking call inside a task
blocks it, as ``sched`` would).

Rejected: scheduling each event as a ``Loop.call_at`` timer and running the loop until
the queue is empty. The loop reports a callback's exception to its exception handler
and carries on, while ``sched`` must let an action's error escape ``run``; the loop's
timers know neither priorities nor the user's ``timefunc``; and an action could not call
``plait.run`` inside a running loop. Here actions run in ``run``'s own frame, with no
plait loop running, exactly as with the standard library.

Input that the standard library accepts and then misbehaves on later (a non-callable
action, an ``argument`` that is not iterable, ``kwargs`` that are not a mapping, a NaN
time, which silently breaks the heap order) is rejected at once with ``TypeError`` or
``ValueError``; any input the standard library handles correctly is accepted.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time as _time_module
from collections.abc import Callable
from typing import Any, NamedTuple

from ._core._kernel import Loop
from ._core._local import current_loop_or_none
from ._util import describe

__all__ = ["Event", "scheduler"]

_real_sleep = _time_module.sleep


class Event(NamedTuple):
    """A scheduled event, as returned by :meth:`scheduler.enter`; also the ID to cancel it.

    Events compare by ``(time, priority, sequence)``: ``sequence`` is unique within a
    scheduler, so events with equal time and priority run in the order they were entered.

    Attributes:
        time: when the event is due, in the units of the scheduler's ``timefunc``.
        priority: among events due at the same time, lower values run first.
        sequence: a number that increases with every event entered; breaks the ties.
        action: running the event calls ``action(*argument, **kwargs)``.
        argument: the positional arguments of ``action``.
        kwargs: the keyword arguments of ``action``.
    """

    time: float
    priority: Any
    sequence: int
    action: Callable[..., Any]
    argument: tuple[Any, ...]
    kwargs: dict[str, Any]


class _Missing:
    """Type of the marker for "no ``kwargs`` given" (each event then gets a new dict)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no kwargs>"


_MISSING: Any = _Missing()


def _check_time(value: Any, what: str) -> None:
    # Only NaN: times may be of any type that supports the comparisons the user needs.
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(
            f"{what} is NaN: a NaN time compares false with every other time, so the "
            "queue could not keep its order. Pass a number."
        )


def _sleepable(delay: object) -> bool:
    """Whether the loop can sleep ``delay`` seconds (else ``time.sleep`` gets it)."""
    return (
        isinstance(delay, int | float)
        and not isinstance(delay, bool)
        and math.isfinite(delay)
        and delay > 0
    )


class _Waiter:
    """The private plait loop on which one blocking :meth:`scheduler.run` call sleeps.

    ``arm``, ``sleep`` and ``close`` are called by the thread of that ``run`` call;
    ``wake`` by any thread. ``arm`` and ``wake`` need the scheduler's lock.
    """

    __slots__ = ("_generation", "_loop", "deadline")

    def __init__(self) -> None:
        self._loop = Loop()
        # Invariant (under the scheduler's lock): ``deadline`` is the time of the event
        # the ``run`` call is about to sleep (or sleeps) until, and None when that call
        # is not sleeping or has been woken already.
        self.deadline: Any = None
        # Incremented by each ``arm``: tells the current sleep's wake-up from a stale one.
        self._generation = 0

    def arm(self, deadline: Any) -> None:
        """Announce a sleep until ``deadline``; ``enter`` will wake it for anything earlier."""
        self.deadline = deadline
        self._generation += 1

    def disarm(self) -> None:
        self.deadline = None

    def wake(self) -> None:
        """End the current (or imminent) sleep now. Any thread; scheduler lock held."""
        self.deadline = None
        self._loop.call_soon_threadsafe(self._on_wake, self._generation)

    def _on_wake(self, generation: int) -> None:
        # Discussion (stale wake-ups): ``wake`` may send its callback just after the
        # sleep it meant to end has ended on its own (the timer fired first). The
        # callback then runs during a later sleep, which it must not cut short; the
        # generation tells them apart. Only ``arm``, in this same thread, changes it,
        # so the comparison needs no lock.
        if generation == self._generation:
            self._loop.stop()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (> 0) or until :meth:`wake`, whichever comes first.

        A wake sent after :meth:`arm` and before this call is not lost: it waits in the
        loop's thread-safe queue and stops the loop as soon as it starts.
        """
        loop = self._loop
        timer = loop.call_later(seconds, loop.stop)
        try:
            loop.run()
        finally:
            timer.cancel()

    def close(self) -> None:
        self._loop.close()


class scheduler:  # lower case: the standard library's name, for a drop-in replacement
    """An event scheduler, compatible with :class:`sched.scheduler`.

    Args:
        timefunc: returns the current time, in any units (default ``time.monotonic``).
        delayfunc: waits for a duration in the same units (default ``time.sleep``).
            With ``time.sleep``, :meth:`run` waits on a plait loop instead, so that an
            earlier event entered from another thread while it waits runs on time.

    Any method may be called from any thread.
    """

    def __init__(
        self,
        timefunc: Callable[[], float] = _time_module.monotonic,
        delayfunc: Callable[[float], object] = _time_module.sleep,
    ) -> None:
        self._queue: list[Event] = []
        self._lock = threading.RLock()
        self.timefunc = timefunc
        self.delayfunc = delayfunc
        self._sequence = itertools.count()
        # The loops of the blocking run() calls in progress. Guarded by _lock.
        self._waiters: set[_Waiter] = set()

    def enterabs(
        self,
        time: float,
        priority: Any,
        action: Callable[..., object],
        argument: tuple[Any, ...] = (),
        kwargs: dict[str, Any] = _MISSING,
    ) -> Event:
        """Schedule ``action(*argument, **kwargs)`` at the absolute ``time``.

        Args:
            time: when to run it, in the units of ``timefunc``.
            priority: orders events due at the same time (lower runs first).
            action: the callable to call.
            argument: its positional arguments.
            kwargs: its keyword arguments (default: none).

        Returns:
            The event, which is also its ID for :meth:`cancel`.

        Raises:
            TypeError: ``action`` is not callable, ``argument`` is not iterable or
                ``kwargs`` is not a mapping.
            ValueError: ``time`` is NaN.
        """
        if kwargs is _MISSING:
            kwargs = {}
        _check_time(time, "enterabs() time")
        self._check_event(action, argument, kwargs)
        with self._lock:
            event = Event(time, priority, next(self._sequence), action, argument, kwargs)
            heapq.heappush(self._queue, event)
            if self._waiters:
                for waiter in self._waiters:
                    if waiter.deadline is not None and time < waiter.deadline:
                        waiter.wake()
        return event

    def enter(
        self,
        delay: float,
        priority: Any,
        action: Callable[..., object],
        argument: tuple[Any, ...] = (),
        kwargs: dict[str, Any] = _MISSING,
    ) -> Event:
        """Schedule ``action(*argument, **kwargs)`` ``delay`` time units from now.

        Same as ``enterabs(timefunc() + delay, priority, action, argument, kwargs)``;
        a delay <= 0 makes the event due at once.

        Raises:
            TypeError: as :meth:`enterabs`.
            ValueError: ``delay`` is NaN.
        """
        _check_time(delay, "enter() delay")
        return self.enterabs(self.timefunc() + delay, priority, action, argument, kwargs)

    @staticmethod
    def _check_event(action: object, argument: Any, kwargs: object) -> None:
        if not callable(action):
            raise TypeError(f"the event's action must be callable, got {describe(action)}")
        try:
            iter(argument)
        except TypeError:
            raise TypeError(
                "argument must be an iterable of positional arguments for the action, "
                f"e.g. a tuple such as (x,), got {describe(argument)}"
            ) from None
        if not (hasattr(kwargs, "keys") and hasattr(kwargs, "__getitem__")):
            raise TypeError(
                f"kwargs must be a mapping of keyword arguments, got {describe(kwargs)}"
            )

    def cancel(self, event: Event) -> None:
        """Remove ``event`` from the queue.

        Raises:
            ValueError: the event is not queued (it ran, was cancelled, or belongs to
                another scheduler).
        """
        with self._lock:
            self._queue.remove(event)
            heapq.heapify(self._queue)

    def empty(self) -> bool:
        """Whether no event is queued."""
        with self._lock:
            return not self._queue

    @property
    def queue(self) -> list[Event]:
        """The queued events, in the order they will run (a new list)."""
        with self._lock:
            return sorted(self._queue)

    def run(self, blocking: bool = True) -> float | None:
        """Run the events as they become due, until the queue is empty.

        Each due event is removed from the queue, then its action is called, then
        ``delayfunc(0)`` (to let other threads run). Until the next event is due, this
        waits with ``delayfunc``, or (for ``time.sleep``) on a plait loop that an earlier
        event entered meanwhile wakes. The queue may change at any time, also from
        actions and from the delay function.

        Args:
            blocking: if False, run only the events already due, then return.

        Returns:
            None when the queue is empty; with ``blocking=False``, the time left until
            the next event is due, if any.

        Raises:
            Exception: whatever an action or ``delayfunc`` raises, at once. The event
                was removed before its action ran; ``run()`` may be called again.
        """
        lock = self._lock
        q = self._queue
        timefunc = self.timefunc
        delayfunc = self.delayfunc
        pop = heapq.heappop
        use_loop = blocking and delayfunc is _real_sleep and current_loop_or_none() is None
        waiter: _Waiter | None = None
        try:
            while True:
                with lock:
                    if waiter is not None:
                        waiter.disarm()
                    if not q:
                        return None
                    time, _, _, action, argument, kwargs = q[0]
                    now = timefunc()
                    due = not time > now  # as the standard module: "if time > now: wait"
                    if due:
                        pop(q)
                    else:
                        delay = time - now
                        armed = use_loop and _sleepable(delay)
                        if armed:
                            if waiter is None:
                                waiter = _Waiter()
                                self._waiters.add(waiter)
                            waiter.arm(time)
                if due:
                    action(*argument, **kwargs)
                    delayfunc(0)
                elif not blocking:
                    return delay
                elif armed:
                    assert waiter is not None
                    waiter.sleep(delay)
                else:
                    delayfunc(delay)
        finally:
            if waiter is not None:
                with lock:
                    self._waiters.discard(waiter)
                waiter.close()
