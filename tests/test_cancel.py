"""Cancellation: CancelScope, Task.cancel, shields, and cancelling every kind of wait.

Every test runs on a MockClock with autojump_threshold=0: time-based assertions are exact
and "later" means "after wait_all_tasks_blocked", never a real sleep.
"""

from __future__ import annotations

import math
import socket

import pytest

import plait
from helpers import vrun as run
from plait.lowlevel import Abort, reschedule, wait_readable, wait_task_rescheduled, wait_writable
from plait.testing import MockClock, wait_all_tasks_blocked


def run_child(child, act=None):
    """Run ``child()`` in a TaskGroup; once every task is blocked, call ``act(tg, task)``.
    Returns the child's Task after the group has exited."""

    async def main():
        async with plait.TaskGroup() as tg:
            task = tg.spawn(child)
            if act is not None:
                await wait_all_tasks_blocked()
                act(tg, task)
        return task

    return run(main)


def cancel_task(_, task):
    task.cancel()


def cancel_group(tg, _):
    tg.cancel_scope.cancel()


class TestCancelScope:
    def test_cancel_before_entering(self):
        assert not issubclass(plait.Cancelled, Exception)

        async def main():
            scope = plait.CancelScope()
            scope.cancel()
            assert scope.cancel_called and not scope.cancelled_caught
            with scope:
                try:
                    await plait.checkpoint()
                except Exception:
                    pytest.fail("'except Exception' caught Cancelled")
                pytest.fail("not cancelled")
            return scope.cancelled_caught

        assert run(main) is True

    def test_cancel_inside_and_after_exit(self):
        async def main():
            with plait.CancelScope() as quiet:
                await plait.sleep(1)
            before = (quiet.cancel_called, quiet.cancelled_caught, quiet.deadline)
            quiet.cancel()  # after exit: a no-op for the code around it
            with plait.CancelScope() as scope:
                scope.cancel()
                scope.cancel()  # idempotent
                await plait.sleep(1)
            return before, scope.cancel_called, scope.cancelled_caught, plait.current_time()

        assert run(main) == ((False, False, math.inf), True, True, 1.0)


class TestDeadline:
    def test_deadline_fires(self):
        async def main():
            with plait.CancelScope(deadline=plait.current_time() + 4) as scope:
                assert scope.deadline == 4.0
                await plait.sleep_forever()
            late = plait.CancelScope()
            late.deadline = 6  # set before entering
            with late:
                await plait.sleep_forever()
            return scope.cancelled_caught, late.cancelled_caught, plait.current_time()

        assert run(main) == (True, True, 6.0)

    @pytest.mark.parametrize(
        ("first", "moved", "end"),
        [
            (10, 3, (True, 3.0)),
            (2, 8, (True, 8.0)),
            (2, math.inf, (False, 50.0)),
            (math.inf, 0.5, (True, 1.0)),  # into the past: cancelled at once
        ],
        ids=["earlier", "later", "inf", "past"],
    )
    def test_moved_while_running(self, first, moved, end):
        async def main():
            with plait.CancelScope(deadline=first) as scope:
                await plait.sleep(1)
                scope.deadline = moved
                assert scope.deadline == moved
                await plait.sleep(49)  # the old deadline must not fire
            return scope.cancel_called, plait.current_time()

        assert run(main) == end

    def test_bad_deadlines(self):
        with pytest.raises(ValueError, match="deadline"):
            plait.CancelScope(deadline=float("nan"))
        with pytest.raises(TypeError):
            plait.CancelScope(deadline="soon")
        scope = plait.CancelScope()
        with pytest.raises(ValueError, match="deadline"):
            scope.deadline = float("nan")
        assert scope.deadline == math.inf

    def test_deadline_passed_during_busy_code_cancels_first_checkpoint(self):
        # A task that runs past its deadline without a checkpoint (here: virtual time
        # jumps while it computes) must be cancelled at its *first* checkpoint.
        clock = MockClock(autojump_threshold=0)

        async def main():
            log = []
            with plait.move_on_after(1) as scope:
                clock.jump(2)  # "busy" code: time passes, no checkpoint
                await plait.checkpoint()
                log.append("first checkpoint did not raise")
                await plait.checkpoint()
            return log, scope.cancelled_caught

        assert run(main, clock=clock) == ([], True)


class TestLevelTriggered:
    def test_every_checkpoint_raises_again(self):
        async def main():
            raised = []
            with plait.CancelScope() as scope:
                scope.cancel()
                for wait in (plait.checkpoint, lambda: plait.sleep(0), lambda: plait.sleep(9)):
                    try:
                        await wait()
                    except plait.Cancelled:
                        raised.append(True)
            # The body swallowed every Cancelled, so the scope caught nothing.
            return raised, scope.cancelled_caught, plait.current_time()

        assert run(main) == ([True, True, True], False, 0.0)

    def test_loop_without_checkpoints_is_cancelled_at_its_first_checkpoint(self):
        progress = []

        async def busy(scope_box):
            with plait.CancelScope() as scope:
                scope_box.append(scope)
                await plait.sleep(1)
                for i in range(10_000):  # no checkpoint in here
                    progress.append(i)
                await plait.checkpoint()
                progress.append("after checkpoint")
            return scope.cancelled_caught

        async def main():
            box = []
            async with plait.TaskGroup() as tg:
                task = tg.spawn(busy, box)
                await plait.sleep(1)  # main's timer is older: main wakes first, busy
                # is ready (not parked) behind it when its scope is cancelled
                box[0].cancel()
            assert len(progress) == 10_000
            return task.result()

        assert run(main) is True


class TestNesting:
    @pytest.mark.parametrize(
        ("outer_s", "inner_s", "expected"),
        [(1, 5, (False, True, [], 1.0)), (5, 1, (True, True, [1.0], 5.0))],
        ids=["outer-fires-first", "inner-fires-first"],
    )
    def test_nested_deadlines(self, outer_s, inner_s, expected):
        # Only the scope whose deadline fired catches: an inner scope never swallows
        # the outer scope's cancellation.
        async def main():
            after_inner = []
            with plait.move_on_after(outer_s) as outer:
                with plait.move_on_after(inner_s) as inner:
                    await plait.sleep(10)
                after_inner.append(plait.current_time())
                await plait.sleep(10)
            return (
                inner.cancelled_caught,
                outer.cancelled_caught,
                after_inner,
                plait.current_time(),
            )

        assert run(main) == expected

    def test_both_cancelled_outer_catches(self):
        async def main():
            with plait.CancelScope() as outer:
                with plait.CancelScope() as inner:
                    inner.cancel()
                    outer.cancel()
                    await plait.checkpoint()
                pytest.fail("unreachable")
            return inner.cancelled_caught, outer.cancelled_caught

        assert run(main) == (False, True)


class TestShield:
    def test_shielded_cleanup_runs_and_sleeps(self):
        async def main():
            log = []
            with plait.move_on_after(1) as outer:
                try:
                    await plait.sleep_forever()
                finally:
                    with plait.CancelScope(shield=True) as shield:
                        await plait.sleep(5)
                        log.append(plait.current_time())
            return log, outer.cancelled_caught, shield.cancelled_caught

        assert run(main) == ([6.0], True, False)

    def test_toggling_shield_while_running(self):
        async def main():
            with plait.CancelScope() as outer:
                with plait.CancelScope(shield=True) as inner:
                    outer.cancel()
                    await plait.checkpoint()  # shielded: no Cancelled
                    inner.shield = False
                    assert not inner.shield
                    with pytest.raises(plait.Cancelled):
                        await plait.checkpoint()
                    inner.shield = True
                    await plait.sleep(1)  # shielded again
                await plait.checkpoint()
                pytest.fail("unreachable")
            return inner.cancelled_caught, outer.cancelled_caught, plait.current_time()

        assert run(main) == (False, True, 1.0)

    def test_dropping_the_shield_wakes_a_parked_task(self):
        box = []

        async def child():
            with plait.CancelScope() as outer:
                with plait.CancelScope(shield=True) as inner:
                    box.extend((outer, inner))
                    await plait.sleep_forever()
            return outer.cancelled_caught

        async def main():
            async with plait.TaskGroup() as tg:
                task = tg.spawn(child)
                await wait_all_tasks_blocked()
                box[0].cancel()
                await wait_all_tasks_blocked()
                assert not task.done()
                box[1].shield = False
            return task.result()

        assert run(main) is True


class TestMisuse:
    def test_entered_twice(self):
        async def main():
            scope = plait.CancelScope()
            with scope:
                with pytest.raises(RuntimeError, match="once"):
                    scope.__enter__()
            with pytest.raises(RuntimeError):
                with scope:
                    pass

        run(main)

    def test_exited_out_of_order(self):
        async def main():
            first, second = plait.CancelScope(), plait.CancelScope()
            first.__enter__()
            second.__enter__()
            with pytest.raises(RuntimeError, match="out of order"):
                first.__exit__(None, None, None)
            assert not second.__exit__(None, None, None)
            assert not first.__exit__(None, None, None)
            await plait.checkpoint()

        run(main)

    def test_exited_in_another_task(self):
        box = []

        async def owner():
            with plait.CancelScope() as scope:
                box.append(scope)
                await plait.sleep_forever()

        def exit_it(_, task):
            try:
                with pytest.raises(RuntimeError):
                    box[0].__exit__(None, None, None)
            finally:
                task.cancel()

        run_child(owner, exit_it)

    def test_entered_outside_a_task(self):
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            plait.CancelScope().__enter__()
        errors = []
        with plait.Loop() as loop:
            loop.set_exception_handler(lambda _, ctx: errors.append(ctx["exception"]))
            loop.call_soon(lambda: plait.CancelScope().__enter__())
            loop.run()
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "task" in str(errors[0])


class Handoff:
    """A custom one-shot wait whose cancellation cannot be undone synchronously: its
    abort_fn answers Abort.FAILED, and the primitive finishes the wait later."""

    def __init__(self):
        self.task = None
        self.raise_cancel = None
        self.abort_calls = 0

    async def wait(self):
        self.task = plait.current_task()

        def abort(raise_cancel):
            self.abort_calls += 1
            self.raise_cancel = raise_cancel
            return Abort.FAILED

        return await wait_task_rescheduled(abort)

    def give_up(self):
        try:
            self.raise_cancel()
        except BaseException as exc:
            reschedule(self.task, error=exc)

    def complete(self, value):
        reschedule(self.task, value)


async def _never_started(task_status=plait.TASK_STATUS_IGNORED):
    await plait.sleep_forever()


async def _wait_for_children():
    async with plait.TaskGroup() as tg:
        tg.spawn(plait.sleep_forever)
        tg.spawn(plait.sleep, 100)


async def _start():
    async with plait.TaskGroup() as tg:
        await tg.start(_never_started)


async def _as_completed():
    async for _ in plait.as_completed([plait.sleep_forever(), plait.sleep(50)]):
        pytest.fail("nothing should complete")


WAITS = {
    "sleep": lambda: plait.sleep(10),
    "sleep_until": lambda: plait.sleep_until(plait.current_time() + 10),
    "sleep_forever": plait.sleep_forever,
    "taskgroup_exit": _wait_for_children,
    "start": _start,
    "wait_all_tasks_blocked": lambda: wait_all_tasks_blocked(10.0),
    "as_completed": _as_completed,
    "gather": lambda: plait.gather(plait.sleep_forever(), plait.sleep(50)),
}


async def cancel_while_blocked(wait):
    """Run ``wait()`` in a child inside a scope; once everything is blocked, cancel the
    scope. The wait must end at once with Cancelled, caught by that scope."""
    log = []

    async def waiter(task_status=plait.TASK_STATUS_IGNORED):
        with plait.CancelScope() as scope:
            task_status.started(scope)
            await wait()
            log.append("wait returned")
        log.append(("caught", scope.cancelled_caught))

    async with plait.TaskGroup() as tg:
        scope = await tg.start(waiter)
        await wait_all_tasks_blocked()
        assert log == []
        t0 = plait.current_time()
        scope.cancel()
    assert log == [("caught", True)]
    assert plait.current_time() == t0


def _drain(op):
    try:
        while True:
            op()
    except BlockingIOError:
        pass


class TestCancelBlockedWaits:
    @pytest.mark.parametrize("wait", list(WAITS.values()), ids=list(WAITS))
    def test_cancelled_while_blocked(self, wait):
        run(cancel_while_blocked, wait)

    def test_join_cancelled_leaves_the_task_alone(self):
        async def main():
            async with plait.TaskGroup() as tg:
                sleeper = tg.spawn(plait.sleep_forever)
                await cancel_while_blocked(lambda: sleeper)
                await wait_all_tasks_blocked()
                assert not sleeper.done()
                sleeper.cancel()
            return sleeper.cancelled()

        assert run(main) is True

    @pytest.mark.parametrize("wait", [wait_readable, wait_writable])
    def test_fd_wait_then_reuse_the_fd(self, wait):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        if wait is wait_writable:
            _drain(lambda: a.send(b"x" * 65536))  # fill the buffer: not writable

        async def main():
            await cancel_while_blocked(lambda: wait(a))
            # The cancelled wait was unregistered: a new wait on the same fd works.
            if wait is wait_writable:
                _drain(lambda: b.recv(65536))
            else:
                b.send(b"x")
            await wait(a)

        with a, b:
            run(main)

    @pytest.mark.parametrize("finish", ["give_up", "complete"])
    def test_abort_failed(self, finish):
        # The primitive refuses the abort; the waiter stays parked until the primitive
        # reschedules it: with the Cancelled error, or with a value (and then the next
        # checkpoint raises, since the scope is still cancelled).
        handoff = Handoff()

        async def main():
            log = []

            async def waiter():
                with plait.CancelScope() as scope:
                    log.append(scope)
                    log.append(await handoff.wait())
                    await plait.checkpoint()
                    log.append("not cancelled")
                log.append(scope.cancelled_caught)

            async with plait.TaskGroup() as tg:
                task = tg.spawn(waiter)
                await wait_all_tasks_blocked()
                log[0].cancel()
                await wait_all_tasks_blocked()
                assert handoff.abort_calls == 1
                assert not task.done()  # Abort.FAILED: still waiting
                if finish == "give_up":
                    handoff.give_up()
                else:
                    handoff.complete("value")
            return log[1:]

        assert run(main) == ([True] if finish == "give_up" else ["value", True])


class TestTaskCancel:
    def test_cancel_one_task_leaves_the_group_alone(self):
        async def sibling():
            await plait.sleep(3)
            return "sibling done"

        async def main():
            async with plait.TaskGroup() as tg:
                victim = tg.spawn(plait.sleep_forever)
                other = tg.spawn(sibling)
                await wait_all_tasks_blocked()
                victim.cancel()
                with pytest.raises(plait.Cancelled):
                    await victim  # waits for the victim to end, then raises
                assert victim.cancelled()
                assert not other.done()
                await plait.sleep(1)  # the body is not cancelled either
            with pytest.raises(plait.Cancelled):
                victim.result()
            assert isinstance(victim.exception(), plait.Cancelled)
            return other.result(), tg.cancel_scope.cancel_called, plait.current_time()

        assert run(main) == ("sibling done", False, 3.0)

    def test_cancel_done_task_is_a_no_op(self):
        async def child():
            return 42

        task = run_child(child)
        task.cancel()
        assert (task.cancelled(), task.result()) == (False, 42)

    def test_cancel_task_inside_its_own_nested_scopes(self):
        scopes = []

        async def child():
            with plait.CancelScope() as first:
                with plait.move_on_after(100) as second:
                    scopes.extend((first, second))
                    await plait.sleep_forever()

        task = run_child(child, cancel_task)
        assert task.cancelled()
        assert [s.cancelled_caught for s in scopes] == [False, False]

    @pytest.mark.parametrize("cancel", [cancel_task, cancel_group])
    def test_shielded_cleanup_finishes(self, cancel):
        log = []

        async def child():
            with plait.CancelScope(shield=True):
                await plait.sleep(5)
                log.append(plait.current_time())
            await plait.checkpoint()
            log.append("unreachable")

        run_child(child, cancel)
        assert log == [5.0]

    def test_cancel_before_first_step(self):
        log = []

        async def child():
            log.append("started")  # runs up to its first checkpoint
            await plait.checkpoint()
            log.append("unreachable")

        async def main():
            async with plait.TaskGroup() as tg:
                task = tg.spawn(child)
                task.cancel()
            return task

        assert run(main).cancelled()
        assert log == ["started"]

    def test_task_cancel_is_level_triggered(self):
        async def child():
            caught = 0
            for _ in range(3):
                try:
                    await plait.sleep(1)
                except plait.Cancelled:
                    caught += 1
            return caught, plait.current_time()

        assert run_child(child, cancel_task).result() == (3, 0.0)


class TestTaskGroupCancel:
    def test_cancel_scope_stops_children_and_body(self):
        log = []

        async def child(n):
            try:
                await plait.sleep_forever()
            except plait.Cancelled:
                log.append(n)
                raise

        async def main():
            async with plait.TaskGroup() as tg:
                children = [tg.spawn(child, n) for n in range(3)]
                await wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
                await plait.sleep(1)
                pytest.fail("the body was not cancelled")
            return tg.cancel_scope.cancelled_caught, [t.done() for t in children]

        assert run(main) == (True, [True, True, True])
        assert sorted(log) == [0, 1, 2]


class TestRegressions:
    def test_minus_infinity_deadlines_fire(self):
        async def main():
            caught = []
            with plait.CancelScope(deadline=-math.inf) as scope:
                await plait.sleep(1)
            caught.append(scope.cancelled_caught)
            with plait.move_on_at(-math.inf) as scope:
                await plait.sleep(1)
            caught.append(scope.cancelled_caught)
            with plait.CancelScope() as scope:
                scope.deadline = -math.inf  # while running
                await plait.sleep(1)
            caught.append(scope.cancelled_caught)
            return caught, plait.current_time()

        assert run(main) == ([True, True, True], 0.0)

    @pytest.mark.parametrize("bad_first", [False, True])
    def test_a_raising_abort_fn_does_not_stop_the_cancellation_of_the_others(self, bad_first):
        # The broken abort_fn's error goes to its own task; every other task in the
        # cancelled subtree is still woken, and whoever cancelled sees no error.
        log = []

        async def bad_wait():
            def abort(_):
                raise RuntimeError("buggy abort_fn")

            await wait_task_rescheduled(abort)

        async def sleeper():
            try:
                await plait.sleep(3600)
            except plait.Cancelled:
                log.append(("sleeper cancelled", plait.current_time()))
                raise

        async def main():
            scope = plait.CancelScope()

            async def canceller():
                await plait.sleep(1)
                scope.cancel()
                log.append("cancel() returned")

            async with plait.TaskGroup() as tg:
                tg.spawn(canceller)
                with scope:
                    async with plait.TaskGroup() as inner:
                        for fn in (bad_wait, sleeper) if bad_first else (sleeper, bad_wait):
                            inner.spawn(fn)

        with pytest.raises(ExceptionGroup) as info:
            run(main)
        assert log == ["cancel() returned", ("sleeper cancelled", 1.0)]
        matched, rest = info.value.split(RuntimeError)
        assert rest is None
        assert matched is not None
        (inner_group,) = matched.exceptions
        assert [str(e) for e in inner_group.exceptions] == ["buggy abort_fn"]

    def test_shielded_block_in_a_cancelled_scope(self):
        # Cancellation is delivered at checkpoints only: leaving the shield without a
        # checkpoint leaves the scope without a Cancelled to catch; the next checkpoint
        # in the cancelled scope raises.
        async def main():
            with plait.CancelScope() as quiet:
                quiet.cancel()
                with plait.CancelScope(shield=True):
                    await plait.sleep(1)
            with plait.CancelScope() as loud:
                loud.cancel()
                with plait.CancelScope(shield=True):
                    await plait.sleep(1)
                await plait.checkpoint()
            return quiet.cancelled_caught, loud.cancelled_caught, plait.current_time()

        assert run(main) == (False, True, 2.0)
