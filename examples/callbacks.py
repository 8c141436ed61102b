"""plait.Loop without coroutines: an echo server and client over a socket pair, written
only with callbacks, timers and fd readiness (the style of a classic reactor program).

Run: .venv/bin/python examples/callbacks.py
"""

from __future__ import annotations

import socket

import plait


def main() -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    replies: list[bytes] = []

    with plait.Loop() as loop:

        def on_server_readable() -> None:
            data = server.recv(4096)
            if not data:  # the client closed: stop watching and close our side
                loop.remove_reader(server)
                server.close()
                return
            server.send(data.upper())

        def on_client_readable() -> None:
            replies.append(client.recv(4096))
            print(f"[{loop.time() - start:5.3f}s] client got {replies[-1]!r}")
            if len(replies) == 3:
                loop.remove_reader(client)
                client.close()

        def send(message: bytes) -> None:
            client.send(message)

        start = loop.time()
        loop.add_reader(server, on_server_readable)
        loop.add_reader(client, on_client_readable)
        for i, word in enumerate([b"one", b"two", b"three"]):
            loop.call_later(0.01 * (i + 1), send, word)
        timeout = loop.call_later(5.0, loop.stop)  # a safety net, cancelled below
        loop.call_later(0.05, timeout.cancel)
        loop.run()  # returns when nothing is scheduled or watched any more

    assert replies == [b"ONE", b"TWO", b"THREE"], replies
    print("all replies received; the loop ran out of work and returned")


if __name__ == "__main__":
    main()
