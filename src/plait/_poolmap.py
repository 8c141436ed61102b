"""``Pool.map``: calls over an iterable, read ahead a bounded amount. Layer L6.

Theory of operation. ``pool.map(fn, iterable)`` returns a :class:`PoolMap`, an async
iterator. Each item taken from the iterable becomes one call
``await pool.run_sync(fn, item)`` in a task of the map's own. Those tasks belong to a
small group object (:class:`_MapGroup`, which the kernel tells when each one ends) and
live in a cancel scope attached where the map was created: cancelling the code around
the map cancels the calls, while a timeout around one ``__anext__`` only stops that
wait, as with ``plait.as_completed``.

Backpressure. Items are taken from the iterable by the consumer's ``__anext__``, and
only while fewer than ``read_ahead`` items are *between the iterable and the
consumer* (taken but not yet delivered: waiting for a worker, running, or finished and
buffered). So after the consumer has received ``k`` results, at most ``k + read_ahead``
items have been taken, however slow the consumer is. ``ordered=True`` delivers results
in the iterable's order (a slow item holds back the ones after it, and the window then
fills with finished results: that is the price of order); ``ordered=False`` delivers
each result as soon as it is ready.

Cancellation. A cancelled wait in ``__anext__`` loses nothing: the result comes with
the next call. If the cancellation also covers the map (the code around
``pool.map(...)`` is cancelled), its calls are cancelled too, and ``__anext__`` raises
``Cancelled`` only once they have ended.

Failure. The first call that fails ends the map: the scope is cancelled (so the other
calls stop), the next ``__anext__`` waits for every call still running to end, like a
TaskGroup (cancelling the consumer does not cut that wait short), and raises the
error as it is, or an ``ExceptionGroup`` if several calls failed meanwhile (as
``plait.gather``). Results not yet consumed are dropped. An error raised by the
iterable itself ends the map the same way.

Leaving early. ``await it.aclose()`` (or ``async with pool.map(...) as it``) cancels
the calls still running and waits for them, then raises the errors of calls that
failed without being reported. A map abandoned without closing (``break`` out of
``async for``) is cancelled when it is garbage collected -- at once under CPython's
reference counting -- and the calls then end on their own; errors they raise go to
the loop's exception handler. Nothing outlives ``plait.run``.

Progress. ``progress=`` is a callback called with a :class:`MapProgress` each time a
call has finished successfully (on the loop's thread, in the task that ran the call:
it must not block; if it raises, that is an error of the map). ``it.progress()`` gives
the same snapshot on demand. ``progress=True`` uses a :class:`ProgressBar` instead: a
one-line bar on stderr when it is a terminal, else one summary line when the map ends;
the map tells the bar how it ended (done, failed, cancelled, stopped) wherever it ends,
so the line is always finished.

Rejected: an async generator with a TaskGroup open across its ``yield`` (the group's
cancel scope would stay entered in the consumer while the consumer's own code runs, so
scopes would no longer nest and a failing call would cancel the consumer's loop body);
and a feeder task pulling the iterable (one more task per map, and the iterable's
errors would surface in a task nobody waits on). Reference cycles: the call tasks'
frames refer only to the pool and a :class:`_Progress` (never to the group or the
iterator), so a failed call's traceback closes no cycle; stored errors are taken out
of the group before they are raised.
"""

from __future__ import annotations

import inspect
import operator
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

from ._core._cancel import CancelScope
from ._core._local import current_loop, current_loop_or_none
from ._core._traps import Abort, RaiseCancelT, checkpoint, schedule_point, wait_task_rescheduled
from ._exceptions import BusyResourceError, Cancelled
from ._util import describe

if TYPE_CHECKING:
    from ._core._kernel import Loop
    from ._core._task import Task
    from ._pool import Pool

__all__ = ["MapProgress", "PoolMap", "ProgressBar", "fn_name"]

T = TypeVar("T")


def fn_name(fn: object) -> str:
    """A function's name for messages and task names."""
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


@dataclass(frozen=True, slots=True)
class MapProgress:
    """Where a :meth:`plait.abc.Pool.map` stands.

    Attributes:
        done: calls that have finished successfully (delivered or not).
        submitted: items taken from the iterable so far (each one started as a call).
        total: the iterable's length if it has one (``operator.length_hint``), or None.
    """

    done: int
    submitted: int
    total: int | None


MapProgress.__module__ = "plait.abc"


PROGRESS_STREAM: TextIO | None = None
"""Where ``progress=True`` draws; None (the default) means ``sys.stderr`` as it is when
the map is created. (For tests, and for programs that want the bar elsewhere.)"""

REDRAW_INTERVAL = 0.1  # seconds: a terminal's bar is redrawn at most this often


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _speed(done: int, elapsed: float) -> str:
    if elapsed <= 0 or not done:
        return "-/s"
    rate = done / elapsed
    return f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"


class ProgressBar:
    """What ``Pool.map(..., progress=True)`` shows: a :class:`MapProgress` consumer.

    On a terminal (``stream.isatty()``), one line redrawn in place with ``"\\r"`` at most
    every :data:`REDRAW_INTERVAL` seconds (``update``) and once more, ended by a newline,
    when the map ends however it ends (``finish``)::

        map f: [#########...........]  45/100  45%  12.3/s  eta 4.5s

    With no known total, no bar and no estimate: ``map f: 45 done  12.3/s``. Anywhere
    else (a pipe, a file, a CI log), no line per step -- ``"\\r"`` redraws turn a log into
    one huge line -- but one summary when the map ends: ``map f: 100 done in 3.2s
    (31.2/s)``, or ``map f: 45 of 100 done, failed after 3.2s``. Rates use wall-clock
    time (``time.monotonic``, or ``clock``), not the loop's clock: the bar is for people.
    Writing never raises: a stream that is None, closed or broken turns the bar off.

    Rejected: ``rich`` or ``tqdm`` (as a dependency, or behind an extra): a dependency
    of the core for one line of output, with global state of its own (tqdm's monitor
    thread, rich's console and its refresh thread) where the pools promise to leave no
    thread behind; and a bar that can only be had with an extra installed would
    make ``progress=True`` fail, or silently do nothing, depending on the environment.
    Users who want a rich display pass their own ``progress=`` callback.
    """

    __slots__ = ("clock", "finished", "last_draw", "name", "start", "stream", "tty", "width")

    def __init__(
        self,
        name: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stream is None:
            stream = PROGRESS_STREAM if PROGRESS_STREAM is not None else sys.stderr
        self.name = name if len(name) <= 40 else name[:39] + "\u2026"
        self.stream: TextIO | None = stream
        self.clock = clock
        self.start = clock()
        self.last_draw: float | None = None  # when the line was last drawn (terminal)
        self.width = 0  # the length of the line on screen (a shorter redraw pads)
        self.finished = stream is None
        try:
            self.tty = stream is not None and bool(stream.isatty())
        except Exception:  # closed, or not a real stream
            self.tty = False

    def update(self, progress: MapProgress) -> None:
        """Redraw the line, unless it was drawn less than REDRAW_INTERVAL ago."""
        if self.finished or not self.tty:
            return
        now = self.clock()
        if self.last_draw is not None and now - self.last_draw < REDRAW_INTERVAL:
            return
        self.last_draw = now
        self._draw(progress, now - self.start, None)

    def finish(self, progress: MapProgress, outcome: str) -> None:
        """The map has ended (``outcome``: done, failed, cancelled or stopped): draw the
        final line and end it with a newline, or write the summary. Once only."""
        if self.finished:
            return
        self.finished = True
        elapsed = self.clock() - self.start
        if self.tty:
            self._draw(progress, elapsed, outcome)
        else:
            self._write(self.summary(progress, elapsed, outcome) + "\n")

    def line(
        self, progress: MapProgress, elapsed: float, outcome: str | None, bar: bool = True
    ) -> str:
        """The terminal line (``outcome`` None: the map is still running)."""
        done, total = progress.done, progress.total
        speed = _speed(done, elapsed)
        if total is None:
            head = f"map {self.name}: {done} done  {speed}"
        else:
            percent = 100 if total <= 0 else min(100, 100 * done // total)
            counts = f"{done:>{len(str(total))}}/{total} {percent:3d}%  {speed}"
            if bar:
                filled = 20 if total <= 0 else min(20, 20 * done // total)
                counts = f"[{'#' * filled}{'.' * (20 - filled)}] {counts}"
            head = f"map {self.name}: {counts}"
        if outcome is None:
            if total is None:
                return head
            if not done or elapsed <= 0:
                return f"{head}  eta ?"
            return f"{head}  eta {_duration(max(0, total - done) * elapsed / done)}"
        if outcome == "done":
            return f"{head}  in {_duration(elapsed)}"
        return f"{head}  {outcome} after {_duration(elapsed)}"

    def summary(self, progress: MapProgress, elapsed: float, outcome: str) -> str:
        """The one line written off a terminal when the map ends."""
        done, total = progress.done, progress.total
        if outcome == "done":
            speed = f" ({_speed(done, elapsed)})" if elapsed > 0 and done else ""
            return f"map {self.name}: {done} done in {_duration(elapsed)}{speed}"
        count = f"{done} done" if total is None else f"{done} of {total} done"
        return f"map {self.name}: {count}, {outcome} after {_duration(elapsed)}"

    def _draw(self, progress: MapProgress, elapsed: float, outcome: str | None) -> None:
        """Draw the line over the previous one (a newline after it if ``outcome``)."""
        columns = 0
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns  # type: ignore[union-attr]
        except Exception:  # (None, closed, or not a file: StringIO)
            pass
        limit = max((columns or 80) - 1, 20)  # a wrapped line cannot be redrawn in place
        text = self.line(progress, elapsed, outcome)
        if len(text) > limit:  # a narrow terminal: the bar goes first, then the end
            text = self.line(progress, elapsed, outcome, bar=False)[:limit]
        padding = " " * max(0, self.width - len(text))
        self.width = len(text)
        self._write(f"\r{text}{padding}" if outcome is None else f"\r{text}{padding}\n")

    def _write(self, text: str) -> None:
        stream = self.stream
        if stream is None:
            return
        try:
            stream.write(text)
            stream.flush()
        except Exception:
            self.finished = True  # closed or broken: stop drawing, never raise


class _Progress:
    """A map's counters, its progress callback and bar. The call tasks refer to this and
    to nothing else of the map, so it must not refer back to the group or the iterator."""

    __slots__ = ("bar", "callback", "done", "submitted", "total")

    def __init__(
        self,
        callback: Callable[[MapProgress], object] | None,
        total: int | None,
        bar: ProgressBar | None = None,
    ):
        self.callback = callback
        self.bar = bar
        self.total = total
        self.done = 0
        self.submitted = 0

    def snapshot(self) -> MapProgress:
        return MapProgress(self.done, self.submitted, self.total)

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.snapshot())
        if self.callback is not None:
            self.callback(self.snapshot())


async def _map_call(pool: Pool, fn: Callable[[Any], Any], item: Any, progress: _Progress) -> Any:
    value = await pool.run_sync(fn, item)
    progress.step()
    return value


def _cancelled_from_outside(scope: CancelScope) -> bool:
    """Is ``scope`` cancelled, by itself or through an unshielded ancestor? (Walks the
    tree: inside an abort function the cached ``_eff`` may not be updated yet.)"""
    s: CancelScope | None = scope
    while s is not None:
        if s._cancel_called:
            return True
        if s._shield:
            return False
        s = s._parent
    return False


def _raise_errors(errors: list[BaseException], what: str) -> None:
    """Raise one error as it is, several as a group (``KeyboardInterrupt`` and
    ``SystemExit`` always as they are). Empties ``errors``."""
    fatal = [e for e in errors if isinstance(e, KeyboardInterrupt | SystemExit)]
    error: BaseException
    if fatal:
        error = fatal[0]
    elif len(errors) == 1:
        error = errors[0]
    else:
        error = BaseExceptionGroup(f"{what}: several calls failed", list(errors))
    errors.clear()
    fatal.clear()
    try:
        raise error
    finally:
        del error


class _MapGroup:
    """The group of one map's call tasks, and what the consumer waits on."""

    __slots__ = (
        "abandoned",
        "errors",
        "fifo",
        "index",
        "loop",
        "next_index",
        "ordered",
        "results",
        "running",
        "scope",
        "waiter",
        "want_all",
    )

    def __init__(self, loop: Loop, ordered: bool) -> None:
        self.loop = loop
        self.ordered = ordered
        # Invariant: running == len(index) == call tasks spawned and not yet ended.
        self.running = 0
        self.index: dict[Task, int] = {}
        self.results: dict[int, Any] = {}  # ordered: finished, by index
        self.fifo: deque[Any] = deque()  # unordered: finished, in completion order
        self.next_index = 0  # ordered: the index the consumer receives next
        self.errors: list[BaseException] = []  # failures not yet raised
        self.waiter: Task | None = None
        self.want_all = False  # the waiter waits for every call to end, not for a result
        self.abandoned = False
        self.scope = CancelScope()
        task = loop._current_task
        parent = task._scope if task is not None else loop._system_scope
        assert parent is not None
        self.scope._attach(parent, loop)

    def has_result(self) -> bool:
        return self.next_index in self.results if self.ordered else bool(self.fifo)

    def pop_result(self) -> Any:
        if self.ordered:
            value = self.results.pop(self.next_index)
            self.next_index += 1
            return value
        return self.fifo.popleft()

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.scope.cancel()

    def _kernel_child_exited(self, task: Task, exc: BaseException | None) -> None:
        self.running -= 1
        index = self.index.pop(task)
        if task._was_cancelled:
            pass  # the map was cancelled or closed: not a failure
        elif exc is not None:
            if self.abandoned:
                self.report(exc)
            else:
                self.fail(exc)
        elif not self.abandoned:
            if self.ordered:
                self.results[index] = task._result
            else:
                self.fifo.append(task._result)
        if self.abandoned:
            if not self.running:
                self.detach()
            return
        waiter = self.waiter
        if waiter is None:
            return
        if self.want_all:
            ready = not self.running
        else:
            ready = bool(self.errors) or self.has_result() or not self.running
        if ready:
            self.waiter = None
            self.want_all = False
            self.loop._kernel_reschedule(waiter, None, None)

    def report(self, exc: BaseException) -> None:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            group = self.loop._system_group
            if group is not None:
                group.crash(exc)  # never swallowed: they end the run
            return
        self.loop.call_exception_handler(
            {"message": "Pool.map(): a call failed after the map was abandoned", "exception": exc}
        )

    def abandon(self) -> None:
        """The iterator was dropped unfinished: cancel the calls, report the errors
        nobody will see. (On the loop's thread.)"""
        if self.abandoned:
            return
        self.abandoned = True
        self.scope.cancel()
        errors, self.errors = self.errors, []
        for exc in errors:
            self.report(exc)
        del errors
        self.results.clear()
        self.fifo.clear()
        if not self.running:
            self.detach()

    def detach(self) -> None:
        if not self.scope._exited:
            self.scope._detach()


class PoolMap(AsyncIterator[T], Generic[T]):
    """The async iterator :meth:`plait.abc.Pool.map` returns (see there).

    Also an async context manager: ``async with pool.map(fn, items) as results:``
    closes it (cancelling and waiting for the calls still running) when the block ends.
    Iterate from one task at a time.
    """

    def __init__(
        self,
        pool: Pool,
        fn: Callable[[Any], T],
        iterable: Iterable[Any],
        *,
        ordered: bool,
        read_ahead: int,
        progress: Callable[[MapProgress], object] | bool | None,
    ) -> None:
        self._group: _MapGroup | None = None
        self._closed = False
        what = f"{type(pool).__name__}.map()"
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int):
            raise TypeError(f"{what}: read_ahead must be an int >= 1, got {describe(read_ahead)}")
        if read_ahead < 1:
            raise ValueError(
                f"{what}: read_ahead must be >= 1 (how many items may be taken ahead of "
                f"the consumer), got {read_ahead}"
            )
        if progress is False:
            progress = None
        if progress is not True and progress is not None and not callable(progress):
            raise TypeError(
                f"{what}: progress must be a function called with a MapProgress, True "
                f"(draw a progress bar on stderr), or None; got {describe(progress)}"
            )
        if hasattr(iterable, "__aiter__") and not hasattr(iterable, "__iter__"):
            raise TypeError(
                f"{what} takes a regular (synchronous) iterable of arguments, got the "
                f"async iterable {describe(iterable)}; collect its items first, or feed "
                "them to pool.run_sync() from a task"
            )
        try:
            it = iter(iterable)
        except TypeError:
            raise TypeError(
                f"{what} needs an iterable of arguments, got {describe(iterable)}"
            ) from None
        try:
            hint = operator.length_hint(iterable, -1)
        except Exception:
            hint = -1
        self._pool = pool
        self._fn = fn
        self._name = fn_name(fn)
        self._it: Iterator[Any] | None = it
        self._ordered = bool(ordered)
        self._read_ahead = read_ahead
        bar = None
        if progress is True:
            bar = ProgressBar(self._name.rsplit(".<locals>.", 1)[-1])
            progress = None
        self._progress = _Progress(progress, hint if hint >= 0 else None, bar)
        self._consumed = 0
        # Created in a task, the calls live in the cancel scopes in force *here*.
        loop = current_loop_or_none()
        if loop is not None and loop._current_task is not None:
            self._group = _MapGroup(loop, self._ordered)

    def __repr__(self) -> str:
        p = self._progress
        state = "closed" if self._closed else "open"
        return (
            f"<plait PoolMap {self._name} over {self._pool!r} {state} "
            f"done={p.done} submitted={p.submitted}>"
        )

    def progress(self) -> MapProgress:
        """How many calls have finished and how many items were taken so far."""
        return self._progress.snapshot()

    def _start(self, what: str) -> tuple[Task, _MapGroup | None]:
        """The cancel half of the checkpoint, then the group (None once closed)."""
        loop = current_loop(what)
        task = loop._current_task
        if task is None:
            raise RuntimeError(f"{what} must be awaited in a plait task")
        if task._scope._eff:
            raise Cancelled
        if self._closed:
            return task, None
        group = self._group
        if group is None:
            group = self._group = _MapGroup(loop, self._ordered)
        if group.waiter is not None:
            raise BusyResourceError(
                "another task is already iterating over this Pool.map(); iterate from "
                "one task only"
            )
        return task, group

    def _fill(self, group: _MapGroup) -> None:
        """Take items and start calls until ``read_ahead`` are between the iterable
        and the consumer."""
        progress = self._progress
        while self._it is not None and progress.submitted - self._consumed < self._read_ahead:
            try:
                item = next(self._it)
            except StopIteration:
                self._it = None
                break
            except BaseException as exc:
                self._it = None
                group.fail(exc)
                del exc
                break
            index = progress.submitted
            progress.submitted += 1
            call = _map_call(self._pool, self._fn, item, progress)
            del item
            task = group.loop._spawn(call, group, group.scope, f"map {self._name}[{index}]")
            group.index[task] = index
            group.running += 1
        if progress.bar is not None:
            progress.bar.update(progress.snapshot())  # (the first one draws the line)

    async def __anext__(self) -> T:
        """The next result. A checkpoint. Cancelling the consumer only stops this
        wait (the result is delivered by the next call) unless the cancellation also
        covers the map, which then ends: ``Cancelled`` is raised once its calls have
        ended. Raises the error of a failed call (see the module notes), and
        ``StopAsyncIteration`` at the end."""
        task, group = self._start("PoolMap.__anext__()")
        if group is None:
            await schedule_point()
            raise StopAsyncIteration
        while True:
            if group.errors or group.scope._eff:
                await self._drain(task, group)
                self._end(group, "failed" if group.errors else "cancelled")
                if group.errors:
                    _raise_errors(group.errors, f"{type(self._pool).__name__}.map()")
                raise Cancelled
            if group.has_result():
                value: T = group.pop_result()
                self._consumed += 1
                self._fill(group)  # keep the window full while the consumer works
                await schedule_point()
                return value
            self._fill(group)
            if group.errors:
                continue
            if self._it is None and not group.running:
                self._end(group, "done")
                await schedule_point()
                raise StopAsyncIteration
            group.waiter = task

            def abort(_: RaiseCancelT) -> Abort:
                if _cancelled_from_outside(group.scope):
                    group.want_all = True  # the map is ending: wait for its calls
                    return Abort.FAILED
                group.waiter = None
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)

    async def _drain(self, task: Task, group: _MapGroup) -> None:
        """Cancel the calls still running and wait until they have ended (not
        cancellable: like a TaskGroup, the map does not end before its calls)."""
        group.scope.cancel()
        while group.running:
            group.waiter = task
            group.want_all = True
            await wait_task_rescheduled(lambda _: Abort.FAILED)

    def _end(self, group: _MapGroup, outcome: str) -> None:
        self._closed = True
        self._it = None
        group.results.clear()
        group.fifo.clear()
        if not group.running:
            group.detach()
        self._finish_bar(outcome)

    def _finish_bar(self, outcome: str) -> None:
        """End the progress bar's line (if any): the map has ended with ``outcome``."""
        progress: _Progress | None = getattr(self, "_progress", None)  # (__del__)
        if progress is None or progress.bar is None:
            return
        total = progress.total
        if outcome == "stopped" and not progress.submitted:
            progress.bar.finished = True  # closed or dropped before it started: no line
            return
        if outcome == "stopped" and total is not None and progress.done >= total:
            outcome = "done"  # closed after the last result, before StopAsyncIteration
        progress.bar.finish(progress.snapshot(), outcome)

    async def aclose(self) -> None:
        """Stop: cancel the calls still running and wait until they have ended (even
        if the caller is cancelled meanwhile), then raise the errors of calls that
        failed without being reported. Idempotent. A checkpoint (at the end: the map
        is closed even when the caller is cancelled)."""
        if self._closed:
            await checkpoint()
            return
        loop = current_loop("PoolMap.aclose()")
        task = loop._current_task
        if task is None:
            raise RuntimeError("PoolMap.aclose() must be awaited in a plait task")
        group = self._group
        if group is not None and group.waiter is not None:
            raise BusyResourceError(
                "PoolMap.aclose() was called while another task iterates over the map; "
                "close it from the task that iterates"
            )
        self._closed = True
        self._it = None
        if group is not None:
            await self._drain(task, group)
            self._end(group, "failed" if group.errors else "stopped")
            if group.errors:
                _raise_errors(group.errors, f"{type(self._pool).__name__}.map()")
        else:
            self._finish_bar("stopped")
        await checkpoint()

    async def __aenter__(self) -> PoolMap[T]:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._closed:
            self._finish_bar("stopped")  # (abandoned: the calls still running are cancelled)
        group = self._group
        if group is None or self._closed:
            return
        if group.loop.is_closed():
            group.detach()  # no loop left to race with
            return
        if not group.running and not group.errors and current_loop_or_none() is group.loop:
            group.detach()  # nothing to cancel or report (and no callback to leave behind)
            return
        try:
            group.loop.call_soon_threadsafe(group.abandon)
        except RuntimeError:  # pragma: no cover - closed in between
            pass


def check_sync_fn(fn: object, what: str) -> None:
    """``TypeError`` unless ``fn`` is a synchronous callable a worker can run."""
    if not callable(fn):
        raise TypeError(f"{what} needs a function to run on a worker, got {describe(fn)}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{what} runs a synchronous function on a worker, but {fn_name(fn)} is an "
            "async function: await it in a task instead"
        )
