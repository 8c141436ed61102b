"""The bridge between plait tasks and asyncio code on the same loop. Layer L6.

``await run_asyncio(coro)`` (in a plait task) runs ``coro`` as an asyncio task of the
loop's :class:`EventLoop` and waits for it; ``await run_plait(async_fn, *args)`` (in
asyncio code on an ``EventLoop``) runs ``async_fn(*args)`` as a plait task and waits
for it. Both are one thread and one loop: no thread hop, no copy.

Cancellation crosses in both directions and is structured: the side that waits never
returns before the other side has finished. A plait task cancelled while it waits for
asyncio code cancels the asyncio task, waits until it has ended, then raises
``plait.Cancelled`` (if the asyncio code swallowed the cancellation and returned, the
task gets the result and its scope raises ``Cancelled`` at the next checkpoint, as
after any uninterruptible operation). An asyncio task cancelled while it waits for
plait code cancels the plait task's scope, waits until it has ended, then raises
``asyncio.CancelledError``. Exceptions come back as they were raised.

Inside ``plait.run`` there is no ``EventLoop`` until ``run_asyncio`` first needs one:
it then puts one on the running plait loop (asyncio's ``get_running_loop()`` returns
it from then on) and a system task that, when the main task ends, cancels the asyncio
tasks still running, waits for them, and shuts the loop's executor down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .._core._cancel import CancelScope
from .._core._local import current_loop
from .._core._spawn import coerce_coroutine
from .._core._traps import Abort, RaiseCancelT, wait_task_rescheduled
from .._exceptions import Cancelled
from ._loop import EventLoop

__all__ = ["run_asyncio", "run_plait"]


async def run_asyncio(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` (an asyncio coroutine or other awaitable) as an asyncio task on
    the running plait loop and return its result. A checkpoint."""
    loop = current_loop("plait.aio.run_asyncio()")
    if not asyncio.iscoroutine(coro) and not asyncio.isfuture(coro):
        if callable(coro):
            raise TypeError(
                f"plait.aio.run_asyncio() takes a coroutine object, got the function "
                f"{getattr(coro, '__qualname__', coro)!r}: call it, run_asyncio(fn(...))"
            )
        if not hasattr(coro, "__await__"):
            raise TypeError(
                f"plait.aio.run_asyncio() takes a coroutine or an awaitable, got {coro!r}"
            )
    aio = loop._asyncio_loop
    if aio is None:
        aio = EventLoop._on_running(loop)
    task = loop._current_task
    if task is None:
        raise RuntimeError("plait.aio.run_asyncio() must be awaited in a plait task")
    future = asyncio.ensure_future(coro, loop=aio)
    cancel_requested: list[RaiseCancelT] = []

    def done(_: asyncio.Future[Any]) -> None:
        loop._kernel_reschedule(task, None, None)

    def abort(raise_cancel: RaiseCancelT) -> Abort:
        cancel_requested.append(raise_cancel)
        future.cancel()
        return Abort.FAILED  # the asyncio side ends first; done() wakes us then

    future.add_done_callback(done)
    await wait_task_rescheduled(abort)
    if future.cancelled() and cancel_requested:
        raise Cancelled("cancelled while waiting for asyncio code (plait.aio.run_asyncio)")
    return future.result()


async def run_plait(async_fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run ``async_fn(*args)`` as a plait task on this loop and return its result;
    for asyncio code running on a :class:`plait.aio.EventLoop`."""
    aio = asyncio.get_running_loop()
    if not isinstance(aio, EventLoop):
        raise RuntimeError(
            f"plait.aio.run_plait() needs plait's asyncio loop, and this one is {aio!r}: "
            "run the program with plait.aio.run(main()), or with "
            "asyncio.run(main(), loop_factory=plait.aio.new_event_loop)"
        )
    coro = coerce_coroutine(async_fn, args, "plait.aio.run_plait()")
    finished: asyncio.Future[Any] = aio.create_future()
    scope = CancelScope()
    try:
        aio._spawn_plait(_plait_side(coro, scope, finished), async_fn)
    except BaseException:
        coro.close()
        raise
    try:
        return await asyncio.shield(finished)
    except asyncio.CancelledError:
        if finished.done():
            raise
        scope.cancel()  # and wait for the plait task to end before going on
        while not finished.done():
            try:
                await asyncio.shield(finished)
            except asyncio.CancelledError:
                continue
        raise


async def _plait_side(coro: Any, scope: CancelScope, finished: asyncio.Future[Any]) -> None:
    """The plait task of ``run_plait``: run ``coro`` in ``scope``; hand the outcome to
    ``finished`` (cancelled if the scope was)."""
    result = None
    try:
        with scope:
            result = await coro
    except Exception as exc:
        if not finished.done():
            finished.set_exception(exc)
        del exc
        return
    except BaseException as exc:  # Cancelled from outside (the run ends), Ctrl-C ...
        if not finished.done():
            if isinstance(exc, Cancelled):
                finished.cancel()
            else:
                finished.set_exception(exc)
        raise
    if finished.done():
        return
    if scope.cancelled_caught:
        finished.cancel()
    else:
        finished.set_result(result)
