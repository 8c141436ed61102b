"""The reactor, on both backends (epoll and the selectors fallback), through the loop."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import plait
from plait._core import _reactor
from plait._core._reactor import READABLE, WRITABLE, Reactor
from plait.lowlevel import wait_readable, wait_writable


@pytest.fixture(params=["epoll", "selectors"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "selectors":
        monkeypatch.setattr(_reactor, "_HAS_EPOLL", False)
    elif not _reactor._HAS_EPOLL:
        pytest.skip("no epoll on this platform")
    return str(request.param)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class TestReactorDirect:
    def test_reader_and_writer_reported_with_direction(self, backend: str, pair) -> None:
        a, b = pair
        r = Reactor()
        try:
            r.set(a, READABLE, "reader")
            r.set(a, WRITABLE, "writer")
            assert r.poll(0) == [("writer", a.fileno(), WRITABLE)]
            b.send(b"x")
            got = sorted(r.poll(0))
            assert got == [("reader", a.fileno(), READABLE), ("writer", a.fileno(), WRITABLE)]
        finally:
            r.close()

    def test_dropped_interest_is_narrowed_lazily(self, backend: str, pair) -> None:
        a, b = pair
        r = Reactor()
        try:
            r.set(a, READABLE, "task")
            assert r.clear(a, READABLE) == "task"
            b.send(b"x")
            # The OS still reports the fd once; nobody wants it, so nothing is returned
            # and the registration is dropped, so the next poll is quiet.
            assert r.poll(0) == []
            assert r.raw_events == 1
            assert r.poll(0) == []
            assert r.raw_events == 0
        finally:
            r.close()

    def test_eager_clear_unregisters_now(self, backend: str, pair) -> None:
        a, b = pair
        r = Reactor()
        try:
            r.set(a, READABLE, "cb")
            r.clear(a, READABLE, eager=True)
            b.send(b"x")
            assert r.poll(0) == []
            assert r.raw_events == 0
        finally:
            r.close()

    def test_regular_file_is_always_ready(self, backend: str, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"data")
        with path.open("rb") as f:
            r = Reactor()
            try:
                r.set(f, READABLE, "file")
                assert r.poll(10.0) == [("file", f.fileno(), READABLE)]
                r.clear(f, READABLE)
                assert r.poll(0) == []
            finally:
                r.close()

    def test_bad_fds(self, backend: str) -> None:
        r = Reactor()
        try:
            with pytest.raises(ValueError, match="file descriptor"):
                r.set(-1, READABLE, "x")
            with pytest.raises(TypeError, match="fileno"):
                r.set(object(), READABLE, "x")
            assert r.get(12345, READABLE) is None
            assert r.clear(12345, READABLE) is None
        finally:
            r.close()


class TestThroughTheLoop:
    def test_tasks_wait_for_readiness(self, backend: str, pair) -> None:
        a, b = pair

        async def main() -> list[bytes]:
            got: list[bytes] = []

            async def reader() -> None:
                for _ in range(3):
                    await wait_readable(a)
                    got.append(a.recv(10))

            async with plait.TaskGroup() as tg:
                tg.spawn(reader)
                for word in (b"one", b"two", b"six"):
                    await plait.testing.wait_all_tasks_blocked()
                    await wait_writable(b)
                    b.send(word)
            return got

        assert plait.run(main) == [b"one", b"two", b"six"]

    def test_second_waiter_on_same_fd_is_busy(self, backend: str, pair) -> None:
        a, _ = pair

        async def main() -> str:
            async with plait.TaskGroup() as tg:
                tg.spawn(wait_readable, a)
                await plait.testing.wait_all_tasks_blocked()
                with pytest.raises(plait.BusyResourceError, match="already waiting") as info:
                    await wait_readable(a)
                tg.cancel_scope.cancel()
            return str(info.value)

        assert "only one task" in plait.run(main)

    def test_callback_reader_on_reused_fd_number(self, backend: str) -> None:
        loop = plait.Loop()
        got: list[bytes] = []
        try:
            a, b = socket.socketpair()
            fd = a.fileno()
            loop.add_reader(a, lambda: got.append(a.recv(10)) or loop.stop())
            b.send(b"one")
            loop.run()
            assert loop.remove_reader(a)
            a.close()
            b.close()
            c, d = socket.socketpair()
            if c.fileno() != fd:  # pragma: no cover - depends on the OS handing it back
                c, d = d, c
            loop.add_reader(c, lambda: got.append(c.recv(10)) or loop.stop())
            d.send(b"two")
            loop.run()
            c.close()
            d.close()
        finally:
            loop.close()
        assert got == [b"one", b"two"]

    def test_pipe_writer_callback(self, backend: str) -> None:
        r, w = os.pipe()
        loop = plait.Loop()
        seen: list[str] = []
        try:

            def writable() -> None:
                seen.append("w")
                loop.remove_writer(w)

            loop.add_writer(w, writable)
            loop.run()
        finally:
            loop.close()
            os.close(r)
            os.close(w)
        assert seen == ["w"]
