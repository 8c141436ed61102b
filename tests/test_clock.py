"""Clocks: plait.testing.MockClock (jump, rate, autojump), wait_all_tasks_blocked, and
how plait.run picks its clock (plait.lowlevel.current_clock).

Virtual time is asserted exactly; real time is only ever asserted by ordering
(monotonicity), never against a threshold."""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Any

import pytest

import plait
from plait.lowlevel import (
    Abort,
    current_clock,
    reschedule,
    wait_readable,
    wait_task_rescheduled,
)
from plait.testing import MockClock, wait_all_tasks_blocked


class Flag:
    """A minimal one-shot event built on the low-level park/unpark API."""

    def __init__(self) -> None:
        self.is_set = False
        self._waiters: list[plait.Task] = []

    def set(self) -> None:
        self.is_set = True
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            reschedule(task)

    async def wait(self) -> None:
        if self.is_set:
            await plait.checkpoint()
            return
        task = plait.current_task()
        self._waiters.append(task)

        def abort(_: Any) -> Abort:
            self._waiters.remove(task)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)


class TestMockClock:
    def test_defaults_freeze_time(self) -> None:
        clock = MockClock()
        assert clock.rate == 0.0
        assert clock.autojump_threshold == math.inf
        assert clock.current_time() == clock.current_time() == 0.0
        assert isinstance(clock, plait.lowlevel.Clock)
        assert MockClock.__module__ == "plait.testing"
        assert "MockClock" in repr(clock)

    def test_jump_adds_exactly(self) -> None:
        clock = MockClock()
        clock.jump(1.25)
        clock.jump(0)
        clock.jump(2)
        assert clock.current_time() == 3.25

    @pytest.mark.parametrize(
        ("seconds", "error"),
        [(-1, ValueError), (-1e-9, ValueError), (math.nan, ValueError), (math.inf, ValueError),
         ("1", TypeError)],
    )  # fmt: skip
    def test_bad_jump(self, seconds: Any, error: type) -> None:
        clock = MockClock()
        with pytest.raises(error, match="jump"):
            clock.jump(seconds)
        assert clock.current_time() == 0.0

    @pytest.mark.parametrize(
        "kwargs",
        [{"rate": -1}, {"rate": math.nan}, {"rate": math.inf}, {"autojump_threshold": -0.5},
         {"autojump_threshold": math.nan}],
    )  # fmt: skip
    def test_bad_constructor_arguments(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=r"rate|autojump"):
            MockClock(**kwargs)

    @pytest.mark.timeout(10)
    def test_positive_rate_moves_time_forward_monotonically(self) -> None:
        clock = MockClock(rate=1000.0)
        start = clock.current_time()
        readings = [clock.current_time()]
        while readings[-1] == start:  # virtual time must move on by itself
            readings.append(clock.current_time())
        readings += [clock.current_time() for _ in range(1000)]
        assert readings == sorted(readings)
        clock.rate = 0.0  # freezing keeps the time reached so far
        frozen = clock.current_time()
        assert frozen >= readings[-1]
        assert clock.current_time() == frozen
        clock.jump(5)
        assert clock.current_time() == frozen + 5

    def test_deadline_to_sleep_time(self) -> None:
        clock = MockClock()
        clock.jump(10)
        assert clock.deadline_to_sleep_time(9) == 0.0
        assert clock.deadline_to_sleep_time(10) == 0.0
        assert clock.deadline_to_sleep_time(11) == math.inf  # frozen: only a jump helps
        clock.rate = 2.0
        assert 0.0 < clock.deadline_to_sleep_time(clock.current_time() + 10) <= 5.0


class TestAutojump:
    @pytest.mark.parametrize("threshold", [0, 0.001])
    def test_sleep_returns_with_time_advanced_exactly(self, threshold: float) -> None:
        async def main() -> tuple[float, float]:
            t0 = plait.current_time()
            await plait.sleep(3600)
            return t0, plait.current_time()

        t0, t1 = plait.run(main, clock=MockClock(autojump_threshold=threshold))
        assert t1 == t0 + 3600

    def test_threshold_can_be_set_while_running(self) -> None:
        clock = MockClock()

        async def main() -> float:
            clock.autojump_threshold = 0
            await plait.sleep(60)
            return plait.current_time()

        assert plait.run(main, clock=clock) == 60

    def test_no_jump_while_any_task_is_runnable(self) -> None:
        log: list[tuple[str, float]] = []

        async def busy() -> None:
            for _ in range(500):
                await plait.checkpoint()
            log.append(("busy done", plait.current_time()))

        async def sleeper() -> None:
            await plait.sleep(1)
            log.append(("sleeper woke", plait.current_time()))

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sleeper)
                tg.spawn(busy)

        plait.run(main, clock=MockClock(autojump_threshold=0))
        assert log == [("busy done", 0), ("sleeper woke", 1)]


class TestManualJump:
    def test_sleeper_is_woken_by_another_task_jumping_the_clock(self) -> None:
        clock = MockClock()  # rate 0, no autojump: time moves only by jump()
        log: list[tuple[str, float]] = []

        async def sleeper() -> None:
            await plait.sleep(10)
            log.append(("woke", plait.current_time()))

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sleeper)
                await wait_all_tasks_blocked()
                clock.jump(4)
                log.append(("jumped 4", plait.current_time()))
                await wait_all_tasks_blocked()  # the sleeper is still parked
                clock.jump(6)
                log.append(("jumped 6", plait.current_time()))

        plait.run(main, clock=clock)
        assert log == [("jumped 4", 4), ("jumped 6", 10), ("woke", 10)]


class TestWaitAllTasksBlocked:
    def test_waits_for_a_chain_of_tasks_passing_events(self) -> None:
        n = 20
        flags = [Flag() for _ in range(n + 1)]
        log: list[int] = []

        async def link(i: int) -> None:
            await flags[i].wait()
            for _ in range(3):
                await plait.checkpoint()
            log.append(i)
            flags[i + 1].set()

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                for i in reversed(range(n)):
                    tg.spawn(link, i)
                await wait_all_tasks_blocked()
                assert log == []  # every link is parked on its flag
                flags[0].set()
                await wait_all_tasks_blocked()
                assert log == list(range(n))
                assert flags[n].is_set

        plait.run(main)

    def test_does_not_return_while_another_task_only_checkpoints(self) -> None:
        done: list[bool] = []

        async def busy() -> None:
            for _ in range(300):
                await plait.checkpoint()
            done.append(True)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(busy)
                await wait_all_tasks_blocked()
                assert done == [True]

        plait.run(main)

    def test_smaller_cushion_wakes_first_and_ties_wake_in_order(self) -> None:
        log: list[str] = []

        async def waiter(name: str, cushion: float) -> None:
            await wait_all_tasks_blocked(cushion)
            log.append(name)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(waiter, "slow", 0.002)
                tg.spawn(waiter, "fast-1", 0.001)
                tg.spawn(waiter, "zero-1", 0)
                tg.spawn(waiter, "fast-2", 0.001)
                tg.spawn(waiter, "zero-2", 0)

        plait.run(main)
        assert log == ["zero-1", "zero-2", "fast-1", "fast-2", "slow"]

    def test_cancelling_the_waiter(self) -> None:
        scopes: list[plait.CancelScope] = []
        log: list[str] = []

        async def waiter() -> None:
            with plait.CancelScope() as scope:
                scopes.append(scope)
                await wait_all_tasks_blocked(3600)  # would block for an hour of real time
                log.append("not cancelled")
            log.append(f"caught={scope.cancelled_caught}")

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(waiter)
                await wait_all_tasks_blocked()  # the smaller cushion wakes first
                scopes[0].cancel()
            await wait_all_tasks_blocked()
            log.append("main done")

        plait.run(main)
        assert log == ["caught=True", "main done"]

    def test_waiter_with_cushion_zero_goes_before_autojump_zero(self) -> None:
        # Both want to act when all tasks are blocked: the waiter is woken first (time
        # has not moved), and the sleeper still progresses once the waiter is done.
        log: list[tuple[str, float]] = []

        async def sleeper() -> None:
            await plait.sleep(5)
            log.append(("sleeper", plait.current_time()))

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sleeper)
                for i in range(3):
                    await wait_all_tasks_blocked()
                    log.append((f"waiter {i}", plait.current_time()))

        plait.run(main, clock=MockClock(autojump_threshold=0))
        assert log == [("waiter 0", 0), ("waiter 1", 0), ("waiter 2", 0), ("sleeper", 5)]

    def test_autojump_goes_before_a_waiter_with_a_larger_cushion(self) -> None:
        async def main() -> tuple[bool, float]:
            with plait.move_on_after(5) as scope:
                await wait_all_tasks_blocked(3600)  # an hour of *real* idleness
            return scope.cancelled_caught, plait.current_time()

        assert plait.run(main, clock=MockClock(autojump_threshold=0)) == (True, 5)

    @pytest.mark.timeout(10)
    def test_io_that_nobody_waits_for_does_not_cut_the_cushion_short(self) -> None:
        # An fd a task stopped waiting on becomes ready while every task is blocked. That
        # wakes the OS poll, but no task: it is not the end of the waiter's cushion.
        log: list[str] = []
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        late = threading.Thread(target=lambda: (time.sleep(0.005), d.send(b"wake main")))

        async def waiter() -> None:
            await wait_all_tasks_blocked(3600)
            log.append("waiter woke")

        async def sender() -> None:
            b.send(b"nobody reads this")
            late.start()

        async def main() -> None:
            with plait.move_on_after(0):
                await wait_readable(a)  # an abandoned wait
            async with plait.TaskGroup() as tg:
                tg.spawn(waiter)
                tg.spawn(sender)
                await wait_readable(c)
                log.append("main woke")
                tg.cancel_scope.cancel()

        try:
            plait.run(main)
        finally:
            late.join()
            for sock in (a, b, c, d):
                sock.close()
        assert log == ["main woke"]

    @pytest.mark.parametrize(
        ("cushion", "error"), [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError)]
    )
    def test_bad_cushion(self, cushion: float, error: type) -> None:
        async def main() -> None:
            with pytest.raises(error, match="cushion"):
                await wait_all_tasks_blocked(cushion)

        plait.run(main)

    def test_outside_a_run(self) -> None:
        coro = wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match=r"plait\.run\(\)"):
            coro.send(None)


class TestClockOfARun:
    def test_current_clock_is_the_clock_passed_to_run(self) -> None:
        clock = MockClock(autojump_threshold=0)

        async def main() -> plait.lowlevel.Clock:
            return current_clock()

        assert plait.run(main, clock=clock) is clock
        assert isinstance(plait.run(main), plait.lowlevel.SystemClock)

    def test_a_clock_can_be_reused_by_a_second_run(self) -> None:
        clock = MockClock(autojump_threshold=0)

        async def main() -> float:
            await plait.sleep(2)
            return plait.current_time()

        assert plait.run(main, clock=clock) == 2
        assert plait.run(main, clock=clock) == 4

    @pytest.mark.parametrize("bad", ["nope", 1.0, MockClock])
    def test_run_with_a_bad_clock_is_a_type_error(self, bad: Any) -> None:
        called: list[bool] = []

        async def main() -> None:
            called.append(True)

        with pytest.raises(TypeError, match="clock"):
            plait.run(main, clock=bad)
        with pytest.raises(TypeError, match="clock"):
            plait.Loop(clock=bad)
        assert called == []

    def test_current_clock_outside_a_run(self) -> None:
        with pytest.raises(RuntimeError, match="current_clock"):
            current_clock()
