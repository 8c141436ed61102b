"""plait.to_thread: results, errors with the thread's traceback, context variables,
limiters, cancellation in both modes (waiting for the thread, check_cancelled, and
abandon_on_cancel), and no reference cycles. (from_thread and its misuse errors:
tests/test_from_thread.py; the worker-thread cache, reuse and reaping:
tests/test_thread_cache.py.)

Determinism: a thread that must be caught mid-call blocks on a ``threading.Event`` the
test controls; the task learns that the thread got there through a ``plait.Event`` the
thread sets with ``from_thread.run_sync`` (or waits for the state with
``wait_all_tasks_blocked``). No sleeps; the only polling waits for a worker thread to
drop its last references (there is no event for that).
"""

from __future__ import annotations

import contextvars
import functools
import gc
import threading
import time
import traceback

import pytest

import plait
from plait.lowlevel import current_token
from plait.testing import wait_all_tasks_blocked
from test_refcycles import Tracker, _diagnose

DEADLINE = 30.0
SETTLE = 5.0  # how long a worker may take to drop a finished job (normally microseconds)
var = contextvars.ContextVar("var", default="unset")


class Boom(Exception):
    pass


def frames_of(exc):
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(exc.__traceback__)]


async def start_cancellable(tg, fn, *args, **kwargs):
    """Spawn a task running ``to_thread.run_sync(fn, *args, **kwargs)`` in its own
    cancel scope; return ``(scope, log)``: log gets ``("returned", value)`` then
    ``("caught", scope.cancelled_caught)``."""
    log = []

    async def caller(task_status):
        with plait.CancelScope() as scope:
            task_status.started(scope)
            log.append(("returned", await plait.to_thread.run_sync(fn, *args, **kwargs)))
            await plait.checkpoint()
            log.append("after the checkpoint")
        log.append(("caught", scope.cancelled_caught))

    return await tg.start(caller), log


class TestRunSync:
    def test_result_and_args(self):
        async def main():
            return await plait.to_thread.run_sync(lambda a, b: (a, b, threading.get_ident()), 1, 2)

        a, b, ident = plait.run(main)
        assert (a, b) == (1, 2)
        assert ident != threading.get_ident()

    def test_runs_in_a_named_worker_thread(self):
        def whoami():
            return threading.current_thread().name, threading.current_thread().daemon

        async def main():
            return await plait.to_thread.run_sync(whoami)

        name, daemon = plait.run(main)
        assert "whoami" in name
        assert daemon

    def test_exception_keeps_the_thread_traceback(self):
        def fails_in_thread():
            raise Boom("from the thread")

        async def main():
            await plait.to_thread.run_sync(fails_in_thread)

        with pytest.raises(Boom, match="from the thread") as info:
            plait.run(main)
        names = frames_of(info.value)
        assert "main" in names
        assert names[-1] == "fails_in_thread"
        assert names.index("main") < names.index("fails_in_thread")

    def test_base_exception_crosses(self):
        def exits():
            raise SystemExit(3)

        async def main():
            with pytest.raises(SystemExit):
                await plait.to_thread.run_sync(exits)
            return "after"

        assert plait.run(main) == "after"

    def test_contextvars_visible_in_the_thread_and_changes_do_not_leak_back(self):
        def in_thread():
            seen = var.get()
            var.set("set in the thread")
            return seen, var.get()

        async def main():
            var.set("set in the task")
            seen = await plait.to_thread.run_sync(in_thread)
            return seen, var.get()

        assert plait.run(main) == (("set in the task", "set in the thread"), "set in the task")

    def test_each_call_gets_a_fresh_copy_of_the_context(self):
        def bump():
            var.set(var.get() + "+")
            return var.get()

        async def main():
            var.set("x")
            return [await plait.to_thread.run_sync(bump) for _ in range(3)]

        assert plait.run(main) == ["x+", "x+", "x+"]

    @pytest.mark.parametrize("kind", ["async function", "coroutine"])
    def test_async_function_is_a_type_error(self, kind):
        async def afn():
            pass

        async def main():
            if kind == "async function":
                await plait.to_thread.run_sync(afn)
            else:
                coro = afn()
                try:
                    await plait.to_thread.run_sync(coro)
                finally:
                    coro.close()

        with pytest.raises(TypeError, match=r"await it directly|needs a function"):
            plait.run(main)

    def test_not_callable_is_a_type_error(self):
        async def main():
            await plait.to_thread.run_sync(42)

        with pytest.raises(TypeError, match="needs a function, got"):
            plait.run(main)


class TestLimiter:
    def test_default_limiter_is_40_tokens_per_loop(self):
        async def main():
            limiter = plait.to_thread.current_default_thread_limiter()
            assert limiter is plait.to_thread.current_default_thread_limiter()
            return limiter

        first, second = plait.run(main), plait.run(main)
        assert isinstance(first, plait.CapacityLimiter)
        assert first.total_tokens == 40
        assert first is not second

    def test_default_limiter_outside_a_loop(self):
        with pytest.raises(RuntimeError):
            plait.to_thread.current_default_thread_limiter()

    def test_the_default_limiter_is_used_and_released(self):
        async def main():
            limiter = plait.to_thread.current_default_thread_limiter()
            inside = await plait.to_thread.run_sync(lambda: limiter.statistics().borrowed_tokens)
            return inside, limiter.statistics().borrowed_tokens

        assert plait.run(main) == (1, 0)

    def test_default_limiter_bounds_the_threads(self):
        async def main():
            plait.to_thread.current_default_thread_limiter().total_tokens = 1
            return await bounded_run(6, None)

        assert plait.run(main) == 1

    def test_custom_limiter_bounds_concurrency(self):
        async def main():
            limiter = plait.CapacityLimiter(2)
            peak = await bounded_run(6, limiter)
            assert limiter.statistics().borrowed_tokens == 0
            return peak

        assert plait.run(main) == 2

    def test_token_released_when_the_function_raises(self):
        def fails():
            raise Boom

        async def main():
            limiter = plait.CapacityLimiter(1)
            for _ in range(3):
                with pytest.raises(Boom):
                    await plait.to_thread.run_sync(fails, limiter=limiter)
            return limiter.statistics().borrowed_tokens

        assert plait.run(main) == 0

    @pytest.mark.parametrize("bad", [2, threading.Semaphore(2), plait.Semaphore(2)])
    def test_bad_limiter_is_a_type_error(self, bad):
        ran = []

        async def main():
            await plait.to_thread.run_sync(ran.append, 1, limiter=bad)

        with pytest.raises(TypeError, match="CapacityLimiter"):
            plait.run(main)
        assert ran == []


async def bounded_run(jobs, limiter):
    """Run ``jobs`` calls at once through ``limiter``; return the most threads seen
    inside the function at the same time. While the first ones hold every token, the
    others must wait for the limiter, not run."""
    lock = threading.Lock()
    gate = threading.Event()
    state = {"active": 0, "peak": 0, "done": 0}
    entered = plait.Semaphore(0)
    token = current_token()

    def job():
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        plait.from_thread.run_sync(entered.release, token=token)
        assert gate.wait(DEADLINE)
        with lock:
            state["active"] -= 1
            state["done"] += 1

    lim = limiter if limiter is not None else plait.to_thread.current_default_thread_limiter()
    total = int(lim.total_tokens)
    async with plait.TaskGroup() as tg:
        for _ in range(jobs):
            tg.spawn(functools.partial(plait.to_thread.run_sync, job, limiter=limiter))
        for _ in range(total):
            await entered.acquire()
        await wait_all_tasks_blocked()
        assert state["active"] == total
        assert lim.statistics().tasks_waiting == jobs - total
        gate.set()
    assert state["done"] == jobs
    return state["peak"]


class TestCancelWaitsForTheThread:
    def test_task_waits_and_check_cancelled_raises(self):
        async def main():
            entered, proceed, seen = plait.Event(), threading.Event(), []

            def cooperative():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                try:
                    plait.from_thread.check_cancelled()
                except plait.Cancelled:
                    seen.append("Cancelled in the thread")
                    raise
                seen.append("not cancelled")

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(tg, cooperative)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                assert log == [], "the task must wait for its thread"
                proceed.set()
            return seen, log

        assert plait.run(main) == (["Cancelled in the thread"], [("caught", True)])

    def test_check_cancelled_is_quiet_when_not_cancelled(self):
        def checks():
            plait.from_thread.check_cancelled()
            return "fine"

        async def main():
            return await plait.to_thread.run_sync(checks)

        assert plait.run(main) == "fine"

    def test_thread_ignoring_cancellation_returns_and_next_checkpoint_raises(self):
        async def main():
            entered, proceed = plait.Event(), threading.Event()

            def stubborn():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                return "kept"

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(tg, stubborn)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                assert log == []
                proceed.set()
            return log

        assert plait.run(main) == [("returned", "kept"), ("caught", True)]

    def test_thread_error_after_cancel_is_not_lost(self):
        async def main():
            entered, proceed = plait.Event(), threading.Event()

            def fails():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                raise Boom("after cancel")

            async with plait.TaskGroup() as tg:
                scope, _ = await start_cancellable(tg, fails)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                proceed.set()

        with pytest.raises(ExceptionGroup) as info:
            plait.run(main)
        assert info.group_contains(Boom, match="after cancel")

    def test_already_cancelled_never_starts_the_thread(self):
        ran = []

        async def main():
            limiter = plait.CapacityLimiter(1)
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.to_thread.run_sync(ran.append, 1, limiter=limiter)
            assert limiter.statistics().borrowed_tokens == 0
            return scope.cancelled_caught

        assert plait.run(main) is True
        assert ran == []

    def test_cancelled_while_waiting_for_the_limiter(self):
        ran = []

        async def main():
            limiter = plait.CapacityLimiter(1)
            async with limiter:
                with plait.move_on_after(0) as scope:
                    await plait.to_thread.run_sync(ran.append, 1, limiter=limiter)
            return scope.cancelled_caught, limiter.statistics().borrowed_tokens

        assert plait.run(main) == (True, 0)
        assert ran == []


class TestAbandonOnCancel:
    def test_cancelled_at_once_result_discarded_token_held_until_the_end(self):
        async def main():
            entered, proceed, finished = plait.Event(), threading.Event(), threading.Event()
            limiter = plait.CapacityLimiter(1)

            def blocked():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                finished.set()
                return "discarded"

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(
                    tg, blocked, abandon_on_cancel=True, limiter=limiter
                )
                await entered.wait()
                scope.cancel()
            # The caller is gone while its thread is still blocked.
            assert log == [("caught", True)]
            assert not finished.is_set()
            assert limiter.statistics().borrowed_tokens == 1
            proceed.set()
            async with limiter:  # the thread's token comes back when it ends
                assert finished.is_set()
            return log

        assert plait.run(main) == [("caught", True)]

    def test_error_of_an_abandoned_thread_is_dropped(self):
        async def main():
            entered, proceed = plait.Event(), threading.Event()
            limiter = plait.CapacityLimiter(1)

            def fails():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                raise Boom("nobody waits")

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(
                    tg, fails, abandon_on_cancel=True, limiter=limiter
                )
                await entered.wait()
                scope.cancel()
            proceed.set()
            async with limiter:
                pass
            return log

        assert plait.run(main) == [("caught", True)]

    def test_not_cancelled_behaves_as_usual(self):
        def fails():
            raise Boom("seen")

        async def main():
            assert await plait.to_thread.run_sync(lambda: 7, abandon_on_cancel=True) == 7
            await plait.to_thread.run_sync(fails, abandon_on_cancel=True)

        with pytest.raises(Boom, match="seen"):
            plait.run(main)

    def test_check_cancelled_in_an_abandoned_thread(self):
        seen, done = [], threading.Event()

        async def main():
            entered, proceed = plait.Event(), threading.Event()

            def abandoned():
                try:
                    plait.from_thread.run_sync(entered.set)
                    assert proceed.wait(DEADLINE)
                    plait.from_thread.check_cancelled()
                except BaseException as exc:
                    seen.append(type(exc).__name__)
                finally:
                    done.set()

            async with plait.TaskGroup() as tg:
                scope, _ = await start_cancellable(tg, abandoned, abandon_on_cancel=True)
                await entered.wait()
                scope.cancel()
            proceed.set()

        plait.run(main)
        assert done.wait(DEADLINE)
        assert seen == ["Cancelled"]


def run_no_gc(main):
    """``plait.run(main, track)`` with the cyclic GC off; everything tracked must be
    dead once the run is over and the worker threads have let go of their jobs."""
    track = Tracker()
    gc.collect()
    gc.disable()
    try:
        try:
            plait.run(main, track)
        except Boom as exc:
            track("exception raised out of plait.run", exc)
        # A worker thread may still be dropping its last references to the job (it
        # does so right after handing the outcome over): give it a moment.
        settled = time.monotonic() + SETTLE
        while track.alive() and time.monotonic() < settled:
            time.sleep(0.0005)
        alive = track.alive()
        if alive:
            pytest.fail(_diagnose(alive))
    finally:
        gc.enable()
    assert track.refs, "nothing was tracked"


class TestNoReferenceCycles:
    def test_result(self):
        async def main(track):
            def in_thread():
                local = track.marker("local of the thread function")
                assert local is not None
                return track.marker("result")

            await plait.to_thread.run_sync(in_thread)
            track("main task", plait.current_task())

        run_no_gc(main)

    def test_exception(self):
        async def main(track):
            def in_thread():
                local = track.marker("local of the thread function")
                assert local is not None
                raise track("exception raised in the thread", Boom())

            await plait.to_thread.run_sync(in_thread)

        run_no_gc(main)

    def test_cancelled_waiting_and_abandoned(self):
        async def main(track):
            for abandon in (False, True):
                entered, proceed = plait.Event(), threading.Event()
                limiter = plait.CapacityLimiter(1)

                def in_thread(entered=entered, proceed=proceed, abandon=abandon):
                    local = track.marker(f"local of a cancelled thread (abandon={abandon})")
                    plait.from_thread.run_sync(entered.set)
                    assert proceed.wait(DEADLINE)
                    assert local is not None
                    return track.marker(f"result of a cancelled thread (abandon={abandon})")

                async with plait.TaskGroup() as tg:
                    scope, _ = await start_cancellable(
                        tg, in_thread, abandon_on_cancel=abandon, limiter=limiter
                    )
                    await entered.wait()
                    scope.cancel()
                    if not abandon:
                        await wait_all_tasks_blocked()
                        proceed.set()
                proceed.set()
                async with limiter:
                    pass

        run_no_gc(main)
