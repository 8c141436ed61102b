"""Tests of plait.sched, the drop-in replacement for the standard library's sched.

Part 1 ports every test of CPython's Lib/test/test_sched.py (identical in 3.11-3.13),
each assertion kept, run both with fake time (custom timefunc/delayfunc: the standard
code path) and with the default clock (waits on a plait Loop, delays scaled to ms).
Part 2 tests what plait adds or must keep: early wake-ups, errors, compatibility with
the standard module (a differential test against it), and a realistic program.
"""

from __future__ import annotations

import inspect
import math
import os
import queue
import sched as std_sched
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plait
import plait.sched
from plait.sched import Event, scheduler

TIMEOUT = 10.0


class Timer:
    """Fake time for threaded tests: ``sleep`` blocks until ``advance`` allows it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._time = 0
        self._stop = 0

    def time(self) -> float:
        with self._cond:
            return self._time

    def sleep(self, t: float) -> None:
        assert t >= 0
        with self._cond:
            t += self._time
            while self._stop < t:
                self._time = self._stop
                self._cond.wait()
            self._time = t

    def advance(self, t: float) -> None:
        assert t >= 0
        with self._cond:
            self._stop += t
            self._cond.notify_all()


class FakeClock:
    """Fake time for one thread: ``sleep`` jumps; every call is logged."""

    def __init__(self, start: float = 0) -> None:
        self.now = start
        self.calls: list[tuple[Any, ...]] = []

    def time(self) -> float:
        self.calls.append(("time",))
        return self.now

    def sleep(self, t: float) -> None:
        self.calls.append(("sleep", t))
        self.now += t


@dataclass
class Mode:
    make: Callable[[], scheduler]
    scale: float  # multiplies the delays of the CPython tests (seconds)


@pytest.fixture(params=["fake-time", "plait-loop"])
def mode(request: pytest.FixtureRequest) -> Mode:
    if request.param == "plait-loop":
        return Mode(scheduler, 0.01)
    clock = FakeClock()
    return Mode(lambda: scheduler(clock.time, clock.sleep), 1.0)


def noop(*args: Any, **kwargs: Any) -> None:
    pass


def join(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the thread running scheduler.run() did not finish"


class TestCPythonSuite:
    """CPython's Lib/test/test_sched.py, on plait.sched.scheduler."""

    def test_enter(self, mode: Mode) -> None:
        got: list[float] = []
        s = mode.make()
        for x in [0.5, 0.4, 0.3, 0.2, 0.1]:
            s.enter(x * mode.scale, 1, got.append, (x,))
        s.run()
        assert got == [0.1, 0.2, 0.3, 0.4, 0.5]

    def test_enterabs(self, mode: Mode) -> None:
        got: list[float] = []
        s = mode.make()
        for x in [0.05, 0.04, 0.03, 0.02, 0.01]:
            s.enterabs(x, 1, got.append, (x,))
        s.run()
        assert got == [0.01, 0.02, 0.03, 0.04, 0.05]

    def test_enter_concurrent(self) -> None:
        q: queue.Queue[int] = queue.Queue()
        timer = Timer()
        s = scheduler(timer.time, timer.sleep)
        s.enter(1, 1, q.put, (1,))
        s.enter(3, 1, q.put, (3,))
        t = threading.Thread(target=s.run, daemon=True)
        t.start()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 1
        assert q.empty()
        for x in [4, 5, 2]:
            s.enter(x - 1, 1, q.put, (x,))
        timer.advance(2)
        assert q.get(timeout=TIMEOUT) == 2
        assert q.get(timeout=TIMEOUT) == 3
        assert q.empty()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 4
        assert q.empty()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 5
        assert q.empty()
        timer.advance(1000)
        join(t)
        assert q.empty()
        assert timer.time() == 5

    def test_priority(self, mode: Mode) -> None:
        got: list[int] = []
        s = mode.make()
        cases = [
            ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
            ([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]),
            ([2, 5, 3, 1, 4], [1, 2, 3, 4, 5]),
            ([1, 2, 3, 2, 1], [1, 1, 2, 2, 3]),
        ]
        for priorities, expected in cases:  # one scheduler, reused after each run()
            for priority in priorities:
                s.enterabs(0.01, priority, got.append, (priority,))
            s.run()
            assert got == expected, priorities
            assert s.empty()
            got.clear()

    def test_cancel(self, mode: Mode) -> None:
        got: list[float] = []
        s = mode.make()
        now = s.timefunc()
        events = [
            s.enterabs(now + x * mode.scale, 1, got.append, (x,))
            for x in (0.01, 0.02, 0.03, 0.04, 0.05)
        ]
        s.cancel(events[0])
        s.cancel(events[4])
        s.run()
        assert got == [0.02, 0.03, 0.04]

    def test_cancel_concurrent(self) -> None:
        q: queue.Queue[int] = queue.Queue()
        timer = Timer()
        s = scheduler(timer.time, timer.sleep)
        now = timer.time()
        s.enterabs(now + 1, 1, q.put, (1,))
        event2 = s.enterabs(now + 2, 1, q.put, (2,))
        s.enterabs(now + 4, 1, q.put, (4,))
        event5 = s.enterabs(now + 5, 1, q.put, (5,))
        s.enterabs(now + 3, 1, q.put, (3,))
        t = threading.Thread(target=s.run, daemon=True)
        t.start()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 1
        assert q.empty()
        s.cancel(event2)
        s.cancel(event5)
        timer.advance(1)
        assert q.empty()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 3
        assert q.empty()
        timer.advance(1)
        assert q.get(timeout=TIMEOUT) == 4
        assert q.empty()
        timer.advance(1000)
        join(t)
        assert q.empty()
        assert timer.time() == 4

    def test_cancel_correct_event(self, mode: Mode) -> None:  # bpo-19270
        events: list[str] = []
        s = mode.make()
        s.enterabs(1, 1, events.append, ("a",))
        b = s.enterabs(1, 1, events.append, ("b",))
        s.enterabs(1, 1, events.append, ("c",))
        s.cancel(b)
        s.run()
        assert events == ["a", "c"]

    def test_empty(self, mode: Mode) -> None:
        got: list[float] = []
        s = mode.make()
        assert s.empty()
        for x in [0.05, 0.04, 0.03, 0.02, 0.01]:
            s.enterabs(x, 1, got.append, (x,))
        assert not s.empty()
        s.run()
        assert s.empty()

    def test_queue(self, mode: Mode) -> None:
        s = mode.make()
        now = s.timefunc()
        fun = noop
        e5 = s.enterabs(now + 0.05, 1, fun)
        e1 = s.enterabs(now + 0.01, 1, fun)
        e2 = s.enterabs(now + 0.02, 1, fun)
        e4 = s.enterabs(now + 0.04, 1, fun)
        e3 = s.enterabs(now + 0.03, 1, fun)
        assert s.queue == [e1, e2, e3, e4, e5]

    def test_args_kwargs(self, mode: Mode) -> None:
        seq: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def fun(*a: Any, **b: Any) -> None:
            seq.append((a, b))

        s = mode.make()
        now = s.timefunc()
        s.enterabs(now, 1, fun)
        s.enterabs(now, 1, fun, argument=(1, 2))
        s.enterabs(now, 1, fun, argument=("a", "b"))
        s.enterabs(now, 1, fun, argument=(1, 2), kwargs={"foo": 3})
        s.run()
        expected = [((), {}), ((1, 2), {}), (("a", "b"), {}), ((1, 2), {"foo": 3})]
        assert sorted(map(repr, seq)) == sorted(map(repr, expected))  # assertCountEqual

    def test_run_non_blocking(self, mode: Mode) -> None:
        got: list[int] = []
        s = mode.make()
        for x in [10, 9, 8, 7, 6]:
            s.enter(x, 1, got.append, (x,))
        s.run(blocking=False)
        assert got == []


def wait_until_sleeping(s: scheduler) -> None:
    """Wait until a run() call of ``s`` is asleep on its plait loop (white box)."""
    deadline = time.monotonic() + TIMEOUT
    while not any(w.deadline is not None for w in s._waiters):
        assert time.monotonic() < deadline, "run() never went to sleep"
        time.sleep(0.0005)


class TestWakeUp:
    """With the default clock, run() sleeps on a plait Loop that enter() can wake."""

    def start_sleeping_run(self, log: list[str], sync: bool) -> tuple[scheduler, Any]:
        s = scheduler()
        late = s.enter(3600, 1, log.append, ("late",))
        t = threading.Thread(target=s.run, daemon=True)
        t.start()
        if sync:
            wait_until_sleeping(s)

        def early() -> None:
            log.append("early")
            s.cancel(late)  # so that run() returns

        s.enter(0, 1, early)
        return s, t

    @pytest.mark.parametrize("sync", [True, False], ids=["while-asleep", "racing-the-sleep"])
    def test_earlier_event_from_thread_wakes_sleeping_run(self, sync: bool) -> None:
        for _ in range(1 if sync else 20):  # unsynced: enter() races with the sleep's start
            log: list[str] = []
            s, t = self.start_sleeping_run(log, sync)
            join(t)  # the standard sched would sleep an hour before running "early"
            assert log == ["early"]
            assert s.empty()
            assert not s._waiters

    def test_later_event_does_not_wake(self) -> None:
        s = scheduler()
        first = s.enter(3600, 1, noop)
        t = threading.Thread(target=s.run, daemon=True)
        t.start()
        wait_until_sleeping(s)
        (waiter,) = s._waiters
        s.enter(7200, 1, noop)
        assert waiter.deadline == first.time  # still asleep, not woken
        for event in s.queue:
            s.cancel(event)
        s.enter(0, 1, noop)
        join(t)

    def test_stale_wake_does_not_cut_a_later_sleep_short(self) -> None:
        waiter = plait.sched._Waiter()
        try:
            waiter.arm(1.0)
            waiter.wake()  # delivered only once the loop runs, during the next sleep
            waiter.arm(2.0)
            start = time.monotonic()
            waiter.sleep(0.002)
            assert time.monotonic() - start >= 0.002
        finally:
            waiter.close()

    def test_two_threads_run_the_same_scheduler(self) -> None:
        s = scheduler()
        ran: list[int] = []
        now = time.monotonic()
        for i in range(5):
            s.enterabs(now + 0.001 * i, 1, ran.append, (i,))  # append is atomic
        threads = [threading.Thread(target=s.run, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            join(t)
        assert sorted(ran) == [0, 1, 2, 3, 4]

    def test_run_inside_a_plait_task_falls_back_to_time_sleep(self) -> None:
        log: list[str] = []

        async def main() -> None:
            s = scheduler()
            s.enter(0.001, 1, log.append, ("ran",))
            s.run()  # blocks the task, as the standard sched would

        plait.run(main)
        assert log == ["ran"]

    def test_action_can_call_plait_run(self) -> None:
        async def double(x: int) -> int:
            await plait.checkpoint()
            return 2 * x

        results: list[int] = []
        s = scheduler()
        s.enter(0.001, 1, lambda: results.append(plait.run(double, 21)))
        s.run()
        assert results == [42]

    @pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
    def test_run_closes_its_loop(self) -> None:
        s = scheduler()
        s.enter(0.001, 1, noop)
        s.run()  # warm up imports and logging
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            s.enter(0.001, 1, noop)
            s.run()
        assert len(os.listdir("/proc/self/fd")) == before
        assert not s._waiters

    def test_infinite_delay_fails_like_the_standard_sched(self) -> None:
        std = std_sched.scheduler()
        std.enterabs(math.inf, 1, noop)
        with pytest.raises(Exception) as std_error:
            std.run()
        s = scheduler()
        event = s.enterabs(math.inf, 1, noop)
        with pytest.raises(type(std_error.value)):
            s.run()
        assert s.queue == [event]


class TestErrors:
    def test_action_error_propagates_and_run_can_resume(self, mode: Mode) -> None:
        log: list[str] = []
        s = mode.make()

        def boom() -> None:
            raise ZeroDivisionError("boom")

        s.enterabs(1, 1, log.append, ("a",))
        bad = s.enterabs(2, 1, boom)
        s.enterabs(3, 1, log.append, ("c",))
        with pytest.raises(ZeroDivisionError, match="boom"):
            s.run()
        assert log == ["a"]
        assert bad not in s.queue
        assert len(s.queue) == 1
        s.run()
        assert log == ["a", "c"]

    def test_delayfunc_error_propagates_and_leaves_the_event(self) -> None:
        def delay(t: float) -> None:
            raise KeyboardInterrupt

        s = scheduler(lambda: 0, delay)
        event = s.enter(5, 1, noop)
        with pytest.raises(KeyboardInterrupt):
            s.run()
        assert s.queue == [event]

    def test_cancel_an_event_that_is_not_queued(self, mode: Mode) -> None:
        s = mode.make()
        other = mode.make().enterabs(0, 1, noop)
        with pytest.raises(ValueError):
            s.cancel(other)
        event = s.enterabs(0, 1, list)
        s.cancel(event)
        with pytest.raises(ValueError):
            s.cancel(event)
        ran = s.enterabs(0, 1, list)
        s.run()
        with pytest.raises(ValueError):
            s.cancel(ran)

    @pytest.mark.parametrize(
        ("method", "args", "match"),
        [
            ("enterabs", (0, 1, "not callable"), "action must be callable"),
            ("enterabs", (0, 1, noop, 5), "argument must be an iterable"),
            ("enter", (0, 1, noop, (), None), "kwargs must be a mapping"),
            ("enterabs", (0, 1, noop, (), [("a", 1)]), "kwargs must be a mapping"),
            ("enterabs", (math.nan, 1, noop), r"enterabs\(\) time is NaN"),
            ("enter", (math.nan, 1, noop), r"enter\(\) delay is NaN"),
        ],
    )
    def test_bad_input_is_rejected_at_once(
        self, method: str, args: tuple[Any, ...], match: str
    ) -> None:
        s = scheduler()
        with pytest.raises((TypeError, ValueError), match=match) as error:
            getattr(s, method)(*args)
        assert isinstance(error.value, ValueError if "NaN" in match else TypeError)
        assert s.empty()

    def test_input_the_standard_sched_handles_is_accepted(self) -> None:
        got: list[Any] = []
        clock = FakeClock(start=10)
        s = scheduler(clock.time, clock.sleep)
        s.enter(-5, 1, got.append, ["list argument"])
        s.enter(0, None, lambda *a: got.append(a), "ab")  # a str is a sequence
        s.enter(1, 1, lambda **kw: got.append(kw), (), {"k": 1})
        s.run()
        assert got == ["list argument", ("a", "b"), {"k": 1}]


class TestRunNonBlocking:
    def test_returns_the_delay_until_the_next_event(self) -> None:
        log: list[str] = []
        clock = FakeClock(start=100)
        s = scheduler(clock.time, clock.sleep)
        s.enterabs(99, 1, log.append, ("due",))
        s.enterabs(107, 1, log.append, ("later",))
        assert s.run(blocking=False) == 7
        assert log == ["due"]
        clock.now = 107
        assert s.run(blocking=False) is None
        assert log == ["due", "later"]
        assert s.run(blocking=False) is None


class TestEventsAndKwargs:
    def test_kwargs_are_passed_and_each_event_gets_its_own_dict(self) -> None:
        got: list[dict[str, Any]] = []
        s = scheduler()
        e1 = s.enterabs(0, 1, lambda **kw: got.append(kw), kwargs={"x": 1, "y": 2})
        e2 = s.enterabs(0, 1, noop)
        e3 = s.enter(-1, 1, noop)
        assert e1.kwargs == {"x": 1, "y": 2}
        assert e2.kwargs == {} == e3.kwargs
        assert e2.kwargs is not e3.kwargs
        s.cancel(e2)
        s.cancel(e3)
        s.run()
        assert got == [{"x": 1, "y": 2}]

    def test_event_fields_and_order_match_the_standard_module(self) -> None:
        assert Event._fields == std_sched.Event._fields
        s = scheduler(lambda: 0, lambda t: None)
        a = s.enterabs(5, 2, noop)
        b = s.enterabs(5, 1, noop)
        c = s.enterabs(4, 9, noop)
        d = s.enterabs(5, 1, noop)
        assert isinstance(a, tuple)
        assert (a.time, a.priority, a.action, a.argument) == (5, 2, noop, ())
        assert c < b < d < a
        assert s.queue == [c, b, d, a]


class TestCompatibility:
    def test_signatures_match_the_standard_module(self) -> None:
        for name in ("__init__", "enter", "enterabs", "cancel", "empty", "run"):
            ours = inspect.signature(getattr(scheduler, name)).parameters
            theirs = inspect.signature(getattr(std_sched.scheduler, name)).parameters
            assert list(ours) == list(theirs), name
        init = inspect.signature(scheduler).parameters
        assert init["timefunc"].default is time.monotonic
        assert init["delayfunc"].default is time.sleep
        s = scheduler()
        assert (s.timefunc, s.delayfunc) == (time.monotonic, time.sleep)

    def test_module_namespace(self) -> None:
        assert plait.sched.__all__ == ["Event", "scheduler"]
        assert "scheduler" not in vars(plait)  # plait.sched.scheduler, not plait.scheduler

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 2))))
    def test_same_calls_as_the_standard_module(self, ops: list[tuple[int, int, int]]) -> None:
        def play(cls: Any) -> list[Any]:
            clock = FakeClock()
            s = cls(clock.time, clock.sleep)
            log: list[Any] = clock.calls
            entered: list[Any] = []

            def action(tag: int, then_enter: int) -> None:
                log.append(("action", tag))
                if then_enter:  # actions may change the queue
                    entered.append(s.enter(then_enter, 0, action, (-tag, 0)))

            for i, (op, t, p) in enumerate(ops):
                if op == 0:
                    entered.append(s.enterabs(t, p, action, (i, p % 2)))
                elif op == 1:
                    entered.append(s.enter(t, p, action, (), {"tag": i, "then_enter": 0}))
                elif op == 2 and entered:
                    try:
                        s.cancel(entered[t % len(entered)])
                        log.append("cancelled")
                    except ValueError:
                        log.append("not queued")
                elif op == 3:
                    log.append(("returned", s.run(blocking=False)))
                elif op == 4:
                    log.append(("queue", [(e.time, e.priority, e.sequence) for e in s.queue]))
                else:
                    log.append(("returned", s.run(), s.empty()))
            s.run()
            return log

        assert play(scheduler) == play(std_sched.scheduler)


def test_realistic_program() -> None:
    """A heartbeat that reschedules itself, with a watchdog, using plait.sched as sched."""
    from plait import sched

    s = sched.scheduler()
    log: list[str] = []

    def heartbeat(n: int) -> None:
        log.append(f"beat {n}")
        if n < 3:
            s.enter(0.001, 1, heartbeat, (n + 1,))
        else:
            s.cancel(watchdog)
            s.enter(0, 2, log.append, ("shutdown",))

    def fire_watchdog() -> None:
        raise AssertionError("the heartbeat stopped")

    watchdog = s.enter(3600, 0, fire_watchdog)
    s.enter(0.001, 1, heartbeat, (1,))
    now = time.monotonic()
    s.enterabs(now, 1, log.append, ("start",))
    s.enterabs(now, 0, log.append, ("config",))
    assert s.run() is None
    assert log == ["config", "start", "beat 1", "beat 2", "beat 3", "shutdown"]
    assert s.empty()
