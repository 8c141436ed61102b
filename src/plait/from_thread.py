"""plait.from_thread: call back into the loop from a worker thread."""

from __future__ import annotations

from ._threads import check_cancelled as check_cancelled
from ._threads import from_thread_run as run
from ._threads import from_thread_run_sync as run_sync

__all__ = ["check_cancelled", "run", "run_sync"]

for _fn, _name in ((run, "run"), (run_sync, "run_sync"), (check_cancelled, "check_cancelled")):
    _fn.__module__ = __name__
    _fn.__name__ = _fn.__qualname__ = _name
del _fn, _name
