"""A process forked while a plait loop runs (multiprocessing's fork start method,
os.fork in a task) can run plait, and asyncio, by itself."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

import pytest

import plait

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def forked(fn) -> int:
    """Run ``fn()`` in a forked child; its exit code (0: it returned True)."""
    with warnings.catch_warnings():
        # (3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks")
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            code = 0 if fn() else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 2
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


async def answer() -> int:
    return await plait.to_thread.run_sync(lambda: 42)


async def aio_answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_a_child_forked_in_a_run_runs_plait_and_its_threads():
    async def main():
        assert await answer() == 42  # the thread cache has a worker now
        return forked(lambda: plait.run(answer) == 42)

    assert plait.run(main) == 0


def test_a_child_forked_in_a_run_runs_asyncio():
    async def main():
        return forked(lambda: asyncio.run(aio_answer()) == 42)

    assert plait.run(main) == 0
