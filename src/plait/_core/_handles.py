"""Callback handles returned by ``Loop.call_soon``/``call_later``/``call_at``. Layer L3."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._kernel import Loop

__all__ = ["Handle", "TimerHandle"]


class Handle:
    """A callback scheduled on a :class:`plait.Loop`; ``cancel()`` stops it running."""

    __slots__ = ("_args", "_callback", "_cancelled", "_context")

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> None:
        self._callback = callback
        self._args = args
        self._context = context
        self._cancelled = False

    def __repr__(self) -> str:
        name = getattr(self._callback, "__qualname__", repr(self._callback))
        return f"<plait.Handle {name}{' cancelled' if self._cancelled else ''}>"

    def cancel(self) -> None:
        """Do not run the callback. Idempotent; harmless after it ran."""
        if not self._cancelled:
            self._cancelled = True
            self._callback = _noop
            self._args = ()

    def cancelled(self) -> bool:
        return self._cancelled

    def _run(self) -> None:
        if self._context is None:
            self._callback(*self._args)
        else:
            self._context.run(self._callback, *self._args)


class TimerHandle(Handle):
    """A callback scheduled for a time; ``when()`` says when."""

    __slots__ = ("_entry", "_loop", "_when")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
        loop: Loop,
    ) -> None:
        super().__init__(callback, args, context)
        self._when = when
        self._loop = loop
        self._entry: list[Any] | None = None

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" when={self._when:.6f}>"

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        if not self._cancelled:
            super().cancel()
            if self._entry is not None:
                self._loop._timers.cancel(self._entry)
                self._entry = None


def _noop(*args: Any) -> None:
    pass
