"""queue_ping_pong: two tasks bounce one message back and forth through two queues."""

from __future__ import annotations

from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import WrongResult, check


@workload(
    "queue_ping_pong",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 200_000},
    quick={"n": 1_000},
)
def queue_ping_pong(seconds: float, n: int) -> float:
    """Two tasks in one task group bounce one message through two unbounded queues `n`
    times: *ping* puts `i` into the first queue and waits for it on the second, *pong*
    gets it from the first and puts it back into the second (asyncio two
    `asyncio.Queue()`, plait two `plait.Queue()`, both `await put(x)` / `await get()`;
    trio has no queue class, its queue is a memory channel pair, so two
    `trio.open_memory_channel(math.inf)` with `await send(x)` / `await receive()`).
    Unbounded everywhere, so a put never waits for room, as in asyncio; a trio buffer of 0
    would be a rendezvous, a different and slower synchronisation. Trio's `send` and
    `receive` and plait's `put` and `get` are always schedule points, also when they need
    not wait (asyncio's `put` on an unbounded queue never yields): that cost is part of
    their queues. Both tasks check every message (pong: `0, 1, 2, ...` in order; ping:
    its own `i` back), and that both queues end empty; the time includes spawning and
    joining the two tasks."""
    return n / seconds


def wrong(side: str, expected: int, got: object) -> WrongResult:
    return WrongResult(f"{side} expected message {expected}, got {got!r}")


def verify(n: int, pinged: int, ponged: int, left: int) -> None:
    check(pinged == n and ponged == n, f"{pinged} and {ponged} of {n} round-trips finished")
    check(left == 0, f"{left} messages left in the queues")


@impl("queue_ping_pong", "asyncio")
async def queue_ping_pong_asyncio(n: int) -> float:
    import asyncio

    there: asyncio.Queue[int] = asyncio.Queue()
    back: asyncio.Queue[int] = asyncio.Queue()
    pinged = ponged = 0

    async def ping() -> None:
        nonlocal pinged
        put, get = there.put, back.get
        for i in range(n):
            await put(i)
            got = await get()
            if got != i:
                raise wrong("ping", i, got)
            pinged += 1

    async def pong() -> None:
        nonlocal ponged
        get, put = there.get, back.put
        for i in range(n):
            got = await get()
            if got != i:
                raise wrong("pong", i, got)
            ponged += 1
            await put(got)

    start = perf_counter()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pong())
        tg.create_task(ping())
    elapsed = perf_counter() - start
    verify(n, pinged, ponged, there.qsize() + back.qsize())
    return elapsed


@impl("queue_ping_pong", "trio")
async def queue_ping_pong_trio(n: int) -> float:
    import math

    import trio

    there_send, there_receive = trio.open_memory_channel[int](math.inf)
    back_send, back_receive = trio.open_memory_channel[int](math.inf)
    pinged = ponged = 0

    async def ping() -> None:
        nonlocal pinged
        put, get = there_send.send, back_receive.receive
        for i in range(n):
            await put(i)
            got = await get()
            if got != i:
                raise wrong("ping", i, got)
            pinged += 1

    async def pong() -> None:
        nonlocal ponged
        get, put = there_receive.receive, back_send.send
        for i in range(n):
            got = await get()
            if got != i:
                raise wrong("pong", i, got)
            ponged += 1
            await put(got)

    start = perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pong)
        nursery.start_soon(ping)
    elapsed = perf_counter() - start
    left = (
        there_receive.statistics().current_buffer_used
        + back_receive.statistics().current_buffer_used
    )
    verify(n, pinged, ponged, left)
    return elapsed


@impl("queue_ping_pong", "plait")
async def queue_ping_pong_plait(n: int) -> float:
    import plait

    there: plait.Queue[int] = plait.Queue()
    back: plait.Queue[int] = plait.Queue()
    pinged = ponged = 0

    async def ping() -> None:
        nonlocal pinged
        put, get = there.put, back.get
        for i in range(n):
            await put(i)
            got = await get()
            if got != i:
                raise wrong("ping", i, got)
            pinged += 1

    async def pong() -> None:
        nonlocal ponged
        get, put = there.get, back.put
        for i in range(n):
            got = await get()
            if got != i:
                raise wrong("pong", i, got)
            ponged += 1
            await put(got)

    start = perf_counter()
    async with plait.TaskGroup() as tg:
        tg.spawn(pong)
        tg.spawn(ping)
    elapsed = perf_counter() - start
    verify(n, pinged, ponged, there.qsize() + back.qsize())
    return elapsed
