"""Small helpers shared by all layers. Layer L0: imports nothing from plait."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def public(obj: F) -> F:
    """Mark ``obj`` as belonging to the public ``plait`` namespace in reprs and tracebacks."""
    obj.__module__ = "plait"
    return obj


def check_seconds(value: float, what: str, *, allow_inf: bool = True) -> float:
    """Validate a duration: a real number >= 0, not NaN. Returns it as a float.

    The error names the argument and says what to pass instead.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{what} must be a number of seconds, got {value!r} ({type(value).__name__})"
        )
    if math.isnan(value):
        raise ValueError(f"{what} must be a number of seconds, got NaN")
    if value < 0:
        raise ValueError(
            f"{what} must be >= 0, got {value!r}; a negative duration means the wait is "
            "already over: pass 0 for 'right now'"
        )
    if not allow_inf and math.isinf(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def check_deadline(value: float, what: str) -> float:
    """Validate an absolute deadline: any real number or +-inf, but not NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{what} must be a time in seconds, got {value!r} ({type(value).__name__})"
        )
    if math.isnan(value):
        raise ValueError(f"{what} must be a time in seconds, got NaN; use math.inf for 'never'")
    return float(value)


def describe(obj: object) -> str:
    """A short, readable description of ``obj`` for error messages."""
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(obj).__name__})"


def heappush_or_undo(heap: list[Any], item: Any) -> None:
    """``heapq.heappush``, leaving ``heap`` as it was if comparing ``item`` fails.

    (heappush appends the item, and may swap entries, before a comparison raises.)"""
    try:
        heapq.heappush(heap, item)
    except BaseException:
        for index in range(len(heap) - 1, -1, -1):
            if heap[index] is item:
                del heap[index]
                break
        heapq.heapify(heap)
        raise
