"""Cancel scopes: level-triggered, nestable, shieldable cancellation with deadlines.

Layer L3. Theory of operation (the model is trio's):

- Scopes form a tree that crosses task boundaries: a scope entered in a task is a child
  of that task's innermost scope, and a task spawned by a TaskGroup starts inside the
  group's scope, which lives in the parent task.
- Each scope caches ``_eff`` ("effectively cancelled"): it was cancelled itself, or its
  parent is effectively cancelled and it does not shield. The kernel's checkpoint reads
  one attribute (``task._scope._eff``); all the work happens when a scope's state
  changes, which is rare, and then only in the affected subtree.
- When a subtree becomes cancelled, every task whose innermost scope is in it and which
  is parked has its ``abort_fn`` called, so blocked tasks wake with ``Cancelled``.
  Running and ready tasks see the cancellation at their next checkpoint.
- On exit, a scope catches ``Cancelled`` if it is cancelled and its parent's
  cancellation is not visible through it. Cancelled therefore travels to the outermost
  cancelled scope and is caught there; an inner scope that was not cancelled never
  swallows an outer scope's cancellation.

Rejected: walking a task's scope chain at every checkpoint (O(depth) on the hot path)
and edge-triggered cancellation (a task that catches ``Cancelled`` by mistake would
silently keep running inside a cancelled scope).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .._exceptions import Cancelled
from .._util import check_deadline, public
from ._local import current_loop

if TYPE_CHECKING:
    from types import TracebackType

    from ._kernel import Loop
    from ._task import Task

__all__ = ["CancelScope"]


@public
class CancelScope:
    """A region of code that can be cancelled, explicitly or by a deadline.

    Use as ``with CancelScope(deadline=...) as scope:``. Inside, after ``scope.cancel()``
    or once ``current_time() >= deadline``, every checkpoint raises ``Cancelled``
    (level-triggered) until the ``with`` block ends; the scope then catches it and sets
    ``cancelled_caught``. ``shield=True`` protects the code inside from cancellation of
    the scopes outside (for cleanup that must finish). A scope can be entered once.
    """

    __slots__ = (
        "_cancel_called",
        "_cancelled_caught",
        "_children",
        "_deadline",
        "_eff",
        "_entered",
        "_exited",
        "_loop",
        "_owner",
        "_parent",
        "_shield",
        "_tasks",
        "_timer",
    )

    def __init__(self, *, deadline: float = math.inf, shield: bool = False) -> None:
        self._deadline = check_deadline(deadline, "CancelScope deadline")
        self._shield = bool(shield)
        self._cancel_called = False
        self._cancelled_caught = False
        self._entered = False
        self._exited = False
        # Invariant: _eff == _cancel_called or (not _shield and _parent is not None
        # and _parent._eff), for every scope that is entered and not exited.
        self._eff = False
        self._parent: CancelScope | None = None
        self._children: dict[CancelScope, None] | None = None
        # Tasks whose innermost scope is this one (a dict: deterministic order).
        self._tasks: dict[Task, None] = {}
        self._owner: Task | None = None
        self._loop: Loop | None = None
        self._timer: list[Any] | None = None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancel_called else ("active" if self._entered else "new")
        if self._exited:
            state = "exited"
        extra = "" if self._deadline == math.inf else f" deadline={self._deadline:.6f}"
        return f"<plait.CancelScope {state}{extra}{' shield' if self._shield else ''}>"

    # -- public properties -----------------------------------------------------------

    @property
    def cancel_called(self) -> bool:
        """True once ``cancel()`` was called or the deadline passed."""
        return self._cancel_called

    @property
    def cancelled_caught(self) -> bool:
        """True if the scope caught a ``Cancelled`` when it exited."""
        return self._cancelled_caught

    @property
    def deadline(self) -> float:
        """Absolute time (``current_time()`` units) at which the scope cancels itself.
        ``math.inf`` means never. Can be moved, earlier or later, while the scope runs."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = check_deadline(value, "CancelScope deadline")
        if self._entered and not self._exited and not self._cancel_called:
            self._arm_timer()

    @property
    def shield(self) -> bool:
        """While True, cancellation of enclosing scopes does not reach inside."""
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._shield = bool(value)
        if self._entered and not self._exited:
            self._recompute()

    def cancel(self) -> None:
        """Cancel the scope. Idempotent; may be called before, during or after it runs.

        Not a checkpoint and not async: tasks inside see ``Cancelled`` at their next
        checkpoint, and blocked tasks are woken now. Call from the loop's thread.
        """
        if self._cancel_called:
            return
        self._cancel_called = True
        if self._timer is not None and self._loop is not None:
            self._loop._timers.cancel(self._timer)
            self._timer = None
        if self._entered and not self._exited:
            self._recompute()

    # -- tree maintenance ------------------------------------------------------------

    def _attach(self, parent: CancelScope | None, loop: Loop) -> None:
        """Link into the tree under ``parent`` (kernel and TaskGroup use)."""
        self._entered = True
        self._loop = loop
        self._parent = parent
        if parent is not None:
            if parent._children is None:
                parent._children = {}
            parent._children[self] = None
        if self._cancel_called:
            self._eff = True
        else:
            self._eff = not self._shield and parent is not None and parent._eff
            if self._deadline != math.inf:
                self._arm_timer()

    def _detach(self) -> None:
        self._exited = True
        parent = self._parent
        if parent is not None and parent._children is not None:
            parent._children.pop(self, None)
        if self._children and parent is not None:
            # Scopes that outlive this one (those of an as_completed iterator) keep
            # hearing of cancellations from further out.
            for child in list(self._children):
                child._reparent(parent)
        if self._timer is not None and self._loop is not None:
            self._loop._timers.cancel(self._timer)
            self._timer = None

    def _reparent(self, new_parent: CancelScope) -> None:
        old = self._parent
        if old is not None and old._children is not None:
            old._children.pop(self, None)
        self._parent = None
        self._attach_parent_only(new_parent)
        self._recompute()

    def _attach_parent_only(self, parent: CancelScope) -> None:
        self._parent = parent
        if parent._children is None:
            parent._children = {}
        parent._children[self] = None

    def _arm_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._timer is not None:
            loop._timers.cancel(self._timer)
            self._timer = None
        if self._deadline == math.inf:
            return
        if self._deadline <= loop._clock.current_time():
            self.cancel()
        else:
            self._timer = loop._timers.push(self._deadline, _deadline_fired, self)

    def _recompute(self) -> None:
        """Re-derive ``_eff`` here and below; wake parked tasks that became cancelled.

        Iterative (a stack, not recursion), so deep nesting cannot hit the recursion
        limit; a subtree whose ``_eff`` does not change is not visited."""
        stack = [self]
        while stack:
            scope = stack.pop()
            parent = scope._parent
            eff = scope._cancel_called or (
                not scope._shield and parent is not None and parent._eff
            )
            if eff == scope._eff:
                continue
            scope._eff = eff
            if eff and scope._tasks:
                loop = scope._loop
                assert loop is not None
                for task in list(scope._tasks):
                    if task._abort_fn is not None:
                        loop._kernel_try_abort(task)
            if scope._children:
                stack.extend(reversed(scope._children))

    # -- the context manager ---------------------------------------------------------

    def __enter__(self) -> CancelScope:
        loop = current_loop("entering a CancelScope")
        task = loop._current_task
        if task is None:
            raise RuntimeError("a CancelScope must be entered inside a plait task")
        if self._entered:
            raise RuntimeError(
                "this CancelScope was already entered; a scope can be used once: create a "
                "new CancelScope (or move_on_after(...)) for each 'with' block"
            )
        self._owner = task
        parent = task._scope
        self._attach(parent, loop)
        parent._tasks.pop(task, None)
        self._tasks[task] = None
        task._scope = self
        return self

    def __exit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = self._owner
        assert task is not None
        assert self._parent is not None
        if task._loop._current_task is not task:
            if etype is GeneratorExit:
                # The coroutine is being closed outside its loop (garbage collected
                # after the run was abandoned, e.g. by a second Ctrl-C): there is no
                # scope tree left to keep consistent, and nothing to report.
                return False
            raise RuntimeError(
                f"{self!r} exited in a different task than the one that entered it; a "
                "cancel scope (or TaskGroup) must be entered and exited by the same task"
            )
        if task._scope is not self:
            raise RuntimeError(
                f"{self!r} exited out of order: cancel scopes (and TaskGroups) must be "
                "exited in the reverse order they were entered, in the task that entered "
                "them. Do not keep a scope open across a 'yield' in an async generator."
            )
        self._tasks.pop(task, None)
        parent = self._parent
        task._scope = parent
        parent._tasks[task] = None
        self._detach()
        self._owner = None
        del task  # the frame may end up in a traceback the task holds
        if exc is None or not self._eff:
            return False
        if parent._eff and not self._shield:
            return False  # the outer cancellation is visible: let it travel up
        return self._catch(exc)

    def _catch(self, exc: BaseException) -> bool:
        # Only a plain Cancelled is a scope's to catch; a TaskCancelled reports on
        # another task and passes through.
        if type(exc) is Cancelled:
            self._cancelled_caught = True
            return True
        if isinstance(exc, BaseExceptionGroup):
            matched, rest = exc.split(is_scope_cancellation)
            if matched is None:
                return False
            self._cancelled_caught = True
            if rest is None:
                return True
            context = exc.__context__
            try:
                raise rest
            finally:
                # raise sets rest.__context__ = exc; the original context is the truth.
                rest.__context__ = context
                del rest, exc, context, matched
        return False


def is_scope_cancellation(exc: BaseException) -> bool:
    """True for the ``Cancelled`` a cancel scope raises and catches."""
    return type(exc) is Cancelled


def _deadline_fired(scope: CancelScope) -> None:
    scope._timer = None
    scope.cancel()
