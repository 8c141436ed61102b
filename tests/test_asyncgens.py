"""Async generator finalization (plait._core._asyncgens): abandoned generators are closed by
the loop, in a task, with a working loop; other loops' generators are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import re
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import plait
from helpers import vrun
from plait.lowlevel import current_loop, current_task, spawn_system_task
from plait.testing import MockClock, wait_all_tasks_blocked

CLOSER = "close abandoned async generator"  # the name of a closing task
FINAL_CLOSER = "plait: close the async generators left alive"


class Boom(Exception):
    pass


class Resource:
    """An async context manager whose exit awaits, as a connection's would."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def __aenter__(self) -> Resource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await plait.sleep(0)
        self.log.append(f"{self.name}: exit")


def task_name() -> str:
    """The current task's name without the test's ``Class.test.<locals>.`` prefix."""
    return re.sub(r"\S*<locals>\.", "", current_task().name)


async def numbers(log: list[str], name: str = "gen") -> AsyncIterator[int]:
    """Yields 0, 1, 2, ... inside an ``async with``; its cleanup awaits."""
    async with Resource(log, name):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            await plait.checkpoint()
            log.append(f"{name}: finally in {task_name()}")


def closed(log: list[str], name: str = "gen") -> bool:
    """Both the ``finally`` block and the ``async with`` exit of ``name`` ran."""
    return f"{name}: exit" in log and any(e.startswith(f"{name}: finally") for e in log)


async def broken(log: list[str]) -> AsyncIterator[int]:
    try:
        yield 1
        yield 2
    finally:
        await plait.sleep(0)
        log.append("broken: finally")
        raise Boom("cleanup failed")


class FakeHooks:
    """Async generator hooks of "another event loop": they record what they get."""

    def __init__(self) -> None:
        self.first: list[str] = []
        self.finalized: list[Any] = []

    def firstiter(self, agen: Any) -> None:
        self.first.append(agen.__qualname__)

    def finalizer(self, agen: Any) -> None:
        self.finalized.append(agen)  # keeps it, suspended, for the test to look at


def collect_errors() -> list[dict[str, Any]]:
    """Install an exception handler on the running loop that records the contexts."""
    errors: list[dict[str, Any]] = []
    current_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


async def keep_alive(gen: AsyncIterator[Any], kept: list[Any]) -> None:
    """Start ``gen`` and keep it alive (in ``kept``) after the main task ends."""
    await gen.__anext__()
    kept.append(gen)


def run_without_gc(main: Any) -> Any:
    gc.collect()
    gc.disable()
    try:
        return vrun(main)
    finally:
        gc.enable()


@pytest.fixture(autouse=True)
def hooks_restored() -> Iterator[None]:
    """Every test leaves this thread's hooks as it found them."""
    before = sys.get_asyncgen_hooks()
    yield
    after = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=before.firstiter, finalizer=before.finalizer)
    assert after == before, "the async generator hooks were not restored"


@pytest.fixture
def fake_hooks() -> Iterator[FakeHooks]:
    """Hooks of "another event loop" installed in this thread; checked afterwards."""
    before = sys.get_asyncgen_hooks()
    fake = FakeHooks()
    sys.set_asyncgen_hooks(firstiter=fake.firstiter, finalizer=fake.finalizer)
    yield fake
    assert sys.get_asyncgen_hooks() == (fake.firstiter, fake.finalizer)
    sys.set_asyncgen_hooks(firstiter=before.firstiter, finalizer=before.finalizer)
    fake.finalized.clear()


async def consume_and_break(log: list[str]) -> None:
    async for i in numbers(log):
        if i == 2:
            break


async def consume_and_raise(log: list[str]) -> None:
    with pytest.raises(Boom):
        async for _ in numbers(log):
            raise Boom


async def consume_and_get_cancelled(log: list[str]) -> None:
    async def consumer() -> None:
        async for _ in numbers(log):
            await plait.sleep_forever()

    async with plait.TaskGroup() as tg:
        task = tg.spawn(consumer)
        await wait_all_tasks_blocked()
        task.cancel()
    assert task.cancelled()


async def consume_and_time_out(log: list[str]) -> None:
    with plait.move_on_after(5) as scope:
        async for _ in numbers(log):
            await plait.sleep(1)
    assert scope.cancelled_caught


async def consume_and_leave_in_a_cycle(log: list[str]) -> None:
    holder: dict[str, Any] = {"gen": numbers(log)}
    holder["self"] = holder  # only the cyclic GC can free it
    assert await holder["gen"].__anext__() == 0
    del holder
    await wait_all_tasks_blocked()
    assert log == []
    gc.collect()


class TestAbandonedGeneratorsAreClosed:
    @pytest.mark.parametrize(
        "consume",
        [
            consume_and_break,
            consume_and_raise,
            consume_and_get_cancelled,
            consume_and_time_out,
            consume_and_leave_in_a_cycle,
        ],
    )
    def test_abandoned_mid_iteration(self, consume: Any) -> None:
        log: list[str] = []

        async def main() -> None:
            await consume(log)
            assert not closed(log)  # not by the consumer, nor cancelled with it
            await wait_all_tasks_blocked()
            assert closed(log)

        run_without_gc(main)  # deterministic: only the test collects cycles
        assert log == [f"gen: finally in {CLOSER} numbers", "gen: exit"]

    def test_left_alive_closed_in_first_iteration_order_before_system_tasks_stop(self) -> None:
        log: list[str] = []
        kept: list[Any] = []

        async def service() -> None:
            try:
                await plait.sleep_forever()
            finally:
                log.append("service cancelled")

        async def main() -> None:
            spawn_system_task(service)
            a, b, c = (numbers(log, name) for name in "abc")
            for gen in (b, c, a):
                await keep_alive(gen, kept)

        vrun(main)
        closing = [
            f"{name}: {what}" for name in "bca" for what in (f"finally in {FINAL_CLOSER}", "exit")
        ]
        assert log == [*closing, "service cancelled"]

    def test_cleanup_may_sleep_and_spawn_a_task_group(self) -> None:
        log: list[str] = []
        kept: list[Any] = []

        async def tidy(name: str) -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
            finally:
                start = plait.current_time()
                await plait.sleep(5)
                async with plait.TaskGroup() as tg:
                    tg.spawn(plait.sleep, 1)
                log.append(f"{name} slept {plait.current_time() - start} in {task_name()}")

        async def main() -> float:
            async for _ in tidy("abandoned"):
                break  # its closing task is still running when main ends: awaited
            await keep_alive(tidy("kept"), kept)
            return plait.current_time()

        assert vrun(main) == 0.0
        assert log == [
            f"abandoned slept 6.0 in {CLOSER} tidy",
            f"kept slept 6.0 in {FINAL_CLOSER}",
        ]

    def test_generator_a_system_task_is_iterating_is_left_to_that_task(self) -> None:
        log: list[str] = []

        async def source() -> AsyncIterator[int]:
            try:
                await plait.sleep_forever()
                yield 1
            finally:
                log.append(f"source: finally in {task_name()}")

        async def reader() -> None:
            async for _ in source():
                pass

        async def main() -> list[dict[str, Any]]:
            errors = collect_errors()
            spawn_system_task(reader)
            await wait_all_tasks_blocked()
            return errors

        assert vrun(main) == []
        assert log == ["source: finally in reader"]  # cancelled along with the reader


class TestErrorsWhileClosing:
    def test_errors_are_reported_and_the_run_completes(self) -> None:
        log: list[str] = []
        kept: list[Any] = []
        errors: list[dict[str, Any]] = []

        async def stubborn() -> AsyncIterator[int]:
            try:
                yield 1
            finally:
                yield 2  # RuntimeError: "async generator ignored GeneratorExit"

        async def main() -> str:
            current_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
            for gen in (broken(log), stubborn()):
                async for _ in gen:
                    break
            del gen
            await wait_all_tasks_blocked()
            assert {type(c["exception"]) for c in errors} == {Boom, RuntimeError}
            errors.sort(key=lambda c: type(c["exception"]).__name__)  # closed concurrently
            await keep_alive(broken(log), kept)  # left alive at the end: reported too
            return "done"

        assert vrun(main) == "done"
        assert [type(c["exception"]) for c in errors] == [Boom, RuntimeError, Boom]
        names = [c["asyncgen"].__qualname__.rsplit(".", 1)[-1] for c in errors]
        assert names == ["broken", "stubborn", "broken"]
        assert "'broken'" in errors[0]["message"]
        assert "aclosing" in errors[0]["message"]
        assert log == ["broken: finally"] * 2

    def test_generator_of_the_run_finalized_after_it_is_closed_without_a_loop(self) -> None:
        log: list[str] = []
        kept: list[Any] = []
        errors: list[dict[str, Any]] = []

        async def late(name: str, awaits: bool) -> AsyncIterator[int]:
            try:
                yield 1
            finally:
                log.append(f"{name}: finally")
                if awaits:
                    await plait.checkpoint()  # the bare trap: there is no loop to take it

        async def service() -> None:
            try:
                await plait.sleep_forever()
            finally:  # while system tasks are cancelled: too late to be closed in the run
                await keep_alive(late("quiet", False), kept)
                await keep_alive(late("awaits", True), kept)

        async def main() -> None:
            current_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
            spawn_system_task(service)

        vrun(main)
        assert log == []
        kept.clear()  # finalized now, after the run: closed synchronously, here
        assert sorted(log) == ["awaits: finally", "quiet: finally"]
        [context] = errors
        assert isinstance(context["exception"], RuntimeError)
        assert "outside a running plait loop" in str(context["exception"])

    def test_keyboard_interrupt_while_closing_ends_the_run(self) -> None:
        async def interrupted() -> AsyncIterator[int]:
            try:
                yield 1
            finally:
                raise KeyboardInterrupt

        async def main() -> None:
            async for _ in interrupted():
                break
            await plait.sleep_forever()  # cancelled by the interrupt

        with pytest.raises(KeyboardInterrupt):
            vrun(main)


class TestHooks:
    @pytest.mark.parametrize("raises", [False, True])
    def test_installed_for_the_run_and_restored(self, fake_hooks: FakeHooks, raises: bool) -> None:
        kept: list[Any] = []

        async def main() -> None:
            hooks = sys.get_asyncgen_hooks()
            assert hooks.firstiter != fake_hooks.firstiter
            assert hooks.finalizer != fake_hooks.finalizer
            await keep_alive(numbers([]), kept)
            if raises:
                raise Boom

        with pytest.raises(Boom) if raises else contextlib.nullcontext():
            vrun(main)
        assert fake_hooks.first == []  # the generator was plait's
        # The fake_hooks fixture checks that they are installed again.

    def test_untouched_when_a_nested_run_is_refused(self) -> None:
        async def main() -> Any:
            hooks = sys.get_asyncgen_hooks()
            with pytest.raises(RuntimeError, match="inside a running plait loop"):
                plait.run(plait.checkpoint)
            return hooks == sys.get_asyncgen_hooks()

        assert vrun(main) is True

    @staticmethod
    def iterate_in_a_callback(make_gen: Any) -> None:
        """In a plait run, first iterate a generator in a loop callback (outside any
        task), then drop it."""

        def callback() -> None:
            gen = make_gen()
            with pytest.raises(StopIteration):
                gen.asend(None).send(None)  # iterated by hand

        async def main() -> None:
            current_loop().call_soon(callback)
            await wait_all_tasks_blocked()

        vrun(main)

    def test_generator_first_iterated_outside_a_task_goes_to_the_previous_hooks(
        self, fake_hooks: FakeHooks
    ) -> None:
        log: list[str] = []
        self.iterate_in_a_callback(lambda: numbers(log, "foreign"))
        assert fake_hooks.first == ["numbers"]
        assert [g.__qualname__ for g in fake_hooks.finalized] == ["numbers"]
        assert log == []  # plait did not close it: its owner's finalizer decides

    def test_foreign_generator_without_previous_hooks_closes_as_python_would(self) -> None:
        log: list[str] = []

        async def plain() -> AsyncIterator[int]:
            try:
                yield 1
            finally:
                log.append(f"finally, task={current_loop()._current_task}")

        self.iterate_in_a_callback(plain)
        assert log == ["finally, task=None"]  # synchronously, in the callback


async def asyncio_gen(log: list[str]) -> AsyncIterator[int]:
    try:
        yield 1
        yield 2
    finally:
        await asyncio.sleep(0)
        log.append(f"asyncio gen closed by asyncio: {asyncio.current_task() is not None}")


class TestOtherEventLoops:
    def test_asyncio_generator_in_another_thread_is_left_to_asyncio(self) -> None:
        log: list[str] = []

        async def asyncio_main() -> None:
            async for _ in asyncio_gen(log):
                break
            for _ in range(5):
                await asyncio.sleep(0)

        async def main() -> list[dict[str, Any]]:
            errors = collect_errors()
            thread = threading.Thread(target=asyncio.run, args=(asyncio_main(),))
            thread.start()
            thread.join()  # blocks this plait run: both loops are running meanwhile
            await wait_all_tasks_blocked()
            return errors

        assert vrun(main) == []
        assert log == ["asyncio gen closed by asyncio: True"]

    def test_plait_run_inside_an_asyncio_program(self) -> None:
        log: list[str] = []
        holder: list[Any] = []

        async def plait_main() -> None:
            holder.clear()  # dropped during the plait run, but asyncio's generator
            async for _ in numbers(log):
                break
            await wait_all_tasks_blocked()

        async def asyncio_main() -> Any:
            gen = asyncio_gen(log)
            await gen.__anext__()  # first iterated by asyncio
            holder.append(gen)
            del gen
            hooks = sys.get_asyncgen_hooks()
            plait.run(plait_main, clock=MockClock(autojump_threshold=0))
            assert sys.get_asyncgen_hooks() == hooks  # asyncio's, restored
            log.append("plait.run returned")
            for _ in range(5):
                await asyncio.sleep(0)

        asyncio.run(asyncio_main())
        assert log == [
            f"gen: finally in {CLOSER} numbers",
            "gen: exit",
            "plait.run returned",
            "asyncio gen closed by asyncio: True",
        ]


class TestThreads:
    def test_plait_runs_in_two_threads_close_their_own_generators(self) -> None:
        log: list[str] = []
        kept: list[Any] = []
        worker_hooks_restored: list[bool] = []

        async def body(where: str) -> None:
            loop = current_loop()

            async def gen() -> AsyncIterator[int]:
                try:
                    yield 1
                finally:
                    await plait.sleep(0)
                    same = current_loop() is loop
                    log.append(f"{where}: own loop={same} {threading.current_thread().name}")

            async for _ in gen():
                break
            await wait_all_tasks_blocked()
            await keep_alive(gen(), kept)

        def worker() -> None:
            fake = FakeHooks()
            sys.set_asyncgen_hooks(firstiter=fake.firstiter, finalizer=fake.finalizer)
            plait.run(body, "worker", clock=MockClock(autojump_threshold=0))
            worker_hooks_restored.append(
                sys.get_asyncgen_hooks() == (fake.firstiter, fake.finalizer)
            )

        async def main() -> None:
            mine = sys.get_asyncgen_hooks()
            thread = threading.Thread(target=worker, name="worker")
            thread.start()
            thread.join()  # the worker's run happens while this one runs
            assert sys.get_asyncgen_hooks() == mine
            await body("main")

        vrun(main)
        me = threading.current_thread().name
        assert log == [
            *["worker: own loop=True worker"] * 2,
            *[f"main: own loop=True {me}"] * 2,
        ]
        assert worker_hooks_restored == [True]

    def test_generator_dropped_in_another_thread_is_closed_by_its_loop(self) -> None:
        log: list[str] = []
        handoff: queue.Queue[Any] = queue.Queue()

        async def gen() -> AsyncIterator[int]:
            try:
                yield 1
            finally:
                await plait.sleep(0)
                log.append(f"closed in {threading.current_thread().name} by {task_name()}")

        def dropper() -> None:
            agen = handoff.get()
            del agen  # the finalizer hook runs in this thread

        async def main() -> None:
            thread = threading.Thread(target=dropper, name="dropper")
            thread.start()
            agen = gen()
            await agen.__anext__()
            handoff.put(agen)
            del agen
            thread.join()  # blocks the loop: the hook must only hand the generator over
            assert log == []
            await wait_all_tasks_blocked()

        vrun(main)
        assert log == [f"closed in {threading.current_thread().name} by {CLOSER} gen"]


class Marker:
    """Kept in a local variable: it lives exactly as long as the frame."""


class TestNoReferenceCycles:
    """With the cyclic GC off, everything is freed by reference counting alone."""

    def test_closed_generators_their_frames_and_errors_are_freed(self) -> None:
        refs: list[weakref.ref[Any]] = []

        async def gen() -> AsyncIterator[int]:
            local = Marker()
            refs.append(weakref.ref(local))
            try:
                yield 1
                yield 2
            finally:
                await plait.sleep(0)
                assert local is not None
                raise Boom

        async def holder(agen: AsyncIterator[int]) -> None:
            await agen.__anext__()
            await plait.sleep_forever()  # alive, not iterating, when main ends

        async def main() -> None:
            current_loop().set_exception_handler(lambda _, ctx: None)
            async for _ in gen():
                break
            await wait_all_tasks_blocked()
            left = gen()
            refs.append(weakref.ref(left))
            spawn_system_task(holder, left)

        run_without_gc(main)
        assert [r() for r in refs] == [None] * 3

    def test_the_loop_is_freed_after_the_run(self) -> None:
        refs: list[weakref.ref[Any]] = []

        async def main() -> None:
            refs.append(weakref.ref(current_loop()))
            async for _ in numbers([]):
                break

        run_without_gc(main)
        assert refs[0]() is None, "the loop outlived plait.run (a reference cycle)"
