"""Byte streams: the interface every plait stream has, and ``SocketStream``. Layer L5.

Theory of operation: a :class:`Stream` subclass provides four primitives,
``send_all``, ``_receive`` (one chunk from the transport, ``b""`` at EOF),
``send_eof`` and ``aclose``. The base class adds the reading conveniences
(``receive_exactly``, ``receive_until``, ``async for``) on top of a small pushback
buffer: whatever a convenience read past what it returns stays in the buffer, and
``receive_some`` hands it out first. A cancelled convenience read keeps what it has
read so far in the buffer, so no byte is ever lost.

Each operation is a checkpoint. One task at a time may send and one may receive on a
stream; a second concurrent sender (or receiver) gets ``BusyResourceError``, because
interleaving two tasks' bytes is never what anyone meant. A stream closed while a task
is blocked in it wakes that task with ``ClosedResourceError``; using a closed stream
raises ``ClosedResourceError``; a connection the peer reset raises
``BrokenResourceError`` (its ``__cause__`` is the ``OSError``).

Receiving on a socket tries ``recv`` first and waits for readiness only when it raises
``BlockingIOError``. One refinement, measured on the TCP echo benchmark: a failed
``recv`` costs about 3 us here (the syscall plus building the exception), and in
request/response traffic the next receive after an empty one is nearly always empty
too. So once a receive has found the socket empty, the following receives wait for
readiness first (epoll is level-triggered: if data is already queued, the very next
poll reports it, so waiting first is never wrong, at worst one loop pass late); a
``recv`` that fills the whole buffer shows a backlog and switches back to trying first.
Bulk transfers therefore keep the try-first path, ping-pong traffic skips the doomed
syscall.
"""

from __future__ import annotations

import errno
import socket as _stdlib_socket
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any

from ._core._local import run_state
from ._core._reactor import READABLE, WRITABLE
from ._core._traps import _SCHEDULE_POINT, checkpoint
from ._exceptions import (
    BrokenResourceError,
    BusyResourceError,
    Cancelled,
    ClosedResourceError,
    EndOfStream,
)
from ._socket import SocketType, _raise_if_cancelled
from ._util import describe, public

__all__ = ["DEFAULT_RECEIVE_SIZE", "SocketListener", "SocketStream", "Stream"]

DEFAULT_RECEIVE_SIZE = 65536

# errnos that mean "the connection is gone", reported as BrokenResourceError.
_BROKEN = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ESHUTDOWN,
    }
)


def _check_max_bytes(max_bytes: Any, what: str) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"{what} must be a positive int, got {describe(max_bytes)}")
    if max_bytes < 1:
        raise ValueError(f"{what} must be >= 1, got {max_bytes}")
    return max_bytes


def _end_of_stream(message: str, partial: bytes) -> EndOfStream:
    exc = EndOfStream(message)
    exc.partial = partial  # type: ignore[attr-defined]
    return exc


@public
class Stream:
    """A bidirectional byte stream (the interface of ``SocketStream``, ``SSLStream``
    and process pipes).

    Subclasses implement ``send_all``, ``_receive``, ``send_eof`` and ``aclose``, and
    set ``_rbuf = bytearray()`` in ``__init__``."""

    __slots__ = ("_rbuf",)

    _rbuf: bytearray

    async def send_all(self, data: Any) -> None:
        """Send every byte of ``data`` (any bytes-like object)."""
        raise NotImplementedError

    async def send_eof(self) -> None:
        """Tell the peer no more data will come (a half-close); receiving goes on."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the stream (idempotent). Tasks blocked in it get ClosedResourceError."""
        raise NotImplementedError

    async def _receive(self, max_bytes: int) -> bytes:
        raise NotImplementedError

    def _is_closed(self) -> bool:
        """Whether ``aclose()`` was called (subclasses with another flag override it)."""
        return bool(getattr(self, "_closed", False))

    def receive_some(self, max_bytes: int | None = None) -> Coroutine[Any, Any, bytes]:
        """Return between 1 and ``max_bytes`` bytes (64 KiB by default) as soon as some
        are available, or ``b""`` once the peer has sent EOF. (Await it.)"""
        # Not ``async def``: it hands back the coroutine that does the work, which saves
        # a frame on every resume of the commonest call of all.
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes.__class__ is not int or max_bytes < 1:
            _check_max_bytes(max_bytes, "receive_some(max_bytes)")
        if self._rbuf:
            return self._receive_buffered(max_bytes)
        return self._receive(max_bytes)

    async def _receive_buffered(self, max_bytes: int) -> bytes:
        if self._is_closed():
            raise ClosedResourceError("receive_some() on a stream that was closed")
        await checkpoint()
        rbuf = self._rbuf
        data = bytes(rbuf[:max_bytes])
        del rbuf[:max_bytes]
        return data

    async def receive_exactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes. ``EndOfStream`` (with ``.partial``, the bytes
        that did arrive) if the peer sends EOF first."""
        if n.__class__ is not int or n < 0:
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                pass
            elif isinstance(n, int) and not isinstance(n, bool):
                raise ValueError(f"receive_exactly(n) needs n >= 0, got {n}")
            else:
                raise TypeError(f"receive_exactly(n) needs an int, got {describe(n)}")
        rbuf = self._rbuf
        if not rbuf and n:
            chunk = await self._receive(max(n, DEFAULT_RECEIVE_SIZE))
            if len(chunk) == n:
                return chunk
            rbuf += chunk
            if not chunk:
                raise _end_of_stream(
                    f"the peer closed the stream before any of the {n} bytes "
                    "receive_exactly() waited for",
                    b"",
                )
        elif len(rbuf) >= n:
            await checkpoint()
        while len(rbuf) < n:
            chunk = await self._receive(max(n - len(rbuf), DEFAULT_RECEIVE_SIZE))
            if not chunk:
                partial = bytes(rbuf)
                rbuf.clear()
                raise _end_of_stream(
                    f"the peer closed the stream after {len(partial)} of the {n} bytes "
                    "receive_exactly() waited for",
                    partial,
                )
            rbuf += chunk
        data = bytes(rbuf[:n])
        del rbuf[:n]
        return data

    async def receive_until(self, delim: bytes, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes:
        """Return the data up to and including ``delim`` (like asyncio's ``readuntil``).

        ``ValueError`` if ``max_bytes`` bytes arrive without ``delim`` (they stay
        buffered for ``receive_some``); ``EndOfStream`` (with ``.partial``) if the peer
        sends EOF first."""
        if not isinstance(delim, bytes | bytearray) or not delim:
            raise ValueError(f"receive_until() needs a non-empty bytes delimiter, got {delim!r}")
        _check_max_bytes(max_bytes, "receive_until(max_bytes)")
        rbuf = self._rbuf
        start = 0
        first = True
        while True:
            at = rbuf.find(delim, start)
            if at != -1 and at + len(delim) <= max_bytes:
                if first:
                    await checkpoint()
                end = at + len(delim)
                data = bytes(rbuf[:end])
                del rbuf[:end]
                return data
            if at != -1 or len(rbuf) >= max_bytes:
                raise ValueError(
                    f"no {bytes(delim)!r} within the first {max_bytes} bytes "
                    "(receive_until's max_bytes); the data stays buffered"
                )
            start = max(0, len(rbuf) - len(delim) + 1)
            first = False
            chunk = await self._receive(DEFAULT_RECEIVE_SIZE)
            if not chunk:
                partial = bytes(rbuf)
                rbuf.clear()
                raise _end_of_stream(
                    f"the peer closed the stream before sending {bytes(delim)!r} "
                    f"({len(partial)} bytes came)",
                    partial,
                )
            rbuf += chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.receive_some()
            if not data:
                return
            yield data

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _broken(exc: OSError, what: str) -> BrokenResourceError:
    return BrokenResourceError(f"{what} failed: the connection is broken ({exc})")


@public
class SocketStream(Stream):
    """A ``Stream`` over a connected stream socket (TCP or Unix).

    ``socket`` is the underlying :class:`plait.socket.SocketType`. TCP sockets get
    ``TCP_NODELAY`` (small writes go out at once: latency over batching)."""

    __slots__ = (
        "_closed",
        "_eof_sent",
        "_receiving",
        "_sending",
        "_sock",
        "_wait_first",
        "socket",
    )

    def __init__(self, socket: SocketType) -> None:
        if not isinstance(socket, SocketType):
            raise TypeError(
                f"SocketStream needs a plait socket, got {describe(socket)}; wrap a standard "
                "library socket with plait.socket.from_stdlib_socket(sock)"
            )
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError(f"SocketStream needs a SOCK_STREAM socket, got {socket!r}")
        self.socket = socket
        self._sock = socket._sock
        self._rbuf = bytearray()
        self._sending = False
        self._receiving = False
        self._eof_sent = False
        self._closed = False
        # Set when a receive found the socket empty: the next one waits for readiness
        # before calling recv (see the module notes).
        self._wait_first = False
        if socket.family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            try:
                socket.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - e.g. not a TCP socket after all
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<plait.SocketStream {state}>"

    def _closed_error(self, what: str) -> ClosedResourceError:
        return ClosedResourceError(f"{what} on a SocketStream that was closed (aclose())")

    async def send_all(self, data: Any) -> None:
        if self._sending:
            raise BusyResourceError(
                "another task is already sending on this stream; use one sending task "
                "(or a Lock) per stream"
            )
        if self._closed:
            raise self._closed_error("send_all()")
        if self._eof_sent:
            raise ClosedResourceError("send_all() after send_eof(): this side is shut down")
        try:
            loop = run_state.loop
            if loop._current_task._scope._eff:  # type: ignore[union-attr]
                raise Cancelled
        except AttributeError:
            loop = _raise_if_cancelled("SocketStream.send_all()")
        sock = self._sock
        self._sending = True
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if data.__class__ is bytes and sent == len(data):
                await checkpoint(_SCHEDULE_POINT)
                return
            with memoryview(data) as view, view.cast("B") as raw:
                total = len(raw)
                if sent >= total:
                    await checkpoint(_SCHEDULE_POINT)
                    return
                while sent < total:
                    await loop._wait_fd(  # type: ignore[union-attr]
                        sock.fileno(), WRITABLE, self.socket._token
                    )
                    try:
                        sent += sock.send(raw[sent:])
                    except BlockingIOError:
                        pass
        except OSError as exc:
            if exc.errno in _BROKEN:
                raise _broken(exc, "send_all()") from exc
            if self._closed or sock.fileno() == -1:
                raise self._closed_error("send_all()") from None
            raise
        finally:
            self._sending = False

    async def _receive(self, max_bytes: int) -> bytes:
        if self._receiving:
            raise BusyResourceError(
                "another task is already receiving on this stream; use one receiving "
                "task per stream"
            )
        if self._closed:
            raise self._closed_error("receiving")
        try:
            loop = run_state.loop
            if loop._current_task._scope._eff:  # type: ignore[union-attr]
                raise Cancelled
        except AttributeError:
            loop = _raise_if_cancelled("SocketStream.receive_some()")
        sock = self._sock
        self._receiving = True
        try:
            if not self._wait_first:
                try:
                    data = sock.recv(max_bytes)
                except BlockingIOError:
                    self._wait_first = True
                else:
                    await checkpoint(_SCHEDULE_POINT)
                    return data
            token = self.socket._token
            while True:
                await loop._wait_fd(sock.fileno(), READABLE, token)  # type: ignore[union-attr]
                try:
                    data = sock.recv(max_bytes)
                except BlockingIOError:
                    continue
                if len(data) == max_bytes:
                    self._wait_first = False  # more may be queued: try first next time
                return data
        except OSError as exc:
            if exc.errno in _BROKEN:
                raise _broken(exc, "receive") from exc
            if self._closed or sock.fileno() == -1:
                raise self._closed_error("receiving") from None
            raise
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        if self._sending:
            raise BusyResourceError("send_eof() while another task is sending on this stream")
        if self._closed:
            raise self._closed_error("send_eof()")
        await checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self._sock.shutdown(_stdlib_socket.SHUT_WR)
        except OSError as exc:
            if exc.errno not in _BROKEN:
                raise

    async def aclose(self) -> None:
        """Close the socket (idempotent). A checkpoint, but the socket is closed even if
        the caller is cancelled."""
        if not self._closed:
            self._closed = True
            self.socket.close()
        await checkpoint()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)


@public
class SocketListener:
    """A listening socket: ``await accept()`` returns a :class:`SocketStream`.

    ``socket`` is the bound plait socket; ``port`` its port (TCP) and ``address`` what
    ``getsockname()`` says."""

    __slots__ = ("_accepting", "_closed", "socket")

    def __init__(self, socket: SocketType) -> None:
        if not isinstance(socket, SocketType):
            raise TypeError(f"SocketListener needs a plait socket, got {describe(socket)}")
        if socket.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError(f"SocketListener needs a SOCK_STREAM socket, got {socket!r}")
        listening = socket.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN)
        if not listening:
            raise ValueError(
                f"SocketListener needs a listening socket (call listen() first): {socket!r}"
            )
        self.socket = socket
        self._accepting = False
        self._closed = False

    @property
    def address(self) -> Any:
        return self.socket.getsockname()

    @property
    def port(self) -> int | None:
        address = self.address
        return address[1] if isinstance(address, tuple) else None

    def __repr__(self) -> str:
        if self._closed:
            return "<plait.SocketListener closed>"
        return f"<plait.SocketListener on {self.address!r}>"

    async def accept(self) -> SocketStream:
        """Wait for the next connection. ``OSError`` (e.g. ``EMFILE``) if the OS cannot
        give us one; connections that died while queued are skipped."""
        if self._accepting:
            raise BusyResourceError("another task is already accepting on this listener")
        if self._closed:
            raise ClosedResourceError("accept() on a listener that was closed (aclose())")
        self._accepting = True
        try:
            while True:
                try:
                    sock, _ = await self.socket.accept()
                except OSError as exc:
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                        continue  # the peer gave up while queued (or a firewall said no)
                    if self._closed or self.socket.closed:
                        raise ClosedResourceError(
                            "the listener was closed while accepting"
                        ) from None
                    raise
                return SocketStream(sock)
        finally:
            self._accepting = False

    def _accept_nowait(self) -> SocketStream | None:
        """A connection the OS has already queued, taken without waiting; None if there
        is none, or if the OS refuses one now (the next ``accept()`` reports why)."""
        if self._closed or self._accepting:
            return None
        try:
            sock, _ = self.socket._sock.accept()
        except OSError:
            return None
        return SocketStream(SocketType(sock))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.socket.close()
        await checkpoint()

    async def __aenter__(self) -> SocketListener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
