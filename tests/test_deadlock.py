"""plait.Deadlock: found when every task waits for another task and nothing else can
wake any of them; never declared while a socket, timer, thread, process or signal may
(issue 9)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import pytest

import plait
from helpers import isolated


def run(main):
    return plait.run(main, name="main")


def case_lock_order_inversion():
    async def main():
        a, b = plait.Lock(), plait.Lock()
        both_hold = plait.Event()
        held = []

        async def take(first, second):
            async with first:
                held.append(first)
                if len(held) == 2:
                    both_hold.set()
                await both_hold.wait()
                async with second:
                    pass

        async with plait.TaskGroup() as tg:
            tg.spawn(take, a, b, name="ab")
            tg.spawn(take, b, a, name="ba")

    with pytest.raises(plait.Deadlock) as info:
        run(main)
    text = str(info.value)
    assert "task 'ab' (#" in text and "task 'ba' (#" in text
    assert "waits in Lock.__aenter__(<plait.Lock locked owner='ba'>)" in text
    assert "waits in Lock.__aenter__(<plait.Lock locked owner='ab'>)" in text
    assert "task 'main'" in text and "TaskGroup.__aexit__" in text
    assert "wait-for cycle: 'ab' -> 'ba' -> 'ab'" in text
    assert "<locals>.take" in text and "test_deadlock.py" in text


def case_tasks_joining_each_other_in_a_chain():
    async def main():
        tasks = {}
        ready = plait.Event()

        async def join(name):
            await ready.wait()
            await tasks[name]

        async with plait.TaskGroup() as tg:
            tasks["one"] = tg.spawn(join, "two", name="one")
            tasks["two"] = tg.spawn(join, "three", name="two")
            tasks["three"] = tg.spawn(join, "one", name="three")
            ready.set()

    with pytest.raises(plait.Deadlock) as info:
        run(main)
    text = str(info.value)
    assert "wait-for cycle: 'one' -> 'two' -> 'three' -> 'one'" in text
    assert "Task._join(<plait.Task #" in text


def case_a_queue_nobody_fills():
    cleaned = []

    async def main():
        queue = plait.Queue()

        async def consumer():
            try:
                await queue.get()
            finally:
                cleaned.append("consumer")  # cancelled, so it cleans up

        async with plait.TaskGroup() as tg:
            tg.spawn(consumer, name="consumer")

    with pytest.raises(plait.Deadlock) as info:
        run(main)
    assert "task 'consumer' (#" in str(info.value)
    assert "waits in Queue.get(<plait.Queue" in str(info.value)
    assert "wait-for cycle" not in str(info.value)  # nobody to blame: no cycle
    assert cleaned == ["consumer"]


def case_the_main_task_alone_on_an_event():
    async def main():
        await plait.Event().wait()

    with pytest.raises(plait.Deadlock, match=r"task 'main' \(#\d+\) waits in Event.wait"):
        run(main)


def case_an_error_the_main_task_raised_while_cancelled_is_kept_as_context():
    async def main():
        try:
            await plait.Event().wait()
        finally:
            raise ValueError("cleanup failed")

    with pytest.raises(plait.Deadlock) as info:
        run(main)
    assert isinstance(info.value.__context__, ValueError)


def case_a_deadlock_again_while_cancelling_ends_the_run_at_once():
    """A shielded wait that nobody can end, after the first Deadlock: raised now."""

    async def main():
        never = plait.Event()
        try:
            await never.wait()
        finally:
            with plait.CancelScope(shield=True):
                await never.wait()

    coro = main()
    with pytest.raises(plait.Deadlock, match="again, while the tasks were being cancelled"):
        run(lambda: coro)
    coro.close()  # the abandoned task's coroutine: the test closes it


# -- no false positives ----------------------------------------------------------------


def case_not_while_a_timer_is_set():
    async def main():
        event = plait.Event()

        async def later():
            await plait.sleep(0.01)
            event.set()

        async with plait.TaskGroup() as tg:
            tg.spawn(later)
            await event.wait()
        return "woken by a timer"

    assert run(main) == "woken by a timer"


def case_not_while_a_thread_runs():
    async def main():
        event = plait.Event()

        async def threaded():
            await plait.to_thread.run_sync(time.sleep, 0.05)
            event.set()

        async with plait.TaskGroup() as tg:
            tg.spawn(threaded)
            await event.wait()
        return "woken after a thread"

    assert run(main) == "woken after a thread"


def case_not_while_a_thread_plait_did_not_start_may_call_in():
    async def main():
        loop = plait.lowlevel.current_loop()
        event = plait.Event()
        import threading

        thread = threading.Thread(
            target=lambda: (time.sleep(0.05), loop.call_soon_threadsafe(event.set))
        )
        thread.start()
        await event.wait()
        thread.join()
        return "woken by a foreign thread"

    assert run(main) == "woken by a foreign thread"


def case_not_while_a_process_runs():
    async def main():
        result = await plait.run_process([sys.executable, "-c", "import time; time.sleep(0.05)"])
        async with plait.ProcessPool(1) as pool:
            slept = await pool.run_sync(time.sleep, 0.05)
        return result.returncode, slept

    assert run(main) == (0, None)


def case_not_while_a_socket_or_pipe_is_awaited():
    """The pipe's writer is a process plait knows nothing of: only the fd is awaited."""

    async def main():
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(0.05); print('x')"],
            stdout=subprocess.PIPE,
        )
        try:
            await plait.lowlevel.wait_readable(child.stdout.fileno())
            return child.stdout.read()
        finally:
            child.stdout.close()
            child.wait()

    assert run(main).strip() == b"x"


def case_not_while_a_signal_is_awaited():
    """The signal comes from a process plait knows nothing of, and no thread."""

    async def main():
        with plait.open_signal_receiver(signal.SIGUSR1) as signals:
            killer = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import os, time; time.sleep(0.05); os.kill({os.getpid()}, {signal.SIGUSR1})",
                ]
            )
            try:
                async for signum in signals:
                    return signum
            finally:
                killer.wait()

    assert run(main) == signal.SIGUSR1


def case_not_in_a_task_group_start_that_completes():
    async def main():
        async def service(task_status=plait.TASK_STATUS_IGNORED):
            task_status.started("up")
            await plait.sleep(0.001)

        async with plait.TaskGroup() as tg:
            return await tg.start(functools.partial(service))

    assert run(main) == "up"


def case_not_while_a_task_sleeps_forever_waiting_for_ctrl_c():
    """``await plait.sleep_forever()`` is how a program runs until Ctrl-C: the other
    tasks waiting on an event are not deadlocked meanwhile."""

    children = []

    async def main():
        event = plait.Event()

        async def waiter():
            await event.wait()

        async with plait.TaskGroup() as tg:
            tg.spawn(waiter)
            interrupter = f"import os, time; time.sleep(0.05); os.kill({os.getpid()}, 2)"
            children.append(subprocess.Popen([sys.executable, "-c", interrupter]))
            await plait.sleep_forever()

    with pytest.raises(KeyboardInterrupt):
        run(main)
    children[0].wait()


# Each case runs in a fresh interpreter (see helpers.isolated).


def test_lock_order_inversion():
    isolated(__file__, "case_lock_order_inversion")


def test_tasks_joining_each_other_in_a_chain():
    isolated(__file__, "case_tasks_joining_each_other_in_a_chain")


def test_a_queue_nobody_fills():
    isolated(__file__, "case_a_queue_nobody_fills")


def test_the_main_task_alone_on_an_event():
    isolated(__file__, "case_the_main_task_alone_on_an_event")


def test_an_error_the_main_task_raised_while_cancelled_is_kept_as_context():
    isolated(__file__, "case_an_error_the_main_task_raised_while_cancelled_is_kept_as_context")


def test_a_deadlock_again_while_cancelling_ends_the_run_at_once():
    isolated(__file__, "case_a_deadlock_again_while_cancelling_ends_the_run_at_once")


def test_not_while_a_timer_is_set():
    isolated(__file__, "case_not_while_a_timer_is_set")


def test_not_while_a_thread_runs():
    isolated(__file__, "case_not_while_a_thread_runs")


def test_not_while_a_thread_plait_did_not_start_may_call_in():
    isolated(__file__, "case_not_while_a_thread_plait_did_not_start_may_call_in")


def test_not_while_a_process_runs():
    isolated(__file__, "case_not_while_a_process_runs")


def test_not_while_a_socket_or_pipe_is_awaited():
    isolated(__file__, "case_not_while_a_socket_or_pipe_is_awaited")


def test_not_while_a_signal_is_awaited():
    isolated(__file__, "case_not_while_a_signal_is_awaited")


def test_not_in_a_task_group_start_that_completes():
    isolated(__file__, "case_not_in_a_task_group_start_that_completes")


def test_not_while_a_task_sleeps_forever_waiting_for_ctrl_c():
    isolated(__file__, "case_not_while_a_task_sleeps_forever_waiting_for_ctrl_c")
