"""``plait.ProcessPool`` and ``plait.to_process.run_sync``. Layer L6.

Theory of operation
-------------------
*Workers.* Each worker is a fresh interpreter running ``_worker.py`` (started with
``subprocess``, which execs at once, so it is safe in a program that has threads; a bare
``fork`` is not). Workers are started on demand, up to ``max_workers``, and kept idle
(last in, first out, so the warmest is reused) between calls. The pool talks to each over
its own Unix socket pair, registered with the loop's reactor like any plait socket: the
task that makes a call writes the CALL frame and reads the answer itself, so there is no
management thread and no management task; an idle worker's socket is not watched at
all. A pipe whose write end only this process holds (the *lifeline*) is inherited by
every worker: when this process dies, even by SIGKILL, the workers see it close and
exit, even in the middle of a call.

*A call* (``_run_call``): pickle the function and arguments first, so that an
unpicklable one fails at once in the caller, naming the culprit
(:func:`_serial.explain_unpicklable`); write the large buffers into a shared-memory
segment (``_serial.py``); take one of ``max_workers`` slots (a FIFO semaphore); take an
idle worker or start one; send the CALL with the segment's descriptor; read until the
RESULT or ERROR frame arrives. A result's large buffers come back the same way.

*Faults.* The end of the stream (or a reset) while a call is in progress means the
worker died: the pool reaps it and raises ``BrokenWorkerError`` naming the exit status
or signal in that call only; the worker is dropped and the next call starts a new one.
An idle worker that died is noticed (it has exited) when it is next taken, and replaced
without failing anybody's call. The function's exception comes back pickled with its
traceback as text, attached as ``__cause__`` (a :class:`RemoteTraceback`), as
``concurrent.futures`` does; one that cannot be unpickled here becomes a
``RuntimeError`` that names its type and message.

*Cancellation.* With ``cancellable=True`` (the default) a cancelled call terminates its
worker (SIGTERM, then SIGKILL after ``GRACE_PERIOD``), reaps it, and raises
``Cancelled``; nothing of the call is left. With ``cancellable=False`` the call is
shielded: it runs to completion, and the cancellation is delivered at the caller's next
checkpoint. ``aclose()`` waits for the calls in progress, then sends each idle worker
SHUTDOWN and reaps it (SIGKILL for one that does not exit within ``GRACE_PERIOD``).

Rejected: ``multiprocessing`` (pickles functions by name, a feeder thread and a result
thread per pool, and one dead worker breaks the whole pool); a forkserver (fast
replacement, but one more process to manage; a worker starts in about 0.1 s and is
reused, so starting fresh interpreters is fine); named ``/dev/shm`` segments (a crash
at the wrong moment leaks them; anonymous files passed as descriptors cannot leak).
"""

from __future__ import annotations

import inspect
import itertools
import os
import pickle
import signal
import socket as _stdlib_socket
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .._core._cancel import CancelScope
from .._core._local import current_loop
from .._core._traps import checkpoint
from .._exceptions import BrokenWorkerError, WouldBlock
from .._pool import UNCLAIMED, Pool, check_max_workers
from .._poolmap import check_sync_fn, fn_name
from .._socket import SocketType, _raise_if_cancelled, from_stdlib_socket
from .._subprocess import Process, _end_child, open_process
from .._sync import Semaphore
from .._timeouts import move_on_after, sleep_forever
from .._util import describe, public
from . import _serial
from ._wire import BufferRef, Message, MessageKind, WireError

__all__ = ["GRACE_PERIOD", "ProcessPool", "RemoteTraceback", "current_default_process_pool"]

T = TypeVar("T")

GRACE_PERIOD = 2.0  # seconds between SIGTERM and SIGKILL for a worker that must go
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
_EXIT_ORPHANED = 70
_EXIT_PROTOCOL = 71


def default_max_workers() -> int:
    """The CPUs this process may run on."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text. The pool
    sets it as the ``__cause__`` of the exception it re-raises in the caller."""

    def __init__(self, text: str, pid: int) -> None:
        super().__init__(text, pid)
        self.text = text
        self.pid = pid

    def __str__(self) -> str:
        return f"\n\nTraceback in worker process {self.pid}:\n\n{self.text}"


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        description = signal.strsignal(-code) or ""
        return f"was killed by {name}" + (f" ({description})" if description else "")
    if code == _EXIT_ORPHANED:
        return "exited because it lost its lifeline to this process"
    return f"exited with status {code}"


class _Worker:
    """The parent's end of one worker process."""

    __slots__ = ("calls", "inbox", "pid", "process", "sock")

    def __init__(self, process: Process, sock: SocketType) -> None:
        self.process = process
        self.sock = sock
        self.pid = process.pid
        self.inbox = _serial.Inbox()
        self.calls = 0

    def __repr__(self) -> str:
        return f"<plait process-pool worker pid={self.pid} calls={self.calls}>"

    async def send(self, message: Message, fd: int | None) -> None:
        """Send one frame (and ``fd`` with it). Raises OSError if the worker is gone.
        Not a checkpoint by itself: it waits only if the socket's buffer is full."""
        chunks, ancdata = _serial.outgoing(message, fd)
        try:
            sent = self.sock._sock.sendmsg(chunks, ancdata)
        except BlockingIOError:
            sent = await self.sock.sendmsg(chunks, ancdata)
        for chunk in _serial.unsent(chunks, sent):
            await self.sock.sendall(chunk)

    async def receive(self) -> tuple[Message, list[Any]] | None:
        """The next message, or None if the worker closed its end (it died). Tries the
        socket before waiting on it (the reply to a quick call may be there already)."""
        inbox = self.inbox
        raw = self.sock._sock
        while True:
            got = inbox.next()
            if got is not None:
                return got
            try:
                data, ancdata, flags, _ = raw.recvmsg(
                    _serial.RECV_SIZE, _serial.ANCILLARY_SPACE, _serial.RECV_FLAGS
                )
            except BlockingIOError:
                await self.sock.wait_readable()
                continue
            except (ConnectionResetError, BrokenPipeError):
                data, ancdata, flags = b"", [], 0
            if not data:
                inbox.decoder.eof()
                return None
            inbox.feed(data, ancdata, flags)

    def close(self) -> None:
        self.sock.close()
        self.inbox.close()

    async def reap(self, grace: float, *, exiting: bool = False) -> int:
        """Make sure the process is gone (SIGTERM, SIGKILL after ``grace``); return
        its exit status. ``exiting``: it closed its end of the socket, so it is on its
        way out: give it ``grace`` to exit first, so that its own exit status is the
        one reported (not our SIGTERM's). Call it shielded."""
        self.close()
        if exiting and self.process.poll() is None:
            with move_on_after(grace):
                await self.process.wait()
        await _end_child(self.process, grace)
        return await self.process.wait()


_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def _plain_sync_function(fn: object) -> bool:
    """True for a builtin, or a plain ``def`` function that is not async (a fast path
    before ``check_sync_fn``, which is slower than a small call)."""
    kind = type(fn)
    if kind is types.BuiltinFunctionType:
        return True
    return (
        kind is types.FunctionType
        and not fn.__code__.co_flags & _ASYNC_FLAGS  # type: ignore[attr-defined]
        and not hasattr(fn, "_is_coroutine_marker")
    )


def _broken(message: str, worker: _Worker, code: int | None = None) -> BrokenWorkerError:
    """A ``BrokenWorkerError`` with ``pid`` and ``exitcode`` (None if unknown; ``-N``
    for a signal N) attributes."""
    error = BrokenWorkerError(message)
    error.pid = worker.pid  # type: ignore[attr-defined]
    error.exitcode = code  # type: ignore[attr-defined]
    return error


_PICKLABLE_CALLS = (
    "A process pool needs a picklable function and arguments: create such objects "
    "(locks, sockets, open files, generators) inside the function, or use a ThreadPool"
)


def _unpicklable_call(fn: Callable[..., Any], args: tuple[Any, ...], exc: Exception) -> Exception:
    name = fn_name(fn)
    to = "a worker process"
    error = _serial.unpicklable_call(name, fn, args, to=to, remedy=_PICKLABLE_CALLS)
    if error is None:  # pickling failed, but no part of the call fails alone
        error = pickle.PicklingError(
            f"cannot send the call {name}() to {to}: {type(exc).__name__}: {exc}. "
            f"{_PICKLABLE_CALLS}"
        )
    return error


def _rebuild_error(payload: bytes | bytearray | memoryview, pid: int) -> BaseException:
    module, qualname, message, text, pickled = _serial.loads(payload, [])
    exc: Any = None
    problem = ""
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
        except Exception as error:
            problem = f"; it could not be unpickled here: {type(error).__name__}: {error}"
    else:
        problem = "; it could not be pickled in the worker"
    if not isinstance(exc, BaseException):
        exc = RuntimeError(f"the function raised {module}.{qualname}: {message}{problem}")
    exc.__cause__ = RemoteTraceback(text, pid)
    return exc  # type: ignore[no-any-return]


@public
class ProcessPool(Pool):
    """A pool of worker processes, for CPU-bound Python code.

    ``max_workers`` (default: the CPUs this process may use) processes at most run calls
    at once; they start on demand and are reused. ``max_tasks_per_worker`` replaces a
    worker after that many calls (to bound leaks in the code it runs).
    ``initializer(*initargs)`` runs in each worker when it starts; if it raises, the
    call that was waiting for that worker raises ``BrokenWorkerError`` from it.

    Functions and arguments are pickled with cloudpickle: lambdas, closures and nested
    functions work, and **captured variables travel by value**, as they are when the
    call is made (a worker's changes to them are not seen by the caller). Functions
    importable from a module travel by name and run the worker's copy of that module.
    ``bytes``, ``bytearray``, ``memoryview`` and numpy arrays of 1 MiB or more travel
    through shared memory, both ways, not through the pipe.

    A worker that dies raises ``BrokenWorkerError`` (naming the exit status or signal)
    in the call it was running, and is replaced. A call that is cancelled kills its
    worker (SIGTERM, then SIGKILL), unless made with ``cancellable=False``.

        async with plait.ProcessPool() as pool:
            total = await pool.run_sync(sum, range(10**7))
            async for square in pool.map(lambda x: x * x, range(100)):
                ...
    """

    _job_kind = "process"

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        max_tasks_per_worker: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        max_workers = check_max_workers(max_workers, "ProcessPool", default_max_workers)
        if max_tasks_per_worker is not None and (
            isinstance(max_tasks_per_worker, bool)
            or not isinstance(max_tasks_per_worker, int)
            or max_tasks_per_worker < 1
        ):
            raise ValueError(
                "ProcessPool max_tasks_per_worker must be None (no limit) or an int >= 1, "
                f"got {describe(max_tasks_per_worker)}"
            )
        if initializer is not None:
            check_sync_fn(initializer, "ProcessPool(initializer=...)")
        if not isinstance(initargs, tuple):
            raise TypeError(f"ProcessPool initargs must be a tuple, got {describe(initargs)}")
        try:
            setup = _serial.dumps_inband((initializer, initargs))
            self._init_payload = _serial.dumps_inband((list(sys.path), setup))
        except Exception as exc:
            raise _unpicklable_call(initializer or (lambda: None), initargs, exc) from exc
        super().__init__()
        self._max_workers = max_workers
        self._max_tasks = max_tasks_per_worker
        self._slots = Semaphore(max_workers)
        # Invariant: every worker is in exactly one of _spare (alive, no call) or
        # _working (a call or a start in progress); _retiring holds processes told to
        # exit and not yet reaped.
        self._spare: list[_Worker] = []
        self._working: set[_Worker] = set()
        self._retiring: list[_Worker] = []
        self._call_ids = itertools.count(1)
        self._lifeline: tuple[int, int] | None = None  # (read end, write end)
        self._loop: object = None
        self.started_workers = 0  # how many workers this pool has started (statistics)

    def __repr__(self) -> str:
        return (
            f"<plait.ProcessPool max_workers={self._max_workers} {self._state.value} "
            f"idle={len(self._spare)} busy={len(self._working)} calls={self._calls}>"
        )

    @property
    def max_workers(self) -> int:
        """How many calls may run at once (one per worker process)."""
        return self._max_workers

    def worker_pids(self) -> list[int]:
        """The pids of the pool's live workers (idle or busy)."""
        return [w.pid for w in (*self._spare, *self._working)]

    async def run_sync(self, fn: Callable[..., T], *args: Any, cancellable: bool = True) -> T:
        """Run ``fn(*args)`` in a worker process and return its result.

        A checkpoint. Waits for a free worker if all are busy (starting one if fewer
        than ``max_workers`` exist). Raises what ``fn`` raised, with the worker's
        traceback as its ``__cause__``; ``BrokenWorkerError`` if the worker died;
        ``pickle.PicklingError`` at once if ``fn`` or an argument cannot be pickled
        (and in the caller if the result cannot be). If the caller is cancelled while
        ``fn`` runs, the worker is killed (``cancellable=True``), or the call runs to
        completion first (``cancellable=False``).
        """
        if not _plain_sync_function(fn):
            check_sync_fn(fn, "ProcessPool.run_sync()")
        if cancellable is not True and cancellable is not False:
            raise TypeError(f"cancellable must be True or False, got {describe(cancellable)}")
        self._check_open("run_sync()")
        result: T = await self._counted(self._run_call(fn, args, None, cancellable), fn)
        return result

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], claim: Callable[[], bool] | None
    ) -> Any:
        return await self._run_call(fn, args, claim, True)

    def _bind_loop(self) -> None:
        loop = current_loop("ProcessPool")
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this ProcessPool was first used in another plait.run(); a pool's "
                "workers belong to the run that started them: create the pool (async "
                "with plait.ProcessPool() as pool) inside each run"
            )

    async def _run_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        claim: Callable[[], bool] | None,
        cancellable: bool,
    ) -> Any:
        _raise_if_cancelled("ProcessPool.run_sync()")
        self._bind_loop()
        try:
            payload, buffers = _serial.dumps((fn, args), depth=2)
        except Exception as exc:
            raise _unpicklable_call(fn, args, exc) from None
        _serial.check_size(payload, f"the call {fn_name(fn)}()")
        call_id = next(self._call_ids)
        fd: int | None = None
        try:
            refs: tuple[BufferRef, ...] = ()
            if buffers:
                layout, size = _serial.layout(buffers)
                refs = tuple(layout)
                fd = _serial.new_segment_fd(size)
                for _ in _serial.segment_writer(fd, buffers, layout):
                    await checkpoint()
            message = Message.trusted(MessageKind.CALL, call_id, payload, refs)
            del buffers, payload
            slots = self._slots
            try:
                slots.acquire_nowait()
            except WouldBlock:
                await slots.acquire()
            try:
                worker = await self._take_worker()
                if claim is not None and not claim():
                    self._give_back(worker)
                    return UNCLAIMED
                if cancellable:
                    answer, views = await self._call_on(worker, message, fd, fn)
                else:
                    with CancelScope(shield=True):
                        answer, views = await self._call_on(worker, message, fd, fn)
            finally:
                slots.release()
        finally:
            if fd is not None:
                os.close(fd)
        if answer.kind is MessageKind.RESULT:
            return _serial.loads(answer.payload, views)
        raise _rebuild_error(answer.payload, worker.pid)

    async def _call_on(
        self, worker: _Worker, message: Message, fd: int | None, fn: Callable[..., Any]
    ) -> tuple[Message, list[Any]]:
        """Send the call to ``worker`` and wait for its answer. The worker goes back to
        the pool if it answered, else it is killed and reaped."""
        answered = False
        try:
            try:
                await self._send(worker, message, fd)
                reply = await worker.receive()
            except WireError as exc:
                raise _broken(
                    f"the connection to worker process {worker.pid} broke while it ran "
                    f"{fn_name(fn)}(): {exc}",
                    worker,
                ) from None
            if reply is None:
                with CancelScope(shield=True):
                    code = await worker.reap(GRACE_PERIOD, exiting=True)
                raise _broken(
                    f"worker process {worker.pid} {_how_it_ended(code)} while running "
                    f"{fn_name(fn)}(); the pool replaces it (other calls go on)",
                    worker,
                    code,
                )
            kind = reply[0].kind
            if (kind is not MessageKind.RESULT and kind is not MessageKind.ERROR) or (
                reply[0].call_id != message.call_id
            ):
                raise _broken(
                    f"worker process {worker.pid} answered call {message.call_id} with "
                    f"{kind.name} for call {reply[0].call_id}: protocol error",
                    worker,
                )
            answered = True
            return reply
        finally:
            if answered:
                worker.calls += 1
                self._give_back(worker)
            else:
                self._working.discard(worker)
                with CancelScope(shield=True):
                    await worker.reap(GRACE_PERIOD)

    async def _send(self, worker: _Worker, message: Message, fd: int | None) -> None:
        try:
            await worker.send(message, fd)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died: receive() finds the end of its stream and says how

    def _give_back(self, worker: _Worker) -> None:
        self._working.discard(worker)
        if self._max_tasks is not None and worker.calls >= self._max_tasks:
            self._retire(worker)
        else:
            self._spare.append(worker)  # (aclose() shuts the idle ones down)

    def _retire(self, worker: _Worker) -> None:
        """Ask ``worker`` to exit (it is reaped later) without waiting for it."""
        try:
            chunks, _ = _serial.outgoing(Message(MessageKind.SHUTDOWN, 0), None)
            worker.sock._sock.send(b"".join(chunks))  # 24 bytes: never blocks
        except OSError:
            pass
        worker.close()
        self._retiring.append(worker)
        self._reap_retired()

    def _reap_retired(self) -> None:
        self._retiring = [w for w in self._retiring if w.process.poll() is None]

    async def _take_worker(self) -> _Worker:
        """An idle live worker, or a new one. Holds a slot."""
        self._reap_retired()
        while self._spare:
            worker = self._spare.pop()
            if worker.process.poll() is None:
                self._working.add(worker)
                return worker
            worker.close()  # died while idle: nobody's call is affected
        return await self._start_worker()

    async def _start_worker(self) -> _Worker:
        if self._lifeline is None:
            self._lifeline = os.pipe()
        lifeline = self._lifeline[0]
        ours, theirs = _stdlib_socket.socketpair(_stdlib_socket.AF_UNIX)
        try:
            flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            process = await open_process(
                [sys.executable, *flags, WORKER_SCRIPT, str(theirs.fileno()), str(lifeline)],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), lifeline),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = _Worker(process, from_stdlib_socket(ours))
        self._working.add(worker)
        self.started_workers += 1
        ready = False
        try:
            await worker.send(Message(MessageKind.INIT, 0, self._init_payload), None)
            reply = await worker.receive()
            if reply is not None and reply[0].kind is MessageKind.READY:
                ready = True
                return worker
            with CancelScope(shield=True):
                code = await worker.reap(GRACE_PERIOD, exiting=True)
            if reply is not None and reply[0].kind is MessageKind.ERROR:
                cause = _rebuild_error(reply[0].payload, worker.pid)
                raise _broken(
                    f"the pool's initializer failed in worker process {worker.pid}: "
                    f"{type(cause).__name__}: {cause}",
                    worker,
                    code,
                ) from cause
            raise _broken(
                f"worker process {worker.pid} {_how_it_ended(code)} while starting; "
                "its stderr (inherited from this process) may say why",
                worker,
                code,
            )
        except (OSError, WireError) as exc:
            raise _broken(
                f"could not start a worker process: {type(exc).__name__}: {exc}",
                worker,
                worker.process.poll(),
            ) from exc
        finally:
            if not ready:
                self._working.discard(worker)
                with CancelScope(shield=True):
                    await worker.reap(GRACE_PERIOD)

    async def _aclose_workers(self) -> None:
        with CancelScope(shield=True):
            idle, self._spare = self._spare, []
            for worker in idle:
                self._retire(worker)
            retiring, self._retiring = self._retiring, []
            for worker in retiring:
                await worker.reap(GRACE_PERIOD, exiting=True)  # (told to exit)
            if self._lifeline is not None:
                for fd in self._lifeline:
                    os.close(fd)
                self._lifeline = None

    def __del__(self) -> None:
        lifeline = getattr(self, "_lifeline", None)
        if lifeline is not None:
            # Never closed: closing the lifeline makes the workers exit by themselves.
            for fd in lifeline:
                os.close(fd)
            self._lifeline = None
            warnings.warn(
                f"{self!r} was never closed; use 'async with plait.ProcessPool() as pool'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


async def _keep_default_pool(pool: ProcessPool) -> None:
    """A system task: it closes the run's default pool when the run ends."""
    try:
        await sleep_forever()
    finally:
        with CancelScope(shield=True):
            await pool.aclose()


def current_default_process_pool() -> ProcessPool:
    """The pool ``plait.to_process.run_sync`` uses: created on first use in each
    ``plait.run`` (``max_workers`` = the CPUs), closed when the run ends."""
    loop = current_loop("plait.to_process.current_default_process_pool()")
    pool: ProcessPool | None = loop._default_process_pool
    if pool is None or pool._state.value != "open":
        if loop._system_group is None or loop._system_scope is None:
            raise RuntimeError("plait.to_process needs a loop running plait.run()")
        pool = ProcessPool()
        loop._default_process_pool = pool
        loop._spawn(
            _keep_default_pool(pool),
            loop._system_group,
            loop._system_scope,
            "plait: the default process pool",
        )
    return pool


async def to_process_run_sync(fn: Callable[..., T], *args: Any, cancellable: bool = True) -> T:
    """Run ``fn(*args)`` in a worker process of the run's default pool; return its
    result. See :meth:`plait.ProcessPool.run_sync` (same errors and cancellation).

    The default pool starts its workers on demand, up to the number of CPUs, and is
    closed when ``plait.run`` ends. Lambdas and closures work; captured variables
    travel by value, as they are when the call is made.
    """
    pool = current_default_process_pool()
    return await pool.run_sync(fn, *args, cancellable=cancellable)
