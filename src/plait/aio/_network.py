"""Connections and servers of :class:`plait.aio.EventLoop`: ``create_connection``,
``create_server``, their Unix-socket forms, ``connect_accepted_socket`` and
``start_tls``. Layer L6.

Theory of operation. Everything ends in :func:`make_transport`: a connected
non-blocking socket becomes a :class:`SocketTransport`, under asyncio's generic
``SSLProtocol`` when TLS is asked for (the TLS layer is a protocol between the socket
transport and the application's protocol, as in asyncio). A server listens with one
reader per listening socket; each readiness accepts what is pending (up to the
backlog) and sets every connection up in its own asyncio task, so a slow TLS
handshake holds up nobody else. When ``accept()`` fails for lack of file descriptors
or memory, the server reports it, stops accepting for a second and goes on serving.
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import functools
import itertools
import logging
import os
import socket
import ssl as ssl_module
import stat
import sys
import weakref
from asyncio import sslproto, staggered, trsock
from typing import Any

from ._transports import DatagramTransport, SocketTransport

logger = logging.getLogger("asyncio")

__all__ = [
    "Server",
    "check_sendfile",
    "connect_accepted_socket",
    "copy_file",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "make_transport",
    "sendfile",
    "start_tls",
]

_ACCEPT_RETRY_DELAY = 1.0  # seconds without accepting after EMFILE and the like


def _check_ssl(ssl: Any, handshake_timeout: float | None, shutdown_timeout: float | None) -> None:
    if ssl is None or ssl is False:
        if handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if shutdown_timeout is not None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
    for name, value in (
        ("ssl_handshake_timeout", handshake_timeout),
        ("ssl_shutdown_timeout", shutdown_timeout),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} should be a positive number, got {value}")


def _timeout(seconds: float | None) -> Any:
    return seconds  # (typeshed says int; asyncio takes any number of seconds)


def _check_stream_socket(sock: Any) -> None:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"a socket.socket was expected, got {sock!r}")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A Stream Socket was expected, got {sock!r}")
    if isinstance(sock, ssl_module.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


async def make_transport(
    loop: Any,
    sock: socket.socket,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    sslcontext: ssl_module.SSLContext | None,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
    shutdown_timeout: float | None = None,
    extra: dict[str, Any] | None = None,
    server: Server | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """A transport and protocol on the connected ``sock``, once connected (and the TLS
    handshake done)."""
    sock.setblocking(False)
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport: SocketTransport
    if sslcontext is not None:
        ssl_protocol = sslproto.SSLProtocol(
            loop,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=_timeout(handshake_timeout),
            ssl_shutdown_timeout=shutdown_timeout,
        )
        transport = SocketTransport(loop, sock, ssl_protocol, extra=extra, server=server)
        app_transport: asyncio.BaseTransport = ssl_protocol._app_transport
    else:
        transport = SocketTransport(
            loop, sock, protocol, waiter=waiter, extra=extra, server=server
        )
        app_transport = transport
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return app_transport, protocol


def _ssl_context(ssl: Any) -> ssl_module.SSLContext | None:
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return ssl_module.create_default_context()
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an ssl.SSLContext, True or None, got {ssl!r}")


async def create_connection(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    host: str | None = None,
    port: int | str | None = None,
    *,
    ssl: Any = None,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: socket.socket | None = None,
    local_addr: tuple[str, int] | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    happy_eyeballs_delay: float | None = None,
    interleave: int | None = None,
    all_errors: bool = False,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if server_hostname is None and ssl:
        if not host:
            raise ValueError("You must set server_hostname when using ssl without a host")
        server_hostname = host
    _check_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    sslcontext = _ssl_context(ssl)
    if host is not None or port is not None:
        if sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        infos = await loop.getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        local_infos = None
        if local_addr is not None:
            local_infos = await loop.getaddrinfo(
                *local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not local_infos:
                raise OSError("getaddrinfo() returned empty list")
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1
        if interleave:
            infos = _interleave(infos, interleave)
        exceptions: list[OSError] = []
        if happy_eyeballs_delay is None:
            for info in infos:
                try:
                    sock = await _connect_one(loop, info, local_infos)
                except OSError as exc:
                    exceptions.append(exc)
                    continue
                break
        else:
            # Happy eyeballs (RFC 8305): a new attempt starts every delay seconds, or
            # at once when one fails; the first to connect wins, the others are
            # cancelled (asyncio.staggered is asyncio's, for any loop).
            async def attempt(info: Any) -> socket.socket:
                try:
                    return await _connect_one(loop, info, local_infos)
                except OSError as exc:
                    exceptions.append(exc)
                    raise

            sock, _, _ = await staggered.staggered_race(
                [functools.partial(attempt, info) for info in infos],
                happy_eyeballs_delay,
                loop=loop,
            )
        if sock is None:
            try:
                if all_errors:
                    raise ExceptionGroup("create_connection failed", exceptions)
                if len(exceptions) == 1 or len({str(e) for e in exceptions}) == 1:
                    raise exceptions[0]
                raise OSError(
                    "Multiple exceptions: {}".format(", ".join(str(e) for e in exceptions))
                )
            finally:
                exceptions = []
    else:
        if sock is None:
            raise ValueError("host and port was not specified and no sock specified")
        _check_stream_socket(sock)
    assert sock is not None
    return await make_transport(
        loop,
        sock,
        protocol_factory,
        sslcontext,
        server_hostname=server_hostname,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
    )


def _interleave(infos: list[Any], first_family_count: int) -> list[Any]:
    by_family: dict[int, list[Any]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    families = list(by_family.values())
    out = families[0][:first_family_count]
    del families[0][:first_family_count]
    out.extend(
        info for group in itertools.zip_longest(*families) for info in group if info is not None
    )
    return out


async def _connect_one(loop: Any, info: Any, local_infos: list[Any] | None) -> socket.socket:
    family, type_, proto, _, address = info
    sock = socket.socket(family=family, type=type_, proto=proto)
    try:
        sock.setblocking(False)
        if local_infos is not None:
            bind_error: OSError | None = None
            for local in local_infos:
                if local[0] != family:
                    continue
                try:
                    sock.bind(local[4])
                    break
                except OSError as exc:
                    bind_error = OSError(
                        exc.errno,
                        f"error while attempting to bind on address {local[4]!r}: "
                        f"{(exc.strerror or '').lower()}",
                    )
            else:
                if bind_error is not None:
                    raise bind_error
                raise OSError(f"no matching local address with family={family} found")
        await loop.sock_connect(sock, address)
        return sock
    except BaseException:
        sock.close()
        raise


class Server(asyncio.AbstractServer):
    """A listening server of an :class:`EventLoop` (what ``create_server`` returns)."""

    def __init__(
        self,
        loop: Any,
        sockets: list[socket.socket],
        protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
        *,
        sslcontext: ssl_module.SSLContext | None,
        backlog: int,
        handshake_timeout: float | None,
        shutdown_timeout: float | None,
        unix_path: tuple[str, int] | None = None,
    ) -> None:
        self._loop = loop
        self._sockets: list[socket.socket] | None = sockets
        self._protocol_factory = protocol_factory
        self._sslcontext = sslcontext
        self._backlog = backlog
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._unix_path = unix_path
        self._clients: weakref.WeakSet[SocketTransport] = weakref.WeakSet()
        self._active_count = 0
        self._waiters: list[asyncio.Future[None]] | None = []
        self._serving = False
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<plait.aio.Server sockets={self.sockets!r}>"

    def _attach(self, transport: SocketTransport) -> None:
        self._active_count += 1
        self._clients.add(transport)

    def _detach(self, transport: SocketTransport) -> None:
        self._active_count -= 1
        self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def get_loop(self) -> Any:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[trsock.TransportSocket, ...]:
        """The listening sockets, as asyncio gives them: wrapped in
        ``asyncio.trsock.TransportSocket`` (no I/O, no closing: the server owns them)."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(sock) for sock in self._sockets)

    def _start_serving(self) -> None:
        if self._serving or self._sockets is None:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._add_reader(sock.fileno(), functools.partial(self._accept_ready, sock))

    def _accept_ready(self, sock: socket.socket) -> None:
        loop = self._loop
        for _ in range(self._backlog):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of resources: say so, and try again later (connections wait
                    # in the backlog meanwhile); the server keeps serving.
                    loop.call_exception_handler(
                        {
                            "message": "socket.accept() out of system resource",
                            "exception": exc,
                            "socket": sock,
                        }
                    )
                    loop._remove_reader(sock.fileno())
                    loop.call_later(_ACCEPT_RETRY_DELAY, self._resume_accepting, sock)
                else:
                    loop.call_exception_handler(
                        {"message": "socket.accept() failed", "exception": exc, "socket": sock}
                    )
                return
            loop.create_task(self._set_up(conn, address))

    def _resume_accepting(self, sock: socket.socket) -> None:
        if self._serving and self._sockets is not None and sock in self._sockets:
            self._loop._add_reader(sock.fileno(), functools.partial(self._accept_ready, sock))

    async def _set_up(self, conn: socket.socket, address: Any) -> None:
        try:
            await make_transport(
                self._loop,
                conn,
                self._protocol_factory,
                self._sslcontext,
                server_side=True,
                handshake_timeout=self._handshake_timeout,
                shutdown_timeout=self._shutdown_timeout,
                extra={"peername": address},
                server=self,
            )
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            if self._loop.get_debug() or not isinstance(exc, OSError | asyncio.CancelledError):
                self._loop.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc,
                    }
                )

    def close(self) -> None:
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        for sock in sockets:
            self._loop._remove_reader(sock.fileno())
            self._loop._forget_fd(sock.fileno())
            sock.close()
        if self._unix_path is not None:
            _remove_socket_file(*self._unix_path)
        self._serving = False
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
            self._serving_forever = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self) -> None:
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._clients):
            transport.abort()

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections have ended."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


def _remove_socket_file(path: str, inode: int) -> None:
    """Remove the Unix socket file ``path`` unless it is gone, or another socket
    (another inode) has replaced it."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.error("Unable to clean up listening UNIX socket %r: %r", path, exc)


async def create_server(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    host: Any = None,
    port: int | str | None = None,
    *,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    sock: socket.socket | None = None,
    backlog: int = 100,
    ssl: Any = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    keep_alive: bool | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
) -> Server:
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    _check_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    sslcontext = _ssl_context(ssl)
    sockets: list[socket.socket] = []
    if host is not None or port is not None:
        if sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        if reuse_address is None:
            reuse_address = os.name == "posix" and sys.platform != "cygwin"
        if host == "":
            hosts: list[Any] = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = list(host)
        found = await asyncio.gather(
            *[
                loop.getaddrinfo(h, port, family=family, type=socket.SOCK_STREAM, flags=flags)
                for h in hosts
            ]
        )
        infos = list(dict.fromkeys(itertools.chain.from_iterable(found)))
        try:
            for af, socktype, proto, _, address in infos:
                try:
                    listener = socket.socket(af, socktype, proto)
                except OSError:
                    continue  # (an address family this machine lacks)
                sockets.append(listener)
                if reuse_address:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, True)
                if keep_alive:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                if af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    listener.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"error while attempting to bind on address {address!r}: "
                        f"{(exc.strerror or '').lower()}",
                    ) from None
        except BaseException:
            for listener in sockets:
                listener.close()
            raise
        if not sockets:
            raise OSError(f"could not create a listening socket for {host!r} port {port!r}")
    else:
        if sock is None:
            raise ValueError("Neither host/port nor sock were specified")
        _check_stream_socket(sock)
        sockets = [sock]
    for listener in sockets:
        listener.setblocking(False)
    server = Server(
        loop,
        sockets,
        protocol_factory,
        sslcontext=sslcontext,
        backlog=backlog,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
    )
    if start_serving:
        server._start_serving()
        await asyncio.sleep(0)  # (as asyncio: let the server start before returning)
    return server


async def create_unix_connection(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    path: str | None = None,
    *,
    ssl: Any = None,
    sock: socket.socket | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    if ssl:
        if server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
    elif server_hostname is not None:
        raise ValueError("server_hostname is only meaningful with ssl")
    _check_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    if path is not None:
        if sock is not None:
            raise ValueError("path and sock can not be specified at the same time")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, os.fspath(path))
        except BaseException:
            sock.close()
            raise
    else:
        if sock is None:
            raise ValueError("no path and sock were specified")
        if sock.family != socket.AF_UNIX:
            raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        _check_stream_socket(sock)
    return await make_transport(
        loop,
        sock,
        protocol_factory,
        _ssl_context(ssl),
        server_hostname=server_hostname,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
    )


async def create_unix_server(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    path: str | None = None,
    *,
    sock: socket.socket | None = None,
    backlog: int = 100,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
    cleanup_socket: bool = True,
) -> Server:
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    _check_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    unix_path: tuple[str, int] | None = None
    if path is not None:
        if sock is not None:
            raise ValueError("path and sock can not be specified at the same time")
        path = os.fspath(path)
        if path[0] not in ("\0", "\x00"):
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.remove(path)  # a stale socket file of an earlier server
            except FileNotFoundError:
                pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
            raise
    else:
        if sock is None:
            raise ValueError("path was not specified, and no sock specified")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
    if cleanup_socket:
        # close() removes the socket file (given as a path or bound already), if it
        # is still this socket's then (same inode); not an abstract socket's name
        bound = sock.getsockname()
        if bound and bound[0] not in ("\0", 0):
            try:
                unix_path = (bound, os.stat(bound).st_ino)
            except FileNotFoundError:
                pass
    sock.setblocking(False)
    server = Server(
        loop,
        [sock],
        protocol_factory,
        sslcontext=_ssl_context(ssl),
        backlog=backlog,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
        unix_path=unix_path,
    )
    if start_serving:
        server._start_serving()
        await asyncio.sleep(0)
    return server


async def connect_accepted_socket(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    *,
    ssl: Any = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    _check_stream_socket(sock)
    _check_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
    return await make_transport(
        loop,
        sock,
        protocol_factory,
        _ssl_context(ssl),
        server_side=True,
        handshake_timeout=ssl_handshake_timeout,
        shutdown_timeout=ssl_shutdown_timeout,
    )


async def start_tls(
    loop: Any,
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    sslcontext: ssl_module.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.BaseTransport:
    """Upgrade ``transport`` to TLS; return the new transport (the old one must not be
    used any more)."""
    if not isinstance(sslcontext, ssl_module.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    # (or a TLS transport, asyncio's: TLS over TLS)
    if not isinstance(transport, asyncio.Transport) or not (
        isinstance(transport, SocketTransport)
        or getattr(transport, "_start_tls_compatible", False)
    ):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    waiter = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=_timeout(ssl_handshake_timeout),
        ssl_shutdown_timeout=ssl_shutdown_timeout,
        call_connection_made=False,
    )
    # Data the old protocol has not read yet must reach the TLS layer, in order.
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    made = loop.call_soon(ssl_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    app_transport: asyncio.BaseTransport = ssl_protocol._app_transport
    return app_transport


async def create_datagram_endpoint(
    loop: Any,
    protocol_factory: collections.abc.Callable[[], asyncio.DatagramProtocol],
    local_addr: Any = None,
    remote_addr: Any = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_address: Any = None,
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
    sock: socket.socket | None = None,
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    if reuse_address is not None:
        raise ValueError(
            "Passing `reuse_address=True` is no longer supported, as the usage of "
            "SO_REUSEPORT in UDP poses a significant security concern."
        )
    if sock is not None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
        given = {
            "local_addr": local_addr,
            "remote_addr": remote_addr,
            "family": family,
            "proto": proto,
            "flags": flags,
            "reuse_port": reuse_port,
            "allow_broadcast": allow_broadcast,
        }
        if any(given.values()):
            problems = ", ".join(f"{k}={v}" for k, v in given.items() if v)
            raise ValueError(
                f"socket modifier keyword arguments can not be used when sock is specified. "
                f"({problems})"
            )
        sock.setblocking(False)
        remote = None
        try:
            remote = sock.getpeername()
        except OSError:
            pass
    else:
        attempts: list[tuple[tuple[int, int], tuple[Any, Any]]]
        if family == socket.AF_UNIX:
            for address in (local_addr, remote_addr):
                if address is not None and not isinstance(address, str | bytes):
                    raise TypeError("string is expected")
            attempts = [((family, proto), (local_addr, remote_addr))]
        elif local_addr is None and remote_addr is None:
            if family == 0:
                raise ValueError("unexpected address family")
            attempts = [((family, proto), (None, None))]
        else:
            found: dict[tuple[int, int], list[Any]] = {}
            for index, address in ((0, local_addr), (1, remote_addr)):
                if address is None:
                    continue
                if not (isinstance(address, tuple) and len(address) == 2):
                    raise TypeError("2-tuple is expected")
                resolved = await loop.getaddrinfo(
                    *address, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
                )
                if not resolved:
                    raise OSError("getaddrinfo() returned empty list")
                for fam, _, pro, _, addr in resolved:
                    pair = found.setdefault((fam, pro), [None, None])
                    if pair[index] is None:
                        pair[index] = addr
            attempts = [
                (key, (pair[0], pair[1]))
                for key, pair in found.items()
                if not (local_addr is not None and pair[0] is None)
                and not (remote_addr is not None and pair[1] is None)
            ]
            if not attempts:
                raise ValueError("can not get address information")
        exceptions: list[OSError] = []
        sock = None
        remote = None
        for (fam, pro), (local, remote) in attempts:
            try:
                sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local is not None:
                    if (
                        fam == socket.AF_UNIX
                        and isinstance(local, str)
                        and local[:1] not in ("", "\0")
                    ):
                        try:
                            if stat.S_ISSOCK(os.stat(local).st_mode):
                                os.remove(local)
                        except FileNotFoundError:
                            pass
                    sock.bind(local)
                if remote is not None and not allow_broadcast:
                    await loop.sock_connect(sock, remote)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                    sock = None
                exceptions.append(exc)
                continue
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            break
        else:
            raise exceptions[0]
    assert sock is not None
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = DatagramTransport(loop, sock, protocol, remote, waiter=waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol


class _Drain(asyncio.Protocol):
    """Stands in for a transport's protocol during ``sendfile``: forwards everything,
    and tells when the transport's write buffer has drained."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._protocol = transport.get_protocol()
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> Any:
        return self._protocol.eof_received()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionError("Connection closed by peer"))
        self._protocol.connection_lost(exc)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionError("Connection closed by peer")
        if self._paused:
            self._drained = self._transport._loop.create_future()
            await self._drained

    async def flush(self) -> None:
        """Wait until the transport's write buffer is empty."""
        low, high = self._transport.get_write_buffer_limits()
        self._transport.set_write_buffer_limits(high=0)  # pause at once, resume at 0
        try:
            if self._transport.get_write_buffer_size():
                self._paused = True
                await self.drain()
        finally:
            self._transport.set_write_buffer_limits(high=high, low=low)

    def restore(self) -> None:
        if not self._lost:
            self._transport.set_protocol(self._protocol)
            if self._paused:
                self._protocol.pause_writing()


async def sendfile(
    loop: Any,
    transport: Any,
    file: Any,
    offset: int = 0,
    count: int | None = None,
    *,
    fallback: bool = True,
) -> int:
    if transport.is_closing():
        raise RuntimeError("Transport is closing")
    if isinstance(transport, asyncio.DatagramTransport):
        raise RuntimeError(
            f"sendfile is not supported for transport {transport!r}: it sends datagrams, "
            "not a stream"
        )
    check_sendfile(file, offset, count)
    native = type(transport) is SocketTransport
    if not native and not fallback:
        raise asyncio.SendfileNotAvailableError(
            f"fallback is disabled and native sendfile is not supported for transport "
            f"{transport!r} (os.sendfile works on plain socket transports; pass "
            "fallback=True to copy through the transport)"
        )
    drain = _Drain(transport)
    transport.set_protocol(drain)
    try:
        if native:
            reading = transport.is_reading()
            transport.pause_reading()
            transport._sendfile_busy = True  # (write() refuses: it would interleave)
            del loop._transports[transport._fileno]  # (lent to sock_sendfile)
            try:
                await drain.flush()
                return int(
                    await loop.sock_sendfile(
                        transport._sock, file, offset, count, fallback=fallback
                    )
                )
            except asyncio.SendfileNotAvailableError:
                if not fallback:
                    raise
            finally:
                transport._sendfile_busy = False
                if not transport.is_closing():  # (else its fd may be another's already)
                    loop._transports[transport._fileno] = transport
                if reading:
                    transport.resume_reading()

        async def send(block: bytes) -> None:
            await drain.drain()
            transport.write(block)

        # (no drain after the last block, as in asyncio: a peer that closes once it
        # has it all must not turn the sendfile into a ConnectionError)
        return await copy_file(loop, file, offset, count, send)
    finally:
        drain.restore()


def check_sendfile(file: Any, offset: Any, count: Any) -> None:
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if count is not None and (not isinstance(count, int) or count <= 0):
        raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


async def copy_file(
    loop: Any,
    file: Any,
    offset: int,
    count: int | None,
    send: collections.abc.Callable[[bytes], collections.abc.Awaitable[None]],
) -> int:
    """Read ``count`` bytes (all, if None) of ``file`` from ``offset``, in a thread, a
    block at a time, and ``await send(block)`` each; leave the file positioned after
    what was sent. The bytes sent."""
    if offset:
        file.seek(offset)
    total = 0
    try:
        while count is None or total < count:
            size = 1 << 16 if count is None else min(count - total, 1 << 16)
            block = await loop.run_in_executor(None, file.read, size)
            if not block:
                break
            await send(block)
            total += len(block)
        return total
    finally:
        if total:
            file.seek(offset + total)
