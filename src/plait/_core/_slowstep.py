"""Blocking detection: ``plait.run(main, slow_step=0.1)``. Layer L3.

A task step that runs longer than ``slow_step`` seconds holds up every other task: it
called something blocking (``time.sleep``, a synchronous HTTP request, a big
computation). :class:`SlowStepDetector` is an instrument: it notes when each step
starts, and a watchdog thread looks at the loop's thread every half threshold; a step
it finds running for longer than the threshold has its stack sampled there and then --
the place where it is blocking, not where it ends up when it finally yields. When the
step ends, its task's name, how long it took and that stack are logged (logger
``plait.slow``, level WARNING).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from .._util import check_seconds
from ._instrument import Instrument

if TYPE_CHECKING:
    from ._task import Task

__all__ = ["WATCHDOG_NAME", "SlowStepDetector"]

WATCHDOG_NAME = "plait watchdog"
logger = logging.getLogger("plait.slow")


class SlowStepDetector(Instrument):
    """Logs every task step that runs for ``threshold`` seconds or more, with the stack
    where it was blocking."""

    def __init__(self, threshold: float) -> None:
        self.threshold = check_seconds(threshold, "slow_step", allow_inf=False)
        if self.threshold <= 0:
            raise ValueError(f"slow_step must be more than 0 seconds, got {threshold!r}")
        self._lock = threading.Lock()
        self._step = 0  # counts steps; odd while one runs
        self._started = 0.0
        self._sampled: tuple[int, str] | None = None  # (step, stack text)
        self._thread_id = 0
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def before_run(self) -> None:
        self._thread_id = threading.get_ident()
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name=WATCHDOG_NAME, daemon=True)
        self._watchdog.start()

    def after_run(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None

    def before_task_step(self, task: Task) -> None:
        self._started = time.perf_counter()
        self._step += 1

    def after_task_step(self, task: Task) -> None:
        took = time.perf_counter() - self._started
        with self._lock:
            step, self._step = self._step, self._step + 1
            sampled, self._sampled = self._sampled, None
        if took < self.threshold:
            return
        if sampled is not None and sampled[0] == step:
            where = "It was blocking here (sampled while it ran):\n" + sampled[1]
        else:
            stack = "".join(f"  {frame}\n" for frame in task.stack())
            where = "It ended the step here:\n" + stack
        logger.warning(
            "task %r (#%d) ran for %.3f s without yielding (slow_step=%g s): every other "
            "task waited meanwhile. Move blocking work to plait.to_thread.run_sync() or a "
            "pool, or await a plait call in long loops. %s",
            task.name,
            task.id,
            took,
            self.threshold,
            where.rstrip(),
        )

    def _watch(self) -> None:
        interval = self.threshold / 2
        while not self._stop.wait(interval):
            step, started = self._step, self._started
            if not step % 2 or time.perf_counter() - started < self.threshold:
                continue
            frame = sys._current_frames().get(self._thread_id)
            if frame is None:
                continue
            # the task's frames only: up to the kernel's loop that runs the step
            frames = []
            while frame is not None and frame.f_code.co_name != "_kernel_run_tasks":
                frames.append((frame, frame.f_lineno))
                frame = frame.f_back
            frames.reverse()
            text = "".join(traceback.StackSummary.extract(frames).format())
            del frame, frames
            with self._lock:
                if self._step == step and (self._sampled is None or self._sampled[0] != step):
                    self._sampled = (step, text)
