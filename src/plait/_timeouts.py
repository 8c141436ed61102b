"""Time: sleeping, the current time, and scopes with deadlines. Layer L4."""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

from ._core._cancel import CancelScope
from ._core._local import current_loop
from ._core._traps import Abort, RaiseCancelT, checkpoint, wait_task_rescheduled
from ._util import check_deadline, check_seconds, public

__all__ = [
    "current_time",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "sleep",
    "sleep_forever",
    "sleep_until",
]


@public
def current_time() -> float:
    """The current time of the running loop's clock, in seconds.

    Only differences are meaningful. Under a ``MockClock`` this is virtual time.
    Raises ``RuntimeError`` outside ``plait.run``.
    """
    return current_loop("plait.current_time()")._clock.current_time()


def _park_until(loop: Any, deadline: float) -> Any:
    """The awaitable that parks the current task until ``deadline`` (a timer entry,
    removed again if the wait is cancelled)."""
    timers = loop._timers
    entry = (
        None
        if deadline == math.inf
        else timers.push(deadline, loop._kernel_wake, loop._current_task)
    )

    def abort(_: RaiseCancelT) -> Abort:
        if entry is not None:
            timers.cancel(entry)
        return Abort.SUCCEEDED

    return wait_task_rescheduled(abort)


@public
async def sleep_until(deadline: float) -> None:
    """Sleep until ``current_time() >= deadline``.

    A checkpoint (even if the deadline has passed). Cancellation ends the sleep with
    ``Cancelled``. ``ValueError`` for NaN; ``math.inf`` sleeps until cancelled.
    """
    deadline = check_deadline(deadline, "plait.sleep_until() deadline")
    loop = current_loop("plait.sleep_until()")
    if deadline <= loop._clock.current_time():
        await checkpoint()
    else:
        await _park_until(loop, deadline)


@public
async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (>= 0; ``math.inf`` means until cancelled).

    A checkpoint, also for ``sleep(0)``. Cancellation ends the sleep with ``Cancelled``.
    Raises ``ValueError`` for a negative or NaN duration.
    """
    seconds = check_seconds(seconds, "plait.sleep() seconds")
    loop = current_loop("plait.sleep()")
    if seconds == 0:
        await checkpoint()
    else:
        await _park_until(loop, loop._clock.current_time() + seconds)


@public
async def sleep_forever() -> None:
    """Sleep until cancelled. A checkpoint."""
    await _park_until(current_loop("plait.sleep_forever()"), math.inf)


@public
def move_on_at(deadline: float, *, shield: bool = False) -> CancelScope:
    """A :class:`CancelScope` that cancels itself at ``deadline``; the code after the
    ``with`` block goes on (check ``scope.cancelled_caught`` to know if it timed out)."""
    return CancelScope(deadline=check_deadline(deadline, "move_on_at() deadline"), shield=shield)


@public
def move_on_after(seconds: float, *, shield: bool = False) -> CancelScope:
    """A :class:`CancelScope` that cancels itself ``seconds`` (>= 0) from now."""
    seconds = check_seconds(seconds, "move_on_after() seconds")
    return CancelScope(deadline=current_time() + seconds, shield=shield)


class _FailScope:
    """Context manager of :func:`fail_after`/:func:`fail_at`: a CancelScope that turns a
    timeout into the builtin ``TimeoutError``."""

    __slots__ = ("_scope",)

    def __init__(self, scope: CancelScope) -> None:
        self._scope = scope

    def __enter__(self) -> CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        handled = self._scope.__exit__(etype, exc, tb)
        if self._scope.cancelled_caught:
            raise TimeoutError(
                f"deadline {self._scope.deadline:.6f} passed (plait.fail_after/fail_at)"
            ) from None
        return handled


@public
def fail_at(deadline: float, *, shield: bool = False) -> Any:
    """Like :func:`move_on_at`, but a timeout raises the builtin ``TimeoutError``.

    Use as ``with fail_at(t) as scope:``; ``scope`` is the underlying CancelScope.
    """
    return _FailScope(move_on_at(deadline, shield=shield))


@public
def fail_after(seconds: float, *, shield: bool = False) -> Any:
    """Like :func:`move_on_after`, but a timeout raises the builtin ``TimeoutError``."""
    return _FailScope(move_on_after(seconds, shield=shield))
