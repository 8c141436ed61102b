"""tcp_bulk: one large transfer over one loopback connection, the receiver in the same
process and loop; ``tcp_bulk`` through each runtime's streams, ``tcp_bulk_lowlevel``
through its lowest layer (asyncio protocols, raw sockets)."""

from __future__ import annotations

from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._tcp import (
    BACKLOG,
    HOST,
    RECEIVE_SIZE,
    documented,
    nodelay,
    receive_exactly,
    send_all,
)
from benchmarks.workloads._util import WrongResult, check

PARAMS = {"total": 64 * 1024 * 1024, "chunk": 64 * 1024}
QUICK = {"total": 1024 * 1024}
ACK_SIZE = 8

COMMON = """The client connects, then (timed from here) sends `total` bytes as `total /
chunk` writes of one `chunk`-byte buffer and waits for an 8-byte acknowledgement; the
server counts what it receives (receives of up to 64 KiB) and sends the count back
once it has all of it (timed until here). Checks the acknowledged count, and that the
server saw exactly `total` bytes and then the client close. Result in MB/s, MB = 10^6
bytes; 64 MiB is a short run, so the repetitions spread more than in other
workloads."""

TCP_BULK = f"""One transfer of `total` bytes over one TCP connection on 127.0.0.1,
through each runtime's stream API: plait `plait.serve_tcp` / `plait.open_tcp_stream`,
`send_all` / `receive_some`; asyncio (and uvloop, same code on its loop)
`asyncio.start_server` / `asyncio.open_connection`, `write` + `drain` / `read` (the
transport itself receives up to 256 KiB at a time into the reader's buffer); trio
`trio.serve_tcp` / `trio.open_tcp_stream`, `send_all` / `receive_some`. {COMMON}"""

TCP_BULK_LOWLEVEL = f"""`tcp_bulk` through the lowest layer each runtime offers.
asyncio (and uvloop, same code on its loop): protocols; the server's `Protocol` counts
in `data_received` (the selector loop receives up to 256 KiB at a time, uvloop up to
its own buffer size); the client writes each chunk with `transport.write` and, between
`pause_writing` and `resume_writing`, waits for a future (the flow control that
`drain` does for streams). plait and trio: their async socket modules (`plait.socket`,
`trio.socket`), the client `sendall` (trio: `send` until all is sent), the server `recv`
in a loop. {COMMON}"""


@workload("tcp_bulk", unit="MB/s", higher_is_better=True, params=PARAMS, quick=QUICK)
@documented(TCP_BULK)
def tcp_bulk(seconds: float, total: int, chunk: int) -> float:
    return total / seconds / 1e6


@workload("tcp_bulk_lowlevel", unit="MB/s", higher_is_better=True, params=PARAMS, quick=QUICK)
@documented(TCP_BULK_LOWLEVEL)
def tcp_bulk_lowlevel(seconds: float, total: int, chunk: int) -> float:
    return total / seconds / 1e6


def chunks(total: int, chunk: int) -> tuple[bytes, int]:
    """The buffer every write sends, and how many writes make ``total``."""
    if total % chunk:
        raise ValueError(f"total ({total}) must be a multiple of chunk ({chunk})")
    return bytes(range(256)) * (chunk // 256) + bytes(range(chunk % 256)), total // chunk


def ack(count: int) -> bytes:
    return count.to_bytes(ACK_SIZE, "big")


def verify(total: int, acked: bytes, received: int, closed: bool) -> None:
    check(acked == ack(total), f"acknowledged {int.from_bytes(acked, 'big')} of {total} bytes")
    check(received == total, f"the server received {received} of {total} bytes")
    check(closed, "the server did not see the client close the connection")


# -- streams ---------------------------------------------------------------------------


@impl("tcp_bulk", "plait")
async def tcp_bulk_plait(total: int, chunk: int) -> float:
    import plait

    data, writes = chunks(total, chunk)
    received = 0
    closed = plait.Event()

    async def sink(stream: plait.SocketStream) -> None:
        nonlocal received
        receive = stream.receive_some
        try:
            while got := await receive(RECEIVE_SIZE):
                received += len(got)
                if received == total:
                    await stream.send_all(ack(received))
        finally:
            closed.set()

    async with plait.TaskGroup() as tg:
        listeners = await tg.start(plait.serve_tcp, sink, 0, HOST)
        async with await plait.open_tcp_stream(HOST, listeners[0].port) as stream:
            send = stream.send_all
            start = perf_counter()
            for _ in range(writes):
                await send(data)
            acked = await stream.receive_exactly(ACK_SIZE)
            elapsed = perf_counter() - start
        await closed.wait()
        tg.cancel_scope.cancel()
    verify(total, acked, received, closed.is_set())
    return elapsed


@impl("tcp_bulk", "asyncio")
async def tcp_bulk_asyncio(total: int, chunk: int) -> float:
    import asyncio

    data, writes = chunks(total, chunk)
    received = 0
    closed = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        read = reader.read
        try:
            while got := await read(RECEIVE_SIZE):
                received += len(got)
                if received == total:
                    writer.write(ack(received))
                    await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
            closed.set()

    server = await asyncio.start_server(sink, HOST, 0, backlog=BACKLOG)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            write, drain = writer.write, writer.drain
            start = perf_counter()
            for _ in range(writes):
                write(data)
                await drain()
            acked = await reader.readexactly(ACK_SIZE)
            elapsed = perf_counter() - start
        finally:
            writer.close()
            await writer.wait_closed()
        await closed.wait()
    verify(total, acked, received, closed.is_set())
    return elapsed


@impl("tcp_bulk", "trio")
async def tcp_bulk_trio(total: int, chunk: int) -> float:
    from functools import partial

    import trio

    data, writes = chunks(total, chunk)
    received = 0
    closed = trio.Event()

    async def sink(stream: trio.SocketStream) -> None:
        nonlocal received
        receive = stream.receive_some
        try:
            while got := await receive(RECEIVE_SIZE):
                received += len(got)
                if received == total:
                    await stream.send_all(ack(received))
        finally:
            closed.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, sink, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream(HOST, port) as stream:
            send = stream.send_all
            start = perf_counter()
            for _ in range(writes):
                await send(data)
            acked = await receive_exactly(stream.receive_some, ACK_SIZE)
            elapsed = perf_counter() - start
        await closed.wait()
        nursery.cancel_scope.cancel()
    verify(total, acked, received, closed.is_set())
    return elapsed


# -- lowest layer ----------------------------------------------------------------------


@impl("tcp_bulk_lowlevel", "asyncio")
async def tcp_bulk_lowlevel_asyncio(total: int, chunk: int) -> float:
    import asyncio

    loop = asyncio.get_running_loop()
    data, writes = chunks(total, chunk)
    received = 0
    closed = asyncio.Event()

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]

        def data_received(self, got: bytes) -> None:
            nonlocal received
            received += len(got)
            if received == total:
                self.transport.write(ack(received))

        def connection_lost(self, exc: Exception | None) -> None:
            closed.set()

    class Source(asyncio.Protocol):
        def __init__(self) -> None:
            self.resumed: asyncio.Future[None] | None = None
            self.acked = b""
            self.got_ack: asyncio.Future[bytes] = loop.create_future()

        def pause_writing(self) -> None:
            self.resumed = loop.create_future()

        def resume_writing(self) -> None:
            resumed, self.resumed = self.resumed, None
            if resumed is not None and not resumed.done():
                resumed.set_result(None)

        def data_received(self, got: bytes) -> None:
            self.acked += got
            if len(self.acked) >= ACK_SIZE and not self.got_ack.done():
                self.got_ack.set_result(self.acked)

        def connection_lost(self, exc: Exception | None) -> None:
            lost = exc or WrongResult("the server closed the connection before acknowledging")
            for fut in (self.got_ack, self.resumed):
                if fut is not None and not fut.done():
                    fut.set_exception(lost)

    server = await loop.create_server(Sink, HOST, 0, backlog=BACKLOG)
    async with server:
        port = server.sockets[0].getsockname()[1]
        transport, source = await loop.create_connection(Source, HOST, port)
        try:
            write = transport.write
            start = perf_counter()
            for _ in range(writes):
                write(data)
                if source.resumed is not None:
                    await source.resumed
            acked = await source.got_ack
            elapsed = perf_counter() - start
        finally:
            transport.close()
        await closed.wait()
    verify(total, acked, received, closed.is_set())
    return elapsed


@impl("tcp_bulk_lowlevel", "plait")
async def tcp_bulk_lowlevel_plait(total: int, chunk: int) -> float:
    import plait

    data, writes = chunks(total, chunk)
    received = 0
    closed = plait.Event()

    async def sink(listener: plait.socket.SocketType) -> None:
        nonlocal received
        sock, _ = await listener.accept()
        with sock:
            nodelay(sock)
            recv = sock.recv
            while got := await recv(RECEIVE_SIZE):
                received += len(got)
                if received == total:
                    await sock.sendall(ack(received))
        closed.set()

    with plait.socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(BACKLOG)
        async with plait.TaskGroup() as tg:
            tg.spawn(sink, listener)
            with plait.socket.socket() as sock:
                nodelay(sock)
                await sock.connect(listener.getsockname())
                sendall = sock.sendall
                start = perf_counter()
                for _ in range(writes):
                    await sendall(data)
                acked = await receive_exactly(sock.recv, ACK_SIZE)
                elapsed = perf_counter() - start
    verify(total, acked, received, closed.is_set())
    return elapsed


@impl("tcp_bulk_lowlevel", "trio")
async def tcp_bulk_lowlevel_trio(total: int, chunk: int) -> float:
    import trio

    data, writes = chunks(total, chunk)
    received = 0
    closed = trio.Event()

    async def sink(listener: trio.socket.SocketType) -> None:
        nonlocal received
        sock, _ = await listener.accept()
        with sock:
            nodelay(sock)
            recv = sock.recv
            while got := await recv(RECEIVE_SIZE):
                received += len(got)
                if received == total:
                    await send_all(sock.send, ack(received))
        closed.set()

    with trio.socket.socket() as listener:
        await listener.bind((HOST, 0))
        listener.listen(BACKLOG)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink, listener)
            with trio.socket.socket() as sock:
                nodelay(sock)
                await sock.connect(listener.getsockname())
                send = sock.send
                start = perf_counter()
                for _ in range(writes):
                    await send_all(send, data)
                acked = await receive_exactly(sock.recv, ACK_SIZE)
                elapsed = perf_counter() - start
    verify(total, acked, received, closed.is_set())
    return elapsed
