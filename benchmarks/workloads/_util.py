"""Helpers shared by the workload modules."""

from __future__ import annotations


class WrongResult(RuntimeError):
    """An implementation produced a wrong result: its measurement must not be reported."""


def check(ok: bool, what: str) -> None:
    """Raise ``WrongResult(what)`` unless ``ok`` (unlike ``assert``, also under ``-O``)."""
    if not ok:
        raise WrongResult(what)
