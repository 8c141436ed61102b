"""Generators as coroutines: ``yield``, ``send``, ``yield from``, a tiny kernel that
drives them, and the same style running as plait tasks with ``@plait.coroutine``.

1. A generator function returns a generator; its frame is suspended at each ``yield``
   and resumed by ``next()``.
2. ``send(value)`` resumes it *with a value*: the ``yield`` expression evaluates to it.
   ``throw()`` raises an exception at the ``yield``; ``close()`` raises GeneratorExit.
3. ``yield from sub`` delegates: values, ``send``s and ``throw``s pass straight through
   to ``sub``, and its ``return`` value becomes the value of the expression.
4. That is all a kernel needs: a few lines of round-robin scheduling below run
   generator "tasks" that yield *requests* (here: "sleep this long") to the kernel.
5. plait's kernel works the same way. ``@plait.coroutine`` marks a generator function
   as a coroutine (it is ``types.coroutine`` plus checks): a bare ``yield`` is a
   checkpoint, ``yield from plait.sleep(t)`` waits, and async functions can await it.

Run: .venv/bin/python examples/generators.py
"""

from __future__ import annotations

import heapq
import inspect
import types
from collections.abc import Generator

import plait
from plait.testing import MockClock


def countdown(n: int) -> Generator[int, None, str]:
    while n > 0:
        yield n
        n -= 1
    return "lift-off"


def part1_yield() -> None:
    print("1. yield: a function whose frame can be suspended")
    gen = countdown(3)
    print(f"   created, not started: {inspect.getgeneratorstate(gen)}")
    print(f"   next() -> {next(gen)}, now {inspect.getgeneratorstate(gen)} at line", end=" ")
    assert gen.gi_frame is not None
    print(f"{gen.gi_frame.f_lineno} with n={gen.gi_frame.f_locals['n']}")
    print(f"   the rest, by a for loop: {list(gen)}")
    # The return value travels in StopIteration; a for loop ignores it.
    gen = countdown(1)
    next(gen)
    try:
        next(gen)
    except StopIteration as stop:
        print(f"   the return value rides on StopIteration: {stop.value!r}")
    print(f"   finished: {inspect.getgeneratorstate(gen)}, gi_frame={gen.gi_frame}")


def averager() -> Generator[float | None, float, None]:
    """Receives numbers by send() and yields the running average after each."""
    total = 0.0
    count = 0
    average: float | None = None
    try:
        while True:
            value = yield average  # suspends here; send(x) makes this expression x
            total += value
            count += 1
            average = total / count
    finally:
        print(f"   averager: finally block ran; it had averaged {count} value(s)")


def part2_send() -> None:
    print("2. send(): resume the generator with a value")
    avg = averager()
    next(avg)  # "prime" it: run to the first yield (send(None) does the same)
    for x in (10, 20, 60):
        print(f"   send({x}) -> {avg.send(x)}")
    try:
        avg.throw(ValueError("bad reading"))  # raised at the yield, where it waits
    except ValueError as exc:
        print(f"   throw(): raised at the yield, not caught there, came back out: {exc}")
    avg = averager()
    next(avg)
    avg.send(1)
    avg.close()  # raises GeneratorExit at the yield: its finally block runs now


def tally() -> Generator[None, int | None, int]:
    """A sub-generator: adds up the values sent to it until it is sent None."""
    total = 0
    while True:
        value = yield
        if value is None:
            return total
        total += value


def grouper(results: dict[str, int], key: str) -> Generator[None, int | None, None]:
    # ``yield from`` forwards each send() to tally() and, when tally returns, gives
    # back its return value: the caller talks to tally() without knowing it is there.
    results[key] = yield from tally()


def part3_yield_from() -> None:
    print("3. yield from: delegate to a sub-generator and get its return value")
    data = {"apples": [3, 4], "pears": [10, 20, 30]}
    results: dict[str, int] = {}
    for key, values in data.items():
        group = grouper(results, key)
        next(group)
        for v in values:
            group.send(v)  # goes straight through grouper to tally
        try:
            group.send(None)  # tally returns, grouper stores the total and finishes
        except StopIteration:
            pass
    print(f"   totals: {results}")


# 4. A kernel in a few lines. A task is a generator; what it yields is a request: a
#    number means "wake me after this many (virtual) seconds". The kernel keeps a heap
#    of (wake-up time, sequence, task) and resumes the earliest with send(). plait's
#    kernel does the same with a ready queue, timers and I/O readiness.

now = 0.0  # the kernel's (virtual) clock, which the tasks read


def sleep(seconds: float) -> Generator[float, None, None]:
    yield seconds  # the trap: one yield that reaches the kernel through every yield from


def ticker(name: str, period: float, times: int) -> Generator[float, None, str]:
    for i in range(times):
        yield from sleep(period)
        print(f"   [{now:4.1f}] {name} tick {i + 1}")
    return f"{name} done"


def run_tasks(*tasks: Generator[float, None, str]) -> list[str]:
    global now
    heap = [(0.0, i, task) for i, task in enumerate(tasks)]  # (the i breaks ties)
    results: list[str] = []
    while heap:
        now, seq, task = heapq.heappop(heap)
        try:
            delay = task.send(None)  # run the task until its next request
        except StopIteration as stop:
            results.append(stop.value)
            continue
        heapq.heappush(heap, (now + delay, seq, task))
    return results


def part4_kernel() -> None:
    print("4. a kernel: resume whichever generator task is due next")
    print(f"   results: {run_tasks(ticker('fast', 0.5, 3), ticker('slow', 1.2, 2))}")


# 5. The same style, run by plait.


@plait.coroutine
def fetch(name: str, seconds: float) -> Generator[None, None, str]:
    yield  # a bare yield is a checkpoint: other tasks may run here
    yield from plait.sleep(seconds)  # yield from any plait awaitable
    return f"{name} after {seconds} s"


@plait.coroutine
def fetch_both() -> Generator[None, None, list[str]]:
    a = yield from fetch("a", 1.0)  # a generator coroutine calling another one
    b = yield from fetch("b", 0.5)
    return [a, b]


@types.coroutine
def stubborn() -> Generator[None, None, None]:
    # types.coroutine alone works too (plait.coroutine adds checks and a clear error).
    try:
        while True:
            yield from plait.sleep(1)
    finally:
        # Cancellation is an exception thrown in at the yield, as with throw() above.
        print(f"   [{plait.current_time():4.1f}] stubborn: cancelled, cleaning up")


async def part5_plait() -> None:
    print("5. generator coroutines as plait tasks (virtual time)")
    print(f"   fetch('x', 1) is awaitable: {inspect.isawaitable(fetch('x', 1))}")
    both = await fetch_both()
    print(f"   [{plait.current_time():4.1f}] await fetch_both() -> {both}")
    async with plait.TaskGroup() as tg:
        one = tg.spawn(fetch, "one", 2.0)
        two = tg.spawn(fetch, "two", 1.0)
    print(f"   [{plait.current_time():4.1f}] as tasks: {one.result()!r}, {two.result()!r}")
    with plait.move_on_after(2.5):
        await stubborn()
    print(f"   [{plait.current_time():4.1f}] move_on_after(2.5) ended the wait")


def main() -> None:
    part1_yield()
    part2_send()
    part3_yield_from()
    part4_kernel()
    plait.run(part5_plait, clock=MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
