"""plait.ProcessPool when things go wrong, on real processes: workers that die
(os._exit, SIGKILL, a segfault; killed while idle), what cannot be pickled (arguments,
captured variables, results), exceptions raised by the function (the remote traceback;
exceptions that cannot be unpickled here), a worker's output, cancellation
(``cancellable=True`` kills the worker, ``False`` lets the call finish, a call still
waiting for a worker kills nothing), closing (no worker, thread or descriptor left),
plait.to_process's default pool (one per run, closed at its end), and a parent killed
by SIGKILL (its workers exit by themselves).

Determinism: as in tests/test_processpool.py, calls caught mid-way announce themselves
with a file (:class:`Gate`) and the test polls for files with ``plait.sleep`` under
``fail_after``; ``fail_after`` elsewhere is only a guard against hangs.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import plait
from gates import DEADLINE, Gate, appears, held, pid_and, square, touch
from plait._processes import _pool as pool_module
from plait._processes._pool import RemoteTraceback, default_max_workers
from plait.testing import wait_all_tasks_blocked
from test_processpool import MIB, alive

# -- functions the workers run (module level: imported by name in the workers) --------


def exit_3():
    os._exit(3)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    ctypes.string_at(0)


def explode_in_worker(x):
    raise ValueError(f"bad value {x}")


class TwoArgs(Exception):
    """Pickles (its args are its message) but cannot be unpickled: __init__ wants two."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raise_two_args():
    raise TwoArgs("left", "right")


class HoldsALock(Exception):
    def __init__(self):
        super().__init__("with a lock inside")
        self.lock = threading.Lock()


def raise_holds_a_lock():
    raise HoldsALock


def sleep_after_signal(path, ignore_sigterm=False):
    """Announce our pid in ``path``, then sleep far longer than any test runs."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    touch(path, str(os.getpid()))
    time.sleep(60)
    return "woke up"


def work_then_mark(gate_dir, done_path):
    held(gate_dir, "call")
    touch(done_path)
    return "finished"


def talk():
    print("hello from the worker", os.getpid())
    sys.stderr.write("and on stderr")  # no newline: the worker flushes after each call
    return os.getpid()


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    path.mkdir()
    return Gate(path)


@pytest.fixture
def gate2(tmp_path):
    path = tmp_path / "gate2"
    path.mkdir()
    return Gate(path)


def state_of(pid):
    """The state letter in /proc/<pid>/stat ('Z' for a zombie), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def reapable(pid):
    """Has our child ``pid`` exited (every thread of it), so that a wait would reap
    it? (Does not reap it. A 'Z' in /proc/<pid>/stat is not enough: the main thread
    shows it while the other threads are still exiting.)"""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def run_with_guard(main, *args):
    async def guarded():
        with plait.fail_after(DEADLINE):
            return await main(*args)

    return plait.run(guarded)


async def cancel_when_started(path, scope):
    await appears(path)
    scope.cancel()


# -- faults ---------------------------------------------------------------------------------


class TestWorkerDeath:
    @pytest.mark.parametrize(
        ("crash", "message", "exitcode"),
        [
            (exit_3, "exited with status 3", 3),
            (kill_self, "killed by SIGKILL", -signal.SIGKILL),
            (segfault, "killed by SIGSEGV", -signal.SIGSEGV),
        ],
        ids=["os._exit", "SIGKILL", "segfault"],
    )
    def test_breaks_only_its_call(self, gate, gate2, crash, message, exitcode):
        async def main():
            async with plait.ProcessPool(3) as pool:
                async with plait.TaskGroup() as tg:
                    others = [tg.spawn(pool.run_sync, held, gate.dir, n, n) for n in "ab"]
                    survivors = await gate.started("a", "b")
                    with pytest.raises(plait.BrokenWorkerError, match=message) as info:
                        await pool.run_sync(crash)
                    assert not any(t.done() for t in others)  # still running
                    gate.open()
                assert [t.result() for t in others] == [("a", survivors[0]), ("b", survivors[1])]
                error = info.value
                assert error.exitcode == exitcode
                assert error.pid not in survivors and not alive(error.pid)
                assert crash.__name__ in str(error)
                assert sorted(pool.worker_pids()) == sorted(survivors)
                # The pool goes on, with a new worker in the dead one's place.
                async with plait.TaskGroup() as tg:
                    again = [tg.spawn(pool.run_sync, held, gate2.dir, n, n) for n in "xyz"]
                    pids = await gate2.started("x", "y", "z")
                    gate2.open()
                assert [t.result()[0] for t in again] == ["x", "y", "z"]
                assert error.pid not in pids and set(survivors) < set(pids)
                assert pool.started_workers == 4
                assert await pool.run_sync(square, 7) == 49

        run_with_guard(main)

    def test_worker_killed_while_idle_is_replaced_quietly(self):
        async def main():
            async with plait.ProcessPool(1) as pool:
                pid = await pool.run_sync(os.getpid)
                os.kill(pid, signal.SIGKILL)
                with plait.fail_after(DEADLINE):
                    while not reapable(pid):  # dead, not yet reaped by the pool
                        await plait.sleep(0.01)
                new = await pool.run_sync(os.getpid)
                assert new != pid and not alive(pid)
                assert pool.worker_pids() == [new] and pool.started_workers == 2

        run_with_guard(main)


class TestPickling:
    @pytest.mark.parametrize("kind", ["lock", "generator", "socket"])
    def test_unpicklable_argument_fails_at_once(self, gate, kind):
        async def main():
            sock = socket.socket() if kind == "socket" else None
            bad = {"lock": threading.Lock(), "generator": (i for i in range(3))}.get(kind, sock)
            try:
                async with plait.ProcessPool(1) as pool, plait.TaskGroup() as tg:
                    tg.spawn(pool.run_sync, held, gate.dir, "busy")
                    await gate.started("busy")  # the only worker is busy: no waiting
                    with pytest.raises(pickle.PicklingError) as info:
                        await pool.run_sync(lambda a, b: None, 1, bad)
                    assert pool.started_workers == 1
                    gate.open()
            finally:
                if sock is not None:
                    sock.close()
            return str(info.value)

        message = run_with_guard(main)
        assert f"argument 2 (a {kind}) cannot be pickled" in message
        assert "<lambda>()" in message

    def test_the_path_to_the_culprit_is_named(self):
        lock = threading.Lock()

        async def main():
            async with plait.ProcessPool(1) as pool:
                with pytest.raises(pickle.PicklingError, match=r"argument 1\[1\]\['k'\] \(a lock"):
                    await pool.run_sync(len, [1, {"k": lock}])
                with pytest.raises(pickle.PicklingError, match="captured variable 'lock'"):
                    await pool.run_sync(lambda: lock.locked() or 1)
                return pool.started_workers

        assert run_with_guard(main) == 0

    def test_unpicklable_result(self):
        def make_lock():
            return threading.Lock()

        async def main():
            async with plait.ProcessPool(1) as pool:
                pid = await pool.run_sync(os.getpid)
                with pytest.raises(
                    pickle.PicklingError, match=r"the result of .*make_lock cannot be sent back"
                ):
                    await pool.run_sync(make_lock)
                with pytest.raises(pickle.PicklingError, match=r"result\['a'\]\[1\] \(a lock\)"):
                    await pool.run_sync(lambda: {"a": [1, threading.Lock()]})
                assert await pool.run_sync(os.getpid) == pid  # the worker lives on

        run_with_guard(main)


class TestRemoteErrors:
    def test_exception_with_the_remote_traceback(self):
        def inner_failure():
            return {}["missing key"]

        async def main():
            async with plait.ProcessPool(1) as pool:
                pid = await pool.run_sync(os.getpid)
                with pytest.raises(ValueError, match="bad value 3") as first:
                    await pool.run_sync(explode_in_worker, 3)
                with pytest.raises(KeyError) as second:
                    await pool.run_sync(inner_failure)
                assert await pool.run_sync(os.getpid) == pid  # the worker lives on
            return pid, first.value, second.value

        pid, first, second = run_with_guard(main)
        for error, name in [(first, "explode_in_worker"), (second, "inner_failure")]:
            cause = error.__cause__
            assert isinstance(cause, RemoteTraceback)
            assert cause.pid == pid
            assert f"in {name}" in str(cause) and f"in {name}" in cause.text
        assert 'raise ValueError(f"bad value {x}")' in str(first.__cause__)
        assert "ValueError: bad value 3" in str(first.__cause__)

    @pytest.mark.parametrize(
        ("fn", "words"),
        [
            (raise_two_args, ["TwoArgs", "left/right", "could not be unpickled here"]),
            (raise_holds_a_lock, ["HoldsALock", "a lock inside", "could not be pickled in"]),
        ],
    )
    def test_exception_that_cannot_cross(self, fn, words):
        async def main():
            async with plait.ProcessPool(1) as pool:
                with pytest.raises(RuntimeError) as info:
                    await pool.run_sync(fn)
            return info.value

        error = run_with_guard(main)
        assert type(error) is RuntimeError
        assert all(word in str(error) for word in words), str(error)
        assert f"in {fn.__name__}" in str(error.__cause__)

    @pytest.mark.parametrize("exc", [SystemExit(4), KeyboardInterrupt()])
    def test_exit_and_interrupt_in_the_function_do_not_kill_the_worker(self, exc):
        def raise_it():
            raise exc

        async def main():
            async with plait.ProcessPool(1) as pool:
                pid = await pool.run_sync(os.getpid)
                with pytest.raises(RuntimeError, match=f"raised {type(exc).__name__}"):
                    await pool.run_sync(raise_it)
                assert await pool.run_sync(os.getpid) == pid

        run_with_guard(main)

    def test_print_output_of_a_worker(self, capfd):
        async def main():
            async with plait.ProcessPool(1) as pool:
                return await pool.run_sync(talk)

        pid = run_with_guard(main)
        out, err = capfd.readouterr()
        assert f"hello from the worker {pid}\n" in out
        assert "and on stderr" in err


# -- cancellation and closing ------------------------------------------------------------


class TestCancellation:
    def test_cancellable_call_kills_its_worker_only(self, gate, gate2, tmp_path):
        flag = str(tmp_path / "sleeping")

        async def main():
            async with plait.ProcessPool(2) as pool:
                async with plait.TaskGroup() as tg:
                    other = tg.spawn(pool.run_sync, held, gate.dir, "other")
                    [other_pid] = await gate.started("other")
                    with plait.CancelScope() as scope:
                        tg.spawn(cancel_when_started, flag, scope)
                        await pool.run_sync(sleep_after_signal, flag)
                    assert scope.cancelled_caught
                    pid = int(await appears(flag))
                    assert not alive(pid)  # killed and reaped before run_sync returned
                    assert pool.worker_pids() == [other_pid]
                    gate.open()
                assert other.result() == (None, other_pid)
                async with plait.TaskGroup() as tg:  # two at once: one new worker
                    tg.spawn(pool.run_sync, held, gate2.dir, "x")
                    tg.spawn(pool.run_sync, held, gate2.dir, "y")
                    pids = await gate2.started("x", "y")
                    gate2.open()
                assert other_pid in pids and pid not in pids
                assert pool.started_workers == 3

        run_with_guard(main)

    def test_sigterm_ignored_means_sigkill_after_the_grace_period(self, tmp_path, monkeypatch):
        monkeypatch.setattr(pool_module, "GRACE_PERIOD", 0.2)
        flag = str(tmp_path / "stubborn")

        async def main():
            async with plait.ProcessPool(1) as pool:
                with plait.CancelScope() as scope:
                    async with plait.TaskGroup() as tg:
                        tg.spawn(cancel_when_started, flag, scope)
                        await pool.run_sync(sleep_after_signal, flag, True)
                assert scope.cancelled_caught
                assert not alive(int(await appears(flag)))
                assert await pool.run_sync(square, 3) == 9

        run_with_guard(main)

    def test_not_cancellable_call_runs_to_completion(self, gate, tmp_path):
        done = str(tmp_path / "done")
        outcome = []

        async def main():
            async with plait.ProcessPool(1) as pool:
                scope = plait.CancelScope()

                async def caller():
                    with scope:
                        value = await pool.run_sync(
                            work_then_mark, gate.dir, done, cancellable=False
                        )
                        outcome.extend([value, os.path.exists(done)])
                        await plait.checkpoint()  # the cancellation lands here
                        outcome.append("not reached")
                    outcome.append(scope.cancelled_caught)

                async with plait.TaskGroup() as tg:
                    task = tg.spawn(caller)
                    [pid] = await gate.started("call")
                    scope.cancel()
                    await wait_all_tasks_blocked()
                    assert not task.done() and alive(pid) and not os.path.exists(done)
                    gate.open()
                assert await pool.run_sync(os.getpid) == pid  # the worker was kept
                assert pool.started_workers == 1

        run_with_guard(main)
        assert outcome == ["finished", True, True]

    def test_cancelling_a_call_waiting_for_a_worker_kills_nothing(self, gate):
        async def main():
            async with plait.ProcessPool(1) as pool, plait.TaskGroup() as tg:
                first = tg.spawn(pool.run_sync, held, gate.dir, "first", 1)
                [pid] = await gate.started("first")
                scope = plait.CancelScope()

                async def waiter():
                    with scope:
                        await pool.run_sync(held, gate.dir, "second", 2)
                    return scope.cancelled_caught

                second = tg.spawn(waiter)
                await wait_all_tasks_blocked()
                scope.cancel()
                assert await second is True
                assert alive(pid) and pool.worker_pids() == [pid]
                assert pool.started_workers == 1 and not gate.has_started("second")
                gate.open()
            assert first.result() == (1, pid)

        run_with_guard(main)

    def test_leaving_a_map_early_kills_its_workers(self, tmp_path):
        flags = [str(tmp_path / f"item{i}") for i in range(2)]

        async def main():
            async with plait.ProcessPool(2) as pool:
                it = pool.map(sleep_after_signal, flags, read_ahead=2)
                async with plait.TaskGroup() as tg:
                    tg.spawn(it.__anext__)
                    pids = [int(await appears(f)) for f in flags]
                    tg.cancel_scope.cancel()
                await it.aclose()
                assert not any(alive(p) for p in pids)
                assert pool.worker_pids() == []

        run_with_guard(main)


class TestClosing:
    def test_aclose_waits_for_calls_then_leaves_no_worker_and_no_thread(self, gate):
        threads = threading.active_count()

        async def main():
            pool = plait.ProcessPool(3, max_tasks_per_worker=2)
            retired = await pool.run_sync(os.getpid)
            assert await pool.run_sync(os.getpid) == retired  # its 2nd call: it retires
            async with plait.TaskGroup() as tg:
                calls = [tg.spawn(pool.run_sync, held, gate.dir, n, n) for n in "abc"]
                pids = await gate.started("a", "b", "c")
                assert threading.active_count() == threads  # no thread in the parent
                closer = tg.spawn(pool.aclose)
                await wait_all_tasks_blocked()
                assert not closer.done()  # it waits for the calls in progress
                with pytest.raises(plait.ClosedResourceError):
                    await pool.run_sync(square, 1)
                gate.open()
            assert [c.result()[0] for c in calls] == list("abc")
            assert pool.worker_pids() == []
            return [retired, *pids]

        pids = run_with_guard(main)
        assert len(set(pids)) == 4
        assert not any(alive(p) for p in pids)
        assert state_of(pids[0]) is None  # reaped, not a zombie
        assert threading.active_count() == threads

    def test_no_process_thread_or_fd_left_after_crashes_and_cancellations(self, tmp_path):
        flag = str(tmp_path / "flag")
        before = threading.active_count(), sorted(os.listdir("/proc/self/fd"))

        async def main():
            async with plait.ProcessPool(2) as pool:
                a = await pool.run_sync(lambda data: (os.getpid(), data)[0], bytes(2 * MIB))
                assert await pool.run_sync(bytearray, 2 * MIB) == bytes(2 * MIB)
                with pytest.raises(plait.BrokenWorkerError):
                    await pool.run_sync(exit_3)
                with plait.CancelScope() as scope:
                    async with plait.TaskGroup() as tg:
                        tg.spawn(cancel_when_started, flag, scope)
                        await pool.run_sync(sleep_after_signal, flag)
                assert scope.cancelled_caught
                b = await pool.run_sync(os.getpid)
            return [a, b, int(await appears(flag))]

        pids = run_with_guard(main)
        assert not any(alive(p) for p in pids)
        # (The descriptors include the shared-memory segments, both ways.)
        assert (threading.active_count(), sorted(os.listdir("/proc/self/fd"))) == before


class TestDefaultPool:
    def test_shared_within_a_run_and_closed_at_its_end(self):
        async def main():
            pool = plait.to_process.current_default_process_pool()
            assert plait.to_process.current_default_process_pool() is pool
            assert pool.max_workers == default_max_workers()
            a = await plait.to_process.run_sync(lambda: os.getpid() + 0)
            b = await plait.to_process.run_sync(pid_and, "x")
            c = await plait.to_process.run_sync(os.getpid, cancellable=False)
            assert pool.worker_pids() == [a]
            return pool, [a, b[0], c]

        pool, pids = plait.run(main)
        assert len(set(pids)) == 1 and pids[0] != os.getpid()
        assert not alive(pids[0])
        with pytest.raises(plait.ClosedResourceError):
            plait.run(pool.run_sync, square, 1)

        async def again():
            other = plait.to_process.current_default_process_pool()
            return other, await plait.to_process.run_sync(os.getpid)

        other, pid = plait.run(again)
        assert other is not pool
        assert not alive(pid)


ORPHAN_PARENT = """
import os, sys, time
import plait

flag = sys.argv[1]

def busy(path):
    open(path, "w").close()
    time.sleep(3600)

async def main():
    pool = plait.ProcessPool(2)
    async with plait.TaskGroup() as tg:
        tg.spawn(pool.run_sync, busy, flag)
        while not os.path.exists(flag):
            await plait.sleep(0.01)
        idle = await pool.run_sync(os.getpid)
        [busy_pid] = [p for p in pool.worker_pids() if p != idle]
        print(idle, busy_pid, flush=True)
        await plait.sleep_forever()

plait.run(main)
"""

PR_SET_CHILD_SUBREAPER = 36


def wait_reparented(pid):
    """Reap ``pid``, an orphan reparented to this process (bounded poll)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline, f"worker {pid} outlived its parent"
        time.sleep(0.01)


class TestOrphans:
    def test_workers_exit_when_their_parent_is_killed(self, tmp_path):
        # This process becomes a subreaper for the test, so that the orphaned workers
        # are reparented here (not to a pid 1 that may never reap them): then we can
        # wait for them and see how they ended.
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, ctypes.get_errno()
        try:
            parent = subprocess.Popen(
                [sys.executable, "-c", ORPHAN_PARENT, str(tmp_path / "busy")],
                stdout=subprocess.PIPE,
            )
            try:
                ready, _, _ = select.select([parent.stdout], [], [], DEADLINE)
                assert ready, "the parent never printed its workers' pids"
                idle, busy = map(int, parent.stdout.readline().split())
                assert parent_of(idle) == parent_of(busy) == parent.pid
                assert state_of(idle) != "Z" and state_of(busy) != "Z"
                parent.kill()
                assert parent.wait(DEADLINE) == -signal.SIGKILL
                codes = [wait_reparented(idle), wait_reparented(busy)]
            finally:
                if parent.poll() is None:
                    parent.kill()
                    parent.wait()
                parent.stdout.close()
        finally:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        # The busy one saw its lifeline close and exited in the middle of its call; the
        # idle one saw that or the end of its socket, whichever it noticed first.
        assert codes[0] in (0, pool_module._EXIT_ORPHANED)
        assert codes[1] == pool_module._EXIT_ORPHANED
        assert state_of(idle) is None and state_of(busy) is None
