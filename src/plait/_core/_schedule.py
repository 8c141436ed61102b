"""Scheduling policies: the order in which the tasks that are ready together run. Layer L1.

Theory of operation. Each iteration of the loop runs, one step each, the tasks that are
ready when it begins (the run queue: tasks woken by I/O, timers, other tasks and
callbacks, in the order they were woken). By default they run in that order (FIFO). A
policy given to ``plait.run(schedule=...)`` reorders that batch once per iteration, in
place, before any of it runs; tasks woken while the batch runs wait for the next
iteration, as always. With no policy the kernel pays one test per iteration, not per
task.

A policy keeps what it did: ``log``, a :class:`ScheduleLog` of its decisions (per batch,
numbered from 0 in the run, the permutation it applied, where that differs from FIFO),
and ``trace``, the step trace (one label per task step, ``name#k`` where ``k`` numbers the
tasks of the run in the order they first ran; ``name`` is the task's name without the
``<locals>`` path of a nested function). Replaying a log (:class:`Replay`) makes
the same decisions, and so the same run, as long as nothing else varies: virtual time
(``MockClock``), no real I/O, threads or processes, the same inputs. A batch whose size
differs from the logged permutation's (because a shrunk or hand-made log changed the
run) gets the logged indices that exist, in their order, then the rest in FIFO order.

Timer ties need nothing of their own: tasks whose timers fire in the same iteration are
in the same batch, and the batch is reordered.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import Task

__all__ = ["Replay", "ScheduleLog", "SchedulePolicy", "Seeded"]


class ScheduleLog:
    """The decisions of one scheduled run: ``decisions`` maps a batch number (0 is the
    run's first iteration with a task to run) to the order used for that batch, a tuple
    of indices into it (``(2, 0, 1)``: the third ready task ran first). Batches run in
    FIFO order are absent, so an empty log is the FIFO run. ``seed`` is the seed of the
    ``Seeded`` run it came from, if any. Equal logs compare equal; ``repr`` is code
    that rebuilds it."""

    __slots__ = ("decisions", "seed")

    def __init__(
        self,
        decisions: Mapping[int, Iterable[int]] | Iterable[tuple[int, Iterable[int]]] = (),
        *,
        seed: int | None = None,
    ) -> None:
        items = decisions.items() if isinstance(decisions, Mapping) else decisions
        checked: dict[int, tuple[int, ...]] = {}
        for entry in items:
            try:
                batch, order = entry
                order = tuple(order)
            except (TypeError, ValueError):
                raise TypeError(
                    f"a ScheduleLog entry is (batch number, order of indices), got {entry!r}"
                ) from None
            if type(batch) is not int or batch < 0:
                raise ValueError(f"a batch number is an int >= 0, got {batch!r}")
            if any(type(i) is not int or i < 0 for i in order) or len(set(order)) != len(order):
                raise ValueError(
                    f"the order of batch {batch} must be distinct indices >= 0 into the "
                    f"batch, like (1, 0), got {order!r}"
                )
            if order != tuple(range(len(order))):
                checked[batch] = order
        self.decisions = dict(sorted(checked.items()))
        self.seed = seed

    @property
    def deviations(self) -> int:
        """How far from FIFO: the number of tasks, over all batches, that ran at
        another place than FIFO's."""
        return sum(
            sum(1 for place, i in enumerate(o) if place != i) for o in self.decisions.values()
        )

    def __len__(self) -> int:
        return len(self.decisions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleLog):
            return NotImplemented
        return self.decisions == other.decisions

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        seed = "" if self.seed is None else f", seed={self.seed}"
        return f"ScheduleLog({self.decisions!r}{seed})"


class SchedulePolicy:
    """The base of scheduling policies (``plait.testing.Seeded``, ``Replay``): override
    :meth:`choose`. One policy serves one run at a time; each run starts it afresh, so
    passing the same policy to another ``plait.run`` repeats its decisions."""

    seed: int | None = None  # (Seeded's)
    log: ScheduleLog
    trace: list[str]
    batch_starts: list[int]  # where each batch begins in trace

    def __init__(self) -> None:
        self._reset()

    def choose(self, batch: int, size: int) -> Iterable[int] | None:
        """The order for batch number ``batch`` of ``size`` (>= 2) ready tasks: indices
        into it, or None for FIFO."""
        return None

    def _reset(self) -> None:
        self.log = ScheduleLog(seed=self.seed)
        self.trace = []
        self.batch_starts: list[int] = []
        self._batches = 0
        self._labels: dict[int, str] = {}

    def _begin(self) -> None:
        """Called by the loop before the run (plait.run): a new run, a new record."""
        self._reset()

    def _order(self, runq: deque[Task]) -> None:
        """Called by the loop with the batch it is about to run (the whole run queue)."""
        batch = self._batches
        self._batches += 1
        size = len(runq)
        if size > 1:
            chosen = self.choose(batch, size)
            if chosen is not None:
                order = complete_order(chosen, size)
                if order != tuple(range(size)):
                    tasks = list(runq)
                    runq.clear()
                    runq.extend(tasks[i] for i in order)
                    self.log.decisions[batch] = order
        self.batch_starts.append(len(self.trace))
        labels = self._labels
        for task in runq:
            label = labels.get(task.id)
            if label is None:
                name = task.name.rpartition("<locals>.")[2]  # f.<locals>.g: g
                label = labels[task.id] = f"{name}#{len(labels) + 1}"
            self.trace.append(label)


def complete_order(chosen: Iterable[int], size: int) -> tuple[int, ...]:
    """The indices of ``chosen`` below ``size`` (each once, in order), then the other
    indices of ``range(size)`` in order: a permutation of ``range(size)``."""
    seen: dict[int, None] = {}
    for i in chosen:
        if 0 <= i < size:
            seen.setdefault(i, None)
    if len(seen) < size:
        for i in range(size):
            seen.setdefault(i, None)
    return tuple(seen)


class Seeded(SchedulePolicy):
    """Run each batch of ready tasks in an order drawn from a PRNG seeded with
    ``seed``: with virtual time and no real I/O, the same seed gives the same run, step
    for step; ``log`` then holds the decisions, for :class:`Replay`."""

    def __init__(self, seed: int) -> None:
        if type(seed) is not int:
            raise TypeError(f"Seeded(seed): seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        super().__init__()

    def _reset(self) -> None:
        self._random = random.Random(self.seed)
        super()._reset()

    def choose(self, batch: int, size: int) -> list[int]:
        order = list(range(size))
        self._random.shuffle(order)
        return order

    def __repr__(self) -> str:
        return f"Seeded({self.seed})"


class Replay(SchedulePolicy):
    """Make the decisions of ``log`` (a :class:`ScheduleLog`, e.g. a ``Seeded`` policy's
    ``log`` or an ``explore`` report's; or a mapping ``{batch: order}``): FIFO for every
    batch it does not name. Reproduces the logged run exactly under the conditions
    ``Seeded`` needs."""

    def __init__(self, log: ScheduleLog | Mapping[int, Iterable[int]]) -> None:
        if not isinstance(log, ScheduleLog):
            if not isinstance(log, Mapping):
                raise TypeError(
                    f"Replay(log): log must be a plait.testing.ScheduleLog (a policy's or "
                    f"an explore report's .log) or a mapping {{batch: order}}, got "
                    f"{type(log).__name__}"
                )
            log = ScheduleLog(log)
        self.replayed = log
        super().__init__()

    def choose(self, batch: int, size: int) -> Iterable[int] | None:
        return self.replayed.decisions.get(batch)

    def __repr__(self) -> str:
        return f"Replay({self.replayed!r})"


def check_schedule(schedule: Any) -> SchedulePolicy | None:
    if schedule is None or isinstance(schedule, SchedulePolicy):
        return schedule
    raise TypeError(
        "schedule must be a scheduling policy such as plait.testing.Seeded(seed) or "
        f"plait.testing.Replay(log), or None for FIFO; got {type(schedule).__name__}"
    )
