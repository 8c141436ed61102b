"""Find a race condition with plait.testing.explore, replay it, and check the fix.

Two withdrawals from one balance each read it, await (a database round trip, say) and
write it back. In plain FIFO order the first writes before the second reads, so a test
that runs the code once passes. explore() runs it under 1,000 seeded schedules on
virtual time, stops at the first one that fails, shrinks that schedule to the decision
that matters, and reports it; Replay(report.log) runs that exact interleaving again.
The version with a lock passes all 1,000 runs.

Run: .venv/bin/python examples/find_race.py    (docs/testing.md explains the report)
"""

from __future__ import annotations

import plait
from plait.testing import MockClock, Replay, explore


async def withdraw_twice(locked: bool) -> None:
    balance = {"alice": 100}
    lock = plait.Lock()

    async def withdraw(amount: int) -> None:
        if locked:
            await lock.acquire()
        current = balance["alice"]
        await plait.sleep(0)  # e.g. a round trip to the database
        balance["alice"] = current - amount
        if locked:
            lock.release()

    async with plait.TaskGroup() as tg:
        tg.spawn(withdraw, 30)
        await plait.sleep(0)
        tg.spawn(withdraw, 50)
    assert balance["alice"] == 20, balance


def main() -> None:
    plait.run(withdraw_twice, False)  # FIFO order: passes
    print("one run in FIFO order: passed\n")

    report = explore(withdraw_twice, False)
    print(report, end="\n\n")
    assert report.failed

    try:
        plait.run(
            withdraw_twice,
            False,
            clock=MockClock(autojump_threshold=0),
            schedule=Replay(report.log),
        )
    except AssertionError as exc:
        print(f"replayed: fails again the same way ({exc})\n")

    fixed = explore(withdraw_twice, True)
    print(f"with a lock: {fixed}")
    assert fixed


if __name__ == "__main__":
    main()
