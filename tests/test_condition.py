"""Tests for plait.Condition (src/plait/_sync.py): notify order, lock handover,
cancellation of waiters before and after a notification, wait_for and misuse.

Queue order is made explicit by spawning each waiter and letting it park before
spawning the next; everything runs on virtual time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import plait
from helpers import vrun
from plait.testing import wait_all_tasks_blocked


def virtual(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test (method) in ``plait.run`` on virtual time."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        vrun(test(*args, **kwargs))

    return run


async def spawn_parked(tg: plait.TaskGroup, fn: Any, *args: Any) -> plait.Task:
    """Spawn ``fn(*args)`` and let it run until it parks: spawn order is queue order."""
    task = tg.spawn(fn, *args)
    await wait_all_tasks_blocked()
    return task


async def waiter(cond: plait.Condition, log: list[Any], tag: Any) -> None:
    """Wait once; log ``tag`` and whether this task holds the lock when woken."""
    async with cond:
        await cond.wait()
        log.append(tag)
        assert cond.statistics().lock_statistics.owner is plait.current_task()
        await plait.checkpoint()  # still holding the lock


def owner(cond: plait.Condition) -> plait.Task | None:
    return cond.statistics().lock_statistics.owner


class TestCondition:
    @virtual
    async def test_makes_or_shares_a_lock(self) -> None:
        cond = plait.Condition()
        assert not cond.locked()
        lock = plait.Lock()
        shared = plait.Condition(lock)
        async with lock:
            assert shared.locked()
            assert owner(shared) is plait.current_task()
        await shared.acquire()
        assert lock.locked()
        shared.release()
        shared.acquire_nowait()
        assert lock.statistics().owner is plait.current_task()
        shared.release()
        assert cond.statistics() == plait.ConditionStatistics(
            tasks_waiting=0, lock_statistics=plait.LockStatistics(False, None, 0)
        )

    @pytest.mark.parametrize("lock", [object(), "x", plait.Semaphore(1)])
    def test_lock_must_be_a_plait_lock(self, lock: Any) -> None:
        with pytest.raises(TypeError, match=r"Condition\(lock\) needs a plait.Lock"):
            plait.Condition(lock)

    @virtual
    async def test_wait_and_notify_need_the_lock(self) -> None:
        cond = plait.Condition()
        msg = r"Condition\.{}\(\) needs the condition's lock"
        with pytest.raises(RuntimeError, match=msg.format("wait")):
            await cond.wait()
        with pytest.raises(RuntimeError, match=msg.format("wait_for")):
            await cond.wait_for(lambda: True)
        with pytest.raises(RuntimeError, match=msg.format("notify")):
            cond.notify()
        with pytest.raises(RuntimeError, match=msg.format("notify_all")):
            cond.notify_all()
        await cond.acquire()

        async def other() -> None:  # the lock is held, but by another task
            with pytest.raises(RuntimeError, match=msg.format("wait")):
                await cond.wait()
            with pytest.raises(RuntimeError, match=msg.format("notify")):
                cond.notify()

        async with plait.TaskGroup() as tg:
            tg.spawn(other)
        cond.release()

    @virtual
    async def test_notify_count_is_checked(self) -> None:
        cond = plait.Condition()
        log: list[int] = []
        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, waiter, cond, log, 0)
            async with cond:
                with pytest.raises(ValueError, match="notify"):
                    cond.notify(-1)
                with pytest.raises(TypeError, match="notify"):
                    cond.notify("x")  # type: ignore[arg-type]
                cond.notify(0)
            await wait_all_tasks_blocked()
            assert log == []
            async with cond:
                cond.notify()

    @virtual
    async def test_acquire_is_a_checkpoint(self) -> None:
        cond = plait.Condition()
        with plait.CancelScope() as scope:
            scope.cancel()
            await cond.acquire()
        assert scope.cancelled_caught
        assert not cond.locked()
        ran: list[bool] = []

        async def other() -> None:
            ran.append(True)

        async with plait.TaskGroup() as tg:
            tg.spawn(other)
            await cond.acquire()
            assert ran == [True]
        cond.release()

    @virtual
    async def test_wait_releases_the_lock_while_waiting(self) -> None:
        cond = plait.Condition()
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, waiter, cond, log, "w")
            assert cond.statistics() == plait.ConditionStatistics(
                1, plait.LockStatistics(False, None, 0)
            )
            async with cond:
                cond.notify()
        assert log == ["w"]

    @virtual
    async def test_wait_hands_the_lock_to_a_task_queued_for_it(self) -> None:
        cond = plait.Condition()
        log: list[str] = []

        async def notifier() -> None:
            async with cond:
                log.append("notifier")
                cond.notify()

        await cond.acquire()
        async with plait.TaskGroup() as tg:
            task = await spawn_parked(tg, notifier)
            assert cond.statistics().lock_statistics.tasks_waiting == 1
            await cond.wait()  # the lock goes to `notifier`, which wakes us
            log.append("main")
            assert owner(cond) is plait.current_task()
            cond.release()
        assert task.done()
        assert log == ["notifier", "main"]

    @virtual
    async def test_notify_n_wakes_exactly_n_in_fifo_order(self) -> None:
        cond = plait.Condition()
        log: list[int] = []
        async with plait.TaskGroup() as tg:
            for i in range(6):
                await spawn_parked(tg, waiter, cond, log, i)
            async with cond:
                cond.notify(2)
                assert cond.statistics().tasks_waiting == 4
                assert cond.statistics().lock_statistics.tasks_waiting == 2
            await wait_all_tasks_blocked()
            assert log == [0, 1]
            async with cond:
                cond.notify(3)
            await wait_all_tasks_blocked()
            assert log == [0, 1, 2, 3, 4]
            async with cond:
                cond.notify(10)  # more than there are
        assert log == [0, 1, 2, 3, 4, 5]

    @virtual
    async def test_notify_all_and_lock_order(self) -> None:
        cond = plait.Condition()
        log: list[Any] = []

        async def locker() -> None:
            async with cond:
                log.append("locker")

        async with plait.TaskGroup() as tg:
            for i in range(4):
                await spawn_parked(tg, waiter, cond, log, i)
            async with cond:
                await spawn_parked(tg, locker)  # queued for the lock before the notify
                cond.notify_all()
                assert cond.statistics().tasks_waiting == 0
                assert cond.statistics().lock_statistics.tasks_waiting == 5
                await wait_all_tasks_blocked()
                assert log == []  # nobody runs until the notifier lets go
        assert log == ["locker", 0, 1, 2, 3]
        assert not cond.locked()

    @virtual
    async def test_waiter_cancelled_after_notify_passes_it_on(self) -> None:
        cond = plait.Condition()
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            first = await spawn_parked(tg, waiter, cond, log, "first")
            await spawn_parked(tg, waiter, cond, log, "second")
            await spawn_parked(tg, waiter, cond, log, "third")
            async with cond:
                cond.notify()
                first.cancel()
            await wait_all_tasks_blocked()
            assert first.cancelled()
            assert log == ["second"]
            assert cond.statistics().tasks_waiting == 1
            tg.cancel_scope.cancel()
        assert not cond.locked()

    @virtual
    async def test_waiter_cancelled_while_queued_for_the_lock_passes_it_on(self) -> None:
        cond = plait.Condition()
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            first = await spawn_parked(tg, waiter, cond, log, "first")
            await spawn_parked(tg, waiter, cond, log, "second")
            async with cond:
                cond.notify()
                first.cancel()
                await wait_all_tasks_blocked()
                # `first` left the lock's queue, and queued again (uncancellably)
                # to take the lock back before raising.
                assert cond.statistics().lock_statistics.tasks_waiting == 1
                assert not first.done()
        assert first.cancelled()
        assert log == ["second"]
        assert not cond.locked()

    @virtual
    async def test_waiter_cancelled_before_notify_consumes_nothing(self) -> None:
        cond = plait.Condition()
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            tasks = [await spawn_parked(tg, waiter, cond, log, t) for t in "abc"]
            tasks[0].cancel()
            await wait_all_tasks_blocked()
            assert tasks[0].cancelled()
            assert cond.statistics().tasks_waiting == 2
            async with cond:
                cond.notify()
            await wait_all_tasks_blocked()
            assert log == ["b"]
            async with cond:
                cond.notify()
        assert log == ["b", "c"]

    @virtual
    async def test_task_cancelled_after_the_lock_was_handed_to_it(self) -> None:
        cond = plait.Condition()
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            first = await spawn_parked(tg, waiter, cond, log, "first")
            await spawn_parked(tg, waiter, cond, log, "second")
            async with cond:
                cond.notify()
            assert owner(cond) is first  # woken already holding the lock
            first.cancel()
            await wait_all_tasks_blocked()
            # Its wait completed; it was cancelled at its next checkpoint and
            # released the lock on the way out.
            assert first.cancelled()
            assert log == ["first"]
            assert owner(cond) is None
            assert cond.statistics().tasks_waiting == 1
            async with cond:
                cond.notify()
        assert log == ["first", "second"]

    @virtual
    async def test_cancelled_wait_takes_the_lock_back_before_raising(self) -> None:
        cond = plait.Condition()
        seen: list[Any] = []

        async def cancelled_waiter() -> None:
            async with cond:
                try:
                    await cond.wait()
                except plait.Cancelled:
                    seen.append(owner(cond) is plait.current_task())
                    raise

        async with plait.TaskGroup() as tg:
            task = await spawn_parked(tg, cancelled_waiter)
            async with cond:
                task.cancel()
                await wait_all_tasks_blocked()
                assert seen == []  # waits for the lock we hold
                assert cond.statistics().tasks_waiting == 0
                assert cond.statistics().lock_statistics.tasks_waiting == 1
        assert seen == [True]
        assert task.cancelled()
        assert not cond.locked()

    @virtual
    async def test_wait_in_a_cancelled_scope_keeps_the_lock(self) -> None:
        cond = plait.Condition()
        async with cond:
            with plait.CancelScope() as scope:
                scope.cancel()
                await cond.wait()
            assert scope.cancelled_caught
            assert owner(cond) is plait.current_task()
            assert cond.statistics().tasks_waiting == 0
            with plait.CancelScope() as scope:
                scope.cancel()
                await cond.wait_for(lambda: True)  # true at once: still a checkpoint
            assert scope.cancelled_caught
            assert owner(cond) is plait.current_task()
        assert not cond.locked()

    @virtual
    async def test_wait_for_a_true_predicate_is_a_checkpoint(self) -> None:
        cond = plait.Condition()
        ran: list[bool] = []

        async def other() -> None:
            ran.append(True)

        async with cond:
            async with plait.TaskGroup() as tg:
                tg.spawn(other)
                assert await cond.wait_for(lambda: "yes") == "yes"
                assert ran == [True]
            assert owner(cond) is plait.current_task()

    @virtual
    async def test_wait_for_keeps_waiting_through_spurious_wakeups(self) -> None:
        cond = plait.Condition()
        state = {"value": 0, "checks": 0}
        results: list[Any] = []

        def predicate() -> Any:
            state["checks"] += 1
            return state["value"] >= 3 and f"value={state['value']}"

        async def consumer() -> None:
            async with cond:
                results.append(await cond.wait_for(predicate))
                assert owner(cond) is plait.current_task()

        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, consumer)
            assert state["checks"] == 1
            for expected_checks in (2, 3, 4):
                async with cond:
                    state["value"] += 1 if expected_checks < 4 else 0
                    cond.notify_all()  # the predicate is still false
                await wait_all_tasks_blocked()
                assert results == []
                assert state["checks"] == expected_checks
                assert cond.statistics().tasks_waiting == 1
            async with cond:
                state["value"] = 3
                cond.notify()
        assert results == ["value=3"]
        assert state["checks"] == 5

    @virtual
    async def test_wait_for_cancelled_while_waiting(self) -> None:
        cond = plait.Condition()
        seen: list[bool] = []

        async def consumer() -> None:
            async with cond:
                try:
                    await cond.wait_for(lambda: False)
                finally:
                    seen.append(owner(cond) is plait.current_task())

        async with plait.TaskGroup() as tg:
            task = await spawn_parked(tg, consumer)
            async with cond:
                cond.notify_all()  # spurious
            await wait_all_tasks_blocked()
            task.cancel()
        assert task.cancelled()
        assert seen == [True]
        assert cond.statistics() == plait.ConditionStatistics(
            0, plait.LockStatistics(False, None, 0)
        )

    @virtual
    async def test_two_conditions_on_one_lock_notify_separately(self) -> None:
        lock = plait.Lock()
        a, b = plait.Condition(lock), plait.Condition(lock)
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, waiter, a, log, "a")
            await spawn_parked(tg, waiter, b, log, "b")
            async with b:
                b.notify_all()
            await wait_all_tasks_blocked()
            assert log == ["b"]
            assert a.statistics().tasks_waiting == 1
            async with a:
                a.notify()
        assert log == ["b", "a"]
