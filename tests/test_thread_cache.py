"""The worker-thread cache (plait._core._thread_cache): outcomes delivered in the worker,
idle workers reused, workers reaped after IDLE_TIMEOUT, the timeout-versus-new-job
race, and no plait thread left behind once ``plait.run`` has returned and the idle
timeout has passed.

Determinism: jobs that must overlap meet at a ``threading.Barrier``; a worker's end is
observed by joining its thread; the only polling waits for a state that has no event
(a worker putting itself back on the idle list), with a deadline.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
import weakref

import pytest

import plait
from plait._core import _thread_cache
from plait._core._thread_cache import start_thread_soon, worker_count

DEADLINE = 30.0
SHORT = 0.05  # a patched IDLE_TIMEOUT: workers end soon after their last job


class Boom(Exception):
    pass


def wait_until(pred):
    """Poll ``pred`` until true (waits for a state, not a guessed time)."""
    deadline = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.0005)


def all_idle():
    alive, idle = worker_count()
    return alive == idle


class Outcomes:
    """A ``deliver`` callback that records ``(value, error, thread)`` in a queue."""

    def __init__(self):
        self.queue = queue.Queue()

    def __call__(self, value, error):
        self.queue.put((value, error, threading.current_thread()))

    def get(self):
        return self.queue.get(timeout=DEADLINE)


def run_at_once(n, job=None):
    """Start ``n`` jobs that all wait at one barrier (so each has its own worker
    thread); return the worker threads. Every idle worker takes one of the jobs when
    ``n`` exceeds the idle count."""
    barrier = threading.Barrier(n + 1)
    threads = []
    outcomes = Outcomes()

    def meet():
        threads.append(threading.current_thread())
        barrier.wait(DEADLINE)
        if job is not None:
            job()

    for _ in range(n):
        start_thread_soon(meet, outcomes)
    barrier.wait(DEADLINE)
    for _ in range(n):
        _, error, _ = outcomes.get()
        assert error is None
    assert len(set(threads)) == n
    return threads


class TestStartThreadSoon:
    def test_value_delivered_in_the_worker_thread(self):
        outcomes = Outcomes()
        start_thread_soon(threading.current_thread, outcomes)
        value, error, thread = outcomes.get()
        assert error is None
        assert value is thread
        assert thread is not threading.current_thread()
        assert thread.daemon

    def test_error_delivered_with_its_traceback(self):
        def fails():
            raise Boom("in the worker")

        outcomes = Outcomes()
        start_thread_soon(fails, outcomes)
        value, error, _ = outcomes.get()
        assert value is None
        assert isinstance(error, Boom)
        names = [f.f_code.co_name for f, _ in traceback.walk_tb(error.__traceback__)]
        assert names[-1] == "fails"

    @pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt()])
    def test_base_exceptions_delivered_and_the_worker_survives(self, exc):
        def raises():
            raise exc

        outcomes = Outcomes()
        start_thread_soon(raises, outcomes)
        _, error, thread = outcomes.get()
        assert error is exc
        error = None
        wait_until(all_idle)
        start_thread_soon(threading.current_thread, outcomes)
        value, _, _ = outcomes.get()
        assert value is thread, "the worker that saw the exception went on working"

    def test_thread_named_after_the_job_then_idle(self):
        outcomes = Outcomes()
        start_thread_soon(lambda: threading.current_thread().name, outcomes, name="the job")
        name, _, thread = outcomes.get()
        assert name == "the job"
        wait_until(all_idle)
        assert thread.name == "plait worker (idle)"

    def test_worker_drops_the_job_once_delivered(self):
        class Payload:
            pass

        refs = []
        outcomes = Outcomes()
        arg, result = Payload(), Payload()
        refs += [weakref.ref(arg), weakref.ref(result)]

        def job(arg=arg, result=result):
            return result

        refs.append(weakref.ref(job))
        start_thread_soon(job, outcomes)
        del arg, result, job
        outcomes.get()
        # Dropped right after delivering: wait for it (a reference kept for good
        # fails at the deadline).
        wait_until(lambda: [ref() for ref in refs] == [None, None, None])

    def test_worker_count(self):
        wait_until(all_idle)
        alive, idle = worker_count()
        ready, proceed = threading.Event(), threading.Event()

        def busy():
            ready.set()
            assert proceed.wait(DEADLINE)

        outcomes = Outcomes()
        start_thread_soon(busy, outcomes)
        assert ready.wait(DEADLINE)
        if idle:
            assert worker_count() == (alive, idle - 1)
        else:
            assert worker_count() == (alive + 1, 0)
        proceed.set()
        outcomes.get()
        wait_until(all_idle)


class TestReuse:
    def test_an_idle_worker_is_reused(self):
        outcomes = Outcomes()
        start_thread_soon(threading.current_thread, outcomes)
        first, _, _ = outcomes.get()
        wait_until(all_idle)
        before = worker_count()
        start_thread_soon(threading.current_thread, outcomes)
        second, _, _ = outcomes.get()
        assert second is first, "the most recently idle worker takes the next job"
        wait_until(all_idle)
        assert worker_count() == before

    def test_sequential_to_thread_calls_use_one_thread(self):
        # Each call starts only after the previous one was delivered: one worker
        # suffices, so no second thread may be started (the worker must be back on
        # the idle list by the time its outcome reaches the task).
        async def main():
            return {await plait.to_thread.run_sync(threading.get_ident) for _ in range(2000)}

        wait_until(all_idle)
        idents = plait.run(main)
        assert len(idents) == 1, f"{len(idents)} threads served 2000 sequential calls"

    def test_overlapping_jobs_get_their_own_threads(self):
        wait_until(all_idle)
        alive, idle = worker_count()
        threads = run_at_once(idle + 3)
        assert len(threads) == idle + 3
        wait_until(all_idle)
        assert worker_count()[0] >= alive + 3


class TestIdleTimeout:
    def test_idle_timeout_is_read_at_each_wait(self, monkeypatch):
        # A busy worker sees a new IDLE_TIMEOUT at its next wait (the module reads
        # the global each time), which the reaping tests below rely on.
        ready, proceed = threading.Event(), threading.Event()

        def busy():
            ready.set()
            assert proceed.wait(DEADLINE)
            return threading.current_thread()

        outcomes = Outcomes()
        start_thread_soon(busy, outcomes)
        assert ready.wait(DEADLINE)
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", SHORT)
        proceed.set()
        thread, _, _ = outcomes.get()
        thread.join(DEADLINE)
        assert not thread.is_alive()

    def test_idle_workers_end_after_the_timeout(self, monkeypatch):
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", SHORT)
        threads = run_at_once(worker_count()[1] + 2)
        for thread in threads:
            thread.join(DEADLINE)
            assert not thread.is_alive()
        wait_until(lambda: worker_count() == (0, 0))

    def test_no_thread_left_behind_after_plait_run(self, monkeypatch):
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", SHORT)
        seen = []

        async def main():
            # Every idle worker (some may wait with the old timeout) takes a job, so
            # each one then waits with the short timeout.
            n = worker_count()[1] + 4
            barrier = threading.Barrier(n)
            limiter = plait.CapacityLimiter(n)

            def job():
                seen.append(threading.current_thread())
                barrier.wait(DEADLINE)
                return plait.from_thread.run_sync(lambda: "back on the loop")

            async with plait.TaskGroup() as tg:
                for _ in range(n):
                    tg.spawn(lambda: plait.to_thread.run_sync(job, limiter=limiter))
            return n

        n = plait.run(main)
        assert len(set(seen)) == n
        for thread in seen:
            thread.join(DEADLINE)
            assert not thread.is_alive(), f"{thread.name} is still alive"
        wait_until(lambda: worker_count() == (0, 0))
        names = [t.name for t in threading.enumerate() if t.name.startswith("plait worker")]
        assert names == []

    def test_timeout_racing_a_new_job_loses_no_job(self, monkeypatch):
        # With a timeout this short, workers often time out just as a job arrives;
        # the job must still run (the worker waits again instead of ending).
        monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 1e-5)
        outcomes = Outcomes()
        for i in range(2000):
            start_thread_soon(lambda i=i: i, outcomes)
            value, error, _ = outcomes.get()
            assert (value, error) == (i, None)
