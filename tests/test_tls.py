"""Tests for plait.SSLStream (src/plait/_tls.py).

Certificates come from a throwaway CA made with ``trustme``. Streams run over a plait
socketpair (``pair``) or over real TCP on 127.0.0.1 (``serve_tcp`` and
``open_tcp_stream``). Ordering between tasks comes from ``wait_all_tasks_blocked``
and from the protocol itself, never from sleeps.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import math
import os
import ssl
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import trustme

import plait
from plait import SocketStream, SSLStream
from plait.testing import MockClock, wait_all_tasks_blocked

BIG = 16 << 20  # more than any socket buffer holds: a send of this size blocks


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in ``plait.run`` (real time: real I/O happens)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        plait.run(test(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_ctx(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def pair(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext
) -> Iterator[Callable[..., tuple[SSLStream, SSLStream]]]:
    """``pair(**client_kwargs)`` -> (client, server) over a socketpair, closed after."""
    made: list[SocketStream] = []

    def make(
        hostname: str = "localhost",
        *,
        ctx: ssl.SSLContext | None = None,
        server: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[SSLStream, SSLStream]:
        a, b = plait.socket.socketpair()
        made.extend([SocketStream(a), SocketStream(b)])
        ctx = client_ctx if ctx is None else ctx
        client = SSLStream(made[-2], ctx, server_hostname=hostname, **kwargs)
        return client, SSLStream(made[-1], server_ctx, server_side=True, **(server or {}))

    yield make
    for stream in made:
        stream.socket.close()


async def receive_all(stream: plait.Stream) -> bytes:
    got = bytearray()
    async for chunk in stream:
        got += chunk
    return bytes(got)


async def handshake_both(client: SSLStream, server: SSLStream) -> None:
    async with plait.TaskGroup() as tg:
        tg.spawn(server.do_handshake)
        await client.do_handshake()


class TestHandshake:
    @async_test
    async def test_explicit_handshake_reports_the_session(self, pair, ca):
        client, server = pair()
        with pytest.raises(ValueError, match="do_handshake"):
            client.getpeercert()
        assert client.version() is None
        await handshake_both(client, server)
        assert client.version() == server.version() == "TLSv1.3"
        assert client.cipher() == server.cipher() is not None
        assert client.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")
        assert isinstance(client.getpeercert(binary_form=True), bytes)
        assert client.server_hostname == "localhost"
        assert (client.server_side, server.server_side) == (False, True)
        assert isinstance(client.transport_stream, SocketStream)
        assert "TLSv1.3" in repr(client)
        await client.do_handshake()  # done already: a checkpoint, nothing more

    @async_test
    async def test_sender_and_receiver_share_one_handshake(self, pair):
        client, server = pair()
        async with plait.TaskGroup() as tg:
            got = tg.spawn(client.receive_exactly, 4)
            tg.spawn(client.send_all, b"ping")
            assert await server.receive_exactly(4) == b"ping"
            await server.send_all(b"pong")
        assert got.result() == b"pong"

    @pytest.mark.parametrize("offer", [["http/1.1", "h2"], ["spdy/3"]])
    @async_test
    async def test_alpn(self, pair, client_ctx, server_ctx, offer):
        server_ctx.set_alpn_protocols(["h2", "http/1.1"])  # the server's order wins
        client_ctx.set_alpn_protocols(offer)
        client, server = pair()
        if offer == ["spdy/3"]:  # nothing in common: OpenSSL carries on without ALPN
            await handshake_both(client, server)
            assert client.selected_alpn_protocol() is None
            return
        await handshake_both(client, server)
        assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "h2"


class TestOverTcp:
    @staticmethod
    async def echo(server_ctx: ssl.SSLContext, stream: SocketStream) -> None:
        async with SSLStream(stream, server_ctx, server_side=True) as tls:
            async for chunk in tls:
                await tls.send_all(chunk)

    @async_test
    async def test_echo(self, client_ctx, server_ctx):
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(
                plait.serve_tcp, functools.partial(self.echo, server_ctx), 0, "127.0.0.1"
            )
            port = listeners[0].port
            async with await plait.open_tcp_stream(
                "127.0.0.1", port, ssl_context=client_ctx, server_hostname="localhost"
            ) as tls:
                assert isinstance(tls, SSLStream)
                assert tls.version() is not None  # open_tcp_stream did the handshake
                for message in (b"a", b"hello", os.urandom(100_000)):
                    await tls.send_all(message)
                    assert await tls.receive_exactly(len(message)) == message
                await tls.send_all(b"line one\nline two\n")
                assert await tls.receive_until(b"\n") == b"line one\n"
                assert await tls.receive_until(b"\n") == b"line two\n"
            tg.cancel_scope.cancel()

    @async_test
    async def test_8_mib_each_way_with_checksum(self, client_ctx, server_ctx):
        payload = os.urandom(8 << 20)
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(
                plait.serve_tcp, functools.partial(self.echo, server_ctx), 0, "127.0.0.1"
            )
            tls = await plait.open_tcp_stream(
                "127.0.0.1", listeners[0].port, ssl_context=client_ctx, server_hostname="localhost"
            )
            async with tls:
                tg.spawn(tls.send_all, payload)
                echoed = await tls.receive_exactly(len(payload))
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            tg.cancel_scope.cancel()

    @async_test
    async def test_a_client_that_only_sends_then_closes_loses_nothing(
        self, client_ctx, server_ctx
    ):
        # The client never reads. Had anything the server sent (TLS 1.3 session
        # tickets...) stayed unread in its socket, its close would reset the connection.
        received: list[bytes] = []

        async def sink(stream: SocketStream) -> None:
            async with SSLStream(stream, server_ctx, server_side=True) as tls:
                received.append(await receive_all(tls))

        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, sink, 0, "127.0.0.1")
            tls = await plait.open_tcp_stream(
                "127.0.0.1", listeners[0].port, ssl_context=client_ctx, server_hostname="localhost"
            )
            payload = os.urandom(1 << 20)
            await tls.send_all(payload)
            await tls.aclose()
            while not received:
                await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert received == [payload]

    @async_test
    async def test_wrong_hostname_is_a_clear_error(self, client_ctx, server_ctx):
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(
                plait.serve_tcp, functools.partial(self.echo, server_ctx), 0, "127.0.0.1"
            )
            with pytest.raises(plait.BrokenResourceError) as info:
                await plait.open_tcp_stream(
                    "127.0.0.1",
                    listeners[0].port,
                    ssl_context=client_ctx,
                    server_hostname="wrong.example",
                )
            tg.cancel_scope.cancel()
        message = str(info.value)
        assert message.startswith("TLS handshake with 'wrong.example' failed")
        assert "certificate is not valid for 'wrong.example'" in message
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


class TestHandshakeErrors:
    @async_test
    async def test_wrong_hostname(self, pair):
        client, server = pair("wrong.example")
        server_errors: list[str] = []

        async def serve() -> None:
            with pytest.raises(plait.BrokenResourceError) as info:
                await server.do_handshake()
            server_errors.append(str(info.value))

        async with plait.TaskGroup() as tg:
            tg.spawn(serve)
            with pytest.raises(plait.BrokenResourceError) as info:
                await client.send_all(b"secret")
        assert "certificate is not valid for 'wrong.example'" in str(info.value)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        # The client told the server why (a TLS alert) before giving up.
        assert "rejected our certificate" in server_errors[0]
        with pytest.raises(plait.BrokenResourceError, match=r"not valid for 'wrong\.example'"):
            await client.receive_some()
        await client.aclose()

    @async_test
    async def test_untrusted_ca(self, pair):
        trusts_another_ca = ssl.create_default_context()
        trustme.CA().configure_trust(trusts_another_ca)
        client, server = pair(ctx=trusts_another_ca)
        async with plait.TaskGroup() as tg:
            tg.spawn(_swallow_broken, server.do_handshake)
            with pytest.raises(plait.BrokenResourceError) as info:
                await client.do_handshake()
        message = str(info.value)
        assert message.startswith("TLS handshake with 'localhost' failed")
        assert "not signed by a CA this SSLContext trusts" in message
        assert "load_verify_locations" in message
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)

    @pytest.mark.parametrize("client_has_cert", [True, False])
    @async_test
    async def test_client_certificates(self, pair, ca, client_ctx, server_ctx, client_has_cert):
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(server_ctx)
        if client_has_cert:
            ca.issue_cert("client@example.org").configure_cert(client_ctx)
        client, server = pair()
        async with plait.TaskGroup() as tg:
            tg.spawn(client.send_all, b"hi")
            if client_has_cert:
                assert await server.receive_some() == b"hi"
                assert server.getpeercert()["subjectAltName"] == (("email", "client@example.org"),)
                return
            with pytest.raises(plait.BrokenResourceError, match="requires one"):
                await server.receive_some()
        # TLS 1.3: the client's handshake was over before the server said no.
        with pytest.raises(plait.BrokenResourceError, match="load_cert_chain"):
            await client.receive_some()

    @async_test
    async def test_peer_that_does_not_speak_tls(self, pair):
        client, server = pair()
        raw = client.transport_stream
        await raw.send_all(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(plait.BrokenResourceError, match="plain HTTP") as info:
            await server.receive_some()
        assert str(info.value).startswith("TLS handshake with the client failed")
        assert isinstance(info.value.__cause__, ssl.SSLError)

    @pytest.mark.parametrize("https_compatible", [False, True])
    @async_test
    async def test_peer_closes_during_handshake(self, pair, https_compatible):
        client, server = pair(server={"https_compatible": https_compatible})
        await client.transport_stream.aclose()
        if https_compatible:  # the peer just left: an EOF, as for plain TCP
            assert await server.receive_some() == b""
            assert await server.receive_some() == b""
            return
        with pytest.raises(plait.BrokenResourceError, match="closed the connection during"):
            await server.receive_some()

    def test_public_name(self):
        assert plait.SSLStream.__module__ == "plait"
        assert issubclass(plait.SSLStream, plait.Stream)

    def test_bad_arguments(self, client_ctx, server_ctx):
        a, b = plait.socket.socketpair()
        stream = SocketStream(a)
        try:
            with pytest.raises(TypeError, match="plait Stream"):
                SSLStream(a, client_ctx)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
                SSLStream(stream, "ctx")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="server_hostname"):
                SSLStream(stream, client_ctx)
            with pytest.raises(ValueError, match="close_timeout"):
                SSLStream(stream, server_ctx, server_side=True, close_timeout=-1)
        finally:
            a.close()
            b.close()


async def _swallow_broken(fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    try:
        await fn()
    except plait.BrokenResourceError:
        pass


class TestClose:
    @pytest.mark.parametrize("closer", ["client", "server"])
    @async_test
    async def test_close_notify_both_ways(self, pair, closer):
        client, server = pair()
        first, second = (client, server) if closer == "client" else (server, client)
        order: list[str] = []

        async def answer() -> None:
            assert await second.receive_some() == b""  # a clean EOF: close_notify
            order.append("peer saw EOF")
            await second.aclose()

        await handshake_both(client, server)
        async with plait.TaskGroup() as tg:
            tg.spawn(answer)
            await first.aclose()  # returns once the peer's close_notify came back
            order.append("closed")
        assert order == ["peer saw EOF", "closed"]

    @async_test
    async def test_aclose_waits_for_the_close_notify_reply(self, pair):
        client, server = pair(close_timeout=math.inf)
        await handshake_both(client, server)
        async with plait.TaskGroup() as tg:
            closing = tg.spawn(client.aclose)
            await wait_all_tasks_blocked()
            assert not closing.done()  # our close_notify is out; waiting for theirs
            assert await server.receive_some() == b""
            await server.aclose()
        assert closing.done()

    def test_a_silent_peer_does_not_hold_up_aclose(self, pair):
        async def main() -> None:
            client, server = pair(close_timeout=5)
            await handshake_both(client, server)
            start = plait.current_time()
            await client.aclose()  # the server never answers
            assert plait.current_time() - start == pytest.approx(5)
            assert await server.receive_some() == b""  # it did get a close_notify

        plait.run(main, clock=MockClock(autojump_threshold=0))

    def test_aclose_is_idempotent_and_final(self, pair):
        async def main() -> None:
            client, server = pair(https_compatible=True)
            await handshake_both(client, server)
            start = plait.current_time()
            await client.aclose()  # https_compatible: no waiting for a reply
            assert plait.current_time() == start
            await client.aclose()
            with pytest.raises(plait.ClosedResourceError, match="closed"):
                await client.send_all(b"x")
            with pytest.raises(plait.ClosedResourceError, match="closed"):
                await client.receive_some()
            with pytest.raises(plait.ClosedResourceError):
                await client.do_handshake()
            with pytest.raises(plait.ClosedResourceError):
                await client.send_eof()
            assert client.transport_stream.socket.closed  # type: ignore[attr-defined]
            assert await server.receive_some() == b""  # it did send a close_notify

        plait.run(main, clock=MockClock(autojump_threshold=0))

    @async_test
    async def test_aclose_before_the_handshake_just_closes(self, pair):
        client, server = pair()
        await client.aclose()
        with pytest.raises(plait.BrokenResourceError):
            await server.do_handshake()

    @async_test
    async def test_aclose_wakes_a_blocked_receiver(self, pair):
        client, server = pair()
        await handshake_both(client, server)

        async def blocked_receive() -> None:
            with pytest.raises(plait.ClosedResourceError):
                await client.receive_some()

        async def answer() -> None:
            assert await server.receive_some() == b""
            await server.aclose()  # its close_notify wakes the blocked receiver's read

        async with plait.TaskGroup() as tg:
            tg.spawn(blocked_receive)
            tg.spawn(answer)
            await wait_all_tasks_blocked()
            await client.aclose()

    @async_test
    async def test_cancelled_aclose_still_closes(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        with plait.CancelScope() as scope:
            scope.cancel()
            await client.aclose()
        assert scope.cancelled_caught
        assert client.transport_stream.socket.closed  # type: ignore[attr-defined]
        with pytest.raises(plait.BrokenResourceError, match="close_notify"):
            await server.receive_some()  # closed with no time for a close_notify

    @async_test
    async def test_send_eof_half_closes_on_tls13(self, pair):
        client, server = pair()

        async def serve() -> None:
            request = await receive_all(server)  # ends with the client's send_eof
            await server.send_all(b"you said " + request)
            await server.aclose()

        async with plait.TaskGroup() as tg:
            tg.spawn(serve)
            await client.send_all(b"hello")
            await client.send_eof()
            await client.send_eof()  # idempotent
            with pytest.raises(plait.ClosedResourceError, match="send_eof"):
                await client.send_all(b"more")
            assert await receive_all(client) == b"you said hello"
        await client.aclose()

    @async_test
    async def test_send_eof_keeps_data_that_already_arrived(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        await server.send_all(b"first")
        await server.send_all(b"second")
        # One transport read takes both records; OpenSSL keeps "rst" and "second".
        # unwrap() would fail on them ("application data after close notify").
        assert await client.receive_some(2) == b"fi"
        await client.send_eof()
        async with plait.TaskGroup() as tg:
            tg.spawn(server.aclose)
            assert await receive_all(client) == b"rstsecond"

    @async_test
    async def test_send_eof_on_tls12_says_why_not(self, pair, client_ctx):
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client, server = pair()
        await handshake_both(client, server)
        with pytest.raises(NotImplementedError, match=r"needs TLS 1\.3"):
            await client.send_eof()
        async with plait.TaskGroup() as tg:  # the stream is still fine
            tg.spawn(client.send_all, b"x" * 100_000)
            assert await server.receive_exactly(100_000) == b"x" * 100_000


class TestTruncation:
    @async_test
    async def test_eof_without_close_notify_is_an_error(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        await server.send_all(b"partial")
        await server.transport_stream.aclose()  # no close_notify
        assert await client.receive_some() == b"partial"
        with pytest.raises(plait.BrokenResourceError, match="https_compatible=True") as info:
            await client.receive_some()
        assert "close_notify" in str(info.value)
        assert isinstance(info.value.__cause__, ssl.SSLError)
        with pytest.raises(plait.BrokenResourceError):
            await client.receive_some()
        await client.aclose()

    @async_test
    async def test_https_compatible_takes_it_as_eof(self, pair):
        client, server = pair(https_compatible=True)
        await handshake_both(client, server)
        await server.send_all(b"partial")
        await server.transport_stream.aclose()
        assert await receive_all(client) == b"partial"
        assert await client.receive_some() == b""
        await client.aclose()

    @async_test
    async def test_receive_exactly_reports_the_partial_data(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        await server.send_all(b"abc")
        async with plait.TaskGroup() as tg:
            tg.spawn(server.aclose)
            with pytest.raises(plait.EndOfStream) as info:
                await client.receive_exactly(10)
            assert info.value.partial == b"abc"  # type: ignore[attr-defined]
            await client.aclose()


class TestConcurrency:
    @async_test
    async def test_full_duplex(self, pair):
        client, server = pair()
        up, down = os.urandom(4 << 20), os.urandom(4 << 20)
        async with plait.TaskGroup() as tg:
            tg.spawn(client.send_all, up)
            tg.spawn(server.send_all, down)
            from_client = tg.spawn(server.receive_exactly, len(up))
            assert await client.receive_exactly(len(down)) == down
        assert from_client.result() == up

    @async_test
    async def test_second_sender_or_receiver_is_busy(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        async with plait.TaskGroup() as tg:
            tg.spawn(client.send_all, b"x" * BIG)
            tg.spawn(client.receive_some)
            await wait_all_tasks_blocked()
            with pytest.raises(plait.BusyResourceError, match="sending"):
                await client.send_all(b"y")
            with pytest.raises(plait.BusyResourceError):
                await client.send_eof()
            with pytest.raises(plait.BusyResourceError, match="receiving"):
                await client.receive_some()
            tg.cancel_scope.cancel()

    @async_test
    async def test_cancelled_receive_leaves_the_stream_usable(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        async with plait.TaskGroup() as tg:
            scope = plait.CancelScope()

            async def receive() -> None:
                with scope:
                    await client.receive_some()

            tg.spawn(receive)
            await wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        async with plait.TaskGroup() as tg:
            tg.spawn(server.send_all, b"after")
            assert await client.receive_exactly(5) == b"after"

    @pytest.mark.parametrize("op", ["do_handshake", "send_all", "receive_some"])
    @async_test
    async def test_cancelled_handshake_wait_can_be_resumed(self, pair, op):
        client, server = pair()
        scope = plait.CancelScope()

        async def handshake() -> None:
            with scope:
                if op == "send_all":
                    await client.send_all(b"never sent")
                else:
                    await getattr(client, op)()

        async with plait.TaskGroup() as tg:
            tg.spawn(handshake)
            await wait_all_tasks_blocked()  # ClientHello sent, waiting for the server
            scope.cancel()
        assert scope.cancelled_caught
        await handshake_both(client, server)
        assert client.version() == "TLSv1.3"

    @async_test
    async def test_cancelled_send_breaks_the_stream(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        async with plait.TaskGroup() as tg:
            tg.spawn(client.send_all, b"x" * BIG)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        with pytest.raises(plait.BrokenResourceError, match="cancelled while it was sending"):
            await client.send_all(b"more")
        with pytest.raises(plait.BrokenResourceError):
            await client.receive_some()
        await client.aclose()  # broken: closes at once, no close_notify

    @async_test
    async def test_operations_are_checkpoints(self, pair):
        client, server = pair()
        await handshake_both(client, server)
        await server.send_all(b"data")
        await wait_all_tasks_blocked()
        for op in (client.receive_some, client.do_handshake, lambda: client.send_all(b"")):
            with plait.CancelScope() as scope:
                scope.cancel()
                await op()
            assert scope.cancelled_caught
        assert await client.receive_some() == b"data"  # the cancelled receive took nothing


class TestLeaks:
    def test_failed_handshake_leaves_no_cycles(self, client_ctx, server_ctx):
        refs: list[weakref.ref[Any]] = []

        async def main() -> None:
            a, b = plait.socket.socketpair()
            client = SSLStream(SocketStream(a), client_ctx, server_hostname="wrong.example")
            server = SSLStream(SocketStream(b), server_ctx, server_side=True)
            refs.extend([weakref.ref(client.ssl_object), weakref.ref(server.ssl_object)])
            try:
                async with plait.TaskGroup() as tg:
                    tg.spawn(_swallow_broken, server.do_handshake)
                    await client.do_handshake()
            except* plait.BrokenResourceError:
                pass
            await client.aclose()
            await server.aclose()

        gc.collect()
        gc.disable()
        try:
            plait.run(main)
            assert [ref() for ref in refs] == [None, None]
        finally:
            gc.enable()
