"""Tests for plait.socket (src/plait/_socket.py, src/plait/socket.py) on real sockets.

Everything runs over loopback (127.0.0.1, ::1) or Unix sockets, on real time. Ordering
between tasks comes from ``wait_all_tasks_blocked`` (a task is parked in the reactor)
and from the kernel: on loopback, bytes sent are readable by the peer as soon as
``send`` returns, and a connect to a listener whose accept queue is full stays in
progress (the SYN is dropped) for as long as nobody accepts.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import plait
from plait.lowlevel import current_token, wait_readable
from plait.testing import wait_all_tasks_blocked

SocketType = plait.socket.SocketType


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in ``plait.run`` (real time: real I/O happens)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        plait.run(test(*args, **kwargs))

    return run


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory for Unix socket paths (they are limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="plait-") as path:
        yield path


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def readable_now(sock: Any) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


async def tcp_listener() -> SocketType:
    listener = plait.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


async def tcp_pair() -> tuple[SocketType, SocketType]:
    """A connected (client, server) pair of plait TCP sockets over 127.0.0.1."""
    with await tcp_listener() as listener:
        client = plait.socket.socket()
        await client.connect(listener.getsockname())
        server, address = await listener.accept()
    assert address == client.getsockname()
    return client, server


class TestModule:
    def test_module_is_callable_and_an_instance_check(self) -> None:
        with plait.socket() as a, plait.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as b:
            assert isinstance(a, plait.socket)
            assert isinstance(a, plait.socket.SocketType)
            assert (a.family, a.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert (b.family, b.type) == (socket.AF_INET6, socket.SOCK_DGRAM)
            assert "plait.socket.SocketType" in repr(a)
        assert a.closed
        with socket.socket() as raw:
            assert not isinstance(raw, plait.socket)

    def test_standard_constants_and_errors_are_reexported(self) -> None:
        assert plait.socket.AF_INET == socket.AF_INET
        assert plait.socket.SOCK_DGRAM == socket.SOCK_DGRAM
        assert plait.socket.gaierror is socket.gaierror
        assert plait.socket.SocketType.__module__ == "plait.socket"

    def test_sockets_are_non_blocking_and_sync_methods_pass_through(self) -> None:
        with socket.socket() as raw:
            s = plait.socket.from_stdlib_socket(raw)
            assert not raw.getblocking()
            assert s.fileno() == raw.fileno()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            s.bind(("127.0.0.1", 0))
            assert s.getsockname()[0] == "127.0.0.1"
            s.close()
            assert raw.fileno() == -1


class TestTCP:
    @async_test
    async def test_connect_accept_send_recv(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            assert await client.send(b"hello") == 5
            assert await server.recv(100) == b"hello"
            await server.sendall(b"world")
            buf = bytearray(10)
            assert await client.recv_into(buf) == 5
            assert buf[:5] == b"world"
            await server.sendall(memoryview(b"0123456789"))
            view = memoryview(buf)
            assert await client.recv_into(view[2:], 3) == 3
            assert buf[2:5] == b"012"
            assert await client.recv(100) == b"3456789"
            assert client.getpeername() == server.getsockname()

    @async_test
    async def test_sendall_waits_for_a_slow_reader(self) -> None:
        client, server = await tcp_pair()
        data = os.urandom(1 << 20) * 8  # far more than the socket buffers hold
        got = bytearray()
        with client, server:

            async def reader() -> None:
                buf = bytearray(1 << 16)
                while len(got) < len(data):
                    n = await server.recv_into(buf)
                    assert n > 0
                    got.extend(buf[:n])

            async with plait.TaskGroup() as tg:
                tg.spawn(reader)
                await client.sendall(data)
        assert got == data

    @async_test
    async def test_recv_wakes_when_data_arrives(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            async with plait.TaskGroup() as tg:
                task = tg.spawn(server.recv, 10)
                await wait_all_tasks_blocked()
                assert not task.done()
                await client.send(b"late")
            assert task.result() == b"late"
            client.shutdown(socket.SHUT_WR)
            assert await server.recv(10) == b""

    @async_test
    async def test_connect_to_a_closed_port_is_refused(self) -> None:
        # A bound socket that does not listen holds the port: the connect is refused.
        with socket.socket() as holder, plait.socket() as s:
            holder.bind(("127.0.0.1", 0))
            with pytest.raises(ConnectionRefusedError):
                await s.connect(holder.getsockname())

    @async_test
    async def test_connect_resolves_names(self) -> None:
        with await tcp_listener() as listener, plait.socket() as s:
            await s.connect(("localhost", listener.getsockname()[1]))
            conn, _ = await listener.accept()
            conn.close()
            assert s.getpeername()[0] == "127.0.0.1"

    @async_test
    async def test_cancelled_connect_closes_the_socket(self) -> None:
        # listen(0) admits one queued connection; further SYNs are dropped, so the next
        # connect stays in progress until it is cancelled.
        with socket.socket() as listener, socket.socket() as filler:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            filler.connect(listener.getsockname())
            assert select.select([listener], [], [], 10)[0], "the first connection queued"
            s = plait.socket()
            outcome: list[str] = []
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:

                    async def connecting() -> None:
                        try:
                            await s.connect(listener.getsockname())
                        except plait.Cancelled:
                            outcome.append("cancelled")
                            raise
                        outcome.append("connected")  # pragma: no cover - a failure

                    tg.spawn(connecting)
                    await wait_all_tasks_blocked()
                    assert outcome == []
                    scope.cancel()
            assert outcome == ["cancelled"]
            assert s.closed

    @async_test
    async def test_ipv6_loopback(self) -> None:
        if not has_ipv6_loopback():
            pytest.skip("this machine has no ::1")
        with plait.socket(socket.AF_INET6) as listener, plait.socket(socket.AF_INET6) as c:
            listener.bind(("::1", 0))
            listener.listen()
            await c.connect(listener.getsockname())
            conn, _ = await listener.accept()
            with conn:
                await c.sendall(b"six")
                assert await conn.recv(3) == b"six"


class TestUDP:
    @async_test
    async def test_sendto_recvfrom(self) -> None:
        with plait.socket(type=socket.SOCK_DGRAM) as a, plait.socket(type=socket.SOCK_DGRAM) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            assert await a.sendto(b"one", b.getsockname()) == 3
            assert await b.recvfrom(100) == (b"one", a.getsockname())
            assert await a.sendto(b"two", 0, b.getsockname()) == 3
            buf = bytearray(10)
            assert await b.recvfrom_into(buf) == (3, a.getsockname())
            assert buf[:3] == b"two"
            # A host name in the address is resolved without blocking the loop.
            await b.sendto(b"three", ("localhost", a.getsockname()[1]))
            assert await a.recvfrom(100) == (b"three", b.getsockname())

    @async_test
    async def test_sendto_needs_an_address(self) -> None:
        with plait.socket(type=socket.SOCK_DGRAM) as a:
            with pytest.raises(TypeError, match="address"):
                await a.sendto(b"x")


class TestUnixAndWrapping:
    @async_test
    async def test_unix_stream_sockets(self, short_dir: str) -> None:
        path = os.path.join(short_dir, "s")
        with plait.socket(socket.AF_UNIX) as listener, plait.socket(socket.AF_UNIX) as c:
            listener.bind(path)
            listener.listen()
            await c.connect(path)
            conn, _ = await listener.accept()
            with conn:
                await c.sendall(b"over unix")
                assert await conn.recv(100) == b"over unix"
                await conn.sendall(b"back")
                assert await c.recv(100) == b"back"

    @async_test
    async def test_socketpair(self) -> None:
        a, b = plait.socket.socketpair()
        with a, b:
            assert isinstance(a, plait.socket)
            assert a.family == socket.AF_UNIX
            await a.sendall(b"x" * 10)
            assert await b.recv(100) == b"x" * 10
        a, b = plait.socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            await a.send(b"dgram")
            assert await b.recv(100) == b"dgram"

    @async_test
    async def test_from_stdlib_socket(self) -> None:
        raw_a, raw_b = socket.socketpair()
        with raw_b:
            a = plait.socket.from_stdlib_socket(raw_a)
            with a:
                raw_b.sendall(b"from stdlib")
                assert await a.recv(100) == b"from stdlib"

    def test_wrapping_a_non_socket_is_a_type_error(self) -> None:
        with pytest.raises(TypeError, match=r"plait\.socket wraps a socket\.socket"):
            plait.socket.from_stdlib_socket(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="socket"):
            SocketType(object())  # type: ignore[arg-type]

    def test_wrapping_an_ssl_socket_is_a_type_error(self) -> None:
        context = ssl.create_default_context()
        with context.wrap_socket(socket.socket(), server_hostname="example.invalid") as tls:
            with pytest.raises(TypeError, match="SSLStream"):
                plait.socket.from_stdlib_socket(tls)


class TestBadAddresses:
    @pytest.mark.parametrize("address", ["127.0.0.1", ("127.0.0.1",), 8080, None])
    @async_test
    async def test_ipv4_address_shape(self, address: Any) -> None:
        with plait.socket() as s:
            with pytest.raises(ValueError, match=r"IPv4 address is a \(host, port\) tuple"):
                await s.connect(address)
            assert not s.closed

    @async_test
    async def test_ipv6_address_shape(self) -> None:
        with plait.socket(socket.AF_INET6) as s:
            with pytest.raises(ValueError, match="IPv6 address"):
                await s.connect(("::1",))

    @async_test
    async def test_sendto_address_shape(self) -> None:
        with plait.socket(type=socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError, match="tuple"):
                await s.sendto(b"x", "127.0.0.1")


class TestGetaddrinfo:
    @pytest.fixture
    def lookups(self, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bool, bool]]:
        """Records each ``socket.getaddrinfo`` call: (host, numeric only, on this thread)."""
        real = socket.getaddrinfo
        main = threading.current_thread()
        calls: list[tuple[Any, bool, bool]] = []

        def spy(  # noqa: PLR0917 - socket.getaddrinfo's signature
            host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
        ) -> Any:
            numeric = bool(flags & socket.AI_NUMERICHOST)
            calls.append((host, numeric, threading.current_thread() is main))
            return real(host, port, family, type, proto, flags)

        monkeypatch.setattr(socket, "getaddrinfo", spy)
        return calls

    @async_test
    async def test_numeric_addresses_are_resolved_in_place(
        self, lookups: list[tuple[Any, bool, bool]]
    ) -> None:
        infos = await plait.socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        assert [info[4] for info in infos] == [("127.0.0.1", 80)]
        infos = await plait.socket.getaddrinfo("::1", "443", socket.AF_INET6)
        assert {info[4][:2] for info in infos} == {("::1", 443)}
        assert all(here for _, _, here in lookups), "no worker thread for numeric hosts"

    @async_test
    async def test_names_are_resolved_in_a_worker_thread(
        self, lookups: list[tuple[Any, bool, bool]]
    ) -> None:
        infos = await plait.socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)
        assert ("127.0.0.1", 80) in [info[4] for info in infos]
        name_lookups = [here for host, numeric, here in lookups if not numeric]
        assert name_lookups == [False], "one lookup, in a worker thread, not on the loop's"

    @async_test
    async def test_cancelled_caller_abandons_the_lookup(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = socket.getaddrinfo
        token = current_token()
        entered = plait.Event()
        release = threading.Event()
        finished = threading.Event()

        def slow(  # noqa: PLR0917 - socket.getaddrinfo's signature
            host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
        ) -> Any:
            if flags & socket.AI_NUMERICHOST:
                return real(host, port, family, type, proto, flags)
            token.run_sync_soon(entered.set)
            try:
                release.wait(30)
                return real(host, port, family, type, proto, flags)
            finally:
                finished.set()

        monkeypatch.setattr(socket, "getaddrinfo", slow)
        with plait.CancelScope() as scope:
            async with plait.TaskGroup() as tg:

                async def canceller() -> None:
                    await entered.wait()
                    scope.cancel()

                tg.spawn(canceller)
                await plait.socket.getaddrinfo("localhost", 80)
        assert scope.cancelled_caught
        assert not finished.is_set(), "the caller returned while the lookup still ran"
        release.set()
        assert finished.wait(30)
        await plait.checkpoint()

    @async_test
    async def test_cancelled_before_the_call_starts_no_lookup(
        self, lookups: list[tuple[Any, bool, bool]]
    ) -> None:
        with plait.CancelScope() as scope:
            scope.cancel()
            await plait.socket.getaddrinfo("localhost", 80)
        assert scope.cancelled_caught
        assert lookups == []

    @async_test
    async def test_lookup_errors_are_raised(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", fail)
        with pytest.raises(socket.gaierror, match="not known"):
            await plait.socket.getaddrinfo("nowhere.invalid", 80)


class TestOneWaiterAndClose:
    @async_test
    async def test_second_receiver_is_busy(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            async with plait.TaskGroup() as tg:
                first = tg.spawn(server.recv, 10)
                await wait_all_tasks_blocked()
                with pytest.raises(plait.BusyResourceError):
                    await server.recv(10)
                await client.send(b"x")
            assert first.result() == b"x"

    @async_test
    async def test_second_sender_is_busy(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            async with plait.TaskGroup() as tg:
                tg.spawn(client.sendall, b"x" * (32 << 20))
                await wait_all_tasks_blocked()  # the buffers are full: sendall waits
                with pytest.raises(plait.BusyResourceError):
                    await client.send(b"y")
                tg.cancel_scope.cancel()

    @pytest.mark.parametrize("op", ["recv", "accept"])
    @async_test
    async def test_close_wakes_a_waiting_task(self, op: str) -> None:
        client, server = await tcp_pair()
        listener = await tcp_listener()
        waiting_on = server if op == "recv" else listener
        errors: list[BaseException] = []

        async def waiter() -> None:
            try:
                await (server.recv(10) if op == "recv" else listener.accept())
            except plait.ClosedResourceError as exc:
                errors.append(exc)

        with client, server, listener:
            async with plait.TaskGroup() as tg:
                tg.spawn(waiter)
                await wait_all_tasks_blocked()
                waiting_on.close()
            assert len(errors) == 1
            assert waiting_on.closed


class TestCheckpoints:
    @async_test
    async def test_cancelled_receive_ops_read_nothing(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            await client.sendall(b"kept")
            for op in (lambda: server.recv(10), lambda: server.recv_into(bytearray(10))):
                with plait.CancelScope() as scope:
                    scope.cancel()
                    await op()
                assert scope.cancelled_caught
            assert await server.recv(10) == b"kept"

    @async_test
    async def test_cancelled_send_ops_send_nothing(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            for op in (lambda: client.send(b"x"), lambda: client.sendall(b"x")):
                with plait.CancelScope() as scope:
                    scope.cancel()
                    await op()
                assert scope.cancelled_caught
            assert not readable_now(server)

    @async_test
    async def test_cancelled_datagram_ops_move_nothing(self) -> None:
        with plait.socket(type=socket.SOCK_DGRAM) as a, plait.socket(type=socket.SOCK_DGRAM) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            await b.sendto(b"kept", a.getsockname())
            ops = (
                lambda: a.recvfrom(10),
                lambda: a.recvfrom_into(bytearray(10)),
                lambda: b.sendto(b"lost", a.getsockname()),
            )
            for op in ops:
                with plait.CancelScope() as scope:
                    scope.cancel()
                    await op()
                assert scope.cancelled_caught
            assert await a.recvfrom(10) == (b"kept", b.getsockname())
            assert not readable_now(a)

    @async_test
    async def test_cancelled_accept_and_connect_leave_no_trace(self) -> None:
        with await tcp_listener() as listener, plait.socket() as s:
            with plait.CancelScope() as scope:
                scope.cancel()
                await s.connect(listener.getsockname())
            assert scope.cancelled_caught
            assert not readable_now(listener), "no connection was started"
            await s.connect(listener.getsockname())
            with plait.CancelScope() as scope:
                scope.cancel()
                await listener.accept()
            assert scope.cancelled_caught
            conn, _ = await listener.accept()  # still queued
            conn.close()

    @async_test
    async def test_completed_recv_is_never_lost_to_cancellation(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            await client.sendall(b"data")
            got: list[bytes] = []
            async with plait.TaskGroup() as tg:
                with plait.CancelScope() as scope:

                    async def canceller() -> None:
                        scope.cancel()

                    # Runs at the recv's schedule point, after the bytes were read.
                    tg.spawn(canceller)
                    got.append(await server.recv(10))
                    assert scope.cancel_called, "recv let the canceller run"
                    await plait.checkpoint()
                assert scope.cancelled_caught
            assert got == [b"data"]

    @async_test
    async def test_ops_that_do_not_block_still_let_others_run(self) -> None:
        client, server = await tcp_pair()
        with client, server:
            ran: list[str] = []

            async def other() -> None:
                ran.append("other")

            for op in (
                lambda: client.send(b"a"),
                lambda: client.sendall(b"b"),
                lambda: server.recv(1),
                lambda: server.recv_into(bytearray(1)),
            ):
                ran.clear()
                async with plait.TaskGroup() as tg:
                    tg.spawn(other)
                    await op()
                    assert ran == ["other"]


class TestFdReuse:
    """A closed fd's number is reused by the next socket: readiness must still be seen
    (the reactor keeps registrations between waits, see ``Reactor.set``)."""

    async def wait_once(self, a: SocketType, b: SocketType) -> None:
        async with plait.TaskGroup() as tg:
            task = tg.spawn(a.recv, 10)
            await wait_all_tasks_blocked()
            await b.send(b"!")
        assert task.result() == b"!"

    @async_test
    async def test_plait_close_then_reuse(self) -> None:
        a, b = plait.socket.socketpair()
        numbers = (a.fileno(), b.fileno())
        await self.wait_once(a, b)
        await self.wait_once(b, a)
        a.close()
        b.close()
        c, d = plait.socket.socketpair()
        with c, d:
            assert (c.fileno(), d.fileno()) == numbers, "the fd numbers were reused"
            await self.wait_once(c, d)
            await self.wait_once(d, c)

    @async_test
    async def test_closed_behind_plaits_back_then_reuse(self) -> None:
        raw_a, raw_b = socket.socketpair()
        a, b = plait.socket.from_stdlib_socket(raw_a), plait.socket.from_stdlib_socket(raw_b)
        number = a.fileno()
        await self.wait_once(a, b)
        raw_a.close()  # the plait wrapper is not told
        c, d = plait.socket.socketpair()
        with b, c, d:
            assert c.fileno() == number, "the fd number was reused"
            await self.wait_once(c, d)

    @async_test
    async def test_lowlevel_wait_on_a_reused_number(self) -> None:
        a, b = socket.socketpair()
        number = a.fileno()
        b.send(b"1")
        await wait_readable(number)
        a.close()  # without notify_closing(): the reactor may still hold the number
        c, d = socket.socketpair()
        with b, c, d:
            assert c.fileno() == number, "the fd number was reused"
            async with plait.TaskGroup() as tg:
                task = tg.spawn(wait_readable, c)
                await wait_all_tasks_blocked()
                assert not task.done()
                d.send(b"2")
            assert c.recv(10) == b"2"
