"""Native coroutines (``async def``) and objects with their own ``__await__``.

1. Calling an ``async def`` function runs none of its body: it returns a coroutine
   object. Something must drive it with ``send()``: here, by hand; normally, the
   kernel. Every ``await`` chain ends in a ``yield`` that reaches the driver: in plait,
   always ``plait.checkpoint``, the one ``types.coroutine`` trap door.
2. A coroutine object runs once: awaiting it a second time is an error, and one that is
   never awaited is reported with a RuntimeWarning when it is garbage collected.
3. Any object whose ``__await__`` returns an iterator is awaitable. Each ``await``
   calls ``__await__`` again, so such an object can be awaited many times.
4. The kernel understands only its own requests: an ``__await__`` that yields anything
   else to it gets a TypeError thrown back in, with a message saying what to do.

Run: .venv/bin/python examples/native_coroutines.py
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Generator

import plait
from plait.testing import MockClock


async def add(a: int, b: int) -> int:
    print("   add: started")
    await plait.checkpoint()  # suspends: the yield inside reaches whoever drives us
    print("   add: resumed")
    return a + b


def part1_drive_by_hand() -> None:
    print("1. a coroutine object, driven by hand with send()")
    coro = add(2, 3)
    print(f"   add(2, 3) returned {type(coro).__name__}; state {inspect.getcoroutinestate(coro)}")
    request = coro.send(None)  # runs the body up to its first suspension
    print(f"   send(None) -> the coroutine yielded {request!r} (a checkpoint request)")
    waits_in = coro.cr_await.__qualname__  # what it awaits: the generator checkpoint()
    print(f"   state {inspect.getcoroutinestate(coro)}, suspended in {waits_in}()")
    try:
        coro.send(None)
    except StopIteration as stop:
        print(f"   second send -> StopIteration({stop.value}): its return value")


async def part2_once_only() -> None:
    print("2. a coroutine runs once")
    coro = add(1, 1)
    print(f"   await coro -> {await coro}")
    try:
        await coro
    except RuntimeError as exc:
        print(f"   await coro again -> RuntimeError: {exc}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forgotten = add(0, 0)  # created, never awaited (a missing 'await')
        del forgotten  # freed here, by reference counting: the warning comes now
    print(f"   a forgotten coroutine: {caught[0].category.__name__}: {caught[0].message}")


class Delay:
    """Awaitable: ``await Delay(s)`` sleeps ``s`` seconds and returns the time it took."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __await__(self) -> Generator[object, None, float]:
        # A generator: every value it yields goes to the kernel, as from a coroutine.
        start = plait.current_time()
        yield from plait.sleep(self.seconds).__await__()
        return plait.current_time() - start


class Job:
    """Awaitable by delegating to a coroutine: the common way to write ``__await__``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    async def _run(self) -> str:
        self.runs += 1
        await plait.sleep(1)
        return f"{self.name} run #{self.runs}"

    def __await__(self) -> Generator[object, None, str]:
        return self._run().__await__()  # a new coroutine for each await


async def part3_custom_await() -> None:
    print("3. objects with their own __await__ (virtual time)")
    delay = Delay(1.5)
    print(f"   await Delay(1.5) -> took {await delay} s")
    print(f"   the same object again -> took {await delay} s")
    job = Job("report")
    print(f"   await job -> {await job!r}; again -> {await job!r}")
    # Custom awaitables work everywhere a coroutine does: gather, tasks, timeouts.
    print(f"   gather(Delay(2), Job('x')) -> {await plait.gather(Delay(2), Job('x'))}")
    with plait.move_on_after(0.5) as scope:
        await Delay(10)
    print(f"   move_on_after(0.5) around Delay(10): cancelled_caught={scope.cancelled_caught}")


class Foreign:
    """An awaitable written for another event loop: it yields its own kind of object."""

    def __await__(self) -> Generator[object, None, None]:
        yield ("please wake me", 42)


async def part4_wrong_request() -> None:
    print("4. yielding something the kernel does not understand")
    try:
        await Foreign()
    except TypeError as exc:
        print(f"   TypeError: {exc}")


async def under_plait() -> None:
    await part2_once_only()
    await part3_custom_await()
    await part4_wrong_request()


def main() -> None:
    part1_drive_by_hand()
    plait.run(under_plait, clock=MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
