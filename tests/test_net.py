"""Tests for opening connections and serving them (src/plait/_net.py), on real sockets.

Everything runs over loopback (127.0.0.1, ::1) or Unix sockets. A port that must refuse
connections is held by a socket that is bound but does not listen; "localhost"
resolving to several addresses is arranged by replacing ``socket.getaddrinfo``. The
EMFILE test runs a server in a child Python process with a low fd limit, and talks to
it line by line over its stdin and stdout.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import resource
import select
import socket
import struct
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import plait
from helpers import out_of_fds_dialogue
from plait.testing import wait_all_tasks_blocked


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in ``plait.run`` (real time: real I/O happens)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        plait.run(test(*args, **kwargs))

    return run


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")


async def echo(stream: plait.SocketStream) -> None:
    async for chunk in stream:
        await stream.send_all(chunk)


async def round_trip(stream: plait.Stream, message: bytes) -> None:
    await stream.send_all(message)
    assert await stream.receive_exactly(len(message)) == message


def hold_port(host: str, port: int = 0) -> socket.socket:
    """A socket bound to (host, port) that does not listen: connects there are refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def info(host: str, port: int) -> tuple[Any, ...]:
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))


@pytest.fixture
def localhost_is(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``localhost_is("::1", "127.0.0.1")``: "localhost" resolves to these, in order."""
    real = socket.getaddrinfo

    def arrange(*hosts: str) -> None:
        def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "localhost":
                return [info(h, int(port)) for h in hosts]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake)

    return arrange


@pytest.fixture
def ensure_fds() -> Iterator[Callable[[int], None]]:
    """``ensure_fds(n)`` raises the soft RLIMIT_NOFILE to at least ``n`` (skipping if
    the hard limit is lower); the old limit is restored after the test."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)

    def ensure(n: int) -> None:
        soft, hard = old
        if soft != resource.RLIM_INFINITY and soft < n:
            if hard != resource.RLIM_INFINITY and hard < n:
                pytest.skip(f"needs {n} file descriptors, the hard RLIMIT_NOFILE is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    yield ensure
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory for Unix socket paths (they are limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="plait-") as path:
        yield path


class TestServeTcp:
    @async_test
    async def test_echo_and_listeners(self) -> None:
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, echo, 0, "127.0.0.1")
            assert len(listeners) == 1
            assert isinstance(listeners[0], plait.SocketListener)
            assert listeners[0].address == ("127.0.0.1", listeners[0].port)
            async with await plait.open_tcp_stream("127.0.0.1", listeners[0].port) as stream:
                assert isinstance(stream, plait.SocketStream)
                await round_trip(stream, b"hello")
                await round_trip(stream, b"x" * 100_000)
            tg.cancel_scope.cancel()

    @async_test
    async def test_host_none_listens_on_ipv4_and_ipv6_on_one_port(self) -> None:
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, echo, 0)
            families = {listener.socket.family for listener in listeners}
            assert socket.AF_INET in families
            if has_ipv6_loopback():
                assert socket.AF_INET6 in families
            assert len({listener.port for listener in listeners}) == 1
            hosts = ["127.0.0.1", "::1"] if socket.AF_INET6 in families else ["127.0.0.1"]
            for host in hosts:
                async with await plait.open_tcp_stream(host, listeners[0].port) as stream:
                    await round_trip(stream, host.encode())
            tg.cancel_scope.cancel()

    @async_test
    async def test_cancelling_the_server_closes_the_listeners(self) -> None:
        with plait.CancelScope() as scope:
            async with plait.TaskGroup() as tg:
                listeners = await tg.start(plait.serve_tcp, echo, 0, "127.0.0.1")
                port = listeners[0].port
                scope.cancel()
        assert all(listener.socket.closed for listener in listeners)
        with pytest.raises(ConnectionRefusedError):
            await plait.open_tcp_stream("127.0.0.1", port)

    @async_test
    async def test_handler_that_raises_is_logged_and_closed(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls = 0

        async def handler(stream: plait.SocketStream) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("handler bug")
            await echo(stream)

        caplog.set_level(logging.ERROR, logger="plait.serve")
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
            async with await plait.open_tcp_stream("127.0.0.1", listeners[0].port) as first:
                assert await first.receive_some() == b"", "the connection was closed"
            await wait_all_tasks_blocked()
            records = [r for r in caplog.records if r.name == "plait.serve"]
            assert len(records) == 1
            assert records[0].exc_info is not None
            assert isinstance(records[0].exc_info[1], ValueError)
            assert "handler" in records[0].getMessage()
            async with await plait.open_tcp_stream("127.0.0.1", listeners[0].port) as second:
                await round_trip(second, b"still serving")
            tg.cancel_scope.cancel()

    @async_test
    async def test_client_reset_mid_request(self) -> None:
        seen: list[type] = []
        done = plait.Event()

        async def handler(stream: plait.SocketStream) -> None:
            try:
                request = await stream.receive_exactly(100)
                await stream.send_all(request)
            except BaseException as exc:
                seen.append(type(exc))
                raise  # to the server, which logs it and goes on
            finally:
                done.set()

        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
            port = listeners[0].port
            rude = await plait.open_tcp_stream("127.0.0.1", port)
            await rude.send_all(b"half" * 12)
            await wait_all_tasks_blocked()  # the handler took it and waits for the rest
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await rude.aclose()  # sends a reset
            await done.wait()
            assert seen == [plait.BrokenResourceError]
            async with await plait.open_tcp_stream("127.0.0.1", port) as polite:
                await round_trip(polite, b"y" * 100)
            tg.cancel_scope.cancel()

    @async_test
    async def test_2000_connections_open_at_once(self, ensure_fds: Callable[[int], None]) -> None:
        n = 2000
        ensure_fds(2 * n + 100)
        live = peak = 0
        connected, echoed, release = plait.Event(), plait.Event(), plait.Event()
        counts = [0, 0]

        async def handler(stream: plait.SocketStream) -> None:
            nonlocal live, peak
            live += 1
            peak = max(peak, live)
            try:
                await stream.send_all(await stream.receive_exactly(16))
                await release.wait()
            finally:
                live -= 1
            # Returning closes the connection from this side first, so the TIME_WAITs
            # stay on the server's port, not on 2,000 of the clients' ephemeral ports.

        async def client(i: int, port: int) -> None:
            async with await plait.open_tcp_stream("127.0.0.1", port) as stream:
                counts[0] += 1
                if counts[0] == n:
                    connected.set()
                await connected.wait()
                await round_trip(stream, b"client %9d" % i)
                counts[1] += 1
                if counts[1] == n:
                    echoed.set()
                assert await stream.receive_some() == b""

        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
            async with plait.TaskGroup() as clients:
                for i in range(n):
                    clients.spawn(client, i, listeners[0].port)
                await echoed.wait()
                assert (peak, live) == (n, n)
                release.set()
            await wait_all_tasks_blocked()
            assert live == 0
            tg.cancel_scope.cancel()


class TestOpenTcpStream:
    @needs_ipv6
    @pytest.mark.parametrize("order", [("::1", "127.0.0.1"), ("127.0.0.1", "::1")])
    @async_test
    async def test_tries_each_address(self, localhost_is: Any, order: tuple[str, str]) -> None:
        refusing, serving = order
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, echo, 0, serving)
            port = listeners[0].port
            with hold_port(refusing, port):
                localhost_is(refusing, serving)
                async with await plait.open_tcp_stream("localhost", port) as stream:
                    assert stream.socket.getpeername()[0] == serving
                    await round_trip(stream, b"found it")
            tg.cancel_scope.cancel()

    @needs_ipv6
    @async_test
    async def test_a_hanging_attempt_is_overtaken(self, localhost_is: Any) -> None:
        # ::1 accepts nothing (its queue is full: the SYN is dropped and the connect
        # hangs); after the happy-eyeballs delay 127.0.0.1 is tried, wins, and the
        # hanging attempt is cancelled.
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, echo, 0, "127.0.0.1")
            port = listeners[0].port
            with hold_port("::1", port) as full, socket.socket(socket.AF_INET6) as filler:
                full.listen(0)
                filler.connect(("::1", port))
                assert select.select([full], [], [], 10)[0], "the first connection queued"
                localhost_is("::1", "127.0.0.1")
                stream = await plait.open_tcp_stream("localhost", port, happy_eyeballs_delay=0.01)
                async with stream:
                    assert stream.socket.getpeername()[0] == "127.0.0.1"
                    await round_trip(stream, b"second address")
            tg.cancel_scope.cancel()

    @needs_ipv6
    @async_test
    async def test_all_attempts_refused(self, localhost_is: Any) -> None:
        with hold_port("127.0.0.1") as v4:
            port = v4.getsockname()[1]
            try:
                v6 = hold_port("::1", port)
            except OSError:
                pytest.skip("the port is taken on ::1")
            with v6:
                localhost_is("::1", "127.0.0.1")
                with pytest.raises(ConnectionRefusedError) as info:
                    await plait.open_tcp_stream("localhost", port)
        message = str(info.value)
        assert "all 2 attempts" in message
        assert f"[::1]:{port}" in message
        assert f"127.0.0.1:{port}" in message
        assert message.index("[::1]") < message.index("127.0.0.1"), "in the order tried"

    @needs_ipv6
    @async_test
    async def test_all_attempts_failed_chains_every_error(self, localhost_is: Any) -> None:
        # open_tcp_stream's docstring: "its __cause__ groups the errors".
        with hold_port("127.0.0.1") as v4:
            port = v4.getsockname()[1]
            localhost_is("::1", "127.0.0.1")
            with pytest.raises(OSError) as info:
                await plait.open_tcp_stream("localhost", port, local_address="127.0.0.1")
        cause = info.value.__cause__
        assert isinstance(cause, ExceptionGroup), f"__cause__ is {cause!r}"
        assert len(cause.exceptions) == 2
        assert any(isinstance(e, ConnectionRefusedError) for e in cause.exceptions)

    @needs_ipv6
    @async_test
    async def test_failures_with_different_errnos(self, localhost_is: Any) -> None:
        # Binding an IPv6 socket to an IPv4 local address fails; 127.0.0.1 refuses.
        with hold_port("127.0.0.1") as v4:
            port = v4.getsockname()[1]
            localhost_is("::1", "127.0.0.1")
            with pytest.raises(OSError) as info:
                await plait.open_tcp_stream("localhost", port, local_address="127.0.0.1")
        assert type(info.value) is OSError
        assert f"[::1]:{port}" in str(info.value)
        assert f"127.0.0.1:{port}" in str(info.value)

    @async_test
    async def test_one_address_refused(self) -> None:
        with hold_port("127.0.0.1") as v4:
            port = v4.getsockname()[1]
            with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
                await plait.open_tcp_stream("127.0.0.1", port)

    @pytest.mark.parametrize(
        ("args", "kwargs", "error", "match"),
        [
            ((None, 80), {}, TypeError, "host"),
            ((80, 80), {}, TypeError, "host"),
            (("127.0.0.1", "80"), {}, TypeError, "port"),
            (("127.0.0.1", 70000), {}, ValueError, "port"),
            (("127.0.0.1", -1), {}, ValueError, "port"),
            (("127.0.0.1", 80), {"server_hostname": "x"}, ValueError, "ssl_context"),
            (("127.0.0.1", 80), {"happy_eyeballs_delay": -1}, ValueError, "happy_eyeballs"),
        ],
    )
    @async_test
    async def test_bad_arguments(self, args: Any, kwargs: Any, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            await plait.open_tcp_stream(*args, **kwargs)


class TestServerArguments:
    @pytest.mark.parametrize(
        ("args", "kwargs", "error", "match"),
        [
            ((echo, -1), {}, ValueError, "port"),
            ((echo, 65536), {}, ValueError, "port"),
            ((echo, "8080"), {}, TypeError, "port"),
            ((echo, True), {}, TypeError, "port"),
            ((echo, 0, 127001), {}, TypeError, "host"),
            ((echo, 0, "127.0.0.1"), {"backlog": 0}, ValueError, "backlog"),
            ((echo, 0, "127.0.0.1"), {"backlog": "many"}, ValueError, "backlog"),
        ],
    )
    @async_test
    async def test_serve_tcp(self, args: Any, kwargs: Any, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            await plait.serve_tcp(*args, **kwargs)

    @async_test
    async def test_bad_handler_leaves_no_open_listener(self) -> None:
        # Fails with an unclosed-socket ResourceWarning if serve_tcp opened listeners
        # and then rejected the handler without closing them.
        with pytest.raises(TypeError, match="handler"):
            await plait.serve_tcp(None, 0, "127.0.0.1")  # type: ignore[arg-type]

    @async_test
    async def test_serve_listeners_needs_listeners(self) -> None:
        with pytest.raises(TypeError, match="SocketListener"):
            await plait.serve_listeners(echo, [object()])  # type: ignore[list-item]

    def test_listener_needs_a_listening_stream_socket(self) -> None:
        with plait.socket.socket() as s:
            with pytest.raises(ValueError, match="listen"):
                plait.SocketListener(s)


class TestUnix:
    @async_test
    async def test_serve_and_open(self, short_dir: str) -> None:
        path = os.path.join(short_dir, "sock")
        with plait.CancelScope() as scope:
            async with plait.TaskGroup() as tg:
                listeners = await tg.start(plait.serve_unix, echo, path)
                assert Path(path).is_socket()
                assert listeners[0].path == path
                async with await plait.open_unix_stream(path) as stream:
                    await round_trip(stream, b"unix")
                async with await plait.open_unix_stream(Path(path)) as stream:
                    await round_trip(stream, b"pathlike")
                scope.cancel()
        assert listeners[0].socket.closed
        assert not os.path.exists(path), "the socket file is removed on exit"

    @async_test
    async def test_replaces_a_stale_socket_file(self, short_dir: str) -> None:
        path = os.path.join(short_dir, "sock")
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(path)  # a server that died without removing its file
        async with plait.TaskGroup() as tg:
            await tg.start(plait.serve_unix, echo, path)
            async with await plait.open_unix_stream(path) as stream:
                await round_trip(stream, b"fresh")
            tg.cancel_scope.cancel()

    @async_test
    async def test_refuses_a_file_that_is_not_a_socket(self, short_dir: str) -> None:
        path = os.path.join(short_dir, "data")
        Path(path).write_text("keep me")
        async with plait.TaskGroup() as tg:
            with pytest.raises(FileExistsError, match="not a socket"):
                await tg.start(plait.serve_unix, echo, path)
        assert Path(path).read_text() == "keep me"

    @async_test
    async def test_refuses_a_live_server(self, short_dir: str) -> None:
        path = os.path.join(short_dir, "sock")
        async with plait.TaskGroup() as tg:
            await tg.start(plait.serve_unix, echo, path)
            with pytest.raises(OSError, match="already listening") as info:
                await tg.start(plait.serve_unix, echo, path)
            assert info.value.errno == errno.EADDRINUSE
            async with await plait.open_unix_stream(path) as stream:
                await round_trip(stream, b"first server")
            tg.cancel_scope.cancel()

    @async_test
    async def test_open_unix_stream_errors(self, short_dir: str) -> None:
        with pytest.raises(FileNotFoundError):
            await plait.open_unix_stream(os.path.join(short_dir, "missing"))
        with pytest.raises(TypeError, match="path"):
            await plait.open_unix_stream(42)  # type: ignore[arg-type]


CHILD_SERVER = r"""
import errno, logging, os, resource, sys
import plait
from plait.lowlevel import wait_readable

def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

class Report(logging.Handler):
    def emit(self, record):
        say("RECOVERED" if "again" in record.getMessage() else "BACKOFF")

async def handler(stream):
    await stream.send_all((await stream.receive_some()).upper())

async def command():
    await wait_readable(0)
    return os.read(0, 100)

async def main():
    logging.getLogger("plait.serve").addHandler(Report())
    in_use = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 32, hard))
    async with plait.TaskGroup() as tg:
        listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
        hogs = []
        try:
            while True:
                hogs.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        say("EXHAUSTED %d" % listeners[0].port)
        await command()
        for fd in hogs:
            os.close(fd)
        say("FREED")
        await command()
        tg.cancel_scope.cancel()
    say("EXITED")

plait.run(main)
"""


class TestAcceptBurst:
    def test_queued_connections_are_taken_in_one_wake_up(self) -> None:
        """50 connections queued at once start their handlers before a busy task gets
        more than a couple of steps: the accept loop takes what the OS has queued, not
        one connection per loop iteration."""

        async def main() -> int:
            started: list[int] = []
            spins = 0
            all_started = plait.Event()

            async def handler(stream: plait.SocketStream) -> None:
                started.append(spins)
                if len(started) == 50:
                    all_started.set()
                await stream.aclose()

            async def spinner() -> None:
                nonlocal spins
                while True:
                    spins += 1
                    await plait.checkpoint()

            async with plait.TaskGroup() as tg:
                listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
                tg.spawn(spinner)
                await plait.checkpoint()
                clients = [
                    socket.create_connection(("127.0.0.1", listeners[0].port)) for _ in range(50)
                ]  # blocking connects: the kernel queues all 50 before the loop runs again
                before = spins
                await all_started.wait()
                for sock in clients:
                    sock.close()
                tg.cancel_scope.cancel()
            return max(started) - before

        spins_while_accepting = plait.run(main)
        assert spins_while_accepting <= 3, spins_while_accepting


class TestAcceptBackoff:
    def test_emfile_backs_off_and_recovers(self, tmp_path: Path) -> None:
        out_of_fds_dialogue(CHILD_SERVER, tmp_path, waiting_clients=2)
