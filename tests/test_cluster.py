"""plait.cluster.DaskPool against a real dask LocalCluster on 127.0.0.1: results, what a
call carries (lambdas, closures by value), exceptions with the remote traceback,
``put()`` handles, the executor facade, map (order, read-ahead, progress),
cancellation of queued and running calls, a pool connected by address (left running
on exit, closed to new calls after ``aclose``). (Workers killed mid-task, a pool that
starts its own cluster, connection failures, argument checks:
tests/test_cluster_faults.py.)

One LocalCluster of 2 single-threaded worker processes (:func:`cluster`) serves the
whole module; each test connects its own ``DaskPool(address=...)`` in its own
``plait.run``. Determinism: a call that must be caught mid-way runs :func:`held`, which
announces itself with a file and then waits for the test to create another
(:class:`Gate`, opened at teardown whatever happens, so that no worker stays stuck);
the test polls for files, or for the scheduler's view of a task, with ``plait.sleep``
in a loop bounded by ``fail_after``. Nothing waits on time alone.
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
import traceback

import pytest

import plait
from plait.abc import MapProgress
from plait.cluster import DaskPool
from plait.testing import wait_all_tasks_blocked

distributed = pytest.importorskip(
    "distributed",
    reason="plait.cluster.DaskPool needs dask.distributed: pip install 'plait[cluster]'",
)

from gates import (  # noqa: E402 - after the skip, like the imports that need distributed
    DEADLINE,
    Gate,
    appears,
    held,
    pid_and,
    slow_square,
    square,
    touch,
)

# -- functions the workers run (module level: the workers import them by name) ---------


def held_unless_free(gate_dir, name):
    return name if name == "free" else held(gate_dir, name)[0]


def record_run(path):
    touch(path, str(os.getpid()))
    return "ran"


def explode_in_worker(x):
    raise ValueError(f"bad value {x}")


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def gate(tmp_path):
    gate = Gate(tmp_path)
    yield gate
    gate.open()  # (a failed test must not leave a worker held)


def run_with_guard(main, *args):
    async def guarded():
        with plait.fail_after(DEADLINE):
            return await main(*args)

    return plait.run(guarded)


def scheduler_tasks(cluster, prefix):
    """The states of the scheduler's tasks whose key starts with ``prefix`` (the
    scheduler runs in this process, on the cluster's loop thread: a dict copy is atomic)."""
    tasks = dict(cluster.scheduler.tasks)
    return [ts.state for key, ts in tasks.items() if str(key).startswith(prefix)]


async def until(predicate):
    with plait.fail_after(DEADLINE):
        while not predicate():
            await plait.sleep(0.01)


def start_local_cluster(**scheduler_kwargs):
    """A LocalCluster of 2 single-threaded worker processes on 127.0.0.1.

    ``dashboard_address=None`` turns the dashboard off, but the scheduler still serves
    HTTP (/health, /metrics) on port 8787 by default, and warns (an error here) when
    another cluster on the machine holds it: ``scheduler_kwargs`` moves it to a free
    port on 127.0.0.1."""
    return distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0", **scheduler_kwargs},
    )


@pytest.fixture(scope="module")
def cluster():
    cluster = start_local_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


# -- calls --------------------------------------------------------------------------------


class TestCalls:
    def test_results_and_the_pool_interface(self, cluster):
        async def main():
            pool = DaskPool(cluster.scheduler_address)
            assert isinstance(pool, plait.abc.Pool)
            assert pool.client is None  # not started yet
            assert cluster.scheduler_address in repr(pool)
            async with pool:
                assert isinstance(pool.client, distributed.Client)
                assert pool.max_workers == 2  # the cluster's threads
                values = [
                    await pool.run_sync(square, 12),
                    await pool.run_sync(sum, range(101)),
                    await pool.run_sync(functools.partial(int, "ff", base=16)),
                    await pool.run_sync(square, 12),  # equal calls both run (pure=False)
                ]
                pid, _ = await pool.run_sync(pid_and, None)
            assert pool.client is None
            return values, pid

        values, pid = run_with_guard(main)
        assert values == [144, 5050, 255, 144]
        assert pid != os.getpid()

    def test_a_first_call_starts_the_pool_without_async_with(self, cluster):
        async def main():
            pool = DaskPool(cluster.scheduler_address)
            try:
                return await pool.run_sync(square, 7), pool.max_workers
            finally:
                await pool.aclose()

        assert run_with_guard(main) == (49, 2)

    def test_lambdas_and_closures_are_captured_by_value(self, cluster):
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        async def main():
            box = [1]

            def add_two():
                box.append(2)  # changes the worker's copy only
                return list(box)

            async with DaskPool(cluster.scheduler_address) as pool:
                total = await pool.run_sync(lambda a, b: a + b, 2, 3)
                nested = await pool.run_sync(lambda k: fib(k) + 100, 10)
                first = await pool.run_sync(add_two)
                assert box == [1]  # the worker's change is not seen here
                box.append(3)
                second = await pool.run_sync(add_two)  # sent as it is now
                returned_fn = await pool.run_sync(lambda: lambda x: x * 3)
            return total, nested, first, second, returned_fn(5)

        assert run_with_guard(main) == (5, 155, [1, 2], [1, 3, 2], 15)

    def test_changes_after_the_call_is_made_are_not_seen(self, cluster, gate):
        async def main():
            settings = {"n": 1}

            def compute():
                held(gate.dir, "call")
                return settings["n"] * 10

            async with DaskPool(cluster.scheduler_address) as pool:
                async with plait.TaskGroup() as tg:
                    call = tg.spawn(pool.run_sync, compute)
                    await gate.started("call")
                    settings["n"] = 99  # mutated while the call runs
                    gate.open()
            return call.result()

        assert run_with_guard(main) == 10

    def test_exceptions_come_back_with_the_remote_traceback(self, cluster):
        def inner_failure():
            return {}["missing key"]

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with pytest.raises(ValueError, match="bad value 3") as first:
                    await pool.run_sync(explode_in_worker, 3)
                with pytest.raises(KeyError) as second:
                    await pool.run_sync(inner_failure)
                assert await pool.run_sync(square, 3) == 9  # the pool goes on
            return first.value, second.value

        first, second = run_with_guard(main)
        assert type(first) is ValueError and first.args == ("bad value 3",)
        assert type(second) is KeyError and second.args == ("missing key",)
        for error, name in [(first, "explode_in_worker"), (second, "inner_failure")]:
            text = "".join(traceback.format_exception(error))
            assert f"in {name}\n" in text, text  # the worker's frame

    def test_an_unpicklable_argument_is_named(self, cluster):
        lock = threading.Lock()

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with pytest.raises(pickle.PicklingError) as info:
                    await pool.run_sync(len, [1, {"k": lock}])
                with pytest.raises(pickle.PicklingError, match="captured variable 'lock'"):
                    await pool.run_sync(lambda: lock.locked() or 1)
                with pytest.raises(pickle.PicklingError, match=r"argument 1 \(a generator"):
                    async for _ in pool.map(divmod, [1, (i for i in range(3))]):
                        pass
                assert await pool.run_sync(square, 4) == 16  # the pool goes on
            return str(info.value)

        message = run_with_guard(main)
        assert message.startswith("cannot send the call len() to the dask cluster: ")
        assert "argument 1[1]['k'] (a lock) cannot be pickled" in message
        assert "inside the function" in message  # the fix

    def test_an_unpicklable_result_fails_its_call_only(self, cluster):
        def make_lock():
            return threading.Lock()

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with pytest.raises(Exception) as info:  # dask's own error, for now
                    await pool.run_sync(make_lock)
                assert await pool.run_sync(square, 5) == 25
            return info.value

        error = run_with_guard(main)
        assert "lock" in str(error), error  # names the type that did not serialize

    def test_put_places_an_object_once_for_many_calls(self, cluster):
        data = bytes(range(256)) * 4096  # 1 MiB

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                handle = await pool.put(data)
                lengths = [await pool.run_sync(len, handle) for _ in range(3)]
                tail = await pool.run_sync(lambda d, n: d[-n:], handle, 3)
                items = [(handle, i) for i in (0, 1, 255, 256)]
                picked = [b async for b in pool.map(lambda item: item[0][item[1]], items)]
                other = await pool.put({"key": [1, 2]})
                assert await pool.run_sync(lambda d: d["key"], other) == [1, 2]
                words = await pool.put([f"w{i}" for i in range(100_000)])  # one object
                assert await pool.run_sync(len, words) == 100_000
                assert await pool.run_sync(lambda w: type(w).__name__, words) == "list"
            return lengths, tail, picked

        lengths, tail, picked = run_with_guard(main)
        assert lengths == [len(data)] * 3
        assert tail == bytes([253, 254, 255])
        assert picked == [0, 1, 255, 0]

    def test_executor_facade_from_a_thread(self, cluster):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                executor = pool.executor()

                def in_thread():
                    future = executor.submit(lambda a, b=0: a * 10 + b, 4, b=2)
                    mapped = list(executor.map(square, range(6), timeout=DEADLINE))
                    pids = {p for p, _ in executor.map(pid_and, range(4), timeout=DEADLINE)}
                    failed = executor.submit(explode_in_worker, 5)
                    return future.result(timeout=DEADLINE), mapped, pids, failed

                value, mapped, pids, failed = await plait.to_thread.run_sync(in_thread)
                executor.shutdown(wait=False)
                with pytest.raises(RuntimeError):
                    executor.submit(square, 1)
            return value, mapped, os.getpid() in pids, failed.exception(timeout=0)

        value, mapped, here, error = run_with_guard(main)
        assert (value, mapped, here) == (42, [0, 1, 4, 9, 16, 25], False)
        assert type(error) is ValueError and error.args == ("bad value 5",)


class TestMap:
    @pytest.mark.parametrize("ordered", [True, False])
    def test_results_and_read_ahead_bound(self, cluster, ordered):
        pulled = []

        def source(n):
            for i in range(n):
                pulled.append(i)
                yield i

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                it = pool.map(square, source(12), ordered=ordered, read_ahead=3)
                assert pulled == []
                seen = []
                async for value in it:
                    seen.append(value)
                    # Taken = delivered + at most read_ahead (all 12 once near the end).
                    assert len(pulled) == min(12, len(seen) + 3)
                return seen

        seen = run_with_guard(main)
        assert (seen if ordered else sorted(seen)) == [x * x for x in range(12)]

    def test_the_default_read_ahead_is_twice_the_cluster_threads(self, cluster):
        pulled = []

        def source():
            for i in range(100):
                pulled.append(i)
                yield i

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                async with pool.map(square, source()) as it:
                    assert await it.__anext__() == 0
                    await until(lambda: it.progress().done == 5)
                    return list(pulled), it.progress()

        pulled_then, progress = run_with_guard(main)
        assert pulled_then == [0, 1, 2, 3, 4]  # 1 delivered + 4 ahead, no more
        assert progress == MapProgress(done=5, submitted=5, total=None)

    def test_unordered_delivers_what_is_ready_first(self, cluster, gate):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                fn = functools.partial(slow_square, gate.dir)
                async with pool.map(fn, [2, 3], ordered=False) as it:
                    touch(os.path.join(gate.dir, "go3"))
                    first = await it.__anext__()  # 2 is still held
                    touch(os.path.join(gate.dir, "go2"))
                    second = await it.__anext__()
            return first, second

        assert run_with_guard(main) == (9, 4)

    def test_ordered_waits_for_the_first_item(self, cluster, gate):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                fn = functools.partial(slow_square, gate.dir)
                async with pool.map(fn, [2, 3]) as it, plait.TaskGroup() as tg:
                    first = tg.spawn(it.__anext__)
                    touch(os.path.join(gate.dir, "go3"))
                    await until(lambda: it.progress().done == 1)  # 3 is done ...
                    assert not first.done()  # ... but 2 comes first
                    touch(os.path.join(gate.dir, "go2"))
                    return [await first, await it.__anext__()]

        assert run_with_guard(main) == [4, 9]

    def test_progress_callback(self, cluster):
        seen = []

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                it = pool.map(square, list(range(7)), progress=seen.append, ordered=False)
                results = [r async for r in it]
                return sorted(results), it.progress()

        results, final = run_with_guard(main)
        assert results == [x * x for x in range(7)]
        assert final == MapProgress(done=7, submitted=7, total=7)
        assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6, 7]
        assert all(p.total == 7 and p.done <= p.submitted <= 7 for p in seen)

    def test_a_failing_call_ends_the_map_with_its_error(self, cluster):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with pytest.raises(ValueError, match="bad value 2"):
                    async for _ in pool.map(
                        lambda x: explode_in_worker(x) if x == 2 else x, [1, 2]
                    ):
                        pass
                return await pool.run_sync(square, 4)

        assert run_with_guard(main) == 16


# -- cancellation --------------------------------------------------------------------------


class TestCancellation:
    def test_a_queued_call_is_cancelled_before_it_starts(self, cluster, gate, tmp_path):
        marker = str(tmp_path / "ran")

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                async with plait.TaskGroup() as tg:
                    busy = [tg.spawn(pool.run_sync, held, gate.dir, n, n) for n in "ab"]
                    await gate.started("a", "b")  # both workers are busy
                    with plait.CancelScope() as scope:
                        tg.spawn(_cancel_when_queued, cluster, scope)
                        await pool.run_sync(record_run, marker)
                    assert scope.cancelled_caught
                    # The cluster forgets it; the held calls have not moved meanwhile.
                    await until(lambda: not scheduler_tasks(cluster, "record_run"))
                    assert not gate.has("a", "finished") and not gate.has("b", "finished")
                    gate.open()
                results = sorted(c.result()[0] for c in busy)
                # Calls made after it run (on both workers), and it never ran.
                assert [r async for r in pool.map(square, range(4))] == [0, 1, 4, 9]
                assert await pool.run_sync(os.path.exists, marker) is False
            return results

        assert run_with_guard(main) == ["a", "b"]
        assert not os.path.exists(marker)

    def test_a_running_call_is_cancelled_at_once_and_not_interrupted(self, cluster, gate):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with plait.CancelScope() as scope:
                    async with plait.TaskGroup() as tg:

                        async def cancel_when_started():
                            await gate.started("call")
                            scope.cancel()

                        tg.spawn(cancel_when_started)
                        await pool.run_sync(held, gate.dir, "call")
                assert scope.cancelled_caught
                # Cancelled while the function is still held on its worker:
                assert not gate.has("call", "finished")
                await until(lambda: not scheduler_tasks(cluster, "held"))  # dask forgot it
                gate.open()
                await appears(os.path.join(gate.dir, "call.finished"))  # it ran on
                return await pool.run_sync(square, 5)

        assert run_with_guard(main) == 25

    def test_move_on_after_cancels_a_running_call(self, cluster, gate):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                with plait.move_on_after(DEADLINE) as scope:
                    async with plait.TaskGroup() as tg:

                        async def expire_when_started():
                            await gate.started("call")
                            scope.deadline = plait.current_time()  # the timeout expires now

                        tg.spawn(expire_when_started)
                        await pool.run_sync(held, gate.dir, "call")
                assert scope.cancelled_caught
                assert not gate.has("call", "finished")
                await until(lambda: not scheduler_tasks(cluster, "held"))
                gate.open()
                await appears(os.path.join(gate.dir, "call.finished"))
                return [r async for r in pool.map(square, range(3))]

        assert run_with_guard(main) == [0, 1, 4]

    def test_leaving_a_map_early_cancels_its_calls(self, cluster, gate):
        def unfinished():
            return [s for s in scheduler_tasks(cluster, "held_unless_free") if s != "memory"]

        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                names = ["free", "x1", "x2", "x3", "x4"]
                fn = functools.partial(held_unless_free, gate.dir)
                async with pool.map(fn, names, read_ahead=4) as it:
                    async for value in it:
                        assert value == "free"
                        await until(lambda: started_count(gate) == 2)  # both workers busy
                        await until(lambda: len(unfinished()) == 4)  # and 2 calls wait
                        break
                await until(lambda: not unfinished())  # all 4 cancelled on the scheduler
                # ... and on the workers: the two running go on (a thread cannot be
                # stopped), the two waiting are dropped. The scheduler forgets them
                # before a worker hears of it; opening the gate sooner would race.
                await until_workers_hold_only_cancelled(pool.client, "held_unless_free")
                gate.open()
                # Calls made after them run on both workers; the two waiting never ran.
                assert [r async for r in pool.map(square, range(4))] == [0, 1, 4, 9]
            return started_count(gate)

        assert run_with_guard(main) == 2

    def test_a_call_cancelled_by_another_client_breaks(self, cluster, gate):
        def cancel_from_another_client(key):
            with distributed.Client(cluster.scheduler_address, set_as_default=False) as other:
                other.cancel([distributed.Future(key, other)], force=True)

        async def main():
            errors = []

            async def call():
                try:
                    await pool.run_sync(held, gate.dir, "call")
                except plait.BrokenWorkerError as exc:
                    errors.append(exc)

            async with DaskPool(cluster.scheduler_address) as pool:
                async with plait.TaskGroup() as tg:
                    tg.spawn(call)
                    await gate.started("call")
                    tasks = dict(cluster.scheduler.tasks)
                    [key] = [k for k in tasks if str(k).startswith("held")]
                    await plait.to_thread.run_sync(cancel_from_another_client, key)
                gate.open()
                assert await pool.run_sync(square, 6) == 36  # the pool goes on
            return errors

        [error] = run_with_guard(main)
        assert str(error).startswith("dask cancelled the call before it finished"), error


async def _cancel_when_queued(cluster, scope):
    """Cancel ``scope`` once the scheduler holds the call (waiting for a worker)."""
    await until(lambda: scheduler_tasks(cluster, "record_run"))
    scope.cancel()


async def until_workers_hold_only_cancelled(client, prefix):
    def states(dask_worker):
        tasks = dict(dask_worker.state.tasks)
        return [ts.state for key, ts in tasks.items() if str(key).startswith(prefix)]

    def only_cancelled():
        held = client.run(states)  # on each worker, through dask's own loop thread
        return all(state == "cancelled" for states in held.values() for state in states)

    with plait.fail_after(DEADLINE):
        while not await plait.to_thread.run_sync(only_cancelled):
            await plait.sleep(0.01)


def started_count(gate):
    return sum(name.endswith(".started") for name in os.listdir(gate.dir))


# -- a cluster given by address, closing --------------------------------------


class TestLifecycle:
    def test_a_cluster_given_by_address_is_left_running(self, cluster):
        async def main():
            async with DaskPool(cluster.scheduler_address) as pool:
                client = pool.client
                assert await pool.run_sync(square, 2) == 4
            return client

        client = run_with_guard(main)
        assert client.status == "closed"  # the pool's client is closed ...
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as other:
            assert other.submit(square, 9).result(timeout=DEADLINE) == 81  # ... not the cluster
            assert len(other.scheduler_info()["workers"]) == 2

    def test_a_closed_pool_refuses_work(self, cluster):
        async def main():
            pool = DaskPool(cluster.scheduler_address)
            async with pool:
                assert await pool.run_sync(square, 2) == 4
            await pool.aclose()  # idempotent
            for attempt in [
                lambda: pool.run_sync(square, 1),
                lambda: pool.put(b"x"),
                lambda: _anext(pool.map(square, [1])),
            ]:
                with pytest.raises(plait.ClosedResourceError, match="DaskPool"):
                    await attempt()
            with pytest.raises(plait.ClosedResourceError):
                pool.executor()
            with pytest.raises(plait.ClosedResourceError):
                async with pool:
                    pass

        run_with_guard(main)

    def test_aclose_waits_for_the_calls_in_progress(self, cluster, gate):
        async def main():
            pool = DaskPool(cluster.scheduler_address)
            async with plait.TaskGroup() as tg:
                call = tg.spawn(pool.run_sync, held, gate.dir, "call", "kept")
                await gate.started("call")
                closer = tg.spawn(pool.aclose)
                await wait_all_tasks_blocked()
                assert not closer.done() and pool.client is not None
                with pytest.raises(plait.ClosedResourceError):
                    await pool.run_sync(square, 1)
                gate.open()
            return call.result()[0], pool.client

        assert run_with_guard(main) == ("kept", None)


async def _anext(it):
    return await it.__anext__()


class TestDelivery:
    """Results of calls done at about the same time are fetched together, in one
    gather; a call whose result cannot be fetched fails alone."""

    def test_many_calls_at_once_each_get_their_own_outcome(self, cluster):
        def result_of(i):
            if i == 7:
                return threading.Lock()  # cannot travel back
            if i == 11:
                raise ValueError("eleven")
            return i

        async def main():
            outcomes = {}

            async def call(i):
                try:
                    outcomes[i] = await pool.run_sync(result_of, i)
                except Exception as exc:
                    outcomes[i] = type(exc)

            async with DaskPool(cluster.scheduler_address) as pool, plait.TaskGroup() as tg:
                for i in range(40):
                    tg.spawn(call, i)
            return outcomes

        outcomes = run_with_guard(main)
        assert outcomes.pop(11) is ValueError
        assert issubclass(outcomes.pop(7), Exception)  # dask's: the lock did not serialize
        assert outcomes == {i: i for i in range(40) if i not in (7, 11)}
