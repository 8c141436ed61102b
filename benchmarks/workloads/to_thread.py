"""to_thread: sequential round-trips from a task to a worker thread and back; and
``thread_queue_baseline``, the same round-trip with no event loop at all (a bare thread
and two ``queue.Queue``s), the floor the runtimes are measured against."""

from __future__ import annotations

import queue
import threading
from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import WrongResult, check

WARMUP = 50
"""Untimed calls before the timed ones: the worker thread exists when timing starts."""


def echo(i: int) -> int:
    """The trivial function every round-trip runs in the worker thread."""
    return i


@workload(
    "to_thread",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 20_000},
    quick={"n": 200},
)
def to_thread(seconds: float, n: int) -> float:
    """One task awaits `n` calls of a trivial function (`echo(i)`, returns `i`) in a
    worker thread, one after the other: plait `await plait.to_thread.run_sync(echo, i)`,
    asyncio (and uvloop, same code on its loop) `await asyncio.to_thread(echo, i)`, trio
    `await trio.to_thread.run_sync(echo, i)`, each with its default limiter and thread
    cache (asyncio: the loop's default `ThreadPoolExecutor`). Each call is a round-trip:
    hand the call to an idle worker thread, wake it, run `echo`, hand the result back
    through the loop's thread-safe door, wake the loop, resume the task. 50 untimed
    calls first, so the worker thread already exists; every result is checked. Compare
    with `thread_queue_baseline`, the same round-trip without a loop."""
    return n / seconds


def wrong(i: int, got: object) -> WrongResult:
    return WrongResult(f"call {i} returned {got!r}")


@impl("to_thread", "plait")
async def to_thread_plait(n: int) -> float:
    import plait

    run_sync = plait.to_thread.run_sync
    for i in range(WARMUP):
        await run_sync(echo, i)
    start = perf_counter()
    for i in range(n):
        got = await run_sync(echo, i)
        if got != i:
            raise wrong(i, got)
    return perf_counter() - start


@impl("to_thread", "asyncio")
async def to_thread_asyncio(n: int) -> float:
    import asyncio

    run_sync = asyncio.to_thread
    for i in range(WARMUP):
        await run_sync(echo, i)
    start = perf_counter()
    for i in range(n):
        got = await run_sync(echo, i)
        if got != i:
            raise wrong(i, got)
    return perf_counter() - start


@impl("to_thread", "trio")
async def to_thread_trio(n: int) -> float:
    import trio

    run_sync = trio.to_thread.run_sync
    for i in range(WARMUP):
        await run_sync(echo, i)
    start = perf_counter()
    for i in range(n):
        got = await run_sync(echo, i)
        if got != i:
            raise wrong(i, got)
    return perf_counter() - start


@workload(
    "thread_queue_baseline",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 20_000},
    quick={"n": 200},
)
def thread_queue_baseline(seconds: float, n: int) -> float:
    """The floor for `to_thread`: the same `n` sequential round-trips with no event loop.
    The calling thread puts `i` into one `queue.Queue` and blocks on a second; one bare
    `threading.Thread` gets `i` from the first, calls `echo(i)` and puts the result into
    the second. Runtime-independent: the same synchronous code runs inside each runtime's
    `run` (whose loop sits idle, blocked by it), so the rows differ only by noise. 50
    untimed round-trips first; every result is checked."""
    return n / seconds


def queue_round_trips(n: int) -> float:
    """``WARMUP + n`` round-trips through a bare thread; returns the seconds of the last n."""
    there: queue.Queue[int | None] = queue.Queue()
    back: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        get, put = there.get, back.put
        while (i := get()) is not None:
            put(echo(i))

    thread = threading.Thread(target=worker, name="thread_queue_baseline")
    thread.start()
    try:
        put, get = there.put, back.get
        for i in range(WARMUP):
            put(i)
            get()
        start = perf_counter()
        for i in range(n):
            put(i)
            got = get()
            if got != i:
                raise wrong(i, got)
        elapsed = perf_counter() - start
    finally:
        there.put(None)
        thread.join()
    check(back.empty(), "results were left in the queue")
    return elapsed


@impl("thread_queue_baseline", "plait", "asyncio", "trio")
async def thread_queue_baseline_any(n: int) -> float:
    return queue_round_trips(n)
