"""portal_submit: a synchronous thread calls an async function on an event loop running
in another thread, one call at a time; ``executor_submit_baseline``: the same round-trip
through a ``concurrent.futures.ThreadPoolExecutor`` (no event loop)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from time import perf_counter

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import WrongResult

WARMUP = 50
"""Untimed calls before the timed ones."""


async def aecho(i: int) -> int:
    """The trivial async function every round-trip runs on the loop."""
    return i


def echo(i: int) -> int:
    return i


@workload(
    "portal_submit",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 20_000},
    quick={"n": 200},
)
def portal_submit(seconds: float, n: int) -> float:
    """A synchronous thread (no event loop in it) calls the trivial `async def aecho(i)`
    on an event loop in another thread `n` times, each time blocking until the result is
    back. plait: `portal.submit(aecho, i).result()` on a `plait.Portal()` (its loop runs
    in the portal's thread; each call becomes a task of it and completes a
    `concurrent.futures.Future`). asyncio (and uvloop, same code on its loop):
    `asyncio.run_coroutine_threadsafe(aecho(i), loop).result()` into the runtime's own
    loop. trio: `trio.from_thread.run(aecho, i, trio_token=token)` into the runtime's
    own loop. The calling thread is a worker thread of the runtime's `to_thread` (a plain
    thread: trio refuses a blocking call from a thread that runs trio, and the harness
    runs every runtime in the main thread); the runtime's task just waits for it. So two
    threads take turns in every case: the caller and the loop that runs `aecho`. 50
    untimed calls first; every result is checked. Compare with
    `executor_submit_baseline`."""
    return n / seconds


def drive(call: Callable[[int], object], n: int) -> float:
    """``WARMUP + n`` sequential ``call(i)``; returns the seconds of the last ``n``."""
    for i in range(WARMUP):
        call(i)
    start = perf_counter()
    for i in range(n):
        got = call(i)
        if got != i:
            raise WrongResult(f"call {i} returned {got!r}")
    return perf_counter() - start


@impl("portal_submit", "plait")
async def portal_submit_plait(n: int) -> float:
    import plait

    def caller() -> float:
        with plait.Portal() as portal:
            submit = portal.submit
            return drive(lambda i: submit(aecho, i).result(), n)

    seconds: float = await plait.to_thread.run_sync(caller)
    return seconds


@impl("portal_submit", "asyncio")
async def portal_submit_asyncio(n: int) -> float:
    import asyncio

    loop = asyncio.get_running_loop()
    submit = asyncio.run_coroutine_threadsafe
    return await asyncio.to_thread(drive, lambda i: submit(aecho(i), loop).result(), n)


@impl("portal_submit", "trio")
async def portal_submit_trio(n: int) -> float:
    import trio

    token = trio.lowlevel.current_trio_token()
    run = trio.from_thread.run
    return await trio.to_thread.run_sync(drive, lambda i: run(aecho, i, trio_token=token), n)


@workload(
    "executor_submit_baseline",
    unit="round-trips/s",
    higher_is_better=True,
    params={"n": 20_000},
    quick={"n": 200},
)
def executor_submit_baseline(seconds: float, n: int) -> float:
    """The reference for `portal_submit`: the same `n` sequential calls through
    `concurrent.futures.ThreadPoolExecutor(max_workers=1)`:
    `executor.submit(echo, i).result()` with a plain function `echo(i)`, no event loop.
    Runtime-independent: the same synchronous code runs inside each runtime's `run`
    (whose loop sits idle, blocked by it), so the rows differ only by noise. 50 untimed
    calls first; every result is checked."""
    return n / seconds


@impl("executor_submit_baseline", "plait", "asyncio", "trio")
async def executor_submit_baseline_any(n: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        submit = executor.submit
        return drive(lambda i: submit(echo, i).result(), n)
