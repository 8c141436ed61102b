"""plait.to_process: run CPU-bound synchronous code in worker processes."""

from __future__ import annotations

from ._processes._pool import current_default_process_pool as current_default_process_pool
from ._processes._pool import to_process_run_sync as run_sync

__all__ = ["current_default_process_pool", "run_sync"]

run_sync.__module__ = __name__
run_sync.__name__ = run_sync.__qualname__ = "run_sync"
current_default_process_pool.__module__ = __name__
