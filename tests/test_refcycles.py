"""The runtime creates no reference cycles (DESIGN.md section 6).

With the cyclic garbage collector disabled, a finished, a failed and a cancelled task,
their frames (observed through an object held in a local variable: frames cannot be
weak-referenced), their locals and their exceptions must be freed by reference counting
alone as soon as the user drops them. Each test tracks objects with weak references
while ``plait.run`` executes with ``gc.disable()``; every reference must be dead when
``plait.run`` has returned (or raised, and the ``except`` block has ended).

When something survives, the failure message names the reference cycle that keeps it
alive (found with ``gc.DEBUG_SAVEALL``), e.g. ``frame Loop._run_once -[tb]-> traceback
-[tb_frame]-> frame Loop._run_once``.
"""

from __future__ import annotations

import gc
import itertools
import socket
import types
import weakref
from collections import deque

import pytest

import plait
from plait.lowlevel import wait_readable
from plait.testing import MockClock, wait_all_tasks_blocked


class Marker:
    """An object kept in a task's local variables: it lives exactly as long as the frame."""


class Boom(Exception):
    pass


class Tracker:
    """Weak references with labels."""

    def __init__(self):
        self.refs: list[tuple[str, weakref.ref]] = []

    def __call__(self, label, obj):
        self.refs.append((label, weakref.ref(obj)))
        return obj

    def marker(self, label):
        return self(label, Marker())

    def alive(self):
        """Labels of the objects still alive (no strong reference is kept here)."""
        return [label for label, ref in self.refs if ref() is not None]


def _describe(obj):
    if isinstance(obj, types.FrameType):
        return f"frame {obj.f_code.co_qualname}"
    if isinstance(obj, types.CoroutineType):
        return f"coroutine {obj.__qualname__}"
    if isinstance(obj, types.TracebackType):
        return "traceback"
    if isinstance(obj, dict | list | tuple | set):
        return f"{type(obj).__name__}[{len(obj)}]"
    return type(obj).__qualname__


def _edge(src, dst):
    """The name of the reference from ``src`` to ``dst``, as far as it can be told."""
    if isinstance(src, types.FrameType):
        for name, value in src.f_locals.items():
            if value is dst:
                return name
    if isinstance(src, dict):
        for key, value in src.items():
            if value is dst:
                return repr(key)
    names = [*getattr(type(src), "__slots__", ()), "tb_frame", "tb_next", "__traceback__"]
    names += ["__context__", "__cause__", "cr_frame", "f_back", "__dict__"]
    for name in names:
        try:
            if getattr(src, name) is dst:
                return name
        except Exception:
            pass
    return ""


def _cycle_through(start, garbage_ids):
    """A shortest reference cycle from ``start`` back to itself, within the garbage."""
    prev = {id(start): None}
    queue = deque([start])
    while queue:
        obj = queue.popleft()
        for ref in gc.get_referents(obj):
            if ref is start:
                path = [obj]
                while prev[id(path[-1])] is not None:
                    path.append(prev[id(path[-1])])
                return [*reversed(path), start]
            if id(ref) in garbage_ids and id(ref) not in prev:
                prev[id(ref)] = obj
                queue.append(ref)
    return None


def _diagnose(alive):
    """Explain why the tracked objects survived: which cycles the collector finds."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(0)
    garbage = list(gc.garbage)
    gc.garbage.clear()
    garbage_ids = {id(o) for o in garbage}
    cycles, seen = [], set()
    for obj in garbage:
        if not isinstance(obj, types.FrameType | plait.Task | BaseException):
            continue
        cycle = _cycle_through(obj, garbage_ids)
        if cycle is None or frozenset(map(id, cycle)) in seen:
            continue
        seen.add(frozenset(map(id, cycle)))
        hops = [f"{_describe(a)} -[{_edge(a, b)}]->" for a, b in itertools.pairwise(cycle)]
        cycles.append(" ".join([*hops, _describe(cycle[-1])]))
    garbage.clear()
    found = "\n  ".join(cycles) or "(no cycle: something still holds a strong reference)"
    return f"still alive without the cyclic GC: {', '.join(alive)}\ncycles:\n  {found}"


def run_no_gc(main, *, raises=None):
    """Run ``main(track)`` under ``plait.run`` with the cyclic GC disabled and assert
    that everything ``track``-ed is dead afterwards. ``raises``: the exception type
    ``plait.run`` must raise (it is tracked too)."""
    track = Tracker()
    gc.collect()
    gc.disable()
    try:
        try:
            plait.run(main, track, clock=MockClock(autojump_threshold=0))
        except BaseException as exc:
            if raises is None or not isinstance(exc, raises):
                raise
            track("exception raised out of plait.run", exc)
        else:
            assert raises is None, f"plait.run did not raise {raises.__name__}"
        alive = track.alive()
        if alive:
            pytest.fail(_diagnose(alive))
    finally:
        gc.enable()
    assert track.refs, "nothing was tracked"


async def _child_returns(track):
    local = track.marker("local of a finished task")
    await plait.sleep(1)
    assert local is not None
    return track.marker("result of a finished task")


async def _child_raises(track):
    local = track.marker("local of a failed task")
    await plait.sleep(1)
    assert local is not None
    raise track("exception of a failed task", Boom("child failed"))


async def _child_sleeps_forever(track, label):
    local = track.marker(f"local of a {label} task")
    try:
        await plait.sleep_forever()
    except plait.Cancelled as exc:
        track(f"Cancelled raised in a {label} task", exc)
        raise
    finally:
        assert local is not None


def _outcome(task):
    """The type name of what ``task.result()`` returns or raises. (This frame holds
    ``task`` while the exception passes through it: ``del`` it, as user code must.)"""
    try:
        return type(task.result()).__name__
    except Boom as exc:
        return type(exc).__name__
    finally:
        del task


class TestFinishedTasksAreFreed:
    def test_task_that_returns(self):
        async def main(track):
            async with plait.TaskGroup() as tg:
                track("finished task", tg.spawn(_child_returns, track))
            track("main task", plait.current_task())

        run_no_gc(main)

    def test_task_that_raises(self):
        async def main(track):
            try:
                async with plait.TaskGroup() as tg:
                    track("failed task", tg.spawn(_child_raises, track))
                    track("sibling", tg.spawn(_child_sleeps_forever, track, "sibling"))
            except* Boom as group:
                track("caught exception group", group)

        run_no_gc(main)

    def test_await_failed_task(self):
        async def main(track):
            try:
                async with plait.TaskGroup() as tg:
                    task = track("failed task", tg.spawn(_child_raises, track))
                    with plait.CancelScope(shield=True):  # not cancelled by the failure
                        try:
                            await task
                        except Boom as exc:
                            track("exception from 'await task'", exc)
                    del task  # this frame is in the exception's traceback: drop the task
            except* Boom:
                pass

        run_no_gc(main)

    def test_main_task_exception_out_of_plait_run(self):
        async def main(track):
            track("main task", plait.current_task())
            local = track.marker("local of the main task")
            await plait.sleep(1)
            assert local is not None
            raise track("main task's exception", Boom("main failed"))

        run_no_gc(main, raises=Boom)

    def test_main_task_exception_group_out_of_plait_run(self):
        async def main(track):
            async with plait.TaskGroup() as tg:
                track("failed task", tg.spawn(_child_raises, track))

        run_no_gc(main, raises=ExceptionGroup)


class TestCancelledTasksAreFreed:
    def test_group_cancel_scope(self):
        async def main(track):
            async with plait.TaskGroup() as tg:
                for _ in range(2):
                    track("cancelled task", tg.spawn(_child_sleeps_forever, track, "cancelled"))
                await wait_all_tasks_blocked()
                tg.cancel_scope.cancel()

        run_no_gc(main)

    def test_task_cancel(self):
        async def main(track):
            async with plait.TaskGroup() as tg:
                task = track("cancelled task", tg.spawn(_child_sleeps_forever, track, "cancelled"))
                await wait_all_tasks_blocked()
                task.cancel()
                try:
                    await task
                except plait.Cancelled as exc:
                    track("Cancelled from 'await task'", exc)
            assert task.cancelled()

        run_no_gc(main)

    def test_fail_after_timeout(self):
        async def main(track):
            local = track.marker("local of the timed-out code")
            try:
                with plait.fail_after(1):
                    try:
                        await plait.sleep_forever()
                    except plait.Cancelled as exc:
                        track("Cancelled from the timeout", exc)
                        raise
            except TimeoutError as exc:  # builtin: not weak-referenceable, so tag it
                exc.tag = track.marker("TimeoutError")
            assert local is not None

        run_no_gc(main)

    def test_move_on_after_in_a_child(self):
        async def child(track):
            local = track.marker("local of the child")
            with plait.move_on_after(1):
                await _child_sleeps_forever(track, "timed-out")
            assert local is not None

        async def main(track):
            async with plait.TaskGroup() as tg:
                track("child", tg.spawn(child, track))

        run_no_gc(main)


async def _never_started(task_status=plait.TASK_STATUS_IGNORED):
    await plait.sleep_forever()


async def _start_waits():
    async with plait.TaskGroup() as tg:
        await tg.start(_never_started)


async def _as_completed_waits():
    async for _ in plait.as_completed([plait.sleep_forever()]):
        pass


async def _nested_group_waits():
    async with plait.TaskGroup() as tg:
        tg.spawn(plait.sleep_forever)


BLOCKING_WAITS = {
    "sleep": lambda _: plait.sleep(10),
    "sleep_forever": lambda _: plait.sleep_forever(),
    "join": lambda sleeper: sleeper,
    "wait_readable": None,  # filled in by the test: needs a socket
    "wait_all_tasks_blocked": lambda _: wait_all_tasks_blocked(10.0),
    "start": lambda _: _start_waits(),
    "taskgroup_exit": lambda _: _nested_group_waits(),
    "gather": lambda _: plait.gather(plait.sleep_forever()),
    "as_completed": lambda _: _as_completed_waits(),
}


class TestTasksCancelledInEveryWaitAreFreed:
    @pytest.mark.parametrize("how", ["group", "task"])
    @pytest.mark.parametrize("kind", list(BLOCKING_WAITS))
    def test_cancelled_while_blocked(self, kind, how):
        a, b = socket.socketpair()

        async def child(track, sleeper):
            local = track.marker(f"local of a task cancelled in {kind}")
            wait = BLOCKING_WAITS[kind] or (lambda _: wait_readable(a))
            try:
                await wait(sleeper)
            except plait.Cancelled as exc:
                track(f"Cancelled raised in {kind}", exc)
                raise
            finally:
                assert local is not None

        async def main(track):
            async with plait.TaskGroup() as tg:
                sleeper = tg.spawn(plait.sleep_forever)
                task = track(f"task cancelled in {kind}", tg.spawn(child, track, sleeper))
                await wait_all_tasks_blocked()
                if how == "task":
                    task.cancel()
                    await wait_all_tasks_blocked()
                    sleeper.cancel()
                else:
                    tg.cancel_scope.cancel()
            assert task.done()

        with a, b:
            run_no_gc(main)


class TestHelpersAreFreed:
    def test_gather_with_one_failure(self):
        async def main(track):
            try:
                await plait.gather(
                    _child_returns(track),
                    _child_raises(track),
                    _child_sleeps_forever(track, "gathered"),
                )
            except Boom as exc:
                track("exception out of gather", exc)

        run_no_gc(main)

    def test_gather_success(self):
        async def main(track):
            results = await plait.gather(_child_returns(track), _child_returns(track))
            assert len(results) == 2

        run_no_gc(main)

    def test_as_completed(self):
        async def main(track):
            async with plait.as_completed(
                [_child_returns(track), _child_raises(track), _child_sleeps_forever(track, "x")]
            ) as it:
                outcomes = []
                async for task in it:
                    outcomes.append(_outcome(track("task from as_completed", task)))
                    if len(outcomes) == 2:
                        break  # the third task sleeps forever: aclose() cancels it
                del task
            assert sorted(outcomes) == ["Boom", "Marker"]

        run_no_gc(main)

    def test_start(self):
        async def started(track, task_status=plait.TASK_STATUS_IGNORED):
            local = track.marker("local of a started task")
            task_status.started(track.marker("started value"))
            await plait.sleep(1)
            assert local is not None
            raise Boom("after started")

        async def main(track):
            try:
                async with plait.TaskGroup() as tg:
                    await tg.start(started, track)
            except* Boom:
                pass

        run_no_gc(main)


class TestRegressions:
    """What holds after the review: joining a failed task through ``plait.gather``
    with coroutine arguments creates no cycle. (Holding a failed Task in one's own
    frame while its exception passes through that frame is a cycle the user makes,
    as in asyncio: it is not tested here.)"""

    def test_gather_in_a_child_task_joins_a_failure(self):
        async def joiner(track):
            try:
                await plait.gather(_child_raises(track), _child_sleeps_forever(track, "gathered"))
            except Boom as exc:
                track("exception caught by the joiner", exc)

        async def main(track):
            async with plait.TaskGroup() as tg:
                track("joiner task", tg.spawn(joiner, track))

        run_no_gc(main)

    def test_gather_with_return_exceptions(self):
        async def main(track):
            results = await plait.gather(
                _child_returns(track), _child_raises(track), return_exceptions=True
            )
            assert [type(r) for r in results] == [Marker, Boom]

        run_no_gc(main)

    def test_failure_joined_twice_through_gather(self):
        async def main(track):
            for _ in range(2):
                try:
                    await plait.gather(_child_raises(track), _child_returns(track))
                except Boom as exc:
                    track("exception out of gather", exc)

        run_no_gc(main)
