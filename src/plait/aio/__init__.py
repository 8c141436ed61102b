"""plait.aio: plait's loop as an asyncio event loop.

``plait.aio.EventLoop`` is a complete ``asyncio.AbstractEventLoop`` on plait's kernel;
``new_event_loop()`` makes one (``asyncio.run(main(), loop_factory=...)`` on 3.12+,
``asyncio.Runner(loop_factory=...)`` on 3.11). ``run(main())`` is ``asyncio.run`` on
it; ``install()`` makes it asyncio's loop for the whole process. ``await
run_asyncio(coro)`` runs asyncio code from plait tasks, ``await run_plait(fn, *args)``
runs plait code from asyncio code on plait's loop.
"""

from __future__ import annotations

from ._bridge import run_asyncio as run_asyncio
from ._bridge import run_plait as run_plait
from ._loop import EventLoop as EventLoop
from ._loop import EventLoopPolicy as EventLoopPolicy
from ._loop import install as install
from ._loop import new_event_loop as new_event_loop
from ._loop import run as run

__all__ = [
    "EventLoop",
    "EventLoopPolicy",
    "install",
    "new_event_loop",
    "run",
    "run_asyncio",
    "run_plait",
]

for _obj in (EventLoop, EventLoopPolicy, install, new_event_loop, run, run_asyncio, run_plait):
    _obj.__module__ = __name__
del _obj
