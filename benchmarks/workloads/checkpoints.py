"""checkpoints: many tasks each passing many schedule points (yield to the scheduler)."""

from __future__ import annotations

from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import check


@workload(
    "checkpoints",
    unit="checkpoints/s",
    higher_is_better=True,
    params={"tasks": 1_000, "per_task": 200},
    quick={"tasks": 100, "per_task": 20},
)
def checkpoints(seconds: float, tasks: int, per_task: int) -> float:
    """`tasks` tasks in one task group each pass `per_task` checkpoints (asyncio
    `await asyncio.sleep(0)`, trio `await trio.lowlevel.checkpoint()`, plait
    `await plait.checkpoint()`); the time includes spawning and joining the tasks. Checks
    that all tasks had started before the first one finished (checkpoints do yield)."""
    return tasks * per_task / seconds


def verify(tasks: int, done: int, started_when_first_done: int) -> None:
    check(done == tasks, f"{done} of {tasks} tasks finished")
    check(
        started_when_first_done == tasks,
        f"checkpoints did not let the other tasks run: {started_when_first_done} of {tasks} "
        "tasks had started when the first one finished",
    )


@impl("checkpoints", "asyncio")
async def checkpoints_asyncio(tasks: int, per_task: int) -> float:
    import asyncio

    sleep = asyncio.sleep
    started = done = started_when_first_done = 0

    async def worker() -> None:
        nonlocal started, done, started_when_first_done
        started += 1
        for _ in range(per_task):
            await sleep(0)
        if not done:
            started_when_first_done = started
        done += 1

    start = perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(tasks):
            tg.create_task(worker())
    elapsed = perf_counter() - start
    verify(tasks, done, started_when_first_done)
    return elapsed


@impl("checkpoints", "trio")
async def checkpoints_trio(tasks: int, per_task: int) -> float:
    import trio

    checkpoint = trio.lowlevel.checkpoint
    started = done = started_when_first_done = 0

    async def worker() -> None:
        nonlocal started, done, started_when_first_done
        started += 1
        for _ in range(per_task):
            await checkpoint()
        if not done:
            started_when_first_done = started
        done += 1

    start = perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    elapsed = perf_counter() - start
    verify(tasks, done, started_when_first_done)
    return elapsed


@impl("checkpoints", "plait")
async def checkpoints_plait(tasks: int, per_task: int) -> float:
    import plait

    checkpoint = plait.checkpoint
    started = done = started_when_first_done = 0

    async def worker() -> None:
        nonlocal started, done, started_when_first_done
        started += 1
        for _ in range(per_task):
            await checkpoint()
        if not done:
            started_when_first_done = started
        done += 1

    start = perf_counter()
    async with plait.TaskGroup() as tg:
        for _ in range(tasks):
            tg.spawn(worker)
    elapsed = perf_counter() - start
    verify(tasks, done, started_when_first_done)
    return elapsed
