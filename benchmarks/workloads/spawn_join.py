"""spawn_join: spawn many tasks that do nothing inside one task group and join them."""

from __future__ import annotations

from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import check


@workload(
    "spawn_join",
    unit="tasks/s",
    higher_is_better=True,
    params={"n": 100_000},
    quick={"n": 2_000},
)
def spawn_join(seconds: float, n: int) -> float:
    """Spawn `n` tasks that do nothing (`async def noop(): pass`) inside one task group
    (asyncio `TaskGroup.create_task`, trio nursery `start_soon`, plait `TaskGroup.spawn`)
    and wait for all of them."""
    return n / seconds


async def noop() -> None:
    pass


@impl("spawn_join", "asyncio")
async def spawn_join_asyncio(n: int) -> float:
    import asyncio

    start = perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            last = tg.create_task(noop())
    elapsed = perf_counter() - start
    check(last.done() and not last.cancelled(), "the last task did not finish")
    return elapsed


@impl("spawn_join", "trio")
async def spawn_join_trio(n: int) -> float:
    import trio

    start = perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(noop)
    elapsed = perf_counter() - start
    check(not nursery.child_tasks, "the nursery exited with children left")
    return elapsed


@impl("spawn_join", "plait")
async def spawn_join_plait(n: int) -> float:
    import plait

    start = perf_counter()
    async with plait.TaskGroup() as tg:
        for _ in range(n):
            last = tg.spawn(noop)
    elapsed = perf_counter() - start
    check(last.done() and not last.cancelled(), "the last task did not finish")
    return elapsed
