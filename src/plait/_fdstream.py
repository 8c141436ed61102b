"""Streams over one end of a pipe (a child process's stdin, stdout or stderr). Layer L5.

Theory of operation: the fd we own is made non-blocking (only our end: the child's end
of a pipe is a separate open file description and stays blocking, as programs expect).
An operation tries ``os.read``/``os.write`` first and waits for readiness only on
``BlockingIOError``, through the loop's reactor, exactly as ``plait.socket`` does.

A pipe has one direction, so there are two classes: :class:`PipeSendStream` (the write
end: ``send_all``, ``send_eof`` closes it) and :class:`PipeReceiveStream` (the read end:
everything :class:`plait.Stream` offers for receiving). Using the wrong direction raises
``TypeError`` naming the right one.

Closing tells the loop first (``_notify_closing``), so a task blocked on the fd wakes
with ``ClosedResourceError`` and the fd is unregistered before its number can be reused.

Discussion (close after a readiness wake-up): a task woken because the fd became ready
may not run before another task closes the stream; by then the fd number may belong to
a new file. So every wait is followed by a ``_closed`` check before the fd is touched.
"""

from __future__ import annotations

import errno
import os
import warnings
from typing import Any

from ._core._local import current_loop_or_none
from ._core._reactor import READABLE, WRITABLE
from ._core._traps import checkpoint, schedule_point
from ._exceptions import BrokenResourceError, BusyResourceError, ClosedResourceError
from ._socket import _raise_if_cancelled, _tokens
from ._streams import Stream
from ._util import describe

__all__ = ["PipeReceiveStream", "PipeSendStream"]


class _PipeStream(Stream):
    """One end of a pipe, owned by this object (closed by ``aclose``/``close``)."""

    __slots__ = ("_busy", "_closed", "_fd", "_token")

    _what = "pipe"

    def __init__(self, fd: int) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(
                f"{type(self).__name__} needs an int file descriptor, got {describe(fd)}"
            )
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}: file descriptors are >= 0")
        os.set_blocking(fd, False)
        self._fd = fd
        self._rbuf = bytearray()
        # Invariant: _busy is True exactly while one task is inside an operation.
        self._busy = False
        self._closed = False
        # We always notify the loop before closing, so the reactor may keep the fd
        # registered between waits (see Reactor.set).
        self._token = next(_tokens)

    def fileno(self) -> int:
        """The fd (``-1`` once closed)."""
        return -1 if self._closed else self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<plait.{type(self).__name__} {state}>"

    def close(self) -> None:
        """Close the fd now (idempotent). A task blocked on it gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        loop = current_loop_or_none()
        if loop is not None and not loop.is_closed():
            loop._notify_closing(self._fd)
        os.close(self._fd)

    async def aclose(self) -> None:
        """Close the fd (idempotent). A checkpoint, but the fd is closed even if the
        caller is cancelled."""
        self.close()
        await checkpoint()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)
        finally:
            os.close(self._fd)

    def _closed_error(self, what: str) -> ClosedResourceError:
        return ClosedResourceError(f"{what} on a {self._what} that was closed")

    def _busy_error(self, verb: str) -> BusyResourceError:
        return BusyResourceError(
            f"another task is already {verb} on this {self._what}; use one task (or a "
            "Lock) per direction"
        )


class PipeSendStream(_PipeStream):
    """The write end of a pipe (e.g. ``Process.stdin``): ``send_all``; ``send_eof`` and
    ``aclose`` close it, so the reader sees end-of-file."""

    __slots__ = ()

    _what = "pipe's write end"

    async def send_all(self, data: Any) -> None:
        """Write every byte of ``data`` (any bytes-like object).

        A checkpoint. If cancelled while waiting for the reader to make room, part of
        ``data`` may have been written. ``BrokenResourceError`` if the reader has closed
        its end (e.g. the child exited); ``ClosedResourceError`` if this end is closed.
        """
        if self._busy:
            raise self._busy_error("sending")
        if self._closed:
            raise self._closed_error("send_all()")
        loop = _raise_if_cancelled("PipeSendStream.send_all()")
        fd = self._fd
        self._busy = True
        try:
            with memoryview(data) as view, view.cast("B") as raw:
                total = len(raw)
                sent = 0
                waited = False
                while sent < total:
                    try:
                        sent += os.write(fd, raw[sent:])
                    except BlockingIOError:
                        waited = True
                        await loop._wait_fd(fd, WRITABLE, self._token)
                        if self._closed:
                            raise self._closed_error("send_all()") from None
            if not waited:
                await schedule_point()
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise BrokenResourceError(
                    f"send_all() failed: the reading end of the pipe is closed ({exc})"
                ) from exc
            if self._closed:
                raise self._closed_error("send_all()") from None
            raise
        finally:
            self._busy = False

    async def send_eof(self) -> None:
        """Close this end, so that the reader sees end-of-file. A checkpoint."""
        if self._busy:
            raise BusyResourceError("send_eof() while another task is sending on this pipe")
        await self.aclose()

    async def _receive(self, max_bytes: int) -> bytes:
        raise TypeError(
            "this is the write end of a pipe (e.g. a process's stdin): it cannot receive; "
            "read from the process's stdout or stderr instead"
        )


class PipeReceiveStream(_PipeStream):
    """The read end of a pipe (e.g. ``Process.stdout``): ``receive_some``,
    ``receive_exactly``, ``receive_until``, ``async for``; ``b""`` at end-of-file."""

    __slots__ = ()

    _what = "pipe's read end"

    async def _receive(self, max_bytes: int) -> bytes:
        if self._busy:
            raise self._busy_error("receiving")
        if self._closed:
            raise self._closed_error("receiving")
        loop = _raise_if_cancelled("PipeReceiveStream.receive_some()")
        fd = self._fd
        self._busy = True
        try:
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                pass
            else:
                await schedule_point()
                return data
            while True:
                await loop._wait_fd(fd, READABLE, self._token)
                if self._closed:
                    raise self._closed_error("receiving")
                try:
                    return os.read(fd, max_bytes)
                except BlockingIOError:
                    pass
        except OSError as exc:
            if self._closed:
                raise self._closed_error("receiving") from None
            raise BrokenResourceError(f"reading from the pipe failed ({exc})") from exc
        finally:
            self._busy = False

    async def send_all(self, data: Any) -> None:
        raise TypeError(
            "this is the read end of a pipe (e.g. a process's stdout): it cannot send; "
            "write to the process's stdin instead"
        )

    async def send_eof(self) -> None:
        raise TypeError(
            "this is the read end of a pipe: there is nothing to send EOF on; use aclose() "
            "to stop reading"
        )
