"""The exceptions plait raises. Layer L0: imports nothing from plait."""

from __future__ import annotations

__all__ = [
    "BrokenResourceError",
    "BrokenWorkerError",
    "BusyResourceError",
    "Cancelled",
    "ClosedResourceError",
    "Deadlock",
    "EndOfStream",
    "TaskCancelled",
    "WouldBlock",
]


class Cancelled(BaseException):
    """Raised at a checkpoint inside a cancelled :class:`plait.CancelScope`.

    Cancellation is level-triggered: while the scope stays cancelled, every checkpoint
    inside it raises a new ``Cancelled``. Do not catch it except to clean up (and then
    re-raise); the scope that caused it catches it when it exits. It derives from
    ``BaseException`` so that ``except Exception`` does not swallow it.
    """

    __module__ = "plait"


class TaskCancelled(Cancelled):
    """Raised by ``await task`` and ``task.result()`` when that task was cancelled.

    It is a ``Cancelled`` (so ``except plait.Cancelled`` catches it, as asyncio users
    expect) but it reports *another* task's fate: no cancel scope ever catches it, so it
    can never be mistaken for the cancellation of the task that joins.
    """

    __module__ = "plait"


class WouldBlock(Exception):
    """Raised by ``*_nowait`` operations that would have had to wait."""

    __module__ = "plait"


class EndOfStream(Exception):
    """Raised by a receive on a stream or queue whose other side closed cleanly."""

    __module__ = "plait"


class ClosedResourceError(Exception):
    """The resource was closed by this side and cannot be used any more."""

    __module__ = "plait"


class BrokenResourceError(Exception):
    """The resource broke (for example the peer reset the connection)."""

    __module__ = "plait"


class BusyResourceError(Exception):
    """Two tasks tried to use a resource that admits only one user at a time."""

    __module__ = "plait"


class BrokenWorkerError(RuntimeError):
    """The worker thread or process running a call died before it returned."""

    __module__ = "plait"


class Deadlock(RuntimeError):
    """Every task waits on something only another waiting task could provide."""

    __module__ = "plait"
