"""Instruments: objects whose methods the kernel calls as it runs. Layer L3.

An instrument subclasses ``plait.abc.Instrument`` and overrides the hooks it wants. The
kernel keeps, per hook, a tuple of the bound methods that override it; an empty tuple
is all a hook costs when no instrument wants it (a local truth test on the hot path).

A hook that raises is a bug in the instrument, not in the program: the instrument is
removed (it would most likely fail again at every step) and the error goes to the
loop's exception handler, naming the instrument and the hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._util import describe
from ._local import run_state

if TYPE_CHECKING:
    from ._kernel import Loop
    from ._task import Task

__all__ = ["HOOKS", "Instrument", "Instruments", "Job", "finish_job", "start_job"]


class Instrument:
    """The base class of instruments: override the hooks you need; the others cost
    nothing. Hooks run in the loop's thread, inside the kernel: keep them short, do not
    block, and do not call plait's async API from them.

    Install instruments with ``plait.run(main, instruments=[...])`` or, while the loop
    runs, with ``plait.lowlevel.add_instrument(instrument)`` and
    ``plait.lowlevel.remove_instrument(instrument)``.
    """

    __slots__ = ()

    def before_run(self) -> None:
        """The loop starts running (``plait.run``, ``Loop.run``)."""

    def after_run(self) -> None:
        """The loop has stopped running; the last hook of a run."""

    def task_spawned(self, task: Task) -> None:
        """``task`` was created (by a task group, or as the main or a system task)."""

    def task_scheduled(self, task: Task) -> None:
        """``task`` became runnable: spawned, woken, or passing a checkpoint."""

    def before_task_step(self, task: Task) -> None:
        """``task`` is about to run until its next suspension."""

    def after_task_step(self, task: Task) -> None:
        """``task`` has suspended (or finished: then ``task_exited`` follows)."""

    def task_exited(self, task: Task) -> None:
        """``task`` has finished; its result or error is set."""

    def before_io_wait(self, timeout: float) -> None:
        """The loop is about to wait for I/O for at most ``timeout`` seconds (0: a poll
        that does not block; ``inf``: until something happens)."""

    def after_io_wait(self, timeout: float) -> None:
        """The wait that ``before_io_wait`` announced is over."""

    def job_started(self, job: Any) -> None:
        """Work outside the loop started: a thread, process or subprocess job
        (``plait.lowlevel.Job``: ``kind``, ``name``, ``task``)."""

    def job_finished(self, job: Any) -> None:
        """The job ``job_started`` announced has finished (succeeded, failed, or was
        abandoned)."""


HOOKS = tuple(name for name in vars(Instrument) if not name.startswith("_"))


class Instruments:
    """The instruments of one loop. Each hook name is an attribute: the tuple of the
    bound methods that implement it (empty when no instrument does)."""

    before_run: tuple[Callable[[], object], ...]
    after_run: tuple[Callable[[], object], ...]
    task_spawned: tuple[Callable[[Task], object], ...]
    task_scheduled: tuple[Callable[[Task], object], ...]
    before_task_step: tuple[Callable[[Task], object], ...]
    after_task_step: tuple[Callable[[Task], object], ...]
    task_exited: tuple[Callable[[Task], object], ...]
    before_io_wait: tuple[Callable[[float], object], ...]
    after_io_wait: tuple[Callable[[float], object], ...]
    job_started: tuple[Callable[[Any], object], ...]
    job_finished: tuple[Callable[[Any], object], ...]

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self._all: list[Instrument] = []
        for name in HOOKS:
            setattr(self, name, ())
        if isinstance(instruments, Instrument | type):
            raise TypeError(
                f"instruments must be a list of instruments, got {describe(instruments)}: "
                "pass instruments=[instrument]"
            )
        try:
            items = list(instruments)
        except TypeError:
            raise TypeError(
                f"instruments must be a list of plait.abc.Instrument objects, got "
                f"{describe(instruments)}"
            ) from None
        for instrument in items:
            self.add(instrument)

    def __bool__(self) -> bool:
        return bool(self._all)

    def __iter__(self) -> Any:
        return iter(tuple(self._all))

    def add(self, instrument: Instrument) -> None:
        """Install ``instrument``; installing one already installed does nothing."""
        if isinstance(instrument, type) and issubclass(instrument, Instrument):
            raise TypeError(
                f"got the class {instrument.__qualname__}, not an instrument: pass an "
                f"instance, {instrument.__qualname__}()"
            )
        if not isinstance(instrument, Instrument):
            raise TypeError(
                f"an instrument must be a plait.abc.Instrument, got {describe(instrument)}: "
                "subclass plait.abc.Instrument and override the hooks you need"
            )
        if any(known is instrument for known in self._all):
            return
        self._all.append(instrument)
        self._rebuild()

    def remove(self, instrument: Instrument) -> None:
        """Uninstall ``instrument``; ``KeyError`` if it is not installed."""
        for i, known in enumerate(self._all):
            if known is instrument:
                del self._all[i]
                self._rebuild()
                return
        raise KeyError(f"{instrument!r} is not installed on this loop, so it cannot be removed")

    def _rebuild(self) -> None:
        for name in HOOKS:
            base = getattr(Instrument, name)
            setattr(
                self,
                name,
                tuple(
                    getattr(instrument, name)
                    for instrument in self._all
                    if getattr(type(instrument), name, base) is not base
                ),
            )

    def call(self, hooks: tuple[Callable[..., object], ...], *args: Any) -> None:
        """Call each of ``hooks`` (one of this object's hook tuples) with ``args``."""
        for hook in hooks:
            try:
                hook(*args)
            except BaseException as exc:
                self._failed(hook, exc)
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                del exc

    def _failed(self, hook: Callable[..., object], exc: BaseException) -> None:
        instrument = getattr(hook, "__self__", None)
        if any(known is instrument for known in self._all):
            self.remove(instrument)  # type: ignore[arg-type]
        name = getattr(hook, "__name__", "?")
        # (hooks run in the loop's thread, while it runs; no reference to the loop
        # here: it would make a cycle with loop._instruments)
        loop = run_state.loop
        if loop is None:  # pragma: no cover - hooks run only while the loop runs
            raise exc
        loop.call_exception_handler(
            {
                "message": (
                    f"the instrument {instrument!r} raised in its {name}() hook and has been "
                    "removed; hooks must not raise"
                ),
                "exception": exc,
                "instrument": instrument,
            }
        )


class Job:
    """Work that runs outside the loop on behalf of a task, as instruments see it:
    ``kind`` ("thread", "process", "subprocess" or "cluster"), ``name`` (the function
    or the command), ``task`` (the task that started it, or None), ``id`` (unique in
    the process)."""

    __slots__ = ("id", "kind", "name", "task")
    _ids = iter(range(1, 1 << 62))

    def __init__(self, kind: str, name: str, task: Task | None) -> None:
        self.kind = kind
        self.name = name
        self.task = task
        self.id = next(Job._ids)

    def __repr__(self) -> str:
        by = f" for task {self.task.name!r}" if self.task is not None else ""
        return f"<plait.lowlevel.Job #{self.id} {self.kind} {self.name!r}{by}>"


def _job_name(what: Any) -> str:
    if isinstance(what, str):
        return what
    if isinstance(what, list | tuple):  # a command line
        return " ".join(map(str, what))
    name = getattr(what, "__qualname__", None) or getattr(what, "__name__", None)
    return name if isinstance(name, str) else repr(what)


def start_job(loop: Loop, kind: str, what: Any) -> Job | None:
    """Tell the instruments that a job starts (``what``: its function or command);
    ``None``, at no cost, when no instrument listens to jobs. Pass the result to
    ``finish_job``."""
    instruments = loop._instruments
    if not (instruments.job_started or instruments.job_finished):
        return None
    job = Job(kind, _job_name(what), loop._current_task)
    if instruments.job_started:
        instruments.call(instruments.job_started, job)
    return job


def finish_job(loop: Loop, job: Job | None) -> None:
    """Tell the instruments that ``job`` (from ``start_job``) has finished. In the
    loop's thread."""
    if job is not None and loop._instruments.job_finished:
        loop._instruments.call(loop._instruments.job_finished, job)
