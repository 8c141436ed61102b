"""The facts about this machine that make benchmark numbers comparable.

``describe()`` is called once, when measuring starts, and its answer is stored in the
``Results`` (and in their JSON file): a report re-rendered later from that file must show
the interpreter, machine and git revision that produced the numbers, not today's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

from benchmarks.registry import RUNTIMES


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def git_revision(root: Path) -> str:
    """``git describe`` of the work tree at ``root`` (``-dirty`` if it has changes)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (no commit yet)"


def describe(root: Path) -> dict[str, str]:
    """``python``, ``machine``, the version of every registered runtime's distributions
    (``trio``, ...) and the ``git revision`` of ``root``, in the order the report shows
    them."""
    machine = f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.release()}"
    config = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    build = ", ".join(o for o in ("--enable-optimizations", "--with-lto") if o in config)
    python = (
        f"{platform.python_version()} ({platform.python_implementation()}, "
        f"{platform.python_compiler()}, {build or 'no PGO/LTO'}), {sys.executable}"
    )
    versions: dict[str, str] = {}
    for r in RUNTIMES.values():
        versions.update(r.versions())
    facts = {"python": python, "machine": machine}
    facts.update(sorted(versions.items()))
    facts["git revision"] = git_revision(root)
    return facts
