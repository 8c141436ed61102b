"""A pool on dask.distributed: ``plait.cluster.DaskPool`` against dask's own client.

- ``cluster_calls``: ``n`` small calls, all in flight at once, on a cluster of 2 worker
  processes whose scheduler runs in a process of its own, as in any real deployment
  (``dask scheduler`` on its machine). plait: ``DaskPool(address)``, one task per call
  awaiting ``pool.run_sync``; asyncio (and uvloop): dask's own asynchronous client on
  the runtime's loop, one task per call awaiting its dask future; trio (dask has no trio
  client): the synchronous client, one task per call woken through trio's token by the
  future's done-callback, which fetches the result in dask's callback thread.
- ``cluster_calls_baseline``: the same calls through the synchronous client from plain
  synchronous code, ``client.submit`` ``n`` times and one ``client.gather``: dask's own
  time, the reference for the 10% target of issue 7.
- ``cluster_calls_local`` and ``cluster_calls_local_baseline``: the same on a
  ``LocalCluster``, whose scheduler runs in the measuring process (what ``DaskPool()``
  starts). There every bit of work the client side does competes with the scheduler
  for that process's GIL, and the scheduler is the bottleneck of small calls.

Why one task per ``run_sync`` for plait, not ``pool.map(echo, range(n),
read_ahead=n)``: both have every call in flight at once, as ``n`` submits do, but the
map adds its own work (ordering, progress counts) that dask's submit-and-gather does
not do; one task per call measures what the pool adds to each call, and is the shape
of the asyncio code with dask's own client.

Each implementation starts its cluster (127.0.0.1, dashboard off, 1 thread per worker)
before timing, waits for every worker, and makes ``WARMUP`` calls the way the timed
ones are made (so the workers have imported this module and the connections are warm).
Every result is checked. Client and cluster are closed when the implementation ends,
even on error; their closing is not timed.

The scheduler and workers of ``cluster_calls`` are started by dask's
``SubprocessCluster`` (``python -m dask spec``, in the measuring process's working
directory, with its ``PYTHONPATH``). LocalCluster starts its workers with
multiprocessing's ``spawn``, which re-imports the main module in each worker: the
measurement runs as ``python -m benchmarks.child``, whose entry point is guarded, so the
workers import it without running it. Either way the workers import ``echo`` by name
from this module, so it travels as a reference, not by value, in every implementation.

The workloads exist only where dask.distributed is installed (``plait[cluster]``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

from benchmarks.registry import impl, workload
from benchmarks.workloads._util import WrongResult, check

WARMUP = 50
"""Untimed calls, made like the timed ones, before timing."""


def echo(i: int) -> int:
    """The small call."""
    return i


def wrong(i: int, got: object) -> WrongResult:
    return WrongResult(f"call {i} returned {got!r}")


async def timed(batch: Callable[[Any, int], Awaitable[list[Any]]], target: Any, n: int) -> float:
    """An untimed warm-up batch, then the seconds ``batch(target, n)`` takes; both
    checked."""
    check_all(await batch(target, WARMUP), WARMUP)
    start = perf_counter()
    results = await batch(target, n)
    seconds = perf_counter() - start
    check_all(results, n)
    return seconds


def check_all(results: list[Any], n: int) -> None:
    check(len(results) == n, f"{len(results)} of {n} calls returned")
    for i, got in enumerate(results):
        if got != i:
            raise wrong(i, got)


@contextmanager
def start_cluster(workers: int, scheduler: str) -> Iterator[Any]:
    """A cluster of ``workers`` worker processes of 1 thread each, on 127.0.0.1 with the
    dashboard off, closed on exit (blocks while it starts). ``scheduler``: "process"
    (a process of its own) or "local" (a ``LocalCluster``: in this process)."""
    import distributed

    # the scheduler's HTTP server (health, metrics) would take port 8787 otherwise,
    # and warn when another cluster on the machine already has it
    scheduler_kwargs = {"dashboard_address": "127.0.0.1:0"}
    if scheduler == "local":
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs=scheduler_kwargs,
        )
    else:
        from distributed.deploy.subprocess import SubprocessCluster

        # the workers import this module by name: from where we import it
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = root if not path else os.pathsep.join([root, path])
        cluster = SubprocessCluster(
            host="127.0.0.1",
            n_workers=workers,
            threads_per_worker=1,
            dashboard_address=None,
            scheduler_kwargs=scheduler_kwargs,
        )
    with cluster:
        yield cluster


def wait_for(client: Any, workers: int) -> None:
    """Block until the cluster has ``workers`` single-threaded workers."""
    client.wait_for_workers(workers)
    threads = sum(client.nthreads().values())
    check(threads == workers, f"the cluster has {threads} worker threads, not {workers}")


@contextmanager
def synchronous_client(workers: int, scheduler: str) -> Iterator[Any]:
    """A synchronous ``distributed.Client`` of a new ``start_cluster(workers,
    scheduler)``, every worker seen; client and cluster closed on exit."""
    import distributed

    with (
        start_cluster(workers, scheduler) as cluster,
        distributed.Client(cluster.scheduler_address, set_as_default=False) as client,
    ):
        wait_for(client, workers)
        yield client


PARAMS = {"n": 1_000, "workers": 2}
QUICK = {"n": 20}
OWN_PROCESS = {**PARAMS, "scheduler": "process"}
LOCAL = {**PARAMS, "scheduler": "local"}

if importlib.util.find_spec("distributed") is not None:

    @workload(
        "cluster_calls",
        unit="calls/s",
        higher_is_better=True,
        params=OWN_PROCESS,
        quick=QUICK,
    )
    def cluster_calls(seconds: float, n: int, workers: int, scheduler: str) -> float:
        """`n` calls of a small module-level function (`echo(i)`, returns `i`) on a
        dask.distributed cluster of `workers` worker processes (1 thread each,
        127.0.0.1) whose scheduler runs in a process of its own, as in a real
        deployment (dask's `SubprocessCluster`), all `n` in flight at once: plait
        `DaskPool(address)`, one task per call awaiting `pool.run_sync(echo, i)` in one
        task group (each call is one `Client.submit(echo, i, pure=False)` of the pool's
        synchronous client; the results of the calls done at about the same time are
        fetched with one `gather` on the client's loop and reach the tasks through the
        loop's thread-safe door); asyncio (and uvloop) dask's own asynchronous client,
        `Client(address, asynchronous=True)` on the runtime's loop, one task per call
        awaiting `client.submit(echo, i, pure=False)`; trio (dask has no trio client)
        the synchronous client, one task per call woken through
        `trio.lowlevel.current_trio_token()` by its future's done-callback, which
        fetches the result in dask's callback thread. The cluster is started, every
        worker seen, and 50 calls made the same way before timing; every result is
        checked. Compare with `cluster_calls_baseline`, dask's own time."""
        return n / seconds

    @workload(
        "cluster_calls_baseline",
        unit="calls/s",
        higher_is_better=True,
        params=OWN_PROCESS,
        quick=QUICK,
    )
    def cluster_calls_baseline(seconds: float, n: int, workers: int, scheduler: str) -> float:
        """The reference for `cluster_calls`: the same `n` calls on the same kind of
        cluster through dask's synchronous client from plain synchronous code,
        `client.submit(echo, i, pure=False)` `n` times, then one `client.gather` of all
        the futures. Runtime-independent: the same code runs inside each runtime's `run`
        (whose loop sits idle, blocked by it), so the rows differ only by noise. The
        cluster is started, every worker seen, and 50 calls made before timing; every
        result is checked."""
        return n / seconds

    @workload(
        "cluster_calls_local",
        unit="calls/s",
        higher_is_better=True,
        params=LOCAL,
        quick=QUICK,
    )
    def cluster_calls_local(seconds: float, n: int, workers: int, scheduler: str) -> float:
        """`cluster_calls` on a `distributed.LocalCluster` (what `DaskPool()` starts),
        whose scheduler runs in the measuring process: the client side's work competes
        with the scheduler for the GIL. Compare with `cluster_calls_local_baseline`."""
        return n / seconds

    @workload(
        "cluster_calls_local_baseline",
        unit="calls/s",
        higher_is_better=True,
        params=LOCAL,
        quick=QUICK,
    )
    def cluster_calls_local_baseline(
        seconds: float, n: int, workers: int, scheduler: str
    ) -> float:
        """`cluster_calls_baseline` on a `distributed.LocalCluster`: dask's own time,
        the reference for `cluster_calls_local`."""
        return n / seconds

    @impl("cluster_calls", "plait")
    @impl("cluster_calls_local", "plait")
    async def cluster_calls_plait(n: int, workers: int, scheduler: str) -> float:
        import plait
        from plait.cluster import DaskPool

        async def batch(pool: DaskPool, count: int) -> list[Any]:
            results: list[Any] = [None] * count

            async def call(i: int) -> None:
                results[i] = await pool.run_sync(echo, i)

            async with plait.TaskGroup() as tg:
                for i in range(count):
                    tg.spawn(call, i)
            return results

        with start_cluster(workers, scheduler) as cluster:
            async with DaskPool(cluster.scheduler_address) as pool:
                wait_for(pool.client, workers)
                seconds = await timed(batch, pool, n)
        return seconds

    @impl("cluster_calls", "asyncio")
    @impl("cluster_calls_local", "asyncio")
    async def cluster_calls_asyncio(n: int, workers: int, scheduler: str) -> float:
        import asyncio

        import distributed

        async def batch(client: Any, count: int) -> list[Any]:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(call(client, i)) for i in range(count)]
            return [t.result() for t in tasks]

        async def call(client: Any, i: int) -> Any:
            return await client.submit(echo, i, pure=False)

        with start_cluster(workers, scheduler) as cluster:
            address = cluster.scheduler_address
            async with distributed.Client(
                address, asynchronous=True, set_as_default=False
            ) as client:
                await client.wait_for_workers(workers)
                threads = sum((await client.nthreads()).values())
                check(threads == workers, f"{threads} worker threads, not {workers}")
                seconds = await timed(batch, client, n)
        return seconds

    @impl("cluster_calls", "trio")
    @impl("cluster_calls_local", "trio")
    async def cluster_calls_trio(n: int, workers: int, scheduler: str) -> float:
        import trio

        token = trio.lowlevel.current_trio_token()

        async def batch(client: Any, count: int) -> list[Any]:
            results: list[Any] = [None] * count

            def deliver(i: int, done: trio.Event, remote: Any) -> None:
                # dask's callback thread: fetch the result, wake the task
                try:
                    results[i] = remote.result()
                finally:
                    token.run_sync_soon(done.set)

            async def call(i: int) -> None:
                done = trio.Event()
                client.submit(echo, i, pure=False).add_done_callback(partial(deliver, i, done))
                await done.wait()

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(call, i)
            return results

        with synchronous_client(workers, scheduler) as client:
            seconds = await timed(batch, client, n)
        return seconds

    @impl("cluster_calls_baseline", "plait", "asyncio", "trio")
    @impl("cluster_calls_local_baseline", "plait", "asyncio", "trio")
    async def cluster_calls_baseline_any(n: int, workers: int, scheduler: str) -> float:

        def batch(client: Any, count: int) -> list[Any]:
            submit = client.submit
            return list(client.gather([submit(echo, i, pure=False) for i in range(count)]))

        with synchronous_client(workers, scheduler) as client:
            check_all(batch(client, WARMUP), WARMUP)
            start = perf_counter()
            results = batch(client, n)
            seconds = perf_counter() - start
            check_all(results, n)
        return seconds
