"""Tests for plait.SocketStream and the Stream conveniences (src/plait/_streams.py).

Every test runs on two real transports: a TCP connection over 127.0.0.1 and a Unix
socketpair. Ordering between tasks comes from ``wait_all_tasks_blocked`` (a receiver
is parked in the reactor) and from the kernel: on loopback, what one side sent is
readable by the other as soon as ``send`` returns.
"""

from __future__ import annotations

import functools
import hashlib
import random
import select
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest

import plait
from plait import SocketStream
from plait.testing import wait_all_tasks_blocked

StreamPair = tuple[SocketStream, SocketStream]


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in ``plait.run`` (real time: real I/O happens)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        plait.run(test(*args, **kwargs))

    return run


def make_pair(kind: str) -> StreamPair:
    if kind == "tcp":
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            a = socket.create_connection(listener.getsockname())
            b, _ = listener.accept()
    else:
        a, b = socket.socketpair()
    wrap = plait.socket.from_stdlib_socket
    return SocketStream(wrap(a)), SocketStream(wrap(b))


@pytest.fixture(params=["tcp", "socketpair"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(kind: str) -> Iterator[StreamPair]:
    a, b = make_pair(kind)
    yield a, b
    a.socket.close()
    b.socket.close()


def reset(kind: str, stream: SocketStream) -> None:
    """Close ``stream`` abortively: the peer sees a reset, not an EOF."""
    if kind == "tcp":
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # A Unix socket closed with unread data makes its peer's next read ECONNRESET (TCP
    # does the same, with SO_LINGER 0 or without).
    stream.socket.close()


async def receive_all(stream: SocketStream) -> bytes:
    got = bytearray()
    async for chunk in stream:
        got += chunk
    return bytes(got)


async def parked(tg: plait.TaskGroup, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Spawn ``fn(*args)`` and let it run until it is blocked."""
    task = tg.spawn(fn, *args)
    await wait_all_tasks_blocked()
    assert not task.done(), f"{fn} did not block"
    return task


class TestEcho:
    @async_test
    async def test_echo(self, pair: StreamPair) -> None:
        a, b = pair

        async def echo() -> None:
            async for chunk in b:
                await b.send_all(chunk)
            await b.aclose()

        async with plait.TaskGroup() as tg:
            tg.spawn(echo)
            for message in (b"one", b"two" * 1000, bytearray(b"three"), memoryview(b"four")):
                await a.send_all(message)
                assert await a.receive_exactly(len(message)) == bytes(message)
            await a.send_eof()
            assert await a.receive_some() == b""

    @async_test
    async def test_half_close(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"request")
        await a.send_eof()
        await a.send_eof()  # idempotent
        assert await receive_all(b) == b"request"
        assert await b.receive_some() == b""  # and again
        await b.send_all(b"reply after the peer's EOF")
        await b.send_eof()
        assert await receive_all(a) == b"reply after the peer's EOF"

    @async_test
    async def test_64_mib_both_ways_at_once(self, pair: StreamPair) -> None:
        block = random.Random(4).randbytes(1 << 20)
        chunks = 64

        def chunk(direction: int, i: int) -> bytes:
            return bytes([direction]) + i.to_bytes(4, "big") + block[5:]

        expected = [hashlib.sha256(), hashlib.sha256()]
        for direction in (0, 1):
            for i in range(chunks):
                expected[direction].update(chunk(direction, i))
        received = [hashlib.sha256(), hashlib.sha256()]
        counts = [0, 0]

        async def send(stream: SocketStream, direction: int) -> None:
            for i in range(chunks):
                await stream.send_all(chunk(direction, i))
            await stream.send_eof()

        async def receive(stream: SocketStream, direction: int) -> None:
            async for data in stream:
                received[direction].update(data)
                counts[direction] += len(data)

        a, b = pair
        async with plait.TaskGroup() as tg:
            tg.spawn(send, a, 0)
            tg.spawn(send, b, 1)
            tg.spawn(receive, b, 0)
            tg.spawn(receive, a, 1)
        assert counts == [chunks << 20, chunks << 20]
        assert [h.hexdigest() for h in received] == [h.hexdigest() for h in expected]


class TestReceiveSome:
    @async_test
    async def test_max_bytes_bounds_the_result(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"x" * 1000)
        first = await b.receive_some(10)
        assert 1 <= len(first) <= 10
        assert len(await b.receive_some(1)) == 1
        rest = await b.receive_some()
        while len(first) + 1 + len(rest) < 1000:
            rest += await b.receive_some()
        assert len(first) + 1 + len(rest) == 1000

    @async_test
    async def test_buffered_bytes_come_first_within_max_bytes(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"line\nabcdef")
        assert await b.receive_until(b"\n") == b"line\n"
        assert await b.receive_some(3) == b"abc"
        assert await b.receive_some() == b"def"

    @async_test
    async def test_blocks_until_data_then_eof_is_empty(self, pair: StreamPair) -> None:
        a, b = pair
        async with plait.TaskGroup() as tg:
            task = await parked(tg, b.receive_some)
            await a.send_all(b"late")
        assert task.result() == b"late"
        await a.send_eof()
        assert await b.receive_some() == b""
        assert await b.receive_some() == b""

    @pytest.mark.parametrize(
        ("max_bytes", "error"),
        [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("4", TypeError)],
    )
    @async_test
    async def test_bad_max_bytes(self, pair: StreamPair, max_bytes: Any, error: type) -> None:
        with pytest.raises(error, match="max_bytes"):
            await pair[0].receive_some(max_bytes)


class TestReceiveExactly:
    @async_test
    async def test_collects_across_chunks_and_keeps_the_rest(self, pair: StreamPair) -> None:
        a, b = pair
        async with plait.TaskGroup() as tg:
            task = await parked(tg, b.receive_exactly, 10)
            await a.send_all(b"0123")
            await wait_all_tasks_blocked()
            assert not task.done()
            await a.send_all(b"456789abc")
        assert task.result() == b"0123456789"
        assert await b.receive_exactly(3) == b"abc"
        assert await b.receive_exactly(0) == b""

    @async_test
    async def test_eof_first_raises_with_the_partial_bytes(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"abc")
        await a.send_eof()
        with pytest.raises(plait.EndOfStream, match="3 of the 5 bytes") as info:
            await b.receive_exactly(5)
        assert info.value.partial == b"abc"  # type: ignore[attr-defined]
        assert await b.receive_some() == b""

    @pytest.mark.parametrize(
        ("n", "error"), [(-1, ValueError), ("3", TypeError), (2.0, TypeError)]
    )
    @async_test
    async def test_bad_n(self, pair: StreamPair, n: Any, error: type) -> None:
        with pytest.raises(error, match="receive_exactly"):
            await pair[0].receive_exactly(n)


class TestReceiveUntil:
    @async_test
    async def test_delimiter_split_over_chunks(self, pair: StreamPair) -> None:
        a, b = pair
        async with plait.TaskGroup() as tg:
            task = await parked(tg, b.receive_until, b"\r\n")
            await a.send_all(b"hello\r")
            await wait_all_tasks_blocked()
            assert not task.done()
            await a.send_all(b"\nworld")
        assert task.result() == b"hello\r\n"
        assert await b.receive_some() == b"world"

    @async_test
    async def test_several_lines_in_one_chunk(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"a\nbb\nccc\n")
        assert [await b.receive_until(b"\n") for _ in range(3)] == [b"a\n", b"bb\n", b"ccc\n"]
        await a.send_all(b"x--y--")
        assert await b.receive_until(bytearray(b"--")) == b"x--"
        assert await b.receive_until(b"--", max_bytes=3) == b"y--"  # exactly at the limit

    @pytest.mark.parametrize("data", [b"x" * 20, b"x" * 15 + b"\n"])
    @async_test
    async def test_max_bytes_exceeded_keeps_the_data(self, pair: StreamPair, data: bytes) -> None:
        a, b = pair
        await a.send_all(data)
        with pytest.raises(ValueError, match="within the first 10 bytes"):
            await b.receive_until(b"\n", max_bytes=10)
        await a.send_eof()
        assert await receive_all(b) == data

    @async_test
    async def test_eof_first_raises_with_the_partial_bytes(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"no newline")
        await a.send_eof()
        with pytest.raises(plait.EndOfStream) as info:
            await b.receive_until(b"\n")
        assert info.value.partial == b"no newline"  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("delim", "max_bytes"), [(b"", 10), ("\n", 10), (b"\n", 0), (b"\n", -5), (b"\n", 2.5)]
    )
    @async_test
    async def test_bad_arguments(self, pair: StreamPair, delim: Any, max_bytes: Any) -> None:
        with pytest.raises((TypeError, ValueError), match="receive_until"):
            await pair[0].receive_until(delim, max_bytes)


class TestIterationAndContextManager:
    @async_test
    async def test_async_for_yields_chunks_until_eof(self, pair: StreamPair) -> None:
        a, b = pair
        async with plait.TaskGroup() as tg:
            task = tg.spawn(receive_all, b)
            for i in range(5):
                await a.send_all(b"%d," % i)
            await a.send_eof()
        assert task.result() == b"0,1,2,3,4,"

    @async_test
    async def test_async_with_closes(self, pair: StreamPair) -> None:
        a, b = pair
        async with a as entered:
            assert entered is a
            await a.send_all(b"bye")
        assert a.socket.closed
        assert await receive_all(b) == b"bye"
        assert "closed" in repr(a)


class TestOneTaskPerDirection:
    @async_test
    async def test_concurrent_receivers(self, pair: StreamPair) -> None:
        a, b = pair
        async with plait.TaskGroup() as tg:
            first = await parked(tg, b.receive_some)
            for op in (
                b.receive_some,
                lambda: b.receive_exactly(1),
                lambda: b.receive_until(b"\n"),
            ):
                with pytest.raises(plait.BusyResourceError, match="receiving"):
                    await op()
            await a.send_all(b"x")
        assert first.result() == b"x"

    @async_test
    async def test_concurrent_senders(self, pair: StreamPair) -> None:
        a, _ = pair
        async with plait.TaskGroup() as tg:
            await parked(tg, a.send_all, b"x" * (32 << 20))  # more than the buffers hold
            with pytest.raises(plait.BusyResourceError, match="sending"):
                await a.send_all(b"y")
            with pytest.raises(plait.BusyResourceError, match="sending"):
                await a.send_eof()
            tg.cancel_scope.cancel()


class TestClose:
    @async_test
    async def test_aclose_is_idempotent(self, pair: StreamPair) -> None:
        a, b = pair
        await a.aclose()
        await a.aclose()
        assert a.socket.closed
        assert await b.receive_some() == b""

    @async_test
    async def test_aclose_closes_even_when_cancelled(self, pair: StreamPair) -> None:
        a, _ = pair
        with plait.CancelScope() as scope:
            scope.cancel()
            await a.aclose()
        assert scope.cancelled_caught
        assert a.socket.closed

    @pytest.mark.parametrize("direction", ["receive", "send"])
    @async_test
    async def test_aclose_wakes_a_blocked_task(self, pair: StreamPair, direction: str) -> None:
        a, _ = pair
        errors: list[BaseException] = []

        async def blocked() -> None:
            try:
                if direction == "receive":
                    await a.receive_some()
                else:
                    await a.send_all(b"x" * (32 << 20))
            except plait.ClosedResourceError as exc:
                errors.append(exc)

        async with plait.TaskGroup() as tg:
            await parked(tg, blocked)
            await a.aclose()
        assert len(errors) == 1

    @async_test
    async def test_send_after_send_eof(self, pair: StreamPair) -> None:
        a, _ = pair
        await a.send_eof()
        with pytest.raises(plait.ClosedResourceError, match="send_eof"):
            await a.send_all(b"x")

    @async_test
    async def test_operations_after_aclose(self, pair: StreamPair) -> None:
        a, _ = pair
        await a.aclose()
        ops = (
            lambda: a.send_all(b"x"),
            a.receive_some,
            lambda: a.receive_exactly(1),
            lambda: a.receive_until(b"\n"),
            a.send_eof,
        )
        for op in ops:
            with pytest.raises(plait.ClosedResourceError, match="closed"):
                await op()


class TestBrokenPeer:
    @async_test
    async def test_reset_while_receiving(self, kind: str, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"never read")
        async with plait.TaskGroup() as tg:

            async def receiver() -> None:
                with pytest.raises(plait.BrokenResourceError) as info:
                    await a.receive_some()
                assert isinstance(info.value.__cause__, ConnectionResetError)

            await parked(tg, receiver)
            reset(kind, b)

    @async_test
    async def test_reset_then_send_and_receive(self, kind: str, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"never read")
        reset(kind, b)
        with pytest.raises(plait.BrokenResourceError, match="broken"):
            await a.receive_some()
        with pytest.raises(plait.BrokenResourceError, match="broken"):
            await a.send_all(b"more")


class TestCancellation:
    @async_test
    async def test_cancelled_receive_exactly_loses_no_bytes(self, pair: StreamPair) -> None:
        a, b = pair
        scope = plait.CancelScope()

        async def receiver() -> None:
            with scope:
                await b.receive_exactly(10)

        async with plait.TaskGroup() as tg:
            await parked(tg, receiver)
            await a.send_all(b"01234")
            await wait_all_tasks_blocked()  # it took the five bytes and waits for more
            scope.cancel()
        assert scope.cancelled_caught
        await a.send_all(b"56789")
        assert await b.receive_exactly(10) == b"0123456789"

    @async_test
    async def test_cancelled_receive_until_loses_no_bytes(self, pair: StreamPair) -> None:
        a, b = pair
        scope = plait.CancelScope()

        async def receiver() -> None:
            with scope:
                await b.receive_until(b"\n")

        await a.send_all(b"par")
        async with plait.TaskGroup() as tg:
            await parked(tg, receiver)
            scope.cancel()
        assert scope.cancelled_caught
        await a.send_all(b"tial\n")
        assert await b.receive_until(b"\n") == b"partial\n"

    @async_test
    async def test_completed_receive_is_never_lost(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"ready")
        got: list[bytes] = []
        async with plait.TaskGroup() as tg:
            with plait.CancelScope() as scope:

                async def canceller() -> None:
                    scope.cancel()

                tg.spawn(canceller)  # runs while receive_some yields, after the read
                got.append(await b.receive_some())
                assert scope.cancel_called
                await plait.checkpoint()
            assert scope.cancelled_caught
        assert got == [b"ready"]

    @async_test
    async def test_every_operation_is_a_checkpoint(self, pair: StreamPair) -> None:
        a, b = pair
        await a.send_all(b"abc\n")
        assert await b.receive_exactly(1) == b"a"  # leaves b"bc\n" buffered
        ops = (
            b.receive_some,
            lambda: b.receive_exactly(1),
            lambda: b.receive_until(b"\n"),
            lambda: a.send_all(b"lost"),
            a.send_eof,
        )
        for op in ops:
            with plait.CancelScope() as scope:
                scope.cancel()
                await op()
            assert scope.cancelled_caught
        assert not select.select([b.socket], [], [], 0)[0], "nothing was sent"
        assert await b.receive_until(b"\n") == b"bc\n"
        await a.send_all(b"still open")
        assert await b.receive_exactly(10) == b"still open"


class TestConstruction:
    def test_needs_a_plait_stream_socket(self) -> None:
        with socket.socket() as raw:
            with pytest.raises(TypeError, match="from_stdlib_socket"):
                SocketStream(raw)  # type: ignore[arg-type]
        with plait.socket.socket(type=socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                SocketStream(udp)

    def test_tcp_streams_set_nodelay(self) -> None:
        a, b = make_pair("tcp")
        with a.socket, b.socket:
            assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert "fd=" in repr(a)
