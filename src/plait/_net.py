"""Opening connections and serving them: TCP and Unix. Layer L5.

Theory of operation. ``open_tcp_stream`` resolves the host and tries the addresses in
turn ("happy eyeballs", RFC 8305): the next attempt starts when the previous one fails
or after ``happy_eyeballs_delay`` seconds, whichever comes first; the first connection
wins and the others are cancelled. If every attempt fails the ``OSError`` lists each
address with its error.

``serve_listeners`` runs one accept loop per listener and one task per connection. A
handler that raises is logged (logger ``plait.serve``) and its connection closed; the
server keeps serving. When ``accept`` fails because the process or the system is out of
file descriptors or memory, the loop logs once, waits ``ACCEPT_BACKOFF`` seconds and
tries again (the pending connection stays queued in the kernel meanwhile), so the
server recovers by itself once descriptors are freed.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as _stdlib_socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._core._taskgroup import TASK_STATUS_IGNORED, TaskGroup, TaskStatus
from ._exceptions import ClosedResourceError
from ._socket import SocketType, getaddrinfo
from ._streams import SocketListener, SocketStream, Stream
from ._sync import Event
from ._timeouts import move_on_after, sleep
from ._util import check_seconds, describe, public

__all__ = [
    "ACCEPT_BACKOFF",
    "UnixSocketListener",
    "open_tcp_listeners",
    "open_tcp_stream",
    "open_unix_listener",
    "open_unix_stream",
    "serve_listeners",
    "serve_tcp",
    "serve_unix",
]

logger = logging.getLogger("plait.serve")

ACCEPT_BACKOFF = 0.1

ACCEPT_BATCH = 100  # connections taken per wake-up of an accept loop, at most

# accept() errors that mean "out of resources now", not "this listener is broken".
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

Handler = Callable[[SocketStream], Awaitable[object]]


def _check_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int (0 for any free port), got {describe(port)}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    return port


def _check_host(host: Any, what: str, *, allow_none: bool) -> Any:
    if host is None and allow_none:
        return host
    if not isinstance(host, str | bytes):
        raise TypeError(f"{what} must be a host name or address string, got {describe(host)}")
    return host


def _format_address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _interleave(infos: list[Any]) -> list[Any]:
    """Alternate address families, starting with the first one (RFC 8305 §4)."""
    by_family: dict[int, list[Any]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[Any] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


async def _connect_one(info: Any, local_address: Any) -> SocketType:
    family, type_, proto, _, sockaddr = info
    sock = SocketType(_stdlib_socket.socket(family, type_, proto))
    try:
        if local_address is not None:
            sock.bind((local_address, 0))
        await sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


@public
async def open_tcp_stream(
    host: str | bytes,
    port: int,
    *,
    ssl_context: Any = None,
    server_hostname: str | None = None,
    happy_eyeballs_delay: float = 0.25,
    local_address: str | None = None,
) -> Stream:
    """Connect to ``host:port`` over TCP; returns a :class:`SocketStream`, or an
    :class:`SSLStream` (handshake done) when ``ssl_context`` is given.

    Every resolved address is tried (see the module notes); if all fail, the
    ``OSError`` names each one and why, and its ``__cause__`` groups the errors."""
    _check_host(host, "open_tcp_stream(host)", allow_none=False)
    _check_port(port)
    check_seconds(happy_eyeballs_delay, "happy_eyeballs_delay")
    if server_hostname is not None and ssl_context is None:
        raise ValueError("server_hostname is only meaningful with ssl_context")
    infos = _interleave(await getaddrinfo(host, port, type=_stdlib_socket.SOCK_STREAM))
    if len(infos) == 1:
        try:
            sock = await _connect_one(infos[0], local_address)
        except OSError as exc:
            raise _all_failed(host, port, [(infos[0][4], exc)]) from exc
    else:
        sock = await _happy_eyeballs(host, port, infos, happy_eyeballs_delay, local_address)
    stream: Stream = SocketStream(sock)
    if ssl_context is not None:
        from ._tls import SSLStream

        if server_hostname is None:
            server_hostname = host.decode() if isinstance(host, bytes) else host
        tls = SSLStream(stream, ssl_context, server_hostname=server_hostname)
        try:
            await tls.do_handshake()
        except BaseException:
            await _aclose_forcefully(stream)
            raise
        stream = tls
    return stream


async def _aclose_forcefully(stream: Stream) -> None:
    from ._core._cancel import CancelScope

    with CancelScope() as scope:
        scope.cancel()
        await stream.aclose()


def _reason(exc: OSError) -> str:
    if exc.errno is not None:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc)


def _all_failed(host: Any, port: int, failures: list[tuple[Any, OSError]]) -> OSError:
    lines = "".join(f"\n  {_format_address(addr)}: {_reason(exc)}" for addr, exc in failures)
    errnos = {exc.errno for _, exc in failures}
    code = errnos.pop() if len(errnos) == 1 else None
    what = "the attempt" if len(failures) == 1 else f"all {len(failures)} attempts"
    message = f"{what} to connect to {host!r} port {port} failed:{lines}"
    error = OSError(code, message) if code is not None else OSError(message)
    if len(failures) > 1:
        error.__cause__ = ExceptionGroup("connection attempts", [exc for _, exc in failures])
    return error


async def _happy_eyeballs(
    host: Any, port: int, infos: list[Any], delay: float, local_address: Any
) -> SocketType:
    failures: list[tuple[Any, OSError]] = []
    winners: list[SocketType] = []

    async def attempt(info: Any, previous_failed: Event | None, failed: Event) -> None:
        if previous_failed is not None:
            with move_on_after(delay):
                await previous_failed.wait()
        try:
            sock = await _connect_one(info, local_address)
        except OSError as exc:
            failures.append((info[4], exc))
            failed.set()
            return
        winners.append(sock)
        group.cancel_scope.cancel()

    try:
        async with TaskGroup() as group:
            previous: Event | None = None
            for info in infos:
                failed = Event()
                group.spawn(attempt, info, previous, failed, name=f"connect {info[4]}")
                previous = failed
    except BaseException:
        for sock in winners:
            sock.close()
        raise
    if not winners:
        order = {id(info[4]): i for i, info in enumerate(infos)}
        failures.sort(key=lambda item: order.get(id(item[0]), 0))
        raise _all_failed(host, port, failures)
    for extra in winners[1:]:
        extra.close()
    return winners[0]


@public
async def open_unix_stream(path: str | bytes | os.PathLike[Any]) -> SocketStream:
    """Connect to the Unix socket at ``path``."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"open_unix_stream(path) needs a path, got {describe(path)}")
    sock = SocketType(_stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM))
    try:
        await sock.connect(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return SocketStream(sock)


def _check_backlog(backlog: Any) -> int:
    if backlog is None:
        return 0xFFFF  # the kernel caps it at net.core.somaxconn
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be a positive int or None, got {backlog!r}")
    return backlog


@public
async def open_tcp_listeners(
    port: int, host: str | bytes | None = None, *, backlog: int | None = None
) -> list[SocketListener]:
    """Listen for TCP connections on ``port`` (0: any free port) of ``host`` (None:
    every interface, IPv4 and IPv6). Returns one listener per address; with port 0 all
    of them share the port chosen for the first."""
    _check_port(port)
    _check_host(host, "open_tcp_listeners(host)", allow_none=True)
    backlog = _check_backlog(backlog)
    infos = await getaddrinfo(
        host, port, type=_stdlib_socket.SOCK_STREAM, flags=_stdlib_socket.AI_PASSIVE
    )
    seen: set[Any] = set()
    unique = []
    for info in infos:
        key = (info[0], info[4][:2])
        if key not in seen:
            seen.add(key)
            unique.append(info)
    for tries_left in range(10, 0, -1):
        try:
            return _bind_all(unique, port, backlog)
        except OSError as exc:
            # Port 0 and several addresses: the port picked for the first was taken on
            # another family. Try another.
            if port != 0 or len(unique) == 1 or exc.errno != errno.EADDRINUSE or tries_left == 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _bind_all(infos: Sequence[Any], port: int, backlog: int) -> list[SocketListener]:
    listeners: list[SocketListener] = []
    chosen = port
    try:
        for family, type_, proto, _, sockaddr in infos:
            try:
                raw = _stdlib_socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue  # e.g. IPv6 disabled on this machine
                raise
            sock = SocketType(raw)
            try:
                sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
                if family == _stdlib_socket.AF_INET6:
                    sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"cannot listen on {_format_address((sockaddr[0], chosen))}: "
                        f"{exc.strerror}",
                    ) from None
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            chosen = sock.getsockname()[1]
            listeners.append(SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if not listeners:
        raise OSError(f"no address to listen on for port {port}")
    return listeners


@public
class UnixSocketListener(SocketListener):
    """A listener on a Unix socket path; closing it removes the socket file."""

    __slots__ = ("_inode", "path")

    def __init__(self, socket: SocketType, path: str) -> None:
        super().__init__(socket)
        self.path = path
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)

    async def aclose(self) -> None:
        if not self._closed:
            try:
                st = os.stat(self.path)
            except OSError:
                pass
            else:
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
        await super().aclose()


@public
async def open_unix_listener(
    path: str | bytes | os.PathLike[Any], *, backlog: int | None = None, mode: int | None = None
) -> UnixSocketListener:
    """Listen on a Unix socket at ``path``. A stale socket file left by a dead server
    is replaced; a live server or a file that is not a socket is an error."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"the Unix socket path must be a path, got {describe(path)}")
    backlog = _check_backlog(backlog)
    spath = os.fsdecode(path)
    await _remove_stale_socket(spath)
    sock = SocketType(_stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM))
    try:
        sock.bind(spath)
        if mode is not None:
            os.chmod(spath, mode)
        sock.listen(backlog)
        return UnixSocketListener(sock, spath)
    except BaseException:
        sock.close()
        raise


async def _remove_stale_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, f"{path!r} exists and is not a socket; remove it or pick another path"
        )
    probe = SocketType(_stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM))
    try:
        await probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a dead server's leftover
        return
    except OSError:
        return  # let bind() report it
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a server is already listening on {path!r}")


def _check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(
            f"handler must be an async function taking a stream, got {describe(handler)}"
        )


async def _run_handler(handler: Handler, stream: SocketStream) -> None:
    try:
        async with stream:
            await handler(stream)
    except Exception:
        logger.exception(
            "connection handler %s raised; its connection was closed, the server goes on",
            getattr(handler, "__qualname__", handler),
        )


async def _accept_loop(listener: SocketListener, handler: Handler, group: TaskGroup) -> None:
    async with listener:
        starved = False
        while True:
            try:
                stream = await listener.accept()
            except ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRNOS:
                    raise
                if not starved:
                    logger.warning(
                        "accept() on %r failed (%s); retrying every %.1f s until it works",
                        listener,
                        exc,
                        ACCEPT_BACKOFF,
                    )
                    starved = True
                del exc
                await sleep(ACCEPT_BACKOFF)
                continue
            if starved:
                logger.warning("accept() on %r works again", listener)
                starved = False
            group.spawn(_run_handler, handler, stream)
            # Take the connections already queued too, up to a batch, before yielding:
            # a loop iteration runs every ready task, so one accept per iteration lets
            # a busy server take new connections only as fast as it iterates (1,000
            # clients connecting to a server busy with 1,000 others waited seconds).
            for _ in range(ACCEPT_BATCH - 1):
                more = listener._accept_nowait()
                if more is None:
                    break
                group.spawn(_run_handler, handler, more)


@public
async def serve_listeners(
    handler: Handler,
    listeners: Sequence[SocketListener],
    *,
    handler_group: TaskGroup | None = None,
    task_status: TaskStatus = TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on every listener until cancelled, running ``await
    handler(stream)`` in a new task for each (in ``handler_group`` if given). Calls
    ``task_status.started(listeners)`` once accepting. The listeners are closed on
    exit."""
    _check_handler(handler)
    listeners = list(listeners)
    for listener in listeners:
        if not isinstance(listener, SocketListener):
            raise TypeError(f"serve_listeners() needs SocketListeners, got {describe(listener)}")
    async with TaskGroup() as group:
        for listener in listeners:
            group.spawn(_accept_loop, listener, handler, handler_group or group)
        task_status.started(listeners)


@public
async def serve_tcp(
    handler: Handler,
    port: int,
    host: str | bytes | None = None,
    *,
    backlog: int | None = None,
    handler_group: TaskGroup | None = None,
    task_status: TaskStatus = TASK_STATUS_IGNORED,
) -> None:
    """Serve TCP on ``port`` (see :func:`open_tcp_listeners`), running ``await
    handler(stream)`` per connection, until cancelled. ``await tg.start(serve_tcp,
    handler, 0)`` returns the listeners, so ``listeners[0].port`` is the port."""
    _check_handler(handler)
    listeners = await open_tcp_listeners(port, host, backlog=backlog)
    await serve_listeners(handler, listeners, handler_group=handler_group, task_status=task_status)


@public
async def serve_unix(
    handler: Handler,
    path: str | bytes | os.PathLike[Any],
    *,
    backlog: int | None = None,
    mode: int | None = None,
    handler_group: TaskGroup | None = None,
    task_status: TaskStatus = TASK_STATUS_IGNORED,
) -> None:
    """Serve a Unix socket at ``path`` until cancelled; the socket file is removed on
    exit. ``mode`` (e.g. ``0o600``) restricts who may connect."""
    _check_handler(handler)
    listener = await open_unix_listener(path, backlog=backlog, mode=mode)
    await serve_listeners(
        handler, [listener], handler_group=handler_group, task_status=task_status
    )
