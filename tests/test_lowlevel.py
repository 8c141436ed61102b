"""plait.lowlevel: the API new primitives are built on."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

import pytest

import plait
from helpers import vrun
from plait._core import _reactor
from plait.lowlevel import (
    Abort,
    current_clock,
    current_loop,
    current_task,
    current_token,
    notify_closing,
    reschedule,
    spawn_system_task,
    wait_readable,
    wait_task_rescheduled,
    wait_writable,
)
from plait.testing import MockClock, wait_all_tasks_blocked


class OneShot:
    """A minimal event built only on the low-level API, as a user would write one."""

    def __init__(self) -> None:
        self.waiters: list[plait.Task] = []
        self.value: Any = None
        self.fired = False

    def fire(self, value: Any) -> None:
        self.fired, self.value = True, value
        waiters, self.waiters = self.waiters, []
        for task in waiters:
            reschedule(task, value)

    async def wait(self) -> Any:
        if self.fired:
            await plait.checkpoint()
            return self.value
        task = current_task()
        self.waiters.append(task)

        def abort(_: Any) -> Abort:
            self.waiters.remove(task)
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)


class TestParkUnpark:
    def test_custom_primitive_delivers_values(self) -> None:
        async def main() -> list[Any]:
            ev = OneShot()
            results: list[Any] = []

            async def waiter() -> None:
                results.append(await ev.wait())

            async with plait.TaskGroup() as tg:
                for _ in range(3):
                    tg.spawn(waiter)
                await wait_all_tasks_blocked()
                ev.fire("go")
            results.append(await ev.wait())
            return results

        assert vrun(main) == ["go"] * 4

    def test_cancelled_waiter_is_unregistered(self) -> None:
        async def main() -> tuple[int, bool]:
            ev = OneShot()
            with plait.move_on_after(1) as scope:
                await ev.wait()
            return len(ev.waiters), scope.cancelled_caught

        assert vrun(main) == (0, True)

    def test_reschedule_with_error(self) -> None:
        async def main() -> None:
            task = current_task()

            async def poker() -> None:
                await wait_all_tasks_blocked()
                reschedule(task, error=KeyError("boom"))

            async with plait.TaskGroup() as tg:
                tg.spawn(poker)
                with pytest.raises(KeyError, match="boom"):
                    await wait_task_rescheduled(lambda _: Abort.FAILED)

        vrun(main)

    def test_reschedule_twice_is_an_error(self) -> None:
        async def main() -> str:
            task = current_task()
            message = ""

            async def poker() -> None:
                nonlocal message
                await wait_all_tasks_blocked()
                reschedule(task, 1)
                with pytest.raises(RuntimeError, match="exactly once") as info:
                    reschedule(task, 2)
                message = str(info.value)

            async with plait.TaskGroup() as tg:
                tg.spawn(poker)
                assert await wait_task_rescheduled(lambda _: Abort.FAILED) == 1
            return message

        assert "not waiting" in vrun(main)

    def test_abort_fn_raising_goes_to_the_parked_task(self) -> None:
        def abort(_: Any) -> Abort:
            raise LookupError("broken primitive")

        async def main() -> str:
            with plait.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(LookupError, match="broken primitive"):
                    await wait_task_rescheduled(abort)
            return "survived"

        assert vrun(main) == "survived"

    def test_abort_fn_returning_garbage_is_reported(self) -> None:
        async def main() -> None:
            with plait.CancelScope() as scope:
                scope.cancel()
                await wait_task_rescheduled(lambda _: "yes")  # type: ignore[arg-type,return-value]

        with pytest.raises(TypeError, match=r"Abort\.SUCCEEDED or Abort\.FAILED"):
            vrun(main)


class TestSystemTasks:
    def test_system_task_is_cancelled_when_main_ends(self) -> None:
        log: list[str] = []

        async def service() -> None:
            try:
                await plait.sleep_forever()
            finally:
                log.append("service stopped")

        async def main() -> str:
            spawn_system_task(service)
            await wait_all_tasks_blocked()
            log.append("main done")
            return "result"

        assert vrun(main) == "result"
        assert log == ["main done", "service stopped"]

    def test_system_task_crash_ends_the_run(self) -> None:
        async def service() -> None:
            await plait.sleep(1)
            raise ValueError("service broke")

        async def main() -> None:
            spawn_system_task(service)
            await plait.sleep_forever()

        # The crash is raised as it is: the main task's Cancelled (which the crash
        # caused) is not reported alongside it.
        with pytest.raises(ValueError, match="service broke"):
            vrun(main)

    def test_system_task_keyboard_interrupt_is_not_wrapped(self) -> None:
        async def service() -> None:
            await plait.sleep(1)
            raise KeyboardInterrupt

        async def main() -> None:
            spawn_system_task(service)
            await plait.sleep_forever()

        with pytest.raises(KeyboardInterrupt):
            vrun(main)

    def test_system_crash_and_main_error_are_both_reported(self) -> None:
        async def service() -> None:
            await plait.sleep(1)
            raise ValueError("service broke")

        async def main() -> None:
            spawn_system_task(service)
            try:
                await plait.sleep_forever()
            finally:
                raise KeyError("main broke too")

        with pytest.raises(BaseExceptionGroup) as info:
            vrun(main)
        assert {type(e) for e in info.value.exceptions} == {ValueError, KeyError}

    def test_spawn_system_task_outside_run(self) -> None:
        async def main() -> None:
            pass

        with pytest.raises(RuntimeError, match=r"plait\.run"):
            spawn_system_task(main)


class TestTokensAndClock:
    def test_token_from_another_thread(self) -> None:
        async def main() -> list[str]:
            token = current_token()
            ev = OneShot()
            got: list[str] = []

            def in_thread() -> None:
                token.run_sync_soon(ev.fire, threading.current_thread().name)

            async def waiter() -> None:
                got.append(await ev.wait())

            async with plait.TaskGroup() as tg:
                tg.spawn(waiter)
                await wait_all_tasks_blocked()
                t = threading.Thread(target=in_thread, name="worker-thread")
                t.start()
            t.join()
            assert "LoopToken" in repr(token)
            return got

        assert plait.run(main) == ["worker-thread"]

    def test_current_clock_and_loop(self) -> None:
        clock = MockClock()

        async def main() -> None:
            assert current_clock() is clock
            assert isinstance(current_loop(), plait.Loop)
            assert current_loop().time() == plait.current_time()

        plait.run(main, clock=clock)

    @pytest.mark.parametrize("fn", [current_clock, current_loop, current_token, current_task])
    def test_outside_a_run(self, fn: Any) -> None:
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            fn()


def socketpair_on(fd: int) -> tuple[socket.socket, socket.socket]:
    """A new non-blocking socketpair whose first socket has the number ``fd``."""
    c, d = socket.socketpair()
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(fileno=fd)
    c.setblocking(False)
    d.setblocking(False)
    return c, d


def fill(sock: socket.socket) -> None:
    """Send until the buffer is full: ``sock`` is not writable any more."""
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.send(b"x" * 65536)


def run_until_idle(loop: plait.Loop) -> bool:
    """``loop.run()``; True if it returned by itself (a thread rescues a stuck loop)."""
    rescued: list[bool] = []

    def rescue() -> None:
        rescued.append(True)
        loop.call_soon_threadsafe(loop.stop)

    guard = threading.Timer(5.0, rescue)
    guard.start()
    loop.run()
    guard.cancel()
    guard.join()
    return not rescued


class TestNotifyClosing:
    def test_waiting_tasks_wake_with_closed_resource_error(self) -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        fill(a)  # neither readable nor writable
        log: list[str] = []

        async def waiter(wait: Any) -> None:
            with pytest.raises(plait.ClosedResourceError):
                await wait(a)
            log.append(wait.__name__)

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                tg.spawn(waiter, wait_readable)
                tg.spawn(waiter, wait_writable)
                await wait_all_tasks_blocked()
                assert log == []
                notify_closing(a)
                a.close()

        with b:
            vrun(main)
        assert sorted(log) == ["wait_readable", "wait_writable"]

    def test_callbacks_are_removed(self) -> None:
        a, b = socket.socketpair()
        calls: list[str] = []
        loop = plait.Loop(clock=MockClock(autojump_threshold=0))

        async def main() -> tuple[bool, bool]:
            loop.add_reader(a, calls.append, "reader")
            loop.add_writer(a, calls.append, "writer")
            b.send(b"x")  # readable and writable: both would run at the next poll
            notify_closing(a)
            notify_closing(a)  # nothing left: a no-op
            a.close()
            await wait_all_tasks_blocked()
            return loop.remove_reader(fd), loop.remove_writer(fd)

        fd = a.fileno()
        with loop, b:
            assert loop.run_until_complete(main) == (False, False)
            assert run_until_idle(loop)  # no callback is counted any more
        assert calls == []

    @pytest.mark.parametrize("epoll", [True, False], ids=["epoll", "selectors"])
    def test_a_new_fd_reusing_the_number_works(
        self, epoll: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not epoll:
            monkeypatch.setattr(_reactor, "_HAS_EPOLL", False)
        elif not _reactor._HAS_EPOLL:
            pytest.skip("no epoll on this platform")

        async def main() -> list[bytes]:
            got: list[bytes] = []
            loop = current_loop()
            a, b = socket.socketpair()
            fd = a.fileno()
            b.send(b"one")
            await wait_readable(a)
            got.append(a.recv(10))
            loop.add_writer(a, print)  # a callback, too
            notify_closing(a)
            a.close()
            b.close()
            c, d = socketpair_on(fd)
            with c, d:
                d.send(b"two")
                with plait.fail_after(10):  # virtual time: fires at once if stuck
                    await wait_readable(c)
                got.append(c.recv(10))
            return got

        assert vrun(main) == [b"one", b"two"]


class TestRegressions:
    def test_system_task_system_exit_is_not_wrapped(self) -> None:
        async def service() -> None:
            await plait.sleep(1)
            raise SystemExit(3)

        async def main() -> None:
            spawn_system_task(service)
            await plait.sleep_forever()

        with pytest.raises(SystemExit) as info:
            vrun(main)
        assert info.value.code == 3

    def test_system_task_crash_is_raised_as_it_is(self) -> None:
        error = ValueError("service broke")

        async def service() -> None:
            await plait.sleep(1)
            raise error

        async def main() -> None:
            spawn_system_task(service)
            await plait.sleep(10)

        with pytest.raises(ValueError) as info:
            vrun(main)
        assert info.value is error
