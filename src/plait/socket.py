"""plait.socket: the standard ``socket`` module with awaitable sockets.

``plait.socket.socket(...)`` (or simply ``plait.socket(...)``) makes a non-blocking
socket whose ``recv``, ``recv_into``, ``recvfrom``, ``send``, ``sendall``, ``sendto``,
``accept`` and ``connect`` are awaited; ``getaddrinfo`` resolves names without blocking
the loop. The standard module's constants and exceptions are available here too
(``plait.socket.AF_INET``, ``plait.socket.gaierror``, ...).
"""

from __future__ import annotations

import socket as _stdlib_socket
import sys
import types
from typing import Any

from ._socket import SocketType as SocketType
from ._socket import from_stdlib_socket as from_stdlib_socket
from ._socket import getaddrinfo as getaddrinfo
from ._socket import getnameinfo as getnameinfo
from ._socket import socket as socket
from ._socket import socketpair as socketpair

for _name in dir(_stdlib_socket):
    if _name.isupper() and not _name.startswith("_"):
        globals()[_name] = getattr(_stdlib_socket, _name)
error = _stdlib_socket.error
gaierror = _stdlib_socket.gaierror
herror = _stdlib_socket.herror
timeout = _stdlib_socket.timeout
inet_pton = _stdlib_socket.inet_pton
inet_ntop = _stdlib_socket.inet_ntop
inet_aton = _stdlib_socket.inet_aton
inet_ntoa = _stdlib_socket.inet_ntoa
htons = _stdlib_socket.htons
ntohs = _stdlib_socket.ntohs
htonl = _stdlib_socket.htonl
ntohl = _stdlib_socket.ntohl
gethostname = _stdlib_socket.gethostname
del _name

for _obj in (SocketType, from_stdlib_socket, getaddrinfo, getnameinfo, socket, socketpair):
    _obj.__module__ = "plait.socket"
del _obj


class _SocketModule(types.ModuleType):
    """Lets ``plait.socket(...)`` build a socket and ``isinstance(s, plait.socket)``
    recognise one, as well as being the module."""

    def __call__(
        self,
        family: int = _stdlib_socket.AF_INET,
        type: int = _stdlib_socket.SOCK_STREAM,
        proto: int = 0,
        fileno: int | None = None,
    ) -> SocketType:
        return socket(family, type, proto, fileno)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, SocketType)


sys.modules[__name__].__class__ = _SocketModule
