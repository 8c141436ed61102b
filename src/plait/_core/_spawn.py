"""Turning what users pass to ``spawn``/``run`` into a coroutine, with clear errors."""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from .._util import describe

__all__ = ["coerce_coroutine"]

_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE


def _is_kernel_drivable(obj: object) -> bool:
    cls = type(obj)
    if cls is types.CoroutineType:
        return True
    return cls is types.GeneratorType and bool(
        obj.gi_code.co_flags & _CO_ITERABLE_COROUTINE  # type: ignore[attr-defined]
    )


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def _fn_name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def coerce_coroutine(
    fn: Any,
    args: tuple[Any, ...],
    what: str,
    kwargs: dict[str, Any] | None = None,
) -> Coroutine[Any, Any, Any] | Generator[Any, Any, Any]:
    """Return a coroutine the kernel can drive from ``fn(*args, **kwargs)`` or ``fn``.

    ``what`` names the API for the error message, e.g. ``"TaskGroup.spawn()"``.
    """
    if _is_kernel_drivable(fn):
        if args or kwargs:
            fn.close()  # rejected: close it so no "never awaited" warning follows
            raise TypeError(
                f"{what} got a coroutine object and extra arguments; pass the async "
                f"function and its arguments separately, e.g. {what[:-1]}worker, arg)"
            )
        return fn  # type: ignore[no-any-return]
    if not callable(fn):
        if inspect.isawaitable(fn):
            if args or kwargs:
                raise TypeError(f"{what} got an awaitable and extra arguments")
            return _await(fn)
        if isinstance(fn, types.GeneratorType):
            raise TypeError(
                f"{what} got a plain generator {describe(fn)}, not a coroutine. Write the "
                "function with 'async def', or decorate the generator function with "
                "@plait.coroutine."
            )
        hint = ""
        if fn is None:
            hint = (
                " This usually means a regular function was called and its result was "
                "passed: pass an async function instead."
            )
        raise TypeError(
            f"{what} expected an async function (or a coroutine object), got "
            f"{describe(fn)}.{hint} Pass the function and its arguments, e.g. "
            f"{what[:-1]}worker, arg)."
        )
    result = fn(*args, **kwargs) if kwargs else fn(*args)
    if _is_kernel_drivable(result):
        return result  # type: ignore[no-any-return]
    if inspect.isawaitable(result):
        return _await(result)
    name = _fn_name(fn)
    if isinstance(result, types.GeneratorType):
        raise TypeError(
            f"{what}: {name}() returned a plain generator, not a coroutine. Write it with "
            "'async def', or decorate it with @plait.coroutine."
        )
    raise TypeError(
        f"{what}: {name} is a regular function, not an async function: calling it "
        f"returned {describe(result)}. Declare it with 'async def', or run blocking code "
        f"in a worker thread with plait.to_thread.run_sync({name})."
    )


def callable_name(fn: Callable[..., Any]) -> str:
    return _fn_name(fn)
