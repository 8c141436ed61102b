"""Fixtures shared by the test modules."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of non-blocking sockets, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
