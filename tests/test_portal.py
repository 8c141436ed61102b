"""plait.Portal: a plait loop in a background thread, as a concurrent.futures.Executor.

submit (async functions as tasks, regular ones in worker threads, keyword arguments,
misuse), run, map, shutdown (the checks of CPython's test_concurrent_futures executor
and shutdown tests that apply: submit after shutdown, cancel_futures, wait=False,
context manager, dropping the portal, interpreter exit), cancelling a future cancels
its task even while it runs (its finally runs), exceptions with their tracebacks,
contextvars, several threads at once, no thread left behind, no reference cycles.
(wait_future, also on portal futures: tests/test_futures.py.)

Determinism: a job that must be caught running waits on a plait or threading Event
the test controls; threads are joined with a timeout. No sleeps.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import weakref

import pytest

import plait
from plait._core import _thread_cache
from plait._core._thread_cache import worker_count
from test_refcycles import Tracker, _diagnose

DEADLINE = 30.0
var = contextvars.ContextVar("var", default="unset")


class Boom(Exception):
    pass


def frames_of(exc):
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(exc.__traceback__)]


async def add(a, b):
    await plait.checkpoint()
    return a + b


def mul(x, y):
    return x * y


def capture(*args, **kwargs):
    return args, kwargs


async def job_fails():
    await plait.checkpoint()
    raise Boom("from the portal")


def sync_fails():
    raise Boom("from a worker thread")


def stack_of(ident):
    """The function names on a thread's stack, innermost first."""
    frames = traceback.walk_stack(sys._current_frames()[ident])
    return [frame.f_code.co_name for frame, _ in frames]


class Forever:
    """An async job that waits forever; ``started`` and ``finalized`` are set when it
    starts and when its ``finally`` runs."""

    def __init__(self):
        self.started, self.finalized = threading.Event(), threading.Event()

    async def __call__(self):
        try:
            self.started.set()
            await plait.sleep_forever()
        finally:
            self.finalized.set()


@pytest.fixture
def portal():
    p = plait.Portal()
    yield p
    p.shutdown(wait=True, cancel_futures=True)
    assert not p._state.thread.is_alive()


class TestSubmit:
    def test_async_function_runs_as_a_task_of_the_portal(self, portal):
        async def where():
            await plait.checkpoint()
            return threading.current_thread(), plait.current_task().name

        thread, name = portal.submit(where).result(DEADLINE)
        assert thread is portal._state.thread
        assert "where" in name

    def test_regular_function_runs_in_a_worker_thread(self, portal):
        assert portal.submit(pow, 2, 8).result(DEADLINE) == 256
        thread = portal.submit(threading.current_thread).result(DEADLINE)
        assert thread is not portal._state.thread
        assert thread is not threading.current_thread()

    def test_a_blocking_regular_function_does_not_block_the_loop(self, portal):
        go = threading.Event()
        blocked = portal.submit(go.wait, DEADLINE)
        assert portal.submit(add, 1, 2).result(DEADLINE) == 3  # the loop still runs
        go.set()
        assert blocked.result(DEADLINE) is True

    def test_keyword_arguments(self, portal):
        # As CPython's test_submit_keyword: 'self' and 'fn' are plain keywords.
        assert portal.submit(mul, 2, y=8).result(DEADLINE) == 16
        assert portal.submit(capture, 1, self=2, fn=3).result(DEADLINE) == (
            (1,),
            {"self": 2, "fn": 3},
        )

        async def kw(a, *, b):
            return a, b

        assert portal.submit(kw, 1, b=2).result(DEADLINE) == (1, 2)
        with pytest.raises(TypeError):
            portal.submit(fn=capture, arg=1)
        with pytest.raises(TypeError):
            portal.submit(arg=1)

    def test_other_async_callables(self, portal):
        class AsyncCallable:
            async def __call__(self, x):
                await plait.checkpoint()
                return threading.current_thread()

        @plait.coroutine
        def gen_coro(x):
            yield
            return threading.current_thread()

        assert portal.submit(functools.partial(add, 1), 2).result(DEADLINE) == 3
        # Both ran on the loop's thread, as tasks, not in worker threads:
        assert portal.submit(AsyncCallable(), 2).result(DEADLINE) is portal._state.thread
        assert portal.submit(gen_coro, 2).result(DEADLINE) is portal._state.thread

    def test_regular_function_returning_a_coroutine(self, portal):
        future = portal.submit(lambda: add(20, 22))
        assert future.result(DEADLINE) == 42

    def test_misuse(self, portal):
        coro = add(1, 2)
        with pytest.raises(TypeError, match="coroutine object"):
            portal.submit(coro)
        assert coro.cr_frame is None  # closed: no "never awaited" warning
        with pytest.raises(TypeError, match="needs a function"):
            portal.submit(42)

    def test_jobs_run_concurrently(self, portal):
        event = portal.run(_make_event)
        waiter = portal.submit(event.wait)
        setter = portal.submit(_set_soon, event)
        assert setter.result(DEADLINE) is None
        assert waiter.result(DEADLINE) is None

    def test_a_failing_job_does_not_disturb_the_others(self, portal):
        release = portal.run(_make_event)
        survivor = portal.submit(_wait_then_return, release, "survived")
        with pytest.raises(Boom):
            portal.submit(job_fails).result(DEADLINE)
        portal.submit(_set_soon, release).result(DEADLINE)
        assert survivor.result(DEADLINE) == "survived"

    def test_token(self, portal):
        done = threading.Event()
        seen = []
        portal.token.run_sync_soon(lambda: (seen.append(threading.current_thread()), done.set()))
        assert done.wait(DEADLINE)
        assert seen == [portal._state.thread]

    def test_name_and_repr(self):
        with plait.Portal(name="my portal") as p:
            assert p.name == "my portal"
            assert p._state.thread.name == "my portal"
            assert not p._state.thread.daemon  # joined by shutdown and at exit
            assert "my portal" in repr(p)
            assert "running" in repr(p)
        assert "shut down" in repr(p)
        with pytest.raises(TypeError):
            plait.Portal(name=3)


async def _make_event():
    return plait.Event()


async def _set_soon(event):
    await plait.checkpoint()
    event.set()


async def _wait_then_return(event, value):
    await event.wait()
    return value


class TestExceptionsAndContext:
    def test_async_exception_keeps_its_traceback(self, portal):
        with pytest.raises(Boom, match="from the portal") as info:
            portal.submit(job_fails).result(DEADLINE)
        frames = frames_of(info.value)
        assert frames[0] == "test_async_exception_keeps_its_traceback"
        assert frames[-1] == "job_fails"

    def test_sync_exception_keeps_the_thread_traceback(self, portal):
        with pytest.raises(Boom, match="from a worker thread") as info:
            portal.run(sync_fails)
        assert frames_of(info.value)[-1] == "sync_fails"

    def test_base_exceptions_go_to_the_future_too(self, portal):
        async def exits():
            raise SystemExit(3)

        with pytest.raises(SystemExit):
            portal.submit(exits).result(DEADLINE)
        assert portal.run(add, 1, 1) == 2  # the portal goes on

    def test_contextvars_of_the_submitting_thread(self, portal):
        async def read_and_set():
            seen = var.get()
            var.set("changed in the job")
            return seen

        def read_in_thread():
            return var.get()

        token = var.set("from the caller")
        try:
            assert portal.run(read_and_set) == "from the caller"
            assert portal.run(read_in_thread) == "from the caller"
            assert var.get() == "from the caller"  # the job's change stays there
        finally:
            var.reset(token)
        assert portal.run(read_in_thread) == "unset"

    def test_from_thread_in_a_sync_job(self, portal):
        def sync_job():
            return plait.from_thread.run(add, 2, 3)

        assert portal.run(sync_job) == 5


class TestRun:
    def test_result(self, portal):
        assert portal.run(add, 1, 2) == 3
        assert portal.run(mul, 3, y=4) == 12

    def test_from_the_portal_thread_is_an_error(self, portal):
        async def nested():
            portal.run(add, 1, 2)

        with pytest.raises(RuntimeError, match=r"portal's own thread.*wait_future"):
            portal.run(nested)

    def test_from_a_worker_thread_of_the_portal(self, portal):
        assert portal.run(lambda: portal.run(add, 1, 2)) == 3

    def test_from_another_loop_thread_is_an_error(self, portal):
        async def main():
            with pytest.raises(RuntimeError, match="plait loop's thread"):
                portal.run(add, 1, 2)
            return await plait.wait_future(portal.submit(add, 1, 2))

        assert plait.run(main) == 3

    def test_interrupted_wait_cancels_the_job(self, portal):
        forever = Forever()

        def interrupt():
            assert forever.started.wait(DEADLINE)
            main = threading.main_thread().ident
            # Interrupt the main thread once it waits in future.result() (not earlier,
            # in submit(), where it has no future to cancel yet). Polls a state.
            deadline = time.monotonic() + DEADLINE
            while stack_of(main)[:3] != ["wait", "result", "run"]:
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            signal.pthread_kill(main, signal.SIGINT)

        assert threading.current_thread() is threading.main_thread()
        thread = threading.Thread(target=interrupt)
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            portal.run(forever)
        thread.join(DEADLINE)
        assert forever.finalized.wait(DEADLINE)


class TestMap:
    def test_map(self, portal):
        expected = list(map(pow, range(10), range(10)))
        assert list(portal.map(pow, range(10), range(10))) == expected
        assert list(portal.map(pow, range(10), range(10), chunksize=3)) == expected
        assert list(portal.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]

    def test_map_exception(self):
        with plait.Portal() as p:
            results = p.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
            assert next(results) == (0, 1)
            assert next(results) == (0, 1)
            with pytest.raises(ZeroDivisionError):
                next(results)

    def test_map_timeout_cancels_the_rest(self, portal):
        release = portal.run(_make_event)
        finalized = threading.Event()

        async def job(i):
            if i < 2:
                return i
            try:
                await release.wait()
            finally:
                finalized.set()

        results = []
        with pytest.raises(TimeoutError):
            for value in portal.map(job, range(3), timeout=0.01):
                results.append(value)
        assert results == [0, 1]
        assert finalized.wait(DEADLINE)  # the task that timed out was cancelled


class TestCancel:
    def test_cancelling_a_running_job_cancels_its_task(self, portal):
        forever = Forever()
        future = portal.submit(forever)
        assert forever.started.wait(DEADLINE)
        assert not future.running()  # portal futures stay pending until they end
        assert future.cancel()
        assert future.cancelled()
        # wait() sees it done once the task has finished: its finally has run.
        done, _ = concurrent.futures.wait([future], timeout=DEADLINE)
        assert done == {future}
        assert forever.finalized.is_set()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result()

    def test_cancelling_a_sync_job_sets_check_cancelled(self, portal):
        started, seen = threading.Event(), []

        def cooperative():
            started.set()
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                try:
                    plait.from_thread.check_cancelled()
                except plait.Cancelled:
                    seen.append("cancelled")
                    return
                started.wait(0.001)  # a step of blocking work

        future = portal.submit(cooperative)
        assert started.wait(DEADLINE)
        assert future.cancel()
        concurrent.futures.wait([future], timeout=DEADLINE)
        assert seen == ["cancelled"]

    def test_cancelled_before_it_starts_never_runs(self, portal):
        # Like CPython's gh-94440 (submit, cancel at once, then shutdown must not
        # hang); the loop is held so that the job cannot have started yet.
        hold, held = threading.Event(), threading.Event()
        ran = []

        async def hold_the_loop():
            held.set()
            assert hold.wait(DEADLINE)  # blocks the loop's thread on purpose

        async def never():
            ran.append("ran")

        portal.submit(hold_the_loop)
        assert held.wait(DEADLINE)
        future = portal.submit(never)
        assert future.cancel()
        hold.set()
        done, _ = concurrent.futures.wait([future], timeout=DEADLINE)
        assert done == {future}
        portal.shutdown(wait=True)
        assert ran == []

    def test_cancel_after_the_end_does_nothing(self, portal):
        future = portal.submit(add, 1, 2)
        assert future.result(DEADLINE) == 3
        assert not future.cancel()
        assert future.result() == 3


class TestShutdown:
    def test_submit_after_shutdown(self):
        p = plait.Portal()
        p.shutdown()
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            p.submit(pow, 2, 5)
        with pytest.raises(RuntimeError, match="after shutdown"):
            p.run(add, 1, 2)
        p.shutdown()  # again: no harm

    def test_shutdown_finishes_the_jobs(self):
        # As CPython's test_hang_issue12364.
        p = plait.Portal()
        futures = [p.submit(add, i, i) for i in range(50)]
        futures += [p.submit(mul, i, i) for i in range(50)]
        p.shutdown()
        assert not p._state.thread.is_alive()
        assert [f.result(0) for f in futures] == [2 * i for i in range(50)] + [
            i * i for i in range(50)
        ]

    def test_cancel_futures_cancels_pending_and_running_jobs(self):
        p = plait.Portal()
        began, finalized = [], []
        started = threading.Event()

        async def forever(i):
            began.append(i)
            try:
                started.set()
                await plait.sleep_forever()
            finally:
                finalized.append(i)

        futures = [p.submit(forever, i) for i in range(20)]
        assert started.wait(DEADLINE)
        p.shutdown(cancel_futures=True)
        assert all(f.cancelled() for f in futures)
        assert not p._state.thread.is_alive()
        assert began
        assert sorted(finalized) == sorted(began)  # every task that started cleaned up

    @pytest.mark.parametrize("how", ["shutdown(wait=False)", "del portal"])
    def test_ending_without_waiting_still_finishes_the_jobs(self, how):
        # As CPython's test_shutdown_no_wait and test_del_shutdown.
        p = plait.Portal()
        results = p.map(abs, range(-5, 5))
        thread = p._state.thread
        if how == "del portal":
            del p
        else:
            p.shutdown(wait=False)
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert list(results) == [abs(v) for v in range(-5, 5)]

    def test_context_manager(self):
        with plait.Portal() as p:
            assert list(p.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
        assert not p._state.thread.is_alive()

    def test_shutdown_wait_from_the_portal_thread_is_an_error(self, portal):
        async def shut():
            with pytest.raises(RuntimeError, match="wait=False"):
                portal.shutdown()
            portal.shutdown(wait=False)
            return "ok"

        assert portal.submit(shut).result(DEADLINE) == "ok"
        portal._state.thread.join(DEADLINE)
        assert not portal._state.thread.is_alive()

    def test_no_thread_left_behind(self, monkeypatch):
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
        before = set(threading.enumerate())
        n = worker_count()[1] + 2  # every idle worker takes a job: all wait shortly
        barrier = threading.Barrier(n)
        seen = []

        def job():
            seen.append(threading.current_thread())
            barrier.wait(DEADLINE)

        async def allow_n_threads():
            plait.to_thread.current_default_thread_limiter().total_tokens = n

        with plait.Portal() as p:
            p.run(allow_n_threads)
            for f in [p.submit(job) for _ in range(n)]:
                f.result(DEADLINE)
        for thread in seen:
            thread.join(DEADLINE)
            assert not thread.is_alive(), thread.name
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        assert left == []


def run_script(code):
    src = os.path.join(os.path.dirname(os.path.dirname(__file__)), "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(argv, capture_output=True, timeout=DEADLINE, env=env, check=False)


class TestInterpreterExit:
    @pytest.mark.parametrize("end", ["", "p.shutdown(wait=False)"])
    def test_a_forgotten_portal_finishes_its_jobs_at_exit(self, end):
        # As CPython's test_interpreter_shutdown and test_hang_gh83386.
        out = run_script(f"""
            import plait
            async def job():
                await plait.checkpoint()
                print("apple", flush=True)
            p = plait.Portal()
            p.submit(job)
            {end}
        """)
        assert (out.returncode, out.stderr, out.stdout.strip()) == (0, b"", b"apple")

    def test_submit_in_an_atexit_handler(self):
        # As CPython's test_submit_after_interpreter_shutdown.
        out = run_script("""
            import atexit
            import plait
            @atexit.register
            def run_last():
                try:
                    p.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
            p = plait.Portal()
        """)
        assert (out.returncode, out.stderr, out.stdout.strip()) == (0, b"", b"runtime-error")


class TestThreads:
    def test_several_threads_at_once(self, portal):
        errors = []

        def client(k):
            try:
                futures = [portal.submit(add, k, i) for i in range(50)]
                assert [f.result(DEADLINE) for f in futures] == [k + i for i in range(50)]
                assert portal.run(mul, k, 2) == 2 * k
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
            assert not t.is_alive()
        assert errors == []

    def test_wait_and_as_completed(self, portal):
        futures = [portal.submit(add, i, 0) for i in range(10)]
        done, not_done = concurrent.futures.wait(futures, timeout=DEADLINE)
        assert (len(done), not_done) == (10, set())
        completed = concurrent.futures.as_completed(futures, timeout=DEADLINE)
        assert sorted(f.result() for f in completed) == list(range(10))


class TestNoReferenceCycles:
    def test_results_errors_and_cancelled_jobs_are_freed(self):
        track = Tracker()
        gc.collect()
        gc.disable()
        try:
            with plait.Portal() as p:

                async def ok():
                    local = track.marker("local of a job")
                    track("task of a job", plait.current_task())
                    await plait.checkpoint()
                    assert local is not None
                    return track.marker("result of a job")

                async def fails():
                    local = track.marker("local of a failing job")
                    await plait.checkpoint()
                    assert local is not None
                    raise track("exception of a failing job", Boom())

                def sync_fails():
                    local = track.marker("local of a failing sync job")
                    assert local is not None
                    raise track("exception of a failing sync job", Boom())

                started = threading.Event()

                async def forever():
                    local = track.marker("local of a cancelled job")
                    started.set()
                    await plait.sleep_forever()
                    assert local is not None

                assert p.run(ok) is not None
                for fn in (fails, sync_fails):
                    try:
                        p.run(fn)
                    except Boom:
                        pass
                future = p.submit(forever)
                assert started.wait(DEADLINE)
                future.cancel()
                concurrent.futures.wait([future], timeout=DEADLINE)
                del future
            # Worker threads drop their last references right after delivering.
            settle = time.monotonic() + 5.0
            while track.alive() and time.monotonic() < settle:
                time.sleep(0.0005)
            alive = track.alive()
            if alive:
                pytest.fail(_diagnose(alive))
        finally:
            gc.enable()

    def test_no_stale_references(self):
        # As CPython's test_no_stale_references: a discarded future's job is freed.
        collected = threading.Event()

        class MyObject:
            async def my_method(self):
                pass

        with plait.Portal() as p:
            obj = MyObject()
            ref = weakref.ref(obj, lambda _: collected.set())
            p.submit(obj.my_method)
            del obj
            assert collected.wait(DEADLINE)
        assert ref() is None
