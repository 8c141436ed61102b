"""Socket transports of :class:`plait.aio.EventLoop`. Layer L6.

Theory of operation. A :class:`SocketTransport` drives one connected non-blocking
socket with the loop's readiness callbacks: a reader while reading is not paused, a
writer only while data waits to be sent. ``write()`` sends at once when nothing waits
(most writes never touch the reactor) and keeps what the kernel did not take in a
queue of buffers; past the high-water mark it calls the protocol's
``pause_writing()``, and ``resume_writing()`` once the queue drains below the low-water
mark. Reading hands each chunk to ``data_received`` (or, for a
``BufferedProtocol``, receives straight into the protocol's buffer); end of file calls
``eof_received()``, and the transport closes unless it returns true (half-close).

Closing: ``close()`` stops reading, sends what is queued, then closes the socket;
``abort()`` closes at once, dropping the queue. ``connection_lost`` is called once, in
a later callback, with the error that ended the connection (None for a clean close).
An error in a protocol callback, or a socket error, is reported to the loop's
exception handler and aborts the connection (OS errors such as a reset are expected
and only logged in debug mode), as in asyncio's own transports.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import stat
import warnings
from asyncio import trsock
from typing import Any

__all__ = ["DatagramTransport", "PipeTransport", "SocketTransport", "set_result_unless_cancelled"]

logger = logging.getLogger("asyncio")

_MAX_SIZE = 256 * 1024  # bytes read per readiness callback
_HIGH_WATER = 64 * 1024


class _Ending:
    """What the stream and datagram transports share: flow control towards the
    protocol, and how they end: ``close()`` once the queue is sent, ``abort()`` at
    once; ``connection_lost`` called once, in a later callback, then the socket
    closed."""

    _loop: Any
    _sock: Any = None  # (until __init__ sets it: __del__ of a failed __init__ reads it)
    _fileno: int
    _protocol: Any
    _buffer: collections.deque[Any]
    _buffer_size: int
    _closing: bool
    _conn_lost: int
    _protocol_paused: bool
    _high_water: int
    _low_water: int
    _server: Any = None

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_protocol(self) -> Any:
        return self._protocol

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size > self._high_water and not self._protocol_paused:
            self._protocol_paused = True
            self._tell_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._tell_protocol("resume_writing")

    def _tell_protocol(self, method: str) -> None:
        try:
            getattr(self._protocol, method)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{method}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop._remove_reader(self._fileno)
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._fileno)
            self._call_connection_lost_soon(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop._remove_writer(self._fileno)
        if not self._closing:
            self._closing = True
            self._loop._remove_reader(self._fileno)
        self._conn_lost += 1
        self._call_connection_lost_soon(exc)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _call_connection_lost_soon(self, exc: BaseException | None) -> None:
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        sock, self._sock = self._sock, None
        try:
            self._protocol.connection_lost(exc)
        finally:
            if sock is not None:
                self._loop._forget_fd(self._fileno)
                sock.close()
            self._protocol = None
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self, stacklevel=1)
            self._sock.close()


class SocketTransport(_Ending, asyncio.Transport):
    """A stream transport on a connected non-blocking socket."""

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: asyncio.BaseProtocol,
        *,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        super().__init__(extra)
        self._extra: dict[str, Any] = dict(extra or {})
        self._loop = loop
        self._sock = sock  # a socket, or a _PipeEnd: recv, recv_into, send, close
        self._fileno = sock.fileno()
        self._describe(sock)
        self._protocol: Any = None
        self._buffered = False
        self.set_protocol(protocol)
        self._server = server
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0  # write() calls after the connection ended (warned at 5)
        self._closing = False
        self._paused = False  # reading paused by the protocol
        self._eof = False  # write_eof() called
        self._sendfile_busy = False  # loop.sendfile() sends on the socket itself
        self._protocol_paused = False  # we told the protocol to pause writing
        self._high_water = _HIGH_WATER
        self._low_water = _HIGH_WATER // 4
        if server is not None:
            server._attach(self)
        if not isinstance(sock, _PipeEnd):  # (pipes are not sockets: as in asyncio)
            loop._transports[self._fileno] = self
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def _describe(self, sock: socket.socket) -> None:
        self._extra["socket"] = trsock.TransportSocket(sock)  # (as asyncio's transports)
        for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            if key not in self._extra:
                try:
                    self._extra[key] = get()
                except OSError:
                    self._extra[key] = None
        _nodelay(sock)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return (
            f"<plait.aio.{type(self).__name__} fd={self._fileno} {state} "
            f"buffered={self._buffer_size}>"
        )

    # -- protocol --------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    # -- reading ---------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._closing and not self._paused and self._sock is not None:
            self._loop._add_reader(self._fileno, self._read_ready)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True
        self._loop._remove_reader(self._fileno)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()

    def _read_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            if self._buffered:
                buf = self._protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
                n = sock.recv_into(buf)
                if n:
                    self._protocol.buffer_updated(n)
                    return
            else:
                data = sock.recv(_MAX_SIZE)
                if data:
                    self._protocol.data_received(data)
                    return
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._read_eof()

    def _read_eof(self) -> None:
        self._loop._remove_reader(self._fileno)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- writing ---------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._sendfile_busy:
            raise RuntimeError(
                "unable to write: sendfile is in progress on this transport (await "
                "loop.sendfile() before writing more)"
            )
        if not data:
            return
        if self._sock is None or self._conn_lost:
            self._conn_lost += 1
            if self._conn_lost >= 5:
                logger.warning("socket.send() raised exception.")
            return
        if not self._buffer:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if n == len(data):
                return
            view = memoryview(data).cast("B")[n:]
            self._loop._add_writer(self._fileno, self._write_ready)
        else:
            view = memoryview(data).cast("B")
        # (a bytearray may change after write() returns: keep a copy of it)
        self._buffer.append(view if isinstance(data, bytes) else memoryview(bytes(view)))
        self._buffer_size += len(view)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _write_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        buffer = self._buffer
        try:
            while buffer:
                view = buffer[0]
                n = sock.send(view)
                self._buffer_size -= n
                if n < len(view):
                    buffer[0] = view[n:]
                    break
                buffer.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop._remove_writer(self._fileno)
            buffer.clear()
            self._buffer_size = 0
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        self._maybe_resume_protocol()
        if buffer:
            return
        self._loop._remove_writer(self._fileno)
        if self._closing:
            self._call_connection_lost_soon(None)
        elif self._eof:
            sock.shutdown(socket.SHUT_WR)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer and self._sock is not None:
            self._sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - not a TCP socket after all
            pass


def set_result_unless_cancelled(future: asyncio.Future[Any], value: Any) -> None:
    if not future.cancelled():
        future.set_result(value)


class _PipeEnd:
    """A pipe (or character device) fd with the socket methods the transport uses."""

    __slots__ = ("_fd", "_file")

    def __init__(self, file: Any) -> None:
        self._file = file
        self._fd: int = file.fileno()

    def fileno(self) -> int:
        return self._fd

    def recv(self, n: int) -> bytes:
        return os.read(self._fd, n)

    def recv_into(self, buf: Any) -> int:
        n: int = os.readv(self._fd, [buf])
        return n

    def send(self, data: Any) -> int:
        return os.write(self._fd, data)

    def close(self) -> None:
        self._file.close()


class PipeTransport(SocketTransport):
    """A read or write transport on a pipe, a socket or a character device (for
    ``connect_read_pipe``/``connect_write_pipe`` and subprocess pipes). A write pipe
    is watched for readability as well: that is how the reader's hang-up shows."""

    def __init__(
        self,
        loop: Any,
        pipe: Any,
        protocol: asyncio.BaseProtocol,
        *,
        readable: bool,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        mode = os.fstat(pipe.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError(f"Pipe transport is for pipes/sockets only (got {pipe!r})")
        os.set_blocking(pipe.fileno(), False)
        self._readable = readable
        # A write end of a pipe or socket becomes "readable" when the reader's end
        # closes; a character device (a pty) may be readable for other reasons.
        self._watch_hangup = not readable and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))
        super().__init__(loop, _PipeEnd(pipe), protocol, waiter=waiter, extra=extra)
        self._extra["pipe"] = pipe

    def _describe(self, sock: Any) -> None:
        pass

    def _start_reading(self) -> None:
        if self._readable:
            super()._start_reading()
        elif self._watch_hangup and not self._closing and self._sock is not None:
            self._loop._add_reader(self._fileno, self._hangup)

    def _hangup(self) -> None:
        # the reading end went away (epoll reports an error on our end)
        self._force_close(BrokenPipeError() if self._buffer else None)

    def _read_eof(self) -> None:
        # a pipe's end of file ends the transport (eof_received() cannot keep it open)
        self._loop._remove_reader(self._fileno)
        self._closing = True
        self._loop.call_soon(self._protocol.eof_received)
        self._conn_lost += 1
        self._call_connection_lost_soon(None)

    def is_reading(self) -> bool:
        return self._readable and super().is_reading()

    def write_eof(self) -> None:
        self.close()  # a pipe has no half-close: the reader sees end of file


class DatagramTransport(_Ending, asyncio.DatagramTransport, asyncio.Transport):
    """A datagram transport on a non-blocking UDP (or Unix datagram) socket."""

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        address: Any = None,
        *,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        super().__init__()
        self._extra: dict[str, Any] = {"socket": trsock.TransportSocket(sock)}
        for key, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            try:
                self._extra[key] = get()
            except OSError:
                self._extra[key] = None
        self._loop = loop
        self._sock = sock
        self._fileno = sock.fileno()
        self._protocol: Any = protocol
        self._address = address  # the connected peer (sendto's only address), or None
        self._buffer: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._buffer_size = 0
        self._closing = False
        self._conn_lost = 0
        self._protocol_paused = False
        self._high_water = _HIGH_WATER
        self._low_water = _HIGH_WATER // 4
        loop._transports[self._fileno] = self
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return f"<plait.aio.DatagramTransport fd={self._fileno} {state}>"

    def _start_reading(self) -> None:
        if not self._closing and self._sock is not None:
            self._loop._add_reader(self._fileno, self._read_ready)

    def _read_ready(self) -> None:
        if self._sock is None:
            return
        try:
            data, address = self._sock.recvfrom(_MAX_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            self._protocol.datagram_received(data, address)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._address is not None and addr not in (None, self._address):
            raise ValueError(f"Invalid address: must be None or {self._address}")
        if self._sock is None or self._conn_lost:
            self._conn_lost += 1
            if self._conn_lost >= 5:
                logger.warning("socket.send() raised exception.")
            return
        if not self._buffer:
            try:
                self._send_one(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop._add_writer(self._fileno, self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def _send_one(self, data: Any, addr: Any) -> None:
        if self._extra["peername"] is not None:  # connected: no address to give
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def _write_ready(self) -> None:
        while self._buffer and self._sock is not None:
            data, addr = self._buffer[0]
            try:
                self._send_one(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
            self._buffer.popleft()
            self._buffer_size -= len(data)
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop._remove_writer(self._fileno)
            if self._closing:
                self._call_connection_lost_soon(None)

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
