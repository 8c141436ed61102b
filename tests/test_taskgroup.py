"""Tests for plait.TaskGroup: spawning, error propagation, start()/task_status, closing."""

from __future__ import annotations

from typing import Any

import pytest

import plait
from helpers import vrun
from plait.testing import wait_all_tasks_blocked


async def sleeper(log: list[str], name: str, seconds: float) -> str:
    try:
        await plait.sleep(seconds)
    except plait.Cancelled:
        log.append(f"{name} cancelled")
        raise
    log.append(f"{name} done")
    return name


async def fail_after_sleep(seconds: float, exc: BaseException) -> None:
    await plait.sleep(seconds)
    raise exc


class TestSpawn:
    def test_spawn_returns_task_and_block_waits_for_children(self) -> None:
        log: list[str] = []

        async def main() -> float:
            async with plait.TaskGroup() as tg:
                t1 = tg.spawn(sleeper, log, "a", 2)
                t2 = tg.spawn(sleeper, log, "b", 1)
                assert isinstance(t1, plait.Task)
                assert isinstance(t2, plait.Task)
                assert not t1.done()
            assert t1.done() and t2.done()
            assert t1.result() == "a"
            assert t2.result() == "b"
            return plait.current_time()

        assert vrun(main) == 2
        assert log == ["b done", "a done"]

    def test_spawn_coroutine_object(self) -> None:
        log: list[str] = []

        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(sleeper(log, "c", 1))
            return t.result()

        assert vrun(main) == "c"

    def test_name(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                t = tg.spawn(plait.sleep, 0, name="napper")
                assert t.name == "napper"

        vrun(main)

    def test_children_can_spawn_siblings_while_parent_waits(self) -> None:
        log: list[str] = []

        async def main() -> float:
            async with plait.TaskGroup() as tg:

                async def first() -> None:
                    await plait.sleep(1)
                    # The parent is already parked in __aexit__ by now.
                    tg.spawn(sleeper, log, "late", 1)

                tg.spawn(first)
            assert log == ["late done"]
            return plait.current_time()

        assert vrun(main) == 2

    def test_empty_group(self) -> None:
        async def main() -> str:
            async with plait.TaskGroup():
                pass
            return "ok"

        assert vrun(main) == "ok"


class TestErrors:
    def test_failing_child_cancels_siblings_and_body(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(sleeper, log, "sibling", 10)
                    tg.spawn(fail_after_sleep, 1, ValueError("boom"))
                    try:
                        await plait.sleep(10)
                    except plait.Cancelled:
                        log.append("body cancelled")
                        raise
            assert plait.current_time() == 1
            [err] = info.value.exceptions
            assert isinstance(err, ValueError)
            assert str(err) == "boom"

        vrun(main)
        assert sorted(log) == ["body cancelled", "sibling cancelled"]

    def test_two_failures_both_reach_the_group(self) -> None:
        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(fail_after_sleep, 1, ValueError("one"))
                    tg.spawn(fail_after_sleep, 1, KeyError("two"))
            kinds = sorted(type(e).__name__ for e in info.value.exceptions)
            assert kinds == ["KeyError", "ValueError"]

        vrun(main)

    def test_error_raised_while_handling_cancellation_is_kept(self) -> None:
        async def cleanup_fails() -> None:
            try:
                await plait.sleep_forever()
            finally:
                raise KeyError("cleanup")

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(cleanup_fails)
                    tg.spawn(fail_after_sleep, 1, ValueError("first"))
            kinds = sorted(type(e).__name__ for e in info.value.exceptions)
            assert kinds == ["KeyError", "ValueError"]

        vrun(main)

    def test_body_error_cancels_children_and_is_grouped(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(sleeper, log, "child", 10)
                    await plait.sleep(1)
                    raise ValueError("body")
            [err] = info.value.exceptions
            assert isinstance(err, ValueError)
            assert plait.current_time() == 1

        vrun(main)
        assert log == ["child cancelled"]

    def test_body_and_child_errors_together(self) -> None:
        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(fail_after_sleep, 0, KeyError("child"))
                    await plait.sleep(1)  # cancelled by the child's failure
            [err] = info.value.exceptions
            assert isinstance(err, KeyError)

            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(fail_after_sleep, 1, KeyError("child"))
                    raise ValueError("body")
            kinds = [type(e).__name__ for e in info.value.exceptions]
            assert kinds == ["ValueError"]  # the child was cancelled before failing

        vrun(main)

    def test_single_error_is_still_grouped(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(fail_after_sleep, 0, ValueError("alone"))

        with pytest.raises(ExceptionGroup) as info:
            vrun(main)
        assert len(info.value.exceptions) == 1
        assert isinstance(info.value.exceptions[0], ValueError)

    def test_except_star_works(self) -> None:
        caught: list[BaseException] = []

        async def main() -> None:
            try:
                async with plait.TaskGroup() as tg:
                    tg.spawn(fail_after_sleep, 0, ValueError("x"))
            except* ValueError as group:
                caught.extend(group.exceptions)

        vrun(main)
        assert [type(e) for e in caught] == [ValueError]

    def test_nested_groups_nest_error_groups(self) -> None:
        log: list[str] = []

        async def inner() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(fail_after_sleep, 1, ValueError("deep"))
                tg.spawn(sleeper, log, "inner sibling", 10)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(inner)
                tg.spawn(sleeper, log, "outer sibling", 10)

        with pytest.raises(ExceptionGroup) as info:
            vrun(main)
        [middle] = info.value.exceptions
        assert isinstance(middle, ExceptionGroup)
        [leaf] = middle.exceptions
        assert isinstance(leaf, ValueError)
        assert sorted(log) == ["inner sibling cancelled", "outer sibling cancelled"]

    @pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
    def test_keyboard_interrupt_and_system_exit_propagate_bare(
        self, exc_type: type[BaseException]
    ) -> None:
        log: list[str] = []

        async def sibling() -> None:
            try:
                await plait.sleep_forever()
            finally:
                log.append("sibling finally")

        async def nested() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sibling)
                tg.spawn(fail_after_sleep, 1, exc_type())

        async def main() -> None:
            try:
                async with plait.TaskGroup() as tg:
                    tg.spawn(sibling)
                    tg.spawn(nested)
            finally:
                log.append("main finally")

        with pytest.raises(exc_type) as info:
            vrun(main)
        assert type(info.value) is exc_type
        assert log == ["sibling finally", "sibling finally", "main finally"]

    def test_keyboard_interrupt_in_body_propagates_bare(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sleeper, log, "child", 10)
                await plait.sleep(1)
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            vrun(main)
        assert log == ["child cancelled"]


class TestLifecycle:
    def test_spawn_after_close(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                pass
            with pytest.raises(RuntimeError, match="already finished"):
                tg.spawn(plait.sleep, 0)
            with pytest.raises(RuntimeError, match="already finished"):
                await tg.start(plait.sleep, 0)

        vrun(main)

    def test_spawn_before_enter(self) -> None:
        async def main() -> None:
            tg = plait.TaskGroup()
            with pytest.raises(RuntimeError, match="async with") as info:
                tg.spawn(plait.sleep, 0)
            assert "entered" in str(info.value)

        vrun(main)

    def test_enter_twice(self) -> None:
        async def main() -> None:
            tg = plait.TaskGroup()
            async with tg:
                with pytest.raises(RuntimeError, match="once"):
                    async with tg:
                        pass
            with pytest.raises(RuntimeError, match="once"):
                async with tg:
                    pass

        vrun(main)

    def test_cancel_scope_cancels_children_and_body(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(sleeper, log, "a", 10)
                tg.spawn(sleeper, log, "b", 10)
                await plait.sleep(1)
                tg.cancel_scope.cancel()
                try:
                    await plait.sleep(10)
                except plait.Cancelled:
                    log.append("body cancelled")
                    raise
            assert tg.cancel_scope.cancel_called
            assert tg.cancel_scope.cancelled_caught
            assert plait.current_time() == 1

        vrun(main)
        assert sorted(log) == ["a cancelled", "b cancelled", "body cancelled"]

    def test_outer_scope_cancelled_while_group_waits(self) -> None:
        log: list[str] = []

        async def main() -> None:
            with plait.move_on_after(1) as scope:
                async with plait.TaskGroup() as tg:
                    tg.spawn(sleeper, log, "a", 10)
                    tg.spawn(sleeper, log, "b", 10)
                log.append("not reached")
            assert scope.cancelled_caught
            assert plait.current_time() == 1

        vrun(main)
        assert sorted(log) == ["a cancelled", "b cancelled"]

    def test_outer_cancel_with_a_child_error_keeps_the_error(self) -> None:
        async def cleanup_fails() -> None:
            try:
                await plait.sleep_forever()
            finally:
                raise KeyError("cleanup")

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                with plait.move_on_after(1):
                    async with plait.TaskGroup() as tg:
                        tg.spawn(cleanup_fails)
            assert [type(e) for e in info.value.exceptions] == [KeyError]

        vrun(main)


async def ready_then_sleep(
    log: list[str], value: Any, *, task_status: plait.TaskStatus = plait.TASK_STATUS_IGNORED
) -> str:
    await plait.sleep(1)
    task_status.started(value)
    try:
        await plait.sleep(1)
    except plait.Cancelled:
        log.append("started child cancelled")
        raise
    log.append("started child done")
    return "finished"


class TestStart:
    def test_start_returns_the_started_value_and_child_keeps_running(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                value = await tg.start(ready_then_sleep, log, "ready")
                assert value == "ready"
                assert plait.current_time() == 1
                assert log == []
            assert plait.current_time() == 2

        vrun(main)
        assert log == ["started child done"]

    def test_started_child_belongs_to_the_group(self) -> None:
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                await tg.start(ready_then_sleep, log, None)
                tg.cancel_scope.cancel()
            assert plait.current_time() == 1

        vrun(main)
        assert log == ["started child cancelled"]

    def test_started_without_value_returns_none(self) -> None:
        async def server(*, task_status: plait.TaskStatus) -> None:
            task_status.started()

        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                return await tg.start(server)

        assert vrun(main) is None

    def test_error_before_started_propagates_out_of_start(self) -> None:
        async def broken(*, task_status: plait.TaskStatus) -> None:
            await plait.sleep(1)
            raise ValueError("not ready")

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                # "Until then the child runs as if in the caller (its error is raised
                # here)": the error comes out of start() itself, as it is.
                with pytest.raises(ValueError, match="not ready"):
                    await tg.start(broken)

        vrun(main)

    def test_error_after_started_goes_to_the_group(self) -> None:
        async def broken(*, task_status: plait.TaskStatus) -> None:
            task_status.started(1)
            await plait.sleep(1)
            raise ValueError("later")

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    assert await tg.start(broken) == 1
                    await plait.sleep(5)
            assert [type(e) for e in info.value.exceptions] == [ValueError]
            assert plait.current_time() == 1

        vrun(main)

    def test_returning_without_started(self) -> None:
        async def lazy(*, task_status: plait.TaskStatus) -> None:
            await plait.sleep(0)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                with pytest.raises(RuntimeError, match=r"started\(\)") as info:
                    await tg.start(lazy)
            assert "lazy" in str(info.value)

        vrun(main)

    def test_started_twice(self) -> None:
        errors: list[BaseException] = []

        async def twice(*, task_status: plait.TaskStatus) -> None:
            task_status.started(1)
            try:
                task_status.started(2)
            except RuntimeError as exc:
                errors.append(exc)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                assert await tg.start(twice) == 1

        vrun(main)
        [err] = errors
        assert "already" in str(err)

    def test_cancelling_the_caller_before_started_cancels_the_child(self) -> None:
        log: list[str] = []

        async def slow(*, task_status: plait.TaskStatus) -> None:
            try:
                await plait.sleep(5)
            except plait.Cancelled:
                log.append("child cancelled")
                raise
            task_status.started()
            log.append("started")

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                with plait.move_on_after(1) as scope:
                    await tg.start(slow)
                assert scope.cancelled_caught
                assert plait.current_time() == 1
                await wait_all_tasks_blocked()
            assert not tg.cancel_scope.cancel_called

        vrun(main)
        assert log == ["child cancelled"]

    def test_task_status_ignored_allows_direct_calls(self) -> None:
        log: list[str] = []

        async def main() -> Any:
            assert repr(plait.TASK_STATUS_IGNORED)  # printable default
            result = await ready_then_sleep(log, "unused")
            async with plait.TaskGroup() as tg:
                t = tg.spawn(ready_then_sleep, log, "unused")
            return result, t.result()

        assert vrun(main) == ("finished", "finished")
        assert log == ["started child done", "started child done"]

    def test_start_name(self) -> None:
        names: list[str] = []

        async def server(*, task_status: plait.TaskStatus) -> None:
            names.append(plait.current_task().name)
            task_status.started()

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                await tg.start(server, name="srv")

        vrun(main)
        assert names == ["srv"]


class TestRegressions:
    def test_child_joining_a_task_cancelled_elsewhere_fails_the_group(self) -> None:
        # The joiner's TaskCancelled is an error like any other: it must not be taken
        # for the group's own cancellation and swallowed.
        log: list[str] = []

        async def main() -> None:
            async with plait.TaskGroup() as outer:
                victim = outer.spawn(plait.sleep_forever)
                await wait_all_tasks_blocked()
                victim.cancel()

                async def joiner() -> None:
                    await victim

                # TaskCancelled is a BaseException: a BaseExceptionGroup.
                with pytest.raises(BaseExceptionGroup) as info:
                    async with plait.TaskGroup() as tg:
                        tg.spawn(joiner)
                        tg.spawn(sleeper, log, "sibling", 1)
                assert [type(e) for e in info.value.exceptions] == [plait.TaskCancelled]

        vrun(main)
        assert log == ["sibling cancelled"]

    def test_spawn_after_the_last_child_released_the_parent(self) -> None:
        # The group closes when its parent is released, not when the parent runs again:
        # a task spawning in between gets an error instead of an orphan child.
        log: list[str] = []
        box: list[plait.TaskGroup] = []

        async def late_child() -> None:
            log.append("late child ran")

        async def quick() -> None:
            pass

        async def spawner() -> None:
            with pytest.raises(RuntimeError, match="already finished"):
                box[0].spawn(late_child)
            log.append("spawn refused")

        async def owner() -> None:
            async with plait.TaskGroup() as g:
                box.append(g)
                g.spawn(quick)  # exits in its first step
            log.append("owner left the block")

        async def main() -> None:
            async with plait.TaskGroup() as outer:
                outer.spawn(owner)
                await plait.checkpoint()  # owner enters its block and spawns a child
                outer.spawn(spawner)  # runs right after that child has exited

        vrun(main)
        assert log == ["spawn refused", "owner left the block"]

    def test_pending_start_from_another_task_keeps_the_group_open(self) -> None:
        log: list[str] = []

        async def server(task_status: Any = plait.TASK_STATUS_IGNORED) -> None:
            await plait.sleep(2)
            task_status.started("port 80")
            await plait.sleep(1)
            log.append(f"server done at {plait.current_time()}")

        async def main() -> None:
            box: list[plait.TaskGroup] = []

            async def starter() -> None:
                await plait.sleep(0.5)
                log.append(f"start -> {await box[0].start(server)}")

            async with plait.TaskGroup() as outer:
                outer.spawn(starter)
                async with plait.TaskGroup() as g:
                    box.append(g)
                    g.spawn(plait.sleep, 1)  # g's own children are done at 1
                log.append(f"g exited at {plait.current_time()}")

        vrun(main)
        assert log == ["start -> port 80", "server done at 3.5", "g exited at 3.5"]

    def test_start_of_a_task_cancelled_before_started(self) -> None:
        async def server(task_status: Any = plait.TASK_STATUS_IGNORED) -> None:
            plait.current_task().cancel()
            await plait.sleep(1)
            task_status.started()

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                with pytest.raises(RuntimeError, match="cancelled"):
                    await tg.start(server)

        vrun(main)

    def test_started_task_keeps_its_own_cancellation(self) -> None:
        # Task.cancel() before started(), started() in a shield: the value is delivered,
        # and the task, now in the group, is cancelled at its next checkpoint.
        tasks: list[plait.Task] = []

        async def server(task_status: Any = plait.TASK_STATUS_IGNORED) -> None:
            me = plait.current_task()
            tasks.append(me)
            me.cancel()
            with plait.CancelScope(shield=True):
                await plait.sleep(1)
                task_status.started("v")
            await plait.sleep(1)
            pytest.fail("not cancelled")

        async def main() -> Any:
            async with plait.TaskGroup() as tg:
                value = await tg.start(server)
            return value, plait.current_time(), tg.cancel_scope.cancel_called

        assert vrun(main) == ("v", 1.0, False)
        assert tasks[0].cancelled()

    def test_body_and_child_errors_have_no_misleading_context(self) -> None:
        async def bad() -> None:
            raise KeyError("child")

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with plait.TaskGroup() as tg:
                    tg.spawn(bad)
                    raise ValueError("body")
            group = info.value
            assert [type(e) for e in group.exceptions] == [ValueError, KeyError]
            assert group.__context__ is None

        vrun(main)

    def test_outer_cancellation_does_not_mark_the_groups_own_scope(self) -> None:
        async def main() -> Any:
            with plait.move_on_after(1) as outer:
                async with plait.TaskGroup() as tg:
                    tg.spawn(plait.sleep, 5)
            return outer.cancelled_caught, tg.cancel_scope.cancel_called

        assert vrun(main) == (True, False)
