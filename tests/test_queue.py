"""Queue, LifoQueue, PriorityQueue: order, blocking, checkpoints, hand-offs under
cancellation, close, task_done/join, and the no-loss rules checked with hypothesis.

Every test runs on a MockClock with autojump_threshold=0. "The same step" below: a task
spawned right after another runs right after that one's first step, before anything
that step woke (the ready queue is FIFO), so it can act "right after" an operation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import traceback
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plait
from helpers import vrun as run
from plait.testing import wait_all_tasks_blocked

KINDS = [plait.Queue, plait.LifoQueue, plait.PriorityQueue]


async def spawn_blocked(tg, fn, *args_list):
    """Spawn ``fn(*args)`` for each ``args``, each parked before the next starts."""
    tasks = []
    for args in args_list:
        tasks.append(tg.spawn(fn, *args))
        await wait_all_tasks_blocked()
    return tasks


async def fill_then_get(q, items, blocked_put):
    """put ``items``, block a putter with ``blocked_put``, then get everything."""
    for item in items:
        await q.put(item)
    async with plait.TaskGroup() as tg:
        await spawn_blocked(tg, q.put, (blocked_put,))
        out = [await q.get()]
    return out + [q.get_nowait() for _ in range(q.qsize())]


class TestQueue:
    def test_fifo_order_and_sizes(self):
        async def main():
            q = plait.Queue()
            assert (q.qsize(), q.empty(), q.full(), q.maxsize) == (0, True, False, 0)
            for i in (3, 1, 2):
                await q.put(i)
            assert (q.qsize(), q.empty(), q.full()) == (3, False, False)
            return [await q.get() for _ in range(3)], q.empty()

        assert run(main) == ([3, 1, 2], True)
        assert run(fill_then_get, plait.Queue(2), "ab", "c") == ["a", "b", "c"]

    @pytest.mark.parametrize("maxsize", [0, math.inf])
    def test_unbounded_never_blocks(self, maxsize):
        async def main():
            q = plait.Queue(maxsize)
            for i in range(1000):
                q.put_nowait(i)
                await q.put(-i)
            assert (q.qsize(), q.full(), q.maxsize, plait.current_time()) == (2000, False, 0, 0)

        run(main)

    def test_bounded_queue_blocks_putters_who_enter_in_the_order_they_blocked(self):
        async def main():
            q = plait.Queue(1)
            await q.put(0)
            assert q.full() and q.maxsize == 1
            with pytest.raises(plait.WouldBlock):
                q.put_nowait("x")
            async with plait.TaskGroup() as tg:
                tasks = await spawn_blocked(tg, q.put, (1,), (2,), (3,), (4,))
                tasks[2].cancel()  # item 3 never enters
                await plait.sleep(5)
                assert q.statistics().tasks_waiting_put == 3 and not tasks[0].done()
                assert q.get_nowait() == 0  # lets 1 in at once: that put has completed
                assert q.qsize() == 1 and q.statistics().tasks_waiting_put == 2
                tasks[0].cancel()  # too late: the put returns normally
                out = [await q.get() for _ in range(3)]
            assert tasks[2].cancelled() and q.empty()
            assert not tasks[0].cancelled() and tasks[0].result() is None
            return out

        assert run(main) == [1, 2, 4]

    def test_getters_are_served_in_the_order_they_blocked(self):
        # 70 of 100 parked getters cancelled (the parking lot compacts): the rest are
        # handed items oldest first, and a cancelled getter is handed nothing.
        got = []

        async def getter(i):
            got.append((i, await q.get()))

        async def main():
            async with plait.TaskGroup() as tg:
                tasks = [tg.spawn(getter, i) for i in range(100)]
                await wait_all_tasks_blocked()
                for i, task in enumerate(tasks):
                    if i % 10 < 7:
                        task.cancel()
                await wait_all_tasks_blocked()
                assert q.statistics().tasks_waiting_get == 30
                for item in range(30):
                    if item % 2:
                        q.put_nowait(item)
                    else:
                        await q.put(item)
                    assert q.qsize() == 0  # handed straight over
            assert q.statistics().unfinished_tasks == 30

        q = plait.Queue()
        run(main)
        survivors = [i for i in range(100) if i % 10 >= 7]
        assert got == list(zip(survivors, range(30), strict=True))

    def test_none_and_falsy_items_are_handed_over_intact(self):
        async def main():
            q = plait.Queue()
            with pytest.raises(plait.WouldBlock):
                q.get_nowait()
            async with plait.TaskGroup() as tg:
                tasks = [tg.spawn(q.get) for _ in range(3)]
                await wait_all_tasks_blocked()
                for item in (None, 0, ""):
                    await q.put(item)
            return [t.result() for t in tasks]

        assert run(main) == [None, 0, ""]

    @pytest.mark.parametrize("bad", [-1, -math.inf, 1.5, math.nan])
    def test_bad_maxsize_value(self, bad):
        with pytest.raises(ValueError):
            plait.Queue(bad)

    @pytest.mark.parametrize("bad", ["3", True, None])
    def test_bad_maxsize_type(self, bad):
        with pytest.raises(TypeError, match="maxsize"):
            plait.Queue(bad)

    def test_statistics_is_a_frozen_dataclass(self):
        async def put_until_closed(item):
            with pytest.raises(plait.ClosedResourceError):
                await q.put(item)

        async def main():
            assert dataclasses.astuple(q.statistics()) == (0, 1, False, 0, 0, 0)
            async with plait.TaskGroup() as tg:
                await spawn_blocked(tg, q.get, (), ())
                assert q.statistics().tasks_waiting_get == 2
                for item in (1, 2, 3):
                    await q.put(item)
                await spawn_blocked(tg, put_until_closed, (4,))
                stats = q.statistics()
                assert (stats.qsize, stats.tasks_waiting_put, stats.unfinished_tasks) == (1, 1, 3)
                q.task_done()
                q.close()
            stats = q.statistics()
            assert stats.closed and stats.tasks_waiting_put == 0 and stats.unfinished_tasks == 2
            with pytest.raises(dataclasses.FrozenInstanceError):
                stats.qsize = 5  # type: ignore[misc]

        q = plait.Queue(1)
        run(main)

    def test_repr(self):
        q = plait.Queue()
        q.put_nowait(1)
        assert repr(q) == "<plait.Queue 1>"
        b = plait.LifoQueue(3)
        b.put_nowait(1)
        b.put_nowait(2)
        assert repr(b) == "<plait.LifoQueue 2/3>"
        b.close()
        assert repr(b) == "<plait.LifoQueue 2/3 closed>"
        assert repr(plait.PriorityQueue(1)) == "<plait.PriorityQueue 0/1>"


class TestLifoQueue:
    def test_newest_first_and_a_blocked_putter_enters_on_top(self):
        assert run(fill_then_get, plait.LifoQueue(), [3, 1, 2], 0) == [0, 2, 1, 3]
        assert run(fill_then_get, plait.LifoQueue(2), "ab", "c") == ["b", "c", "a"]


class TestPriorityQueue:
    def test_smallest_first_and_a_blocked_putter_takes_its_place(self):
        items = [(5, "e"), (1, "a"), (3, "c"), (2, "b"), (4, "d")]
        out = run(fill_then_get, plait.PriorityQueue(), items, (0, "z"))
        assert out == [(0, "z"), *sorted(items)]  # the unbounded put never blocked
        assert run(fill_then_get, plait.PriorityQueue(2), [5, 9], 1) == [5, 1, 9]


class TestQueueCheckpoints:
    """put/get are checkpoints even when they need not wait; a cancelled put enqueues
    nothing and a cancelled get consumes nothing."""

    @pytest.mark.parametrize("op", ["put", "get", "join"])
    def test_non_blocking_op_lets_other_tasks_run(self, op):
        log = []

        async def other():
            log.append("other")

        async def main():
            q = plait.Queue(1)
            if op == "get":
                q.put_nowait(1)
            async with plait.TaskGroup() as tg:
                tg.spawn(other)
                await getattr(q, op)(*([1] if op == "put" else []))
                assert log == ["other"]

        run(main)

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("getter_waiting", [False, True])
    def test_cancelled_non_blocking_put_enqueues_nothing(self, kind, getter_waiting):
        async def main():
            q = kind()
            async with plait.TaskGroup() as tg:
                getters = await spawn_blocked(tg, q.get, *[()] * getter_waiting)
                with plait.CancelScope() as cs:
                    cs.cancel()
                    await q.put(1)
                    pytest.fail("a cancelled put returned")
                assert cs.cancelled_caught
                stats = q.statistics()
                assert (stats.qsize, stats.unfinished_tasks) == (0, 0)
                assert stats.tasks_waiting_get == len(getters)  # not handed over
                await q.put(2)
            assert [g.result() for g in getters] == [2] * len(getters)

        run(main)

    @pytest.mark.parametrize("kind", KINDS)
    def test_cancelled_non_blocking_get_consumes_nothing(self, kind):
        async def main():
            q = kind(1)
            q.put_nowait(7)
            async with plait.TaskGroup() as tg:
                (putter,) = await spawn_blocked(tg, q.put, (8,))
                with plait.CancelScope() as cs:
                    cs.cancel()
                    await q.get()
                    pytest.fail("a cancelled get returned")
                assert cs.cancelled_caught
                # Nothing consumed, and the blocked putter was not let in.
                assert (q.qsize(), q.statistics().tasks_waiting_put) == (1, 1)
                assert await q.get() == 7
            assert putter.result() is None
            assert q.get_nowait() == 8

        run(main)

    def test_cancelled_wins_over_closed_errors_and_empty_join(self):
        async def main():
            q = plait.Queue()
            q.close()
            with plait.CancelScope() as cs:
                cs.cancel()
                for op in (q.put(1), q.get(), q.join()):
                    with pytest.raises(plait.Cancelled):
                        await op

        run(main)


class TestQueueHandOff:
    """The uncancellable schedule point after an operation that has done its work."""

    @pytest.mark.parametrize(
        ("kind", "getter_waiting"), [(k, False) for k in KINDS] + [(plait.Queue, True)]
    )
    @pytest.mark.parametrize("how", ["scope", "task"])
    def test_putter_cancelled_right_after_its_put_still_completes(self, kind, getter_waiting, how):
        log = []

        async def putter():
            with plait.CancelScope() as cs:
                scopes.append(cs)
                await q.put("x")  # into the queue or handed over, then a schedule point
                log.append("put returned")
                await plait.checkpoint()
                log.append("not reached")
            log.append("scope caught")

        async def canceller(task):
            # The same step as the put: it has done its work but not returned yet.
            assert log == [] and q.qsize() == (0 if getter_waiting else 1)
            assert q.statistics().tasks_waiting_get == 0
            scopes[0].cancel() if how == "scope" else task.cancel()

        async def main():
            async with plait.TaskGroup() as tg:
                getters = await spawn_blocked(tg, q.get, *[()] * getter_waiting)
                task = tg.spawn(putter)
                tg.spawn(canceller, task)
            assert task.cancelled() == (how == "task")
            taken = [g.result() for g in getters] + [q.get_nowait() for _ in range(q.qsize())]
            assert taken == ["x"]

        q, scopes = kind(), []
        run(main)
        assert log == ["put returned", "scope caught"][: 2 if how == "scope" else 1]

    @pytest.mark.parametrize(
        ("kind", "getter_waiting"), [(k, False) for k in KINDS] + [(plait.Queue, True)]
    )
    @pytest.mark.parametrize("how", ["scope", "task"])
    def test_getter_cancelled_after_taking_still_returns_the_item(self, kind, getter_waiting, how):
        # Not waiting: the get takes the item, then is cancelled at its schedule point.
        # Waiting: the item is handed over, then the getter is cancelled before it runs.
        log = []

        async def getter():
            with plait.CancelScope() as cs:
                scopes.append(cs)
                log.append(await q.get())
                await plait.checkpoint()
                log.append("not reached")
            log.append("scope caught")

        def cancel(task):
            assert q.empty() and log == []  # taken, but the get has not returned yet
            scopes[0].cancel() if how == "scope" else task.cancel()

        async def canceller(task):
            cancel(task)

        async def main():
            async with plait.TaskGroup() as tg:
                if getter_waiting:
                    (task,) = await spawn_blocked(tg, getter, ())
                    q.put_nowait("x")
                    cancel(task)
                else:
                    q.put_nowait("x")
                    task = tg.spawn(getter)
                    tg.spawn(canceller, task)  # runs in the same step as the get
            assert task.cancelled() == (how == "task")
            assert q.empty() and q.statistics().unfinished_tasks == 1

        q, scopes = kind(), []
        run(main)
        assert log == ["x", "scope caught"][: 2 if how == "scope" else 1]


class TestQueueClose:
    def test_get_drains_then_end_of_stream_and_put_raises(self):
        async def main():
            q = plait.Queue()
            for i in range(3):
                await q.put(i)
            q.close()
            q.close()  # idempotent
            assert q.closed()
            with pytest.raises(plait.ClosedResourceError):
                await q.put(9)
            with pytest.raises(plait.ClosedResourceError):
                q.put_nowait(9)
            drained = [await q.get(), q.get_nowait(), await q.get()]
            for _ in range(2):  # and it stays ended
                with pytest.raises(plait.EndOfStream):
                    await q.get()
                with pytest.raises(plait.EndOfStream):
                    q.get_nowait()
            return drained

        assert run(main) == [0, 1, 2]

    @pytest.mark.parametrize("kind", KINDS)
    def test_blocked_getters_and_putters_are_woken_with_errors(self, kind):
        async def getter():
            with pytest.raises(plait.EndOfStream):
                await q.get()

        async def putter(item):
            with pytest.raises(plait.ClosedResourceError):
                await q.put(item)

        async def main():
            async with plait.TaskGroup() as tg:
                await spawn_blocked(tg, getter, (), ())
                q.close()
            q2.put_nowait(1)
            async with plait.TaskGroup() as tg:
                await spawn_blocked(tg, putter, (2,), (3,))
                q2.close()
            stats = q2.statistics()  # the blocked putters' items were not enqueued
            assert (stats.qsize, stats.tasks_waiting_put, stats.unfinished_tasks) == (1, 0, 1)
            return [item async for item in q2]

        q, q2 = kind(), kind(1)
        assert run(main) == [1]
        assert q.statistics().tasks_waiting_get == 0

    def test_each_woken_waiter_gets_its_own_exception(self):
        # One exception instance thrown into several tasks collects every task's
        # frames in one shared __traceback__: each must get its own.
        caught = {}

        async def waiter(name, op, *args):
            try:
                await op(*args)
            except (plait.EndOfStream, plait.ClosedResourceError) as exc:
                caught[name] = exc

        async def main():
            q2.put_nowait(1)
            async with plait.TaskGroup() as tg:
                await spawn_blocked(tg, waiter, ("g1", q.get), ("g2", q.get))
                await spawn_blocked(tg, waiter, ("p1", q2.put, 2), ("p2", q2.put, 3))
                q.close()
                q2.close()

        q, q2 = plait.Queue(), plait.Queue(1)
        run(main)
        assert caught["g1"] is not caught["g2"]
        assert caught["p1"] is not caught["p2"]
        frames = [f.name for f in traceback.extract_tb(caught["g1"].__traceback__)]
        assert frames.count("waiter") == 1

    def test_async_for_ends_at_end_of_stream(self):
        async def producer():
            for i in range(4):
                await q.put(i)
                await plait.sleep(1)
            q.close()

        async def main():
            async with plait.TaskGroup() as tg:
                tg.spawn(producer)
                items = [item async for item in q]
            assert plait.current_time() == 4
            assert [item async for item in q] == []
            return items

        q = plait.Queue(1)
        assert run(main) == [0, 1, 2, 3]


class TestQueueJoin:
    def test_join_waits_for_every_task_done(self):
        async def worker():
            for _ in range(3):
                await q.get()
                await plait.sleep(1)
                q.task_done()

        async def main():
            for i in range(3):
                q.put_nowait(i)
            with plait.move_on_after(0.5) as cs:
                await q.join()
            assert cs.cancelled_caught and q.statistics().unfinished_tasks == 3
            async with plait.TaskGroup() as tg:
                tg.spawn(worker)
                joiners = [tg.spawn(q.join) for _ in range(2)]
                await q.join()
                assert plait.current_time() == 3.5
            assert all(t.result() is None for t in joiners)

        q = plait.Queue()
        run(main)

    def test_task_done_too_often(self):
        q = plait.Queue()
        with pytest.raises(ValueError, match="task_done"):
            q.task_done()
        q.put_nowait(1)
        q.get_nowait()
        q.task_done()
        with pytest.raises(ValueError, match="task_done"):
            q.task_done()

    def test_unfinished_counts_hand_offs_and_not_cancelled_puts(self):
        async def main():
            q = plait.Queue(1)
            async with plait.TaskGroup() as tg:
                await spawn_blocked(tg, q.get, ())
                await q.put("handed")
                await q.put("kept")
                (blocked,) = await spawn_blocked(tg, q.put, ("cancelled",))
                blocked.cancel()
            assert blocked.cancelled()
            return q.statistics().unfinished_tasks

        assert run(main) == 2


# -- the no-loss property -------------------------------------------------------------

CANCEL = st.one_of(st.none(), st.tuples(st.sampled_from(["scope", "task"]), st.integers(0, 12)))
DELAYS = st.lists(st.integers(0, 3), max_size=4)  # cycled: sleeps between operations
PRODUCERS = st.lists(
    st.tuples(st.integers(0, 6), DELAYS, CANCEL, st.booleans()), min_size=1, max_size=5
)
CONSUMERS = st.lists(st.tuples(DELAYS, CANCEL, st.booleans()), min_size=1, max_size=5)
LATE = 13  # after every cancellation


def spawn_maybe_cancelled(tg, cancel, fn, *args):
    """Spawn ``fn(*args)``, maybe inside move_on_after(t), maybe task.cancel()ed at t."""
    if cancel is None:
        tg.spawn(fn, *args)
    elif cancel[0] == "scope":

        async def in_scope():
            with plait.move_on_after(cancel[1]):
                await fn(*args)

        tg.spawn(in_scope)
    else:
        task = tg.spawn(fn, *args)

        async def canceller():
            await plait.sleep(cancel[1])
            task.cancel()

        tg.spawn(canceller)


class TestQueueNoLoss:
    @settings(deadline=None, max_examples=150, derandomize=True)
    @given(st.sampled_from(KINDS), st.integers(0, 4), PRODUCERS, CONSUMERS)
    def test_nothing_lost_duplicated_or_from_a_cancelled_put(
        self, kind, maxsize, producers, consumers
    ):
        q = kind(maxsize)
        enqueued = {p: [] for p in range(len(producers))}
        refused, consumed = [], []

        async def producer(p, count, delays, nowait):
            for i, delay in zip(range(count), itertools.cycle(delays or [0]), strict=False):
                if delay:
                    await plait.sleep(delay)
                item = (p, i)
                try:
                    if nowait and i % 2:
                        try:
                            q.put_nowait(item)
                        except plait.WouldBlock:
                            await q.put(item)
                    else:
                        await q.put(item)
                except plait.Cancelled:
                    refused.append(item)
                    raise
                enqueued[p].append(item)

        async def consumer(delays, nowait):
            for i, delay in enumerate(itertools.cycle(delays or [0])):
                try:
                    if nowait and i % 2:
                        try:
                            item = q.get_nowait()
                        except plait.WouldBlock:
                            item = await q.get()
                        else:
                            # As a get does: to the back of the ready queue before
                            # recording, so that consumed is in the order items left.
                            with plait.CancelScope(shield=True):
                                await plait.checkpoint()
                    else:
                        item = await q.get()
                except plait.EndOfStream:
                    return
                consumed.append(item)
                q.task_done()
                if delay:
                    await plait.sleep(delay)

        async def late_consumer():
            # Never cancelled: producers cannot stay blocked once all else is cancelled.
            await plait.sleep(LATE)
            await consumer([], nowait=False)

        async def main():
            async with plait.TaskGroup() as tg:
                tg.spawn(late_consumer)
                for delays, cancel, nowait in consumers:
                    spawn_maybe_cancelled(tg, cancel, consumer, delays, nowait)
                async with plait.TaskGroup() as producers_tg:
                    for p, (count, delays, cancel, nowait) in enumerate(producers):
                        spawn_maybe_cancelled(
                            producers_tg, cancel, producer, p, count, delays, nowait
                        )
                q.close()
                async for item in q:  # the final drain
                    consumed.append(item)
                    q.task_done()
            stats = q.statistics()
            assert (stats.qsize, stats.tasks_waiting_get, stats.tasks_waiting_put) == (0, 0, 0)
            assert stats.unfinished_tasks == 0
            await q.join()

        run(main)
        all_enqueued = [item for items in enqueued.values() for item in items]
        # Nothing lost, nothing duplicated, nothing from a put that raised Cancelled.
        assert Counter(consumed) == Counter(all_enqueued)
        assert not set(refused) & set(all_enqueued)
        for p, items in enqueued.items():
            # A producer's completed puts are a prefix of its items; the one refused,
            # if any, is the next (its Cancelled stops the producer).
            assert items == [(p, i) for i in range(len(items))]
            assert [item for item in refused if item[0] == p] in ([], [(p, len(items))])
            if kind is plait.Queue:  # FIFO per producer
                assert [item for item in consumed if item[0] == p] == items


class TestPriorityQueueIncomparable:
    """Items a heap cannot order are refused without breaking the no-loss rules."""

    def test_put_of_an_incomparable_item_enqueues_nothing(self) -> None:
        async def main() -> None:
            q: plait.PriorityQueue[object] = plait.PriorityQueue()
            q.put_nowait(1)
            with pytest.raises(TypeError):
                q.put_nowait("a")
            with pytest.raises(TypeError):
                await q.put("b")
            assert q.qsize() == 1
            assert q.statistics().unfinished_tasks == 1
            assert q.get_nowait() == 1

        run(main)

    def test_blocked_incomparable_put_fails_and_the_get_keeps_its_item(self) -> None:
        async def main() -> None:
            q: plait.PriorityQueue[object] = plait.PriorityQueue(2)
            q.put_nowait(1)
            q.put_nowait(2)
            outcome: list[str] = []

            async def putter(item: object) -> None:
                try:
                    await q.put(item)
                except TypeError:
                    outcome.append(f"{item!r} refused")
                else:
                    outcome.append(f"{item!r} enqueued")

            async with plait.TaskGroup() as tg:
                tg.spawn(putter, "a")
                await wait_all_tasks_blocked()
                tg.spawn(putter, 0)
                await wait_all_tasks_blocked()
                assert q.get_nowait() == 1  # room for one: "a" fails, then 0 gets in
            assert outcome == ["'a' refused", "0 enqueued"]
            assert [q.get_nowait(), q.get_nowait()] == [0, 2]
            assert q.statistics().unfinished_tasks == 3

        run(main)
