"""plait.Loop used as a plain event loop, without coroutines (DESIGN.md section 5,
"Running"): callbacks, timers, handles, thread-safe calls, fd readiness, the exception
handler and the loop's lifecycle. Real sockets, pipes, files and threads; virtual time
(MockClock) wherever an order in time is asserted."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plait
from plait.testing import MockClock

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def loop() -> Iterator[plait.Loop]:
    with plait.Loop() as loop:  # closed at the end: a loop owns a wake-up socketpair
        yield loop


@pytest.fixture
def vloop() -> Iterator[plait.Loop]:
    """A loop on virtual time whose timers fire without real waiting."""
    with plait.Loop(clock=MockClock(autojump_threshold=0)) as loop:
        yield loop


class Errors:
    """An exception handler that records what it is given (a fake, not a mock)."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: plait.Loop, context: dict[str, Any]) -> None:
        self.contexts.append(context)

    @property
    def exceptions(self) -> list[BaseException]:
        return [c["exception"] for c in self.contexts]


class TestCallSoon:
    def test_callbacks_run_in_fifo_order_with_their_args(self, loop: plait.Loop) -> None:
        log: list[tuple[int, str]] = []
        for i in range(100):
            loop.call_soon(lambda i, s: log.append((i, s)), i, f"s{i}")
        loop.run()
        assert log == [(i, f"s{i}") for i in range(100)]

    def test_callback_scheduled_from_a_callback_runs_after_the_queued_ones(
        self, loop: plait.Loop
    ) -> None:
        log: list[str] = []

        def first() -> None:
            log.append("first")
            loop.call_soon(log.append, "nested")

        loop.call_soon(first)
        loop.call_soon(log.append, "second")
        loop.run()
        assert log == ["first", "second", "nested"]


class TestTimers:
    def test_call_later_fires_by_time_then_by_scheduling_order(self, vloop: plait.Loop) -> None:
        log: list[tuple[float, str]] = []

        def rec(name: str) -> None:
            log.append((vloop.time(), name))

        for delay, name in [(3, "c"), (1, "a1"), (2, "b"), (1, "a2"), (0, "z"), (1, "a3")]:
            vloop.call_later(delay, rec, name)
        vloop.run()
        assert log == [(0, "z"), (1, "a1"), (1, "a2"), (1, "a3"), (2, "b"), (3, "c")]

    def test_call_at_uses_loop_time_and_mixes_with_call_later(self, vloop: plait.Loop) -> None:
        log: list[str] = []
        vloop.call_at(vloop.time() + 5, log.append, "at5")
        vloop.call_later(5, log.append, "later5")
        h = vloop.call_at(vloop.time() + 2, log.append, "at2")
        assert h.when() == vloop.time() + 2
        vloop.call_at(-100.0, log.append, "past")
        vloop.call_at(math.inf, log.append, "never")  # and does not keep run() alive
        vloop.run()
        assert log == ["past", "at2", "at5", "later5"]
        assert vloop.time() == 5


class TestHandles:
    def test_cancel_before_run_and_after_firing(self, vloop: plait.Loop) -> None:
        log: list[str] = []
        h1 = vloop.call_soon(log.append, "soon")
        h2 = vloop.call_later(1, log.append, "later")
        fired = [vloop.call_soon(log.append, "kept"), vloop.call_later(2, log.append, "kept2")]
        h1.cancel()
        h2.cancel()
        h2.cancel()  # idempotent
        assert h1.cancelled() and h2.cancelled()
        vloop.run()
        for h in fired:  # harmless once fired
            h.cancel()
        vloop.run()
        assert log == ["kept", "kept2"]

    def test_cancel_from_another_callback(self, vloop: plait.Loop) -> None:
        log: list[str] = []
        victims: list[plait.Handle] = []

        def cancel_victims() -> None:
            for h in victims:
                h.cancel()

        vloop.call_soon(cancel_victims)
        victims.append(vloop.call_soon(log.append, "queued in the same batch"))
        victims.append(vloop.call_later(2, log.append, "timer"))
        vloop.call_later(3, log.append, "kept")
        vloop.run()
        assert log == ["kept"]

    def test_a_cancelled_long_timer_does_not_keep_run_alive(self, loop: plait.Loop) -> None:
        # Real clock: if the cancelled timer still counted, run() would block for an hour.
        h = loop.call_later(3600, pytest.fail, "cancelled timer fired")
        loop.call_soon(h.cancel)
        loop.run()
        assert h.cancelled()


class TestThreadsafe:
    @pytest.mark.timeout(30)
    def test_many_threads_many_calls_none_lost_order_kept_per_thread(
        self, loop: plait.Loop
    ) -> None:
        nthreads, ncalls = 8, 2000
        got: dict[int, list[int]] = {i: [] for i in range(nthreads)}
        remaining = [nthreads * ncalls]
        keepalive = loop.call_later(3600, pytest.fail, "keep-alive timer fired")

        def on_call(tid: int, seq: int) -> None:
            got[tid].append(seq)
            remaining[0] -= 1
            if remaining[0] == 0:
                keepalive.cancel()  # nothing left: run() returns by itself

        def worker(tid: int) -> None:
            for seq in range(ncalls):
                loop.call_soon_threadsafe(on_call, tid, seq)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
        loop.call_soon(lambda: [t.start() for t in threads])
        loop.run()
        for t in threads:
            t.join()
        assert got == {i: list(range(ncalls)) for i in range(nthreads)}

    @pytest.mark.timeout(30)
    def test_concurrent_round_trips_never_lose_a_wakeup(self, loop: plait.Loop) -> None:
        # Each thread sends a call and waits until the loop ran it, many times; several
        # threads do so at once, so sends race with the loop draining the wake-up fd. A
        # lost wake-up leaves the loop blocked in its poll (the timeout fails the test).
        nthreads, rounds = 6, 1500
        acks = [threading.Event() for _ in range(nthreads)]
        stop_threads = threading.Event()
        finished = [0]
        keepalive = loop.call_later(3600, pytest.fail, "keep-alive timer fired")

        def ack(tid: int) -> None:
            acks[tid].set()

        def done() -> None:
            finished[0] += 1
            if finished[0] == nthreads:
                keepalive.cancel()

        def worker(tid: int) -> None:
            for _ in range(rounds):
                acks[tid].clear()
                loop.call_soon_threadsafe(ack, tid)
                acks[tid].wait()
                if stop_threads.is_set():
                    return
            loop.call_soon_threadsafe(done)

        threads = [
            threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nthreads)
        ]
        loop.call_soon(lambda: [t.start() for t in threads])
        try:
            loop.run()
        finally:
            stop_threads.set()
            for ev in acks:
                ev.set()
            for t in threads:
                t.join()
        assert finished == [nthreads]

    @pytest.mark.timeout(10)
    @pytest.mark.parametrize("how", ["call_soon_threadsafe", "stop"])
    def test_wakes_a_loop_blocked_in_a_long_poll(self, loop: plait.Loop, how: str) -> None:
        log: list[str] = []
        timer = loop.call_later(30, log.append, "30 s timer fired")

        def from_thread() -> None:
            time.sleep(0.002)  # let the loop enter its (30 s) poll
            if how == "stop":
                loop.stop()
            else:
                loop.call_soon_threadsafe(lambda: (log.append("stop"), loop.stop()))

        t = threading.Thread(target=from_thread)
        loop.call_soon(t.start)
        loop.run()
        t.join()
        assert log == ([] if how == "stop" else ["stop"])
        assert loop.is_running() is False
        timer.cancel()


class TestFdCallbacks:
    def test_reader_fires_when_data_arrives(self, loop: plait.Loop, sockpair: Pair) -> None:
        a, b = sockpair
        got: list[bytes] = []

        def on_readable(sock: socket.socket) -> None:
            got.append(sock.recv(100))
            assert loop.remove_reader(sock) is True

        loop.add_reader(a, on_readable, a)
        loop.call_soon(b.send, b"hello")
        loop.run()
        assert got == [b"hello"]
        assert loop.remove_reader(a) is False

    def test_readers_are_level_triggered(self, loop: plait.Loop, sockpair: Pair) -> None:
        a, b = sockpair
        b.send(b"x")
        calls = [0]

        def on_readable() -> None:  # never reads: the fd stays readable
            calls[0] += 1
            if calls[0] == 3:
                loop.remove_reader(a.fileno())

        loop.add_reader(a.fileno(), on_readable)
        loop.run()
        assert calls == [3]
        assert a.recv(10) == b"x"

    def test_re_adding_replaces_the_callback(self, loop: plait.Loop, sockpair: Pair) -> None:
        a, b = sockpair
        log: list[str] = []
        loop.add_reader(a, log.append, "first")
        loop.add_reader(a, lambda: (log.append("second"), loop.remove_reader(a)))
        b.send(b"x")
        loop.run()  # returns: the replaced reader is not counted twice
        assert log == ["second"]
        assert loop.remove_reader(a) is False

    def test_pipe_reader_and_writer(self, loop: plait.Loop) -> None:
        r, w = os.pipe()
        log: list[object] = []
        try:

            def on_writable() -> None:
                os.write(w, b"ping")
                log.append("wrote")
                log.append((loop.remove_writer(w), loop.remove_writer(w)))

            def on_readable() -> None:
                log.append(os.read(r, 100))
                loop.remove_reader(r)

            loop.add_reader(r, on_readable)
            loop.add_writer(w, on_writable)
            loop.run()
        finally:
            os.close(r)
            os.close(w)
        assert log == ["wrote", (True, False), b"ping"]

    def test_regular_file_is_always_ready(self, loop: plait.Loop, tmp_path: Path) -> None:
        calls = {"r": 0, "w": 0}
        with open(tmp_path / "f", "w+b") as f:

            def ready(which: str, remove: Callable[[Any], bool]) -> None:
                calls[which] += 1
                if calls[which] == 3:
                    assert remove(f) is True

            loop.add_reader(f, ready, "r", loop.remove_reader)
            loop.add_writer(f.fileno(), ready, "w", loop.remove_writer)
            loop.run()
        assert calls == {"r": 3, "w": 3}

    def test_new_fd_reusing_the_number_of_a_removed_and_closed_one(
        self, vloop: plait.Loop
    ) -> None:
        # remove_reader, close the fd, and get a new fd with the same number: a reader
        # added on the new fd must fire (the OS forgot the old registration on close).
        log: list[object] = []
        r, w = os.pipe()

        def read_once(fd: int) -> None:
            log.append(os.read(fd, 100))
            vloop.remove_reader(fd)

        vloop.add_reader(r, read_once, r)
        os.write(w, b"one")
        vloop.run()
        os.close(r)
        os.close(w)
        r2, w2 = os.pipe()
        if r2 != r:
            os.dup2(r2, r)
            os.close(r2)
        try:
            os.write(w2, b"two")
            vloop.add_reader(r, read_once, r)
            # Virtual time: if the reader never fires, autojump reaches this timer.
            vloop.call_later(1, lambda: (log.append("reader never fired"), vloop.remove_reader(r)))
            vloop.run()
        finally:
            os.close(r)
            os.close(w2)
        assert log[:2] == [b"one", b"two"]


class TestRun:
    def test_time_follows_the_clock(self, loop: plait.Loop) -> None:
        clock = MockClock()
        with plait.Loop(clock=clock) as vloop:
            assert vloop.time() == clock.current_time() == 0
            clock.jump(7.5)
            assert vloop.time() == 7.5
        before, now = time.monotonic(), loop.time()
        assert before <= now <= time.monotonic()

    def test_run_returns_when_nothing_is_scheduled(self, loop: plait.Loop) -> None:
        loop.run()
        loop.run()
        assert not loop.is_running()

    def test_stop_from_a_callback_finishes_the_batch_then_returns(self, loop: plait.Loop) -> None:
        log: list[str] = []
        states: list[bool] = []
        loop.call_soon(lambda: states.append(loop.is_running()))
        loop.call_soon(loop.stop)
        loop.call_soon(lambda: (log.append("same batch"), loop.call_soon(log.append, "next")))
        loop.run()
        assert log == ["same batch"] and states == [True]
        loop.run()  # the stop request was consumed; the rest runs now
        assert log == ["same batch", "next"]

    @pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
    def test_keyboard_interrupt_from_a_callback_propagates_out_of_run(
        self, loop: plait.Loop, exc_type: type[BaseException]
    ) -> None:
        log: list[str] = []
        errors = Errors()
        loop.set_exception_handler(errors)

        def interrupt() -> None:
            raise exc_type

        loop.call_soon(interrupt)
        loop.call_soon(log.append, "after")
        with pytest.raises(exc_type):
            loop.run()
        assert not loop.is_running() and errors.contexts == []
        loop.run()
        assert log == ["after"]


class TestRunUntilComplete:
    def test_returns_the_result_or_raises_the_error(self, loop: plait.Loop) -> None:
        async def add(a: int, b: int) -> int:
            await plait.checkpoint()
            return a + b

        async def fail() -> None:
            raise LookupError("main failed")

        assert loop.run_until_complete(add, 2, 3) == 5
        with pytest.raises(LookupError, match="main failed"):
            loop.run_until_complete(fail)

    def test_callbacks_and_timers_interleave_with_the_coroutine(self, vloop: plait.Loop) -> None:
        log: list[str] = []

        def rec(what: str) -> None:
            log.append(f"{what}@{vloop.time():g}")

        async def main() -> str:
            rec("main-start")
            vloop.call_later(2, rec, "timer")
            vloop.call_soon(rec, "soon-from-main")
            await plait.sleep(1)
            rec("main-woke")
            await plait.sleep(2)
            rec("main-end")
            return "done"

        vloop.call_soon(rec, "soon-before")
        assert vloop.run_until_complete(main) == "done"
        expected = "soon-before@0 main-start@0 soon-from-main@0 main-woke@1 timer@2 main-end@3"
        assert log == expected.split()

    def test_timers_left_over_run_later_with_run(self, vloop: plait.Loop) -> None:
        log: list[float] = []

        async def main() -> None:
            vloop.call_later(10, lambda: log.append(vloop.time()))
            await plait.sleep(1)

        vloop.run_until_complete(main)
        assert log == []
        vloop.run()
        assert log == [10]


USES_AFTER_CLOSE: dict[str, Callable[[plait.Loop], object]] = {
    "run": lambda lp: lp.run(),
    "run_until_complete": lambda lp: lp.run_until_complete(plait.checkpoint),
    "call_soon": lambda lp: lp.call_soon(print),
    "call_later": lambda lp: lp.call_later(1, print),
    "call_at": lambda lp: lp.call_at(1, print),
    "call_soon_threadsafe": lambda lp: lp.call_soon_threadsafe(print),
    "add_reader": lambda lp: lp.add_reader(0, print),
    "add_writer": lambda lp: lp.add_writer(1, print),
}


class TestClose:
    def test_close_is_idempotent_and_the_context_manager_closes(self) -> None:
        with plait.Loop() as loop:
            assert not loop.is_closed()
        assert loop.is_closed()
        loop.close()
        with pytest.raises(ZeroDivisionError), plait.Loop() as loop2:
            1 / 0
        assert loop2.is_closed()

    def test_close_while_running_is_an_error(self, loop: plait.Loop) -> None:
        errors = Errors()
        loop.set_exception_handler(errors)
        loop.call_soon(loop.close)
        loop.run()
        assert [type(e) for e in errors.exceptions] == [RuntimeError]
        assert "running" in str(errors.exceptions[0])
        assert not loop.is_closed()

        async def main() -> None:
            loop.close()

        with pytest.raises(RuntimeError, match="running"):
            loop.run_until_complete(main)

    @pytest.mark.parametrize("use", USES_AFTER_CLOSE.values(), ids=USES_AFTER_CLOSE.keys())
    def test_use_after_close_is_an_error(self, use: Callable[[plait.Loop], object]) -> None:
        loop = plait.Loop()
        loop.close()
        with pytest.raises(RuntimeError, match="closed"):
            use(loop)


class TestExceptionHandler:
    def test_raising_callback_is_reported_and_the_loop_goes_on(
        self, vloop: plait.Loop, sockpair: Pair
    ) -> None:
        errors = Errors()
        vloop.set_exception_handler(errors)
        assert vloop.get_exception_handler() is errors
        log: list[str] = []
        boom = ValueError("boom")

        def bad() -> None:
            raise boom

        h1 = vloop.call_soon(bad)
        vloop.call_soon(log.append, "soon")
        h2 = vloop.call_later(1, bad)
        vloop.call_later(2, log.append, "later")
        vloop.run()
        assert log == ["soon", "later"]
        assert [c["exception"] for c in errors.contexts] == [boom, boom]
        assert [c["handle"] for c in errors.contexts] == [h1, h2]
        assert all(isinstance(c["message"], str) and c["message"] for c in errors.contexts)

        # A reader that raises stays registered (level-triggered: it is called again).
        a, b = sockpair
        calls: list[int] = []

        def reader() -> None:
            calls.append(len(calls))
            if len(calls) == 1:
                bad()
            vloop.remove_reader(a)

        vloop.add_reader(a, reader)
        b.send(b"x")
        vloop.run()
        assert calls == [0, 1]
        assert errors.exceptions == [boom, boom, boom]

    def test_default_handler_logs_to_the_plait_logger(
        self, loop: plait.Loop, caplog: pytest.LogCaptureFixture
    ) -> None:
        def bad() -> None:
            raise KeyError("logged")

        loop.set_exception_handler(Errors())
        loop.set_exception_handler(None)  # back to the default
        loop.call_soon(bad)
        with caplog.at_level(logging.ERROR, logger="plait"):
            loop.run()
        [record] = [r for r in caplog.records if r.name == "plait"]
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
        assert "bad" in record.getMessage()

    def test_a_raising_handler_is_logged_and_the_loop_goes_on(
        self, loop: plait.Loop, caplog: pytest.LogCaptureFixture
    ) -> None:
        def handler(loop: plait.Loop, context: dict[str, Any]) -> None:
            raise RuntimeError("handler broke")

        loop.set_exception_handler(handler)
        log: list[str] = []
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(log.append, "still running")
        with caplog.at_level(logging.ERROR, logger="plait"):
            loop.run()
        assert log == ["still running"]
        records = [r for r in caplog.records if r.name == "plait"]
        assert len(records) == 1
        assert records[0].exc_info is not None
        assert str(records[0].exc_info[1]) == "handler broke"


class TestNaturalProgram:
    def test_echo_over_a_socketpair_with_callbacks_and_timers(
        self, vloop: plait.Loop, sockpair: Pair
    ) -> None:
        client, server = sockpair
        messages = [b"alpha", b"beta", b"gamma"]
        outbox = bytearray()
        echoed = bytearray()
        log: list[tuple[float, str]] = []

        def server_readable() -> None:
            data = server.recv(4096)
            if not data:  # client sent EOF: echo done
                log.append((vloop.time(), "server eof"))
                vloop.remove_reader(server)
                server.shutdown(socket.SHUT_WR)
                return
            server.sendall(data)

        def client_send(msg: bytes) -> None:
            log.append((vloop.time(), f"send {msg.decode()}"))
            outbox.extend(msg)
            vloop.add_writer(client, client_writable)

        def client_writable() -> None:
            sent = client.send(outbox)
            del outbox[:sent]
            if not outbox:
                vloop.remove_writer(client)

        def client_readable() -> None:
            data = client.recv(4096)
            if not data:
                log.append((vloop.time(), "client eof"))
                vloop.remove_reader(client)
                return
            echoed.extend(data)
            log.append((vloop.time(), f"echo {data.decode()}"))

        vloop.add_reader(server, server_readable)
        vloop.add_reader(client, client_readable)
        for i, msg in enumerate(messages):
            vloop.call_later(i + 1, client_send, msg)
        vloop.call_later(len(messages) + 1, client.shutdown, socket.SHUT_WR)
        vloop.run()  # returns by itself once every reader and timer is gone
        assert bytes(echoed) == b"".join(messages)
        expected = [
            (t, f"{what} {m.decode()}")
            for t, m in enumerate(messages, 1)
            for what in ("send", "echo")
        ]
        assert log == [*expected, (4, "server eof"), (4, "client eof")]


BAD_CALLS = {
    "call_soon-not-callable": (lambda lp: lp.call_soon(42), TypeError),
    "call_later-not-callable": (lambda lp: lp.call_later(1, None), TypeError),
    "call_at-not-callable": (lambda lp: lp.call_at(1, "cb"), TypeError),
    "threadsafe-not-callable": (lambda lp: lp.call_soon_threadsafe(3.0), TypeError),
    "add_reader-not-callable": (lambda lp: lp.add_reader(0, 1), TypeError),
    "add_writer-not-callable": (lambda lp: lp.add_writer(1, b"x"), TypeError),
    "handler-not-callable": (lambda lp: lp.set_exception_handler(42), TypeError),
    "negative-delay": (lambda lp: lp.call_later(-1, print), ValueError),
    "nan-delay": (lambda lp: lp.call_later(math.nan, print), ValueError),
    "str-delay": (lambda lp: lp.call_later("1", print), TypeError),
    "nan-when": (lambda lp: lp.call_at(math.nan, print), ValueError),
    "none-when": (lambda lp: lp.call_at(None, print), TypeError),
}


class TestBadInput:
    @pytest.mark.parametrize(("call", "error"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
    def test_bad_callbacks_and_times(
        self, loop: plait.Loop, call: Callable[[plait.Loop], object], error: type
    ) -> None:
        with pytest.raises(error) as info:
            call(loop)
        assert "got" in str(info.value)  # the message says what was passed
        loop.run()  # nothing was scheduled

    @pytest.mark.parametrize(
        ("fd", "error"),
        [
            pytest.param(-1, ValueError, id="negative"),
            pytest.param(object(), TypeError, id="object"),
            pytest.param("3", TypeError, id="str"),
        ],
    )
    @pytest.mark.parametrize("method", ["add_reader", "add_writer"])
    def test_bad_fds(self, loop: plait.Loop, method: str, fd: object, error: type) -> None:
        with pytest.raises(error, match="file descriptor"):
            getattr(loop, method)(fd, print)
        loop.run()

    @pytest.mark.parametrize("method", ["add_reader", "add_writer"])
    def test_closed_fd_is_refused_and_leaves_nothing_registered(
        self, loop: plait.Loop, method: str
    ) -> None:
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(OSError, match="not open"):
            getattr(loop, method)(r, print)
        remove = loop.remove_reader if method == "add_reader" else loop.remove_writer
        assert remove(r) is False


class TestRegressions:
    def test_call_at_minus_infinity_runs(self, vloop: plait.Loop) -> None:
        log: list[str] = []
        vloop.call_at(-math.inf, log.append, "-inf")
        vloop.run()
        assert log == ["-inf"]

    @pytest.mark.parametrize("both", [False, True], ids=["reader", "reader+writer"])
    def test_remove_after_the_fd_was_closed(self, loop: plait.Loop, both: bool) -> None:
        a, b = socket.socketpair()
        fd = a.fileno()
        loop.add_reader(fd, print)
        if both:
            loop.add_writer(fd, print)
        a.close()
        b.close()
        assert loop.remove_reader(fd) is True
        if both:
            assert loop.remove_writer(fd) is True
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
        # Nothing is watched any more: run() returns by itself. (The thread only
        # rescues a broken loop; it never fires when the loop is right.)
        rescued: list[bool] = []
        guard = threading.Timer(
            5.0, lambda: (rescued.append(True), loop.call_soon_threadsafe(loop.stop))
        )
        guard.start()
        loop.run()
        guard.cancel()
        guard.join()
        assert rescued == []

    def test_reader_removed_earlier_in_the_same_iteration_does_not_run(
        self, loop: plait.Loop
    ) -> None:
        (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
        calls: list[str] = []

        def on_readable(name: str) -> None:  # whichever runs first removes both
            calls.append(name)
            loop.remove_reader(a1)
            loop.remove_reader(a2)

        with a1, b1, a2, b2:
            loop.add_reader(a1, on_readable, "1")
            loop.add_reader(a2, on_readable, "2")
            b1.send(b"x")
            b2.send(b"y")  # both readable: one poll queues both callbacks
            loop.run()
        assert len(calls) == 1

    def test_reader_replaced_earlier_in_the_same_iteration_does_not_run(
        self, vloop: plait.Loop
    ) -> None:
        (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
        calls: list[str] = []

        def replacement(sock: socket.socket) -> None:
            calls.append("replacement")
            sock.recv(10)
            vloop.remove_reader(sock)

        def original(own: socket.socket, other: socket.socket) -> None:
            calls.append("original")
            own.recv(10)
            vloop.remove_reader(own)
            vloop.add_reader(other, replacement, other)  # its original is queued already

        with a1, b1, a2, b2:
            vloop.add_reader(a1, original, a1, a2)
            vloop.add_reader(a2, original, a2, a1)
            b1.send(b"x")
            b2.send(b"y")
            # Virtual time: if a reader were left waiting forever, this still ends run().
            vloop.call_later(10, lambda: (calls.append("guard"), vloop.stop()))
            vloop.run()
        assert calls == ["original", "replacement", "guard"]
