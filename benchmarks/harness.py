"""Run every (workload, runtime) pair ``reps`` times, round-robin, one subprocess each."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.child import RESULT_MARKER
from benchmarks.registry import RUNTIMES, WORKLOADS, find_impl

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the directory that contains the ``benchmarks`` package."""

BASELINE = "asyncio"

JSON_FORMAT = 1
"""Version of the JSON form of ``Results`` (``Results.to_json``)."""


class MeasurementError(Exception):
    """A measurement subprocess failed, timed out or printed no result."""


@dataclass
class Cell:
    """The results of one workload on one runtime."""

    workload: str
    runtime: str
    values: list[float] = field(default_factory=list)
    status: str | None = None
    """``None`` while measurable; else why there are no (more) values."""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Results:
    workloads: list[str]
    runtimes: list[str]
    reps: int
    quick: bool
    params: dict[str, dict[str, Any]]
    cells: dict[tuple[str, str], Cell]
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    """1-minute load average before and after the run (other work on the machine)."""
    date: dt.datetime | None = None
    """When the measuring finished (UTC, whole seconds)."""
    environment: dict[str, str] = field(default_factory=dict)
    """``machine.describe()`` when the measuring started: python, machine, versions, git."""
    command: str = ""
    """The command that measured, as the report shows it."""

    def cell(self, workload: str, runtime: str) -> Cell:
        return self.cells[workload, runtime]

    def ratio(self, workload: str, runtime: str) -> float | None:
        """Median of ``runtime`` divided by the median of asyncio (``None`` if unknown)."""
        if (workload, BASELINE) not in self.cells:
            return None
        mine, base = self.cell(workload, runtime).median, self.cell(workload, BASELINE).median
        if mine is None or base is None or base == 0:
            return None
        return mine / base

    def to_json(self) -> str:
        """Everything measured and everything the report says about the measuring (all
        samples, parameters, environment, load, command), so that the report and the chart
        can be rendered again without measuring. One cell a line, for readable diffs."""
        head = {
            "format": JSON_FORMAT,
            "command": self.command,
            "date": None if self.date is None else self.date.isoformat(),
            "environment": self.environment,
            "reps": self.reps,
            "quick": self.quick,
            "seconds": self.seconds,
            "load": list(self.load),
            "workloads": self.workloads,
            "runtimes": self.runtimes,
            "params": self.params,
        }
        cells = [
            json.dumps({"workload": w, "runtime": r, "values": c.values, "status": c.status})
            for w in self.workloads
            for r in self.runtimes
            for c in [self.cell(w, r)]
        ]
        head_text = json.dumps(head, indent=1).removesuffix("\n}")
        cells_text = ",\n  ".join(cells)
        return f'{head_text},\n "cells": [\n  {cells_text}\n ]\n}}\n'

    @classmethod
    def from_json(cls, text: str) -> Results:
        """The inverse of ``to_json``; raises ``ValueError`` if ``text`` is not one."""
        try:
            doc = json.loads(text)
            if doc.get("format") != JSON_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, not {JSON_FORMAT}")
            cells = {
                (c["workload"], c["runtime"]): Cell(
                    c["workload"], c["runtime"], [float(v) for v in c["values"]], c["status"]
                )
                for c in doc["cells"]
            }
            results = cls(
                workloads=list(doc["workloads"]),
                runtimes=list(doc["runtimes"]),
                reps=int(doc["reps"]),
                quick=bool(doc["quick"]),
                params={w: dict(p) for w, p in doc["params"].items()},
                cells=cells,
                seconds=float(doc["seconds"]),
                load=(float(doc["load"][0]), float(doc["load"][1])),
                date=None if doc["date"] is None else dt.datetime.fromisoformat(doc["date"]),
                environment={str(k): str(v) for k, v in doc["environment"].items()},
                command=str(doc["command"]),
            )
        except (KeyError, IndexError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a benchmark results file: {exc!r}") from None
        except ValueError as exc:
            raise ValueError(f"not a benchmark results file: {exc}") from None
        missing = [
            (w, r) for w in results.workloads for r in results.runtimes if (w, r) not in cells
        ]
        if missing or set(results.params) != set(results.workloads):
            raise ValueError(f"not a benchmark results file: incomplete ({missing[:3]})")
        return results


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def measure(workload: str, runtime: str, params: dict[str, Any], timeout: float) -> float:
    """Run one measurement in a fresh interpreter and return the workload's metric."""
    cmd = [sys.executable, "-m", "benchmarks.child", workload, runtime, json.dumps(params)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise MeasurementError(lines[-1] if lines else f"exit status {proc.returncode}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            value: float = json.loads(line[len(RESULT_MARKER) :])["value"]
            return value
    raise MeasurementError("the measurement printed no result")


def round_robin(runtimes: Sequence[str], rep: int) -> list[str]:
    """Each repetition visits every runtime once, starting one further along each time,
    so no runtime always runs right after the same neighbour."""
    shift = rep % len(runtimes) if runtimes else 0
    return [*runtimes[shift:], *runtimes[:shift]]


def run(
    workloads: Sequence[str],
    runtimes: Sequence[str],
    *,
    reps: int,
    quick: bool,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Measure: for each repetition, for each workload, each runtime once (round-robin)."""
    import time

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    environment = machine.describe(ROOT)
    params = {w: WORKLOADS[w].sizes(quick) for w in workloads}
    cells = {(w, r): Cell(w, r) for w in workloads for r in runtimes}
    for r in runtimes:
        reason = RUNTIMES[r].unavailable()
        for w in workloads:
            if reason is not None:
                cells[w, r].status = reason
            elif find_impl(w, r) is None:
                cells[w, r].status = "no implementation"
    for rep in range(reps):
        for w in workloads:
            for r in round_robin(runtimes, rep):
                cell = cells[w, r]
                if cell.status is not None:
                    continue
                try:
                    value = measure(w, r, params[w], timeout)
                except MeasurementError as exc:
                    cell.status = f"error: {exc}"
                    note = cell.status
                else:
                    cell.values.append(value)
                    note = f"{format_value(value)} {WORKLOADS[w].unit}"
                if progress is not None:
                    progress(f"[rep {rep + 1}/{reps}] {w:<14} {r:<8} {note}")
    return Results(
        list(workloads),
        list(runtimes),
        reps,
        quick,
        params,
        cells,
        seconds=time.perf_counter() - started,
        load=(load_before, os.getloadavg()[0]),
        date=dt.datetime.now(dt.UTC).replace(microsecond=0),
        environment=environment,
    )


def format_value(x: float) -> str:
    """Three or four significant digits with a k/M suffix: 84.1k, 1.62M, 26.3, 0.412."""
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    if ax >= 1e3:
        return f"{x / 1e3:.2f}k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if ax >= 1 else f"{x:.3g}"
