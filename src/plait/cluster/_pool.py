"""``plait.cluster.ClusterPool`` and ``DaskPool``: a :class:`plait.abc.Pool` on a
cluster. Layer L6.

Theory of operation. The pool logic knows nothing of dask: a call sends ``fn(*args)``
through a :class:`Backend` (``_backend.py``), which returns a
``concurrent.futures.Future`` completed by the engine's own thread, and the task waits
for it with :func:`plait.wait_future` (the kernel's thread-safe door, no polling).
Cancelling the task cancels that future, which cancels the remote call; a function that
already runs on a worker is not interrupted (dask cannot), its result is dropped. The
cluster does its own queueing, so the pool has no limiter of its own: ``max_workers``
(the cluster's threads when it started) only sizes ``map``'s read-ahead.

The backend starts on ``async with pool:`` (or on the first call), which is where
connection errors surface; a start is shared by the tasks that need it at once.
``aclose()`` waits for the calls in progress, then shuts the backend down (closing a
cluster the pool started, leaving one it connected to).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .._core._cancel import CancelScope
from .._futures import wait_future
from .._pool import UNCLAIMED, Pool
from .._sync import Lock
from .._util import describe, public
from ._backend import Backend
from ._dask import DaskBackend

__all__ = ["ClusterPool", "DaskPool"]

_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


class ClusterPool(Pool):
    """A :class:`plait.abc.Pool` whose workers are a cluster's, reached through a
    :class:`plait.cluster.Backend`. :class:`DaskPool` is the one with a dask backend."""

    _job_kind = "cluster"

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend
        self._start_lock = Lock()
        self._started = False

    @property
    def max_workers(self) -> int:
        """The cluster's threads when the pool connected (1 before that)."""
        return self._backend.max_workers

    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self._backend.start()
                self._started = True

    async def __aenter__(self) -> Any:
        await super().__aenter__()
        try:
            await self._ensure_started()
        except BaseException:
            with CancelScope(shield=True):
                await self.aclose()
            raise
        return self

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], claim: Callable[[], bool] | None
    ) -> Any:
        await self._ensure_started()
        if claim is not None and not claim():
            return UNCLAIMED
        return await wait_future(self._backend.submit(fn, args))

    async def put(self, obj: Any) -> Any:
        """Place ``obj`` on the cluster once and return a handle: pass the handle to
        ``run_sync``/``map`` calls in its place, and each worker gets the object
        without it being sent again with every call."""
        self._check_open("put()")
        await self._ensure_started()
        return await self._backend.put(obj)

    async def _aclose_workers(self) -> None:
        with CancelScope(shield=True):
            await self._backend.shutdown()


@public
class DaskPool(ClusterPool):
    """A pool on a dask.distributed cluster (``pip install 'plait[cluster]'``).

    With ``address=None`` it starts a ``distributed.LocalCluster`` of ``n_workers``
    worker processes (default: one per CPU) with ``threads_per_worker`` threads each,
    bound to 127.0.0.1 with the dashboard off, and closes it on exit. With
    ``address="tcp://host:port"`` (or ``"tls://..."``, passing ``security``, a
    ``distributed.security.Security``) it connects to that scheduler and leaves the
    cluster running on exit.

    It behaves as ``plait.ProcessPool``: lambdas and closures travel by value
    (cloudpickle), ``map`` is ordered or not and reads a bounded amount ahead, and the
    function's exception comes back with its remote traceback. ``BrokenWorkerError``
    when dask gave up because the workers running the call died (a call dask retried
    successfully just returns). Cancelling a call cancels it on the cluster; a function
    already running is not interrupted (dask cannot), its result is dropped.
    ``await pool.put(obj)`` places a large object on the cluster once.

        async with plait.cluster.DaskPool() as pool:
            total = await pool.run_sync(sum, range(10**7))
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        security: Any = None,
    ) -> None:
        if address is not None:
            if not isinstance(address, str):
                raise TypeError(
                    f"DaskPool address must be a scheduler address such as "
                    f"'tcp://127.0.0.1:8786', or None, got {describe(address)}"
                )
            if not address.startswith(_SCHEMES):
                raise ValueError(
                    f"DaskPool address {address!r} has no protocol: write "
                    f"'tcp://{address}' (or 'tls://...' with security=)"
                )
            if n_workers is not None:
                raise ValueError(
                    "DaskPool n_workers only applies to the LocalCluster it starts when "
                    "address is None; a cluster at an address has the workers it has"
                )
        elif n_workers is not None and (
            isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
        ):
            raise ValueError(f"DaskPool n_workers must be an int >= 1, got {describe(n_workers)}")
        if (
            isinstance(threads_per_worker, bool)
            or not isinstance(threads_per_worker, int)
            or threads_per_worker < 1
        ):
            raise ValueError(
                f"DaskPool threads_per_worker must be an int >= 1, got "
                f"{describe(threads_per_worker)}"
            )
        if address is None and n_workers is None:
            n_workers = os.cpu_count() or 1
        super().__init__(DaskBackend(address, n_workers, threads_per_worker, security))
        self.address = address

    def __repr__(self) -> str:
        where = self.address or "a LocalCluster"
        return f"<plait.cluster.DaskPool on {where} {self._state.value} calls={self._calls}>"

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (None until the pool has started). It is the
        pool's: close the pool, not the client (dask drops the futures of a closed
        client without completing them, so calls waiting on them would wait forever)."""
        backend = self._backend
        assert isinstance(backend, DaskBackend)
        return backend.client
