"""A small tour of plait: tasks, timers, cancellation and timeouts.

Run with ``make demo``. Prints a timeline of what happened, with times relative to the
start of the run.
"""

from __future__ import annotations

import plait

START = 0.0


def log(message: str) -> None:
    print(f"[{plait.current_time() - START:6.3f}s] {message}")


async def worker(name: str, delay: float, steps: int) -> str:
    for step in range(1, steps + 1):
        await plait.sleep(delay)
        log(f"{name}: step {step}/{steps}")
    return f"{name} finished"


async def stubborn(name: str) -> None:
    try:
        await plait.sleep_forever()
    finally:
        # Cleanup that must finish even though we are being cancelled: shield it.
        with plait.CancelScope(shield=True):
            await plait.sleep(0.02)
            log(f"{name}: cleaned up after cancellation")


async def main() -> None:
    global START
    START = plait.current_time()
    log("spawning three workers in a TaskGroup")
    async with plait.TaskGroup() as tg:
        fast = tg.spawn(worker, "fast", 0.01, 3)
        slow = tg.spawn(worker, "slow", 0.025, 2)
        tg.spawn(stubborn, "stubborn")
        await fast
        await slow
        log(f"results: {fast.result()!r}, {slow.result()!r}; cancelling the rest")
        tg.cancel_scope.cancel()
    log("group done: every child has exited")

    with plait.move_on_after(0.05) as scope:
        await worker("too-slow", 0.03, 5)
    log(f"move_on_after(0.05): cancelled_caught={scope.cancelled_caught}")

    try:
        with plait.fail_after(0.02):
            await plait.sleep(1)
    except TimeoutError:
        log("fail_after(0.02) raised TimeoutError")

    results = await plait.gather(worker("g1", 0.01, 1), worker("g2", 0.005, 1))
    log(f"gather -> {results}")

    async def boom() -> None:
        await plait.sleep(0.01)
        raise ValueError("boom")

    try:
        async with plait.TaskGroup() as tg:
            tg.spawn(boom)
            tg.spawn(worker, "sibling", 1.0, 1)
    except* ValueError as group:
        log(f"a failing child cancelled its sibling; caught {group.exceptions!r}")


if __name__ == "__main__":
    plait.run(main)
    print("demo finished")
