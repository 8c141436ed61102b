"""When do threads help? The same calls in worker threads (plait.to_thread), one at a
time and then two at a time: hashlib releases the GIL while it hashes, so two threads
hash about twice as fast on two free cores; a pure-Python loop holds the GIL, so a
second thread does not help (pure-Python CPU work needs processes).

Run: .venv/bin/python examples/threads_and_gil.py
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
from collections.abc import Callable

import plait

BUFFER = random.Random(0).randbytes(8 << 20)  # 8 MiB of random bytes
CALLS = 8


def hash_buffer() -> bytes:
    return hashlib.sha256(BUFFER).digest()  # C code: releases the GIL


def python_loop() -> int:
    return sum(i * i for i in range(300_000))  # bytecode: holds the GIL


async def seconds(fn: Callable[[], object], threads: int) -> float:
    """Run CALLS calls of fn in worker threads, at most `threads` at once (best of 3)."""
    limiter = plait.CapacityLimiter(threads)
    call = functools.partial(plait.to_thread.run_sync, fn, limiter=limiter)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        async with plait.TaskGroup() as tg:
            for _ in range(CALLS):
                tg.spawn(call)
        best = min(best, time.perf_counter() - start)
    return best


async def main() -> None:
    print(f"{os.cpu_count()} CPUs; {CALLS} calls each, in worker threads")
    for label, fn in (("sha256 of 8 MiB", hash_buffer), ("pure-Python loop", python_loop)):
        one = await seconds(fn, 1)
        two = await seconds(fn, 2)
        print(
            f"{label:<17} 1 thread {one:.3f} s, 2 threads {two:.3f} s: "
            f"{one / two:.2f}x the throughput"
        )


if __name__ == "__main__":
    plait.run(main)
