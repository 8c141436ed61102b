"""plait.ThreadPool: run_sync (results, errors with the thread's traceback, context),
the max_workers bound, cancellation (the caller waits for its thread, check_cancelled),
the executor facade used from other threads (submit, cancel, shutdown, the end of the
run), closing, no thread left behind, no reference cycles. (map and the generic
lifecycle: tests/test_pool.py.)

Determinism: a call that must be caught mid-way blocks on a ``threading.Event`` the
test controls and tells the loop it got there through a ``plait`` primitive (with
``from_thread``); plain threads are joined with a timeout. The only polling waits
for states that have no event: a cancelled call noticing its cancellation
(``check_cancelled`` is the API for it), a worker dropping its last references, a
reaped worker thread.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import gc
import os
import threading
import time
import traceback

import pytest

import plait
from plait._core import _thread_cache
from plait._core._thread_cache import worker_count
from plait.lowlevel import current_token
from plait.testing import wait_all_tasks_blocked
from test_refcycles import Tracker, _diagnose

DEADLINE = 30.0
POLL = 0.001
SHORT = 0.05  # a patched IDLE_TIMEOUT
var = contextvars.ContextVar("var", default="unset")


class Boom(Exception):
    pass


def fails(message):
    raise Boom(message)


def wait_until(pred):
    deadline = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(POLL)


def in_thread(fn, *args):
    """Run ``fn(*args)`` in a plain thread (not a plait worker); return ``(thread,
    box)``: box gets ``("ok", value)`` or ``("error", exc)``."""
    box = []

    def main():
        try:
            box.append(("ok", fn(*args)))
        except BaseException as exc:
            box.append(("error", exc))

    thread = threading.Thread(target=main)
    thread.start()
    return thread, box


async def join(thread):
    await plait.to_thread.run_sync(thread.join, DEADLINE)
    assert not thread.is_alive()


class Peak:
    """Counts the calls inside a function at once; each blocks until ``gate`` opens,
    after telling the loop (``entered``) that it got there."""

    def __init__(self):
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.active = self.peak = self.done = 0
        self.entered = plait.Semaphore(0)
        self.token = current_token()

    def __call__(self, *_):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        plait.from_thread.run_sync(self.entered.release, token=self.token)
        assert self.gate.wait(DEADLINE)
        with self.lock:
            self.active -= 1
            self.done += 1

    async def wait_entered(self, n):
        for _ in range(n):
            await self.entered.acquire()
        await wait_all_tasks_blocked()


class TestConstruction:
    def test_default_max_workers_is_the_thread_pool_executor_one(self):
        assert plait.ThreadPool().max_workers == min(32, (os.cpu_count() or 1) + 4)
        assert plait.ThreadPool(3).max_workers == 3

    @pytest.mark.parametrize("bad", [0, -2, True, 2.0, "4"])
    def test_bad_max_workers(self, bad):
        with pytest.raises((TypeError, ValueError), match="max_workers"):
            plait.ThreadPool(bad)

    def test_repr(self):
        assert repr(plait.ThreadPool(2)) == (
            "<plait.ThreadPool max_workers=2 open running=0 calls=0>"
        )


class TestRunSync:
    def test_result_args_and_thread(self):
        def whoami(a, b):
            return a + b, threading.current_thread().name

        async def main():
            async with plait.ThreadPool(2) as pool:
                return await pool.run_sync(whoami, 1, 2)

        value, name = plait.run(main)
        assert value == 3
        assert "whoami" in name

    def test_exception_keeps_the_thread_traceback(self):
        async def main():
            async with plait.ThreadPool(1) as pool:
                await pool.run_sync(fails, "in the thread")

        with pytest.raises(Boom, match="in the thread") as info:
            plait.run(main)
        names = [f.f_code.co_name for f, _ in traceback.walk_tb(info.value.__traceback__)]
        assert names[-1] == "fails"
        assert names.index("main") < names.index("fails")

    def test_base_exception_crosses(self):
        def exits():
            raise SystemExit(4)

        async def main():
            with pytest.raises(SystemExit):
                await plait.ThreadPool(1).run_sync(exits)
            return "after"

        assert plait.run(main) == "after"

    def test_context_keywords_and_bad_functions(self):
        async def afn():
            pass

        async def main():
            pool = plait.ThreadPool(1)
            var.set("task")
            assert await pool.run_sync(var.get) == "task"
            assert await pool.run_sync(functools.partial(int, "ff", base=16)) == 255
            with pytest.raises(TypeError, match="afn is an async function"):
                await pool.run_sync(afn)
            with pytest.raises(TypeError, match="needs a function"):
                await pool.run_sync(42)

        plait.run(main)


class TestMaxWorkers:
    def test_at_most_max_workers_calls_run_at_once(self):
        async def main():
            peak = Peak()
            async with plait.ThreadPool(3) as pool, plait.TaskGroup() as tg:
                for _ in range(9):
                    tg.spawn(pool.run_sync, peak)
                await peak.wait_entered(3)
                assert peak.active == 3
                assert pool._limiter.statistics().tasks_waiting == 6
                peak.gate.set()
            return peak.peak, peak.done, pool._limiter.borrowed_tokens

        assert plait.run(main) == (3, 9, 0)

    def test_the_pool_has_its_own_limit(self):
        async def main():
            plait.to_thread.current_default_thread_limiter().total_tokens = 1
            peak = Peak()
            async with plait.ThreadPool(4) as pool, plait.TaskGroup() as tg:
                for _ in range(4):
                    tg.spawn(pool.run_sync, peak)
                await peak.wait_entered(4)
                peak.gate.set()
            return peak.peak

        assert plait.run(main) == 4

    def test_map_uses_the_same_workers(self):
        async def main():
            peak = Peak()
            async with plait.ThreadPool(2) as pool, plait.TaskGroup() as tg:
                tg.spawn(pool.run_sync, peak)
                results = pool.map(peak, range(5), read_ahead=5)
                tg.spawn(results.__anext__)
                await peak.wait_entered(2)
                assert pool._limiter.statistics().tasks_waiting == 4
                peak.gate.set()
            await results.aclose()
            return peak.peak

        assert plait.run(main) == 2


async def start_call(tg, pool, fn, *args):
    """Call ``pool.run_sync(fn, *args)`` in a task with its own scope; return
    ``(scope, log)``: log gets ("returned", value), then ("caught", cancelled_caught)."""
    log = []

    async def caller(task_status):
        with plait.CancelScope() as scope:
            task_status.started(scope)
            log.append(("returned", await pool.run_sync(fn, *args)))
            await plait.checkpoint()
        log.append(("caught", scope.cancelled_caught))

    return await tg.start(caller), log


class TestCancellation:
    def test_caller_waits_for_the_thread_and_check_cancelled_raises(self):
        async def main():
            entered, proceed, seen = plait.Event(), threading.Event(), []

            def cooperative():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                try:
                    plait.from_thread.check_cancelled()
                except plait.Cancelled:
                    seen.append("Cancelled")
                    raise

            async with plait.ThreadPool(1) as pool, plait.TaskGroup() as tg:
                scope, log = await start_call(tg, pool, cooperative)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                assert log == [], "the caller must wait for its thread"
                assert pool._limiter.borrowed_tokens == 1
                proceed.set()
            return seen, log, pool._limiter.borrowed_tokens

        assert plait.run(main) == (["Cancelled"], [("caught", True)], 0)

    def test_a_thread_ignoring_cancellation_still_delivers(self):
        async def main():
            entered, proceed = plait.Event(), threading.Event()

            def stubborn():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                return "kept"

            async with plait.ThreadPool(1) as pool, plait.TaskGroup() as tg:
                scope, log = await start_call(tg, pool, stubborn)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                proceed.set()
            return log

        assert plait.run(main) == [("returned", "kept"), ("caught", True)]

    def test_a_call_waiting_for_a_worker_is_cancelled_at_once(self):
        async def main():
            peak = Peak()
            ran = []
            async with plait.ThreadPool(1) as pool, plait.TaskGroup() as tg:
                tg.spawn(pool.run_sync, peak)
                await peak.wait_entered(1)
                scope, log = await start_call(tg, pool, ran.append, "ran")
                scope.cancel()
                await wait_all_tasks_blocked()
                assert log == [("caught", True)]
                peak.gate.set()
            return ran

        assert plait.run(main) == []

    def test_from_thread_run_works_in_a_pool_call(self):
        async def double(x):
            await plait.checkpoint()
            return 2 * x

        async def main():
            return await plait.ThreadPool(1).run_sync(plait.from_thread.run, double, 21)

        assert plait.run(main) == 42


class TestExecutor:
    def test_submit_from_plain_threads(self):
        async def main():
            async with plait.ThreadPool(2) as pool:
                executor = pool.executor()
                assert isinstance(executor, concurrent.futures.Executor)

                def use():
                    var.set("submitter")
                    return (
                        executor.submit(pow, 2, 10).result(DEADLINE),
                        executor.submit(int, "ff", base=16).result(DEADLINE),
                        executor.submit(var.get).result(DEADLINE),
                        list(executor.map(abs, [-1, -2], timeout=DEADLINE)),
                        executor.submit(fails, "via executor").exception(DEADLINE),
                    )

                thread, box = in_thread(use)
                await join(thread)
            return box

        [(how, (a, b, c, d, error))] = plait.run(main)
        assert (how, a, b, c, d) == ("ok", 1024, 255, "submitter", [1, 2])
        assert isinstance(error, Boom)
        names = [f.f_code.co_name for f, _ in traceback.walk_tb(error.__traceback__)]
        assert names[-1] == "fails"

    def test_submit_never_waits_for_the_loop(self):
        async def main():
            async with plait.ThreadPool(2) as pool:
                executor = pool.executor()
                submitted = threading.Event()
                futures = []

                def submit_all():
                    futures.extend(executor.submit(pow, 3, i) for i in range(5))
                    submitted.set()

                thread, _ = in_thread(submit_all)
                # Block the loop's thread: submit() must not need it.
                assert submitted.wait(DEADLINE)
                await join(thread)
                return [await plait.to_thread.run_sync(f.result, DEADLINE) for f in futures]

        assert plait.run(main) == [1, 3, 9, 27, 81]

    def test_calls_take_the_pools_workers(self):
        async def main():
            peak = Peak()
            async with plait.ThreadPool(2) as pool:
                executor = pool.executor()
                futures = [executor.submit(peak) for _ in range(3)]
                async with plait.TaskGroup() as tg:
                    tg.spawn(pool.run_sync, peak)
                    await peak.wait_entered(2)
                    assert pool._limiter.statistics().tasks_waiting == 2
                    peak.gate.set()
            assert all(f.done() for f in futures)
            return peak.peak, peak.done

        assert plait.run(main) == (2, 4)

    def test_a_queued_future_can_be_cancelled(self):
        async def main():
            peak = Peak()
            ran = []
            async with plait.ThreadPool(1) as pool:
                executor = pool.executor()
                async with plait.TaskGroup() as tg:
                    tg.spawn(pool.run_sync, peak)
                    await peak.wait_entered(1)
                    queued = executor.submit(ran.append, "ran")
                    await wait_all_tasks_blocked()
                    assert not queued.running()
                    assert queued.cancel()
                    # Waiters hear of it (the facade notifies the cancellation).
                    done, _ = concurrent.futures.wait([queued], timeout=0)
                    assert done == {queued}
                    await wait_all_tasks_blocked()
                    assert pool._limiter.statistics().tasks_waiting == 0
                    peak.gate.set()
            return ran, queued.cancelled()

        assert plait.run(main) == ([], True)

    def test_a_running_future_cannot_be_cancelled(self):
        async def main():
            entered, proceed = plait.Event(), threading.Event()

            def work():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                return "done"

            async with plait.ThreadPool(1) as pool:
                future = pool.executor().submit(work)
                await entered.wait()
                assert future.running()
                assert not future.cancel()
                proceed.set()
            return future.result(0)

        assert plait.run(main) == "done"

    def test_shutdown_from_a_thread_waits_and_the_pool_stays_open(self):
        async def main():
            peak = Peak()
            async with plait.ThreadPool(1) as pool:
                executor = pool.executor()
                running = executor.submit(peak)
                queued = executor.submit(peak)
                await peak.wait_entered(1)
                thread, box = in_thread(executor.shutdown)
                await wait_all_tasks_blocked()
                assert thread.is_alive()  # waiting for the two futures
                peak.gate.set()
                await join(thread)
                assert box == [("ok", None)]
                with pytest.raises(RuntimeError, match="after shutdown"):
                    executor.submit(peak)
                assert running.done() and queued.done() and not queued.cancelled()
                assert await pool.run_sync(abs, -5) == 5
                with pytest.raises(RuntimeError, match="loop's own thread"):
                    executor.shutdown(wait=True)

        plait.run(main)

    def test_shutdown_cancel_futures(self):
        async def main():
            peak = Peak()
            async with plait.ThreadPool(1) as pool:
                executor = pool.executor()
                running = executor.submit(peak)
                queued = [executor.submit(peak) for _ in range(3)]
                await peak.wait_entered(1)
                thread, _ = in_thread(functools.partial(executor.shutdown, cancel_futures=True))
                await plait.to_thread.run_sync(concurrent.futures.wait, queued, DEADLINE)
                assert all(f.cancelled() for f in queued)
                assert not running.done()
                peak.gate.set()
                await join(thread)
            return running.result(0), peak.done

        assert plait.run(main) == (None, 1)

    def test_aclose_waits_for_submitted_calls_and_stops_the_facade(self):
        async def main():
            peak = Peak()
            pool = plait.ThreadPool(1)
            executor = pool.executor()
            futures = [executor.submit(peak) for _ in range(3)]
            async with plait.TaskGroup() as tg:
                closer = tg.spawn(pool.aclose)
                await peak.wait_entered(1)
                assert not closer.done()
                with pytest.raises(RuntimeError, match="after shutdown"):
                    executor.submit(peak)
                peak.gate.set()
            return [f.result(0) for f in futures], peak.done

        assert plait.run(main) == ([None, None, None], 3)

    def test_the_end_of_the_run_cancels_what_has_not_started(self):
        stop = threading.Event()
        seen = []

        def cooperative(started):
            plait.from_thread.run_sync(started.set)
            while not stop.wait(POLL):
                try:
                    plait.from_thread.check_cancelled()
                except plait.Cancelled:
                    seen.append("Cancelled")
                    raise

        async def main():
            pool = plait.ThreadPool(1)
            executor = pool.executor()
            started = plait.Event()
            running = executor.submit(cooperative, started)
            queued = executor.submit(seen.append, "ran")
            await started.wait()
            return executor, running, queued

        executor, running, queued = plait.run(main)
        assert queued.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(0)
        assert seen == ["Cancelled"]
        with pytest.raises(RuntimeError, match="has ended"):
            executor.submit(abs, 1)
        executor.shutdown()  # nothing left to wait for

    def test_executor_needs_a_running_loop(self):
        with pytest.raises(RuntimeError, match=r"inside plait\.run"):
            plait.ThreadPool(1).executor()


class TestClosing:
    def test_aclose_waits_for_running_calls(self):
        async def main():
            peak = Peak()
            pool = plait.ThreadPool(2)
            async with plait.TaskGroup() as tg:
                tg.spawn(pool.run_sync, peak)
                await peak.wait_entered(1)
                closer = tg.spawn(pool.aclose)
                await wait_all_tasks_blocked()
                assert not closer.done()
                with pytest.raises(plait.ClosedResourceError, match=r"ThreadPool\.run_sync"):
                    await pool.run_sync(abs, 1)
                peak.gate.set()
            return peak.done, repr(pool)

        assert plait.run(main) == (1, "<plait.ThreadPool max_workers=2 closed running=0 calls=0>")


class TestNoThreadLeft:
    def test_threads_end_after_aclose_and_the_idle_timeout(self, monkeypatch):
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", SHORT)
        seen = []

        async def main():
            # Every idle worker (some may still wait with the old timeout) takes a
            # call, so each one then waits with the short timeout.
            n = worker_count()[1] + 3
            barrier = threading.Barrier(n)

            def call():
                seen.append(threading.current_thread())
                barrier.wait(DEADLINE)

            async with plait.ThreadPool(n) as pool, plait.TaskGroup() as tg:
                for _ in range(n - 1):
                    tg.spawn(pool.run_sync, call)
                pool.executor().submit(call)
            return n

        n = plait.run(main)
        assert len(set(seen)) == n
        for thread in seen:
            thread.join(DEADLINE)
            assert not thread.is_alive(), f"{thread.name} is still alive"
        wait_until(lambda: worker_count() == (0, 0))


def run_no_gc(main):
    """``plait.run(main, track)`` with the cyclic GC off; everything tracked must be
    dead once the run is over and the worker threads have let go of their calls."""
    track = Tracker()
    gc.collect()
    gc.disable()
    try:
        plait.run(main, track)
        settled = time.monotonic() + 5.0  # a worker drops its call right after it
        while track.alive() and time.monotonic() < settled:
            time.sleep(POLL)
        alive = track.alive()
        if alive:
            pytest.fail(_diagnose(alive))
    finally:
        gc.enable()


class TestNoReferenceCycles:
    def test_run_sync_results_and_errors(self):
        async def main(track):
            def returns():
                return track.marker("result")

            def raises():
                local = track.marker("local of a failing call")
                assert local is not None
                raise track("error of a call", Boom())

            async with plait.ThreadPool(2) as pool:
                await pool.run_sync(returns)
                with pytest.raises(Boom):
                    await pool.run_sync(raises)
            track("pool", pool)
            track("main task", plait.current_task())

        run_no_gc(main)

    def test_executor_results_errors_and_cancelled_futures(self):
        async def main(track):
            def returns():
                return track.marker("result of a future")

            def raises():
                raise track("error of a future", Boom())

            async with plait.ThreadPool(1) as pool:
                executor = track("executor", pool.executor())
                futures = [track("future", executor.submit(f)) for f in (returns, raises)]
                thread, _ = in_thread(lambda: [f.exception(DEADLINE) for f in futures])
                await join(thread)
                futures.clear()
            track("pool", pool)

        run_no_gc(main)
