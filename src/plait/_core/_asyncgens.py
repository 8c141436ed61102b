"""Async generator finalization: abandoned async generators are closed by the loop.

Layer L3: the kernel's ``Loop.run_until_complete`` installs and drives these hooks.

Theory of operation. An async generator that is dropped before it is exhausted (a
``break`` out of ``async for``, an exception in the loop body, a cancelled consumer,
or the cyclic GC) still has ``finally`` blocks and ``async with`` exits to run, and
they may await. Python cannot run them itself: it calls the *finalizer hook* that was
installed (``sys.set_asyncgen_hooks``) in the thread where the generator was first
iterated, and leaves the rest to the event loop. For the duration of a run:

- ``firstiter`` adopts every generator first iterated by a task of this run: it is
  remembered (weakly, in first-iteration order) so that the ones still alive when the
  main task ends can be closed before ``plait.run`` returns.
- ``finalizer`` runs wherever the interpreter drops the generator: in any thread, in the
  middle of a task step or of the kernel itself. So it only does thread-safe,
  non-reentrant work: it appends the generator to a deque and asks the loop, through
  ``call_soon_threadsafe``, to spawn a system task that ``aclose()``-s it. The generator
  then closes in a task with a working loop: it may sleep, spawn, take locks.
- When the main task has ended, and *before* system tasks are cancelled (a ``finally``
  may need them), the kernel runs :meth:`AsyncGenHooks.close_remaining`: it waits for
  the closing tasks already spawned, then closes the generators still alive, one at a
  time (closing one may advance another: doing them together could make a user's
  ``anext`` fail with "already running"), until none is left.
- Errors raised while closing go to the loop's exception handler, never lost and never
  crashing the run. ``KeyboardInterrupt`` and ``SystemExit`` end the run as from any
  system task.

Generators that are not ours are left alone. Hooks are per-thread and every generator
keeps the finalizer that was installed when it was first iterated, so a generator of
an asyncio loop (in another thread, or in this one before the run) never reaches us. A
generator first iterated in this thread during the run but outside any plait task (in
a loop callback, say) is marked foreign, handed to the previous ``firstiter``, and at
finalization to the previous finalizer (or, if there was none, closed as Python itself
would: one synchronous step). The mark lives in the generator frame's locals: weak
references to the generator are already cleared when the finalizer runs, so a set of
foreign generators could not be consulted then (trio keeps the same mark).

A generator of ours finalized after the run (first iterated while the system tasks
were being cancelled, and kept past the end) has no loop left: it is closed in one
synchronous step, and an await in its cleanup is reported as an error.

Rejected: closing abandoned generators inside the finalizer (it may run inside the
kernel or in another thread, and the generator may await); spawning the closing task
from the hook (not thread-safe); closing them in a cancelled scope, as trio does (then
a ``finally`` block could not await anything: plait gives cleanup a working loop). The
price: a cleanup that never finishes keeps ``plait.run`` from returning, as asyncio's
``shutdown_asyncgens`` does; Ctrl-C cancels it. Nothing here runs per task step: the
hooks cost one call and one weak reference per generator (as asyncio's), at its first
iteration, and one call at the finalization of an abandoned one.
"""

from __future__ import annotations

import sys
import weakref
from collections import deque
from collections.abc import AsyncGenerator
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._exceptions import Cancelled
from ._local import run_state
from ._traps import Abort, RaiseCancelT, wait_task_rescheduled

if TYPE_CHECKING:
    from ._kernel import Loop
    from ._task import Task

__all__ = ["AsyncGenHooks"]

AGen = AsyncGenerator[Any, Any]

# Frame-local key marking a generator that belongs to the previous hooks (see above).
_FOREIGN = "@plait_foreign_asyncgen"


def _name(agen: AGen) -> str:
    return getattr(agen, "__qualname__", None) or repr(agen)


def _frame(agen: AGen) -> FrameType | None:
    frame: FrameType | None = getattr(agen, "ag_frame", None)
    return frame


def _refuse_abort(_: RaiseCancelT) -> Abort:
    return Abort.FAILED


def _close_synchronously(agen: AGen) -> BaseException | None:
    """Close ``agen`` without a loop, as Python does when no finalizer is installed:
    one step of ``aclose()``. Returns the error, if any (an await in its cleanup is one:
    there is nothing to wait with)."""
    closer = agen.aclose()
    try:
        closer.send(None)
    except StopIteration:
        return None
    except BaseException as exc:
        return exc
    try:
        closer.close()
    except BaseException as exc:  # 3.13: a cleanup that swallows GeneratorExit
        return exc
    return RuntimeError(
        f"async generator {_name(agen)!r} awaited something while it was being closed "
        "outside a running plait loop; close it before the run ends (for example with "
        "'async with contextlib.aclosing(agen):')"
    )


class AsyncGenHooks:
    """The async generator hooks of one ``Loop.run_until_complete`` call."""

    __slots__ = (
        "_active",
        "_alive",
        "_doomed",
        "_in_flight",
        "_loop",
        "_prev",
        "_prune_at",
        "_waiter",
    )

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        # Generators first iterated by a task of this run, in that order. Weak: an
        # abandoned one must still be collected (and then reach the finalizer). Plain
        # references without callbacks, the dead ones pruned when the list has doubled:
        # cheaper per generator than a WeakSet (no callback when a generator dies).
        # Loop thread only (the hooks are per-thread).
        self._alive: list[weakref.ref[AGen]] = []
        self._prune_at = 64
        # Abandoned generators handed over by the finalizer, from any thread, until the
        # loop spawns their closing tasks. Only append and popleft (thread-safe).
        self._doomed: deque[AGen] = deque()
        # Invariant: the number of closing tasks spawned and not finished. Loop thread.
        self._in_flight = 0
        # close_remaining's task while it waits for _in_flight to drop to 0.
        self._waiter: Task | None = None
        # True between install() and uninstall(): the loop still takes generators.
        self._active = False
        self._prev: Any = None  # the sys.asyncgen_hooks found by install()

    def install(self) -> None:
        """Install the hooks in this thread, remembering the previous ones."""
        self._prev = sys.get_asyncgen_hooks()
        self._active = True
        sys.set_asyncgen_hooks(firstiter=self._firstiter, finalizer=self._finalizer)

    def uninstall(self) -> None:
        """Restore the previous hooks. Generators handed over too late for the loop
        (only possible in a race with another thread) are closed here."""
        self._active = False
        sys.set_asyncgen_hooks(firstiter=self._prev.firstiter, finalizer=self._prev.finalizer)
        self._close_doomed_now()

    def pending(self) -> bool:
        """True while generators wait in the deque for their closing task."""
        return bool(self._doomed)

    def has_work(self) -> bool:
        """True if :meth:`close_remaining` has something to do."""
        return bool(self._in_flight or self._doomed) or any(r() for r in self._alive)

    # -- the hooks (called by the interpreter) ---------------------------------------

    def _firstiter(self, agen: AGen) -> None:
        loop = self._loop
        if loop._current_task is not None and run_state.loop is loop and self._active:
            alive = self._alive
            alive.append(weakref.ref(agen))
            if len(alive) > self._prune_at:
                alive[:] = [r for r in alive if r() is not None]
                self._prune_at = max(64, 2 * len(alive))
            return
        # Not iterated by one of our tasks: it belongs to whoever hooked in before us.
        frame = _frame(agen)
        if frame is not None:
            frame.f_locals[_FOREIGN] = True
        prev = self._prev.firstiter
        if prev is not None:
            prev(agen)

    def _finalizer(self, agen: AGen) -> None:
        # Any thread, any moment (even inside the kernel): thread-safe work only.
        frame = _frame(agen)
        if frame is not None and frame.f_locals.get(_FOREIGN):
            prev = self._prev.finalizer
            if prev is not None:
                prev(agen)
                return
            error = _close_synchronously(agen)
            if error is not None:
                try:
                    raise error  # reported by the interpreter, as without any hooks
                finally:
                    del error
            return
        if self._active:
            self._doomed.append(agen)
            del agen
            try:
                self._loop.call_soon_threadsafe(self._kernel_spawn_closers)
            except RuntimeError:  # the loop closed meanwhile: uninstall() has run
                pass
            # Discussion: uninstall() clears _active, then drains the deque. If we
            # appended after its drain, we see _active cleared here and drain it
            # ourselves; if we still see it set, uninstall() has not cleared it yet and
            # its drain comes after our append. Either way the generator is popped
            # exactly once (popleft is atomic).
            if self._active:
                return
        else:  # the run is over (the generator was in use when it ended)
            self._doomed.append(agen)
            del agen
        self._close_doomed_now()

    # -- in the loop -----------------------------------------------------------------

    def _kernel_spawn_closers(self) -> None:
        """Loop callback: a closing system task per generator handed over."""
        loop = self._loop
        doomed = self._doomed
        if not self._active or loop._system_group is None or loop._system_scope is None:
            return
        while doomed:
            agen = doomed.popleft()
            self._in_flight += 1
            loop._spawn(
                self._closing_task(agen),
                loop._system_group,
                loop._system_scope,
                f"close abandoned async generator {_name(agen)}",
            )

    async def _closing_task(self, agen: AGen) -> None:
        try:
            await self._close(agen)
        finally:
            del agen
            self._in_flight -= 1
            waiter = self._waiter
            if not self._in_flight and waiter is not None:
                self._waiter = None
                self._loop._kernel_reschedule(waiter, None, None)
            del waiter

    async def _close(self, agen: AGen) -> None:
        """``aclose()`` the generator; report what it raises."""
        try:
            await agen.aclose()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            task = self._loop._current_task
            if type(exc) is Cancelled and task is not None and task._scope._eff:
                return  # the run is being cancelled: the cleanup was cut short by it
            del task
            self._loop.call_exception_handler(
                {
                    "message": "Exception raised while closing the abandoned async "
                    f"generator {_name(agen)!r}. Use 'async with contextlib.aclosing("
                    "agen):' to see such errors where the generator is used.",
                    "exception": exc,
                    "asyncgen": agen,
                }
            )

    async def close_remaining(self) -> None:
        """Close every generator of this run that is still alive. Run by the kernel in
        a system task once the main task has ended, while system tasks still run."""
        while True:
            while self._in_flight or self._doomed:
                self._waiter = self._loop._current_task
                # Not cancellable: the closing tasks are cancelled along with us.
                await wait_task_rescheduled(_refuse_abort)
            refs, self._alive = self._alive, []
            batch = [agen for agen in (ref() for ref in refs) if agen is not None]
            del refs
            for agen in batch:
                # A generator that a system task is iterating right now (ag_running) is
                # that task's: it is closed when the task drops it. A finished one
                # (no frame) needs nothing.
                if _frame(agen) is not None and not getattr(agen, "ag_running", False):
                    await self._close(agen)
            if not batch:
                return
            del batch, agen

    def _close_doomed_now(self) -> None:
        """Close the handed-over generators here and now, without the loop."""
        doomed = self._doomed
        while True:
            try:
                agen = doomed.popleft()
            except IndexError:
                return
            error = _close_synchronously(agen)
            if error is not None:
                self._loop.call_exception_handler(
                    {
                        "message": "Exception raised while closing the abandoned async "
                        f"generator {_name(agen)!r} after the run ended",
                        "exception": error,
                        "asyncgen": agen,
                    }
                )
            del agen, error
