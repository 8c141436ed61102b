"""Tests for plait.Event, Lock, Semaphore, BoundedSemaphore and CapacityLimiter
(src/plait/_sync.py), plus a randomized contention test. Condition: test_condition.py.

Every scenario runs on virtual time; queue order is made explicit by spawning each
waiter and letting it park (``spawn_parked``) before spawning the next. The behaviour
the four token-like primitives share (checkpoints, FIFO handover, cancelled waiters) is
written once below as scenarios, run by each primitive's class on a one-token instance.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


async def assert_checkpoint(op: Callable[[], Awaitable[Any]]) -> None:
    """``await op()`` lets another ready task run before it returns."""
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    async with plait.TaskGroup() as tg:
        tg.spawn(other)
        await op()
        assert ran == [True], "the operation returned without letting another task run"


async def assert_cancelled_at(op: Callable[[], Awaitable[Any]]) -> None:
    """In a cancelled scope, ``await op()`` raises Cancelled (caught by the scope)."""
    reached = False
    with plait.CancelScope() as scope:
        scope.cancel()
        await op()
        reached = True
    assert not reached
    assert scope.cancelled_caught


async def hold(prim: Any, log: list[Any], tag: Any, seconds: float = 1) -> None:
    """Acquire ``prim`` with ``async with``, log ``tag``, hold it for ``seconds``."""
    async with prim:
        log.append(tag)
        await plait.sleep(seconds)


def is_idle(prim: Any, k: int = 1) -> bool:
    """``prim`` (created with ``k`` tokens) is free again and nobody waits."""
    stats = prim.statistics()
    if isinstance(prim, plait.Lock):
        return stats == plait.LockStatistics(False, None, 0)
    if isinstance(prim, plait.CapacityLimiter):
        return stats == plait.CapacityLimiterStatistics(0, k, [], 0)
    return stats.value == k and stats.tasks_waiting == 0


# -- scenarios shared by Lock, Semaphore, BoundedSemaphore, CapacityLimiter ---------------
# Each takes a fresh one-token primitive and ends by checking it is idle again.


async def uncontended_acquire_is_a_checkpoint(prim: Any) -> None:
    await assert_cancelled_at(prim.acquire)  # cancelled: raises, takes nothing
    assert is_idle(prim)
    await assert_checkpoint(prim.acquire)  # not cancelled: takes it, lets others run
    assert not is_idle(prim)
    prim.release()
    assert is_idle(prim)


async def cancel_during_uncontended_acquire_keeps_it(prim: Any) -> None:
    # The acquire takes the token, then yields: a cancellation arriving then must not
    # make it lose the token (it raises at the next checkpoint, in the body).
    log: list[str] = []

    async def user() -> None:
        async with prim:
            log.append("acquired")
            await plait.checkpoint()
            log.append("not reached")

    async def canceller(task: plait.Task) -> None:
        log.append("cancel")  # runs while `user` sits in its acquire's schedule point
        task.cancel()

    async with plait.TaskGroup() as tg:
        task = tg.spawn(user)
        tg.spawn(canceller, task)
    assert task.cancelled()
    assert log == ["cancel", "acquired"]
    assert is_idle(prim)


async def waiters_are_served_fifo_without_barging(prim: Any) -> None:
    log: list[Any] = []
    await prim.acquire()
    async with plait.TaskGroup() as tg:
        for i in range(5):
            await spawn_parked(tg, hold, prim, log, i)
        assert prim.statistics().tasks_waiting == 5
        prim.release()  # handed straight to waiter 0, which has not run yet
        assert prim.statistics().tasks_waiting == 4
        with pytest.raises(plait.WouldBlock):
            prim.acquire_nowait()
        await hold(prim, log, "late")  # queues behind the other four
    assert log == [0, 1, 2, 3, 4, "late"]
    assert plait.current_time() == 6  # one at a time
    assert is_idle(prim)


async def cancelled_waiter_never_gets_it(prim: Any) -> None:
    log: list[str] = []
    await prim.acquire()
    async with plait.TaskGroup() as tg:
        tasks = [await spawn_parked(tg, hold, prim, log, tag) for tag in "abcd"]
        tasks[0].cancel()
        tasks[2].cancel()
        await wait_all_tasks_blocked()
        assert tasks[0].cancelled()
        assert tasks[2].cancelled()
        assert prim.statistics().tasks_waiting == 2
        prim.release()
    assert log == ["b", "d"]
    with pytest.raises(plait.TaskCancelled):
        await tasks[0]
    assert is_idle(prim)


async def task_cancelled_after_the_handover_keeps_it_then_releases(prim: Any) -> None:
    log: list[str] = []
    await prim.acquire()
    async with plait.TaskGroup() as tg:
        first = await spawn_parked(tg, hold, prim, log, "first")
        await spawn_parked(tg, hold, prim, log, "second")
        prim.release()  # handed to `first`, which has not run yet
        first.cancel()
        assert prim.statistics().tasks_waiting == 1
        await wait_all_tasks_blocked()
        # `first` returned from acquire, was cancelled at its sleep, and released.
        assert first.cancelled()
        assert log == ["first", "second"]
    assert plait.current_time() == 1  # `first` held it for no time at all
    assert is_idle(prim)


async def many_cancelled_waiters_keep_the_queue_in_order(prim: Any) -> None:
    log: list[int] = []
    await prim.acquire()
    async with plait.TaskGroup() as tg:
        tasks = [await spawn_parked(tg, hold, prim, log, i, 0) for i in range(200)]
        keep = set(range(0, 200, 7))
        for i, task in enumerate(tasks):
            if i not in keep:
                task.cancel()
        await wait_all_tasks_blocked()
        assert prim.statistics().tasks_waiting == len(keep)
        prim.release()
    assert log == sorted(keep)
    assert is_idle(prim)


SHARED = [
    uncontended_acquire_is_a_checkpoint,
    cancel_during_uncontended_acquire_keeps_it,
    waiters_are_served_fifo_without_barging,
    cancelled_waiter_never_gets_it,
    task_cancelled_after_the_handover_keeps_it_then_releases,
    many_cancelled_waiters_keep_the_queue_in_order,
]
shared_scenarios = pytest.mark.parametrize("scenario", SHARED, ids=lambda f: f.__name__)


# -- Event -----------------------------------------------------------------------------


class TestEvent:
    def test_bool_is_a_type_error(self) -> None:
        event = plait.Event()
        with pytest.raises(TypeError, match=r"is_set\(\)"):
            bool(event)
        with pytest.raises(TypeError, match="ambiguous"):
            if event:
                pass

    def test_set_is_idempotent_and_is_set(self) -> None:
        event = plait.Event()
        assert not event.is_set()
        event.set()
        event.set()
        assert event.is_set()
        assert event.statistics() == plait.EventStatistics(tasks_waiting=0)

    @virtual
    async def test_wait_on_a_set_event_is_still_a_checkpoint(self) -> None:
        event = plait.Event()
        event.set()
        await assert_checkpoint(event.wait)
        await assert_cancelled_at(event.wait)

    @virtual
    async def test_set_after_waits_wakes_every_waiter_in_order(self) -> None:
        event = plait.Event()
        woken: list[int] = []

        async def waiter(i: int) -> None:
            await event.wait()
            woken.append(i)

        async with plait.TaskGroup() as tg:
            for i in range(20):
                await spawn_parked(tg, waiter, i)
            assert event.statistics().tasks_waiting == 20
            assert woken == []
            event.set()
            assert event.statistics().tasks_waiting == 0
        assert woken == list(range(20))

    @virtual
    async def test_cancelled_waiter_leaves_and_the_others_still_wake(self) -> None:
        event = plait.Event()
        woken: list[int] = []

        async def waiter(i: int) -> None:
            await event.wait()
            woken.append(i)

        async with plait.TaskGroup() as tg:
            tasks = [await spawn_parked(tg, waiter, i) for i in range(3)]
            tasks[1].cancel()
            await wait_all_tasks_blocked()
            assert event.statistics().tasks_waiting == 2
            assert tasks[1].cancelled()
            event.set()
        assert woken == [0, 2]
        with pytest.raises(plait.TaskCancelled):
            await tasks[1]

    @virtual
    async def test_set_from_a_loop_callback(self) -> None:
        event = plait.Event()
        plait.lowlevel.current_loop().call_later(5, event.set)
        await event.wait()
        assert plait.current_time() == 5


# -- Lock ------------------------------------------------------------------------------


class TestLock:
    @shared_scenarios
    def test_shared(self, scenario: Any) -> None:
        vrun(scenario, plait.Lock())

    @virtual
    async def test_acquire_release_and_statistics(self) -> None:
        lock = plait.Lock()
        assert lock.statistics() == plait.LockStatistics(False, None, 0)
        await lock.acquire()
        me = plait.current_task()
        assert lock.locked()
        assert lock.statistics() == plait.LockStatistics(True, me, 0)
        lock.release()
        lock.acquire_nowait()
        assert lock.statistics().owner is me
        lock.release()
        async with lock:
            assert lock.statistics().owner is me
        assert not lock.locked()

    @virtual
    async def test_ownership_is_handed_to_the_first_waiter(self) -> None:
        lock = plait.Lock()
        log: list[str] = []
        await lock.acquire()
        async with plait.TaskGroup() as tg:
            waiters = [await spawn_parked(tg, hold, lock, log, t) for t in "ab"]
            waiters[0].cancel()
            await wait_all_tasks_blocked()
            assert lock.statistics().owner is plait.current_task()
            lock.release()
            assert lock.statistics() == plait.LockStatistics(True, waiters[1], 0)
        assert log == ["b"]

    @virtual
    async def test_task_cancelling_itself_before_acquire(self) -> None:
        lock = plait.Lock()

        async def self_cancelling() -> None:
            plait.current_task().cancel()
            await lock.acquire()

        async with plait.TaskGroup() as tg:
            task = tg.spawn(self_cancelling)
        assert task.cancelled()
        assert not lock.locked()

    @virtual
    async def test_release_when_unlocked_is_an_error(self) -> None:
        lock = plait.Lock()
        with pytest.raises(RuntimeError, match=r"does not hold the lock.*held by nobody"):
            lock.release()

    @virtual
    async def test_release_from_another_task_is_an_error(self) -> None:
        lock = plait.Lock()
        await lock.acquire()
        held_by = re.escape(f"held by task {plait.current_task().name!r}")

        async def intruder() -> None:
            with pytest.raises(RuntimeError, match=held_by):
                lock.release()

        async with plait.TaskGroup() as tg:
            tg.spawn(intruder)
        assert lock.statistics().owner is plait.current_task()
        lock.release()

    @virtual
    async def test_not_reentrant(self) -> None:
        lock = plait.Lock()
        async with lock:
            with pytest.raises(RuntimeError, match="not re-entrant"):
                await lock.acquire()
            with pytest.raises(RuntimeError, match="not re-entrant"):
                lock.acquire_nowait()
            assert lock.statistics() == plait.LockStatistics(True, plait.current_task(), 0)
        assert not lock.locked()


# -- Semaphore and BoundedSemaphore ----------------------------------------------------

BAD_COUNTS = [(-1, ValueError), ("x", TypeError), (1.5, TypeError), (True, TypeError)]


class TestSemaphore:
    @shared_scenarios
    def test_shared(self, scenario: Any) -> None:
        vrun(scenario, plait.Semaphore(1))

    @pytest.mark.parametrize(("value", "error"), BAD_COUNTS)
    def test_bad_initial_value(self, value: Any, error: type[Exception]) -> None:
        with pytest.raises(error, match="Semaphore initial value"):
            plait.Semaphore(value)

    @virtual
    async def test_counts_tokens(self) -> None:
        sem = plait.Semaphore(2)
        assert sem.statistics() == plait.SemaphoreStatistics(2, None, 0)
        await sem.acquire()
        sem.acquire_nowait()
        assert sem.value == 0
        with pytest.raises(plait.WouldBlock):
            sem.acquire_nowait()
        for _ in range(3):
            sem.release()  # a plain Semaphore may grow past its initial value
        assert sem.value == 3
        assert plait.Semaphore().value == 1

    @virtual
    async def test_zero_blocks_until_any_task_releases(self) -> None:
        sem = plait.Semaphore(0)
        log: list[str] = []
        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, hold, sem, log, "w")
            assert sem.statistics() == plait.SemaphoreStatistics(0, None, 1)

            async def releaser() -> None:
                sem.release()

            tg.spawn(releaser)
        assert log == ["w"]
        assert sem.value == 1

    @virtual
    async def test_tokens_are_handed_over_in_fifo_order(self) -> None:
        sem = plait.Semaphore(2)
        log: list[int] = []
        await sem.acquire()
        await sem.acquire()
        async with plait.TaskGroup() as tg:
            for i in range(5):
                await spawn_parked(tg, hold, sem, log, i)
            sem.release()
            sem.release()
            assert sem.statistics() == plait.SemaphoreStatistics(0, None, 3)
            with pytest.raises(plait.WouldBlock):
                sem.acquire_nowait()
        assert log == list(range(5))
        assert plait.current_time() == 3  # two at a time
        assert sem.value == 2


class TestBoundedSemaphore:
    @shared_scenarios
    def test_shared(self, scenario: Any) -> None:
        vrun(scenario, plait.BoundedSemaphore(1))

    @pytest.mark.parametrize(("value", "error"), BAD_COUNTS)
    def test_bad_initial_value(self, value: Any, error: type[Exception]) -> None:
        with pytest.raises(error, match="Semaphore initial value"):
            plait.BoundedSemaphore(value)

    @virtual
    async def test_released_too_often(self) -> None:
        sem = plait.BoundedSemaphore(2)
        assert isinstance(sem, plait.Semaphore)
        await sem.acquire()
        sem.release()
        with pytest.raises(ValueError, match="released too many times"):
            sem.release()
        assert sem.statistics() == plait.SemaphoreStatistics(2, 2, 0)

    @virtual
    async def test_release_to_waiters_at_zero(self) -> None:
        sem = plait.BoundedSemaphore(1)
        log: list[int] = []
        await sem.acquire()
        async with plait.TaskGroup() as tg:
            for i in range(3):
                await spawn_parked(tg, hold, sem, log, i)
            assert sem.statistics() == plait.SemaphoreStatistics(0, 1, 3)
            sem.release()
        assert log == [0, 1, 2]
        assert sem.value == 1
        with pytest.raises(ValueError, match="BoundedSemaphore"):
            sem.release()


# -- CapacityLimiter ---------------------------------------------------------------------


class TestCapacityLimiter:
    @shared_scenarios
    def test_shared(self, scenario: Any) -> None:
        vrun(scenario, plait.CapacityLimiter(1))

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            *[(0, ValueError), (-1, ValueError), (1.5, TypeError), ("x", TypeError)],
            *[(True, TypeError), (None, TypeError), (-math.inf, TypeError)],
        ],
    )
    def test_bad_total_tokens(self, value: Any, error: type[Exception]) -> None:
        with pytest.raises(error, match="total_tokens"):
            plait.CapacityLimiter(value)
        limiter = plait.CapacityLimiter(3)
        with pytest.raises(error, match="total_tokens"):
            limiter.total_tokens = value
        assert limiter.total_tokens == 3

    @virtual
    async def test_infinite_total_tokens(self) -> None:
        limiter = plait.CapacityLimiter(math.inf)
        for i in range(100):
            await limiter.acquire_on_behalf_of(i)
        assert limiter.borrowed_tokens == 100
        assert limiter.available_tokens == math.inf

    @virtual
    async def test_statistics_and_borrowers(self) -> None:
        limiter = plait.CapacityLimiter(3)
        me = plait.current_task()
        await limiter.acquire()
        borrower = object()
        limiter.acquire_on_behalf_of_nowait(borrower)
        stats = limiter.statistics()
        assert (stats.borrowed_tokens, stats.total_tokens, stats.tasks_waiting) == (2, 3, 0)
        assert sorted(map(id, stats.borrowers)) == sorted([id(me), id(borrower)])
        assert limiter.available_tokens == 1
        limiter.release()
        limiter.release_on_behalf_of(borrower)
        assert limiter.statistics() == plait.CapacityLimiterStatistics(0, 3, [], 0)

    @virtual
    async def test_the_first_waiter_is_the_next_borrower(self) -> None:
        limiter = plait.CapacityLimiter(1)
        log: list[int] = []
        await limiter.acquire()
        async with plait.TaskGroup() as tg:
            tasks = [await spawn_parked(tg, hold, limiter, log, i) for i in range(2)]
            limiter.release()
            assert limiter.statistics().borrowers == [tasks[0]]
        assert log == [0, 1]

    @virtual
    async def test_same_borrower_twice_is_an_error(self) -> None:
        limiter = plait.CapacityLimiter(5)
        await limiter.acquire_on_behalf_of("b")
        with pytest.raises(RuntimeError, match="already holds"):
            await limiter.acquire_on_behalf_of("b")
        with pytest.raises(RuntimeError, match="already holds"):
            limiter.acquire_on_behalf_of_nowait("b")
        async with limiter:
            with pytest.raises(RuntimeError, match="already holds"):
                await limiter.acquire()
        assert limiter.borrowed_tokens == 1

    @virtual
    async def test_same_borrower_while_it_is_still_waiting_is_an_error(self) -> None:
        # A borrower queued twice would be admitted twice for one counted token.
        limiter = plait.CapacityLimiter(1)
        await limiter.acquire()
        outcome: list[str] = []

        async def borrow(tag: str) -> None:
            try:
                await limiter.acquire_on_behalf_of("x")
            except RuntimeError:
                outcome.append(f"{tag} refused")
            else:
                outcome.append(f"{tag} got it")

        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, borrow, "first")
            await spawn_parked(tg, borrow, "second")
            limiter.total_tokens = 3
            limiter.release()
        assert outcome == ["second refused", "first got it"]
        assert limiter.borrowed_tokens == 1

    @virtual
    async def test_a_cancelled_waiters_borrower_is_free_at_once(self) -> None:
        limiter = plait.CapacityLimiter(1)
        await limiter.acquire()
        async with plait.TaskGroup() as tg:
            waiter = await spawn_parked(tg, limiter.acquire_on_behalf_of, "x")
            waiter.cancel()  # the waiter has not run its cleanup yet
            assert limiter.statistics().tasks_waiting == 0
            limiter.release()
            limiter.acquire_on_behalf_of_nowait("x")  # "x" no longer waits: no error
            assert limiter.statistics().borrowers == ["x"]
        assert waiter.cancelled()
        limiter.release_on_behalf_of("x")

    @virtual
    async def test_release_without_holding_is_an_error(self) -> None:
        limiter = plait.CapacityLimiter(2)
        with pytest.raises(RuntimeError, match="holds no token"):
            limiter.release()
        with pytest.raises(RuntimeError, match="holds no token"):
            limiter.release_on_behalf_of("nobody")
        await limiter.acquire()

        async def other() -> None:
            with pytest.raises(RuntimeError, match="holds no token"):
                limiter.release()

        async with plait.TaskGroup() as tg:
            tg.spawn(other)
        assert limiter.borrowed_tokens == 1

    @virtual
    async def test_cancelled_acquire_on_behalf_of_borrows_nothing(self) -> None:
        limiter = plait.CapacityLimiter(1)
        await assert_cancelled_at(lambda: limiter.acquire_on_behalf_of("b"))
        assert limiter.borrowed_tokens == 0

    @virtual
    async def test_raising_total_tokens_wakes_waiters_in_order(self) -> None:
        limiter = plait.CapacityLimiter(1)
        log: list[int] = []
        await limiter.acquire()
        async with plait.TaskGroup() as tg:
            tasks = [await spawn_parked(tg, hold, limiter, log, i, 10) for i in range(5)]
            limiter.total_tokens = 3
            assert limiter.statistics().tasks_waiting == 3
            assert set(limiter.statistics().borrowers) == {plait.current_task(), *tasks[:2]}
            await wait_all_tasks_blocked()
            assert log == [0, 1]
            limiter.total_tokens = math.inf
            await wait_all_tasks_blocked()
            assert log == [0, 1, 2, 3, 4]
            assert limiter.borrowed_tokens == 6
            limiter.release()
        assert plait.current_time() == 10

    @virtual
    async def test_lowering_total_tokens_takes_effect_as_tokens_come_back(self) -> None:
        limiter = plait.CapacityLimiter(3)
        log: list[str] = []
        for b in "abc":
            await limiter.acquire_on_behalf_of(b)
        async with plait.TaskGroup() as tg:
            await spawn_parked(tg, hold, limiter, log, "w")
            limiter.total_tokens = 1
            assert limiter.available_tokens == -2
            limiter.release_on_behalf_of("a")
            limiter.release_on_behalf_of("b")
            await wait_all_tasks_blocked()
            assert log == []
            assert limiter.statistics().tasks_waiting == 1
            with pytest.raises(plait.WouldBlock):
                limiter.acquire_on_behalf_of_nowait("z")
            limiter.release_on_behalf_of("c")
            await wait_all_tasks_blocked()
            assert log == ["w"]
        assert limiter.borrowed_tokens == 0


# -- random contention ------------------------------------------------------------------


def _make(kind: str, k: int) -> tuple[Any, int, Callable[[], bool]]:
    """The primitive, its capacity, and "no token is free right now"."""
    if kind == "lock":
        lock = plait.Lock()
        return lock, 1, lock.locked
    if kind in {"semaphore", "bounded"}:
        sem = plait.Semaphore(k) if kind == "semaphore" else plait.BoundedSemaphore(k)
        return sem, k, lambda: sem.value == 0
    limiter = plait.CapacityLimiter(k)
    return limiter, k, lambda: limiter.available_tokens <= 0


worker_specs = st.lists(
    st.tuples(
        st.integers(0, 6),  # start delay
        st.integers(0, 4),  # hold time
        st.booleans(),  # try acquire_nowait first
        st.none() | st.integers(0, 12),  # cancel at this virtual time
    ),
    min_size=1,
    max_size=25,
)


class TestContention:
    @settings(max_examples=100, deadline=None)
    @given(
        kind=st.sampled_from(["lock", "semaphore", "bounded", "limiter"]),
        k=st.integers(1, 4),
        specs=worker_specs,
    )
    def test_random_acquires_sleeps_and_cancellations(
        self, kind: str, k: int, specs: list[tuple[int, int, bool, int | None]]
    ) -> None:
        async def main() -> None:
            prim, capacity, exhausted = _make(kind, k)
            holders: list[int] = []
            queued: list[int] = []  # the workers that had to wait, in queue order
            acquired: list[int] = []  # the order in which they got it

            async def worker(i: int, delay: int, hold_for: int, nowait: bool) -> None:
                await plait.sleep(delay)
                waiting = prim.statistics().tasks_waiting
                if waiting or exhausted():
                    queued.append(i)
                if nowait:
                    try:
                        prim.acquire_nowait()
                    except plait.WouldBlock:
                        assert waiting or exhausted(), "WouldBlock with a free token"
                        await prim.acquire()
                    else:
                        assert not waiting, "acquire_nowait barged in ahead of waiters"
                else:
                    await prim.acquire()
                holders.append(i)
                acquired.append(i)
                try:
                    assert len(holders) <= capacity
                    await plait.sleep(hold_for)
                finally:
                    holders.remove(i)
                    prim.release()

            async def cancel_at(task: plait.Task, when: int) -> None:
                await plait.sleep(when)
                task.cancel()

            with plait.fail_after(1000):  # a leaked token would deadlock: fail instead
                async with plait.TaskGroup() as tg:
                    tasks = []
                    for i, (delay, hold_for, nowait, when) in enumerate(specs):
                        task = tg.spawn(worker, i, delay, hold_for, nowait)
                        tasks.append(task)
                        if when is not None:
                            tg.spawn(cancel_at, task, when)
            for i, task in enumerate(tasks):
                if not task.cancelled():
                    assert i in acquired
            # FIFO: the waiters that were not cancelled were served in queue order.
            assert [i for i in acquired if i in queued] == [i for i in queued if i in acquired]
            assert holders == []
            assert is_idle(prim, k), prim.statistics()

        vrun(main)


class TestReviewRegressions:
    def test_release_from_a_loop_callback_is_an_error(self) -> None:
        async def main() -> list[str]:
            lock = plait.Lock()
            errors: list[str] = []

            def from_callback() -> None:
                try:
                    lock.release()
                except RuntimeError as exc:
                    errors.append(str(exc))

            plait.lowlevel.current_loop().call_soon(from_callback)
            await wait_all_tasks_blocked()
            await plait.checkpoint()
            return errors

        errors = vrun(main)
        assert len(errors) == 1
        assert "callback" in errors[0]

    def test_a_cancelled_waiter_is_not_kept_alive_by_its_ticket(self) -> None:
        import gc
        import weakref

        class Item:
            pass

        refs: list[weakref.ref[Any]] = []

        async def main() -> None:
            q: plait.Queue[object] = plait.Queue(1)
            q.put_nowait("x")
            item = Item()
            refs.append(weakref.ref(item))
            async with plait.TaskGroup() as tg:
                t = tg.spawn(q.put, item)
                del item
                await wait_all_tasks_blocked()
                t.cancel()
            refs.append(weakref.ref(t))
            del t, tg
            assert q.qsize() == 1

        gc.collect()
        gc.disable()
        try:
            vrun(main)
            assert [r() for r in refs] == [None, None]
        finally:
            gc.enable()
