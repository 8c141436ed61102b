"""The narrow interface between plait's cluster pool and a distributed engine. Layer L6.

A :class:`Backend` is all that :class:`plait.cluster.ClusterPool` needs from an engine
(dask.distributed today; Ray could be a second adapter without touching the pool):

- ``await start()`` / ``await shutdown()``: connect (or start a cluster) and let go;
  they may block inside (engines' clients are synchronous), so adapters run the
  blocking parts in a worker thread.
- ``submit(fn, args) -> concurrent.futures.Future``: send one call; never blocks. The
  engine completes the future from its own thread (result, or the exception with its
  remote traceback; ``plait.BrokenWorkerError`` when the engine gave up on the workers
  that ran it). The pool waits for it with :func:`plait.wait_future`, so a task waits
  through the kernel's thread-safe door and nothing polls.
- ``cancel(future)``: cancel the remote call (the future is cancelled too). An engine
  may not interrupt a function that is already running; it drops its result.
- ``await put(obj)``: place a (large) object on the cluster once; the returned handle
  can be passed as an argument to any number of calls instead of the object.
- ``max_workers``: how many calls may run at once (known once started).
"""

from __future__ import annotations

import abc
import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["Backend"]


class Backend(abc.ABC):
    """A distributed engine as :class:`plait.cluster.ClusterPool` uses it."""

    @property
    @abc.abstractmethod
    def max_workers(self) -> int:
        """How many calls may run at once (threads across the workers)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the engine (starting a local cluster if that is the setting)."""

    @abc.abstractmethod
    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        """Send ``fn(*args)`` to the cluster; never blocks. Called on the plait loop's
        thread, which may send the calls made in one iteration together."""

    @abc.abstractmethod
    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel a call made by :meth:`submit` (and its future); never blocks."""

    @abc.abstractmethod
    async def put(self, obj: Any) -> Any:
        """Place ``obj`` on the cluster once; return a handle to pass to calls."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Let go of the engine (closing the cluster if :meth:`start` started it)."""
