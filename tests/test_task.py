"""Tests for plait.Task, plait.current_task, contextvars, @plait.coroutine and fairness."""

from __future__ import annotations

import contextvars
import itertools
from typing import Any

import pytest

import plait
from helpers import vrun
from plait.lowlevel import Abort, reschedule, wait_task_rescheduled
from plait.testing import MockClock, wait_all_tasks_blocked


async def value_after(seconds: float, value: Any) -> Any:
    await plait.sleep(seconds)
    return value


async def fail_after_sleep(seconds: float, exc: BaseException) -> None:
    await plait.sleep(seconds)
    raise exc


class TestTask:
    def test_default_name_is_the_function_qualname(self) -> None:
        async def worker() -> None:
            await plait.sleep(0)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t1 = tg.spawn(worker)
                t2 = tg.spawn(worker())
                t3 = tg.spawn(worker, name="custom")
            assert t1.name == worker.__qualname__
            assert t2.name == worker.__qualname__
            assert t3.name == "custom"

        vrun(main)

    def test_ids_are_unique(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tasks = [tg.spawn(plait.sleep, 0) for _ in range(10)]
            ids = [t.id for t in tasks]
            assert len(set(ids)) == 10
            assert plait.current_task().id not in ids

        vrun(main)

    def test_done_result_exception(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 1, "v")
                assert not t.done()
                with pytest.raises(RuntimeError, match="not finished"):
                    t.result()
                with pytest.raises(RuntimeError, match="not finished"):
                    t.exception()
            assert t.done()
            assert not t.cancelled()
            assert t.result() == "v"
            assert t.exception() is None

        vrun(main)

    def test_failed_task_result_reraises(self) -> None:
        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    t = tg.spawn(fail_after_sleep, 1, ValueError("bad"))
            assert t.done()
            assert not t.cancelled()
            err = t.exception()
            assert isinstance(err, ValueError)
            assert info.value.exceptions == (err,)
            with pytest.raises(ValueError, match="bad") as raised:
                t.result()
            assert raised.value is err

        vrun(main)

    def test_cancelled_task(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 10, "never")
                other = tg.spawn(value_after, 2, "other")
                await plait.sleep(1)
                t.cancel()
                t.cancel()  # idempotent
            assert t.done()
            assert t.cancelled()
            assert isinstance(t.exception(), plait.Cancelled)
            with pytest.raises(plait.Cancelled):
                t.result()
            assert other.result() == "other"  # the group was not disturbed
            assert not tg.cancel_scope.cancel_called
            t.cancel()  # cancelling a finished task does nothing
            assert plait.current_time() == 2

        vrun(main)

    def test_await_task_joins(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 3, "joined")
                assert await t == "joined"
                assert plait.current_time() == 3
                # joining a finished task returns at once
                assert await t == "joined"
                assert plait.current_time() == 3

        vrun(main)

    def test_several_joiners(self) -> None:
        got: list[Any] = []

        async def joiner(task: plait.Task) -> None:
            got.append(await task)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 1, 42)
                for _ in range(3):
                    tg.spawn(joiner, t)
                got.append(await t)

        vrun(main)
        assert got == [42, 42, 42, 42]

    def test_join_failed_and_cancelled_tasks(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 10, None)
                await plait.sleep(1)
                t.cancel()
                with pytest.raises(plait.Cancelled):
                    await t
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    bad = tg.spawn(fail_after_sleep, 1, KeyError("k"))
                    with pytest.raises(KeyError):
                        await bad
            assert [type(e) for e in info.value.exceptions] == [KeyError]

        vrun(main)

    def test_cancelling_a_join_leaves_the_task_alone(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 5, "still here")
                with plait.move_on_after(1):
                    await t
                assert not t.done()
            assert t.result() == "still here"

        vrun(main)

    def test_task_cannot_join_itself(self) -> None:
        async def selfish() -> None:
            with pytest.raises(RuntimeError, match="itself"):
                await plait.current_task()

        vrun(selfish)

    def test_add_done_callback(self) -> None:
        calls: list[tuple[str, plait.Task]] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 1, None)
                t.add_done_callback(lambda task: calls.append(("before", task)))
                await t
                await wait_all_tasks_blocked()
                assert calls == [("before", t)]
                t.add_done_callback(lambda task: calls.append(("after", task)))
                assert len(calls) == 1  # not called synchronously
                await wait_all_tasks_blocked()
            assert calls == [("before", t), ("after", t)]

        vrun(main)

    def test_done_callback_for_failed_and_cancelled_tasks(self) -> None:
        seen: list[plait.Task] = []

        async def main() -> None:
            with pytest.raises(ExceptionGroup):
                async with plait.TaskGroup() as tg:
                    victim = tg.spawn(value_after, 10, None)
                    victim.add_done_callback(seen.append)
                    bad = tg.spawn(fail_after_sleep, 1, ValueError())
                    bad.add_done_callback(seen.append)
            await wait_all_tasks_blocked()
            assert sorted(t.id for t in seen) == sorted([victim.id, bad.id])

        vrun(main)

    def test_repr(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(value_after, 1, None, name="reprtask")
                r = repr(t)
                assert "reprtask" in r
                assert str(t.id) in r
            assert "reprtask" in repr(t)
            assert repr(t) != r  # the state changed

        vrun(main)


class TestCurrentTask:
    def test_current_task_inside_tasks(self) -> None:
        seen: list[plait.Task] = []

        async def child() -> None:
            seen.append(plait.current_task())
            await plait.sleep(0)
            seen.append(plait.current_task())

        async def main() -> None:
            me = plait.current_task()
            assert isinstance(me, plait.Task)
            async with plait.TaskGroup() as tg:
                t = tg.spawn(child)
            assert seen == [t, t]
            assert plait.current_task() is me

        vrun(main)

    def test_main_task_name(self) -> None:
        async def main() -> str:
            return plait.current_task().name

        assert vrun(main) == main.__qualname__

    def test_outside_plait_run(self) -> None:
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            plait.current_task()


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


class TestContextVars:
    def test_child_sees_parent_value_set_before_spawn(self) -> None:
        async def child() -> str:
            return VAR.get()

        async def main() -> None:
            VAR.set("parent")
            async with plait.TaskGroup() as tg:
                t = tg.spawn(child)
            assert t.result() == "parent"

        vrun(main)

    def test_context_is_copied_at_spawn_time(self) -> None:
        async def child() -> str:
            await plait.sleep(1)
            return VAR.get()

        async def main() -> None:
            VAR.set("before")
            async with plait.TaskGroup() as tg:
                t = tg.spawn(child)
                VAR.set("after")
            assert t.result() == "before"
            assert VAR.get() == "after"

        vrun(main)

    def test_child_changes_stay_in_the_child(self) -> None:
        seen: dict[str, str] = {}

        async def setter() -> None:
            VAR.set("child")
            await plait.sleep(1)
            seen["setter"] = VAR.get()

        async def sibling() -> None:
            await plait.sleep(2)
            seen["sibling"] = VAR.get()

        async def main() -> None:
            VAR.set("parent")
            async with plait.TaskGroup() as tg:
                tg.spawn(setter)
                tg.spawn(sibling)
                await plait.sleep(3)
                seen["parent during"] = VAR.get()
            seen["parent after"] = VAR.get()

        vrun(main)
        assert seen == {
            "setter": "child",
            "sibling": "parent",
            "parent during": "parent",
            "parent after": "parent",
        }

    def test_main_task_starts_with_a_copy_of_the_callers_context(self) -> None:
        async def main() -> str:
            seen = VAR.get()
            VAR.set("inside")
            return seen

        token = VAR.set("caller")
        try:
            assert vrun(main) == "caller"
            assert VAR.get() == "caller"  # the main task's set() did not leak out
        finally:
            VAR.reset(token)

    def test_started_task_keeps_the_callers_context(self) -> None:
        async def server(*, task_status: plait.TaskStatus) -> None:
            task_status.started(VAR.get())
            await plait.sleep(1)

        async def main() -> Any:
            VAR.set("starter")
            async with plait.TaskGroup() as tg:
                return await tg.start(server)

        assert vrun(main) == "starter"


@plait.coroutine
def gen_sleep_then(seconds: float, value: Any) -> Any:
    yield from plait.sleep(seconds)
    return value


@plait.coroutine
def gen_outer() -> Any:
    a = yield from gen_sleep_then(1, 20)
    b = yield from gen_sleep_then(1, 1)
    return a + b


class TestGeneratorCoroutines:
    def test_yield_from_chains_return_values(self) -> None:
        async def main() -> Any:
            value = await gen_outer()
            return value, plait.current_time()

        assert vrun(main) == (21, 2)

    def test_run_directly(self) -> None:
        assert vrun(gen_outer) == 21
        assert vrun(gen_sleep_then, 0, "x") == "x"

    def test_yield_from_sleep_returns_none(self) -> None:
        @plait.coroutine
        def gen() -> Any:
            x = yield from plait.sleep(0)
            y = yield from plait.sleep(1)
            return x, y

        assert vrun(gen) == (None, None)

    def test_values_sent_in_arrive(self) -> None:
        @plait.coroutine
        def receiver(slot: list[plait.Task]) -> Any:
            slot.append(plait.current_task())
            value = yield from wait_task_rescheduled(lambda _: Abort.SUCCEEDED)
            return value

        async def main() -> Any:
            slot: list[plait.Task] = []
            async with plait.TaskGroup() as tg:
                t = tg.spawn(receiver, slot)
                await wait_all_tasks_blocked()
                reschedule(slot[0], "hello")
            return t.result()

        assert vrun(main) == "hello"

    def test_bare_yield_is_a_checkpoint(self) -> None:
        log: list[str] = []

        @plait.coroutine
        def yielder(name: str) -> Any:
            for _ in range(3):
                log.append(name)
                yield

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(yielder, "a")
                tg.spawn(yielder, "b")

        vrun(main)
        assert log.count("a") == log.count("b") == 3
        assert log[:2] != ["a", "a"]  # a yielded before running again

    def test_bare_yield_is_cancellable(self) -> None:
        log: list[str] = []

        @plait.coroutine
        def spin() -> Any:
            with plait.CancelScope() as scope:
                scope.cancel()
                try:
                    yield
                except plait.Cancelled:
                    log.append("cancelled")
                    raise
                log.append("not reached")
            return scope.cancelled_caught

        assert vrun(spin) is True
        assert log == ["cancelled"]

    def test_spawned_and_awaited_from_async_functions(self) -> None:
        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                t1 = tg.spawn(gen_sleep_then, 2, "fn")
                t2 = tg.spawn(gen_sleep_then(1, "coro"))
                assert await t2 == "coro"
            return t1.result(), await gen_sleep_then(0, "awaited")

        assert vrun(main) == ("fn", "awaited")

    def test_wraps_metadata(self) -> None:
        assert gen_outer.__name__ == "gen_outer"

    def test_rejects_non_generator_functions(self) -> None:
        def plain() -> int:
            return 1

        with pytest.raises(TypeError, match="generator function"):
            plait.coroutine(plain)

    def test_rejects_async_functions(self) -> None:
        async def already() -> None:
            pass

        with pytest.raises(TypeError, match="async function") as info:
            plait.coroutine(already)
        assert "already" in str(info.value)


class TestScheduling:
    def test_two_checkpointing_tasks_alternate(self) -> None:
        log: list[str] = []

        async def worker(name: str) -> None:
            for _ in range(5):
                log.append(name)
                await plait.checkpoint()

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(worker, "a")
                tg.spawn(worker, "b")

        vrun(main)
        assert len(log) == 10
        assert all(x != y for x, y in itertools.pairwise(log)), log

    def test_call_soon_runs_between_task_steps(self) -> None:
        log: list[str] = []

        async def worker() -> None:
            loop.call_soon(log.append, "callback")
            for i in range(5):
                log.append(f"step {i}")
                await plait.checkpoint()

        with plait.Loop(clock=MockClock(autojump_threshold=0)) as loop:
            loop.run_until_complete(worker)
        # The callback neither runs inside the synchronous part of the task, nor waits
        # until the task has finished its checkpoints.
        assert log.index("callback") > log.index("step 0")
        assert log.index("callback") < log.index("step 4")

    def test_spawned_child_runs_at_the_next_checkpoint(self) -> None:
        log: list[str] = []

        async def child() -> None:
            log.append("child")

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(child)
                log.append("after spawn")  # spawn is not a checkpoint
                await plait.checkpoint()
                log.append("after checkpoint")

        vrun(main)
        assert log[0] == "after spawn"
        assert log.index("child") < log.index("after checkpoint")


def tb_length(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


class TestRegressions:
    @pytest.mark.parametrize("how", ["task.cancel", "group", "outer scope"])
    def test_a_task_ended_by_any_cancellation_is_cancelled(self, how: str) -> None:
        async def main() -> None:
            with plait.CancelScope() as outer:
                async with plait.TaskGroup() as tg:
                    t = tg.spawn(plait.sleep_forever)
                    await wait_all_tasks_blocked()
                    if how == "task.cancel":
                        t.cancel()
                    elif how == "group":
                        tg.cancel_scope.cancel()
                    else:
                        outer.cancel()
            assert t.cancelled()
            assert isinstance(t.exception(), plait.TaskCancelled)
            with pytest.raises(plait.TaskCancelled):
                t.result()
            with pytest.raises(plait.TaskCancelled):
                await t

        vrun(main)

    def test_task_cancelled_is_never_caught_by_a_cancel_scope(self) -> None:
        assert issubclass(plait.TaskCancelled, plait.Cancelled)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(plait.sleep_forever)
                await wait_all_tasks_blocked()
                t.cancel()
            with pytest.raises(plait.TaskCancelled):
                with plait.CancelScope() as scope:
                    scope.cancel()
                    t.result()
            assert not scope.cancelled_caught

        vrun(main)

    def test_joining_a_cancelled_task_fails_the_joiner(self) -> None:
        # The joiner did not end by its own cancellation: it failed with TaskCancelled.
        async def join(task: plait.Task) -> Any:
            return await task

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                victim = tg.spawn(plait.sleep_forever)
                await wait_all_tasks_blocked()
                victim.cancel()
            with pytest.raises(BaseExceptionGroup):
                async with plait.TaskGroup() as tg:
                    joiner = tg.spawn(join, victim)
            assert not joiner.cancelled()
            assert isinstance(joiner.exception(), plait.TaskCancelled)

        vrun(main)

    def test_joining_a_failed_task_many_times_does_not_grow_the_traceback(self) -> None:
        async def main() -> list[int]:
            with pytest.raises(ExceptionGroup):
                async with plait.TaskGroup() as tg:
                    t = tg.spawn(fail_after_sleep, 1, ValueError("bad"))
            lengths = []
            for _ in range(50):
                with pytest.raises(ValueError):
                    t.result()
                with pytest.raises(ValueError):
                    await t
                lengths.append(tb_length(t.exception()))
            return lengths

        lengths = vrun(main)
        assert lengths == [lengths[0]] * 50
