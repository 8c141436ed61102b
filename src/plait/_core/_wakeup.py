"""The one door other threads use to enter the loop: a deque plus a wake-up socket.

Layer L2. ``send`` may be called from any thread; ``drain`` only from the loop's.

Discussion (lost wake-ups): a sender appends, then writes a byte unless a byte is
already in flight (``_pending``). The loop reads the socket dry, *then* clears
``_pending``, *then* takes the items. A sender whose byte the loop swallowed had
appended its item before writing, so before the loop takes the items: it is taken. A
sender that finds ``_pending`` clear writes a byte that the loop has not read yet, so
the next poll returns. Either way no item waits for an unrelated wake-up. (Clearing
``_pending`` before reading would be wrong: a sender could set it in between, have its
byte swallowed, and leave it set with no byte in flight: every later sender would then
skip the write and the loop would sleep forever.) Under the GIL each step is atomic;
the deque's append and popleft are thread-safe.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

__all__ = ["WakeupChannel"]


class WakeupChannel:
    __slots__ = ("_pending", "_rsock", "_wsock", "queue")

    def __init__(self) -> None:
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self.queue: deque[Any] = deque()
        self._pending = False

    def fileno(self) -> int:
        return self._rsock.fileno()

    def send(self, item: Any) -> None:
        """Queue ``item`` for the loop and wake it. Any thread; never blocks."""
        self.queue.append(item)
        self.wake()

    def wake(self) -> None:
        """Make the loop's next (or current) poll return at once. Any thread."""
        if not self._pending:
            self._pending = True
            try:
                self._wsock.send(b"\0")
            except (BlockingIOError, OSError):
                # Full: a wake-up is already pending. Closed: the loop is gone.
                pass

    def wake_from_signal(self) -> None:
        """Wake the loop from a signal handler: write without touching ``_pending``
        (the handler may have interrupted :meth:`drain`). An extra byte is harmless."""
        try:
            self._wsock.send(b"\0")
        except OSError:
            pass

    def drain(self) -> None:
        """Consume the wake-up bytes. Loop thread only; call before taking ``queue``."""
        try:
            # A short read took everything there was: no second recv just to see it
            # fail (a failed recv costs a syscall and an exception, ~3 us here).
            while len(self._rsock.recv(4096)) == 4096:
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # Only now: a sender that set _pending while we were reading had its byte
        # swallowed above, but its item is already queued and will be taken next.
        self._pending = False

    def close(self) -> None:
        self._rsock.close()
        self._wsock.close()
