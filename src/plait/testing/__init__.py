"""plait.testing: virtual time and scheduling helpers for tests."""

from __future__ import annotations

from .._core._clock import MockClock as MockClock
from .._core._local import current_loop
from .._core._schedule import Replay as Replay
from .._core._schedule import ScheduleLog as ScheduleLog
from .._core._schedule import SchedulePolicy as SchedulePolicy
from .._core._schedule import Seeded as Seeded
from .._util import check_seconds
from ._explore import ExploreReport as ExploreReport
from ._explore import explore as explore

__all__ = [
    "ExploreReport",
    "MockClock",
    "Replay",
    "ScheduleLog",
    "SchedulePolicy",
    "Seeded",
    "explore",
    "wait_all_tasks_blocked",
]

for _public in (ExploreReport, MockClock, Replay, ScheduleLog, SchedulePolicy, Seeded, explore):
    _public.__module__ = "plait.testing"
del _public


async def wait_all_tasks_blocked(cushion: float = 0.0) -> None:
    """Wait until every other task is blocked (parked), and has been for ``cushion``
    real seconds with no I/O or timer waking any of them.

    Use it in tests instead of sleeping: "let everything else run as far as it can".
    When several tasks wait, those with the smallest cushion wake first. A checkpoint;
    cancellation stops the wait.
    """
    cushion = check_seconds(cushion, "wait_all_tasks_blocked() cushion", allow_inf=False)
    loop = current_loop("plait.testing.wait_all_tasks_blocked()")
    await loop._wait_idle(cushion)
