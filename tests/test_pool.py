"""The pool interface (plait.abc.Pool): ``map`` (ordered and unordered results,
backpressure, leaving early, failures, cancellation, progress) and the lifecycle every
pool inherits (closing, ``ClosedResourceError``), tested against a small fake pool and
against ``plait.ThreadPool``. (ThreadPool's own behaviour and the executor facade:
tests/test_threadpool.py.)

Determinism: call ``x`` tells the test it started (a ``plait.Event``) and then waits
for its gate, which only the test opens. The fake pool runs calls in the loop's thread,
so ``wait_all_tasks_blocked`` sees everything; a ThreadPool call polls
``from_thread.check_cancelled()`` while its gate is closed (how cooperative thread code
notices cancellation: there is no event for it).
"""

from __future__ import annotations

import collections
import contextvars
import threading
import traceback

import pytest

import plait
from plait._pool import UNCLAIMED
from plait.abc import MapProgress, Pool, PoolMap
from plait.lowlevel import current_loop
from plait.testing import wait_all_tasks_blocked
from test_refcycles import run_no_gc

DEADLINE = 30.0
POLL = 0.001  # how often a blocked thread call checks whether it was cancelled
N = 64
var = contextvars.ContextVar("var", default="unset")


class Boom(Exception):
    pass


class FakePool(Pool):
    """Runs each call in the loop's thread, in the calling task, after the harness
    opens its gate; at most ``max_workers`` at a time."""

    def __init__(self, harness, max_workers):
        super().__init__()
        self.h = harness
        self.limiter = plait.CapacityLimiter(max_workers)
        self._max = max_workers
        self.workers_released = 0
        self.releasing = None  # an Event that _aclose_workers waits for

    @property
    def max_workers(self):
        return self._max

    async def _run(self, fn, args, claim):
        async with self.limiter:
            if claim is not None and not claim():
                return UNCLAIMED
            x = args[0]
            self.h.mark_started(x)
            try:
                await self.h.gates[x].wait()
            except plait.Cancelled:
                self.h.ended.append(("cancelled", x))
                raise
            self.h.ended.append(("returned", x))
            return fn(*args)

    async def _aclose_workers(self):
        if self.releasing is not None:
            await self.releasing.wait()
        self.workers_released += 1


class Harness:
    """Gated calls on one kind of pool: ``fn(x)`` returns ``x * 10``, or raises
    ``Boom(x)`` when ``x`` is in ``fail``, once its gate is open (``release(x)``).
    ``started`` lists the calls that started, ``ended`` how each one ended."""

    def __init__(self, kind, max_workers=2):
        self.fail = set()
        self.started = []
        self.ended = []  # list.append is atomic: threads append too
        self._started = collections.defaultdict(plait.Event)
        if kind == "fake":
            self.gates = collections.defaultdict(plait.Event)
            self.pool = FakePool(self, max_workers)
            self.fn = self.value
        else:
            self.gates = [threading.Event() for _ in range(N)]
            self.pool = plait.ThreadPool(max_workers)
            self.fn = self.in_thread

    def value(self, x):
        if x in self.fail:
            raise Boom(x)
        return x * 10

    def mark_started(self, x):
        self.started.append(x)
        self._started[x].set()

    async def wait_started(self, *xs):
        for x in xs:
            await self._started[x].wait()

    def release(self, *xs):
        for x in xs:
            self.gates[x].set()

    def in_thread(self, x):
        plait.from_thread.run_sync(self.mark_started, x)
        while not self.gates[x].wait(POLL):
            try:
                plait.from_thread.check_cancelled()
            except plait.Cancelled:
                self.ended.append(("cancelled", x))
                raise
        self.ended.append(("returned", x))
        return self.value(x)


@pytest.fixture(params=["fake", "threads"])
def kind(request):
    return request.param


def source(n, pulled, fail_at=None):
    """A generator that records how far it was pulled."""
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"the source failed at {i}")
        pulled.append(i)
        yield i


async def collect(it):
    return [x async for x in it]


class TestInterface:
    def test_pool_is_abstract(self):
        with pytest.raises(TypeError):
            Pool()

        class NoRun(Pool):
            max_workers = 1

        with pytest.raises(TypeError, match="_run"):
            NoRun()

    def test_public_names(self):
        assert plait.abc.Pool is Pool
        assert isinstance(plait.ThreadPool(1), Pool)
        assert Pool.__module__ == PoolMap.__module__ == MapProgress.__module__ == "plait.abc"
        assert plait.ThreadPool.__module__ == "plait"

    def test_bad_arguments(self):
        async def afn(x):
            return x

        class Source:
            def __aiter__(self):
                return self

        pool = plait.ThreadPool(1)
        for fn, items, match in [
            (42, [1], "needs a function"),
            (afn, [1], "afn is an async function"),
            (abs, 42, "needs an iterable"),
            (abs, Source(), r"synchronous\) iterable"),
        ]:
            with pytest.raises(TypeError, match=match):
                pool.map(fn, items)
        with pytest.raises(TypeError, match="progress must be"):
            pool.map(abs, [1], progress=42)
        for bad in (0, -1, True, 1.5, "2"):
            with pytest.raises((TypeError, ValueError), match="read_ahead"):
                pool.map(abs, [1], read_ahead=bad)


class TestMapResults:
    def test_ordered_results_come_in_item_order(self, kind):
        h = Harness(kind, max_workers=4)

        async def main():
            async with plait.TaskGroup() as tg:
                consumer = tg.spawn(collect, h.pool.map(h.fn, range(4)))
                await h.wait_started(0, 1, 2, 3)
                for x in (3, 2, 1, 0):
                    h.release(x)
            return consumer.result()

        assert plait.run(main) == [0, 10, 20, 30]

    def test_unordered_results_come_as_they_finish(self, kind):
        h = Harness(kind, max_workers=3)

        async def main():
            it = h.pool.map(h.fn, range(3), ordered=False)
            got = []
            for x in (2, 0, 1):
                h.release(x)
                got.append(await it.__anext__())
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()
            return got

        assert plait.run(main) == [20, 0, 10]

    @pytest.mark.parametrize("ordered", [True, False])
    def test_many_items_through_a_small_window(self, kind, ordered):
        h = Harness(kind, max_workers=3)
        h.release(*range(N))

        async def main():
            return await collect(h.pool.map(h.fn, range(N), ordered=ordered, read_ahead=2))

        got = plait.run(main)
        assert (got if ordered else sorted(got)) == [x * 10 for x in range(N)]

    @pytest.mark.parametrize("empty", [[], (), "generator"])
    def test_empty_iterable(self, kind, empty):
        h = Harness(kind)
        pulled = []

        async def main():
            items = source(0, pulled) if empty == "generator" else empty
            it = h.pool.map(h.fn, items)
            assert await collect(it) == []
            assert await collect(it) == []  # stays exhausted
            return it.progress()

        progress = plait.run(main)
        assert progress.done == progress.submitted == 0
        assert h.started == []

    def test_calls_see_the_consumers_context(self, kind):
        h = Harness(kind)
        h.release(*range(3))

        async def main():
            var.set("consumer")
            return await collect(h.pool.map(lambda _: var.get(), range(3)))

        assert plait.run(main) == ["consumer"] * 3


class TestBackpressure:
    def test_at_most_read_ahead_items_are_taken_ahead_of_the_consumer(self, kind):
        h = Harness(kind, max_workers=2)
        pulled = []

        async def main():
            it = h.pool.map(h.fn, source(20, pulled), read_ahead=3)
            assert pulled == []  # nothing is taken before the first __anext__
            for k in range(20):
                h.release(k)
                assert await it.__anext__() == k * 10
                assert len(pulled) == min(20, k + 1 + 3)
            assert await collect(it) == []

        plait.run(main)

    def test_a_stalled_consumer_stalls_the_producer(self, kind):
        h = Harness(kind, max_workers=2)
        h.release(*range(N))
        pulled = []

        async def main():
            it = h.pool.map(h.fn, source(N, pulled), read_ahead=4, ordered=False)
            async with it:
                await it.__anext__()
                await wait_all_tasks_blocked()
                assert len(pulled) == 5
                assert it.progress().submitted == 5

        plait.run(main)

    def test_ordered_window_fills_with_results_behind_a_slow_item(self, kind):
        h = Harness(kind, max_workers=3)
        pulled = []

        async def main():
            it = h.pool.map(h.fn, source(10, pulled), read_ahead=3)
            async with plait.TaskGroup() as tg:
                first = tg.spawn(it.__anext__)
                await h.wait_started(0, 1, 2)
                h.release(1, 2, 3, 4)
                await wait_all_tasks_blocked()
                assert pulled == [0, 1, 2]  # 1 and 2 are done, but 0 holds the window
                h.release(0)
            assert first.result() == 0
            assert pulled == [0, 1, 2, 3]
            assert [await it.__anext__() for _ in range(4)] == [10, 20, 30, 40]
            await it.aclose()

        plait.run(main)


class TestMapFailure:
    def test_error_propagates_after_the_other_calls_were_cancelled(self, kind):
        h = Harness(kind, max_workers=2)
        h.fail.add(0)

        async def main():
            async with plait.TaskGroup() as tg:

                async def consume():
                    try:
                        async for _ in h.pool.map(h.fn, range(10), read_ahead=4):
                            pass
                    except Boom as exc:
                        return exc, list(h.ended)

                consumer = tg.spawn(consume)
                await h.wait_started(0, 1)
                h.release(0)
            return consumer.result()

        exc, ended = plait.run(main)
        assert exc.args == (0,)
        # When the error came out, every other call that had started had ended,
        # cancelled (2 may have taken 0's worker just before the cancellation).
        assert set(h.started) <= {0, 1, 2}
        assert sorted(ended) == sorted(
            [("returned", 0)] + [("cancelled", x) for x in h.started if x != 0]
        )
        names = [f.f_code.co_name for f, _ in traceback.walk_tb(exc.__traceback__)]
        assert names[-1] == "value"

    def test_several_failures_are_grouped(self):
        h = Harness("fake", max_workers=2)
        h.fail.update({0, 1})

        async def main():
            it = h.pool.map(h.fn, range(5))
            async with plait.TaskGroup() as tg:
                tg.spawn(it.__anext__)
                await h.wait_started(0, 1)
                h.release(0, 1)  # both finish in the same pass, before the cancellation

        with pytest.raises(ExceptionGroup) as info:
            plait.run(main)
        (group,) = info.value.exceptions  # the TaskGroup's group around the map's
        assert sorted(e.args[0] for e in group.exceptions) == [0, 1]

    def test_error_of_the_iterable_ends_the_map(self, kind):
        h = Harness(kind, max_workers=2)
        pulled = []

        async def main():
            async for _ in h.pool.map(h.fn, source(10, pulled, fail_at=2)):
                pass

        with pytest.raises(ValueError, match="failed at 2"):
            plait.run(main)
        assert pulled == [0, 1]
        assert all(how == "cancelled" for how, _ in h.ended)

    def test_progress_callback_error_ends_the_map(self, kind):
        h = Harness(kind)
        h.release(*range(5))

        def progress(p):
            if p.done == 2:
                raise Boom("progress")

        async def main():
            await collect(h.pool.map(h.fn, range(5), progress=progress))

        with pytest.raises(Boom, match="progress"):
            plait.run(main)


class TestLeavingEarly:
    def test_break_cancels_the_calls_in_flight(self, kind):
        h = Harness(kind, max_workers=2)
        pulled = []

        async def main():
            h.release(0)
            async for value in h.pool.map(h.fn, source(N, pulled)):
                assert value == 0
                break
            await h.pool.aclose()  # waits for the cancelled calls to end

        plait.run(main)
        assert ("returned", 0) in h.ended
        assert {how for how, x in h.ended if x != 0} == {"cancelled"}
        assert len(pulled) <= 5

    def test_async_with_cancels_and_waits(self, kind):
        h = Harness(kind, max_workers=3)

        async def main():
            h.release(0)
            async with h.pool.map(h.fn, range(N)) as it:
                async for _ in it:
                    break
            return list(h.ended)

        ended = plait.run(main)
        # Right after the block: every call that started (1 and 2, and 3 if it took
        # 0's worker before the break) has ended, cancelled.
        assert {1, 2} <= set(h.started) <= {0, 1, 2, 3}
        assert sorted(ended) == sorted(
            [("returned", 0)] + [("cancelled", x) for x in h.started if x != 0]
        )

    def test_aclose_raises_errors_nobody_saw(self):
        h = Harness("fake", max_workers=2)
        h.fail.add(1)

        async def main():
            it = h.pool.map(h.fn, range(4), ordered=False)
            h.release(0)
            assert await it.__anext__() == 0
            h.release(1)
            await wait_all_tasks_blocked()
            with pytest.raises(Boom):
                await it.aclose()
            await it.aclose()  # idempotent
            assert await collect(it) == []

        plait.run(main)

    def test_a_cancelled_anext_and_aclose_before_iterating_take_nothing(self, kind):
        h = Harness(kind)
        pulled = []

        async def main():
            it = h.pool.map(h.fn, source(5, pulled))
            with plait.CancelScope() as scope:
                scope.cancel()
                await it.__anext__()  # Cancelled before it touches anything
            await it.aclose()
            assert await collect(it) == []

        plait.run(main)
        assert pulled == []

    def test_error_after_abandonment_goes_to_the_exception_handler(self):
        go = threading.Event()

        def fn(x):
            if x == 1:  # ignores the cancellation, then fails
                assert go.wait(DEADLINE)
                raise Boom(x)
            return x

        async def main():
            reported = plait.Event()
            errors = []

            def handler(loop, context):
                errors.append(context["exception"])
                reported.set()

            current_loop().set_exception_handler(handler)
            it = plait.ThreadPool(2).map(fn, range(2))
            assert await it.__anext__() == 0
            del it  # abandoned: its abandonment reaches the loop before the error
            go.set()
            await reported.wait()
            return errors

        (error,) = plait.run(main)
        assert isinstance(error, Boom)


class TestCancellation:
    def test_cancelling_one_wait_leaves_the_calls_running(self, kind):
        h = Harness(kind, max_workers=2)

        async def main():
            it = h.pool.map(h.fn, range(2))
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:
                    tg.spawn(h.wait_started, 0, 1)
                    await wait_all_tasks_blocked()
                    scope.cancel()
                    await it.__anext__()
            assert scope.cancelled_caught
            h.release(0, 1)
            return await collect(it)

        assert plait.run(main) == [0, 10]
        assert h.ended.count(("returned", 0)) == 1

    def test_cancelling_the_code_around_the_map_ends_it(self, kind):
        h = Harness(kind, max_workers=2)

        async def main():
            with plait.CancelScope() as outer:
                it = h.pool.map(h.fn, range(N))
                async with plait.TaskGroup() as tg:

                    async def cancel_when_started():
                        await h.wait_started(0, 1)
                        outer.cancel()

                    tg.spawn(cancel_when_started)
                    try:
                        await it.__anext__()
                    finally:
                        ended = list(h.ended)  # the calls ended before Cancelled came
            assert outer.cancelled_caught
            return ended

        assert sorted(plait.run(main)) == [("cancelled", 0), ("cancelled", 1)]

    def test_two_consumers_are_a_busy_error(self):
        h = Harness("fake")

        async def main():
            it = h.pool.map(h.fn, range(3))
            async with plait.TaskGroup() as tg:
                tg.spawn(it.__anext__)
                await h.wait_started(0)
                with pytest.raises(plait.BusyResourceError):
                    await it.__anext__()
                with pytest.raises(plait.BusyResourceError):
                    await it.aclose()
                h.release(0)
            await it.aclose()

        plait.run(main)


class TestProgress:
    def test_callback_and_snapshot(self, kind):
        h = Harness(kind, max_workers=2)
        h.release(*range(6))
        seen = []

        async def main():
            it = h.pool.map(h.fn, list(range(6)), progress=seen.append, ordered=False)
            assert it.progress() == MapProgress(done=0, submitted=0, total=6)
            await collect(it)
            return it.progress()

        assert plait.run(main) == MapProgress(done=6, submitted=6, total=6)
        assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6]
        assert all(p.total == 6 and p.done <= p.submitted for p in seen)

        async def without_length():
            it = h.pool.map(h.fn, source(3, []))
            await collect(it)
            return it.progress()

        assert plait.run(without_length) == MapProgress(done=3, submitted=3, total=None)


class TestLifecycle:
    def test_closed_pool_refuses_work(self):
        h = Harness("fake")

        async def main():
            async with h.pool as pool:
                pass
            for call in (
                lambda: pool.run_sync(h.fn, 1),
                lambda: pool.map(h.fn, [1]),
                pool.executor,
                pool.__aenter__,
            ):
                with pytest.raises(plait.ClosedResourceError, match="closed; create a new"):
                    await call() if call is not pool.executor else call()
            await pool.aclose()  # idempotent
            return pool.workers_released

        assert plait.run(main) == 1

    def test_aclose_waits_for_calls_in_progress(self):
        h = Harness("fake")

        async def main():
            async with plait.TaskGroup() as tg:
                call = tg.spawn(h.pool.run_sync, h.fn, 7)
                await h.wait_started(7)
                closer = tg.spawn(h.pool.aclose)
                await wait_all_tasks_blocked()
                assert not closer.done()
                assert h.pool.workers_released == 0
                with pytest.raises(plait.ClosedResourceError):
                    await h.pool.run_sync(h.fn, 8)
                h.release(7)
            return call.result(), h.pool.workers_released

        assert plait.run(main) == (70, 1)

    def test_every_aclose_returns_once_the_workers_are_released(self):
        h = Harness("fake")
        h.pool.releasing = plait.Event()

        async def main():
            async with plait.TaskGroup() as tg:
                closers = [tg.spawn(h.pool.aclose) for _ in range(2)]
                await wait_all_tasks_blocked()
                assert not any(c.done() for c in closers)
                h.pool.releasing.set()
            return h.pool.workers_released

        assert plait.run(main) == 1

    def test_cancelled_aclose_leaves_the_pool_closed(self):
        h = Harness("fake")

        async def main():
            async with plait.TaskGroup() as tg:
                call = tg.spawn(h.pool.run_sync, h.fn, 1)
                await h.wait_started(1)
                with plait.move_on_after(0):
                    await h.pool.aclose()
                with pytest.raises(plait.ClosedResourceError):
                    h.pool.map(h.fn, [2])
                assert h.pool.workers_released == 0
                h.release(1)
                await h.pool.aclose()
            return call.result(), h.pool.workers_released

        assert plait.run(main) == (10, 1)

    def test_map_call_after_close_fails_with_closed(self, kind):
        h = Harness(kind, max_workers=1)

        async def main():
            it = h.pool.map(h.fn, range(3), read_ahead=1)
            h.release(0, 1)
            assert await it.__anext__() == 0  # and item 1 is taken: its call started
            await h.pool.aclose()  # waits for it
            assert await it.__anext__() == 10  # and item 2 is taken: its call fails
            await it.__anext__()

        with pytest.raises(plait.ClosedResourceError):
            plait.run(main)


class TestNoReferenceCycles:
    def test_results_failures_and_abandoned_maps_are_freed(self):
        h = Harness("fake", max_workers=2)
        h.release(*range(N))

        async def main(track):
            def fn(x):
                if x == 5:
                    raise track("error of a call", Boom(5))
                return track(f"result {x}", Boom())  # any object with a weak reference

            it = track("finished map", h.pool.map(fn, range(5)))
            await collect(it)
            del it
            with pytest.raises(Boom):
                await collect(h.pool.map(fn, range(10)))
            async for _ in h.pool.map(fn, range(N)):
                break
            await h.pool.aclose()
            track("main task", plait.current_task())

        run_no_gc(main)
