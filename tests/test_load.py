"""The bounded load test: 10,000 concurrent TCP connections over 127.0.0.1, each doing
10 request/response round-trips of 100 bytes with a plait ``serve_tcp`` server.

The server runs in a child Python process, the clients in this one: 10,000 connections
need 20,000 descriptors in all, and one process may not be allowed that many. Each
side raises its soft RLIMIT_NOFILE as far as needed (up to the hard limit). The child
is driven over its stdin/stdout, one line per step; every wait has a generous bound so
that a hang fails the test instead of stalling the suite.

Connection attempts are limited to 256 in flight so that the listen backlog never
overflows (an overflow only costs a one-second SYN retransmit, but that is time). All
connections are open at once before any round-trip starts and stay open until every
client has finished (then each says "bye"). The server closes each connection first,
so the TIME_WAIT states sit on the server's port rather than on 10,000 of the clients'
ephemeral ports.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import plait
from helpers import ChildLines, child_env

CONNECTIONS = 10_000
ROUND_TRIPS = 10
SIZE = 100
SPARE_FDS = 200

CHILD_SERVER = r"""
import os, resource, sys
import plait
from plait.lowlevel import wait_readable

ROUND_TRIPS, SIZE = int(sys.argv[1]), int(sys.argv[2])
stats = {"open": 0, "peak": 0, "served": 0, "errors": 0}

async def handler(stream):
    stats["open"] += 1
    stats["peak"] = max(stats["peak"], stats["open"])
    try:
        for _ in range(ROUND_TRIPS):
            await stream.send_all(await stream.receive_exactly(SIZE))
        # The client says goodbye once every client is done: until then all the
        # connections are open at once. Then this side closes first.
        assert await stream.receive_exactly(4) == b"bye\n"
        stats["served"] += 1
    except Exception as exc:
        stats["errors"] += 1
        sys.stderr.write("handler error: %r\n" % (exc,))
    finally:
        stats["open"] -= 1

async def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    async with plait.TaskGroup() as tg:
        listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
        print("PORT", listeners[0].port, flush=True)
        await wait_readable(0)
        os.read(0, 100)
        tg.cancel_scope.cancel()
    print("STATS", stats["peak"], stats["served"], stats["errors"], flush=True)

plait.run(main)
"""


@pytest.fixture
def fd_limit() -> Iterator[None]:
    """Enough descriptors for this process's side of the connections; restored after."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    need = CONNECTIONS + SPARE_FDS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(
            f"{CONNECTIONS} connections need {need} fds per process; the hard limit is {hard}"
        )
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


async def clients(port: int) -> int:
    connecting = plait.CapacityLimiter(256)
    all_open, all_done = plait.Event(), plait.Event()
    counts = {"open": 0, "done": 0}

    async def client(i: int) -> None:
        async with connecting:
            stream = await plait.open_tcp_stream("127.0.0.1", port)
        async with stream:
            counts["open"] += 1
            if counts["open"] == CONNECTIONS:
                all_open.set()
            await all_open.wait()
            for r in range(ROUND_TRIPS):
                request = (b"%d/%d " % (i, r)).ljust(SIZE, b".")
                await stream.send_all(request)
                assert await stream.receive_exactly(SIZE) == request
            counts["done"] += 1
            if counts["done"] == CONNECTIONS:
                all_done.set()
            await all_done.wait()
            await stream.send_all(b"bye\n")
            assert await stream.receive_some() == b"", "the server closes first"

    async with plait.TaskGroup() as tg:
        for i in range(CONNECTIONS):
            tg.spawn(client, i)
    return counts["done"]


@pytest.mark.timeout(120)
def test_10000_connections_10_round_trips_each(fd_limit: None, tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_SERVER, str(ROUND_TRIPS), str(SIZE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        lines = ChildLines(proc)
        word, port = lines.next().split()
        assert word == "PORT"
        assert plait.run(clients, int(port)) == CONNECTIONS
        proc.stdin.write(b"stop\n")
        proc.stdin.flush()
        word, peak, served, errors = lines.next().split()
        assert word == "STATS"
        assert (int(peak), int(served), int(errors)) == (CONNECTIONS, CONNECTIONS, 0)
        assert proc.wait(30) == 0
    except BaseException:
        proc.kill()
        proc.wait()
        print(stderr_path.read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    finally:
        proc.stdin.close()
        proc.stdout.close()
