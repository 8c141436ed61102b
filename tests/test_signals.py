"""plait.open_signal_receiver against real signals sent to this very process.

``os.kill(os.getpid(), sig)`` runs the Python handler before it returns (the signal goes
to the main thread, and os.kill checks for signals right after the syscall), so a test
knows exactly which signals have arrived at each line. Every test runs with a recording
Python handler in place for SIGUSR1, SIGUSR2 and SIGHUP (the ``outer`` fixture): a
signal re-delivered by a receiver reaches it instead of killing pytest.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import plait
from plait.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

USR1, USR2, HUP = signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP
SIGNALS = (USR1, USR2, HUP)


def send(signum: int) -> None:
    os.kill(os.getpid(), signum)


class Outer:
    """The handler in place before the receivers: it records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.seen.append(signum)


@pytest.fixture
def outer() -> Iterator[Outer]:
    rec = Outer()
    saved = {s: signal.signal(s, rec.handler) for s in SIGNALS}
    try:
        yield rec
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def run(fn: Any, *args: Any) -> Any:
    return plait.run(fn, *args)


class TestReceive:
    def test_a_signal_sent_inside_the_run_is_received(self, outer: Outer) -> None:
        async def main() -> int:
            with plait.open_signal_receiver(USR1) as signals:
                send(USR1)
                async for signum in signals:
                    return signum
            raise AssertionError("unreachable")

        signum = run(main)
        assert signum == USR1 and type(signum) is int
        assert outer.seen == []

    def test_arrival_order_is_kept_and_pending_repeats_merge(self, outer: Outer) -> None:
        async def main() -> list[int]:
            with plait.open_signal_receiver(USR1, USR2, HUP) as signals:
                for s in (USR2, HUP, USR1, USR2, HUP, USR1, USR2):
                    send(s)
                got = [await signals.__anext__() for _ in range(3)]
                assert not signals._pending
                send(USR2)  # consumed signals are not pending any more: a new arrival
                got.append(await signals.__anext__())
                return got

        assert run(main) == [USR2, HUP, USR1, USR2]
        assert outer.seen == []

    def test_a_storm_is_one_pending_entry_and_one_loop_callback(self, outer: Outer) -> None:
        async def main() -> None:
            loop = plait.lowlevel.current_loop()
            with plait.open_signal_receiver(USR1, HUP) as signals:
                queued = len(loop._wakeup.queue)
                for _ in range(200):
                    send(USR1)
                    send(HUP)
                assert list(signals._pending) == [USR1, HUP]
                assert len(loop._wakeup.queue) == queued + 1
                assert await signals.__anext__() == USR1
                assert await signals.__anext__() == HUP

        run(main)

    def test_a_waiting_task_is_woken(self, outer: Outer) -> None:
        got: list[int] = []

        async def main() -> None:
            with plait.open_signal_receiver(HUP, USR2) as signals:

                async def waiter() -> None:
                    async for signum in signals:
                        got.append(signum)
                        if len(got) == 2:
                            return

                async with plait.TaskGroup() as tg:
                    tg.spawn(waiter)
                    await wait_all_tasks_blocked()
                    send(HUP)
                    await wait_all_tasks_blocked()
                    send(USR2)

        run(main)
        assert got == [HUP, USR2]

    def test_a_signal_from_another_thread_wakes_the_idle_loop(self, outer: Outer) -> None:
        threads: list[threading.Thread] = []

        async def main() -> int:
            with plait.open_signal_receiver(USR1) as signals:

                async def kill_soon() -> None:
                    await wait_all_tasks_blocked()
                    # The main thread is (or soon will be) blocked in the OS poll.
                    thread = threading.Thread(target=send, args=(USR1,))
                    threads.append(thread)
                    thread.start()

                async with plait.TaskGroup() as tg:
                    tg.spawn(kill_soon)
                    return await signals.__anext__()

        try:
            assert run(main) == USR1
        finally:
            for thread in threads:
                thread.join()

    def test_a_signal_just_before_the_poll_still_wakes_the_loop(self, outer: Outer) -> None:
        # A signal that arrives after the loop's last check for signals but before it
        # enters the OS poll interrupts nothing; only the signal wake-up fd wakes the
        # loop then. One signal at a time, each acknowledged, from another thread: a
        # few thousand of them land at every point of the loop's step.
        rounds = 3000
        stuck: list[int] = []
        got = threading.Event()

        def sender() -> None:
            for i in range(rounds):
                got.clear()
                send(USR1)
                if not got.wait(10):
                    stuck.append(i)
                    send(USR1)  # this one interrupts the poll: the test can end
                    return

        async def main() -> int:
            count = 0
            with plait.open_signal_receiver(USR1) as signals:
                thread = threading.Thread(target=sender)
                thread.start()
                try:
                    async for _ in signals:
                        count += 1
                        got.set()
                        if count == rounds or stuck:
                            break
                finally:
                    thread.join()
            return count

        assert run(main) == rounds and not stuck, f"round {stuck} waited for a wake-up"


class TestIteration:
    def test_a_second_iterating_task_gets_busy(self, outer: Outer) -> None:
        async def main() -> int:
            with plait.open_signal_receiver(USR1) as signals:
                async with plait.TaskGroup() as tg:
                    first = tg.spawn(signals.__anext__)
                    await wait_all_tasks_blocked()
                    with pytest.raises(plait.BusyResourceError, match="one task at a time"):
                        await signals.__anext__()
                    send(USR1)
                return await first  # type: ignore[no-any-return]

        assert run(main) == USR1

    def test_cancelling_a_waiting_task_loses_no_signal(self, outer: Outer) -> None:
        async def main() -> int:
            with plait.open_signal_receiver(USR1) as signals:
                async with plait.TaskGroup() as tg:

                    async def waiter() -> None:
                        async for _ in signals:
                            raise AssertionError("no signal was sent yet")

                    task = tg.spawn(waiter)
                    await wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()
                assert task.cancelled()
                send(USR1)  # nobody waits: it stays pending
                return await signals.__anext__()

        assert run(main) == USR1

    def test_a_cancelled_caller_consumes_nothing(self, outer: Outer) -> None:
        async def main() -> int:
            with plait.open_signal_receiver(USR1) as signals:
                send(USR1)
                with plait.CancelScope() as scope:
                    scope.cancel()
                    with pytest.raises(plait.Cancelled):
                        await signals.__anext__()
                assert list(signals._pending) == [USR1]
                return await signals.__anext__()

        assert run(main) == USR1

    def test_break_then_iterate_again(self, outer: Outer) -> None:
        async def main() -> list[int]:
            got = []
            with plait.open_signal_receiver(USR1, USR2) as signals:
                send(USR1)
                send(USR2)
                async for signum in signals:
                    got.append(signum)
                    break
                async for signum in signals:
                    got.append(signum)
                    break
            return got

        assert run(main) == [USR1, USR2]

    def test_a_closed_receiver_raises_closed_resource_error(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.open_signal_receiver(USR1) as signals:
                pass
            with pytest.raises(plait.ClosedResourceError, match="closed"):
                await signals.__anext__()

        run(main)

    def test_a_waiting_task_is_woken_when_another_closes_it(self, outer: Outer) -> None:
        async def main() -> None:
            signals = plait.open_signal_receiver(USR1)
            signals.__enter__()

            async def waiter() -> None:
                with pytest.raises(plait.ClosedResourceError, match="closed while"):
                    await signals.__anext__()

            async with plait.TaskGroup() as tg:
                tg.spawn(waiter)
                await wait_all_tasks_blocked()
                signals.close()
                signals.close()  # idempotent
            assert signal.getsignal(USR1) == outer.handler

        run(main)

    def test_async_with(self, outer: Outer) -> None:
        async def main() -> int:
            async with plait.open_signal_receiver(USR2) as signals:
                assert signal.getsignal(USR2) != outer.handler
                send(USR2)
                signum = await signals.__anext__()
            assert signal.getsignal(USR2) == outer.handler
            return signum

        assert run(main) == USR2

    def test_async_with_cancelled_installs_nothing(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.CancelScope() as scope:
                scope.cancel()
                async with plait.open_signal_receiver(USR2):
                    raise AssertionError("entered")
            assert scope.cancelled_caught
            assert signal.getsignal(USR2) == outer.handler

        run(main)

    def test_not_entered_or_entered_twice(self, outer: Outer) -> None:
        async def main() -> None:
            signals = plait.open_signal_receiver(USR1)
            assert signal.getsignal(USR1) == outer.handler  # installed on entering only
            with pytest.raises(RuntimeError, match="enter the receiver"):
                await signals.__anext__()
            with signals:
                with pytest.raises(RuntimeError, match="only once"):
                    signals.__enter__()
            with pytest.raises(RuntimeError, match="only once"):
                signals.__enter__()

        run(main)

    def test_a_waiting_task_leaves_no_reference_cycle(self, outer: Outer) -> None:
        class Marker:
            pass

        refs: list[weakref.ref[Marker]] = []

        async def main() -> None:
            with plait.open_signal_receiver(USR1) as signals:

                async def waiter() -> None:
                    marker = Marker()
                    refs.append(weakref.ref(marker))
                    await signals.__anext__()

                async with plait.TaskGroup() as tg:
                    tg.spawn(waiter)
                    await wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()

        gc.collect()
        gc.disable()
        try:
            run(main)
            assert refs[0]() is None
        finally:
            gc.enable()


class TestHandlers:
    def test_previous_handlers_are_restored_exactly(self, outer: Outer) -> None:
        signal.signal(USR2, signal.SIG_IGN)
        signal.signal(HUP, signal.SIG_DFL)

        async def main() -> None:
            with plait.open_signal_receiver(USR1, USR2, HUP):
                for s in SIGNALS:
                    assert signal.getsignal(s) not in (
                        outer.handler,
                        signal.SIG_IGN,
                        signal.SIG_DFL,
                    )

        run(main)
        assert signal.getsignal(USR1) == outer.handler
        assert signal.getsignal(USR2) is signal.SIG_IGN
        assert signal.getsignal(HUP) is signal.SIG_DFL

    def test_unconsumed_signals_are_redelivered_in_order(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.open_signal_receiver(USR1, USR2, HUP) as signals:
                for s in (HUP, USR2, USR1, USR2):
                    send(s)
                assert await signals.__anext__() == HUP
            assert outer.seen == [USR2, USR1]

        run(main)

    def test_unconsumed_signals_go_nowhere_when_ignored(self, outer: Outer) -> None:
        signal.signal(USR2, signal.SIG_IGN)

        async def main() -> None:
            with plait.open_signal_receiver(USR2):
                send(USR2)

        run(main)
        assert outer.seen == []

    def test_nested_receivers_for_the_same_signal(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.open_signal_receiver(USR1) as a:
                with plait.open_signal_receiver(USR1, USR2) as b:
                    send(USR1)
                    assert list(b._pending) == [USR1] and not a._pending
                    assert await b.__anext__() == USR1
                    send(USR2)  # unconsumed: re-delivered to a's predecessor, outer
                assert outer.seen == [USR2]
                send(USR1)
                assert await a.__anext__() == USR1
            assert signal.getsignal(USR1) == outer.handler
            assert signal.getsignal(USR2) == outer.handler

        run(main)

    def test_unconsumed_signals_go_to_the_outer_receiver(self, outer: Outer) -> None:
        async def main() -> int:
            with plait.open_signal_receiver(USR1) as a:
                with plait.open_signal_receiver(USR1):
                    send(USR1)
                assert list(a._pending) == [USR1]
                return await a.__anext__()

        assert run(main) == USR1
        assert outer.seen == []

    def test_receivers_closed_out_of_order(self, outer: Outer) -> None:
        async def main() -> None:
            a = plait.open_signal_receiver(USR1)
            b = plait.open_signal_receiver(USR1, USR2)
            a.__enter__()
            send(USR1)  # a's, unconsumed
            b.__enter__()
            a.close()  # first in, first out: b stays in place
            assert outer.seen == [USR1]  # a's pending signal went to a's predecessor
            assert not b._pending
            send(USR1)
            assert await b.__anext__() == USR1
            b.close()
            assert signal.getsignal(USR1) == outer.handler  # what a had replaced
            assert signal.getsignal(USR2) == outer.handler

        run(main)

    def test_a_handler_installed_over_the_receiver_is_left_alone(self, outer: Outer) -> None:
        def mine(signum: int, frame: FrameType | None) -> None:
            pass

        async def main() -> None:
            with plait.open_signal_receiver(HUP):
                signal.signal(HUP, mine)
            assert signal.getsignal(HUP) is mine

        run(main)

    def test_unconsumed_signal_with_default_action_terminates(self) -> None:
        program = textwrap.dedent(
            """
            import os, signal, plait
            async def main():
                with plait.open_signal_receiver(signal.SIGUSR1):
                    os.kill(os.getpid(), signal.SIGUSR1)
                    print("closing", flush=True)
                print("survived", flush=True)
            plait.run(main)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == -USR1, proc.stdout + proc.stderr
        assert proc.stdout == "closing\n"


class TestWakeupFd:
    def test_the_loop_s_wakeup_socket_is_the_wakeup_fd_during_the_run(self) -> None:
        async def main() -> None:
            current = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(current)
            assert current == plait.lowlevel.current_loop()._wakeup._wsock.fileno()

        run(main)
        assert signal.set_wakeup_fd(-1) == -1

    def test_somebody_else_s_wakeup_fd_is_left_alone(self) -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        signal.set_wakeup_fd(a.fileno())
        try:

            async def main() -> None:
                current = signal.set_wakeup_fd(-1)
                signal.set_wakeup_fd(current)
                assert current == a.fileno()

            run(main)
            assert signal.set_wakeup_fd(-1) == a.fileno()
        finally:
            signal.set_wakeup_fd(-1)
            a.close()
            b.close()


class TestMisuse:
    def test_outside_plait_run(self) -> None:
        with pytest.raises(RuntimeError, match=r"inside plait\.run\(\)"):
            plait.open_signal_receiver(USR1)

    def test_in_another_thread(self) -> None:
        errors: list[BaseException] = []

        async def main() -> None:
            with pytest.raises(RuntimeError, match="main thread") as info:
                plait.open_signal_receiver(USR1)
            errors.append(info.value)

        thread = threading.Thread(target=plait.run, args=(main,))
        thread.start()
        thread.join()
        assert len(errors) == 1

    def test_no_signals(self) -> None:
        async def main() -> None:
            plait.open_signal_receiver()

        with pytest.raises(TypeError, match="at least one signal"):
            run(main)

    @pytest.mark.parametrize(
        ("bad", "error"),
        [
            (0, ValueError),
            (-1, ValueError),
            (10_000, ValueError),
            ("SIGHUP", TypeError),
            (1.0, TypeError),
            (True, TypeError),
            (None, TypeError),
        ],
    )
    def test_bad_signal_numbers(self, outer: Outer, bad: Any, error: type[Exception]) -> None:
        async def main() -> None:
            plait.open_signal_receiver(USR1, bad)

        with pytest.raises(error, match=repr(bad).replace(".", r"\.")):
            run(main)
        assert signal.getsignal(USR1) == outer.handler

    @pytest.mark.parametrize("name", ["SIGKILL", "SIGSTOP"])
    def test_uncatchable_signals(self, name: str) -> None:
        async def main() -> None:
            plait.open_signal_receiver(getattr(signal, name))

        with pytest.raises(ValueError, match=f"{name} cannot be caught"):
            run(main)

    def test_duplicates_are_one(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.open_signal_receiver(USR1, USR1, signal.Signals.SIGUSR1) as signals:
                assert signals._signals == (USR1,)
            assert signal.getsignal(USR1) == outer.handler

        run(main)

    def test_repr(self, outer: Outer) -> None:
        async def main() -> None:
            with plait.open_signal_receiver(USR1, HUP) as signals:
                send(HUP)
                assert repr(signals) == (
                    "<plait signal receiver for SIGUSR1, SIGHUP, open, pending: SIGHUP>"
                )

        run(main)
