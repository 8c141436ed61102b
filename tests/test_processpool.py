"""plait.ProcessPool on real processes: what a call can carry (lambdas, closures by
value, nested functions, partials, results of many types), the executor facade, map
(order, read-ahead, progress), the workers (the max_workers bound, reuse,
max_tasks_per_worker, the initializer), argument checks, and large buffers through
shared memory (never a name in /dev/shm). (Crashes, errors, cancellation, closing,
plait.to_process, orphans: tests/test_processpool_faults.py.)

Determinism: a call that must be caught mid-way runs :func:`held`, which announces
itself with a file and then waits for the test to create another (:class:`Gate`);
the test polls for files with ``plait.sleep`` in a loop bounded by ``fail_after``.
Nothing waits on time alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import fractions
import functools
import os

import numpy as np
import pytest

import plait
from gates import DEADLINE, Gate, held, pid_and, slow_square, square, touch
from plait._processes import _serial
from plait._processes._pool import default_max_workers
from plait.abc import MapProgress

MIB = _serial.THRESHOLD  # 1 MiB: buffers this large go through shared memory
SHM = "/dev/shm"


# -- helpers (module level: workers import them from this module) ----------------------


@pytest.fixture
def gate(tmp_path):
    gate = Gate(tmp_path)
    yield gate
    gate.open()  # (a failed test must not leave a worker held)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def set_up_worker(record_dir, value):
    """An initializer: records that it ran (a file named by our pid)."""
    os.environ["PLAIT_TEST_INIT"] = value
    touch(os.path.join(record_dir, f"init-{os.getpid()}"))


def initialized():
    return os.environ.get("PLAIT_TEST_INIT"), os.getpid()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


# -- what a call carries ---------------------------------------------------------------


class TestRunSync:
    def test_lambda_runs_in_another_process(self):
        async def main():
            async with plait.ProcessPool(1) as pool:
                return await pool.run_sync(lambda a, b: (a + b, os.getpid()), 2, 3)

        value, pid = plait.run(main)
        assert value == 5
        assert pid != os.getpid()

    def test_closure_is_captured_by_value_when_the_call_is_made(self):
        async def main():
            box = [1]

            def add_two():
                box.append(2)  # changes the worker's copy only
                return list(box)

            async with plait.ProcessPool(1) as pool:
                first = await pool.run_sync(add_two)
                assert box == [1]  # the worker's change is not seen here
                box.append(3)
                second = await pool.run_sync(add_two)  # sent as it is now
                assert box == [1, 3]
            return first, second

        assert plait.run(main) == ([1, 2], [1, 3, 2])

    def test_changes_after_the_call_is_made_are_not_seen(self, gate):
        async def main():
            settings = {"n": 1}
            scale = 10

            def compute():
                held(gate.dir, "call")
                return settings["n"] * scale

            async with plait.ProcessPool(1) as pool, plait.TaskGroup() as tg:
                call = tg.spawn(pool.run_sync, compute)
                await gate.started("call")
                settings["n"] = 99  # mutated while the call runs
                scale = 1000  # rebound too
                gate.open()
            return call.result()

        assert plait.run(main) == 10

    def test_nested_and_recursive_functions_and_local_classes(self):
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        def outer(k):
            return lambda x: fib(x) + k

        class Accumulator:
            def __init__(self, start):
                self.total = start

            def add(self, *values):
                self.total += sum(values)
                return self

        async def main():
            async with plait.ProcessPool(1) as pool:
                a = await pool.run_sync(outer(100), 10)
                acc = await pool.run_sync(Accumulator(5).add, 1, 2, 3)
                return a, type(acc).__name__, acc.total

        assert plait.run(main) == (155, "Accumulator", 11)

    def test_module_level_builtin_and_partial_functions(self):
        def power(base, *, exponent, modulo=None):
            return pow(base, exponent, modulo)

        async def main():
            async with plait.ProcessPool(1) as pool:
                return [
                    await pool.run_sync(square, 12),
                    await pool.run_sync(sum, range(101)),
                    await pool.run_sync(functools.partial(int, "ff", base=16)),
                    await pool.run_sync(functools.partial(power, exponent=10), 2),
                    await pool.run_sync(functools.partial(power, 3, exponent=4, modulo=7)),
                    await pool.run_sync(functools.partial(lambda *a, **k: (a, k), 1, z=2), 3),
                ]

        assert plait.run(main) == [144, 5050, 255, 1024, 81 % 7, ((1, 3), {"z": 2})]

    def test_results_of_many_types(self):
        class Local:
            def __init__(self, v):
                self.v = v

        when = datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC)
        scalars = [None, True, -(2**100), 1.5, float("inf"), 3 - 4j, "naïve ☃", b"\x00\xff"]
        numbers = [decimal.Decimal("1.10"), fractions.Fraction(22, 7), when, Point(1, 2)]
        containers = [bytearray(b"abc"), [1, [2, [3]]], (1, "two"), {"a": {1: (2, 3)}}]
        sets = [{1, 2, 3}, frozenset({"x"}), range(3, 30, 3)]
        values = [*scalars, *numbers, *containers, *sets, ValueError("as a value")]

        async def main():
            async with plait.ProcessPool(1) as pool:
                echoed = [await pool.run_sync(lambda v=v: v) for v in values]
                local = await pool.run_sync(lambda: Local(7))
                returned_fn = await pool.run_sync(lambda: lambda x: x * 3)
            return echoed, local, returned_fn

        echoed, local, returned_fn = plait.run(main)
        assert echoed[:-1] == values[:-1]
        assert [type(v) for v in echoed] == [type(v) for v in values]
        assert echoed[-1].args == ("as a value",)
        assert local.v == 7
        assert returned_fn(5) == 15

    def test_executor_facade_from_a_thread(self):
        async def main():
            async with plait.ProcessPool(2) as pool:
                executor = pool.executor()

                def in_thread():
                    future = executor.submit(lambda a, b=0: a * 10 + b, 4, b=2)
                    mapped = list(executor.map(square, range(6), timeout=DEADLINE))
                    pids = {p for p, _ in executor.map(pid_and, range(4), timeout=DEADLINE)}
                    return future.result(timeout=DEADLINE), mapped, pids

                value, mapped, pids = await plait.to_thread.run_sync(in_thread)
                assert pids <= set(pool.worker_pids())
                executor.shutdown(wait=False)
            return value, mapped, os.getpid() in pids

        assert plait.run(main) == (42, [0, 1, 4, 9, 16, 25], False)


class TestMap:
    def test_unordered_delivers_what_is_ready_first(self, gate):
        async def main():
            async with plait.ProcessPool(2) as pool:
                it = pool.map(functools.partial(slow_square, gate.dir), [0, 1], ordered=False)
                async with it:
                    touch(os.path.join(gate.dir, "go1"))
                    first = await it.__anext__()  # 0 is still held
                    touch(os.path.join(gate.dir, "go0"))
                    second = await it.__anext__()
            return first, second

        assert plait.run(main) == (1, 0)

    @pytest.mark.parametrize("ordered", [True, False])
    def test_read_ahead_bounds_what_is_taken_from_the_iterable(self, ordered):
        pulled = []

        def source(n):
            for i in range(n):
                pulled.append(i)
                yield i

        async def main():
            async with plait.ProcessPool(2) as pool:
                it = pool.map(square, source(12), ordered=ordered, read_ahead=3)
                assert pulled == []
                seen = []
                async for value in it:
                    seen.append(value)
                    # Taken = delivered + at most read_ahead (all 12 once near the end).
                    assert len(pulled) == min(12, len(seen) + 3)
                return seen

        seen = plait.run(main)
        assert (seen if ordered else sorted(seen)) == [x * x for x in range(12)]

    def test_a_stalled_consumer_stalls_the_producer(self):
        pulled = []

        def source():
            for i in range(100):
                pulled.append(i)
                yield i

        async def main():
            async with plait.ProcessPool(2) as pool:
                it = pool.map(square, source(), read_ahead=4, ordered=False)
                async with it:
                    await it.__anext__()
                    with plait.fail_after(DEADLINE):
                        while it.progress().done < 5:  # every call taken has finished
                            await plait.sleep(0.01)
                    return list(pulled), it.progress()

        pulled_then, progress = plait.run(main)
        assert pulled_then == [0, 1, 2, 3, 4]
        assert progress == MapProgress(done=5, submitted=5, total=None)

    def test_progress_callback(self):
        seen = []

        async def main():
            async with plait.ProcessPool(2) as pool:
                it = pool.map(square, list(range(7)), progress=seen.append, ordered=False)
                await_all = [r async for r in it]
                return sorted(await_all), it.progress()

        results, final = plait.run(main)
        assert results == [x * x for x in range(7)]
        assert final == MapProgress(done=7, submitted=7, total=7)
        assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6, 7]
        assert all(p.total == 7 and p.done <= p.submitted <= 7 for p in seen)


# -- the workers ------------------------------------------------------------------------


class TestWorkers:
    def test_no_more_than_max_workers_are_ever_started(self, gate):
        async def main():
            async with plait.ProcessPool(2) as pool, plait.TaskGroup() as tg:
                calls = [tg.spawn(pool.run_sync, held, gate.dir, f"c{i}", i) for i in range(6)]
                first_pids = await gate.started("c0", "c1")
                assert sorted(first_pids) == sorted(pool.worker_pids())
                assert pool.started_workers == 2
                assert not any(gate.has_started(f"c{i}") for i in range(2, 6))
                gate.open()
            results = [c.result() for c in calls]
            return results, first_pids, pool.started_workers

        results, first_pids, started = plait.run(main)
        assert [v for v, _ in results] == list(range(6))
        assert {p for _, p in results} == set(first_pids)
        assert started == 2

    def test_workers_are_reused_until_max_tasks_per_worker(self):
        async def main():
            async with plait.ProcessPool(3) as pool:
                reused = [await pool.run_sync(os.getpid) for _ in range(4)]
                assert pool.started_workers == 1 and pool.worker_pids() == reused[:1]
            async with plait.ProcessPool(1, max_tasks_per_worker=2) as pool:
                pids = [await pool.run_sync(os.getpid) for _ in range(5)]
                assert pool.started_workers == 3
            return reused, pids

        reused, pids = plait.run(main)
        assert len(set(reused)) == 1
        a, b, c = pids[0], pids[2], pids[4]
        assert pids == [a, a, b, b, c] and len({a, b, c}) == 3
        assert not any(alive(p) for p in (a, b, c))  # all reaped once the pool closed

    def test_initializer_runs_once_in_each_worker(self, gate, tmp_path):
        records = str(tmp_path / "records")
        os.mkdir(records)

        def set_up(value):  # a closure over stdlib names only: it travels by value
            os.environ["PLAIT_TEST_INIT"] = value
            with open(os.path.join(records, f"init-{os.getpid()}"), "w"):
                pass

        async def two_workers():
            async with (
                plait.ProcessPool(2, initializer=set_up, initargs=("ready",)) as pool,
                plait.TaskGroup() as tg,
            ):
                tg.spawn(pool.run_sync, held, gate.dir, "a")
                tg.spawn(pool.run_sync, held, gate.dir, "b")
                pids = await gate.started("a", "b")
                gate.open()
                env = await pool.run_sync(lambda: os.environ.get("PLAIT_TEST_INIT"))
            return pids, env

        async def one_reused():
            # A module-level initializer travels by name: the worker imports this
            # module, which it can only do once it has the parent's sys.path.
            pool = plait.ProcessPool(1, initializer=set_up_worker, initargs=(records, "x"))
            async with pool:
                return [await pool.run_sync(initialized) for _ in range(3)]

        pids, env = plait.run(two_workers)
        assert env == "ready"
        assert sorted(os.listdir(records)) == sorted(f"init-{p}" for p in pids)
        values = plait.run(one_reused)
        assert {v for v, _ in values} == {"x"} and len({p for _, p in values}) == 1
        assert len(os.listdir(records)) == 3  # one more worker, initialized once

    def test_failing_initializer_breaks_the_call_with_its_error(self):
        def set_up(message):
            raise LookupError(message)

        async def main():
            async with plait.ProcessPool(2, initializer=set_up, initargs=("no db",)) as pool:
                with pytest.raises(plait.BrokenWorkerError, match="initializer") as info:
                    await pool.run_sync(square, 2)
                assert pool.worker_pids() == []
                with pytest.raises(plait.BrokenWorkerError, match="no db"):  # and again
                    await pool.run_sync(square, 2)
                assert pool.started_workers == 2
            return info.value

        error = plait.run(main)
        assert type(error.__cause__) is LookupError
        assert str(error.__cause__) == "no db"
        assert "in set_up" in str(error.__cause__.__cause__)  # the worker's traceback

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"max_workers": 0}, ValueError, "max_workers must be >= 1"),
            ({"max_workers": -3}, ValueError, "max_workers must be >= 1"),
            ({"max_workers": "2"}, TypeError, "max_workers must be an int"),
            ({"max_workers": True}, TypeError, "max_workers must be an int"),
            ({"max_workers": 2.0}, TypeError, "max_workers must be an int"),
            ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker"),
            ({"max_tasks_per_worker": "3"}, ValueError, "max_tasks_per_worker"),
            ({"initargs": [1]}, TypeError, "initargs must be a tuple"),
            ({"initializer": 42}, TypeError, "initializer"),
        ],
    )
    def test_bad_arguments(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            plait.ProcessPool(**kwargs)

    def test_async_functions_and_non_functions_are_refused(self):
        async def afn():
            pass

        with pytest.raises(TypeError, match="afn is an async function"):
            plait.ProcessPool(1, initializer=afn)

        async def main():
            async with plait.ProcessPool(1) as pool:
                with pytest.raises(TypeError, match="afn is an async function"):
                    await pool.run_sync(afn)
                with pytest.raises(TypeError, match="needs a function"):
                    await pool.run_sync(42)
                with pytest.raises(TypeError, match="afn is an async function"):
                    pool.map(afn, [1])
                with pytest.raises(TypeError, match="cancellable"):
                    await pool.run_sync(square, 1, cancellable=None)
                return pool.started_workers

        assert plait.run(main) == 0

    def test_defaults(self):
        pool = plait.ProcessPool()
        assert pool.max_workers == default_max_workers() == len(os.sched_getaffinity(0))
        assert pool.started_workers == 0 and pool.worker_pids() == []


# -- large buffers -----------------------------------------------------------------------


def shm_names():
    # Named POSIX semaphores ("sem.*") come from multiprocessing in other processes on
    # this machine; plait creates none (and no other name either).
    return {n for n in os.listdir(SHM) if not n.startswith("sem.")}


def memfd_mappings():
    """How many plait shared-memory segments this process has mapped right now."""
    with open("/proc/self/maps") as f:
        return sum("plait-buffers" in line for line in f)


def inspect_and_echo(value):
    """In a worker: what arrived (and how), then the value itself back."""
    return value, memfd_mappings(), shm_names()


@pytest.fixture
def segments(monkeypatch):
    """Spy on the parent's frames: the buffer sizes announced by each message sent
    with a shared-memory segment, and by each message received with one."""
    sent, received = [], []
    outgoing, inbox_next = _serial.outgoing, _serial.Inbox.next

    def spy_outgoing(message, fd):
        if fd is not None:
            sent.append([ref.size for ref in message.buffers])
        return outgoing(message, fd)

    def spy_next(self):
        got = inbox_next(self)
        if got is not None and got[0].buffers:
            received.append([ref.size for ref in got[0].buffers])
        return got

    monkeypatch.setattr(_serial, "outgoing", spy_outgoing)
    monkeypatch.setattr(_serial.Inbox, "next", spy_next)
    return sent, received


@pytest.fixture
def shm_before():
    before = shm_names()
    yield before
    assert shm_names() <= before, "something was left in /dev/shm"


def pattern(size, seed=0):
    block = bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


@pytest.mark.usefixtures("shm_before")
class TestLargeBuffers:
    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    @pytest.mark.parametrize("size", [MIB - 1, MIB, MIB + 1, 100_000_000])
    def test_round_trip(self, kind, size, segments, shm_before):
        data = kind(pattern(size)) if kind is not memoryview else memoryview(pattern(size))

        async def main():
            async with plait.ProcessPool(1) as pool:
                back, mapped_there, shm_there = await pool.run_sync(inspect_and_echo, data)
                return back, mapped_there, shm_there, shm_names()

        back, mapped_there, shm_there, shm_here = plait.run(main)
        assert type(back) is kind
        assert back == data
        if kind is memoryview:
            assert back.format == "B" and back.shape == (size,)
        assert shm_there <= shm_before and shm_here <= shm_before
        sent, received = segments
        if size < MIB:
            assert (sent, received) == ([], [])
        else:
            assert sent == [[size]]  # the argument's segment
            assert received == [[size]]  # the result's
            if kind is memoryview:  # a view of the mapped segment, while fn ran
                assert mapped_there == 1

    @pytest.mark.parametrize("rows", [MIB // 2048 - 1, MIB // 2048, 100_000_000 // 2048])
    def test_cast_memoryview(self, rows, segments):
        raw = np.arange(rows * 256, dtype=np.float64).tobytes()
        view = memoryview(raw).cast("d", [rows, 256])  # rows of 2 KiB

        async def main():
            async with plait.ProcessPool(1) as pool:
                return await pool.run_sync(lambda v: (v.format, v.shape, v[0, 3], v), view)

        fmt, shape, item, back = plait.run(main)
        assert (fmt, shape, item) == ("d", (rows, 256), 3.0)
        assert back.format == "d" and back.shape == (rows, 256)
        assert back.tobytes() == raw
        sent, received = segments
        assert sent == received == ([[len(raw)]] if len(raw) >= MIB else [])

    @pytest.mark.parametrize(
        ("dtype", "shape", "order"),
        [
            (np.float64, (12_500_000,), "C"),  # 100 MB
            (np.int32, (2500, 10_000), "F"),  # 100 MB, Fortran order
            (np.uint8, (MIB - 1,), "C"),
            (np.uint8, (MIB + 1,), "C"),
            (np.complex64, (MIB // 8, 2), "C"),
        ],
    )
    def test_numpy_array_round_trip(self, dtype, shape, order, segments, shm_before):
        original = np.ones(shape, dtype=dtype, order=order)
        original.flat[:: max(1, original.size // 1000)] = 7

        def bump(arr):
            writable = arr.flags.writeable
            arr += 1  # in place: it arrived writable
            return arr, writable, memfd_mappings(), shm_names()

        async def main():
            async with plait.ProcessPool(1) as pool:
                back, writable, mapped_there, shm_there = await pool.run_sync(bump, original)
                return back, writable, mapped_there, shm_there, memfd_mappings(), shm_names()

        back, writable, mapped_there, shm_there, mapped_here, shm_here = plait.run(main)
        assert writable
        assert back.dtype == original.dtype and back.shape == original.shape
        assert back.flags.writeable
        assert np.array_equal(back, original + 1)
        assert original.flat[0] == 7  # the worker changed its own copy only
        assert shm_there <= shm_before and shm_here <= shm_before
        big = original.nbytes >= MIB
        sent, received = segments
        assert sent == received == ([[original.nbytes]] if big else [])
        assert mapped_there == big  # the array lived in the mapped segment
        assert mapped_here == big  # and the result does here, while we hold it
        del back
        assert memfd_mappings() == 0

    def test_containers_of_several_big_buffers(self, segments, shm_before):
        a, b, c = pattern(3 * MIB, 1), pattern(2 * MIB + 5, 2), pattern(MIB, 3)
        nested = {"a": a, "nested": [b, (c, b"small")], "n": 1}  # dict, list, tuple

        def swap(d, pair, items):
            return [items[1], d], (pair[1], d["a"]), shm_names()

        async def main():
            async with plait.ProcessPool(1) as pool:
                return await pool.run_sync(swap, nested, (b, b"s"), [a, b])

        items, pair, shm_there = plait.run(main)
        assert (items, pair) == ([b, nested], (b"s", a))
        assert shm_there <= shm_before
        # Each of a, b and c travels once each way, however often it appears.
        sent, received = segments
        assert [sorted(r) for r in sent] == [sorted([len(a), len(b), len(c)])]
        assert [sorted(r) for r in received] == [sorted([len(a), len(b), len(c)])]
        assert items[1]["a"] is pair[1]
