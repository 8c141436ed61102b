"""``plait.run``: the entry point of a plait program. Layer L4."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._core._clock import Clock
from ._core._instrument import Instrument
from ._core._kernel import Loop
from ._core._local import current_loop
from ._core._task import Task
from ._util import public

__all__ = ["current_task", "run"]


@public
def run(
    fn_or_coro: Any,
    *args: Any,
    clock: Clock | None = None,
    instruments: Iterable[Instrument] = (),
    name: str | None = None,
) -> Any:
    """Run ``fn_or_coro(*args)`` as the main task of a new loop and return its result.

    Whatever the main task raises is re-raised here (``KeyboardInterrupt`` and
    ``SystemExit`` from any task included). Every task it spawned has finished by the
    time this returns. ``clock`` selects the clock (e.g. ``plait.testing.MockClock``);
    ``instruments`` are ``plait.abc.Instrument`` objects the kernel calls as it runs.
    Calling ``plait.run`` inside a running plait loop raises ``RuntimeError``.
    """
    with Loop(clock=clock, instruments=instruments) as loop:
        return loop.run_until_complete(fn_or_coro, *args, name=name)


@public
def current_task() -> Task:
    """The task that is running now. ``RuntimeError`` outside a task."""
    task = current_loop("plait.current_task()")._current_task
    if task is None:
        raise RuntimeError("plait.current_task() was called from a loop callback, not a task")
    return task
