"""gil_scaling_hash and gil_scaling_python: when do two worker threads do twice the work?

Each measurement runs the same calls first with one call in a worker thread at a time,
then with two at a time (two tasks, each awaiting half of the calls one after the other),
and reports the speed-up: throughput with two threads divided by throughput with one
(= one-thread time / two-thread time). C code that releases the GIL (``hashlib`` on a
large buffer) should approach 2.0 on two free cores; a pure-Python loop holds the GIL
and stays near (or below) 1.0. The loop thread only waits meanwhile.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from benchmarks.registry import impl, workload
from benchmarks.workloads._tcp import documented
from benchmarks.workloads._util import check

RunSync = Callable[..., Awaitable[Any]]
"""``await run_sync(fn, *args)``: the runtime's to_thread."""
Both = Callable[[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]], Awaitable[None]]
"""``await both(a, b)``: run two async functions concurrently (a task group)."""

COMMON = """Each repetition of the measurement times the `calls` first one call at a time
(one task awaits them one after the other), then two at a time (two tasks in a task
group, each awaiting half of them one after the other); `rounds` such pairs alternate
and the fastest time of each kind is kept. The number reported is the speed-up:
throughput on 2 threads / throughput on 1 thread (= 1-thread time / 2-thread time), so
2.00 means two threads did the work in half the time and 1.00 means the second thread
did not help. plait `plait.to_thread.run_sync`, asyncio (and uvloop)
`asyncio.to_thread`, trio `trio.to_thread.run_sync`: the runtimes differ only in the
per-call overhead, negligible here, so their rows should agree within noise. Every
result is checked. Needs two free cores: on a busy or one-core machine even hashing
cannot scale."""

HASH_DOC = f"""`calls` calls of `hashlib.sha256(buf).digest()`, each over the same
`mib`-MiB buffer of random bytes, in worker threads. hashlib releases the GIL while it
hashes a buffer of more than 2 KiB, so two threads hash at once: expect close to 2.00 on
two free cores. {COMMON}"""

PYTHON_DOC = f"""`calls` calls of a pure-Python loop, `sum(i * i for i in range(n))`,
in worker threads. The loop holds the GIL (CPython's global interpreter lock) except
when the interpreter hands it to another thread every 5 ms, so two threads take turns
instead of running at once: expect about 1.00, or a little less (the hand-overs cost),
on a CPython built with the GIL. Pure-Python CPU work needs processes to scale.
{COMMON}"""

UNIT = "x speed-up, 2 threads vs 1"


@workload(
    "gil_scaling_hash",
    unit=UNIT,
    higher_is_better=True,
    params={"calls": 16, "mib": 16, "rounds": 5},
    quick={"calls": 2, "mib": 1, "rounds": 1},
)
@documented(HASH_DOC)
def gil_scaling_hash(speedup: float, calls: int, mib: int, rounds: int) -> float:
    return speedup


@workload(
    "gil_scaling_python",
    unit=UNIT,
    higher_is_better=True,
    params={"calls": 4, "n": 1_500_000, "rounds": 3},
    quick={"calls": 2, "n": 10_000, "rounds": 1},
)
@documented(PYTHON_DOC)
def gil_scaling_python(speedup: float, calls: int, n: int, rounds: int) -> float:
    return speedup


def sum_of_squares(n: int) -> int:
    return sum(i * i for i in range(n))


async def speedup(
    run_sync: RunSync, both: Both, fn: Callable[[], object], calls: int, rounds: int
) -> float:
    """One-thread time / two-thread time for ``calls`` calls of ``fn()`` (best of
    ``rounds`` each); every result must equal the first one."""
    check(calls >= 2 and calls % 2 == 0, f"calls must be even and >= 2, got {calls}")
    expected = fn()  # untimed: the reference result, and a warm-up
    results: list[object] = []

    async def serial(count: int) -> None:
        for _ in range(count):
            results.append(await run_sync(fn))

    async def half() -> None:
        await serial(calls // 2)

    one = two = float("inf")
    for _ in range(rounds):
        start = perf_counter()
        await serial(calls)
        one = min(one, perf_counter() - start)
        start = perf_counter()
        await both(half, half)
        two = min(two, perf_counter() - start)
    check(len(results) == 2 * calls * rounds, f"{len(results)} calls finished")
    wrong = sum(1 for r in results if r != expected)
    check(wrong == 0, f"{wrong} calls returned a wrong result")
    return one / two


def hash_job(mib: int) -> Callable[[], bytes]:
    buf = random.Random(0).randbytes(mib << 20)  # real pages, not the shared zero page
    return lambda: hashlib.sha256(buf).digest()


def python_job(n: int) -> Callable[[], int]:
    return lambda: sum_of_squares(n)


# -- one implementation per runtime, for both workloads ---------------------------------


async def plait_speedup(fn: Callable[[], object], calls: int, rounds: int) -> float:
    import plait

    async def both(a: Callable[[], Awaitable[None]], b: Callable[[], Awaitable[None]]) -> None:
        async with plait.TaskGroup() as tg:
            tg.spawn(a)
            tg.spawn(b)

    return await speedup(plait.to_thread.run_sync, both, fn, calls, rounds)


async def asyncio_speedup(fn: Callable[[], object], calls: int, rounds: int) -> float:
    import asyncio

    async def both(a: Callable[[], Awaitable[None]], b: Callable[[], Awaitable[None]]) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(a())
            tg.create_task(b())

    return await speedup(asyncio.to_thread, both, fn, calls, rounds)


async def trio_speedup(fn: Callable[[], object], calls: int, rounds: int) -> float:
    import trio

    async def both(a: Callable[[], Awaitable[None]], b: Callable[[], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a)
            nursery.start_soon(b)

    return await speedup(trio.to_thread.run_sync, both, fn, calls, rounds)


@impl("gil_scaling_hash", "plait")
async def gil_scaling_hash_plait(calls: int, mib: int, rounds: int) -> float:
    return await plait_speedup(hash_job(mib), calls, rounds)


@impl("gil_scaling_hash", "asyncio")
async def gil_scaling_hash_asyncio(calls: int, mib: int, rounds: int) -> float:
    return await asyncio_speedup(hash_job(mib), calls, rounds)


@impl("gil_scaling_hash", "trio")
async def gil_scaling_hash_trio(calls: int, mib: int, rounds: int) -> float:
    return await trio_speedup(hash_job(mib), calls, rounds)


@impl("gil_scaling_python", "plait")
async def gil_scaling_python_plait(calls: int, n: int, rounds: int) -> float:
    return await plait_speedup(python_job(n), calls, rounds)


@impl("gil_scaling_python", "asyncio")
async def gil_scaling_python_asyncio(calls: int, n: int, rounds: int) -> float:
    return await asyncio_speedup(python_job(n), calls, rounds)


@impl("gil_scaling_python", "trio")
async def gil_scaling_python_trio(calls: int, n: int, rounds: int) -> float:
    return await trio_speedup(python_job(n), calls, rounds)
