"""Ctrl-C: turning SIGINT into ``KeyboardInterrupt`` at a safe place. Layer L3.

Theory of operation: Python's default SIGINT handler raises ``KeyboardInterrupt``
wherever the main thread happens to be, which may be in the middle of the kernel
moving a task between queues; the run would then end with tasks half-scheduled and
their ``finally`` blocks never run. While ``plait.run`` runs in the main thread (and
nobody installed another handler), plait's handler looks at the interrupted frame:

- in user code (a task step or a callback), it raises ``KeyboardInterrupt`` right
  there, as Python would: it propagates through the task like any error;
- in plait's own code (the kernel, a primitive, or the OS poll), it only sets a flag
  and wakes the loop. The loop then cancels every task (their ``finally`` blocks run)
  and ``plait.run`` raises ``KeyboardInterrupt`` once they have all exited.

The handler writes to the wake-up socket directly rather than through
``WakeupChannel.wake``, whose flag it could otherwise corrupt if the signal arrived
inside ``drain``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._kernel import Loop

__all__ = ["install_sigint_handler"]


def _in_plait(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and (name == "plait" or name.startswith("plait."))


def install_sigint_handler(loop: Loop) -> Callable[[], None] | None:
    """Install the handler for the duration of a run; returns the function that
    restores the previous one, or None when nothing was installed (not the main
    thread, or a custom SIGINT handler is in place)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if frame is not None and not _in_plait(frame):
            raise KeyboardInterrupt
        loop._ki_pending = True
        loop._wakeup.wake_from_signal()

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore
