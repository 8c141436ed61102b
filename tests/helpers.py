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


def isolated(test_file: str, case: str, timeout: float = 60) -> None:
    """Run ``case()``, a module-level function of ``test_file``, in a fresh interpreter
    and fail with its output if it fails.

    For what depends on the whole process: plait.Deadlock is declared only while no
    thread but plait's own is alive (any other might call in), and a test process has
    threads that earlier tests left (executors, dask's)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(plait.__file__).resolve().parent.parent)
    here = str(Path(test_file).resolve().parent)
    module = Path(test_file).stem
    code = f"import {module}; {module}.{case}()"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, here]))
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{case}() failed in a fresh interpreter:\n{done.stderr}"
