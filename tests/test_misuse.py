"""Misuse errors: each has the right type, and its message names the cause and the fix.

After every test, an autouse fixture checks that nothing leaked: plait.run works again,
and asyncio's notion of the running loop is restored (asyncio.run works).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import plait
from helpers import vrun
from plait.lowlevel import Abort, reschedule, wait_task_rescheduled
from plait.testing import wait_all_tasks_blocked


async def nap() -> str:
    await plait.sleep(1)
    return "ok"


async def asyncio_nap() -> str:
    await asyncio.sleep(0)
    return "ok"


@pytest.fixture(autouse=True)
def _nothing_leaks() -> Iterator[None]:
    yield
    assert asyncio.events._get_running_loop() is None
    with pytest.raises(RuntimeError):
        plait.current_task()
    assert vrun(nap) == "ok"
    assert asyncio.run(asyncio_nap()) == "ok"


def sync_returns_int() -> int:
    return 5


def sync_returns_none() -> None:
    return None


def plain_generator() -> Generator[int, None, None]:
    yield 1


def message(info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(info.value)


class TestSpawnMisuse:
    """TaskGroup.spawn / plait.run given something that is not an async function."""

    @staticmethod
    def spawn_error(arg: Any, *args: Any) -> str:
        async def main() -> str:
            async with plait.TaskGroup() as tg:
                with pytest.raises(TypeError) as info:
                    tg.spawn(arg, *args)
            return message(info)

        return str(vrun(main))

    def test_spawn_int(self) -> None:
        msg = self.spawn_error(3)
        assert "3" in msg
        assert "async function" in msg

    def test_spawn_result_of_sync_function_returning_none(self) -> None:
        msg = self.spawn_error(sync_returns_none())
        assert "None" in msg
        assert "async function" in msg
        assert "regular function" in msg

    def test_spawn_result_of_sync_function_returning_int(self) -> None:
        msg = self.spawn_error(sync_returns_int())
        assert "5" in msg
        assert "async function" in msg

    @pytest.mark.parametrize("fn", [sync_returns_int, sync_returns_none])
    def test_spawn_sync_function(self, fn: Callable[[], Any]) -> None:
        msg = self.spawn_error(fn)
        assert fn.__name__ in msg
        assert "async def" in msg
        assert "to_thread" in msg

    def test_spawn_coroutine_with_extra_args(self) -> None:
        async def main() -> None:
            coro = nap()
            try:
                async with plait.TaskGroup() as tg:
                    with pytest.raises(TypeError, match="separately"):
                        tg.spawn(coro, 1)
            finally:
                coro.close()

        vrun(main)

    @pytest.mark.parametrize("where", ["spawn", "run"])
    def test_rejected_coroutine_is_closed(self, where: str) -> None:
        # A coroutine object plait refuses must be closed, or a "coroutine ... was never
        # awaited" RuntimeWarning follows the TypeError (an error under this test config).
        coro = nap()

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                with pytest.raises(TypeError):
                    tg.spawn(coro, 1)

        try:
            if where == "spawn":
                vrun(main)
            else:
                with pytest.raises(TypeError):
                    plait.run(coro, 1)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        finally:
            coro.close()

    def test_spawn_plain_generator(self) -> None:
        for arg in (plain_generator(), plain_generator):
            msg = self.spawn_error(arg)
            assert "generator" in msg
            assert "@plait.coroutine" in msg
            assert "async def" in msg

    def test_start_non_callable(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                with pytest.raises(TypeError, match="task_status"):
                    await tg.start(3)

        vrun(main)

    def test_run_int(self) -> None:
        with pytest.raises(TypeError, match="async function") as info:
            plait.run(3)
        assert "plait.run" in message(info)

    def test_run_sync_function(self) -> None:
        with pytest.raises(TypeError, match="async def") as info:
            plait.run(sync_returns_int)
        assert "sync_returns_int" in message(info)

    def test_run_plain_generator_function(self) -> None:
        with pytest.raises(TypeError, match=r"@plait\.coroutine"):
            plait.run(plain_generator)

    def test_run_coroutine_with_extra_args(self) -> None:
        coro = nap()
        try:
            with pytest.raises(TypeError, match="separately"):
                plait.run(coro, 1)
        finally:
            coro.close()


class TestForeignAwaits:
    """asyncio objects in plait, plait objects in asyncio, and bad yields."""

    def test_asyncio_sleep_inside_plait(self) -> None:
        async def main() -> str:
            with pytest.raises(RuntimeError) as info:
                await asyncio.sleep(1)
            return message(info)

        msg = vrun(main)
        assert "asyncio" in msg
        assert "plait.sleep" in msg

    def test_asyncio_future_inside_plait(self) -> None:
        aloop = asyncio.new_event_loop()
        try:
            fut = aloop.create_future()

            async def main() -> str:
                with pytest.raises(TypeError) as info:
                    await fut
                # the task survives the error and goes on normally
                await plait.sleep(1)
                return message(info)

            msg = vrun(main)
        finally:
            aloop.close()
        assert "asyncio" in msg
        assert "plait.aio" in msg

    def test_generator_coroutine_yielding_a_value(self) -> None:
        @plait.coroutine
        def bad() -> Any:
            with pytest.raises(TypeError) as info:
                yield 5
            yield from plait.sleep(1)  # still usable afterwards
            return message(info)

        msg = vrun(bad)
        assert "5" in msg
        assert "yield" in msg
        assert "@plait.coroutine" in msg

    def test_custom_awaitable_yielding_a_value(self) -> None:
        class Weird:
            def __await__(self) -> Generator[Any, Any, None]:
                yield "hello"

        async def main() -> None:
            await Weird()

        with pytest.raises(TypeError, match="hello"):
            vrun(main)

    def test_plait_run_inside_plait(self) -> None:
        async def main() -> str:
            inner = nap()
            with pytest.raises(RuntimeError) as info:
                plait.run(inner)
            assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED
            with pytest.raises(RuntimeError):
                plait.run(nap)  # the coroutine plait creates is closed too
            assert await nap() == "ok"  # the outer run is unharmed
            return message(info)

        msg = vrun(main)
        assert "inside a running plait loop" in msg
        assert "Await" in msg

    def test_loop_run_inside_plait(self) -> None:
        async def main() -> None:
            with plait.Loop() as other, pytest.raises(RuntimeError, match="running plait loop"):
                other.run()

        vrun(main)

    def test_plait_sleep_driven_by_asyncio(self) -> None:
        async def main() -> None:
            await plait.sleep(1)

        with pytest.raises(RuntimeError) as info:
            asyncio.run(main())
        assert "plait.run" in message(info)

    def test_plait_wait_driven_by_asyncio(self) -> None:
        async def main() -> None:
            await wait_task_rescheduled(lambda _: Abort.SUCCEEDED)

        with pytest.raises(RuntimeError) as info:
            asyncio.run(main())
        assert "plait.run" in message(info)

    def test_plait_current_time_outside_run(self) -> None:
        with pytest.raises(RuntimeError, match=r"plait\.run\(main\)"):
            plait.current_time()


BAD_VALUES: list[tuple[str, Callable[[], Any]]] = [
    ("sleep(-1)", lambda: plait.sleep(-1)),
    ("sleep(nan)", lambda: plait.sleep(math.nan)),
    ("sleep_until(nan)", lambda: plait.sleep_until(math.nan)),
    ("move_on_after(-1)", lambda: plait.move_on_after(-1)),
    ("move_on_after(nan)", lambda: plait.move_on_after(math.nan)),
    ("fail_after(-0.5)", lambda: plait.fail_after(-0.5)),
    ("fail_after(nan)", lambda: plait.fail_after(math.nan)),
    ("move_on_at(nan)", lambda: plait.move_on_at(math.nan)),
    ("fail_at(nan)", lambda: plait.fail_at(math.nan)),
    ("CancelScope(deadline=nan)", lambda: plait.CancelScope(deadline=math.nan)),
    ("wait_all_tasks_blocked(-1)", lambda: wait_all_tasks_blocked(-1)),
]


class TestBadValues:
    @pytest.mark.parametrize(("label", "make"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
    def test_negative_or_nan_durations(self, label: str, make: Callable[[], Any]) -> None:
        async def main() -> str:
            with pytest.raises(ValueError) as info:
                result = make()
                if inspect.isawaitable(result):
                    await result
            return message(info)

        msg = vrun(main)
        if "nan" in label:
            assert "NaN" in msg
        else:
            assert ">= 0" in msg
            assert "pass 0" in msg

    def test_sleep_non_number(self) -> None:
        async def main() -> None:
            with pytest.raises(TypeError, match="number of seconds"):
                await plait.sleep("1")  # type: ignore[arg-type]

        vrun(main)

    def test_bad_clock(self) -> None:
        with pytest.raises(TypeError, match="MockClock"):
            plait.run(nap, clock=object())  # type: ignore[arg-type]


class TestLowlevelMisuse:
    def test_reschedule_running_task(self) -> None:
        async def main() -> None:
            with pytest.raises(RuntimeError, match="not waiting"):
                reschedule(plait.current_task())

        vrun(main)

    def test_reschedule_task_that_is_ready_to_run(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(nap)  # spawned, not yet started: not parked
                with pytest.raises(RuntimeError, match="not waiting"):
                    reschedule(t)

        vrun(main)

    def test_reschedule_twice(self) -> None:
        async def sleeper(slot: list[plait.Task]) -> Any:
            slot.append(plait.current_task())
            return await wait_task_rescheduled(lambda _: Abort.SUCCEEDED)

        async def main() -> Any:
            slot: list[plait.Task] = []
            async with plait.TaskGroup() as tg:
                t = tg.spawn(sleeper, slot)
                await wait_all_tasks_blocked()
                reschedule(slot[0], "first")
                with pytest.raises(RuntimeError, match="exactly once"):
                    reschedule(slot[0], "second")
            return t.result()

        assert vrun(main) == "first"

    def test_error_in_a_task_leaves_the_next_run_clean(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(asyncio.sleep, 1)

        with pytest.raises(ExceptionGroup) as info:
            vrun(main)
        [err] = info.value.exceptions
        assert isinstance(err, RuntimeError)
        assert "asyncio" in str(err)
