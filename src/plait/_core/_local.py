"""Which loop runs in this thread. Layer L3 (the base of the kernel modules)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._kernel import Loop

__all__ = ["current_loop", "current_loop_or_none", "run_state"]


class _RunState(threading.local):
    loop: Loop | None = None


run_state = _RunState()


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
