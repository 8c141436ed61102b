"""Synchronising tests with calls running in worker processes, through files (import
with ``from gates import ...``). The worker functions here are module-level, so workers
(process-pool or dask) import them by name; ``tests/`` is on their ``sys.path``."""

from __future__ import annotations

import os
import time

import plait

DEADLINE = 30.0
"""Seconds a wait may take before the test fails instead of hanging."""


def touch(path, text=""):
    """Create ``path`` holding ``text`` atomically (never seen half written)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def wait_for_file(path):
    """In a worker: block until ``path`` exists (bounded)."""
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.002)


def held(gate_dir, name, value=None):
    """In a worker: announce ``name`` (a file holding our pid), wait for the gate to
    open, write ``name.finished`` and return ``(value, pid)``."""
    touch(os.path.join(gate_dir, f"{name}.started"), str(os.getpid()))
    wait_for_file(os.path.join(gate_dir, "open"))
    touch(os.path.join(gate_dir, f"{name}.finished"))
    return value, os.getpid()


def pid_and(value):
    return os.getpid(), value


def square(x):
    return x * x


def slow_square(gate_dir, x):
    """``x * x`` once the file ``go<x>`` exists (map items wait for the test)."""
    wait_for_file(os.path.join(gate_dir, f"go{x}"))
    return x * x


async def appears(path):
    """Wait (polling, bounded) until ``path`` exists; return its text."""
    with plait.fail_after(DEADLINE):
        while not os.path.exists(path):
            await plait.sleep(0.01)
    with open(path) as f:
        return f.read()


class Gate:
    """Calls of :func:`held` announce themselves here and wait until :meth:`open`."""

    def __init__(self, path):
        self.dir = str(path)

    async def started(self, *names):
        """Wait until each named call has started; return their worker pids."""
        return [int(await appears(os.path.join(self.dir, f"{n}.started"))) for n in names]

    def has(self, name, stage):
        return os.path.exists(os.path.join(self.dir, f"{name}.{stage}"))

    def has_started(self, name):
        return self.has(name, "started")

    def open(self):
        if not os.path.exists(os.path.join(self.dir, "open")):
            touch(os.path.join(self.dir, "open"))
