"""``plait.socket``: ``socket.socket`` with awaitable I/O. Layer L5.

Theory of operation: every socket is non-blocking. An operation tries the syscall
first and waits for readiness only when it raises ``BlockingIOError``; after the wait
it tries again. Each operation is a checkpoint: it raises ``Cancelled`` before touching
the socket when a surrounding scope is cancelled, and when the syscall succeeded
without waiting it ends with a schedule point that cannot raise (the data it moved is
never lost to a cancellation).

Waiting goes through the loop's reactor: one task per direction per fd (a second one
gets ``BusyResourceError``). :meth:`SocketType.close` tells the loop first, so a task
waiting on the socket is woken with ``ClosedResourceError`` and the fd is unregistered
before its number can be reused.

Name resolution never blocks the loop: numeric addresses are parsed in place, names go
to a worker thread (abandoned, not waited for, when the caller is cancelled).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket as _stdlib_socket
from collections.abc import Callable
from typing import Any, TypeVar

from ._core._local import current_loop, current_loop_or_none
from ._core._reactor import READABLE, WRITABLE
from ._core._thread_cache import start_thread_soon
from ._core._traps import Abort, RaiseCancelT, schedule_point, wait_task_rescheduled
from ._exceptions import Cancelled
from ._util import describe

__all__ = [
    "SocketType",
    "from_stdlib_socket",
    "getaddrinfo",
    "getnameinfo",
    "run_blocking_abandoning",
    "socket",
    "socketpair",
]

T = TypeVar("T")

_tokens = itertools.count(1)

_NUMERIC_ONLY = _stdlib_socket.AI_NUMERICHOST | _stdlib_socket.AI_NUMERICSERV


def _raise_if_cancelled(what: str) -> Any:
    loop = current_loop(what)
    task = loop._current_task
    if task is None:
        raise RuntimeError(f"{what} must be awaited in a plait task, not a loop callback")
    if task._scope._eff:
        raise Cancelled
    return loop


async def run_blocking_abandoning(fn: Callable[[], T], what: str) -> T:
    """Run ``fn()`` in a worker thread; a cancelled caller stops waiting at once (the
    thread finishes on its own and its result is dropped). A checkpoint."""
    loop = _raise_if_cancelled(what)
    task = loop._current_task
    waiting = [task]

    def back(value: Any, error: BaseException | None) -> None:
        waiter = waiting[0]
        if waiter is not None:
            waiting[0] = None
            loop._kernel_reschedule(waiter, value, error)

    def deliver(value: Any, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(back, value, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    def abort(_: RaiseCancelT) -> Abort:
        waiting[0] = None
        return Abort.SUCCEEDED

    start_thread_soon(fn, deliver, name=f"plait worker: {what}")
    del task
    result: T = await wait_task_rescheduled(abort)
    return result


async def getaddrinfo(  # noqa: PLR0917 - the standard library's signature
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> list[tuple[Any, Any, int, str, Any]]:
    """``socket.getaddrinfo`` that does not block the loop.

    Numeric hosts and ports are resolved in place; names are looked up in a worker
    thread. Cancelling the caller abandons the lookup."""
    _raise_if_cancelled("plait.socket.getaddrinfo()")
    try:
        result = _stdlib_socket.getaddrinfo(host, port, family, type, proto, flags | _NUMERIC_ONLY)
    except (_stdlib_socket.gaierror, UnicodeError):
        pass
    else:
        await schedule_point()
        return result

    def lookup() -> list[tuple[Any, Any, int, str, Any]]:
        return _stdlib_socket.getaddrinfo(host, port, family, type, proto, flags)

    return await run_blocking_abandoning(lookup, "plait.socket.getaddrinfo()")


async def getnameinfo(sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
    """``socket.getnameinfo`` in a worker thread."""

    def lookup() -> tuple[str, str]:
        return _stdlib_socket.getnameinfo(sockaddr, flags)

    return await run_blocking_abandoning(lookup, "plait.socket.getnameinfo()")


def _is_numeric_host(family: int, host: Any) -> bool:
    if not isinstance(host, str):
        return False
    try:
        _stdlib_socket.inet_pton(family, host)
    except (OSError, ValueError):
        return False
    return True


class SocketType:
    """A non-blocking ``socket.socket`` whose I/O methods are awaitable.

    Make one with :func:`plait.socket.socket`, :func:`socketpair` or
    :func:`from_stdlib_socket`. Synchronous methods (``bind``, ``listen``,
    ``setsockopt``, ``getsockname``, ``shutdown``, ...) behave as the standard
    library's; ``close()`` also wakes a task waiting on the socket with
    ``ClosedResourceError``.
    """

    __slots__ = ("__weakref__", "_sock", "_token")

    def __init__(self, sock: _stdlib_socket.socket) -> None:
        if not isinstance(sock, _stdlib_socket.socket):
            raise TypeError(
                f"plait.socket wraps a socket.socket, got {describe(sock)}; create one with "
                "plait.socket.socket(...) or pass a standard library socket"
            )
        if sock.__class__.__module__ == "ssl":
            raise TypeError(
                "an ssl.SSLSocket cannot be made asynchronous; wrap a plain socket's stream "
                "in plait.SSLStream instead"
            )
        sock.setblocking(False)
        self._sock = sock
        # Lets the reactor keep this fd registered between waits (see Reactor.set):
        # close() and detach() always tell the loop first.
        self._token = next(_tokens)

    # -- plain attributes and synchronous methods ------------------------------------

    @property
    def family(self) -> int:
        return self._sock.family

    @property
    def type(self) -> int:
        return self._sock.type

    @property
    def proto(self) -> int:
        return self._sock.proto

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def bind(self, address: Any) -> None:
        """Bind synchronously (numeric addresses, paths and ``"localhost"``-like names
        that resolve locally; resolve other names with :func:`getaddrinfo` first)."""
        self._sock.bind(address)

    def listen(self, backlog: int = _stdlib_socket.SOMAXCONN) -> None:
        self._sock.listen(backlog)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def get_inheritable(self) -> bool:
        return self._sock.get_inheritable()

    def set_inheritable(self, inheritable: bool) -> None:
        self._sock.set_inheritable(inheritable)

    def detach(self) -> int:
        """Give up the fd (returned) without closing it; waiting tasks are woken."""
        self._forget()
        return self._sock.detach()

    def dup(self) -> SocketType:
        return SocketType(self._sock.dup())

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        """Close the socket. A task waiting on it gets ``ClosedResourceError``."""
        if self._sock.fileno() != -1:
            self._forget()
            self._sock.close()

    def _forget(self) -> None:
        fd = self._sock.fileno()
        if fd == -1:
            return
        loop = current_loop_or_none()
        if loop is not None and not loop.is_closed():
            loop._notify_closing(fd)

    def __enter__(self) -> SocketType:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._sock).replace("socket.socket", "plait.socket.SocketType", 1)

    # -- waiting ---------------------------------------------------------------------

    async def wait_readable(self) -> None:
        loop = current_loop("plait socket wait")
        await loop._wait_fd(self._sock.fileno(), READABLE, self._token)

    async def wait_writable(self) -> None:
        loop = current_loop("plait socket wait")
        await loop._wait_fd(self._sock.fileno(), WRITABLE, self._token)

    async def _io(self, which: int, fn: Callable[..., T], *args: Any) -> T:
        loop = _raise_if_cancelled("plait socket I/O")
        waited = False
        while True:
            try:
                result = fn(*args)
            except BlockingIOError:
                pass
            else:
                if not waited:
                    await schedule_point()
                return result
            waited = True
            await loop._wait_fd(self._sock.fileno(), which, self._token)

    # -- awaitable I/O ---------------------------------------------------------------

    async def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return await self._io(READABLE, self._sock.recv, bufsize, flags)

    async def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return await self._io(READABLE, self._sock.recv_into, buffer, nbytes, flags)

    async def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return await self._io(READABLE, self._sock.recvfrom, bufsize, flags)

    async def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return await self._io(READABLE, self._sock.recvfrom_into, buffer, nbytes, flags)

    async def send(self, data: Any, flags: int = 0) -> int:
        return await self._io(WRITABLE, self._sock.send, data, flags)

    async def sendto(self, data: Any, *args: Any) -> int:
        """``sendto(data, address)`` or ``sendto(data, flags, address)``; host names in
        the address are resolved without blocking the loop."""
        if len(args) not in (1, 2):
            raise TypeError("sendto() takes (data, address) or (data, flags, address)")
        *flags, address = args
        address = await self._resolve(address)
        return await self._io(WRITABLE, self._sock.sendto, data, *flags, address)

    if hasattr(_stdlib_socket.socket, "sendmsg"):

        async def sendmsg(self, buffers: Any, *args: Any) -> int:
            return await self._io(WRITABLE, self._sock.sendmsg, buffers, *args)

        async def recvmsg(self, bufsize: int, *args: Any) -> Any:
            return await self._io(READABLE, self._sock.recvmsg, bufsize, *args)

    async def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``. If cancelled part-way, some of it may have been sent."""
        loop = _raise_if_cancelled("plait socket I/O")
        sock = self._sock
        with memoryview(data) as view, view.cast("B") as raw:
            total = len(raw)
            sent = 0
            waited = False
            while True:
                try:
                    sent += sock.send(raw[sent:], flags)
                except BlockingIOError:
                    pass
                if sent >= total:
                    break
                waited = True
                await loop._wait_fd(sock.fileno(), WRITABLE, self._token)
        if not waited:
            await schedule_point()

    async def accept(self) -> tuple[SocketType, Any]:
        """Wait for a connection; returns ``(plait socket, address)``."""
        sock, address = await self._io(READABLE, self._sock.accept)
        return SocketType(sock), address

    async def connect(self, address: Any) -> None:
        """Connect, resolving host names without blocking the loop.

        If cancelled while the connection is in progress the socket is closed: its
        state is unknown, so it cannot be used any more."""
        address = await self._resolve(address)
        loop = _raise_if_cancelled("plait socket connect()")
        sock = self._sock
        delay = 0.001
        while True:
            try:
                sock.connect(address)
            except BlockingIOError as exc:
                if sock.family == _stdlib_socket.AF_UNIX or exc.errno == errno.EAGAIN:
                    # A Unix socket whose listener's backlog is full: there is no
                    # readiness to wait for, so try again a little later.
                    del exc
                    from ._timeouts import sleep

                    try:
                        await sleep(delay)
                    except BaseException:
                        self.close()
                        raise
                    delay = min(delay * 2, 0.1)
                    continue
                break  # EINPROGRESS: wait for the outcome below
            except InterruptedError:
                break  # the connect goes on in the background (POSIX): wait for it
            else:
                await schedule_point()
                return
        try:
            await loop._wait_fd(sock.fileno(), WRITABLE, self._token)
        except BaseException:
            self.close()
            raise
        err = sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ERROR)
        if err:
            raise OSError(err, f"connecting to {_format(address)} failed: {os.strerror(err)}")

    async def _resolve(self, address: Any) -> Any:
        family = self._sock.family
        if family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            return address
        if not isinstance(address, tuple) or len(address) < 2:
            shape = (
                "an IPv6 address is a (host, port[, flowinfo, scope_id]) tuple"
                if family == _stdlib_socket.AF_INET6
                else "an IPv4 address is a (host, port) tuple"
            )
            raise ValueError(f"{shape}, got {address!r}")
        host, port = address[:2]
        if isinstance(port, int) and _is_numeric_host(family, host):
            return address
        infos = await getaddrinfo(host, port, family, self._sock.type, self._sock.proto)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"no address found for {host!r}")
        resolved = infos[0][4]
        if family == _stdlib_socket.AF_INET6 and len(address) > 2:
            resolved = (resolved[0], resolved[1], *address[2:])
        return resolved


def _format(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return repr(address)


def socket(
    family: int = _stdlib_socket.AF_INET,
    type: int = _stdlib_socket.SOCK_STREAM,
    proto: int = 0,
    fileno: int | None = None,
) -> SocketType:
    """Create a non-blocking plait socket (same arguments as ``socket.socket``)."""
    return SocketType(_stdlib_socket.socket(family, type, proto, fileno))


def socketpair(
    family: int | None = None,
    type: int = _stdlib_socket.SOCK_STREAM,
    proto: int = 0,
) -> tuple[SocketType, SocketType]:
    """A connected pair of plait sockets (``socket.socketpair``)."""
    if family is None:
        a, b = _stdlib_socket.socketpair(type=type, proto=proto)
    else:
        a, b = _stdlib_socket.socketpair(family, type, proto)
    return SocketType(a), SocketType(b)


def from_stdlib_socket(sock: _stdlib_socket.socket) -> SocketType:
    """Wrap an existing ``socket.socket`` (it is made non-blocking)."""
    return SocketType(sock)
