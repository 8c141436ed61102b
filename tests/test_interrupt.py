"""Ctrl-C (SIGINT) against a real child process: finally blocks run, then
KeyboardInterrupt leaves plait.run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

PROGRAM = textwrap.dedent(
    """
    import os, signal, sys, threading
    import plait

    mode = sys.argv[1]

    async def worker(i):
        try:
            await plait.sleep_forever()
        finally:
            print(f"finally {i}", flush=True)

    async def trigger():
        await plait.testing.wait_all_tasks_blocked()
        if mode == "idle":
            # Arrives while the loop is blocked in the OS poll (plait's own code).
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            await plait.sleep_forever()
        elif mode == "busy":
            # Arrives while this task runs user code: raised right there.
            os.kill(os.getpid(), signal.SIGINT)
            while True:
                pass
        elif mode == "callback":
            plait.lowlevel.current_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)
            await plait.sleep_forever()

    async def main():
        async with plait.TaskGroup() as tg:
            for i in range(3):
                tg.spawn(worker, i)
            tg.spawn(trigger)

    try:
        plait.run(main)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        sys.exit(0)
    print("no interrupt", flush=True)
    sys.exit(1)
    """
)


@pytest.mark.parametrize("mode", ["idle", "busy", "callback"])
def test_ctrl_c_runs_finally_blocks_then_raises(mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(lines[:3]) == ["finally 0", "finally 1", "finally 2"]
    assert lines[3:] == ["KeyboardInterrupt"]


def test_custom_sigint_handler_is_left_alone() -> None:
    program = textwrap.dedent(
        """
        import signal, plait
        seen = []
        def mine(signum, frame):
            seen.append(signum)
        signal.signal(signal.SIGINT, mine)
        async def main():
            assert signal.getsignal(signal.SIGINT) is mine
            signal.raise_signal(signal.SIGINT)
            await plait.sleep(0)
        plait.run(main)
        assert seen == [signal.SIGINT], seen
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr


LAST_ITERATION = textwrap.dedent(
    """
    import functools, os, signal, sys
    import plait

    async def main():
        loop = plait.lowlevel.current_loop()
        # A C callable run by the loop: the innermost Python frame is plait's, so the
        # handler only records the Ctrl-C; main then finishes in this very iteration
        # ("checkpoint") or in a later one ("sleep").
        loop.call_soon(functools.partial(os.kill, os.getpid(), signal.SIGINT))
        if sys.argv[1] == "checkpoint":
            await plait.checkpoint()
        else:
            await plait.sleep(0.001)
        return "finished"

    try:
        result = plait.run(main)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    else:
        print("returned", result, flush=True)
    """
)


@pytest.mark.parametrize("end", ["checkpoint", "sleep"])
def test_ctrl_c_during_the_last_iteration_is_not_lost(end: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LAST_ITERATION, end],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.splitlines() == ["KeyboardInterrupt"], proc.stdout + proc.stderr
