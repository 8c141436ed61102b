"""ThreadQueue between threads and tasks: mixes of producers and consumers, the no-loss
rules under cancellation, task_done/join, backpressure, two loops in two threads,
fairness, shutdown (3.13+) and bad arguments. (The thread-only ``queue.Queue``
behaviour is CPython's own test file: tests/test_threadqueue_cpython.py.)

Determinism: threads are joined with timeouts; a step that must happen while a thread
is blocked first waits until ``statistics()`` shows it blocked (polling a condition,
not guessing a time). Tests without threads run on a MockClock.
"""

from __future__ import annotations

import gc
import queue
import random
import signal
import sys
import threading
import time
import weakref
from collections import Counter

import pytest

import plait
from helpers import vrun
from plait._threadqueue import (
    ThreadLifoQueue,
    ThreadPriorityQueue,
    ThreadQueue,
    ThreadQueueStatistics,
)
from plait.testing import wait_all_tasks_blocked

N = 10_000
DEADLINE = 30.0
needs_shutdown = pytest.mark.skipif(sys.version_info < (3, 13), reason="queue.ShutDown: 3.13+")


def wait_until(pred):
    """In a thread: poll ``pred`` until true (a wait for a state, not a timing guess)."""
    deadline = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.0005)


async def until(pred):
    """In a task: as :func:`wait_until`, without blocking the loop."""
    deadline = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        await plait.sleep(0.0005)


class Crew:
    """Threads started from a task; ``await crew.wait()`` joins them without blocking
    the loop (each thread tells the loop when it ends) and re-raises their errors."""

    def __init__(self):
        self.token = plait.lowlevel.current_token()
        self.threads, self.errors, self.left = [], [], 0
        self.done = plait.Event()

    def start(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                try:
                    self.token.run_sync_soon(self._exited)
                except RuntimeError:  # the loop is gone: the test failed already
                    pass

        self.left += 1
        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _exited(self):
        self.left -= 1
        if not self.left:
            self.done.set()

    async def wait(self):
        if self.left:
            await self.done.wait()
        for thread in self.threads:
            thread.join(DEADLINE)
            assert not thread.is_alive()
        if self.errors:
            raise self.errors[0]


class TestMixedProducersAndConsumers:
    @pytest.mark.parametrize("maxsize", [0, 7])
    def test_threads_and_tasks_on_both_sides_every_item_exactly_once(self, maxsize):
        """4 producer threads + 2 producer tasks, 4 consumer tasks + 2 consumer threads,
        10k items per producer: the multiset received is the multiset sent, and each
        consumer sees each producer's items in the order they were put (FIFO)."""
        received = {}

        async def main():
            q = ThreadQueue(maxsize)
            consumers, producers = Crew(), Crew()

            def thread_producer(p):
                for i in range(N):
                    q.put((p, i), timeout=DEADLINE)

            async def task_producer(p):
                for i in range(N):
                    await q.aput((p, i))

            def thread_consumer(c):
                out = received[c] = []
                while (item := q.get(timeout=DEADLINE)) is not None:
                    out.append(item)

            async def task_consumer(c):
                out = received[c] = []
                async for item in q:
                    if item is None:
                        return
                    out.append(item)

            async with plait.TaskGroup() as tg:
                for c in range(4):
                    tg.spawn(task_consumer, f"task-consumer-{c}")
                for c in range(2):
                    consumers.start(thread_consumer, f"thread-consumer-{c}")
                async with plait.TaskGroup() as ptg:
                    for p in range(2):
                        ptg.spawn(task_producer, f"task-producer-{p}")
                    for p in range(4):
                        producers.start(thread_producer, f"thread-producer-{p}")
                await producers.wait()
                for _ in range(6):
                    await q.aput(None)
            await consumers.wait()
            nobody_waits = dict.fromkeys(
                (
                    f"{who}_waiting_{op}"
                    for who in ("tasks", "threads")
                    for op in ("get", "put", "join")
                ),
                0,
            )
            assert q.statistics() == ThreadQueueStatistics(
                qsize=0,
                maxsize=maxsize,
                is_shutdown=False,
                unfinished_tasks=6 * N + 6,
                **nobody_waits,
            )

        plait.run(main)
        names = [
            f"{kind}-producer-{p}" for kind, n in (("task", 2), ("thread", 4)) for p in range(n)
        ]
        everything = Counter(item for out in received.values() for item in out)
        assert everything == Counter((p, i) for p in names for i in range(N))
        for out in received.values():
            for p in names:
                seq = [i for q, i in out if q == p]
                assert seq == sorted(seq)

    def test_threads_blocked_with_a_timeout_are_served_by_tasks(self):
        async def main():
            q, crew, out = ThreadQueue(1), Crew(), []
            crew.start(lambda: out.append(q.get(timeout=DEADLINE)))
            await until(lambda: q.statistics().threads_waiting_get == 1)
            await q.aput("x")  # wakes the thread blocked in get(timeout=...)
            await crew.wait()
            q.put_nowait("a")
            crew = Crew()
            crew.start(q.put, "b", True, DEADLINE)
            await until(lambda: q.statistics().threads_waiting_put == 1)
            assert await q.aget() == "a"  # admits the thread blocked in put(timeout=...)
            await crew.wait()
            assert out == ["x"] and q.get_nowait() == "b"

        plait.run(main)


class TestCancellation:
    def test_cancelled_before_touching_anything(self):
        async def main():
            q = ThreadQueue(1)
            q.put_nowait("a")
            with plait.CancelScope() as cs:
                cs.cancel()
                await q.aget()
            with plait.CancelScope() as cs:
                cs.cancel()
                await q.aput("b")
            assert q.get_nowait() == "a" and q.empty() and q.unfinished_tasks == 1

        vrun(main)

    def test_a_completed_op_ends_with_an_uncancellable_schedule_point(self):
        async def main():
            q = ThreadQueue()
            q.put_nowait("a")
            got = []
            async with plait.TaskGroup() as tg:
                scope = plait.CancelScope()

                async def getter():
                    with scope:
                        got.append(await q.aget())  # completes, then a schedule point
                        await plait.checkpoint()  # here the cancellation lands
                        got.append("not reached")

                async def cancel():
                    scope.cancel()

                tg.spawn(getter)
                tg.spawn(cancel)  # runs while the getter is at its schedule point
            assert got == ["a"] and scope.cancelled_caught

        vrun(main)

    def test_a_parked_waiter_cancelled_receives_nothing(self):
        async def main():
            q = ThreadQueue(1)
            async with plait.TaskGroup() as tg:
                t1 = tg.spawn(q.aget)
                t2 = tg.spawn(q.aget)
                await wait_all_tasks_blocked()
                t1.cancel()
                await wait_all_tasks_blocked()
                assert q.statistics().tasks_waiting_get == 1
                q.put_nowait("x")
            assert await t2 == "x"
            q.put_nowait("y")
            async with plait.TaskGroup() as tg:
                t3 = tg.spawn(q.aput, "z")
                await wait_all_tasks_blocked()
                t3.cancel()
            assert q.get_nowait() == "y" and q.empty() and q.unfinished_tasks == 2

        vrun(main)

    def test_a_hand_over_in_flight_beats_the_cancellation(self):
        """A thread hands an item to a parked task; the task is cancelled before its
        loop runs the wake-up: the cancellation is refused for that wait (Abort.FAILED),
        the item is delivered, and Cancelled comes at the next checkpoint."""

        def in_a_thread(fn, *args):  # deliberately blocks the loop: the wake-up waits
            thread = threading.Thread(target=fn, args=args)
            thread.start()
            thread.join(DEADLINE)
            assert not thread.is_alive()

        async def main():
            q, got = ThreadQueue(1), []

            async def getter(scope):
                with scope:
                    got.append(await q.aget())
                    await plait.checkpoint()

            async def putter(scope, item):
                with scope:
                    await q.aput(item)
                    got.append(("put", item))
                    await plait.checkpoint()

            async with plait.TaskGroup() as tg:
                scope = plait.CancelScope()
                tg.spawn(getter, scope)
                await wait_all_tasks_blocked()
                in_a_thread(q.put, "x")  # handed over; wake-up posted, not yet run
                scope.cancel()
            assert got == ["x"] and scope.cancelled_caught and q.empty()

            q.put_nowait("a")
            async with plait.TaskGroup() as tg:
                scope = plait.CancelScope()
                tg.spawn(putter, scope, "b")
                await wait_all_tasks_blocked()
                in_a_thread(q.get)  # takes "a" and admits "b"
                scope.cancel()
            assert got == ["x", ("put", "b")] and q.get_nowait() == "b"

        plait.run(main)

    @pytest.mark.parametrize("seed", [1, 2])
    def test_cancelled_aget_and_aput_under_load_lose_and_duplicate_nothing(self, seed):
        rng = random.Random(seed)
        sent, received = [], []
        per_producer = 3000

        async def main():
            q = ThreadQueue(4)
            scopes, crew, producers = {}, Crew(), Crew()

            async def task_producer(p):
                for i in range(per_producer):
                    while True:
                        with plait.CancelScope() as scopes[p]:
                            await q.aput((p, i))
                            sent.append((p, i))
                            break
                        # Cancelled: not enqueued; send it again.

            def thread_producer(p):
                for i in range(per_producer):
                    q.put((p, i), timeout=DEADLINE)
                    sent.append((p, i))

            async def task_consumer(c):
                while True:
                    with plait.CancelScope() as scopes[c]:
                        item = await q.aget()
                        if item is None:
                            return
                        received.append(item)

            def thread_consumer():
                while (item := q.get(timeout=DEADLINE)) is not None:
                    received.append(item)

            async def canceller(stop):
                while not stop.is_set():
                    await plait.checkpoint()
                    scopes[rng.choice(sorted(scopes))].cancel()

            stop = plait.Event()
            async with plait.TaskGroup() as tg:
                tg.spawn(canceller, stop)
                async with plait.TaskGroup() as consumers:
                    for c in range(3):
                        consumers.spawn(task_consumer, f"c{c}")
                    for _ in range(2):
                        crew.start(thread_consumer)
                    async with plait.TaskGroup() as ptg:
                        for p in range(2):
                            ptg.spawn(task_producer, f"tp{p}")
                            producers.start(thread_producer, f"thp{p}")
                    await producers.wait()
                    for _ in range(5):
                        await q.aput(None)  # the canceller spares this task's scope
                stop.set()
            await crew.wait()

        plait.run(main)
        assert len(sent) == len(set(sent)) == 4 * per_producer
        assert Counter(received) == Counter(sent)


class TestJoin:
    def test_a_thread_joins_while_tasks_mark_the_items_done(self):
        async def main():
            q, crew = ThreadQueue(), Crew()
            for i in range(100):
                q.put(i)
            crew.start(q.join)
            await until(lambda: q.statistics().threads_waiting_join == 1)
            for _ in range(100):
                await q.aget()
                assert crew.left == 1
                q.task_done()
            await crew.wait()
            assert q.unfinished_tasks == 0

        plait.run(main)

    def test_a_task_joins_while_threads_mark_the_items_done(self):
        async def main():
            q, crew = ThreadQueue(), Crew()

            def worker():
                while q.get(timeout=DEADLINE) is not None:
                    q.task_done()
                q.task_done()

            for i in range(200):
                await q.aput(i)
            for _ in range(2):
                crew.start(worker)
            await q.ajoin()
            assert q.unfinished_tasks == 0 and q.empty()
            for _ in range(2):
                await q.aput(None)
            await crew.wait()
            await q.ajoin()  # nothing left: a checkpoint only

        plait.run(main)

    def test_ajoin_is_a_checkpoint_and_cancellable(self):
        async def main():
            q = ThreadQueue()
            with plait.CancelScope() as cs:
                cs.cancel()
                await q.ajoin()
            assert cs.cancelled_caught
            q.put_nowait(1)
            with plait.move_on_after(1) as cs:
                await q.ajoin()
            assert cs.cancelled_caught and q.statistics().tasks_waiting_join == 0
            q.get_nowait()
            q.task_done()
            await q.ajoin()
            with pytest.raises(ValueError, match="too many"):
                q.task_done()

        vrun(main)


class TestBackpressure:
    def test_a_bounded_queue_holds_back_threads_and_tasks(self):
        async def main():
            q, crew, seen = ThreadQueue(2), Crew(), []

            def thread_producer():
                for i in range(50):
                    q.put(("thread", i), timeout=DEADLINE)

            crew.start(thread_producer)
            for _ in range(50):
                await until(lambda: q.statistics().threads_waiting_put == 1 or crew.left == 0)
                assert q.qsize() == 2 or crew.left == 0
                seen.append(await q.aget())
            await crew.wait()
            assert seen == [("thread", i) for i in range(50)]

            out, consumer = [], Crew()
            async with plait.TaskGroup() as tg:

                async def task_producer():
                    for i in range(50):
                        await q.aput(("task", i))

                tg.spawn(task_producer)
                await until(lambda: q.statistics().tasks_waiting_put == 1)
                assert q.full()
                consumer.start(lambda: out.extend(q.get(timeout=DEADLINE) for _ in range(50)))
            await consumer.wait()
            assert out == [("task", i) for i in range(50)]

        plait.run(main)

    def test_a_grown_maxsize_admits_parked_putters_first(self):
        async def main():
            q = ThreadQueue(1)
            q.put_nowait("a")
            async with plait.TaskGroup() as tg:
                tg.spawn(q.aput, "b")
                await wait_all_tasks_blocked()
                q.maxsize = 3
                q.put_nowait("c")  # the parked put goes first, then there is room
            assert [q.get_nowait() for _ in range(3)] == ["a", "b", "c"]

        vrun(main)


class TestTwoLoops:
    def test_two_plait_loops_in_two_threads_share_one_queue(self):
        requests, replies = ThreadQueue(), ThreadQueue(1)
        errors = []

        async def server():
            async for n in requests:
                if n is None:
                    return
                await replies.aput(n * 2)

        def run_server():
            try:
                plait.run(server)
            except BaseException as exc:
                errors.append(exc)

        async def client():
            got = []
            for n in range(2000):
                await requests.aput(n)
                got.append(await replies.aget())
            await requests.aput(None)
            return got

        thread = threading.Thread(target=run_server)
        thread.start()
        try:
            assert plait.run(client) == [2 * n for n in range(2000)]
        finally:
            requests.put(None)
            thread.join(DEADLINE)
        assert not thread.is_alive() and not errors


class TestFairness:
    def test_threads_and_tasks_are_served_in_the_order_they_blocked(self):
        async def main():
            q, crew, got = ThreadQueue(), Crew(), []

            async def task_get(name):
                got.append((name, await q.aget()))

            async with plait.TaskGroup() as tg:
                tg.spawn(task_get, "task1")
                await until(lambda: q.statistics().tasks_waiting_get == 1)
                crew.start(lambda: got.append(("thread", q.get(timeout=DEADLINE))))
                await until(lambda: q.statistics().threads_waiting_get == 1)
                tg.spawn(task_get, "task2")
                await until(lambda: q.statistics().tasks_waiting_get == 2)
                st = q.statistics()
                assert (st.tasks_waiting_get, st.threads_waiting_get) == (2, 1)
                writer = Crew()
                writer.start(lambda: [q.put(i) for i in range(3)])
                await writer.wait()
            await crew.wait()
            assert sorted(got) == [("task1", 0), ("task2", 2), ("thread", 1)]

        plait.run(main)

    def test_lifo_and_priority_variants_with_tasks(self):
        async def main():
            for kind, expected in ((ThreadLifoQueue, [1, 3, 2]), (ThreadPriorityQueue, [1, 2, 3])):
                q = kind()
                for item in (2, 3, 1):
                    await q.aput(item)
                assert [await q.aget() for _ in range(3)] == expected
            q = ThreadPriorityQueue()
            q.put_nowait(1)
            with pytest.raises(TypeError):
                await q.aput("incomparable")
            assert q.queue == [1] and q.unfinished_tasks == 1

        vrun(main)


class TestReferences:
    def test_nothing_keeps_an_item_alive(self):
        """Once an item is out (handed over, admitted, or its aput cancelled), the queue
        and its waiters hold no reference to it: freed by reference counting."""

        class Item:
            pass

        async def main():
            q, refs = ThreadQueue(1), []

            async def getter():
                refs.append(weakref.ref(await q.aget()))

            async with plait.TaskGroup() as tg:  # a thread hands an item to a parked task
                tg.spawn(getter)
                await until(lambda: q.statistics().tasks_waiting_get == 1)
                crew = Crew()
                crew.start(lambda: q.put(Item()))
                await crew.wait()
            crew = Crew()  # a thread parked in put is admitted by a task's get
            crew.start(lambda: [q.put(Item(), timeout=DEADLINE) for _ in range(2)])
            await until(lambda: q.statistics().threads_waiting_put == 1)
            await getter()
            await crew.wait()
            await getter()
            await plait.checkpoint()  # (the kernel's step holds the value it last sent)
            assert [ref() for ref in refs] == [None, None, None]

            q.put_nowait(Item())
            item = Item()
            ref = weakref.ref(item)
            with plait.move_on_after(0.01):
                await q.aput(item)  # parked, then cancelled: the queue drops the item
            del item
            assert ref() is None

        gc.disable()
        try:
            plait.run(main)
        finally:
            gc.enable()


class TestInterrupt:
    @pytest.mark.parametrize("timeout", [None, DEADLINE])
    def test_ctrl_c_in_a_blocked_thread_call_leaves_no_waiter_behind(self, timeout):
        q, main = ThreadQueue(1), threading.main_thread().ident

        def interrupt(stat):
            wait_until(lambda: getattr(q.statistics(), stat) == 1)
            signal.pthread_kill(main, signal.SIGINT)

        for stat, call, args in (
            ("threads_waiting_get", q.get, ()),
            ("threads_waiting_put", q.put, ("b",)),
        ):
            if args:
                q.put_nowait("a")  # the put needs a full queue
            thread = threading.Thread(target=interrupt, args=(stat,))
            thread.start()
            with pytest.raises(KeyboardInterrupt):
                call(*args, timeout=timeout)
            thread.join(DEADLINE)
            assert getattr(q.statistics(), stat) == 0
        assert q.get_nowait() == "a" and q.empty()  # "b" never entered


class TestMisuse:
    def test_bad_arguments(self):
        for bad in ("3", 1.5, None, True):
            with pytest.raises(TypeError, match="maxsize must be an int"):
                ThreadQueue(bad)
        q = ThreadQueue(-1)  # <= 0: unbounded, as queue.Queue
        q.put(1)
        assert not q.full()
        for method, args in ((q.put, (1,)), (q.get, ())):
            for bad in (-1, -0.5, float("nan")):
                with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
                    method(*args, timeout=bad)
            with pytest.raises(TypeError, match="'timeout' must be a non-negative number"):
                method(*args, timeout="1")
            method(*args, block=False, timeout=-1)  # ignored without block, as queue.Queue
        with pytest.raises(ValueError, match="task_done"):
            ThreadQueue().task_done()
        assert q.get(timeout=float("inf")) == 1

    def test_awaiting_outside_plait_or_blocking_on_a_loop_thread(self):
        q = ThreadQueue(1)
        coro = q.aget()
        with pytest.raises(RuntimeError, match="plait"):
            coro.send(None)
        coro.close()

        async def main():
            with pytest.raises(RuntimeError, match=r"await queue\.aget\(\)"):
                q.get()
            with pytest.raises(RuntimeError, match=r"aget"):
                q.get(timeout=1)
            with pytest.raises(queue.Empty):
                q.get(timeout=0)  # does not block: allowed
            q.put_nowait(1)
            with pytest.raises(RuntimeError, match=r"await queue\.aput\(item\)"):
                q.put(2)
            with pytest.raises(queue.Full):
                q.put(2, block=False)
            with pytest.raises(RuntimeError, match=r"ajoin"):
                q.join()
            assert q.get() == 1  # does not block either

        vrun(main)

    def test_repr_generic_and_export(self):
        assert plait.ThreadQueue is ThreadQueue
        assert ThreadQueue[int] is not None
        q = ThreadQueue(3)
        q.put(1)
        assert repr(q) == "<plait.ThreadQueue 1/3>"


@needs_shutdown
class TestShutdown:
    def test_shutdown_wakes_parked_tasks_and_threads(self):
        async def main():
            q, crew, errors = ThreadQueue(1), Crew(), []

            def thread_get():
                with pytest.raises(queue.ShutDown):
                    q.get(timeout=DEADLINE)
                errors.append("thread")

            async def task_get():
                with pytest.raises(queue.ShutDown):
                    await q.aget()
                errors.append("task")

            async with plait.TaskGroup() as tg:
                tg.spawn(task_get)
                crew.start(thread_get)
                await until(lambda: q.statistics().threads_waiting_get == 1)
                q.shutdown()
            await crew.wait()
            assert sorted(errors) == ["task", "thread"]

            q = ThreadQueue(1)
            q.put_nowait("a")

            async def task_put():
                with pytest.raises(queue.ShutDown):
                    await q.aput("b")  # parked on the full queue
                errors.append("put")

            async with plait.TaskGroup() as tg:
                tg.spawn(task_put)
                await until(lambda: q.statistics().tasks_waiting_put == 1)
                q.shutdown()
                with pytest.raises(queue.ShutDown):
                    await q.aput("c")
            assert errors[-1] == "put"
            assert q.get_nowait() == "a"  # "b" and "c" never entered
            with pytest.raises(queue.ShutDown):
                q.get_nowait()

        plait.run(main)

    def test_async_for_drains_then_ends_and_immediate_releases_ajoin(self):
        async def main():
            q = ThreadQueue()
            for i in range(3):
                await q.aput(i)
            q.shutdown()
            assert [item async for item in q] == [0, 1, 2]
            q = ThreadQueue()
            for i in range(3):
                await q.aput(i)
            async with plait.TaskGroup() as tg:
                tg.spawn(q.ajoin)
                await wait_all_tasks_blocked()
                q.shutdown(immediate=True)
            assert q.empty() and q.unfinished_tasks == 0

        vrun(main)
