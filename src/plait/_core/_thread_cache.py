"""A cache of worker threads for blocking calls. Layer L2 (imports nothing from plait).

Theory of operation: starting an OS thread costs tens of microseconds; waking an idle
one costs a lock release. :func:`start_thread_soon` hands ``fn`` to an idle worker if
there is one (the most recently idle first, whose stack is still warm) and starts a new
worker otherwise. A worker waits for its next job on a lock; after ``IDLE_TIMEOUT``
seconds without one it takes itself off the idle list and ends.

``deliver`` is called in the worker thread with ``(value, error)`` once ``fn`` returns;
it must not block and must not raise (it usually hands the outcome to a loop through
its thread-safe door). The worker joins the idle list just *before* it delivers (so
the next job, submitted as soon as the outcome arrives, reuses this thread), and drops
every reference to the job right after delivering, before it waits for the next one:
nothing a job touched outlives it.

Race (timeout versus a new job): a worker whose wait timed out removes itself from the
idle list. If it is no longer there, :func:`start_thread_soon` has just taken it and is
about to release its lock, so it waits again instead of ending.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "IDLE_TIMEOUT",
    "IDLE_WORKER_NAME",
    "jobs_in_flight",
    "start_thread_soon",
    "worker_count",
]

IDLE_TIMEOUT = 10.0

Deliver = Callable[[Any, BaseException | None], object]


class _Worker:
    __slots__ = ("_job", "_wake")

    def __init__(self) -> None:
        self._job: tuple[Callable[[], Any], Deliver, str] | None = None
        self._wake = threading.Lock()
        self._wake.acquire()

    def start(self) -> None:
        thread = threading.Thread(target=self._main, name="plait worker", daemon=True)
        thread.start()

    def _main(self) -> None:
        thread = threading.current_thread()
        while True:
            if not self._wake.acquire(timeout=IDLE_TIMEOUT):
                with _lock:
                    try:
                        _idle.remove(self)
                    except ValueError:
                        continue  # taken just now: the job's release is coming
                    _all.discard(self)
                return
            job = self._job
            assert job is not None
            self._job = None
            fn, deliver, name = job
            del job
            thread.name = name
            try:
                value = fn()
            except BaseException as exc:
                error: BaseException | None = exc
                value = None
                del exc
            else:
                error = None
            del fn
            thread.name = IDLE_WORKER_NAME
            # Idle *before* delivering: the loop may hand out its next job as soon as it
            # has this outcome, and should find this (warm) thread instead of starting
            # another one. A new job cannot start before this one's references are
            # dropped below: its release of ``_wake`` is only acquired at the top of the
            # loop.
            with _lock:
                _idle.append(self)
            try:
                deliver(value, error)
            except BaseException:  # pragma: no cover - deliver must not raise
                import traceback

                traceback.print_exc()
            finally:
                global _busy
                with _lock:
                    _busy -= 1
            value = error = deliver = None  # type: ignore[assignment]


IDLE_WORKER_NAME = "plait worker (idle)"
_lock = threading.Lock()
_idle: list[_Worker] = []
_all: set[_Worker] = set()
# Jobs handed out and not yet delivered. Its decrement follows the delivery: once it is
# 0, every outcome is in its loop's thread-safe queue already.
_busy = 0


def start_thread_soon(fn: Callable[[], Any], deliver: Deliver, name: str = "plait worker") -> None:
    """Run ``fn()`` in a worker thread, then call ``deliver(value, error)`` there."""
    global _busy
    with _lock:
        _busy += 1
        worker = _idle.pop() if _idle else None
        if worker is None:
            worker = _Worker()
            _all.add(worker)
            fresh = True
        else:
            fresh = False
    worker._job = (fn, deliver, name)
    if fresh:
        try:
            worker.start()
        except BaseException:
            with _lock:
                _all.discard(worker)
                _busy -= 1
            raise
    worker._wake.release()


def _forget_after_fork() -> None:
    # The child of a fork has none of the workers (threads do not survive a fork):
    # start afresh, or a job would go to a worker that does not exist and never end.
    global _lock, _busy
    _lock = threading.Lock()
    _idle.clear()
    _all.clear()
    _busy = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def jobs_in_flight() -> int:
    """Jobs started and not yet delivered, in every thread."""
    return _busy


def worker_count() -> tuple[int, int]:
    """``(alive, idle)`` worker threads, for statistics and tests."""
    with _lock:
        return len(_all), len(_idle)
