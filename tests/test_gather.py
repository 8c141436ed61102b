"""Tests for plait.gather and plait.as_completed."""

from __future__ import annotations

import gc
import inspect
from typing import Any

import pytest

import plait
from helpers import vrun
from plait.testing import wait_all_tasks_blocked


async def work(log: list[str], seconds: float, value: Any) -> Any:
    try:
        await plait.sleep(seconds)
    except plait.Cancelled:
        log.append(f"{value} cancelled")
        raise
    log.append(f"{value} done")
    return value


async def fail_after_sleep(seconds: float, exc: BaseException) -> None:
    await plait.sleep(seconds)
    raise exc


class TestGather:
    def test_results_in_argument_order(self) -> None:
        log: list[str] = []

        async def main() -> Any:
            results = await plait.gather(work(log, 3, "a"), work(log, 1, "b"), work(log, 2, "c"))
            return results, plait.current_time()

        assert vrun(main) == (["a", "b", "c"], 3)
        assert log == ["b done", "c done", "a done"]

    def test_empty(self) -> None:
        async def main() -> Any:
            return await plait.gather()

        assert vrun(main) == []

    def test_tasks_are_joined(self) -> None:
        log: list[str] = []

        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                finished = tg.spawn(work, log, 0, "finished")
                await wait_all_tasks_blocked()
                assert finished.done()
                running = tg.spawn(work, log, 2, "task")
                results = await plait.gather(work(log, 1, "coro"), running, finished)
                assert plait.current_time() == 2
                assert running.done()
            return results

        assert vrun(main) == ["coro", "task", "finished"]

    def test_generator_coroutines(self) -> None:
        @plait.coroutine
        def gen(value: int) -> Any:
            yield from plait.sleep(1)
            return value

        async def main() -> Any:
            return await plait.gather(gen(1), gen(2))

        assert vrun(main) == [1, 2]

    def test_one_failure_raised_bare_and_others_cancelled(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with pytest.raises(ValueError, match="boom"):
                await plait.gather(
                    work(log, 5, "slow"),
                    fail_after_sleep(1, ValueError("boom")),
                    work(log, 10, "slower"),
                )
            assert plait.current_time() == 1

        vrun(main)
        assert sorted(log) == ["slow cancelled", "slower cancelled"]

    def test_two_failures_raise_a_group(self) -> None:
        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                await plait.gather(
                    fail_after_sleep(1, ValueError("one")),
                    fail_after_sleep(1, KeyError("two")),
                )
            kinds = sorted(type(e).__name__ for e in info.value.exceptions)
            assert kinds == ["KeyError", "ValueError"]

        vrun(main)

    def test_failing_task_argument(self) -> None:
        async def main() -> None:
            with pytest.raises(ExceptionGroup) as outer:
                async with plait.TaskGroup() as tg:
                    bad = tg.spawn(fail_after_sleep, 1, ValueError("task"))
                    with pytest.raises(ValueError, match="task"):
                        await plait.gather(bad)
            assert [type(e) for e in outer.value.exceptions] == [ValueError]

        vrun(main)

    def test_return_exceptions(self) -> None:
        log: list[str] = []

        async def main() -> Any:
            results = await plait.gather(
                work(log, 2, "ok"),
                fail_after_sleep(1, ValueError("v")),
                fail_after_sleep(3, KeyError("k")),
                return_exceptions=True,
            )
            assert plait.current_time() == 3
            return results

        ok, v, k = vrun(main)
        assert ok == "ok"
        assert isinstance(v, ValueError)
        assert str(v) == "v"
        assert isinstance(k, KeyError)
        assert log == ["ok done"]

    def test_cancelling_the_caller_cancels_the_children(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with plait.move_on_after(1) as scope:
                await plait.gather(work(log, 5, "a"), work(log, 10, "b"))
            assert scope.cancelled_caught
            assert plait.current_time() == 1

        vrun(main)
        assert sorted(log) == ["a cancelled", "b cancelled"]

    def test_cancelling_the_caller_with_return_exceptions(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with plait.move_on_after(1) as scope:
                await plait.gather(work(log, 5, "a"), return_exceptions=True)
                log.append("not reached")
            assert scope.cancelled_caught

        vrun(main)
        assert log == ["a cancelled"]

    def test_uncalled_async_function_is_rejected(self) -> None:
        log: list[str] = []

        async def main() -> None:
            coro = work(log, 1, "x")
            with pytest.raises(TypeError, match="awaitable") as info:
                await plait.gather(coro, work)
            assert "call it" in str(info.value)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

        vrun(main)
        assert log == []

    def test_non_awaitable_is_rejected_and_coroutines_closed(self) -> None:
        async def main() -> None:
            first, last = work([], 1, "first"), work([], 1, "last")
            with pytest.raises(TypeError, match="awaitable") as info:
                await plait.gather(first, 3, last)
            assert "3" in str(info.value)
            assert inspect.getcoroutinestate(first) == inspect.CORO_CLOSED
            assert inspect.getcoroutinestate(last) == inspect.CORO_CLOSED

        vrun(main)

    def test_inline_coroutines_do_not_warn(self) -> None:
        # filterwarnings=error turns a "coroutine ... was never awaited" warning into a
        # test failure; gather must close the coroutines it refused to run.
        async def main() -> None:
            with pytest.raises(TypeError):
                await plait.gather(work([], 1, "x"), None, work([], 1, "y"))

        vrun(main)


class TestAsCompleted:
    def test_completion_order(self) -> None:
        async def main() -> Any:
            seen = []
            async for task in plait.as_completed(
                [work([], 3, "a"), work([], 1, "b"), work([], 2, "c")]
            ):
                assert task.done()
                seen.append((task.result(), plait.current_time()))
            return seen

        assert vrun(main) == [("b", 1), ("c", 2), ("a", 3)]

    def test_errors_come_from_result(self) -> None:
        async def main() -> Any:
            seen: list[Any] = []
            async for task in plait.as_completed(
                [work([], 2, "ok"), fail_after_sleep(1, ValueError("bad"))]
            ):
                err = task.exception()
                if err is None:
                    seen.append(task.result())
                else:
                    with pytest.raises(ValueError) as info:
                        task.result()
                    assert info.value is err
                    seen.append(err)
            return seen

        err, ok = vrun(main)
        assert isinstance(err, ValueError)
        assert ok == "ok"

    def test_task_arguments(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                finished = tg.spawn(work, [], 0, "finished")
                await wait_all_tasks_blocked()
                slow = tg.spawn(work, [], 2, "slow")
                fast = tg.spawn(work, [], 1, "fast")
                order = [t async for t in plait.as_completed([slow, fast, finished])]
            assert order == [finished, fast, slow]

        vrun(main)

    def test_mixed_tasks_and_coroutines(self) -> None:
        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                task = tg.spawn(work, [], 2, "task")
                results = [t.result() async for t in plait.as_completed([task, work([], 1, "c")])]
            return results

        assert vrun(main) == ["c", "task"]

    def test_empty(self) -> None:
        async def main() -> Any:
            return [t async for t in plait.as_completed([])]

        assert vrun(main) == []

    def test_break_and_aclose_cancel_the_rest(self) -> None:
        log: list[str] = []

        async def main() -> None:
            it = plait.as_completed([work(log, 1, "a"), work(log, 5, "b"), work(log, 9, "c")])
            async for task in it:
                assert task.result() == "a"
                break
            await it.aclose()
            assert sorted(log) == ["a done", "b cancelled", "c cancelled"]
            assert plait.current_time() == 1

        vrun(main)

    def test_async_with_closes(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.as_completed([work(log, 1, "a"), work(log, 5, "b")]) as it:
                async for task in it:
                    assert task.result() == "a"
                    break
            assert sorted(log) == ["a done", "b cancelled"]
            assert plait.current_time() == 1

        vrun(main)

    def test_aclose_before_iterating_closes_coroutines(self) -> None:
        async def main() -> None:
            coro = work([], 1, "never")
            it = plait.as_completed([coro])
            await it.aclose()
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

        vrun(main)

    def test_task_arguments_are_left_running_on_aclose(self) -> None:
        # Tasks passed in belong to their own group: as_completed only watches them.
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(work, [], 5, "owned elsewhere")
                async with plait.as_completed([t, work([], 1, "mine")]) as it:
                    async for done in it:
                        assert done.result() == "mine"
                        break
                assert await t == "owned elsewhere"

        vrun(main)

    def test_cancelling_the_consumer_cancels_the_tasks(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with plait.move_on_after(1) as scope:
                async for _ in plait.as_completed([work(log, 5, "a"), work(log, 10, "b")]):
                    log.append("not reached")
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert sorted(log) == ["a cancelled", "b cancelled"]
            assert plait.current_time() == 1

        vrun(main)

    def test_non_awaitable_is_rejected(self) -> None:
        async def main() -> None:
            coro = work([], 1, "x")
            with pytest.raises(TypeError, match="awaitable"):
                plait.as_completed([coro, 5])
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

        vrun(main)


async def stubborn(log: list[str], cleanup: float) -> None:
    """Sleeps forever; once cancelled, takes ``cleanup`` seconds (shielded) to finish."""
    try:
        await plait.sleep_forever()
    finally:
        with plait.CancelScope(shield=True):
            await plait.sleep(cleanup)
        log.append(f"stubborn finished at {plait.current_time()}")


class TestRegressions:
    def test_gather_joining_a_task_cancelled_elsewhere_raises(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                victim = tg.spawn(plait.sleep_forever)
                await wait_all_tasks_blocked()
                victim.cancel()
                with pytest.raises(plait.TaskCancelled):
                    await plait.gather(victim, work(log, 1, 42))
            assert log == ["42 cancelled"]

        vrun(main)

    def test_aclose_does_not_wait_for_watched_tasks(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(work, [], 5, "foreign")
                it = plait.as_completed([t])
                with plait.move_on_after(1):
                    async for _ in it:
                        pytest.fail("nothing finished yet")
                await it.aclose()
                assert plait.current_time() == 1
                assert not t.done()
            assert t.result() == "foreign"

        vrun(main)

    def test_aclose_is_cancellable(self) -> None:
        log: list[str] = []

        async def main() -> None:
            it = plait.as_completed([stubborn(log, 10)])
            with plait.move_on_after(1):
                async for _ in it:
                    pytest.fail("nothing finished yet")
            with plait.move_on_after(2) as scope:
                await it.aclose()  # cancels the task, which takes 10 s to finish
            assert scope.cancelled_caught
            assert plait.current_time() == 3
            assert log == []

        vrun(main)
        assert log == ["stubborn finished at 11.0"]

    def test_a_timeout_around_one_iteration_leaves_the_tasks_alone(self) -> None:
        async def main() -> list[Any]:
            got = []
            it = plait.as_completed([work([], 1, "a"), work([], 3, "b")])
            with plait.move_on_after(2) as scope:
                async for t in it:
                    got.append((t.result(), plait.current_time()))
            assert scope.cancelled_caught
            async for t in it:
                assert not t.cancelled()
                got.append((t.result(), plait.current_time()))
            return got

        assert vrun(main) == [("a", 1), ("b", 3)]

    def test_keyboard_interrupt_in_a_task_ends_the_run(self) -> None:
        async def main() -> str:
            async with plait.as_completed(
                [work([], 0, "fast"), fail_after_sleep(1, KeyboardInterrupt())]
            ) as it:
                async for t in it:
                    assert t.result() == "fast"
                    break
                await plait.sleep(5)
            return "normal return"

        with pytest.raises(KeyboardInterrupt):
            vrun(main)

    def test_abandoned_iterators_leave_no_scope_or_task_behind(self) -> None:
        log: list[str] = []

        async def main() -> None:
            loop = plait.lowlevel.current_loop()
            scope = plait.current_task()._scope
            before = dict(scope._children or {})
            for _ in range(20):
                async for _t in plait.as_completed([work(log, 0, "a"), work(log, 10, "b")]):
                    break  # no aclose(): the iterator is garbage now
            gc.collect()
            await wait_all_tasks_blocked()
            assert loop._ntasks == 1  # this task only
            assert not loop._system_scope._children
            assert dict(scope._children or {}) == before
            assert plait.current_time() == 0

        vrun(main)
        assert sorted(set(log)) == ["a done", "b cancelled"]

    def test_abandoned_iterator_reports_late_errors(self) -> None:
        reported: list[BaseException] = []

        async def fails_on_cancel() -> None:
            try:
                await plait.sleep_forever()
            finally:
                raise ValueError("failed while cancelled")

        async def main() -> None:
            plait.lowlevel.current_loop().set_exception_handler(
                lambda loop, context: reported.append(context["exception"])
            )
            async for _ in plait.as_completed([work([], 0, "a"), fails_on_cancel()]):
                break
            gc.collect()
            await wait_all_tasks_blocked()

        vrun(main)
        assert [str(e) for e in reported] == ["failed while cancelled"]

    def test_aclose_raises_errors_nobody_consumed(self) -> None:
        log: list[str] = []

        async def main() -> None:
            it = plait.as_completed(
                [work(log, 1, "a"), fail_after_sleep(2, ValueError("unseen")), work(log, 9, "c")]
            )
            async for t in it:
                assert t.result() == "a"
                break
            await plait.sleep(5)  # the failure arrives, nobody takes it
            with pytest.raises(ExceptionGroup) as info:
                await it.aclose()
            assert [str(e) for e in info.value.exceptions] == ["unseen"]
            assert sorted(log) == ["a done", "c cancelled"]

        vrun(main)

    def test_two_tasks_iterating_one_iterator(self) -> None:
        async def main() -> list[Any]:
            got = []
            it = plait.as_completed([work([], 1, "a")])

            async def consume() -> None:
                got.extend([t.result() async for t in it])

            async with plait.TaskGroup() as tg:
                tg.spawn(consume)
                await wait_all_tasks_blocked()
                with pytest.raises(plait.BusyResourceError):
                    await anext(it)
            return got

        assert vrun(main) == ["a"]
