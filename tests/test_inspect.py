"""plait.task_tree(), Task.stack() and plait.print_task_tree() on a known program: names,
states, what each task waits on, and frames through coroutines, @plait.coroutine
generators and async generators (issue 9)."""

from __future__ import annotations

import io
import threading

import pytest

import plait
from plait.testing import wait_all_tasks_blocked


async def numbers():
    yield 1
    await plait.sleep(3600)  # the async generator's own wait
    yield 2


@plait.coroutine
def generator_waiter(event):
    yield from event.wait()


def names(stack):
    return [frame.name for frame in stack]


def test_the_tree_of_a_known_program():
    seen = {}
    release = threading.Event()

    async def main():
        lock, event, queue = plait.Lock(), plait.Event(), plait.Queue()

        async def holder():
            async with lock:
                await event.wait()

        async def blocked():
            await lock.acquire()

        async def consumer():
            await queue.get()

        async def iterating():
            async for _ in numbers():
                pass

        async def threaded():
            await plait.to_thread.run_sync(release.wait)

        async def nested():
            async with plait.TaskGroup() as inner:
                inner.spawn(plait.sleep, 3600, name="sleeper")

        async with plait.TaskGroup() as tg:
            tasks = {
                name: tg.spawn(fn, *args, name=name)
                for name, fn, *args in [
                    ("holder", holder),
                    ("blocked", blocked),
                    ("consumer", consumer),
                    ("iterating", iterating),
                    ("generator", generator_waiter, event),
                    ("threaded", threaded),
                    ("nested", nested),
                ]
            }
            await wait_all_tasks_blocked()
            seen["tree"] = plait.task_tree()
            seen["stack"] = tasks["iterating"].stack(locals=True)
            text = io.StringIO()
            plait.print_task_tree(text, stacks=True)
            seen["text"] = text.getvalue()
            release.set()
            tg.cancel_scope.cancel()
        seen["after"] = tasks["holder"].stack()

    plait.run(main, name="main")
    [root] = [info for info in seen["tree"] if not info.system]
    assert (root.name, root.state, root.waiting_on) == ("main", "running", None)
    [children] = root.groups
    by_name = {info.name: info for info in children}
    assert list(by_name) == [
        "holder",
        "blocked",
        "consumer",
        "iterating",
        "generator",
        "threaded",
        "nested",
    ]
    assert all(info.state == "waiting" for info in children)
    waits = {name: info.waiting_on for name, info in by_name.items()}
    assert waits["holder"].startswith("Event.wait(<plait.Event unset")
    assert waits["blocked"] == "Lock.acquire(<plait.Lock locked owner='holder'>)"
    assert waits["consumer"].startswith("Queue.get(<plait.Queue")
    assert waits["iterating"] == "sleep(seconds=3600.0)"
    assert waits["generator"].startswith("Event.wait(")
    assert waits["threaded"].startswith("to_thread_run_sync(fn=<bound method Event.wait")
    assert waits["nested"].startswith("TaskGroup.__aexit__(")
    [inner] = by_name["nested"].groups
    assert [(i.name, i.waiting_on) for i in inner] == [("sleeper", "sleep(seconds=3600.0)")]

    # frames through a coroutine, an async generator (via asend) and plait's own
    iterating = names(by_name["iterating"].stack)
    assert iterating == [
        "test_the_tree_of_a_known_program.<locals>.main.<locals>.iterating",
        "numbers",
        "sleep",
        "checkpoint",
    ]
    # ... and through a @plait.coroutine generator
    assert names(by_name["generator"].stack)[:2] == ["generator_waiter", "Event.wait"]
    frame = by_name["generator"].stack[0]
    assert frame.filename == __file__ and frame.locals is None
    assert frame.lineno == generator_waiter.__code__.co_firstlineno + 2
    # locals on request, as reprs
    assert seen["stack"][1].name == "numbers"
    assert seen["stack"][2].locals["seconds"] == "3600.0"
    assert seen["after"] == []  # a finished task has no stack

    text = seen["text"]
    assert text.startswith("main (#")
    assert "├─ blocked (#" in text and "waiting: Lock.acquire(" in text
    assert "in numbers" in text and 'File "' in text
    assert "└─ sleeper (#" in text


def test_system_tasks_are_marked_and_printed_on_request():
    async def main():
        async def service():
            await plait.sleep_forever()

        plait.lowlevel.spawn_system_task(service, name="service")
        await wait_all_tasks_blocked()
        tree = plait.task_tree()
        quiet, loud = io.StringIO(), io.StringIO()
        plait.print_task_tree(quiet)
        plait.print_task_tree(loud, system=True)
        return tree, quiet.getvalue(), loud.getvalue()

    tree, quiet, loud = plait.run(main, name="main")
    assert [(info.name, info.system) for info in tree] == [("main", False), ("service", True)]
    assert "service" not in quiet
    assert "service (#" in loud and "[system]" in loud


def test_outside_a_run():
    with pytest.raises(RuntimeError, match=r"plait\.task_tree\(\)"):
        plait.task_tree()
    with pytest.raises(RuntimeError, match=r"plait\.print_task_tree\(\)"):
        plait.print_task_tree()
