"""timers: many tasks each sleeping a random delay; reports the overhead per timer."""

from __future__ import annotations

import random
from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import check

EARLY_TOLERANCE = 0.001
"""A sleep that returns more than this many seconds early counts as wrong."""


@workload(
    "timers",
    unit="us/timer",
    higher_is_better=False,
    params={"n": 100_000, "max_delay": 0.050, "seed": 20240607},
    quick={"n": 2_000, "max_delay": 0.005},
)
def timers(seconds: float, n: int, max_delay: float, seed: int) -> float:
    """`n` tasks in one task group each sleep a delay drawn uniformly from
    [0, `max_delay`] (seeded PRNG: the same delays for every runtime), then check that
    they did not wake early. Overhead per timer = (elapsed - `max_delay`) / `n`, in
    microseconds; it includes spawning and joining the tasks."""
    return (seconds - max_delay) / n * 1e6


def delays(n: int, max_delay: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, max_delay) for _ in range(n)]


@impl("timers", "asyncio")
async def timers_asyncio(n: int, max_delay: float, seed: int) -> float:
    import asyncio

    sleep = asyncio.sleep
    ds = delays(n, max_delay, seed)
    done = early = 0

    async def worker(delay: float) -> None:
        nonlocal done, early
        t0 = perf_counter()
        await sleep(delay)
        if perf_counter() - t0 < delay - EARLY_TOLERANCE:
            early += 1
        done += 1

    start = perf_counter()
    async with asyncio.TaskGroup() as tg:
        for delay in ds:
            tg.create_task(worker(delay))
    elapsed = perf_counter() - start
    check(done == n and early == 0, f"{done} of {n} timers fired, {early} early")
    return elapsed


@impl("timers", "trio")
async def timers_trio(n: int, max_delay: float, seed: int) -> float:
    import trio

    sleep = trio.sleep
    ds = delays(n, max_delay, seed)
    done = early = 0

    async def worker(delay: float) -> None:
        nonlocal done, early
        t0 = perf_counter()
        await sleep(delay)
        if perf_counter() - t0 < delay - EARLY_TOLERANCE:
            early += 1
        done += 1

    start = perf_counter()
    async with trio.open_nursery() as nursery:
        for delay in ds:
            nursery.start_soon(worker, delay)
    elapsed = perf_counter() - start
    check(done == n and early == 0, f"{done} of {n} timers fired, {early} early")
    return elapsed


@impl("timers", "plait")
async def timers_plait(n: int, max_delay: float, seed: int) -> float:
    import plait

    sleep = plait.sleep
    ds = delays(n, max_delay, seed)
    done = early = 0

    async def worker(delay: float) -> None:
        nonlocal done, early
        t0 = perf_counter()
        await sleep(delay)
        if perf_counter() - t0 < delay - EARLY_TOLERANCE:
            early += 1
        done += 1

    start = perf_counter()
    async with plait.TaskGroup() as tg:
        for delay in ds:
            tg.spawn(worker, delay)
    elapsed = perf_counter() - start
    check(done == n and early == 0, f"{done} of {n} timers fired, {early} early")
    return elapsed
