"""What travels to a worker process: closures by value, large buffers through shared
memory, and a map with a progress bar.

A closure run in a thread of this process shares its variables with the caller: it sees
later changes, and its own changes are seen. The same closure run by a plait.ProcessPool
travels by value: the worker gets a copy of the captured variables as they are when the
call is made, and what the worker changes stays in the worker. The same goes for the
globals that a function of this script uses (a script is ``__main__``, which workers do
not import, so its functions travel by value too).

Run: .venv/bin/python examples/process_closures.py
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time

import plait
from plait.testing import wait_all_tasks_blocked

calls = 0


def count_calls() -> int:
    """A function of this script, using one of its globals."""
    global calls
    calls += 1
    return calls


async def captured_variables(pool: plait.ProcessPool) -> None:
    # 1. Changes made after the call was made.
    setting = "old"
    go = threading.Event()

    def read_in_thread() -> str:
        go.wait()
        return setting  # the variable itself, read when this line runs

    def read_in_process() -> str:
        return setting  # the copy made when the call was made

    async with plait.TaskGroup() as tg:
        in_thread = tg.spawn(plait.to_thread.run_sync, read_in_thread)
        in_process = tg.spawn(pool.run_sync, read_in_process)
        await wait_all_tasks_blocked()  # both calls are under way
        setting = "new"
        go.set()
    print(f"read after a change: thread {in_thread.result()!r}, process {in_process.result()!r}")

    # 2. Changes made by the function.
    seen: list[int] = []

    def remember(x: int) -> int:
        seen.append(x)
        return len(seen)

    in_threads = [await plait.to_thread.run_sync(remember, x) for x in (1, 2, 3)]
    print(f"appended in a thread:  returned {in_threads}, caller's list {seen}")
    seen.clear()
    in_processes = [await pool.run_sync(remember, x) for x in (1, 2, 3)]
    print(f"appended in a process: returned {in_processes}, caller's list {seen}")

    # 3. A global of this script: each call gets a copy, as it is at the call.
    in_processes = [await pool.run_sync(count_calls) for _ in range(3)]
    print(f"global counter: {in_processes} in processes, {calls} here")


async def large_buffer(pool: plait.ProcessPool) -> None:
    data = os.urandom(64 << 20)  # 64 MiB: travels through shared memory, both ways

    def reverse(blob: bytes) -> bytes:
        return blob[::-1]

    start = time.perf_counter()
    back = await pool.run_sync(reverse, data)
    elapsed = time.perf_counter() - start
    ok = hashlib.sha256(back[::-1]).digest() == hashlib.sha256(data).digest()
    print(f"64 MiB there and back in {elapsed:.2f} s, intact: {ok}")


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


async def progress_bar(pool: plait.ProcessPool) -> None:
    # progress=True draws on stderr; here it goes to stdout, next to the results. On a
    # terminal that is a bar redrawn in place; in a pipe or a file, one summary line.
    with contextlib.redirect_stderr(sys.stdout):
        starts = range(1, 200_001, 5_000)
        longest = max([s async for s in pool.map(collatz_steps, starts, progress=True)])
    print(f"longest Collatz chain among {len(starts)} starts: {longest} steps")


async def main() -> None:
    async with plait.ProcessPool(2) as pool:
        await captured_variables(pool)
        await large_buffer(pool)
        await progress_bar(pool)
        print(f"workers started: {pool.started_workers}")


if __name__ == "__main__":
    plait.run(main)
