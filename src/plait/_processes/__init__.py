"""Process pool internals: the worker wire protocol, workers, and the pool (issue 6)."""
