"""Helpers shared by the TCP workloads (tcp_echo, tcp_bulk, tcp_conn_bytes)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from benchmarks.workloads._util import WrongResult

HOST = "127.0.0.1"
"""Loopback only: the benchmarks never listen on or connect to anything else."""
RECEIVE_SIZE = 65536
"""The most bytes one receive asks for, in every runtime (plait's and trio's default)."""
BACKLOG = 1024


def payload(i: int, size: int) -> bytes:
    """The message of connection ``i``: ``size`` bytes, different for every connection,
    so an echo that went to the wrong connection is noticed."""
    stamp = b"%08d|" % i
    return (stamp * (size // len(stamp) + 1))[:size]


def wrong_echo(i: int, expected: bytes, got: bytes) -> WrongResult:
    return WrongResult(
        f"connection {i} expected its {len(expected)}-byte message back, "
        f"got {len(got)} bytes: {got[:20]!r}..."
    )


async def receive_exactly(receive_some: Callable[[int], Awaitable[Any]], n: int) -> bytes:
    """``n`` bytes from ``receive_some(max_bytes)`` (for trio, whose streams have no
    ``receive_exactly``; also used over raw sockets' ``recv``). Asks for exactly what is
    missing, so it never reads past the ``n`` bytes (no pushback buffer needed)."""
    data = await receive_some(n)
    if len(data) == n:
        return bytes(data)
    buf = bytearray(data)
    while len(buf) < n:
        if not data:
            raise WrongResult(f"the peer closed the connection after {len(buf)} of {n} bytes")
        data = await receive_some(n - len(buf))
        buf += data
    return bytes(buf)


async def send_all(send: Callable[[Any], Awaitable[int]], data: bytes) -> None:
    """Send all of ``data`` with ``send(data) -> bytes sent`` (trio's sockets have no
    ``sendall``)."""
    sent = await send(data)
    if sent < len(data):
        with memoryview(data) as view:
            while sent < len(view):
                sent += await send(view[sent:])


F = TypeVar("F", bound=Callable[..., Any])


def documented(text: str) -> Callable[[F], F]:
    """Give the decorated metric function the docstring ``text`` (for descriptions that
    share paragraphs, which a literal docstring cannot); put it below ``@workload``."""

    def set_doc(fn: F) -> F:
        fn.__doc__ = text
        return fn

    return set_doc


def nodelay(sock: Any) -> None:
    """Set ``TCP_NODELAY``, as every runtime's streams and asyncio's transports do."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
