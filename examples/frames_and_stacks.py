"""The execution stack and its frames: of a thread, of a suspended generator or
coroutine, and of plait tasks.

1. Each running call has a frame (its code, current line, local variables), linked to
   its caller's by ``f_back``: that chain is the thread's stack. A function's frame
   goes away when it returns.
2. A generator's frame survives between ``next()`` calls (``gi_frame``): it is on the
   thread's stack only while it runs, and its ``f_back`` is None while it waits.
3. A suspended coroutine is a chain too, but not on any thread's stack: the outer
   coroutine's ``cr_await`` is the one it awaits, and so on down to the ``yield``
   that suspended them all. That chain is a task's stack.
4. plait reads it off the live objects: ``Task.stack()`` (with ``locals=True``, the
   variables too) and ``plait.print_task_tree()``, which shows every task, what it
   waits on and where, under the task group it belongs to.

Run: .venv/bin/python examples/frames_and_stacks.py
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from types import FrameType
from typing import Any

import plait
from plait.testing import MockClock, wait_all_tasks_blocked


def describe(frame: FrameType | None) -> str:
    if frame is None:
        return "None"
    return f"{frame.f_code.co_qualname}() line {frame.f_lineno}"


def stack_text(frame: FrameType | None, depth: int) -> str:
    """The qualified names of ``frame`` and its callers, innermost first."""
    names: list[str] = []
    while frame is not None and len(names) < depth:
        n = frame.f_locals.get("n")
        names.append(frame.f_code.co_qualname + ("" if n is None else f"(n={n})"))
        frame = frame.f_back  # the caller's frame
    return " <- ".join(names)


def factorial(n: int) -> int:
    if n == 1:
        print(f"   innermost first: {stack_text(sys._getframe(), 5)}")
        return 1
    return n * factorial(n - 1)


def part1_call_stack() -> None:
    print("1. the call stack: frames linked by f_back")
    print(f"   factorial(3) = {factorial(3)}")


def squares(limit: int) -> Generator[int, None, None]:
    for n in range(limit):
        print(f"   inside, running: f_back is {describe(sys._getframe().f_back)}")
        yield n * n


def part2_generator_frame() -> None:
    print("2. a generator keeps its frame between next() calls")
    gen = squares(3)
    next(gen)
    frame = gen.gi_frame
    assert frame is not None
    print(f"   suspended at {describe(frame)}, locals {frame.f_locals}, f_back {frame.f_back}")
    next(gen)
    print(f"   after the second next(): locals {frame.f_locals}")
    gen.close()
    print(f"   closed: gi_frame is {gen.gi_frame}")


async def inner() -> None:
    await plait.checkpoint()  # a types.coroutine generator: its yield suspends us all


async def middle() -> None:
    await inner()


async def outer() -> None:
    await middle()


def part3_await_chain() -> None:
    print("3. a suspended coroutine: the chain of cr_await")
    coro = outer()
    coro.send(None)  # run until the yield deep inside: now all three are suspended
    print(f"   the thread's stack: {stack_text(sys._getframe(), 5)} (no coroutine)")
    print("   the coroutines' chain, from the outer one down:")
    link: Any = coro
    while link is not None:
        frame = getattr(link, "cr_frame", None) or getattr(link, "gi_frame", None)
        print(f"     {type(link).__name__:9} {describe(frame)}")
        link = getattr(link, "cr_await", None) or getattr(link, "gi_yieldfrom", None)
    coro.close()  # GeneratorExit at the yield: the frames unwind


workers: list[plait.Task] = []


async def worker(job: str, ready: plait.Event) -> None:
    workers.append(plait.current_task())
    attempts = 3  # a local, to see with Task.stack(locals=True)
    await ready.wait()
    print(f"   {job}: {attempts} attempts left")


async def supervisor(ready: plait.Event) -> None:
    async with plait.TaskGroup() as tg:
        tg.spawn(worker, "resize", ready, name="resize")
        tg.spawn(worker, "upload", ready, name="upload")


async def part4_tasks() -> None:
    print("4. plait tasks: Task.stack() and print_task_tree()")
    ready = plait.Event()
    async with plait.TaskGroup() as tg:
        sup = tg.spawn(supervisor, ready, name="supervisor")
        timer = tg.spawn(plait.sleep, 30, name="timer")
        await wait_all_tasks_blocked()  # let every task run until it waits
        print("   supervisor's await stack, outermost first:")
        for entry in sup.stack():
            print(f"     {entry.name}")
        plait.print_task_tree()
        frame = workers[0].stack(locals=True)[0]
        print(f"   {workers[0].name}'s own frame, with locals: {frame.name} {frame.locals}")
        ready.set()
        timer.cancel()


def main() -> None:
    part1_call_stack()
    part2_generator_frame()
    part3_await_chain()
    plait.run(part4_tasks, clock=MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
