"""Fixtures shared by the test modules."""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Iterator

import pytest

# A shell without job control starts a background command with SIGINT ignored, and the
# children of this process would inherit that: the tests of Ctrl-C need it delivered.
# (A handler, unlike SIG_IGN, is not inherited: children start with the default.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of non-blocking sockets, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for "localhost" and 127.0.0.1, from a test CA
    (trustme) that only the client context trusts."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client
