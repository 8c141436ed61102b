"""plait.from_thread: calls back into the loop from to_thread workers and from plain
threads holding a token (results, errors with their tracebacks both ways, context
variables, cancellation of the task a thread started), the misuse errors, and no
reference cycles. (to_thread itself: tests/test_threads.py.)

Determinism: as in tests/test_threads.py, whose helpers this module uses; plain
threads are joined with a deadline, and a thread that must not hang is checked with
``is_alive()`` after the join.
"""

from __future__ import annotations

import threading
import time

import pytest

import plait
from plait.lowlevel import current_token
from plait.testing import wait_all_tasks_blocked
from test_threads import DEADLINE, Boom, frames_of, run_no_gc, start_cancellable, var


async def double(x):
    await plait.checkpoint()
    return 2 * x


async def async_fails():
    await plait.checkpoint()
    raise Boom("from the task")


def sync_fails():
    raise Boom("from the loop thread")


class TestFromThread:
    def test_run_and_run_sync_results(self):
        def in_thread():
            loop_ident = plait.from_thread.run_sync(threading.get_ident)
            return plait.from_thread.run(double, 21), loop_ident

        async def main():
            return await plait.to_thread.run_sync(in_thread)

        assert plait.run(main) == (42, threading.get_ident())

    def test_run_starts_a_task(self):
        async def which():
            return plait.current_task().name

        async def main():
            return await plait.to_thread.run_sync(plait.from_thread.run, which)

        assert "which" in plait.run(main)

    @pytest.mark.parametrize(
        ("call", "fn", "frame"),
        [
            (plait.from_thread.run, async_fails, "async_fails"),
            (plait.from_thread.run_sync, sync_fails, "sync_fails"),
        ],
    )
    def test_exceptions_cross_both_ways(self, call, fn, frame):
        def in_thread():
            try:
                call(fn)
            except Boom as exc:
                names = frames_of(exc)
                assert frame in names, names
                raise

        async def main():
            await plait.to_thread.run_sync(in_thread)

        with pytest.raises(Boom, match="from the") as info:
            plait.run(main)
        names = frames_of(info.value)
        assert names.index("main") < names.index("in_thread") < names.index(frame)
        assert names[-1] == frame

    def test_contextvars_flow_task_thread_task(self):
        async def in_task():
            seen = var.get()
            var.set("set in the from_thread task")
            return seen

        def in_thread():
            from_task = var.get()
            var.set("set in the thread")
            seen = plait.from_thread.run(in_task)
            return from_task, seen, var.get()

        async def main():
            var.set("set in the task")
            result = await plait.to_thread.run_sync(in_thread)
            return result, var.get()

        assert plait.run(main) == (
            ("set in the task", "set in the thread", "set in the thread"),
            "set in the task",
        )

    def test_run_sync_sees_the_thread_context(self):
        def in_thread():
            before = plait.from_thread.run_sync(var.get)
            var.set("set in the thread")
            return before, plait.from_thread.run_sync(var.get)

        async def main():
            var.set("set in the task")
            return await plait.to_thread.run_sync(in_thread)

        assert plait.run(main) == ("set in the task", "set in the thread")

    def test_run_is_cancelled_with_the_to_thread_caller(self):
        async def main():
            entered, seen = plait.Event(), []

            async def waits_forever():
                entered.set()
                await plait.sleep_forever()

            def in_thread():
                try:
                    plait.from_thread.run(waits_forever)
                except plait.Cancelled:
                    seen.append("Cancelled from from_thread.run")
                    raise

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(tg, in_thread)
                await entered.wait()
                scope.cancel()
            return seen, log

        assert plait.run(main) == (["Cancelled from from_thread.run"], [("caught", True)])

    def test_run_after_the_caller_was_cancelled_is_cancelled(self):
        async def main():
            entered, proceed, seen = plait.Event(), threading.Event(), []

            def in_thread():
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                try:
                    plait.from_thread.run(plait.sleep_forever)
                except plait.Cancelled:
                    seen.append("Cancelled")
                    raise

            async with plait.TaskGroup() as tg:
                scope, log = await start_cancellable(tg, in_thread)
                await entered.wait()
                scope.cancel()
                await wait_all_tasks_blocked()
                proceed.set()
            return seen, log

        assert plait.run(main) == (["Cancelled"], [("caught", True)])

    def test_plain_thread_with_a_token(self):
        async def main():
            token = current_token()
            done, results = plait.Event(), []

            def thread_main():
                try:
                    results.append(plait.from_thread.run(double, 5, token=token))
                    results.append(plait.from_thread.run_sync(threading.get_ident, token=token))
                    try:
                        plait.from_thread.run(async_fails, token=token)
                    except Boom as exc:
                        results.append(str(exc))
                finally:
                    token.run_sync_soon(done.set)

            thread = threading.Thread(target=thread_main)
            thread.start()
            await done.wait()
            thread.join(DEADLINE)
            return results

        assert plait.run(main) == [10, threading.get_ident(), "from the task"]


class TestFromThreadMisuse:
    @pytest.mark.parametrize("call", [plait.from_thread.run, plait.from_thread.run_sync])
    @pytest.mark.parametrize("with_token", [True, False])
    def test_from_the_loop_thread(self, call, with_token):
        async def main():
            kwargs = {"token": current_token()} if with_token else {}
            call(double if call is plait.from_thread.run else len, 1, **kwargs)

        with pytest.raises(RuntimeError, match="loop's own thread"):
            plait.run(main)

    @pytest.mark.parametrize("call", [plait.from_thread.run, plait.from_thread.run_sync])
    def test_from_a_thread_without_a_token(self, call):
        errors = []

        def thread_main():
            try:
                call(double if call is plait.from_thread.run else len, 1)
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=thread_main)
        thread.start()
        thread.join(DEADLINE)
        assert len(errors) == 1
        assert "did not start" in errors[0]
        assert "current_token()" in errors[0]

    def test_check_cancelled_outside_a_worker(self):
        errors = []

        def thread_main():
            try:
                plait.from_thread.check_cancelled()
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=thread_main)
        thread.start()
        thread.join(DEADLINE)
        assert len(errors) == 1
        assert "to_thread.run_sync()" in errors[0]

        async def main():
            plait.from_thread.check_cancelled()

        with pytest.raises(RuntimeError, match="loop's thread"):
            plait.run(main)
        with pytest.raises(RuntimeError):
            plait.from_thread.check_cancelled()

    @pytest.mark.parametrize("token", ["token", object(), 42])
    def test_bad_token(self, token):
        async def main():
            await plait.to_thread.run_sync(
                lambda: plait.from_thread.run_sync(len, "", token=token)
            )

        with pytest.raises(TypeError, match="current_token"):
            plait.run(main)

    def test_bad_functions(self):
        async def afn():
            pass

        def in_thread():
            errors = []
            for call, fn in [
                (plait.from_thread.run_sync, 3),
                (plait.from_thread.run_sync, afn),
                (plait.from_thread.run, 3),
            ]:
                try:
                    call(fn)
                except TypeError as exc:
                    errors.append(str(exc))
            try:
                plait.from_thread.run(len, "")  # not async: the error comes back
            except TypeError as exc:
                errors.append(str(exc))
            return errors

        async def main():
            return await plait.to_thread.run_sync(in_thread)

        assert len(plait.run(main)) == 4

    @pytest.mark.parametrize("call", [plait.from_thread.run, plait.from_thread.run_sync])
    def test_plain_thread_after_the_run_ended(self, call):
        tokens = []

        async def main():
            tokens.append(current_token())

        plait.run(main)
        errors = []

        def thread_main():
            try:
                call(double if call is plait.from_thread.run else len, 1, token=tokens[0])
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=thread_main)
        thread.start()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "from_thread hung after the loop ended"
        assert len(errors) == 1
        assert "ended" in errors[0]

    def test_abandoned_worker_after_the_run_ended(self):
        proceed, done, errors = threading.Event(), threading.Event(), []

        def late(entered):
            try:
                plait.from_thread.run_sync(entered.set)
                assert proceed.wait(DEADLINE)
                plait.from_thread.run(double, 1)
            except RuntimeError as exc:
                errors.append(str(exc))
            finally:
                done.set()

        async def main():
            entered = plait.Event()
            async with plait.TaskGroup() as tg:
                scope, _ = await start_cancellable(tg, late, entered, abandon_on_cancel=True)
                await entered.wait()
                scope.cancel()

        plait.run(main)
        proceed.set()
        assert done.wait(DEADLINE), "from_thread hung after the loop ended"
        assert len(errors) == 1
        assert "ended" in errors[0]

    def test_loop_closed_while_the_thread_waits(self):
        loop = plait.Loop()
        tokens = []

        async def main():
            tokens.append(current_token())

        loop.run_until_complete(main)
        # The loop is not running but not closed yet: the call is queued (seen in the
        # loop's wake-up deque), and closing the loop must wake the thread with an error.
        errors = []

        def thread_main():
            try:
                plait.from_thread.run_sync(len, "", token=tokens[0])
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=thread_main)
        thread.start()
        deadline = time.monotonic() + DEADLINE
        while not loop._wakeup.queue and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert loop._wakeup.queue, "the call never reached the loop"
        loop.close()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "from_thread hung after the loop closed"
        assert len(errors) == 1
        assert "ended before it could run the call" in errors[0]


class TestNoReferenceCycles:
    def test_exceptions_through_from_thread(self):
        async def in_task(track):
            local = track.marker("local of the from_thread task")
            await plait.checkpoint()
            assert local is not None
            raise track("exception of the from_thread task", Boom())

        async def main(track):
            def in_thread():
                with pytest.raises(Boom):
                    plait.from_thread.run(in_task, track)
                with pytest.raises(Boom):
                    plait.from_thread.run_sync(sync_fails)
                return track.marker("result")

            await plait.to_thread.run_sync(in_thread)

        run_no_gc(main)
