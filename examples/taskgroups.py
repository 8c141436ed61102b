"""Structured concurrency: TaskGroup, gather, as_completed, timeouts, cancellation.

Each line starts with the time since its part began, in virtual time (MockClock: the
sleeps take no real time).

1. A TaskGroup runs its children concurrently; leaving the ``async with`` block waits
   for all of them, so no task outlives the block that started it.
2. ``await tg.start(fn)`` waits until the child says it is ready (a server that is
   listening, say) and returns what it passed to ``task_status.started()``.
3. A child that fails cancels its siblings; the group raises an ExceptionGroup.
4. ``plait.gather`` returns results in argument order; ``plait.as_completed`` yields
   tasks in the order they finish.
5. Timeouts are cancel scopes with a deadline: ``move_on_after`` gives up quietly,
   ``fail_after`` raises TimeoutError; the earliest deadline around a call wins.
6. Cancellation is level-triggered: every checkpoint inside a cancelled scope raises
   ``Cancelled`` until the scope is left, so cleanup that must await runs in a
   shielded scope.

Run: .venv/bin/python examples/taskgroups.py
"""

from __future__ import annotations

import plait
from plait.testing import MockClock

START = 0.0


def log(message: str) -> None:
    print(f"[{plait.current_time() - START:4.1f}] {message}")


async def work(name: str, seconds: float) -> str:
    await plait.sleep(seconds)
    log(f"{name}: done after {seconds} s")
    return name.upper()


async def fail(seconds: float) -> None:
    await plait.sleep(seconds)
    log("fail: raising ValueError")
    raise ValueError("disk full")


async def forever(name: str) -> None:
    try:
        await plait.sleep_forever()
    finally:
        log(f"{name}: cancelled")


async def server(*, task_status: plait.TaskStatus = plait.TASK_STATUS_IGNORED) -> None:
    await plait.sleep(0.5)  # binding a socket, loading a model...
    task_status.started("ready on port 8080")
    await forever("server")


async def part1_groups() -> None:
    log("1. a task group: the block ends when every child has")
    async with plait.TaskGroup() as tg:
        a = tg.spawn(work, "a", 2)
        b = tg.spawn(work, "b", 1)
        log("both spawned; the body of the block goes on at once")
    log(f"block left: results {a.result()!r}, {b.result()!r}")


async def part2_start() -> None:
    log("2. tg.start(): wait until the child is ready")
    async with plait.TaskGroup() as tg:
        status = await tg.start(server)
        log(f"start() returned {status!r}")
        await work("client", 1)
        tg.cancel_scope.cancel()  # done with the server: cancel what is left


async def part3_failure() -> None:
    log("3. a failing child cancels its siblings")
    try:
        async with plait.TaskGroup() as tg:
            tg.spawn(forever, "sibling")
            tg.spawn(fail, 1)
    except* ValueError as group:
        log(f"caught {group.exceptions!r}")


async def part4_gather() -> None:
    log("4. gather and as_completed")
    results = await plait.gather(work("slow", 2), work("fast", 1))
    log(f"gather -> {results} (argument order)")
    mixed = await plait.gather(work("ok", 1), fail(0.5), return_exceptions=True)
    log(f"gather(return_exceptions=True) -> {mixed!r}")
    async for task in plait.as_completed([work("x", 3), work("y", 1), work("z", 2)]):
        log(f"as_completed yielded {task.result()!r}")


async def patient() -> None:
    with plait.move_on_after(10):  # this function's own, generous, timeout
        try:
            await plait.sleep(5)
        finally:
            log("patient: cut short by the caller's earlier deadline, not its own")


async def part5_timeouts() -> None:
    log("5. timeouts")
    with plait.move_on_after(1) as scope:
        await work("too slow", 5)
    log(f"move_on_after(1): cancelled_caught={scope.cancelled_caught}")
    try:
        with plait.fail_after(1):
            await work("too slow", 5)
    except TimeoutError:
        log("fail_after(1) raised TimeoutError")
    with plait.move_on_after(2) as outer:
        await patient()
    log(f"move_on_after(2) around it: cancelled_caught={outer.cancelled_caught}")


async def careful(name: str) -> None:
    try:
        await plait.sleep_forever()
    finally:
        # Still cancelled here: an unshielded await would raise Cancelled at once.
        try:
            await plait.sleep(1)
        except plait.Cancelled:
            log(f"{name}: an await in cleanup raised Cancelled (level-triggered)")
            raise
        finally:
            with plait.CancelScope(shield=True):
                await plait.sleep(1)  # e.g. say goodbye to a peer
                log(f"{name}: shielded cleanup finished")


async def part6_cancellation() -> None:
    log("6. cancellation: Task.cancel(), level-triggered, shielded cleanup")
    async with plait.TaskGroup() as tg:
        one = tg.spawn(careful, "one")
        other = tg.spawn(work, "other", 3)
        await plait.sleep(1)
        one.cancel()  # only this task; the group is not disturbed
    log(f"one.cancelled()={one.cancelled()}, other.result()={other.result()!r}")


async def main() -> None:
    global START
    for part in (
        part1_groups,
        part2_start,
        part3_failure,
        part4_gather,
        part5_timeouts,
        part6_cancellation,
    ):
        START = plait.current_time()
        await part()
        print()


if __name__ == "__main__":
    plait.run(main, clock=MockClock(autojump_threshold=0))
