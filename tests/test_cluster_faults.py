"""plait.cluster.DaskPool when things go wrong or end, on real LocalClusters on
127.0.0.1: a pool that starts its own cluster and closes it (no dask process, no
thread left), a scheduler address with nothing listening, and workers killed
mid-task (a call dask retried successfully returns; one that kills every worker it
runs on raises ``BrokenWorkerError``, and the cluster goes on), and bad arguments.

The killed-worker tests share a dedicated cluster (:func:`dying_cluster`, dask's
``allowed_failures=1``: a task may kill one worker and be retried, the second death
gives up) so that the workers restarted by their nannies disturb no other test.
Determinism: as in tests/test_cluster.py (files, and polls bounded by ``fail_after``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading

import pytest

import plait
from plait.cluster import DaskPool

distributed = pytest.importorskip(
    "distributed",
    reason="plait.cluster.DaskPool needs dask.distributed: pip install 'plait[cluster]'",
)

import dask  # noqa: E402 - (installed with distributed)

from gates import square, touch  # noqa: E402
from test_cluster import (  # noqa: E402 - after the skip: test_cluster needs distributed
    run_with_guard,
    start_local_cluster,
    until,
)

# Threads that outlive a pool by design: dask's two process-wide executor threads, and
# plait's cache threads (idle ones exit by themselves after 10 s).
LASTING_THREADS = ("Dask-Offload_", "Dask-Callback-Thread_", "plait worker")
LEFTOVER_WAIT = 10.0  # a guard: how long processes and threads may take to end


# -- functions the workers run (module level: the workers import them by name) ---------


def kill_first_try(marker):
    """SIGKILL our own worker the first time (leaving our pid in ``marker``); return
    our pid when tried again (by dask, on another worker)."""
    if not os.path.exists(marker):
        touch(marker, str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def heartbeat_state(dask_worker):
    """Is the worker's heartbeat running, and would its logger let the error of a
    failed heartbeat through?"""
    failed = logging.LogRecord(
        "distributed.worker",
        logging.ERROR,
        __file__,
        0,
        "Failed to communicate with scheduler during heartbeat.",
        None,
        None,
    )
    running = dask_worker.periodic_callbacks["heartbeat"].is_running()
    return running, bool(logging.getLogger("distributed.worker").filter(failed))


def kill_always(record_dir):
    touch(os.path.join(record_dir, str(os.getpid())))
    os.kill(os.getpid(), signal.SIGKILL)


# -- helpers ----------------------------------------------------------------------------


def children():
    """Our child processes (zombies included): pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != os.getpid():
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
    return found


def exists(pid):
    """Is there a process ``pid`` (a zombie counts)?"""
    return os.path.exists(f"/proc/{pid}")


def new_children(before):
    """Children not in ``before``, apart from multiprocessing's resource tracker (a
    process-wide helper started with the first spawned process, which outlives it)."""
    return {
        pid: cmd
        for pid, cmd in children().items()
        if pid not in before and "multiprocessing.resource_tracker" not in cmd
    }


def new_threads(before):
    return sorted(
        t.name
        for t in set(threading.enumerate()) - before
        if t.is_alive() and not t.name.startswith(LASTING_THREADS)
    )


async def nothing_left(before_children, before_threads):
    """Wait (bounded) until no new child process and no new thread is left."""
    with plait.move_on_after(LEFTOVER_WAIT):  # (only a guard: the asserts say what is left)
        while new_children(before_children) or new_threads(before_threads):
            await plait.sleep(0.01)
    assert new_children(before_children) == {}
    assert new_threads(before_threads) == []


@pytest.fixture
def port_8787_taken():
    """Hold 127.0.0.1:8787, dask's default HTTP port (if another process on the
    machine holds it already, it is taken all the same)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 8787))
        sock.listen(1)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    try:
        yield
    finally:
        sock.close()


# -- a pool that starts its own cluster ---------------------------------------------------


class TestOwnCluster:
    def test_starts_and_closes_its_own_cluster_leaving_nothing(self):
        before_children, before_threads = children(), set(threading.enumerate())

        async def main():
            async with DaskPool(n_workers=2) as pool:
                assert pool.max_workers == 2
                client = pool.client
                pids = sorted((await plait.to_thread.run_sync(client.run, os.getpid)).values())
                assert len(pids) == 2 and set(pids) <= set(children())  # ours
                assert [r async for r in pool.map(square, range(5))] == [0, 1, 4, 9, 16]
                assert await pool.run_sync(os.getpid) in pids
            assert pool.client is None and client.status == "closed"
            await nothing_left(before_children, before_threads)
            return pids

        pids = run_with_guard(main)
        assert not any(exists(pid) for pid in pids)

    def test_closing_first_stops_the_worker_heartbeats(self):
        """Closing a LocalCluster retires its workers and drops their connections; a
        heartbeat on its way then fails, and the worker logs an ERROR with a traceback
        to our stderr (dask/distributed#7105; seen once in CI, in the cluster example).
        Before closing, the pool stops the heartbeats and filters that one error."""
        from plait.cluster._dask import _quiet_workers

        async def main():
            async with DaskPool(n_workers=1) as pool:
                client = pool.client
                state = await plait.to_thread.run_sync(client.run, heartbeat_state)
                assert list(state.values()) == [(True, True)]
                await plait.to_thread.run_sync(_quiet_workers, client)
                state = await plait.to_thread.run_sync(client.run, heartbeat_state)
                assert list(state.values()) == [(False, False)]

        run_with_guard(main)

    def test_starts_when_port_8787_is_taken(self, port_8787_taken):
        """dask's scheduler serves HTTP on 8787 unless told otherwise, and warns when
        that port is taken (by any other dask cluster on the machine)."""
        before_children, before_threads = children(), set(threading.enumerate())

        async def main():
            pool = DaskPool(n_workers=1, threads_per_worker=2)  # started by its first call
            try:
                assert await pool.run_sync(square, 3) == 9
                assert pool.max_workers == 2
            finally:
                await pool.aclose()
            await nothing_left(before_children, before_threads)

        run_with_guard(main)


# -- nothing at the address ------------------------------------------------------------------


class TestConnectionFailure:
    def test_nothing_listening_fails_with_dask_connect_timeout(self):
        """dask retries a refused connection until its connect timeout (30 s by
        default; DaskPool has no timeout option), so this test shortens it."""
        before_children, before_threads = children(), set(threading.enumerate())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
            address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"

            async def main():
                pool = DaskPool(address)
                with pytest.raises(OSError, match=f"Timed out trying to connect to {address}"):
                    async with pool:
                        pytest.fail("connected to nothing")
                assert pool.client is None
                with pytest.raises(plait.ClosedResourceError):
                    await pool.run_sync(square, 1)  # (the failed `async with` closed it)
                lazy = DaskPool(address)
                with pytest.raises(OSError, match="Timed out trying to connect"):
                    await lazy.run_sync(square, 1)
                await lazy.aclose()
                await nothing_left(before_children, before_threads)

            with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
                run_with_guard(main)


# -- workers killed mid-task -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dying_cluster():
    cluster = start_local_cluster(allowed_failures=1)
    try:
        yield cluster
    finally:
        cluster.close()


class TestKilledWorkers:
    def test_a_call_retried_by_dask_after_its_worker_died_returns(self, dying_cluster, tmp_path):
        marker = str(tmp_path / "killed")

        async def main():
            async with DaskPool(dying_cluster.scheduler_address) as pool:
                pid = await pool.run_sync(kill_first_try, marker)
                assert await pool.run_sync(square, 4) == 16
            return pid

        pid = run_with_guard(main)
        with open(marker) as f:
            killed = int(f.read())
        assert pid != killed  # it ran again in another worker process ...
        assert not exists(killed)  # ... after the first one died (and was reaped)

    def test_a_call_that_kills_every_worker_breaks_and_the_cluster_goes_on(
        self, dying_cluster, tmp_path
    ):
        async def main():
            async with DaskPool(dying_cluster.scheduler_address) as pool:
                with pytest.raises(plait.BrokenWorkerError) as info:
                    await pool.run_sync(kill_always, str(tmp_path))
                # The nannies restart the workers: the cluster goes on.
                values = [r async for r in pool.map(square, range(4))]
                await until(lambda: len(dying_cluster.scheduler.workers) == 2)
            return info.value, values

        error, values = run_with_guard(main)
        assert values == [0, 1, 4, 9]
        assert isinstance(error.__cause__, distributed.KilledWorker)
        assert "dask gave up on the call" in str(error)
        assert "kill_always" in str(error.__cause__)
        killed = [int(name) for name in os.listdir(tmp_path)]
        assert len(killed) == 2  # allowed_failures=1: tried twice
        assert not any(exists(pid) for pid in killed)

    def test_a_map_ends_with_broken_worker_error(self, dying_cluster, tmp_path):
        async def main():
            async with DaskPool(dying_cluster.scheduler_address) as pool:
                fn = lambda x: kill_always(str(tmp_path)) if x == 1 else x  # noqa: E731
                with pytest.raises((plait.BrokenWorkerError, ExceptionGroup)) as info:
                    async for _ in pool.map(fn, [0, 1, 2]):
                        pass
                return info.value, await pool.run_sync(square, 5)

        error, value = run_with_guard(main)
        assert value == 25
        # When a worker dies, dask counts it against every call it held, running or
        # queued there: an innocent call may fail with the guilty one.
        errors = error.exceptions if isinstance(error, ExceptionGroup) else [error]
        assert all(isinstance(e, plait.BrokenWorkerError) for e in errors), errors


# -- arguments ------------------------------------------------------------------------------


class TestArguments:
    @pytest.mark.parametrize(
        ("args", "kwargs", "error", "match"),
        [
            (("127.0.0.1:8786",), {}, ValueError, r"has no protocol: write 'tcp://127\.0"),
            ((8786,), {}, TypeError, "must be a scheduler address such as 'tcp://"),
            ((b"tcp://127.0.0.1:8786",), {}, TypeError, "got b'tcp"),
            (("tcp://127.0.0.1:8786",), {"n_workers": 2}, ValueError, "only applies to the"),
            ((), {"n_workers": 0}, ValueError, "n_workers must be an int >= 1, got 0"),
            ((), {"n_workers": True}, ValueError, "n_workers must be an int >= 1, got True"),
            ((), {"n_workers": 1.5}, ValueError, "n_workers must be an int >= 1, got 1.5"),
            ((), {"threads_per_worker": 0}, ValueError, "threads_per_worker must be an int >= 1"),
            ((), {"threads_per_worker": True}, ValueError, r"threads_per_worker .* got True"),
            ((), {"threads_per_worker": None}, ValueError, r"threads_per_worker .* got None"),
        ],
    )
    def test_bad_arguments(self, args, kwargs, error, match):
        with pytest.raises(error, match=match):
            DaskPool(*args, **kwargs)

    def test_async_functions_and_non_functions_are_refused(self):
        async def coro_fn():
            pass

        async def main():
            pool = DaskPool("tcp://127.0.0.1:1")  # never started: no connection is made
            with pytest.raises(TypeError, match="async function"):
                await pool.run_sync(coro_fn)
            with pytest.raises(TypeError, match="needs a function"):
                pool.map(42, [1])
            await pool.aclose()
            assert pool.client is None

        run_with_guard(main)
