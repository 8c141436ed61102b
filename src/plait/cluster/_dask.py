"""The dask.distributed adapter of :class:`plait.cluster.Backend`. Layer L6.

Theory of operation. A synchronous ``distributed.Client`` runs its own event loop in
its own thread ("IO loop"); plait never runs dask code on its loop's thread except the
few calls that only post work to that loop (``Client.submit``/``Client.map`` and, for
cancellation, ``loop.add_callback``). Starting, connecting, ``scatter`` and closing
block, so they run in a worker thread (``plait.to_thread``).

A call gets a ``concurrent.futures.Future`` at once; the calls made during one
iteration of the plait loop are sent together at its end, one ``Client.map(fn, ...,
pure=False)`` per function (every call runs, even with equal arguments): one graph
update for the scheduler instead of one per call. When a call is done, the dask
future's done-callback (dask's callback thread) hands it to a fetcher on the IO loop,
which gathers the results of all the calls done by then with one ``gather``: one
round trip to the scheduler and workers for many calls. The plait future gets the
result, or the exception as dask raises it (with the remote traceback dask attaches),
or ``plait.BrokenWorkerError`` when dask gave up (``KilledWorker``: the task's workers
died too many times; a task that dask retried successfully just returns). The adapter
holds each dask future until it is done: dask forgets a task whose last future is
dropped.

Rejected: ``Client(asynchronous=True)`` on a thread of our own running asyncio (the
synchronous client already is exactly that, maintained by dask).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import operator
import threading
from collections.abc import Callable
from typing import Any

from .._core._local import current_loop
from .._exceptions import BrokenWorkerError
from .._poolmap import fn_name
from .._processes._serial import unpicklable_call
from .._threads import to_thread_run_sync
from ._backend import Backend

__all__ = ["DaskBackend", "import_distributed"]


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "plait.cluster.DaskPool needs dask.distributed, which is not installed: "
            "pip install 'plait[cluster]' (or pip install distributed)"
        ) from exc
    return distributed


_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


def _quiet_workers(client: Any) -> None:
    """Before closing a LocalCluster of ours: stop each worker's heartbeat. Closing
    retires the workers, and the scheduler drops their connections; a heartbeat on its
    way then fails and the worker logs it as an ERROR with a traceback
    (dask/distributed#7105), to the program's stderr, at every clean shutdown that hits
    the window. At shutdown that failure is expected, so it is also filtered out."""
    try:
        client.run(_stop_heartbeat, on_error="ignore", callback_timeout=10)
    except Exception:  # pragma: no cover - a worker gone already: nothing to quiet
        pass


def _stop_heartbeat(dask_worker: Any) -> None:
    """Runs on a worker (see _quiet_workers)."""
    dask_worker.periodic_callbacks["heartbeat"].stop()
    logging.getLogger("distributed.worker").addFilter(_not_heartbeat_failure)


def _not_heartbeat_failure(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_HEARTBEAT_FAILED)


def _new_client(distributed: Any, *args: Any, **kwargs: Any) -> Any:
    """``distributed.Client(*args, set_as_default=False, **kwargs)``, whose loop thread is
    stopped if it fails to connect: dask leaves it running (the client's status is
    already "closed" then, so ``close()`` does nothing), one thread per failed attempt."""
    client = distributed.Client.__new__(distributed.Client)
    try:
        client.__init__(*args, set_as_default=False, **kwargs)
    except BaseException:
        runner = getattr(client, "_loop_runner", None)
        if runner is not None:
            runner.stop()
        raise
    return client


def _fail(future: concurrent.futures.Future[Any], exc: BaseException) -> None:
    """Complete ``future`` with the error dask gave for its call."""
    error: BaseException = exc
    name = type(exc).__name__
    if name == "KilledWorker":
        error = BrokenWorkerError(
            f"dask gave up on the call: {exc}; every worker that ran it died (dask "
            "retried it on others first). The function may crash its process, or "
            "use more memory than a worker may"
        )
        error.__cause__ = exc
    elif name in ("CancelledError", "FutureCancelledError"):
        error = BrokenWorkerError(
            f"dask cancelled the call before it finished ({exc!r}): the cluster or "
            "the client went away, or another client cancelled it"
        )
        error.__cause__ = exc
    try:
        future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by us meanwhile
    finally:
        del error, exc


def _succeed(future: concurrent.futures.Future[Any], value: Any) -> None:
    try:
        future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by us meanwhile


def _deliver(future: concurrent.futures.Future[Any], remote: Any) -> None:
    """Complete ``future`` from the done dask future ``remote``, in a thread other than
    the client's loop (``result()`` blocks on that loop)."""
    if future.done():
        return  # cancelled by us
    try:
        value = remote.result()
    except BaseException as exc:
        _fail(future, exc)
    else:
        _succeed(future, value)


_Unsent = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaskBackend(Backend):
    """dask.distributed: a ``LocalCluster`` of worker processes on 127.0.0.1, or the
    scheduler at ``address``."""

    fetch_window = 0.002
    """Seconds a fetch waits for more results while a few other calls are in flight:
    each ``gather`` costs the scheduler and the workers a round trip."""
    busy_fetch_window = 0.02
    """The wait while ``busy_calls`` or more other calls are in flight. A cluster busy
    with small calls finishes one every few milliseconds; fetched every 2 ms, 1,000 of
    them took 1,000 gathers, which slowed the scheduler itself by 10-15% (measured
    against dask's own submit-then-gather, benchmarks/workloads/cluster.py)."""
    busy_calls = 32

    def __init__(
        self,
        address: str | None,
        n_workers: int | None,
        threads_per_worker: int,
        security: Any,
    ) -> None:
        self.address = address
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.security = security
        self.client: Any = None
        self.cluster: Any = None  # the LocalCluster we started (None for an address)
        self._nthreads = 0
        self._ready = False  # connected (or cluster started); _connect() ran to its end
        # Dask futures of calls in progress, by our future: kept alive until done.
        self._remote: dict[concurrent.futures.Future[Any], Any] = {}
        # Calls made, to send at the end of the loop's iteration (see _send).
        self._unsent: list[_Unsent] = []
        # Calls whose results wait to be fetched, and whether _fetch() runs (or is
        # scheduled) on the client's loop; the lock is shared with dask's callback thread.
        self._arrived: list[tuple[concurrent.futures.Future[Any], Any]] = []
        self._fetching = False
        self._arrival_lock = threading.Lock()
        # The gathers running on the client's loop (asyncio keeps only weak references).
        self._gathers: set[asyncio.Task[None]] = set()

    @property
    def max_workers(self) -> int:
        return max(1, self._nthreads)

    async def start(self) -> None:
        # The thread stores what it made on self, so that a start cancelled while it
        # runs (the thread finishes anyway) is neither repeated nor lost to shutdown().
        if not self._ready:
            await to_thread_run_sync(self._connect)

    def _connect(self) -> None:
        distributed = import_distributed()
        extra = {} if self.security is None else {"security": self.security}
        try:
            if self.address is None:
                self.cluster = distributed.LocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    # Without a dashboard the scheduler still serves HTTP, on port 8787
                    # by default: a port of its own, so that another cluster on the
                    # machine does not make it warn (and, with warnings as errors, fail).
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    **extra,
                )
                self.client = _new_client(distributed, self.cluster, **extra)
                self.client.wait_for_workers(len(self.cluster.workers))
            else:
                self.client = _new_client(distributed, self.address, **extra)
            self._nthreads = sum(self.client.nthreads().values())
            self._ready = True
        except BaseException:
            self._close()  # a failed start leaves nothing running
            raise

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self._unsent:
            current_loop("DaskPool").call_soon(self._send)
        self._unsent.append((future, fn, args))
        return future

    def _send(self) -> None:
        """Send the calls made since the last time: all at the end of one iteration of
        the plait loop, one ``Client.map`` per function (one message to the scheduler
        for many calls: 1,000 ``Client.submit`` calls cost the scheduler 1,000
        graph updates)."""
        unsent, self._unsent = self._unsent, []
        groups: dict[tuple[int, int], list[_Unsent]] = {}
        for call in unsent:
            if not call[0].done():  # (cancelled before it was sent)
                groups.setdefault((id(call[1]), len(call[2])), []).append(call)
        client = self.client
        for calls in groups.values():
            fn = calls[0][1]
            remotes: list[Any] = []
            if len(calls) > 1 and calls[0][2]:
                try:
                    columns = zip(*[args for _, _, args in calls], strict=True)
                    remotes = client.map(fn, *map(list, columns), pure=False)
                except Exception:
                    remotes = []  # each call alone, for its own error
            if not remotes:
                remotes = [self._submit_one(future, fn, args) for future, fn, args in calls]
            for (future, _, _), remote in zip(calls, remotes, strict=True):
                if remote is not None:
                    self._remote[future] = remote
                    future.add_done_callback(self._forget)
                    remote.add_done_callback(functools.partial(self._on_done, future))

    def _submit_one(
        self, future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """``client.submit(fn, *args)``, or None with ``future`` failed."""
        try:
            return self.client.submit(fn, *args, pure=False)
        except Exception as exc:
            # dask pickles the call here, and says only which graph did not serialize
            error = unpicklable_call(
                fn_name(fn),
                fn,
                args,
                to="the dask cluster",
                remedy="A cluster pool needs a picklable function and arguments: "
                "create such objects (locks, sockets, open files, generators) inside the "
                "function",
            )
            _fail(future, exc if error is None else error)
            return None

    def _on_done(self, future: concurrent.futures.Future[Any], remote: Any) -> None:
        """Done-callback of a dask future, in dask's callback thread."""
        if future.done():
            return  # cancelled by us
        if remote.status != "finished":
            _deliver(future, remote)  # an error or a cancellation: no data to fetch
            return
        with self._arrival_lock:
            self._arrived.append((future, remote))
            if self._fetching:
                return  # the running _fetch() takes it in its next batch
            self._fetching = True
        self.client.loop.add_callback(self._fetch)

    def _take_arrived(self, *, stop: bool) -> list[tuple[concurrent.futures.Future[Any], Any]]:
        with self._arrival_lock:
            batch, self._arrived = self._arrived, []
            if stop or not batch:
                self._fetching = False
        return batch

    async def _fetch(self) -> None:
        """On the client's loop: fetch the results of the calls done so far, all with
        one ``gather`` (one request per worker holding some), then those done
        meanwhile, until none is left. Fetching them one by one costs a round trip
        each, which made 1,000 small calls twice as slow as dask's own gather."""
        batch: list[tuple[concurrent.futures.Future[Any], Any]] = []
        try:
            while True:
                others = len(self._remote) - len(self._arrived)
                if others > 0:
                    # Other calls are on their way: let those done within the next
                    # moment join the batch (the scheduler reports to the client in
                    # batches every 2 ms anyway). A lone call is fetched at once.
                    busy = others >= self.busy_calls
                    await asyncio.sleep(self.busy_fetch_window if busy else self.fetch_window)
                if not (batch := self._take_arrived(stop=False)):
                    break
                if waiting := [(f, r) for f, r in batch if not f.done()]:
                    # Each batch is gathered on its own: a gather can wait long (for a
                    # result lost with its worker to be computed again, or for good if
                    # the call is cancelled meanwhile), and must not hold back the
                    # results that arrive after it (seen in CI: a call made after a
                    # worker died was never delivered).
                    gathering = asyncio.ensure_future(self._fetch_batch(waiting))
                    self._gathers.add(gathering)
                    gathering.add_done_callback(self._gathers.discard)
                batch = []
        except BaseException as exc:  # the client's loop is stopping
            for future, _ in batch + self._take_arrived(stop=True):
                _fail(future, exc)
            raise

    async def _fetch_batch(self, batch: list[tuple[concurrent.futures.Future[Any], Any]]) -> None:
        try:
            await self._gather_batch(batch)
        except BaseException as exc:  # the client's loop is stopping: nothing to raise to
            for future, _ in batch:
                _fail(future, exc)

    async def _gather_batch(self, batch: list[tuple[concurrent.futures.Future[Any], Any]]) -> None:
        gather = self.client.gather
        try:
            values = await gather([remote for _, remote in batch], asynchronous=True)
        except Exception:
            # One call failed after all (its result was lost with its worker, and
            # running it again failed): each call gets its own outcome.
            for future, remote in batch:
                try:
                    value = await gather(remote, asynchronous=True)
                except Exception as exc:
                    _fail(future, exc)
                else:
                    _succeed(future, value)
        else:
            for (future, _), value in zip(batch, values, strict=True):
                _succeed(future, value)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        remote = self._remote.pop(future, None)
        if remote is not None and future.cancelled():
            self._cancel_remote(remote)

    def _cancel_remote(self, remote: Any) -> None:
        # Client.cancel() would block until the client's loop has run it; with
        # asynchronous=True it returns the coroutine, which we hand to that loop.
        client = self.client
        try:
            client.loop.add_callback(functools.partial(client.cancel, [remote], asynchronous=True))
        except RuntimeError:  # pragma: no cover - the client's loop has closed
            pass

    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        future.cancel()  # (_forget cancels the dask future)

    async def put(self, obj: Any) -> Any:
        return await to_thread_run_sync(self._put, obj)

    def _put(self, obj: Any) -> Any:
        # scatter() splits a list, dict or set into one future per element: scatter a
        # 1-tuple holding obj (one piece of data), and hand out a future of obj itself.
        client = self.client
        [box] = client.scatter([(obj,)], hash=False, broadcast=False)
        return client.submit(operator.itemgetter(0), box, pure=False)

    async def shutdown(self) -> None:
        await to_thread_run_sync(self._close)

    def _close(self) -> None:
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        self._ready = False
        try:
            if client is not None:
                if cluster is not None:
                    _quiet_workers(client)
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
