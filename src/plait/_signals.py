"""``open_signal_receiver``: POSIX signals as an async iterator. Layer L5.

Theory of operation: entering the receiver installs, with ``signal.signal``, a handler
for each signal; Python runs it in the main thread between two bytecodes, wherever the
main thread is: in a task, a callback, the kernel moving a task between queues, or the
OS poll. So the handler does only what is safe at any of those points: it records the
signal in an ``OrderedDict`` (one atomic C operation; a signal already pending is not
recorded twice, so a signal storm costs no memory and arrival order is kept), queues a
callback in the loop's thread-safe door and writes its wake-up byte the way the SIGINT
handler does (``WakeupChannel.wake_from_signal``; ``send`` could corrupt the channel's
flag if the signal arrived inside ``drain``). The callback, run by the loop, hands the
oldest pending signal to the task waiting in ``async for``, if any.

Exiting restores each signal's previous handler and then re-delivers the signals that
arrived but were never consumed to that handler, so that closing a receiver just after
a signal arrived loses nothing (trio does the same): a Python handler is called, SIG_IGN
drops it, SIG_DFL takes the default action (often: terminating the process).

Receivers for the same signal nest: each remembers the handler it replaced. A receiver
closed out of order (tasks open and close them independently) is unlinked from the
chain (the one opened after it now restores what it had replaced), so the handler in
place after the last one closes is always the one before the first opened. A handler
somebody else installed over ours is left alone.

Rejected: ``signal.set_wakeup_fd`` (one per process, and asyncio or the host program
may own it) and ``signalfd`` (the signals must be blocked in every thread, which a
library cannot arrange).
"""

from __future__ import annotations

import enum
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ._core._handles import Handle
from ._core._local import run_state
from ._core._traps import Abort, RaiseCancelT, schedule_point, wait_task_rescheduled
from ._exceptions import BusyResourceError, Cancelled, ClosedResourceError
from ._util import describe, public

if TYPE_CHECKING:
    from ._core._kernel import Loop
    from ._core._task import Task

__all__ = ["SignalReceiver", "open_signal_receiver"]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

# Per signal number, the open receivers listening for it, oldest first.
# Invariant: the last one's handler is installed, unless code outside plait replaced it.
# Main thread only (as is everything that calls signal.signal).
_listeners: dict[int, list[SignalReceiver]] = {}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _check_signals(signals: tuple[Any, ...]) -> tuple[int, ...]:
    if not signals:
        raise TypeError(
            "open_signal_receiver() needs at least one signal, e.g. "
            "open_signal_receiver(signal.SIGHUP)"
        )
    uncatchable = {getattr(signal, n) for n in ("SIGKILL", "SIGSTOP") if hasattr(signal, n)}
    valid = signal.valid_signals()
    checked: list[int] = []
    for sig in signals:
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(
                f"open_signal_receiver() takes signal numbers such as signal.SIGHUP, "
                f"got {describe(sig)}"
            )
        signum = int(sig)
        if signum in uncatchable:
            raise ValueError(
                f"{_signal_name(signum)} cannot be caught: the OS never lets a process "
                "handle SIGKILL or SIGSTOP"
            )
        if signum not in valid:
            raise ValueError(
                f"{sig!r} is not a signal number on this platform (see signal.valid_signals())"
            )
        if signum not in checked:
            checked.append(signum)
    return tuple(checked)


def _deliver(signum: int, handler: _Handler) -> None:
    """Deliver ``signum`` to ``handler`` as if we had never caught it."""
    if signal.getsignal(signum) == handler:
        signal.raise_signal(signum)  # runs the Python handler before returning
    elif handler == signal.SIG_IGN:
        pass
    elif callable(handler):
        handler(signum, sys._getframe())
    else:  # SIG_DFL, under another receiver: the default action, right now
        current = signal.signal(signum, signal.SIG_DFL)
        try:
            signal.raise_signal(signum)
        finally:
            signal.signal(signum, current)


class _State(enum.Enum):
    NEW = "not entered"
    OPEN = "open"
    CLOSED = "closed"


class SignalReceiver:
    """What :func:`open_signal_receiver` returns: a context manager (``with`` or
    ``async with``) whose value is itself, an async iterator of signal numbers."""

    __slots__ = (
        "_busy",
        "_hand_over_queued",
        "_loop",
        "_pending",
        "_previous",
        "_signals",
        "_state",
        "_waiter",
    )

    def __init__(self, signals: tuple[int, ...], loop: Loop) -> None:
        self._signals = signals
        self._loop = loop
        self._state = _State.NEW
        # The handler each signal had when this receiver was entered (see _listeners).
        self._previous: dict[int, _Handler] = {}
        # Signals that arrived and were not consumed yet, in arrival order, no repeats.
        self._pending: OrderedDict[int, None] = OrderedDict()
        # Invariant: _waiter is the task parked in __anext__, or None.
        self._waiter: Task | None = None
        self._busy = False
        # True while a _kernel_hand_over callback is queued and has not started: the
        # handler queues no other (one callback per batch of signals, not per signal).
        self._hand_over_queued = False

    def __repr__(self) -> str:
        names = ", ".join(_signal_name(s) for s in self._signals)
        pending = ", ".join(_signal_name(s) for s in self._pending) or "none"
        return f"<plait signal receiver for {names}, {self._state.value}, pending: {pending}>"

    # -- the signal handler (main thread, between any two bytecodes) -------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._state is _State.CLOSED:  # someone chained to us after we closed
            _deliver(signum, self._previous[signum])
            return
        self._pending[signum] = None
        if not self._hand_over_queued:
            self._hand_over_queued = True
            wakeup = self._loop._wakeup
            wakeup.queue.append(Handle(self._kernel_hand_over, (), None))
            wakeup.wake_from_signal()  # swallows OSError (the loop is closed)

    def _kernel_hand_over(self) -> None:
        """Loop callback: give the oldest pending signal to the waiting task."""
        # Discussion: the flag is cleared *before* looking at _pending. A signal
        # recorded after this line queues a callback of its own; one recorded before
        # it is seen below. (Clearing it after could lose a signal recorded in
        # between: no callback queued, nobody looking.)
        self._hand_over_queued = False
        task = self._waiter
        if task is not None and self._pending:
            self._waiter = None
            signum, _ = self._pending.popitem(last=False)
            task._loop._kernel_reschedule(task, signum, None)

    def _abort(self, _: RaiseCancelT) -> Abort:
        self._waiter = None  # a signal that arrives now stays pending
        return Abort.SUCCEEDED

    # -- lifecycle ----------------------------------------------------------------------

    def _check_thread(self, what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"{what} must be called in the main thread: Python only lets the main "
                "thread install signal handlers"
            )

    def _open(self) -> None:
        self._check_thread("entering a signal receiver")
        if self._state is not _State.NEW:
            raise RuntimeError(
                "a signal receiver can be entered only once; call open_signal_receiver() again"
            )
        if run_state.loop is not self._loop:
            raise RuntimeError(
                "a signal receiver must be entered inside the plait.run() that created it"
            )
        for signum in self._signals:
            if signal.getsignal(signum) is None:
                raise ValueError(
                    f"{_signal_name(signum)} has a handler that was not installed from "
                    "Python; plait could not restore it afterwards, so it leaves it alone"
                )
        self._state = _State.OPEN
        done: list[int] = []
        try:
            for signum in self._signals:
                try:
                    previous = signal.signal(signum, self._on_signal)
                except OSError as exc:
                    raise ValueError(
                        f"{_signal_name(signum)} cannot be caught on this platform: {exc}"
                    ) from None
                self._previous[signum] = previous
                _listeners.setdefault(signum, []).append(self)
                done.append(signum)
        except BaseException:
            self._unlink(done)
            self._state = _State.CLOSED
            raise
        self._loop._external_wakers += 1  # a signal may wake a task: no deadlock

    def _unlink(self, signals: list[int] | tuple[int, ...]) -> None:
        """Take this receiver out of each signal's chain, restoring handlers."""
        for signum in reversed(signals):
            stack = _listeners[signum]
            i = stack.index(self)
            previous = self._previous[signum]
            if i == len(stack) - 1:
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
            else:  # closed out of order: the next one restores what we replaced
                stack[i + 1]._previous[signum] = previous
            del stack[i]
            if not stack:
                del _listeners[signum]

    def close(self) -> None:
        """Restore the previous handlers, wake a task still iterating (it gets
        :class:`plait.ClosedResourceError`), then re-deliver the signals nobody
        consumed to the previous handlers, oldest first. Idempotent."""
        self._check_thread("closing a signal receiver")
        state, self._state = self._state, _State.CLOSED
        if state is not _State.OPEN:
            return
        self._loop._external_wakers -= 1
        self._unlink(self._signals)
        task = self._waiter
        if task is not None:
            self._waiter = None
            task._loop._kernel_reschedule(
                task,
                None,
                ClosedResourceError("the signal receiver was closed while this task waited"),
            )
        # Every pending signal is delivered even if a handler raises (default_int_handler
        # raises KeyboardInterrupt); the first error propagates.
        error: BaseException | None = None
        while self._pending:
            signum, _ = self._pending.popitem(last=False)
            try:
                _deliver(signum, self._previous[signum])
            except BaseException as exc:
                if error is None:
                    error = exc
        if error is not None:
            try:
                raise error
            finally:
                del error

    def __enter__(self) -> SignalReceiver:
        self._open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> SignalReceiver:
        """A checkpoint: ``Cancelled`` before anything is installed."""
        task = self._loop._current_task if run_state.loop is self._loop else None
        if task is not None and task._scope._eff:
            raise Cancelled
        self._open()
        await schedule_point()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Closes (see :meth:`close`), then a schedule point; never ``Cancelled``."""
        self.close()
        await schedule_point()

    # -- iteration ----------------------------------------------------------------------

    def __aiter__(self) -> SignalReceiver:
        return self

    async def __anext__(self) -> int:
        """The next signal number, oldest first, waiting for one if none is pending.

        A checkpoint. If it raises ``Cancelled``, no signal was consumed.

        Raises:
            BusyResourceError: another task is iterating over this receiver.
            ClosedResourceError: the receiver is closed (or closes while waiting).
            RuntimeError: the receiver was not entered, or this is not a plait task.
        """
        if self._busy:
            raise BusyResourceError(
                "another task is already iterating over this signal receiver; "
                "only one task at a time may wait for its signals"
            )
        loop = run_state.loop
        task = loop._current_task if loop is self._loop else None
        if task is None:
            raise RuntimeError(
                "a signal receiver must be iterated in a task of the plait.run() that opened it"
            )
        if self._state is not _State.OPEN:
            if self._state is _State.NEW:
                raise RuntimeError(
                    "enter the receiver before iterating: "
                    "with plait.open_signal_receiver(...) as signals: async for ..."
                )
            raise ClosedResourceError("this signal receiver is closed")
        if task._scope._eff:
            raise Cancelled
        self._busy = True
        try:
            if self._pending:
                signum, _ = self._pending.popitem(last=False)
                await schedule_point()  # the signal is ours: never lost to Cancelled
                return signum
            self._waiter = task
            del task
            result: int = await wait_task_rescheduled(self._abort)
            return result
        finally:
            self._busy = False


@public
def open_signal_receiver(*signals: int) -> SignalReceiver:
    """Catch ``signals`` while the returned receiver is open.

    Use it as ``with plait.open_signal_receiver(signal.SIGHUP) as signals:`` (or
    ``async with``), then ``async for signum in signals:``, which yields the signal
    numbers (ints) as they arrive, oldest first; a signal that arrives again while
    still pending is delivered once. While open, the receiver replaces the signals'
    handlers (for SIGINT: no ``KeyboardInterrupt``; the receiver gets it). On exit the
    previous handlers are restored, and the signals that arrived but were not consumed
    are re-delivered to them. Receivers for the same signal nest: the innermost one
    gets it. One task at a time may iterate over a receiver.

    Raises:
        TypeError: no signals, or something other than a signal number.
        ValueError: not a signal of this platform, or SIGKILL/SIGSTOP (uncatchable).
        RuntimeError: not called in the main thread inside ``plait.run()``: Python
            runs signal handlers in the main thread only.
    """
    checked = _check_signals(signals)
    loop = run_state.loop
    if loop is None:
        raise RuntimeError(
            "open_signal_receiver() must be called inside plait.run(): the signals are "
            "handed to the running loop's tasks"
        )
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "open_signal_receiver() must be called in the main thread: Python runs "
            f"signal handlers in the main thread only, and this plait.run() runs in "
            f"{threading.current_thread().name!r}"
        )
    return SignalReceiver(checked, loop)
