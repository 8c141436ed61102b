"""plait.aio.run_asyncio and plait.aio.run_plait: asyncio code from plait tasks and
plait code from asyncio code, on one loop; results, exceptions and cancellation in
both directions (issue 8)."""

from __future__ import annotations

import asyncio
import gc
import traceback
import weakref

import pytest

import plait
import plait.aio
from plait.testing import wait_all_tasks_blocked


async def aio_double(x):
    await asyncio.sleep(0)
    return 2 * x


async def aio_fail():
    await asyncio.sleep(0)
    raise ValueError("from asyncio")


async def plait_triple(x):
    await plait.sleep(0)
    return 3 * x


async def plait_fail():
    await plait.sleep(0)
    raise KeyError("from plait")


# -- plait -> asyncio ------------------------------------------------------------------


def test_run_asyncio_returns_results_concurrently():
    async def main():
        first = await plait.aio.run_asyncio(aio_double(21))
        async with plait.TaskGroup() as tg:
            tasks = [tg.spawn(plait.aio.run_asyncio, aio_double(i)) for i in range(5)]
        return first, [t.result() for t in tasks]

    assert plait.run(main) == (42, [0, 2, 4, 6, 8])


def test_run_asyncio_raises_the_asyncio_error_with_its_traceback():
    async def main():
        with pytest.raises(ValueError, match="from asyncio") as info:
            await plait.aio.run_asyncio(aio_fail())
        return "".join(traceback.format_exception(info.value))

    assert "in aio_fail" in plait.run(main)


def test_asyncio_becomes_available_in_plait_run_only_through_the_bridge():
    async def main():
        with pytest.raises(RuntimeError, match="plait's loop is not an asyncio event loop"):
            asyncio.get_running_loop().time()
        await plait.aio.run_asyncio(asyncio.sleep(0))
        loop = asyncio.get_running_loop()  # from now on, for the rest of the run
        assert isinstance(loop, plait.aio.EventLoop) and loop.is_running()
        return loop

    loop = plait.run(main)
    assert loop.is_closed()  # wound down with the run


def test_cancelling_the_plait_task_cancels_the_asyncio_task_and_waits_for_it():
    events = []

    async def slow():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that awaits
            events.append("asyncio cleanup done")

    async def main():
        with plait.CancelScope() as scope:
            async with plait.TaskGroup() as tg:
                tg.spawn(plait.aio.run_asyncio, slow())
                await wait_all_tasks_blocked()
                scope.cancel()
        events.append("plait side went on")
        return scope.cancelled_caught

    assert plait.run(main) is True
    assert events == ["asyncio cleanup done", "plait side went on"]


def test_asyncio_code_that_ignores_the_cancellation_returns_then_plait_cancels():
    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "kept"

    async def main():
        got = []
        with plait.CancelScope() as scope:

            async def call():
                got.append(await plait.aio.run_asyncio(stubborn()))
                await plait.lowlevel.checkpoint()  # the scope is still cancelled
                got.append("not reached")

            async with plait.TaskGroup() as tg:
                tg.spawn(call)
                await wait_all_tasks_blocked()
                scope.cancel()
        return got, scope.cancelled_caught

    assert plait.run(main) == (["kept"], True)


def test_deadlines_cancel_asyncio_code():
    async def main():
        with plait.move_on_after(0.001) as scope:
            await plait.aio.run_asyncio(asyncio.sleep(3600))
        return scope.cancelled_caught

    assert plait.run(main) is True


def test_asyncio_tasks_left_running_are_cancelled_when_the_run_ends():
    events = []

    async def background():
        try:
            await asyncio.sleep(3600)
        finally:
            events.append("background cancelled")

    async def start():
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)

    async def main():
        await plait.aio.run_asyncio(start())
        events.append("main done")

    plait.run(main)
    assert events == ["main done", "background cancelled"]


def test_run_asyncio_bad_input():
    async def main():
        with pytest.raises(TypeError, match=r"call it, run_asyncio\(fn\(...\)\)"):
            await plait.aio.run_asyncio(aio_double)
        with pytest.raises(TypeError, match="takes a coroutine or an awaitable"):
            await plait.aio.run_asyncio(42)

    plait.run(main)
    coro = aio_double(1)
    with pytest.raises(RuntimeError):
        asyncio.run(_await_outside(coro))


async def _await_outside(coro):
    try:
        await plait.aio.run_asyncio(coro)
    finally:
        coro.close()


# -- asyncio -> plait ------------------------------------------------------------------


def test_run_plait_returns_results_and_raises_errors():
    async def main():
        got = await plait.aio.run_plait(plait_triple, 7)
        with pytest.raises(KeyError, match="from plait"):
            await plait.aio.run_plait(plait_fail)
        many = await asyncio.gather(*(plait.aio.run_plait(plait_triple, i) for i in range(4)))
        return got, many

    assert plait.aio.run(main()) == (21, [0, 3, 6, 9])


def test_cancelling_the_asyncio_task_cancels_the_plait_task_and_waits_for_it():
    events = []
    started = asyncio.Event()

    async def slow():
        try:
            started.set()
            await plait.sleep_forever()
        finally:
            with plait.CancelScope(shield=True):
                await plait.sleep(0)  # cleanup that awaits
            events.append("plait cleanup done")

    async def main():
        task = asyncio.create_task(plait.aio.run_plait(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events.append("asyncio side went on")

    plait.aio.run(main())
    assert events == ["plait cleanup done", "asyncio side went on"]


def test_asyncio_timeouts_cancel_plait_code():
    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(plait.aio.run_plait(plait.sleep, 3600), 0.001)
        return "ok"

    assert plait.aio.run(main()) == "ok"


def test_plait_inside_asyncio_inside_plait():
    async def aio_part():
        return await plait.aio.run_plait(plait_triple, 5) + 1

    async def main():
        async with plait.TaskGroup() as tg:
            task = tg.spawn(plait.aio.run_asyncio, aio_part())
        return task.result()

    assert plait.run(main) == 16


def test_run_plait_bad_input():
    async def main():
        with pytest.raises(TypeError, match="run_plait"):
            await plait.aio.run_plait(print)

    plait.aio.run(main())

    async def on_asyncios_own_loop():
        with pytest.raises(RuntimeError, match="needs plait's asyncio loop"):
            await plait.aio.run_plait(plait_triple, 1)

    asyncio.run(on_asyncios_own_loop())


def test_the_loops_are_freed_without_the_cyclic_gc():
    refs = []

    async def aio_main():
        refs.append(weakref.ref(asyncio.get_running_loop()))
        await asyncio.create_task(asyncio.sleep(0))
        await asyncio.get_running_loop().run_in_executor(None, sum, [1])
        await plait.aio.run_plait(plait_triple, 1)

    async def plait_main():
        await plait.aio.run_asyncio(aio_main())

    gc.collect()
    gc.disable()
    try:
        plait.aio.run(aio_main())
        plait.run(plait_main)
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
