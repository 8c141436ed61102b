"""An echo server and its clients, in one program.

The server answers each line with the same line in upper case. ``tg.start`` returns
once the server is listening, with its listeners: that is how the clients learn the
port the OS picked (port 0). Each client sends a few lines, reads the answers with
``receive_until`` and closes; cancelling the task group stops the server, and every
socket is closed on the way out.

Run it: ``python examples/echo_server.py``
"""

from __future__ import annotations

import plait


async def handle(stream: plait.SocketStream) -> None:
    """One connection: runs in its own task; serve_tcp closes the stream afterwards."""
    while True:
        try:
            line = await stream.receive_until(b"\n", max_bytes=1024)
        except plait.EndOfStream:
            return  # the client closed its side
        await stream.send_all(line.upper())


async def client(port: int, name: str) -> None:
    async with await plait.open_tcp_stream("127.0.0.1", port) as stream:
        for word in ("hello", "from", name):
            await stream.send_all(f"{word}\n".encode())
            answer = await stream.receive_until(b"\n")
            print(f"{name}: sent {word!r}, got {answer.decode().strip()!r}")


async def main() -> None:
    async with plait.TaskGroup() as tg:
        listeners = await tg.start(plait.serve_tcp, handle, 0, "127.0.0.1")
        port = listeners[0].port
        print(f"echo server listening on 127.0.0.1:{port}")
        async with plait.TaskGroup() as clients:
            for name in ("ada", "grace", "barbara"):
                clients.spawn(client, port, name)
        tg.cancel_scope.cancel()  # the clients are done: stop the server
    print("server stopped")


if __name__ == "__main__":
    plait.run(main)
