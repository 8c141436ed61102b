"""idle_task_bytes: the memory each task keeps while it waits, measured with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import check


@workload(
    "idle_task_bytes",
    unit="bytes/task",
    higher_is_better=False,
    params={"n": 100_000},
    quick={"n": 1_000},
)
def idle_task_bytes(grown: float, n: int) -> float:
    """`n` tasks in one task group all wait on one event (asyncio `asyncio.Event`, trio
    `trio.Event`, plait `plait.Event`, each `await ev.wait()`). Memory is traced with
    `tracemalloc` from before the first spawn; once every task is blocked in `wait()`
    (asyncio: `asyncio.sleep(0)` until all have started; trio
    `trio.testing.wait_all_tasks_blocked()`; plait `plait.testing.wait_all_tasks_blocked()`)
    the growth of the *current* traced memory (not the peak), both ends taken after
    `gc.collect()`, is divided by `n`; then the event is set and every task must wake and
    finish. Included: everything that lives as long as a waiting task - the task object,
    its coroutine and frame (a 3-line coroutine function: small) and the frames of the
    `wait()` call it is suspended in, its context copy, its entry in the task group
    (asyncio also its weak reference in the set of all tasks) and its registration with
    the event (asyncio a future in the event's waiter deque, trio and plait a parking-lot
    entry). Counted as requested sizes of Python allocations (including the GC header),
    not RSS: allocator overhead and fragmentation are not. tracemalloc makes this workload
    slow; its own bookkeeping is not counted."""
    return grown / n


def verify(n: int, started: int, woken_early: int, woken: int, grown: int) -> None:
    check(started == n, f"only {started} of {n} tasks were waiting at the measurement")
    check(woken_early == 0, f"{woken_early} tasks woke before the event was set")
    check(woken == n, f"{woken} of {n} tasks woke after the event was set")
    check(grown > 0, f"traced memory did not grow ({grown} bytes): nothing was measured")


def baseline() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def grown_since(base: int) -> int:
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()  # the joins below need no tracing
    return grown


@impl("idle_task_bytes", "asyncio")
async def idle_task_bytes_asyncio(n: int) -> float:
    import asyncio

    ev = asyncio.Event()
    started = woken = 0

    async def waiter() -> None:
        nonlocal started, woken
        started += 1
        await ev.wait()
        woken += 1

    tracemalloc.start()
    try:
        async with asyncio.TaskGroup() as tg:
            base = baseline()
            for _ in range(n):
                tg.create_task(waiter())
            while started < n:  # a task parks in wait() in the step that counts it
                await asyncio.sleep(0)
            grown = grown_since(base)
            woken_early = woken
            ev.set()
    finally:
        tracemalloc.stop()
    verify(n, started, woken_early, woken, grown)
    return grown


@impl("idle_task_bytes", "trio")
async def idle_task_bytes_trio(n: int) -> float:
    import trio
    import trio.testing

    ev = trio.Event()
    started = woken = 0

    async def waiter() -> None:
        nonlocal started, woken
        started += 1
        await ev.wait()
        woken += 1

    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            base = baseline()
            for _ in range(n):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            grown = grown_since(base)
            woken_early = woken
            ev.set()
    finally:
        tracemalloc.stop()
    verify(n, started, woken_early, woken, grown)
    return grown


@impl("idle_task_bytes", "plait")
async def idle_task_bytes_plait(n: int) -> float:
    import plait
    import plait.testing

    ev = plait.Event()
    started = woken = 0

    async def waiter() -> None:
        nonlocal started, woken
        started += 1
        await ev.wait()
        woken += 1

    tracemalloc.start()
    try:
        async with plait.TaskGroup() as tg:
            base = baseline()
            for _ in range(n):
                tg.spawn(waiter)
            await plait.testing.wait_all_tasks_blocked()
            grown = grown_since(base)
            woken_early = woken
            ev.set()
    finally:
        tracemalloc.stop()
    verify(n, started, woken_early, woken, grown)
    return grown
