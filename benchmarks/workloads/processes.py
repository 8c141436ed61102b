"""Worker processes: plait.ProcessPool against concurrent.futures.ProcessPoolExecutor
(asyncio, uvloop) and anyio.to_process (trio).

- ``process_call``: sequential round-trips of a trivial call to one worker process;
  ``process_call_baseline``: the same through a ``ProcessPoolExecutor`` with no loop.
- ``process_call_concurrent``: the same call from 8 tasks on a pool of 2 workers.
- ``process_bulk``: a 100 MB ``bytes`` argument sent to a worker and returned unchanged.
- ``process_bulk_numpy``: the same with a 100 MB numpy array.
- ``process_cpu_scaling``: 8 CPU-bound pure-Python jobs on 2 workers vs on one thread.

Every implementation gets a *kit* from its runtime (how to call a function in a worker,
run tasks concurrently, call a function in a thread), so all runtimes run the same
measuring code. Workers are started and checked before timing begins, and the pools are
shut down when the implementation ends, even on error.

The ProcessPoolExecutors use the ``forkserver`` start method, not Linux's default
``fork``: on Python 3.12+ a ``fork()`` in a process that has threads (the executor's
management thread, the to_thread workers of ``process_cpu_scaling``) warns
(DeprecationWarning, "may lead to deadlocks in the child"). forkserver is safe there,
like plait's and anyio's workers (fresh interpreters), and is Python 3.14's default. The
start method only changes how workers start, which is never timed.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any

from benchmarks.registry import impl, workload
from benchmarks.workloads._tcp import documented
from benchmarks.workloads._util import WrongResult, check

WARMUP = 20
"""Untimed trivial calls before the timed ones."""
START_METHOD = "forkserver"
"""ProcessPoolExecutor's start method (see the module docstring)."""
START_ROUNDS = 20
"""At most this many rounds of concurrent calls to see every worker of a pool started."""


# -- the functions the workers run (module level: every runtime pickles them by name) ---


def echo(i: int) -> int:
    """The trivial call."""
    return i


def identity(data: Any) -> Any:
    """The bulk call: returns its argument, which travels both ways."""
    return data


def sum_of_squares(n: int) -> int:
    """The CPU-bound pure-Python job."""
    return sum(i * i for i in range(n))


def pid_after(delay: float) -> int:
    """Hold a worker for ``delay`` seconds and say which one it was (warm-up only)."""
    time.sleep(delay)
    return os.getpid()


def new_executor(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    context = multiprocessing.get_context(START_METHOD)
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


# -- the kits: one per runtime ------------------------------------------------------------

Call = Callable[..., Awaitable[Any]]
"""``await call(fn, *args)``: run ``fn(*args)`` in a worker process (or a thread)."""
Job = Callable[[], Coroutine[Any, Any, None]]
"""An argument-less ``async def``."""
Group = Callable[[Sequence[Job]], Awaitable[None]]
"""``await group(fns)``: run every async function of ``fns`` concurrently, wait for all."""


@dataclass(frozen=True)
class Kit:
    call: Call
    """To a worker process of a pool of the requested size."""
    group: Group
    to_thread: Call
    """To the runtime's worker threads."""


Kits = Callable[[int], AbstractAsyncContextManager[Kit]]
"""``async with kits(workers) as kit``: a kit whose pool has ``workers`` workers."""


@asynccontextmanager
async def plait_kit(workers: int) -> AsyncIterator[Kit]:
    import plait

    async def group(fns: Sequence[Job]) -> None:
        async with plait.TaskGroup() as tg:
            for fn in fns:
                tg.spawn(fn)

    async with plait.ProcessPool(workers) as pool:
        yield Kit(pool.run_sync, group, plait.to_thread.run_sync)
        started = pool.started_workers
        check(started == workers, f"the pool started {started} workers, not {workers}")


@asynccontextmanager
async def asyncio_kit(workers: int) -> AsyncIterator[Kit]:
    import asyncio

    async def group(fns: Sequence[Job]) -> None:
        async with asyncio.TaskGroup() as tg:
            for fn in fns:
                tg.create_task(fn())

    loop = asyncio.get_running_loop()
    executor = new_executor(workers)
    try:
        yield Kit(partial(loop.run_in_executor, executor), group, asyncio.to_thread)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@asynccontextmanager
async def trio_kit(workers: int) -> AsyncIterator[Kit]:
    # anyio has no call to close its worker processes: it kills them when trio.run ends.
    import anyio
    import anyio.to_process
    import trio

    async def group(fns: Sequence[Job]) -> None:
        async with trio.open_nursery() as nursery:
            for fn in fns:
                nursery.start_soon(fn)

    limiter = anyio.CapacityLimiter(workers)
    yield Kit(partial(anyio.to_process.run_sync, limiter=limiter), group, trio.to_thread.run_sync)


KITS: dict[str, Kits] = {"plait": plait_kit, "asyncio": asyncio_kit, "trio": trio_kit}
"""asyncio's serves uvloop too (its family)."""


def implement(workload_name: str, core: Callable[..., Awaitable[float]]) -> None:
    """Register ``core(kits, **params)`` as the implementation of ``workload_name`` for
    every runtime, each with its own kits."""
    for runtime, kits in KITS.items():
        impl(workload_name, runtime)(partial(core, kits))


async def start_workers(kit: Kit, workers: int) -> None:
    """Untimed: make sure ``workers`` worker processes exist, then ``WARMUP`` calls."""
    seen: set[int] = set()

    async def hold() -> None:
        seen.add(await kit.call(pid_after, 0.1))

    for _ in range(START_ROUNDS):
        await kit.group([hold] * workers)
        if len(seen) >= workers:
            break
    check(len(seen) == workers, f"{len(seen)} worker processes answered, not {workers}")
    for i in range(WARMUP):
        got = await kit.call(echo, i)
        if got != i:
            raise wrong(i, got)


def wrong(i: int, got: object) -> WrongResult:
    return WrongResult(f"call {i} returned {got!r}")


# -- process_call and process_call_baseline -----------------------------------------------


@workload(
    "process_call",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 5_000},
    quick={"n": 100},
)
def process_call(seconds: float, n: int) -> float:
    """One task awaits `n` calls of a trivial module-level function (`echo(i)`, returns
    `i`) in a worker process, one after the other, on a pool of 1 worker: plait `await
    pool.run_sync(echo, i)` on `plait.ProcessPool(1)`; asyncio (and uvloop, same code on
    its loop) `await loop.run_in_executor(executor, echo, i)` on a
    `concurrent.futures.ProcessPoolExecutor(1)` (forkserver start method); trio `await
    anyio.to_process.run_sync(echo, i, limiter=CapacityLimiter(1))` (anyio on trio). Each
    call pickles the function (by name) and `i`, sends them to the worker, which runs
    `echo` and sends the pickled result back, and wakes the task. The worker is started
    and 20 calls are made before timing; every result is checked. Compare with
    `process_call_baseline`, the same calls with no event loop."""
    return n / seconds


async def sequential(kits: Kits, n: int) -> float:
    async with kits(1) as kit:
        await start_workers(kit, 1)
        call = kit.call
        start = perf_counter()
        for i in range(n):
            got = await call(echo, i)
            if got != i:
                raise wrong(i, got)
        return perf_counter() - start


implement("process_call", sequential)


@workload(
    "process_call_baseline",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 5_000},
    quick={"n": 100},
)
def process_call_baseline(seconds: float, n: int) -> float:
    """The reference for `process_call`: the same `n` sequential calls with no event
    loop, `executor.submit(echo, i).result()` on a
    `concurrent.futures.ProcessPoolExecutor(1)` (forkserver start method) from plain
    synchronous code. Runtime-independent: the same code runs inside each runtime's `run`
    (whose loop sits idle, blocked by it), so the rows differ only by noise. The worker
    is started and 20 calls are made before timing; every result is checked."""
    return n / seconds


@impl("process_call_baseline", "plait", "asyncio", "trio")
async def process_call_baseline_any(n: int) -> float:
    executor = new_executor(1)
    try:
        submit = executor.submit
        for i in range(WARMUP):
            submit(echo, i).result()
        start = perf_counter()
        for i in range(n):
            got = submit(echo, i).result()
            if got != i:
                raise wrong(i, got)
        return perf_counter() - start
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# -- process_call_concurrent ----------------------------------------------------------------


@workload(
    "process_call_concurrent",
    unit="calls/s",
    higher_is_better=True,
    params={"n": 10_000, "tasks": 8, "workers": 2},
    quick={"n": 160},
)
def process_call_concurrent(seconds: float, n: int, tasks: int, workers: int) -> float:
    """Throughput of the trivial call `echo(i)` of `process_call` when `tasks` tasks
    each make `n / tasks` calls, one after the other, on one pool of `workers` worker
    processes: plait `plait.ProcessPool(workers)`, asyncio (and uvloop)
    `ProcessPoolExecutor(workers)` (forkserver), trio `anyio.to_process.run_sync` with
    `CapacityLimiter(workers)`. So calls queue for the workers, and the pool's
    hand-over from one call to the next counts. Both workers are started (and seen to
    answer) and 20 calls are made before timing; every result is checked."""
    return n / seconds


async def concurrently(kits: Kits, n: int, tasks: int, workers: int) -> float:
    check(n % tasks == 0, f"n={n} is not a multiple of tasks={tasks}")
    per_task = n // tasks
    done = [0] * tasks

    async with kits(workers) as kit:
        await start_workers(kit, workers)
        call = kit.call

        async def calls(t: int) -> None:
            for i in range(t * per_task, (t + 1) * per_task):
                got = await call(echo, i)
                if got != i:
                    raise wrong(i, got)
            done[t] = per_task

        start = perf_counter()
        await kit.group([partial(calls, t) for t in range(tasks)])
        seconds = perf_counter() - start
    check(sum(done) == n, f"{sum(done)} of {n} calls finished")
    return seconds


implement("process_call_concurrent", concurrently)


# -- process_bulk ---------------------------------------------------------------------------


@workload(
    "process_bulk",
    unit="ms/round-trip",
    higher_is_better=False,
    params={"size": 100_000_000, "calls": 5},
    quick={"size": 4_000_000, "calls": 2},
)
def process_bulk(seconds: float, size: int, calls: int) -> float:
    """One task sends a `size`-byte `bytes` object of random data (100 MB) to a worker
    process, which returns it unchanged (`identity(data)`), `calls` times one after the
    other, on a pool of 1 worker; the number is the mean time of a round-trip. plait
    `pool.run_sync(identity, data)` (buffers of 1 MiB or more travel out of band through
    shared memory), asyncio (and uvloop) `loop.run_in_executor(executor, identity, data)`
    on a `ProcessPoolExecutor(1)` (forkserver; pickled through a pipe), trio
    `anyio.to_process.run_sync(identity, data)` (pickled through the worker's stdin and
    stdout pipes). The worker is started and one untimed round-trip of the same size is
    made first. Inside the timing each result is checked for its type, length and 16
    sampled bytes; the full comparison with the original runs between the timed calls."""
    return seconds * 1000.0


async def bulk(kits: Kits, size: int, calls: int) -> float:
    rng = random.Random(0)
    data = rng.randbytes(size)  # real pages, not the shared zero page
    return await round_trips(kits, data, rng.sample(range(size), 14), calls)


async def round_trips(kits: Kits, data: Any, sample: list[int], calls: int) -> float:
    """`calls` timed round-trips of `data` through `identity` on a pool of 1 worker
    (after an untimed one); each result is checked for its type, length and the
    elements at `sample` (and both ends) inside the timing, in full outside it."""
    probes = sorted({0, len(data) - 1, *sample})
    expected = [data[k] for k in probes]

    def verify(got: Any, what: str) -> None:
        same = type(got) is type(data) and len(got) == len(data)
        check(same and bool((got == data).all() if hasattr(got, "all") else got == data), what)

    async with kits(1) as kit:
        await start_workers(kit, 1)
        call = kit.call
        verify(await call(identity, data), "the warm-up round-trip returned wrong data")
        seconds = 0.0
        for i in range(calls):
            start = perf_counter()
            got = await call(identity, data)
            ok = type(got) is type(data) and len(got) == len(data)
            ok = ok and [got[k] for k in probes] == expected
            seconds += perf_counter() - start
            check(ok, f"round-trip {i} returned wrong data")
            verify(got, f"round-trip {i} returned wrong data")
            del got
    return seconds / calls


implement("process_bulk", bulk)


@workload(
    "process_bulk_numpy",
    unit="ms/round-trip",
    higher_is_better=False,
    params={"size": 100_000_000, "calls": 5},
    quick={"size": 4_000_000, "calls": 2},
)
def process_bulk_numpy(seconds: float, size: int, calls: int) -> float:
    """`process_bulk` with a numpy array instead of `bytes`: a `size`-byte float64 array
    (100 MB) sent to a worker process and returned unchanged, `calls` times, on a pool of
    1 worker; the mean time of a round-trip. numpy arrays offer their memory as pickle
    protocol 5 buffers: plait moves them through shared memory and the receiver gets a
    (copy-on-write) view of it, where `bytes` must be copied out; the others pickle
    them through their pipes. Checked like `process_bulk` (16 sampled elements inside
    the timing, a full comparison between calls)."""
    return seconds * 1000.0


async def bulk_numpy(kits: Kits, size: int, calls: int) -> float:
    import numpy

    data = numpy.random.default_rng(0).random(size // 8)
    return await round_trips(kits, data, random.Random(0).sample(range(len(data)), 14), calls)


implement("process_bulk_numpy", bulk_numpy)


# -- process_cpu_scaling --------------------------------------------------------------------


@workload(
    "process_cpu_scaling",
    unit="x speed-up, 2 processes vs 1 thread",
    higher_is_better=True,
    params={"jobs": 8, "n": 3_000_000, "workers": 2, "rounds": 2},
    quick={"n": 20_000, "rounds": 1},
)
@documented(
    """`jobs` CPU-bound pure-Python jobs, `sum(i * i for i in range(n))` (about 0.3 s
    each on a 2020s x86 core), run one after the other in one worker thread (one task
    awaits them: plait `plait.to_thread.run_sync`, asyncio and uvloop
    `asyncio.to_thread`, trio `trio.to_thread.run_sync`), then all at once on a pool of
    `workers` worker processes (`jobs` tasks, one job each: plait
    `plait.ProcessPool(workers)`, asyncio and uvloop `ProcessPoolExecutor(workers)`
    (forkserver), trio `anyio.to_process.run_sync` with `CapacityLimiter(workers)`). The
    number is the speed-up: thread time / process time, the fastest of `rounds`
    alternating pairs each. The GIL keeps threads from running Python code at once, so
    2 worker processes should approach 2.00 on 2 free cores (less on a busy machine).
    Both workers are started before timing; every result is checked against the closed
    form n(n-1)(2n-1)/6."""
)
def process_cpu_scaling(speedup: float, jobs: int, n: int, workers: int, rounds: int) -> float:
    return speedup


async def cpu_scaling(kits: Kits, jobs: int, n: int, workers: int, rounds: int) -> float:
    expected = (n - 1) * n * (2 * n - 1) // 6
    results: list[object] = []
    async with kits(workers) as kit:
        await start_workers(kit, workers)
        check(await kit.to_thread(echo, -1) == -1, "the warm-up call to a thread failed")

        async def job() -> None:
            results.append(await kit.call(sum_of_squares, n))

        one = many = float("inf")
        for _ in range(rounds):
            start = perf_counter()
            for _ in range(jobs):
                results.append(await kit.to_thread(sum_of_squares, n))
            one = min(one, perf_counter() - start)
            start = perf_counter()
            await kit.group([job] * jobs)
            many = min(many, perf_counter() - start)
    check(len(results) == 2 * jobs * rounds, f"{len(results)} jobs finished")
    bad = sum(1 for r in results if r != expected)
    check(bad == 0, f"{bad} jobs returned a wrong result")
    return one / many


implement("process_cpu_scaling", cpu_scaling)
