"""Async generators: ``async for``, ``asend``, and who runs the cleanup of a generator
that is abandoned before it is finished.

1. An ``async def`` with ``yield`` is an async generator: it may await between the
   values it produces; ``async for`` and async comprehensions consume it.
2. ``asend(value)`` is ``send`` for async generators: the ``yield`` expression gets the
   value. ``asend``, ``athrow`` and ``aclose`` return awaitables.
3. A consumer that stops early with ``break`` (or an exception in its loop body)
   abandons the generator with its ``finally`` block not yet run, and that block may
   await. ``contextlib.aclosing`` runs it at once, in the consumer's task. Without it,
   Python calls the finalizer hook that plait installs, and plait closes the generator
   in a task of its own, soon after; ``plait.run`` also closes those still open when
   the main task ends. A timeout is different: ``Cancelled`` is raised inside the
   generator where it awaits, so its cleanup runs at once, in the consumer's task.

Run: .venv/bin/python examples/async_generators.py
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import plait
from plait.testing import MockClock


def log(message: str) -> None:
    print(f"[{plait.current_time():4.1f}] {message}")


async def ticks(name: str, period: float) -> AsyncGenerator[int, None]:
    """Yields 0, 1, 2, ... every ``period`` seconds, for ever."""
    n = 0
    try:
        while True:
            await plait.sleep(period)
            yield n
            n += 1
    finally:
        log(f"{name}: cleanup after {n} values, in task {plait.current_task().name!r}")
        # Cleanup that awaits (closing a connection, say) needs a running loop. The
        # shield lets it finish even when the consumer's scope was cancelled (the
        # timeout below): there, an unshielded await would raise Cancelled at once.
        with plait.CancelScope(shield=True):
            await plait.sleep(0.5)
        log(f"{name}: cleanup done")


async def part1_async_for() -> None:
    print("1. async for and async comprehensions")

    async def countdown(n: int) -> AsyncGenerator[int, None]:
        while n > 0:
            await plait.sleep(1)
            yield n
            n -= 1

    async for n in countdown(3):
        log(f"countdown: {n}")
    squares = [n * n async for n in countdown(4) if n % 2 == 0]
    log(f"squares of the even ones: {squares}")


async def running_total() -> AsyncGenerator[int, int]:
    total = 0
    while True:
        total += yield total  # asend(x) makes the yield expression x
        await plait.checkpoint()


async def part2_asend() -> None:
    print("2. asend()")
    totals = running_total()
    await anext(totals)  # start it: run to the first yield (the same as asend(None))
    for x in (5, 10, 20):
        log(f"asend({x}) -> {await totals.asend(x)}")
    await totals.aclose()


async def part3_cleanup() -> None:
    print("3. leaving early: who runs the generator's finally block?")
    async with contextlib.aclosing(ticks("with aclosing", 1)) as gen:
        async for n in gen:
            if n == 2:
                break
    log("after the aclosing block (its cleanup has run, in this task)")

    async for n in ticks("abandoned", 1):
        if n == 2:
            break  # the generator is dropped here, its finally block still to run
    log("after the loop: the abandoned generator's cleanup has not run yet")
    await plait.sleep(1)  # let it run

    with plait.move_on_after(2.5):
        async for n in ticks("timed out", 1):
            log(f"timed out: got {n}")
    log("after the timeout")
    await plait.sleep(1)

    kept = ticks("still open", 1)
    await anext(kept)
    log("main ends with one generator still open: plait.run closes it")


async def main() -> None:
    await part1_async_for()
    await part2_asend()
    await part3_cleanup()


if __name__ == "__main__":
    plait.run(main, clock=MockClock(autojump_threshold=0))
    print("plait.run has returned")
