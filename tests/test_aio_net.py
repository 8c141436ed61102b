"""plait.aio.EventLoop's connections and servers: TCP and Unix sockets, TLS, streams,
flow control, closing, and bad arguments (issue 8)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl

import pytest

import plait.aio
from helpers import out_of_fds_dialogue


def run(coro):
    return plait.aio.run(coro)


async def upper_echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
    finally:
        writer.close()


async def exchange(reader, writer, payload):
    writer.write(payload)
    await writer.drain()
    got = bytearray()
    while len(got) < len(payload):
        chunk = await reader.read(65536)
        assert chunk, "connection closed early"
        got += chunk
    return bytes(got)


PAYLOAD = b"plait " * 100_000  # 600 kB: partial writes, pauses, many reads


@pytest.mark.parametrize("use_tls", [False, True], ids=["tcp", "tls"])
def test_streams_echo(tls, use_tls):
    server_ctx, client_ctx = tls if use_tls else (None, None)

    async def main():
        server = await asyncio.start_server(upper_echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost" if use_tls else None
            )
            got = await exchange(reader, writer, PAYLOAD)
            peer = writer.get_extra_info("peername")
            cipher = writer.get_extra_info("cipher")
            writer.close()
            await writer.wait_closed()
        return got == PAYLOAD.upper(), peer[1] == port, cipher is not None

    assert run(main()) == (True, True, use_tls)


def test_start_tls_upgrades_a_connection(tls):
    server_ctx, client_ctx = tls

    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        await upper_echo(reader, writer)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"OK\n"
            await writer.start_tls(client_ctx, server_hostname="localhost")
            got = await exchange(reader, writer, b"secret")
            version = writer.get_extra_info("ssl_object").version()
            writer.close()
            await writer.wait_closed()
        return got, version

    got, version = run(main())
    assert got == b"SECRET" and version.startswith("TLS")


def test_a_failed_handshake_is_an_error_for_the_client_and_the_server_goes_on(tls):
    server_ctx, _ = tls
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        server = await asyncio.start_server(upper_echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            untrusting = ssl.create_default_context()  # does not know the test CA
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=untrusting, server_hostname="localhost"
                )
            _, client_ctx = tls
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            got = await exchange(reader, writer, b"still serving")
            writer.close()
            await writer.wait_closed()
            return got

    assert run(main()) == b"STILL SERVING"


def test_unix_sockets(tmp_path):
    path = str(tmp_path / "plait.sock")

    async def main():
        server = await asyncio.start_unix_server(upper_echo, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            got = await exchange(reader, writer, b"over a unix socket")
            writer.close()
            await writer.wait_closed()
        return got

    assert run(main()) == b"OVER A UNIX SOCKET"
    assert not (tmp_path / "plait.sock").exists()  # removed when the server closed


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.events = []
        self.transport = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.events.append(bytes(data))

    keep_open = False

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.closed.set_result(None)


def test_protocol_callbacks_flow_control_and_half_close():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        transport, protocol = await loop.connect_accepted_socket(Recorder, a)
        transport.set_write_buffer_limits(high=1024)
        assert transport.get_write_buffer_limits() == (256, 1024)
        transport.write(b"x" * 10_000_000)  # b does not read: the kernel buffer fills
        assert "pause" in protocol.events and transport.get_write_buffer_size() > 0
        b.setblocking(False)
        drained = 0
        while drained < 10_000_000:
            try:
                drained += len(b.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0)
        assert protocol.events[-1] == "resume" and transport.get_write_buffer_size() == 0
        protocol.keep_open = True  # eof_received() answers True: a half-close
        b.send(b"to the protocol")
        b.shutdown(socket.SHUT_WR)
        while "eof" not in protocol.events:
            await asyncio.sleep(0)
        assert not transport.is_closing()
        transport.write(b"last words")
        transport.write_eof()
        with pytest.raises(RuntimeError, match="after write_eof"):
            transport.write(b"more")
        b.setblocking(True)
        assert b.recv(100) == b"last words" and b.recv(10) == b""
        transport.close()
        await protocol.closed
        b.close()
        return protocol.events, transport.is_closing()

    events, closing = run(main())
    assert events[0] == "made" and b"to the protocol" in events
    assert events[-1] == ("lost", None) and closing


class Buffered(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffer = bytearray(7)
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        pass

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.got += self.buffer[:nbytes]

    def eof_received(self):
        self.done.set_result(bytes(self.got))

    def connection_lost(self, exc):
        pass


def test_buffered_protocols_receive_into_their_buffer():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            transport, protocol = await loop.connect_accepted_socket(Buffered, a)
            b.sendall(b"into a small buffer, many times")
            b.shutdown(socket.SHUT_WR)
            got = await protocol.done
            transport.close()
            return got

    assert run(main()) == b"into a small buffer, many times"


def test_abort_drops_the_buffer_and_write_after_close_is_ignored():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with b:
            transport, protocol = await loop.connect_accepted_socket(Recorder, a)
            transport.write(b"y" * 10_000_000)
            transport.abort()
            transport.write(b"ignored")
            await protocol.closed
            with pytest.raises(TypeError, match="bytes-like"):
                transport.write("text")
            return protocol.events[-1], transport.get_write_buffer_size()

    assert run(main()) == (("lost", None), 0)


def test_server_lifecycle():
    async def main():
        server = await asyncio.start_server(upper_echo, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving() and server.get_loop() is asyncio.get_running_loop()
        port = server.sockets[0].getsockname()[1]
        await server.start_serving()
        assert server.is_serving()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        server.close()
        assert not server.is_serving() and server.sockets == ()
        waiting = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # a connection is still open
        got = await exchange(reader, writer, b"after close")
        writer.close()
        await writer.wait_closed()
        await waiting
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        return got

    assert run(main()) == b"AFTER CLOSE"


def test_serve_forever_ends_when_cancelled():
    async def main():
        server = await asyncio.start_server(upper_echo, "127.0.0.1", 0)
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already being awaited"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return server.is_serving()

    assert run(main()) is False


def test_connection_errors():
    async def main():
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(ExceptionGroup):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="can not be specified at the same time"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, sock=sock)
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, server_hostname="x")
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful"):
            await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, ssl_handshake_timeout=1
            )
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="Neither host/port nor sock"):
            await loop.create_server(asyncio.Protocol)
        with pytest.raises(ValueError, match="A Stream Socket was expected"):
            with socket.socket(type=socket.SOCK_DGRAM) as udp:
                await loop.create_server(asyncio.Protocol, sock=udp)
        with socket.create_server(("127.0.0.1", 0)) as taken:
            with pytest.raises(OSError, match="error while attempting to bind"):
                await loop.create_server(
                    asyncio.Protocol, "127.0.0.1", taken.getsockname()[1], reuse_address=False
                )

    run(main())


def test_a_failing_protocol_factory_is_reported_and_the_server_goes_on():
    errors = []
    made = []

    def factory():
        if not made:
            made.append("first")
            raise RuntimeError("factory broke")
        return Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            for _ in range(2):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"hi")
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            while len(server._clients) + len(errors) < 1:
                await asyncio.sleep(0)

    run(main())
    assert any(isinstance(ctx.get("exception"), RuntimeError) for ctx in errors), errors


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()
        self.errors = []
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_udp_endpoints():
    async def main():
        loop = asyncio.get_running_loop()
        server, server_proto = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", 0)
        )
        address = server.get_extra_info("sockname")
        client, client_proto = await loop.create_datagram_endpoint(Datagrams, remote_addr=address)
        client.sendto(b"ping")
        data, source = await server_proto.received.get()
        server.sendto(data.upper(), source)
        reply, _ = await client_proto.received.get()
        with pytest.raises(ValueError, match="Invalid address"):
            client.sendto(b"elsewhere", ("127.0.0.1", 9))
        client.close()
        server.close()
        return reply, await client_proto.lost, await server_proto.lost

    assert run(main()) == (b"PING", None, None)


def test_unix_datagram_endpoints(tmp_path):
    path = str(tmp_path / "dgram.sock")

    async def main():
        loop = asyncio.get_running_loop()
        server, server_proto = await loop.create_datagram_endpoint(
            Datagrams, local_addr=path, family=socket.AF_UNIX
        )
        client, _ = await loop.create_datagram_endpoint(
            Datagrams, remote_addr=path, family=socket.AF_UNIX
        )
        client.sendto(b"over unix")
        data, _ = await server_proto.received.get()
        client.close()
        server.close()
        return data

    assert run(main()) == b"over unix"


def test_datagram_endpoint_bad_arguments():
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="no longer supported"):
            await loop.create_datagram_endpoint(
                Datagrams, local_addr=("127.0.0.1", 0), reuse_address=True
            )
        with pytest.raises(ValueError, match="unexpected address family"):
            await loop.create_datagram_endpoint(Datagrams)
        with pytest.raises(TypeError, match="2-tuple is expected"):
            await loop.create_datagram_endpoint(Datagrams, local_addr="127.0.0.1")
        with socket.socket() as tcp:
            with pytest.raises(ValueError, match="A datagram socket was expected"):
                await loop.create_datagram_endpoint(Datagrams, sock=tcp)
        with socket.socket(type=socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="can not be used when sock is specified"):
                await loop.create_datagram_endpoint(
                    Datagrams, sock=udp, local_addr=("127.0.0.1", 0)
                )

    run(main())


@pytest.mark.parametrize("use_tls", [False, True], ids=["native", "tls-fallback"])
def test_loop_sendfile(tls, tmp_path, use_tls):
    server_ctx, client_ctx = tls if use_tls else (None, None)
    path = tmp_path / "payload.bin"
    content = bytes(range(256)) * 8192  # 2 MiB
    path.write_bytes(content)
    received = []

    async def collect(reader, writer):
        received.append(await reader.read())
        writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(collect, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            transport, _ = await loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost" if use_tls else None,
            )
            transport.write(b"header:")
            with open(path, "rb") as file:
                if use_tls:
                    with pytest.raises(asyncio.SendfileNotAvailableError):
                        await loop.sendfile(transport, file, fallback=False)
                sent = await loop.sendfile(transport, file, 100, 1_000_000)
                position = file.tell()
            transport.write(b":trailer")
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            while not received:
                await asyncio.sleep(0.001)
            transport.close()
        return sent, position

    assert run(main()) == (1_000_000, 1_000_100)
    assert received[0] == b"header:" + content[100:1_000_100] + b":trailer"


def test_a_local_address_in_use_keeps_its_errno():
    async def main():
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as target, socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError) as info:
                await loop.create_connection(
                    asyncio.Protocol,
                    *target.getsockname(),
                    local_addr=taken.getsockname(),
                )
            return info.value.errno

    assert run(main()) == errno.EADDRINUSE


def test_datagram_transports_are_transports():
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        transport.close()
        return isinstance(transport, asyncio.Transport | asyncio.DatagramTransport)

    assert run(main()) is True


def test_happy_eyeballs_starts_the_next_address_when_the_first_is_slow():
    """The first address never answers (a listener whose backlog is full drops the
    SYN); with happy_eyeballs_delay the second attempt starts after the delay and
    wins, and the first is cancelled."""
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(0)
    filler = socket.create_connection(slow.getsockname())  # fills the backlog

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        good = server.sockets[0].getsockname()
        infos = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", slow.getsockname()),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", good),
        ]

        async def getaddrinfo(*args, **kwargs):
            return infos

        loop.getaddrinfo = getaddrinfo  # the name resolves to both addresses
        try:
            transport, _ = await loop.create_connection(
                asyncio.Protocol, "both.example", 0, happy_eyeballs_delay=0.05
            )
            peer = transport.get_extra_info("peername")
            transport.close()
            # without happy eyeballs the attempts are one after the other: stuck
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    loop.create_connection(asyncio.Protocol, "both.example", 0), 0.2
                )
            return peer, good
        finally:
            server.close()
            await server.wait_closed()

    try:
        peer, good = run(main())
    finally:
        filler.close()
        slow.close()
    assert peer == good


def test_happy_eyeballs_reports_every_failure():
    async def main():
        loop = asyncio.get_running_loop()
        ports = []
        for _ in range(2):  # two ports with nothing listening: refused at once
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
            probe.close()
        infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)) for p in ports]

        async def getaddrinfo(*args, **kwargs):
            return infos

        loop.getaddrinfo = getaddrinfo
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(
                asyncio.Protocol, "none.example", 0, happy_eyeballs_delay=0.05, all_errors=True
            )
        return [type(e) for e in info.value.exceptions]

    assert run(main()) == [ConnectionRefusedError, ConnectionRefusedError]


AIO_CHILD_SERVER = r"""
import asyncio, os, resource, sys
import plait.aio

async def main():
    loop = asyncio.get_running_loop()
    hogs = []
    recovered = loop.create_future()

    def on_error(loop, context):
        if context["message"] == "socket.accept() out of system resource":
            print("BACKOFF", flush=True)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)

    async def upper(reader, writer):
        data = await reader.read(100)
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        if not recovered.done():
            recovered.set_result(None)

    server = await asyncio.start_server(upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    try:
        while True:
            hogs.append(open(os.devnull))
    except OSError:
        pass
    print("EXHAUSTED", port, flush=True)
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    assert (await commands.readline()).strip() == b"free"
    for hog in hogs:
        hog.close()
    print("FREED", flush=True)
    await recovered
    print("RECOVERED", flush=True)
    assert (await commands.readline()).strip() == b"stop"
    server.close()
    await server.wait_closed()
    print("EXITED", flush=True)

plait.aio.run(main())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_server_out_of_file_descriptors_backs_off_and_keeps_serving(tmp_path):
    """accept() fails with EMFILE: the exception handler hears of it, the server stops
    accepting for a moment, and once descriptors are free it serves the clients that
    waited in the backlog and new ones."""
    out_of_fds_dialogue(AIO_CHILD_SERVER, tmp_path, waiting_clients=1)
