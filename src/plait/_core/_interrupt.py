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

A second Ctrl-C in the same run means the cleanup the first one started is taking too
long (a ``finally`` that blocks in ``time.sleep``, or awaits something shielded that
never comes). The handler then raises ``KeyboardInterrupt`` wherever the main thread
is, kernel included (as asyncio.run's second Ctrl-C does), and sets
``loop._ki_forced``. With the flag set the kernel runs no further task: a task that
ends (typically: killed by this very ``KeyboardInterrupt``) makes
``_kernel_task_exited`` raise it out of the loop, and ``_kernel_interrupted`` (reached
at the loop's next step, should a task swallow it) raises too. ``plait.run`` then
propagates it without waiting for the tasks still running. Their coroutines are
abandoned: Python runs what is left of their ``finally`` blocks when it
garbage-collects them (at the latest, at interpreter exit), outside any loop.

Any SIGINT after the first counts as the second, even if the program caught the first
``KeyboardInterrupt`` and went on. A program that wants Ctrl-C as an event, not an
interrupt, uses ``plait.open_signal_receiver(signal.SIGINT)``: while a receiver is
open, SIGINT goes to it and this handler is not called.

The handler writes to the wake-up socket directly rather than through
``WakeupChannel.wake``, whose flag it could otherwise corrupt if the signal arrived
inside ``drain``.

Discussion (a signal just before the poll): Python runs a signal's handler only when
the main thread next checks for signals, between bytecodes. A signal that arrives
after the last check but before the thread enters ``epoll_wait`` interrupts nothing:
the thread then sleeps in the poll with the handler not yet run, until some unrelated
wake-up (forever, if the loop is idle). So for the duration of a run the loop's
wake-up socket is also the signal wake-up fd (``signal.set_wakeup_fd``): Python's
C-level handler writes a byte to it, the poll returns, and the handler runs. (This is
for every signal with a Python handler: SIGINT and those of
``plait.open_signal_receiver``.) The handlers still write their own byte: the C one
may be drained before the Python handler runs and records what happened.
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


def _set_wakeup_fd(loop: Loop) -> bool:
    """Make the loop's wake-up socket the signal wake-up fd; True if it now is."""
    try:
        previous = signal.set_wakeup_fd(loop._wakeup._wsock.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread after all, or the socket is closed
        return False
    if previous != -1:
        # Somebody else's (the host program's, an asyncio loop's): theirs stays. Only
        # a signal that arrives just before the poll may then wait for the next wake-up.
        signal.set_wakeup_fd(previous)
        return False
    return True


def _clear_wakeup_fd(loop: Loop) -> None:
    ours = loop._wakeup._wsock.fileno()
    current = signal.set_wakeup_fd(-1)
    if current != ours:  # replaced during the run: not ours to remove
        signal.set_wakeup_fd(current)


def install_sigint_handler(loop: Loop) -> Callable[[], None] | None:
    """Install plait's signal plumbing for the duration of a run: the wake-up fd (see
    the module docstring) and, unless a custom SIGINT handler is in place, the SIGINT
    handler. Returns the function that undoes both, or None when nothing was
    installed (not the main thread: Python runs signal handlers there only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    wakeup_fd = _set_wakeup_fd(loop)
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        on_sigint = None
    else:
        on_sigint = _make_sigint_handler(loop)
        signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        if on_sigint is not None and signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if wakeup_fd:
            _clear_wakeup_fd(loop)

    return restore


def _make_sigint_handler(loop: Loop) -> Callable[[int, FrameType | None], None]:
    presses = 0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:  # the second Ctrl-C: stop waiting for the cleanup
            loop._ki_forced = True
            loop._ki_pending = True
            loop._wakeup.wake_from_signal()
            raise KeyboardInterrupt
        if frame is not None and not _in_plait(frame):
            raise KeyboardInterrupt
        loop._ki_pending = True
        loop._wakeup.wake_from_signal()

    return on_sigint
