"""Which loop runs in this thread. Layer L3 (the base of the kernel modules)."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._kernel import Loop

__all__ = ["current_loop", "current_loop_or_none", "run_state"]


class _RunState(threading.local):
    loop: Loop | None = None


run_state = _RunState()


def _forget_after_fork() -> None:
    # A child forked while a loop ran (multiprocessing's fork, os.fork in a task) has
    # a copy of the loop but not its thread's life: it may start loops of its own.
    run_state.loop = None
    events = sys.modules.get("asyncio.events")
    if events is not None and sys.version_info < (3, 12):  # (3.12+ asyncio does it)
        events._set_running_loop(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def current_loop_or_none() -> Loop | None:
    return run_state.loop


def current_loop(what: str) -> Loop:
    """The loop running in this thread; ``what`` names the caller for the error."""
    loop = run_state.loop
    if loop is None:
        raise RuntimeError(
            f"{what} must be awaited inside plait.run(): no plait loop is running in this "
            "thread. Start your program with plait.run(main); from asyncio code, call plait "
            "code through plait.aio.run_plait(); from a worker thread, use "
            "plait.from_thread.run()."
        )
    return loop
