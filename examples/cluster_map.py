"""The pool interface on a dask.distributed cluster: plait.cluster.DaskPool.

DaskPool() starts a LocalCluster of two worker processes on this machine (bound to
127.0.0.1, no dashboard) and closes it at the end. DaskPool("tcp://scheduler:8786")
would send the same calls to the workers of a real cluster instead (docs/cluster.md).

This shows a closure sent to a worker (by value, as with plait.ProcessPool), a map with
a progress callback, and a large object placed on the cluster once with put(), whose
handle is then passed to several calls instead of the object.

LocalCluster starts its workers with multiprocessing's "spawn", which imports this
script in each of them: the `if __name__ == "__main__":` guard at the bottom is what
keeps each worker from running main() again.

Run: .venv/bin/python examples/cluster_map.py   (needs: pip install 'plait[cluster]')
"""

from __future__ import annotations

import os
import random
import time

import plait
from plait.abc import MapProgress
from plait.cluster import DaskPool


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def count_word(words: list[str], word: str) -> tuple[str, int, int]:
    """Runs on a worker: ``words`` is the object placed with put(), fetched there."""
    return word, words.count(word), os.getpid()


async def main() -> None:
    started = time.perf_counter()
    async with DaskPool(n_workers=2) as pool:
        print(f"cluster up in {time.perf_counter() - started:.1f} s: {pool.max_workers} workers")

        # 1. A closure: `limit` travels with the function, by value.
        limit = 100

        def longer_than_limit(n: int) -> bool:
            return collatz_steps(n) > limit

        print("27 takes more than 100 steps:", await pool.run_sync(longer_than_limit, 27))

        # 2. A map with progress: the callback runs on the loop each time a call ends.
        def report(p: MapProgress) -> None:
            if p.done % 10 == 0:
                print(f"  map: {p.done}/{p.total} done")

        starts = range(1, 40_001, 1_000)
        steps = [s async for s in pool.map(collatz_steps, starts, progress=report)]
        print(f"longest Collatz chain among {len(steps)} starts: {max(steps)} steps")

        # 3. put(): send a large object once, then pass its handle to any number of calls.
        rng = random.Random(7)
        words = [rng.choice(["plait", "task", "pool", "dask", "loop"]) for _ in range(500_000)]
        handle = await pool.put(words)
        async with plait.TaskGroup() as tg:
            calls = [tg.spawn(pool.run_sync, count_word, handle, w) for w in ("plait", "dask")]
        for call in calls:
            word, count, pid = call.result()
            print(f"{word!r} occurs {count} times (counted by worker process {pid})")
        print("the same counts here:", words.count("plait"), words.count("dask"))
    print(f"cluster closed; {time.perf_counter() - started:.1f} s in all")


if __name__ == "__main__":
    plait.run(main)
