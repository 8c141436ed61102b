"""plait.wait_future: results and exceptions (with the completing thread's traceback)
from a ThreadPoolExecutor, a plain thread, the loop's own thread and already-done
futures; the checkpoint rules; futures cancelled by someone else (which raise
concurrent.futures.CancelledError, not plait.Cancelled); cancelling the waiting task
(a pending future is cancelled, a running one is left to finish and keeps its
outcome); Portal futures, whose cancellation reaches the portal's task; misuse errors;
and no reference cycles, even though a future keeps its done-callbacks forever. (The
Portal itself: tests/test_portal.py.)

Determinism: a job that must be caught running blocks on a ``threading.Event``; the
task learns that it got there from another Event, or waits for the loop to be idle with
``wait_all_tasks_blocked``. No sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import traceback

import pytest

import plait
from plait.testing import wait_all_tasks_blocked
from test_refcycles import Tracker, _diagnose

DEADLINE = 30.0


class Boom(Exception):
    pass


def frames_of(exc):
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(exc.__traceback__)]


def in_thread_fails():
    raise Boom("from the thread")


class Blocked:
    """A ThreadPoolExecutor(max_workers=1) whose one worker is blocked: futures
    submitted meanwhile stay pending until ``release()``."""

    def __init__(self):
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.entered, self.proceed = threading.Event(), threading.Event()

        def block():
            self.entered.set()
            assert self.proceed.wait(DEADLINE)
            return "blocker done"

        self.blocker = self.executor.submit(block)
        assert self.entered.wait(DEADLINE)

    def release(self):
        self.proceed.set()
        self.executor.shutdown(wait=True)


class TestResults:
    def test_result_from_a_thread_pool(self):
        go = threading.Event()

        async def main():
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
                f = ex.submit(lambda: (go.wait(DEADLINE), threading.get_ident())[1])
                async with plait.TaskGroup() as tg:
                    tg.spawn(release_when_blocked, go)
                    ident = await plait.wait_future(f)
            return ident

        async def release_when_blocked(event):
            await wait_all_tasks_blocked()
            event.set()

        assert plait.run(main) != threading.get_ident()

    def test_exception_keeps_the_thread_traceback(self):
        async def main():
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
                return await plait.wait_future(ex.submit(in_thread_fails))

        with pytest.raises(Boom, match="from the thread") as info:
            plait.run(main)
        frames = frames_of(info.value)
        assert "main" in frames
        assert "wait_future" in frames
        assert frames[-1] == "in_thread_fails"  # the frame that raised, in the thread

    def test_completed_by_a_plain_thread(self):
        async def main():
            f = concurrent.futures.Future()
            thread = threading.Thread(target=lambda: f.set_result("from a thread"))

            async def start_when_blocked():
                await wait_all_tasks_blocked()
                thread.start()

            async with plait.TaskGroup() as tg:
                tg.spawn(start_when_blocked)
                result = await plait.wait_future(f)
            thread.join(DEADLINE)
            return result

        assert plait.run(main) == "from a thread"

    def test_exception_set_by_a_plain_thread(self):
        async def main():
            f = concurrent.futures.Future()
            thread = threading.Thread(target=lambda: f.set_exception(Boom("set")))
            async with plait.TaskGroup() as tg:

                async def start_when_blocked():
                    await wait_all_tasks_blocked()
                    thread.start()

                tg.spawn(start_when_blocked)
                with pytest.raises(Boom, match="set"):
                    await plait.wait_future(f)
            thread.join(DEADLINE)

        plait.run(main)

    def test_completed_by_a_task_of_the_same_loop(self):
        # The done-callback then runs on the loop's own thread: a direct reschedule.
        async def main():
            f = concurrent.futures.Future()

            async def complete():
                await wait_all_tasks_blocked()
                f.set_result("from a task")

            async with plait.TaskGroup() as tg:
                tg.spawn(complete)
                return await plait.wait_future(f)

        assert plait.run(main) == "from a task"

    def test_many_waiters_on_one_future(self):
        async def main():
            f = concurrent.futures.Future()
            results = []

            async def waiter():
                results.append(await plait.wait_future(f))

            async with plait.TaskGroup() as tg:
                for _ in range(5):
                    tg.spawn(waiter)
                await wait_all_tasks_blocked()
                threading.Thread(target=f.set_result, args=(7,)).start()
            return results

        assert plait.run(main) == [7] * 5


class TestCheckpoint:
    def test_already_done_future_passes_a_schedule_point(self):
        async def main():
            f = concurrent.futures.Future()
            f.set_result("done")
            log = []
            async with plait.TaskGroup() as tg:
                tg.spawn(sibling, log)
                log.append(await plait.wait_future(f))
            return log

        async def sibling(log):
            log.append("sibling ran")

        assert plait.run(main) == ["sibling ran", "done"]

    def test_already_cancelled_caller_touches_nothing(self):
        async def main():
            f = concurrent.futures.Future()
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.wait_future(f)
            return scope.cancelled_caught, f.cancelled(), f.done()

        assert plait.run(main) == (True, False, False)

    def test_done_future_is_not_lost_to_a_cancel_during_the_schedule_point(self):
        async def main():
            f = concurrent.futures.Future()
            f.set_result("kept")
            got = []
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:
                    tg.spawn(cancel_soon, scope)
                    got.append(await plait.wait_future(f))  # scope cancelled meanwhile
                    await plait.checkpoint()
                    got.append("not reached")
            return got, scope.cancelled_caught

        async def cancel_soon(scope):
            scope.cancel()

        assert plait.run(main) == (["kept"], True)

    def test_finished_between_done_and_add_done_callback(self):
        # The race where the callback runs inside add_done_callback(), before the task
        # parks: simulated by a future whose first done() answers False.
        class Racy(concurrent.futures.Future):
            first = True

            def done(self):
                if self.first:
                    self.first = False
                    return False
                return super().done()

        async def main():
            f = Racy()
            f.set_result("raced")
            return await plait.wait_future(f)

        assert plait.run(main) == "raced"


class TestCancelledFutures:
    def test_already_cancelled_future_raises_concurrent_cancelled_error(self):
        async def main():
            f = concurrent.futures.Future()
            assert f.cancel()
            with pytest.raises(concurrent.futures.CancelledError):
                await plait.wait_future(f)
            await plait.checkpoint()  # the task itself is not cancelled
            return "still running"

        assert plait.run(main) == "still running"

    def test_cancelled_by_another_thread_while_waiting(self):
        async def main():
            f = concurrent.futures.Future()

            async def cancel_when_blocked():
                await wait_all_tasks_blocked()
                threading.Thread(target=f.cancel).start()

            async with plait.TaskGroup() as tg:
                tg.spawn(cancel_when_blocked)
                with pytest.raises(concurrent.futures.CancelledError):
                    await plait.wait_future(f)
            return f.cancelled()

        assert plait.run(main) is True

    def test_cancelled_error_is_not_plait_cancelled(self):
        assert not issubclass(concurrent.futures.CancelledError, plait.Cancelled)


async def cancel_when_blocked(scope):
    await wait_all_tasks_blocked()
    scope.cancel()


class TestCancellingTheWait:
    def test_pending_future_is_cancelled_and_the_task_gets_cancelled_at_once(self):
        blocked = Blocked()
        ran = threading.Event()
        try:
            second = blocked.executor.submit(ran.set)

            async def main():
                with plait.CancelScope() as scope:
                    async with plait.TaskGroup() as tg:
                        tg.spawn(cancel_when_blocked, scope)
                        await plait.wait_future(second)
                return scope.cancelled_caught

            assert plait.run(main) is True  # while the worker is still blocked
            assert second.cancelled()
        finally:
            blocked.release()
        assert blocked.blocker.result() == "blocker done"
        assert not ran.is_set()  # the cancelled job never ran

    def test_running_future_is_left_running_and_keeps_its_outcome(self):
        blocked = Blocked()
        try:

            async def main():
                with plait.CancelScope() as scope:
                    async with plait.TaskGroup() as tg:
                        tg.spawn(cancel_when_blocked, scope)
                        await plait.wait_future(blocked.blocker)
                return scope.cancelled_caught

            assert plait.run(main) is True  # at once, while the job still runs
            assert not blocked.blocker.done()  # running: cancel() could not stop it
            assert not blocked.blocker.cancelled()
        finally:
            blocked.release()
        assert blocked.blocker.result() == "blocker done"

    def test_cancelled_while_the_wake_up_is_in_flight(self):
        # The future completes in another thread, then the task is cancelled before
        # the queued wake-up runs: the task gets Cancelled exactly once, no error.
        async def main():
            f = concurrent.futures.Future()
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:

                    async def complete_then_cancel():
                        await wait_all_tasks_blocked()
                        t = threading.Thread(target=f.set_result, args=(1,))
                        t.start()
                        t.join(DEADLINE)  # the wake-up is now queued for the loop
                        scope.cancel()

                    tg.spawn(complete_then_cancel)
                    await plait.wait_future(f)
            await plait.checkpoint()
            return scope.cancelled_caught, f.result()

        assert plait.run(main) == (True, 1)


async def add(a, b):
    await plait.checkpoint()
    return a + b


class TestPortalFutures:
    def test_awaited_in_another_loop_and_in_the_portal_itself(self):
        async def nested():  # the future completes on the waiter's own loop thread
            return await plait.wait_future(portal.submit(add, 1, 2))

        async def main():
            return await plait.wait_future(portal.submit(nested))

        with plait.Portal() as portal:
            assert plait.run(main) == 3

    def test_cancelling_the_wait_cancels_the_portal_task(self):
        started, finalized = threading.Event(), threading.Event()

        async def forever():
            try:
                started.set()
                await plait.sleep_forever()
            finally:
                finalized.set()

        async def main():
            future = portal.submit(forever)
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:
                    tg.spawn(cancel_when_started, scope)
                    await plait.wait_future(future)
            return scope.cancelled_caught, future.cancelled()

        async def cancel_when_started(scope):
            await plait.to_thread.run_sync(started.wait, DEADLINE)
            scope.cancel()

        with plait.Portal() as portal:
            assert plait.run(main) == (True, True)
            assert finalized.wait(DEADLINE)  # the portal task's finally ran


class TestMisuse:
    def test_asyncio_future_points_to_plait_aio(self):
        async def main():
            loop = asyncio.new_event_loop()
            try:
                with pytest.raises(TypeError, match=r"asyncio future.*plait\.aio"):
                    await plait.wait_future(loop.create_future())
            finally:
                loop.close()

        plait.run(main)

    @pytest.mark.parametrize("obj", [None, 42, "future"])
    def test_not_a_future(self, obj):
        async def main():
            with pytest.raises(TypeError, match=r"concurrent\.futures\.Future"):
                await plait.wait_future(obj)

        plait.run(main)

    def test_outside_plait_run(self):
        f = concurrent.futures.Future()
        coro = plait.wait_future(f)
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            coro.send(None)
        coro.close()

    def test_exported(self):
        assert plait.wait_future.__module__ == "plait"
        assert "checkpoint" in plait.wait_future.__doc__


def run_no_gc(main, keep=()):
    """``plait.run(main, track)`` with the cyclic GC off: every tracked object must be
    dead afterwards (``keep`` stays alive meanwhile, e.g. a future and its callbacks)."""
    track = Tracker()
    gc.collect()
    gc.disable()
    try:
        try:
            plait.run(main, track)
        except Boom as exc:
            track("exception raised out of plait.run", exc)
        alive = track.alive()
        if alive:
            pytest.fail(_diagnose(alive))
    finally:
        gc.enable()
    assert track.refs, "nothing was tracked"
    return keep


class TestNoReferenceCycles:
    def test_result(self):
        async def main(track):
            local = track.marker("local of the waiting task")
            f = concurrent.futures.Future()
            f.add_done_callback(lambda _: None)
            threading.Thread(target=f.set_result, args=(track.marker("result"),)).start()
            await plait.wait_future(f)
            track("waiting task", plait.current_task())
            assert local is not None

        run_no_gc(main)

    def test_exception(self):
        def fails(track):
            local = track.marker("local of the thread function")
            assert local is not None
            raise track("exception raised in the thread", Boom())

        async def main(track):
            local = track.marker("local of the waiting task")
            track("waiting task", plait.current_task())
            assert local is not None
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
                await plait.wait_future(ex.submit(fails, track))

        run_no_gc(main)

    def test_a_long_lived_future_keeps_nothing_of_a_cancelled_waiter(self):
        # Futures keep their callbacks forever: the one wait_future added must not
        # keep the task, its frames or its Cancelled alive after the wait.
        f = concurrent.futures.Future()
        assert f.set_running_or_notify_cancel()  # running: cancel() cannot stop it

        async def main(track):
            local = track.marker("local of the cancelled waiter")
            track("cancelled waiter", plait.current_task())
            with plait.CancelScope() as scope:
                async with plait.TaskGroup() as tg:
                    tg.spawn(cancel_when_blocked, scope)
                    await plait.wait_future(f)
            assert scope.cancelled_caught
            assert local is not None

        run_no_gc(main, keep=f)
        f.set_result("late")  # the old callback finds nobody to wake: no error
        assert f.result() == "late"
