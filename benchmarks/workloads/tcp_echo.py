"""tcp_echo: many loopback connections each doing small request/response round-trips with
an echo server in the same process and loop; ``tcp_echo`` through each runtime's streams,
``tcp_echo_lowlevel`` through its lowest layer (asyncio protocols, raw sockets)."""

from __future__ import annotations

from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._tcp import (
    BACKLOG,
    HOST,
    RECEIVE_SIZE,
    documented,
    nodelay,
    payload,
    receive_exactly,
    send_all,
    wrong_echo,
)
from benchmarks.workloads._util import WrongResult, check

PARAMS = {"connections": 50, "rounds": 2_000, "size": 100}
QUICK = {"connections": 4, "rounds": 50}

COMMON = """Server and clients run in the same process and loop: the server echoes whatever
it receives (receives of up to 64 KiB); each client sends its own `size`-byte message
and waits for all of it to come back before sending it again, and checks every echo.
The time runs from before the first connection is opened until every client has closed
its connection; afterwards the server must have echoed exactly `connections * rounds *
size` bytes and seen every connection close. Each round-trip is two small writes and two
reads on loopback, so this mostly measures each runtime's per-operation overhead."""


TCP_ECHO = f"""`connections` TCP connections over 127.0.0.1 at once, each doing
`rounds` round-trips of `size` bytes, through each runtime's stream API. plait:
`plait.serve_tcp` and `plait.open_tcp_stream`, the handler loops `receive_some` /
`send_all`, the client `send_all` + `receive_exactly(size)`. asyncio (and uvloop, same
code on its loop): `asyncio.start_server` and `asyncio.open_connection`, the handler
loops `read` / `write` + `drain`, the client `write` + `drain` + `readexactly(size)`.
trio: `trio.serve_tcp` and `trio.open_tcp_stream`, `receive_some` / `send_all`; the
client reads with a `receive_exactly`-like loop over `receive_some` (trio has none). All
three set `TCP_NODELAY`. {COMMON}"""

TCP_ECHO_LOWLEVEL = f"""`tcp_echo` through the lowest layer each runtime offers: no
stream objects, and no task per connection where the runtime has callbacks. asyncio (and
uvloop, same code on its loop): protocols, `loop.create_server` with a `Protocol`
that writes back in `data_received`, clients made by `loop.create_connection` whose
protocol counts the bytes of each echo and writes the next message from
`data_received`. plait and trio: their async socket modules (`plait.socket`,
`trio.socket`), an accept loop spawning one task per connection that loops `recv` /
`sendall` (trio: `send` until all is sent), clients `sendall` then `recv` until `size`
bytes came; `TCP_NODELAY` on every socket, as asyncio sets it. {COMMON}"""


@workload("tcp_echo", unit="round-trips/s", higher_is_better=True, params=PARAMS, quick=QUICK)
@documented(TCP_ECHO)
def tcp_echo(seconds: float, connections: int, rounds: int, size: int) -> float:
    return connections * rounds / seconds


@workload(
    "tcp_echo_lowlevel", unit="round-trips/s", higher_is_better=True, params=PARAMS, quick=QUICK
)
@documented(TCP_ECHO_LOWLEVEL)
def tcp_echo_lowlevel(seconds: float, connections: int, rounds: int, size: int) -> float:
    return connections * rounds / seconds


def verify(
    connections: int, rounds: int, size: int, *, done: int, echoed: int, closed: int
) -> None:
    check(done == connections * rounds, f"{done} of {connections * rounds} round-trips done")
    total = connections * rounds * size
    check(echoed == total, f"the server echoed {echoed} of {total} bytes")
    check(closed == connections, f"the server saw {closed} of {connections} connections close")


# -- streams ---------------------------------------------------------------------------


@impl("tcp_echo", "plait")
async def tcp_echo_plait(connections: int, rounds: int, size: int) -> float:
    import plait

    done = echoed = closed = 0
    all_closed = plait.Event()

    async def echo(stream: plait.SocketStream) -> None:
        nonlocal echoed, closed
        receive, send = stream.receive_some, stream.send_all
        try:
            while data := await receive(RECEIVE_SIZE):
                await send(data)
                echoed += len(data)
        finally:
            closed += 1
            if closed == connections:
                all_closed.set()

    async def client(i: int, port: int) -> None:
        nonlocal done
        msg = payload(i, size)
        async with await plait.open_tcp_stream(HOST, port) as stream:
            send, receive = stream.send_all, stream.receive_exactly
            for _ in range(rounds):
                await send(msg)
                got = await receive(size)
                if got != msg:
                    raise wrong_echo(i, msg, got)
        done += rounds

    async with plait.TaskGroup() as tg:
        listeners = await tg.start(plait.serve_tcp, echo, 0, HOST)
        port = listeners[0].port
        start = perf_counter()
        async with plait.TaskGroup() as clients:
            for i in range(connections):
                clients.spawn(client, i, port)
        elapsed = perf_counter() - start
        await all_closed.wait()
        tg.cancel_scope.cancel()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed


@impl("tcp_echo", "asyncio")
async def tcp_echo_asyncio(connections: int, rounds: int, size: int) -> float:
    import asyncio

    done = echoed = closed = 0
    all_closed = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal echoed, closed
        read, write, drain = reader.read, writer.write, writer.drain
        try:
            while data := await read(RECEIVE_SIZE):
                write(data)
                await drain()
                echoed += len(data)
        finally:
            writer.close()
            await writer.wait_closed()
            closed += 1
            if closed == connections:
                all_closed.set()

    async def client(i: int, port: int) -> None:
        nonlocal done
        msg = payload(i, size)
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            read, write, drain = reader.readexactly, writer.write, writer.drain
            for _ in range(rounds):
                write(msg)
                await drain()
                got = await read(size)
                if got != msg:
                    raise wrong_echo(i, msg, got)
        finally:
            writer.close()
            await writer.wait_closed()
        done += rounds

    server = await asyncio.start_server(echo, HOST, 0, backlog=BACKLOG)
    async with server:
        port = server.sockets[0].getsockname()[1]
        start = perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(connections):
                tg.create_task(client(i, port))
        elapsed = perf_counter() - start
        await all_closed.wait()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed


@impl("tcp_echo", "trio")
async def tcp_echo_trio(connections: int, rounds: int, size: int) -> float:
    from functools import partial

    import trio

    done = echoed = closed = 0
    all_closed = trio.Event()

    async def echo(stream: trio.SocketStream) -> None:
        nonlocal echoed, closed
        receive, send = stream.receive_some, stream.send_all
        try:
            while data := await receive(RECEIVE_SIZE):
                await send(data)
                echoed += len(data)
        finally:
            closed += 1
            if closed == connections:
                all_closed.set()

    async def client(i: int, port: int) -> None:
        nonlocal done
        msg = payload(i, size)
        async with await trio.open_tcp_stream(HOST, port) as stream:
            send, receive_some = stream.send_all, stream.receive_some
            for _ in range(rounds):
                await send(msg)
                got = await receive_exactly(receive_some, size)
                if got != msg:
                    raise wrong_echo(i, msg, got)
        done += rounds

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, echo, 0, host=HOST, backlog=BACKLOG)
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        start = perf_counter()
        async with trio.open_nursery() as clients:
            for i in range(connections):
                clients.start_soon(client, i, port)
        elapsed = perf_counter() - start
        await all_closed.wait()
        nursery.cancel_scope.cancel()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed


# -- lowest layer ----------------------------------------------------------------------


@impl("tcp_echo_lowlevel", "asyncio")
async def tcp_echo_lowlevel_asyncio(connections: int, rounds: int, size: int) -> float:
    import asyncio

    loop = asyncio.get_running_loop()
    done = echoed = closed = 0
    all_closed = asyncio.Event()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.write = transport.write  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            nonlocal echoed
            self.write(data)
            echoed += len(data)

        def connection_lost(self, exc: Exception | None) -> None:
            nonlocal closed
            closed += 1
            if closed == connections:
                all_closed.set()

    class Client(asyncio.Protocol):
        def __init__(self, i: int) -> None:
            self.i = i
            self.msg = payload(i, size)
            self.left = rounds
            self.buf = b""
            self.finished: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.transport.write(self.msg)

        def data_received(self, data: bytes) -> None:
            if self.buf:
                data = self.buf + data
            if len(data) < size:
                self.buf = data
                return
            self.buf = b""
            if data != self.msg:
                self.fail(wrong_echo(self.i, self.msg, data))
            elif self.left > 1:
                self.left -= 1
                self.transport.write(self.msg)
            else:
                self.left = 0
                self.transport.close()

        def fail(self, exc: Exception) -> None:
            if not self.finished.done():
                self.finished.set_exception(exc)
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.left:
                self.fail(exc or WrongResult(f"connection {self.i} closed by the server"))
            elif not self.finished.done():
                self.finished.set_result(None)

    async def client(i: int, port: int) -> None:
        nonlocal done
        _, protocol = await loop.create_connection(lambda: Client(i), HOST, port)
        await protocol.finished
        done += rounds

    server = await loop.create_server(Echo, HOST, 0, backlog=BACKLOG)
    async with server:
        port = server.sockets[0].getsockname()[1]
        start = perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(connections):
                tg.create_task(client(i, port))
        elapsed = perf_counter() - start
        await all_closed.wait()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed


@impl("tcp_echo_lowlevel", "plait")
async def tcp_echo_lowlevel_plait(connections: int, rounds: int, size: int) -> float:
    import plait

    done = echoed = closed = 0
    all_closed = plait.Event()

    async def echo(sock: plait.socket.SocketType) -> None:
        nonlocal echoed, closed
        recv, sendall = sock.recv, sock.sendall
        try:
            with sock:
                while data := await recv(RECEIVE_SIZE):
                    await sendall(data)
                    echoed += len(data)
        finally:
            closed += 1
            if closed == connections:
                all_closed.set()

    async def serve(listener: plait.socket.SocketType, tg: plait.TaskGroup) -> None:
        while True:
            sock, _ = await listener.accept()
            nodelay(sock)
            tg.spawn(echo, sock)

    async def client(i: int, port: int) -> None:
        nonlocal done
        msg = payload(i, size)
        with plait.socket.socket() as sock:
            nodelay(sock)
            await sock.connect((HOST, port))
            sendall, recv = sock.sendall, sock.recv
            for _ in range(rounds):
                await sendall(msg)
                got = await receive_exactly(recv, size)
                if got != msg:
                    raise wrong_echo(i, msg, got)
        done += rounds

    with plait.socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(BACKLOG)
        port = listener.getsockname()[1]
        async with plait.TaskGroup() as tg:
            tg.spawn(serve, listener, tg)
            start = perf_counter()
            async with plait.TaskGroup() as clients:
                for i in range(connections):
                    clients.spawn(client, i, port)
            elapsed = perf_counter() - start
            await all_closed.wait()
            tg.cancel_scope.cancel()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed


@impl("tcp_echo_lowlevel", "trio")
async def tcp_echo_lowlevel_trio(connections: int, rounds: int, size: int) -> float:
    import trio

    done = echoed = closed = 0
    all_closed = trio.Event()

    async def echo(sock: trio.socket.SocketType) -> None:
        nonlocal echoed, closed
        recv, send = sock.recv, sock.send
        try:
            with sock:
                while data := await recv(RECEIVE_SIZE):
                    await send_all(send, data)
                    echoed += len(data)
        finally:
            closed += 1
            if closed == connections:
                all_closed.set()

    async def serve(listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            sock, _ = await listener.accept()
            nodelay(sock)
            nursery.start_soon(echo, sock)

    async def client(i: int, port: int) -> None:
        nonlocal done
        msg = payload(i, size)
        with trio.socket.socket() as sock:
            nodelay(sock)
            await sock.connect((HOST, port))
            send, recv = sock.send, sock.recv
            for _ in range(rounds):
                await send_all(send, msg)
                got = await receive_exactly(recv, size)
                if got != msg:
                    raise wrong_echo(i, msg, got)
        done += rounds

    with trio.socket.socket() as listener:
        await listener.bind((HOST, 0))
        listener.listen(BACKLOG)
        port = listener.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, listener, nursery)
            start = perf_counter()
            async with trio.open_nursery() as clients:
                for i in range(connections):
                    clients.start_soon(client, i, port)
            elapsed = perf_counter() - start
            await all_closed.wait()
            nursery.cancel_scope.cancel()
    verify(connections, rounds, size, done=done, echoed=echoed, closed=closed)
    return elapsed
