"""The tracer: an instrument that records a timeline. Layer L7.

Recording is cheap and dumb: each hook appends a tuple with ``time.perf_counter()`` to
a list; everything else (pairing, flows, rows, text) is done when writing. Times are
kept in seconds from the first event and written in microseconds.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import IO, Any

from .._core._instrument import Instrument, Job
from .._core._local import run_state
from .._core._task import Task
from ._html import PAGE

__all__ = ["Tracer"]

_LOOP_ROW = 0  # the loop's own row (I/O waits) in the Perfetto output


class Tracer(Instrument):
    """Records task steps, wake-ups (who made each task runnable), I/O waits and jobs.

    ``plait.run(main, instruments=[tracer])``, then ``tracer.write_perfetto(path)``
    (open it in https://ui.perfetto.dev or chrome://tracing), ``tracer.write_html(path)``
    (one file, no network needed: a row per task, zoom with the wheel, pan by dragging,
    details on hover), or ``print(tracer.summary())``. A tracer can record several runs
    one after the other; ``clear()`` forgets what it has.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything recorded."""
        self._t0: float | None = None
        self._tasks: dict[int, tuple[str, int]] = {}  # id -> (name, parent id or 0)
        self._steps: list[tuple[int, float, float]] = []  # task id, start, end
        self._wakes: list[tuple[int, int, float]] = []  # woken, waker (0: the loop), t
        self._exits: list[tuple[int, float, str]] = []  # task id, t, how it ended
        self._io: list[tuple[float, float, float]] = []  # start, end, timeout
        self._jobs: dict[int, list[Any]] = {}  # id -> [kind, name, task id, start, end]
        self._step_start = 0.0
        self._io_start = 0.0
        self._last_stepped = 0

    def _now(self) -> float:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    # -- the hooks ---------------------------------------------------------------------

    def before_run(self) -> None:
        self._now()

    def task_spawned(self, task: Task) -> None:
        loop = run_state.loop
        parent = loop._current_task if loop is not None else None
        self._tasks[task.id] = (task.name, parent.id if parent is not None else 0)

    def task_scheduled(self, task: Task) -> None:
        loop = run_state.loop
        waker = loop._current_task if loop is not None else None
        if waker is not None:
            by = waker.id
        elif task.id == self._last_stepped:
            by = task.id  # its own checkpoint: runnable again at once
            self._last_stepped = 0
        else:
            by = 0  # the loop: a timer, an fd, a thread's outcome, a callback
        self._wakes.append((task.id, by, self._now()))

    def before_task_step(self, task: Task) -> None:
        self._last_stepped = 0
        self._step_start = self._now()

    def after_task_step(self, task: Task) -> None:
        self._steps.append((task.id, self._step_start, self._now()))
        self._last_stepped = task.id
        if task.id not in self._tasks:  # spawned before the tracer was added
            self._tasks[task.id] = (task.name, 0)

    def task_exited(self, task: Task) -> None:
        self._exits.append((task.id, self._now(), task._state()))

    def before_io_wait(self, timeout: float) -> None:
        self._io_start = self._now()

    def after_io_wait(self, timeout: float) -> None:
        self._io.append((self._io_start, self._now(), timeout))

    def job_started(self, job: Job) -> None:
        task_id = job.task.id if job.task is not None else 0
        self._jobs[job.id] = [job.kind, job.name, task_id, self._now(), None]

    def job_finished(self, job: Job) -> None:
        record = self._jobs.get(job.id)
        if record is not None:
            record[4] = self._now()

    # -- reading it --------------------------------------------------------------------

    def _name(self, task_id: int) -> str:
        name = self._tasks.get(task_id, ("?", 0))[0]
        return f"{name} #{task_id}"

    def _end(self) -> float:
        ends = [end for _, _, end in self._steps] + [end for _, end, _ in self._io]
        ends += [t for _, _, t in self._wakes]
        return max(ends, default=0.0)

    def summary(self, *, longest: int = 10) -> str:
        """Steps and busy time per task, the loop's time waiting for I/O, the jobs, and
        the ``longest`` longest steps, as text."""
        busy: dict[int, list[float]] = {}
        for task_id, start, end in self._steps:
            busy.setdefault(task_id, []).append(end - start)
        total_busy = sum(sum(d) for d in busy.values())
        io_wait = sum(end - start for start, end, _ in self._io)
        lines = [
            f"plait trace: {len(self._tasks)} tasks, {len(self._steps)} steps in "
            f"{self._end():.3f} s (tasks busy {total_busy:.3f} s, waiting for I/O "
            f"{io_wait:.3f} s), {len(self._jobs)} jobs",
            f"{'task':<40} {'steps':>7} {'busy ms':>10} {'longest ms':>11}",
        ]
        for task_id in sorted(busy, key=lambda t: -sum(busy[t])):
            durations = busy[task_id]
            lines.append(
                f"{self._name(task_id)[:40]:<40} {len(durations):>7} "
                f"{sum(durations) * 1e3:>10.3f} {max(durations) * 1e3:>11.3f}"
            )
        if self._jobs:
            lines.append("jobs:")
            kinds: dict[str, list[float]] = {}
            for kind, _, _, start, end in self._jobs.values():
                kinds.setdefault(kind, []).append((end if end is not None else start) - start)
            for kind, durations in sorted(kinds.items()):
                lines.append(f"  {kind:<12} {len(durations):>5} jobs, {sum(durations):.3f} s")
        top = sorted(self._steps, key=lambda s: s[1] - s[2])[:longest]
        if top:
            lines.append("longest steps:")
            for task_id, start, end in top:
                lines.append(
                    f"  {(end - start) * 1e3:9.3f} ms  {self._name(task_id)} at +{start:.6f} s"
                )
        return "\n".join(lines)

    def events(self) -> list[dict[str, Any]]:
        """The trace as Chrome trace events (what ``write_perfetto`` writes): a thread
        per task (steps as complete events, exits as instant events), the loop's I/O
        waits on thread 0, jobs as a process of their own, and a flow arrow from each
        waker's step to the step it made runnable."""
        us = 1e6
        out: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "plait tasks"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "plait jobs"}},
            {
                "ph": "M",
                "name": "thread_name",
                "pid": 1,
                "tid": _LOOP_ROW,
                "args": {"name": "loop: waiting for I/O"},
            },
        ]
        for task_id, (name, _parent) in self._tasks.items():
            out.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": 1,
                    "tid": task_id,
                    "args": {"name": f"{name} #{task_id}"},
                }
            )
            out.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": 1,
                    "tid": task_id,
                    "args": {"sort_index": task_id},
                }
            )
        for task_id, start, end in self._steps:
            out.append(
                {
                    "ph": "X",
                    "cat": "step",
                    "name": self._tasks.get(task_id, ("?",))[0],
                    "pid": 1,
                    "tid": task_id,
                    "ts": start * us,
                    "dur": max((end - start) * us, 0.001),
                }
            )
        for start, end, timeout in self._io:
            out.append(
                {
                    "ph": "X",
                    "cat": "io",
                    "name": "I/O wait",
                    "pid": 1,
                    "tid": _LOOP_ROW,
                    "ts": start * us,
                    "dur": (end - start) * us,
                    "args": {"timeout": None if timeout == float("inf") else timeout},
                }
            )
        for task_id, t, how in self._exits:
            out.append(
                {
                    "ph": "i",
                    "s": "t",
                    "cat": "exit",
                    "name": f"exit: {how}",
                    "pid": 1,
                    "tid": task_id,
                    "ts": t * us,
                }
            )
        for job_id, (kind, name, task_id, start, end) in self._jobs.items():
            out.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": 2,
                    "tid": job_id,
                    "args": {"name": f"{kind} #{job_id}"},
                }
            )
            out.append(
                {
                    "ph": "X",
                    "cat": kind,
                    "name": f"{kind}: {name}",
                    "pid": 2,
                    "tid": job_id,
                    "ts": start * us,
                    "dur": ((end if end is not None else self._end()) - start) * us,
                    "args": {
                        "task": self._name(task_id) if task_id else None,
                        "finished": end is not None,
                    },
                }
            )
        starts: dict[int, list[float]] = {}
        for task_id, start, _ in self._steps:
            starts.setdefault(task_id, []).append(start)
        flow = 0
        for woken, waker, t in self._wakes:
            if waker in (0, woken):
                continue
            following = [s for s in starts.get(woken, ()) if s >= t]
            if not following:
                continue
            flow += 1
            out.append(
                {
                    "ph": "s",
                    "cat": "wake",
                    "name": "wakes",
                    "id": flow,
                    "pid": 1,
                    "tid": waker,
                    "ts": t * us,
                }
            )
            out.append(
                {
                    "ph": "f",
                    "bp": "e",
                    "cat": "wake",
                    "name": "wakes",
                    "id": flow,
                    "pid": 1,
                    "tid": woken,
                    "ts": following[0] * us,
                }
            )
        return out

    def write_perfetto(self, path: str | os.PathLike[str]) -> None:
        """Write Chrome/Perfetto trace-event JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"traceEvents": self.events(), "displayTimeUnit": "ms"}, file)

    def _timeline(self) -> dict[str, Any]:
        rows = sorted(self._tasks)
        index = {task_id: i for i, task_id in enumerate(rows)}
        woken_by: dict[int, list[tuple[float, int]]] = {}
        for woken, waker, t in self._wakes:
            woken_by.setdefault(woken, []).append((t, waker))
        steps = []
        seen: dict[int, int] = {}  # task id -> how many of its wakes precede its step
        for task_id, start, end in self._steps:
            if task_id not in index:
                continue
            # The waker is the last wake of the task before this step (steps and wakes
            # are in time order: walk each task's wakes once).
            wakes = woken_by.get(task_id, ())
            k = seen.get(task_id, 0)
            while k < len(wakes) and wakes[k][0] <= start:
                k += 1
            seen[task_id] = k
            waker = wakes[k - 1][1] if k else 0
            steps.append(
                [index[task_id], round(start * 1e6, 3), round((end - start) * 1e6, 3), waker]
            )
        return {
            "rows": [
                {"id": task_id, "name": self._tasks[task_id][0], "parent": self._tasks[task_id][1]}
                for task_id in rows
            ],
            "steps": steps,
            "io": [[round(s * 1e6, 3), round((e - s) * 1e6, 3)] for s, e, _ in self._io],
            "jobs": [
                [
                    kind,
                    name,
                    task_id,
                    round(start * 1e6, 3),
                    round(((end if end is not None else self._end()) - start) * 1e6, 3),
                ]
                for kind, name, task_id, start, end in self._jobs.values()
            ],
            "end": round(self._end() * 1e6, 3),
        }

    def write_html(self, path: str | os.PathLike[str], *, title: str = "plait timeline") -> None:
        """Write the timeline as one self-contained HTML page (no network needed)."""
        data = json.dumps(self._timeline(), separators=(",", ":")).replace("</", "<\\/")
        page = PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
        with open(path, "w", encoding="utf-8") as file:
            file.write(page)

    def print_summary(self, file: IO[str] | None = None) -> None:
        print(self.summary(), file=file)
