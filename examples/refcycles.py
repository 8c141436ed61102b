"""Garbage collection and reference cycles: what reference counting frees at once,
what only the cyclic garbage collector finds, and the runtime's promise to create no
cycles of its own.

The cyclic collector is disabled here (``gc.disable()``) so that every object freed is
freed by reference counting alone, at the moment its last reference goes. A
``weakref.finalize`` callback prints when that happens.

1. An object without cycles is freed as soon as its last reference is dropped.
2. Objects that refer to each other keep each other alive after the program has
   dropped them; only ``gc.collect()`` (normally run from time to time) frees them.
3. A common cycle that nobody writes on purpose: an exception kept in a local variable
   of a frame its traceback refers to. Python deletes the ``except ... as e`` name at
   the end of the block to avoid it; ``error = e`` brings it back.
4. plait's tasks, their frames (seen through an object in a local variable) and their
   exceptions, whether they returned, failed or were cancelled, are freed by reference
   counting as soon as the program drops them: the runtime leaves no cycle behind.

Run: .venv/bin/python examples/refcycles.py
"""

from __future__ import annotations

import gc
import weakref
from typing import Any, TypeAlias

import plait
from plait.testing import MockClock


class TaskFailed(Exception):
    pass  # (a built-in exception such as ValueError cannot be weakly referenced)


class Thing:
    def __init__(self, name: str) -> None:
        self.name = name
        self.other: Any = None


Watch: TypeAlias = "weakref.finalize[..., object]"
Track: TypeAlias = "list[Watch]"


def watch(obj: object, label: str) -> Watch:
    """Print when ``obj`` is freed; the returned handle tells if it is still alive."""
    return weakref.finalize(obj, print, f"   freed: {label}")


def part1_refcounting() -> None:
    print("1. no cycle: freed at once")
    thing = Thing("a")
    watch(thing, "a")
    print("   del thing ...")
    del thing
    print("   ... done")


def part2_cycle() -> None:
    print("2. a cycle: only the cyclic collector frees it")
    a, b = Thing("a"), Thing("b")
    a.other, b.other = b, a  # a -> b -> a
    alive = watch(a, "a (in a cycle)")
    watch(b, "b (in a cycle)")
    del a, b
    print(f"   after del: still alive? {alive.alive}")
    print(f"   gc.collect() found {gc.collect()} unreachable objects")


def fails() -> None:
    raise ValueError("boom")


def keeps_exception(track: Track) -> None:
    marker = Thing("marker")  # lives exactly as long as this frame
    track.append(watch(marker, "the frame of keeps_exception (its local 'marker')"))
    try:
        fails()
    except ValueError as e:
        error = e  # error -> traceback -> this frame -> error: a cycle
    print(f"   caught {error!r}; returning")


def drops_exception(track: Track) -> None:
    marker = Thing("marker")
    track.append(watch(marker, "the frame of drops_exception (its local 'marker')"))
    try:
        fails()
    except ValueError as e:
        error = e
    try:
        print(f"   caught {error!r}; returning")
    finally:
        del error  # break the cycle before the frame ends


def part3_exception_cycle() -> None:
    print("3. an exception kept in a local variable")
    track: Track = []
    keeps_exception(track)
    print(f"   returned; is its frame still alive? {track[-1].alive}")
    print(f"   gc.collect() found {gc.collect()} unreachable objects")
    drops_exception(track)
    print(f"   returned; is its frame still alive? {track[-1].alive}")


async def returns(track: Track) -> str:
    marker = Thing("marker")
    track.append(watch(marker, "the frame of the task that returned"))
    await plait.sleep(1)
    return "ok"


async def raises(track: Track) -> None:
    marker = Thing("marker")
    track.append(watch(marker, "the frame of the task that raised"))
    await plait.sleep(2)
    # Not 'error = TaskFailed(...); raise error': that local would close the cycle of
    # part 3 (the traceback refers to this frame, which would refer to the exception).
    raise watched_error(track)


def watched_error(track: Track) -> TaskFailed:
    error = TaskFailed("the task failed")
    track.append(watch(error, "the exception of the failed task"))
    return error


async def sleeps(track: Track) -> None:
    marker = Thing("marker")
    track.append(watch(marker, "the frame of the cancelled task"))
    await plait.sleep_forever()


async def tasks(track: Track) -> None:
    async with plait.TaskGroup() as tg:
        ok = tg.spawn(returns, track)
        cancelled = tg.spawn(sleeps, track)
        track.append(watch(ok, "the Task object of the task that returned"))
        await plait.sleep(1.5)
        cancelled.cancel()
    del ok, cancelled
    print("   the task group has ended")
    async with plait.TaskGroup() as tg:
        tg.spawn(raises, track)


def part4_plait() -> None:
    print("4. plait tasks: freed by reference counting")
    track: Track = []
    try:
        plait.run(tasks, track, clock=MockClock(autojump_threshold=0))
    except* TaskFailed:
        print("   plait.run raised the task's exception, in an ExceptionGroup")
    print(f"   after plait.run: still alive: {sum(f.alive for f in track)} of {len(track)}")


def main() -> None:
    gc.collect()
    gc.disable()  # from here on, only reference counting frees objects
    try:
        part1_refcounting()
        part2_cycle()
        part3_exception_cycle()
        part4_plait()
    finally:
        gc.enable()


if __name__ == "__main__":
    main()
