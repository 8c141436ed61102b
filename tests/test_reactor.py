"""The reactor, on both backends (epoll and the selectors fallback), through the loop."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import plait
from plait._core import _reactor
from plait._core._reactor import READABLE, WRITABLE, Reactor
from plait.lowlevel import wait_readable, wait_writable
from plait.testing import MockClock, wait_all_tasks_blocked


@pytest.fixture(params=["epoll", "selectors"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "selectors":
        monkeypatch.setattr(_reactor, "_HAS_EPOLL", False)
    elif not _reactor._HAS_EPOLL:
        pytest.skip("no epoll on this platform")
    return str(request.param)


class TestReactorDirect:
    def test_reader_and_writer_reported_with_direction(self, backend: str, sockpair) -> None:
        a, b = sockpair
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

    def test_dropped_interest_is_narrowed_lazily(self, backend: str, sockpair) -> None:
        a, b = sockpair
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

    def test_eager_clear_unregisters_now(self, backend: str, sockpair) -> None:
        a, b = sockpair
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
    def test_tasks_wait_for_readiness(self, backend: str, sockpair) -> None:
        a, b = sockpair

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

    def test_second_waiter_on_same_fd_is_busy(self, backend: str, sockpair) -> None:
        a, _ = sockpair

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


def socketpair_on(fd: int) -> tuple[socket.socket, socket.socket]:
    """A new socketpair whose first socket has the number ``fd`` (closed before)."""
    c, d = socket.socketpair()
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(fileno=fd)
    c.setblocking(False)
    d.setblocking(False)
    return c, d


class TestRegressions:
    def test_wait_on_a_reused_fd_number_after_a_wait(self, backend: str) -> None:
        # The lazily kept registration of a closed fd must not make a wait on a new fd
        # with the same number look registered already (the OS dropped it on close).
        async def main() -> bytes:
            a, b = socket.socketpair()
            fd = a.fileno()
            b.send(b"x")
            await wait_readable(a)
            a.close()
            b.close()
            c, d = socketpair_on(fd)
            with c, d:
                d.send(b"y")
                # Virtual time: if the wait never ends, the timeout fires at once.
                with plait.fail_after(10):
                    await wait_readable(c)
                return c.recv(10)

        assert plait.run(main, clock=MockClock(autojump_threshold=0)) == b"y"

    def test_regular_file_does_not_leave_a_reused_number_always_ready(
        self, backend: str, tmp_path: Path
    ) -> None:
        async def main() -> list[object]:
            log: list[object] = []
            f = (tmp_path / "f").open("w+b")
            fd = f.fileno()
            await wait_readable(f)  # a regular file: always ready
            f.close()
            c, d = socketpair_on(fd)

            async def sender() -> None:
                await wait_all_tasks_blocked()
                log.append("all blocked")
                d.send(b"data")

            with c, d:
                async with plait.TaskGroup() as tg:
                    tg.spawn(sender)
                    await wait_readable(c)  # in the same step as the close
                    try:
                        log.append(c.recv(10))
                    except BlockingIOError:
                        log.append("spurious wake-up of an idle socket")
            return log

        assert plait.run(main, clock=MockClock(autojump_threshold=0)) == [
            "all blocked",
            b"data",
        ]

    def test_wait_all_tasks_blocked_cushion_after_a_regular_file_wait(
        self, backend: str, tmp_path: Path
    ) -> None:
        # A stale always-ready entry used to make every poll return at once, and the
        # cushion was then taken as passed at once. Only a lower bound is asserted.
        cushion = 0.05

        async def main() -> float:
            with (tmp_path / "f").open("w+b") as f:
                await wait_readable(f)
                start = time.monotonic()
                await wait_all_tasks_blocked(cushion)
                return time.monotonic() - start

        assert plait.run(main) >= cushion
