"""concurrent.futures and plait: a synchronous program that calls async code through
``plait.Portal``, and a plait program that awaits the futures of an ``Executor``.

1. ``plait.Portal()`` runs a plait loop in a background thread and is a
   ``concurrent.futures.Executor``: ``submit`` returns a ``Future`` at once, ``run``
   waits for the result. Async functions run as tasks on the portal's loop, regular
   functions in its worker threads (so a blocking call never stalls the loop).
2. The futures work with everything in ``concurrent.futures``: ``as_completed``,
   ``wait``, ``Executor.map``. ``cancel()`` works even while the job runs: it cancels
   the task, whose ``finally`` blocks run on the portal's loop.
3. Code written for any Executor accepts a Portal as it is.
4. The other direction: inside ``plait.run``, ``await plait.wait_future(f)`` waits for
   a ``concurrent.futures.Future`` (here from a ``ThreadPoolExecutor``) without
   blocking the loop.

Run: .venv/bin/python examples/portal.py
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

import plait

Future = concurrent.futures.Future


async def fetch(name: str, seconds: float) -> str:
    """Stands for an async client call (HTTP, a database...)."""
    await plait.sleep(seconds)
    return f"{name} ({seconds} s)"


async def broken() -> None:
    await plait.sleep(0.01)
    raise ConnectionError("backend unavailable")


def blocking_read(path: str) -> str:
    """A regular function: the portal runs it in one of its worker threads."""
    where = threading.current_thread().name
    time.sleep(0.05)
    return f"read {path} in a worker thread: {where != 'MainThread'}"


async def slow_job(started: threading.Event, cleaned_up: threading.Event) -> str:
    started.set()
    try:
        await plait.sleep(60)
        return "never"
    finally:
        cleaned_up.set()  # runs on the portal's loop when the job is cancelled


def part1_portal(portal: plait.Portal) -> None:
    print("1. run() and submit()")
    print(f"   portal.run(fetch, 'config', 0.1) -> {portal.run(fetch, 'config', 0.1)!r}")
    future = portal.submit(blocking_read, "/etc/hosts")
    print(f"   submit() returned a concurrent.futures.Future: {isinstance(future, Future)}")
    print(f"   future.result() -> {future.result()!r}")
    failing = portal.submit(broken)
    print(f"   a job that raised: future.exception() -> {failing.exception()!r}")


def part2_futures(portal: plait.Portal) -> None:
    print("2. the futures work with concurrent.futures")
    futures = [portal.submit(fetch, name, s) for name, s in (("a", 0.3), ("b", 0.1), ("c", 0.2))]
    done = [f.result() for f in concurrent.futures.as_completed(futures)]
    print(f"   as_completed, in the order they finished: {done}")
    print(f"   map(), in argument order: {list(portal.map(fetch, 'xyz', [0.2, 0.1, 0.0]))}")

    started, cleaned_up = threading.Event(), threading.Event()
    job = portal.submit(slow_job, started, cleaned_up)
    started.wait()
    print(f"   job.cancel() while it runs -> {job.cancel()}")
    concurrent.futures.wait([job])  # done once its task has finished its cleanup
    print(f"   job.cancelled() -> {job.cancelled()}, its finally ran: {cleaned_up.is_set()}")


def fetch_all(executor: concurrent.futures.Executor, fn: Callable[..., object]) -> list[object]:
    """Written for any Executor: knows nothing about plait."""
    return list(executor.map(fn, ["p", "q"], [0.05, 0.05]))


def sync_fetch(name: str, seconds: float) -> str:
    time.sleep(seconds)
    return f"{name} ({seconds} s)"


def part3_any_executor(portal: plait.Portal) -> None:
    print("3. code written for any Executor")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        print(f"   ThreadPoolExecutor, a blocking function: {fetch_all(pool, sync_fetch)}")
    print(f"   Portal, an async function:               {fetch_all(portal, fetch)}")


def crunch(n: int) -> int:
    time.sleep(0.1)  # blocks its thread, not the loop
    return sum(range(n))


async def part4_wait_future() -> None:
    print("4. plait awaiting concurrent.futures futures")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(crunch, n) for n in (10, 100)]
        ticks = 0
        async with plait.TaskGroup() as tg:
            waits = [tg.spawn(plait.wait_future, f) for f in futures]
            while not all(w.done() for w in waits):  # the loop stays free meanwhile
                await plait.sleep(0.01)
                ticks += 1
        print(f"   results {[w.result() for w in waits]}; the loop ticked meanwhile: {ticks > 0}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(crunch, 1)  # takes the only worker for 0.1 s
        queued = pool.submit(crunch, 2)
        with plait.move_on_after(0.05):
            await plait.wait_future(queued)
        # Cancelling the wait cancels the future, if it has not started yet.
        print(f"   a timeout around wait_future: queued.cancelled() -> {queued.cancelled()}")
        await plait.wait_future(running)  # (leaving the with block must not block)


def main() -> None:
    with plait.Portal() as portal:  # shutdown() at the end waits for the jobs left
        part1_portal(portal)
        part2_futures(portal)
        part3_any_executor(portal)
    plait.run(part4_wait_future)


if __name__ == "__main__":
    main()
