"""Helpers shared by the test modules (import with ``from helpers import ...``)."""

from __future__ import annotations

from typing import Any

import plait
from plait.testing import MockClock


def vrun(fn: Any, *args: Any, clock: plait.lowlevel.Clock | None = None) -> Any:
    """``plait.run`` on virtual time: sleeps finish at once (unless ``clock`` is given)."""
    return plait.run(
        fn, *args, clock=clock if clock is not None else MockClock(autojump_threshold=0)
    )
