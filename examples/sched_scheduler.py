"""``plait.sched.scheduler``: the standard library's general-purpose event scheduler
(``sched.scheduler``), as a drop-in replacement that waits on a plait ``Loop``.

1. The same API: ``enter(delay, priority, action, argument)``, ``enterabs``,
   ``cancel``, ``queue``, ``run``. Events due at the same time run by priority (lower
   first), then in the order they were entered. Actions run in ``run``'s own thread.
2. Periodic work: an action that enters itself again.
3. The difference: while ``run()`` waits for the next event, another thread enters an
   earlier one. ``sched.scheduler`` sleeps on and runs it late, when its sleep ends;
   ``plait.sched.scheduler`` waits on a loop that the new event wakes, so it runs on
   time.
4. With your own ``timefunc`` and ``delayfunc`` (here a simulated clock), it calls them
   exactly as ``sched.scheduler`` does: a day of events runs in no time.

Run: .venv/bin/python examples/sched_scheduler.py
"""

from __future__ import annotations

import sched
import threading
import time

import plait


def part1_api() -> None:
    print("1. the sched API")
    s = plait.sched.scheduler()
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"   [{time.monotonic() - start:.1f}] {text}")

    s.enter(0.1, 0, say, ("first",))
    # enterabs: the same absolute time for both (two enter(0.2, ...) calls would compute
    # two slightly different times), so the priority decides.
    s.enterabs(start + 0.2, 1, say, ("second, priority 1",))
    s.enterabs(start + 0.2, 0, say, ("second, priority 0: runs first",))
    s.enter(0.3, 0, say, ("third",))
    doomed = s.enter(0.3, 0, say, ("never: cancelled",))
    s.cancel(doomed)
    print(f"   queued: {[event.argument[0] for event in s.queue]}")
    s.run()
    print(f"   run() returned: the queue is empty: {s.empty()}")


def part2_periodic() -> None:
    print("2. periodic work: an action that reschedules itself")
    s = plait.sched.scheduler()
    start = time.monotonic()

    def heartbeat(count: int) -> None:
        print(f"   [{time.monotonic() - start:.1f}] heartbeat {count}")
        if count < 3:
            s.enter(0.1, 0, heartbeat, (count + 1,))

    s.enter(0.1, 0, heartbeat, (1,))
    s.run()


def late_event(s: sched.scheduler | plait.sched.scheduler) -> float:
    """Schedule an event 0.6 s away; 0.1 s into the wait, another thread enters one
    due 0.2 s from the start. Return how late that one ran, in seconds."""
    start = time.monotonic()
    ran_at: list[float] = []
    s.enter(0.6, 0, lambda: None)

    def from_another_thread() -> None:
        time.sleep(0.1)
        s.enterabs(start + 0.2, 0, lambda: ran_at.append(time.monotonic()))

    thread = threading.Thread(target=from_another_thread)
    thread.start()
    s.run()
    thread.join()
    return ran_at[0] - (start + 0.2)


def part3_woken_early() -> None:
    print("3. an earlier event entered from another thread during the wait")
    for s in (sched.scheduler(), plait.sched.scheduler()):
        lateness = late_event(s)
        verdict = "on time" if lateness < 0.2 else "late: when the sleep for the next event ended"
        print(f"   {type(s).__module__}.scheduler: the event ran {verdict}")


class SimulatedClock:
    """timefunc and delayfunc for a clock that only moves when it is asked to wait."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def part4_simulated_time() -> None:
    print("4. a simulated clock: a day of hourly events, in no time")
    clock = SimulatedClock()
    s = plait.sched.scheduler(clock.time, clock.sleep)
    runs: list[float] = []
    for hour in range(24):
        s.enterabs(hour * 3600.0, 0, lambda: runs.append(clock.now))
    started = time.perf_counter()
    s.run()
    elapsed = time.perf_counter() - started
    print(f"   {len(runs)} events, the last at {runs[-1] / 3600:.0f}:00 simulated;", end=" ")
    print(f"real time taken under a second: {elapsed < 1}")


def main() -> None:
    part1_api()
    part2_periodic()
    part3_woken_early()
    part4_simulated_time()


if __name__ == "__main__":
    main()
