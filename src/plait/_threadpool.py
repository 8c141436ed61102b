"""``plait.ThreadPool``: a :class:`plait.abc.Pool` of worker threads. Layer L6.

Theory of operation. A ThreadPool is ``to_thread.run_sync`` with a
``CapacityLimiter`` of its own: at most ``max_workers`` of its calls run at once,
whatever other code does with ``to_thread`` or with other pools. The threads come from
plait's shared worker-thread cache (``_core/_thread_cache.py``), so the pool owns no
thread: closing it waits for its calls, and idle threads are reaped by the cache after
its idle timeout. Calls keep ``to_thread``'s semantics: the caller's context variables
are visible in the thread, an exception keeps the thread's traceback, and a cancelled
caller waits for its thread, in which ``plait.from_thread.check_cancelled()`` then
raises ``Cancelled`` (and ``plait.from_thread.run`` works, as in any ``to_thread``
thread).

Calls submitted through :meth:`executor` take a token of the same limiter, from a
system task (see ``_pool.py``); their future turns RUNNING in the worker thread, right
before the function starts, so it can be cancelled while it waits for a token.

Rejected: a ``concurrent.futures.ThreadPoolExecutor`` underneath (threads of its own
beside plait's cache, a future and a queue hop per call, and no ``check_cancelled``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ._pool import UNCLAIMED, Pool, check_max_workers
from ._poolmap import fn_name
from ._sync import CapacityLimiter
from ._threads import to_thread_run_sync
from ._util import public

__all__ = ["ThreadPool"]


def default_max_workers() -> int:
    """``concurrent.futures.ThreadPoolExecutor``'s default: ``min(32, cpus + 4)``."""
    return min(32, (os.cpu_count() or 1) + 4)


@public
class ThreadPool(Pool):
    """A pool of worker threads, bounded by ``max_workers`` (default
    ``min(32, os.cpu_count() + 4)``, as ``ThreadPoolExecutor``).

    Use it for blocking I/O and for C code that releases the GIL (hashlib, zlib,
    numpy); pure-Python CPU work needs processes. ``run_sync`` behaves as
    ``plait.to_thread.run_sync`` with the pool's limiter: a cancelled call waits for
    its thread, in which ``plait.from_thread.check_cancelled()`` raises ``Cancelled``.
    ``aclose()`` waits for the calls in progress; the pool owns no threads itself.
    """

    _job_kind = None  # each call is a to_thread.run_sync, which instruments see

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        max_workers = check_max_workers(max_workers, "ThreadPool", default_max_workers)
        self._max_workers = max_workers
        self._limiter = CapacityLimiter(max_workers)

    def __repr__(self) -> str:
        return (
            f"<plait.ThreadPool max_workers={self._max_workers} {self._state.value} "
            f"running={self._limiter.borrowed_tokens} calls={self._calls}>"
        )

    @property
    def max_workers(self) -> int:
        """How many of the pool's calls may run at once."""
        return self._max_workers

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], claim: Callable[[], bool] | None
    ) -> Any:
        if claim is None:
            return await to_thread_run_sync(fn, *args, limiter=self._limiter)

        def call() -> Any:
            if not claim():
                return UNCLAIMED  # the future was cancelled while waiting for a token
            return fn(*args)

        call.__qualname__ = fn_name(fn)  # the worker thread is named after it
        return await to_thread_run_sync(call, limiter=self._limiter)
