"""Clocks: where the loop gets the time from, and how long it may sleep.

Layer L1. The loop never calls ``time.monotonic`` itself; it asks its clock. That makes
time pluggable: :class:`SystemClock` for real programs, :class:`MockClock` for tests that
need virtual time (a test that "sleeps" an hour takes microseconds).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod

from .._util import check_seconds

__all__ = ["Clock", "MockClock", "SystemClock"]


class Clock(ABC):
    """The interface the loop needs from a clock."""

    __slots__ = ()

    def start_clock(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called once when a loop starts using this clock."""

    @abstractmethod
    def current_time(self) -> float:
        """The clock's current time in seconds; only differences are meaningful."""

    @abstractmethod
    def deadline_to_sleep_time(self, deadline: float) -> float:
        """How many real seconds the loop may block before ``deadline`` is reached."""

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of all-tasks-blocked idleness after which the clock jumps to the
        next deadline; ``inf`` (never) for every clock but :class:`MockClock`."""
        return math.inf

    def _autojump(self, deadline: float) -> None:  # noqa: B027 - optional hook
        """Jump to ``deadline``. Called by the loop after the idleness threshold."""


class SystemClock(Clock):
    """Real monotonic time (``time.monotonic``)."""

    __slots__ = ()

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


class MockClock(Clock):
    """A virtual clock for tests.

    Args:
        rate: virtual seconds that pass per real second. ``0.0`` (the default) freezes
            time: it only moves through :meth:`jump` or autojump.
        autojump_threshold: when every task has been blocked for this many *real*
            seconds, jump straight to the next timer deadline. ``0`` makes any sleep
            return at once in virtual time; ``inf`` (the default) disables autojump.

    Use as ``plait.run(main, clock=MockClock(autojump_threshold=0))``.
    """

    __slots__ = ("_autojump_threshold", "_rate", "_real_base", "_virtual_base")

    def __init__(self, rate: float = 0.0, autojump_threshold: float = math.inf) -> None:
        self._real_base = time.perf_counter()
        self._virtual_base = 0.0
        self._rate = 0.0
        self.rate = rate
        self._autojump_threshold = math.inf
        self.autojump_threshold = autojump_threshold

    def __repr__(self) -> str:
        return (
            f"MockClock(time={self.current_time():.6f}, rate={self._rate}, "
            f"autojump_threshold={self._autojump_threshold})"
        )

    @property
    def rate(self) -> float:
        """Virtual seconds per real second; settable at any time."""
        return self._rate

    @rate.setter
    def rate(self, new_rate: float) -> None:
        new_rate = check_seconds(new_rate, "MockClock rate", allow_inf=False)
        now_real = time.perf_counter()
        self._virtual_base = self._real_to_virtual(now_real)
        self._real_base = now_real
        self._rate = new_rate

    @property
    def autojump_threshold(self) -> float:
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._autojump_threshold = check_seconds(value, "MockClock autojump_threshold")

    def _real_to_virtual(self, real: float) -> float:
        return self._virtual_base + (real - self._real_base) * self._rate

    def current_time(self) -> float:
        if self._rate == 0.0:
            return self._virtual_base
        return self._real_to_virtual(time.perf_counter())

    def jump(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds`` (>= 0). Timers that become due fire on
        the loop's next iteration."""
        self._virtual_base += check_seconds(seconds, "MockClock.jump() seconds", allow_inf=False)

    def _autojump(self, deadline: float) -> None:
        gap = deadline - self.current_time()
        if gap > 0:
            self._virtual_base += gap

    def deadline_to_sleep_time(self, deadline: float) -> float:
        gap = deadline - self.current_time()
        if gap <= 0:
            return 0.0
        if self._rate == 0.0:
            return math.inf
        return gap / self._rate
