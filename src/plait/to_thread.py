"""plait.to_thread: run blocking synchronous code in worker threads."""

from __future__ import annotations

from ._threads import current_default_thread_limiter as current_default_thread_limiter
from ._threads import to_thread_run_sync as run_sync

__all__ = ["current_default_thread_limiter", "run_sync"]

run_sync.__module__ = __name__
run_sync.__name__ = run_sync.__qualname__ = "run_sync"
current_default_thread_limiter.__module__ = __name__
