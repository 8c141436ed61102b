"""Looking at tasks from outside: await stacks, what a task waits on, the task tree.
Layer L3.

Nothing here costs anything while the program runs: it is all read off the live
objects when asked for. A task's await stack is the chain of coroutine, generator and
async generator frames from the task's own coroutine down to the trap it is parked in
(``cr_await``, ``gi_yieldfrom``, ``ag_await``). What a task waits on is the outermost
frame of that chain inside plait -- the plait call the user's code made (``Event.wait``,
``sleep``, ``Queue.get``, ``to_thread.run_sync``, ``TaskGroup.__aexit__``...) -- with
its arguments.
"""

from __future__ import annotations

import gc
import io
import os
import reprlib
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._kernel import Loop
    from ._task import Task

__all__ = ["TaskFrame", "TaskInfo", "await_frames", "print_task_tree", "task_tree"]

_PLAIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 80


@dataclass(frozen=True, slots=True)
class TaskFrame:
    """One frame of a task's await stack: ``filename``, ``lineno``, ``name`` (the
    function's qualified name) and, when asked for, ``locals`` (a dict of reprs)."""

    filename: str
    lineno: int
    name: str
    locals: dict[str, str] | None = None

    def __str__(self) -> str:
        return f'File "{self.filename}", line {self.lineno}, in {self.name}'


def await_frames(coro: Any) -> list[FrameType]:
    """The frames of the await chain that starts at ``coro``, outermost first."""
    frames: list[FrameType] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None or hasattr(coro, "cr_await"):  # a coroutine
            if frame is not None:
                frames.append(frame)
            coro = coro.cr_await
        elif hasattr(coro, "gi_yieldfrom"):  # a generator (@plait.coroutine, traps)
            if coro.gi_frame is not None:
                frames.append(coro.gi_frame)
            coro = coro.gi_yieldfrom
        elif hasattr(coro, "ag_await"):  # an async generator
            if coro.ag_frame is not None:
                frames.append(coro.ag_frame)
            coro = coro.ag_await
        elif type(coro).__name__ in ("async_generator_asend", "async_generator_athrow"):
            # awaiting agen.asend()/athrow(): the object does not expose its async
            # generator (CPython issue 76991), but refers to it
            coro = next((r for r in gc.get_referents(coro) if hasattr(r, "ag_frame")), None)
        elif type(coro).__name__ == "coroutine_wrapper":
            # coro.__await__() (e.g. Task.__await__): it hides its coroutine likewise
            coro = next((r for r in gc.get_referents(coro) if hasattr(r, "cr_frame")), None)
        else:  # something else with __await__ (an iterator): no frames to show
            break
    return frames


def _frame_info(frame: FrameType, with_locals: bool) -> TaskFrame:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    values = None
    if with_locals:
        values = {key: _repr.repr(value) for key, value in frame.f_locals.items()}
    return TaskFrame(code.co_filename, frame.f_lineno, name, values)


def task_stack(task: Task, *, with_locals: bool = False) -> list[TaskFrame]:
    """``Task.stack()``: the await stack of ``task``, outermost first."""
    if task._done or task._coro is None:
        return []
    return [_frame_info(f, with_locals) for f in await_frames(task._coro)]


def _in_plait(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_PLAIT_DIR)


def _call_text(frame: FrameType) -> str:
    code = frame.f_code
    values = frame.f_locals
    if "self" in values:  # Lock.acquire, not _LockBase.acquire
        name = f"{type(values['self']).__name__}.{code.co_name}"
    else:
        name = getattr(code, "co_qualname", code.co_name)
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    args = []
    for arg in names:
        if arg in values:
            value = values[arg]
            args.append(_repr.repr(value) if arg == "self" else f"{arg}={_repr.repr(value)}")
    return f"{name}({', '.join(args)})"


def wait_frame(task: Task) -> FrameType | None:
    """The outermost frame inside plait of a parked task's await chain: the plait call
    its code is waiting in. None if the task is not parked."""
    if task._abort_fn is None or task._coro is None:
        return None
    for frame in await_frames(task._coro):
        if _in_plait(frame):
            return frame
    return None


def waiting_on(task: Task) -> str | None:
    """What a parked task waits on, as text (``Event.wait(<plait.Event unset>)``)."""
    frame = wait_frame(task)
    if frame is None:
        return None if task._abort_fn is None else "a plait trap"
    return _call_text(frame)


def _where(task: Task) -> TaskFrame | None:
    """The innermost frame of the task's own code (outside plait)."""
    outside = [f for f in await_frames(task._coro) if not _in_plait(f)] if task._coro else []
    return _frame_info(outside[-1], False) if outside else None


@dataclass(slots=True)
class TaskInfo:
    """A node of ``plait.task_tree()``: a task and the task groups it has open.

    ``task``, ``name``, ``id``; ``state``: "running" (this is the task calling
    ``task_tree()``), "runnable" (will run in this loop iteration or the next) or
    "waiting"; ``waiting_on``: the plait call it waits in, as text (None unless
    waiting); ``stack``: its await stack (``Task.stack()``); ``system``: a system task
    (plait's own, not the program's); ``groups``: one list of child ``TaskInfo`` per
    task group the task has open, in the order they were opened."""

    task: Task
    name: str
    id: int
    state: str
    waiting_on: str | None
    stack: list[TaskFrame]
    system: bool = False
    groups: list[list[TaskInfo]] = field(default_factory=list)

    def __str__(self) -> str:
        out = io.StringIO()
        _render(self, out, "", "", with_stacks=False)
        return out.getvalue()


def live_tasks(loop: Loop) -> list[Task]:
    tasks: list[Task] = []
    scopes = [loop._root_scope] if loop._root_scope is not None else []
    while scopes:
        scope = scopes.pop()
        tasks.extend(scope._tasks)
        if scope._children:
            scopes.extend(scope._children)
    tasks.sort(key=lambda t: t.id)
    return tasks


def task_tree(loop: Loop, *, with_locals: bool = False) -> list[TaskInfo]:
    """``plait.task_tree()``: the main task's tree, then the system tasks'."""
    tasks = live_tasks(loop)
    infos: dict[Task, TaskInfo] = {}
    for task in tasks:
        if task is loop._current_task:
            state = "running"
        elif task._abort_fn is not None:
            state = "waiting"
        else:
            state = "runnable"
        infos[task] = TaskInfo(
            task,
            task.name,
            task.id,
            state,
            waiting_on(task),
            task_stack(task, with_locals=with_locals),
            system=task._group is loop._system_group,
        )
    roots: list[TaskInfo] = []
    group_lists: dict[int, list[TaskInfo]] = {}
    for task in tasks:
        group = task._group
        parent = getattr(group, "_parent_task", None)
        if parent is None or parent not in infos:
            roots.append(infos[task])
            continue
        children = group_lists.get(id(group))
        if children is None:
            children = group_lists[id(group)] = []
            infos[parent].groups.append(children)
        children.append(infos[task])
    roots.sort(key=lambda info: (info.system, info.id))
    return roots


def _short(filename: str) -> str:
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative


def _render(info: TaskInfo, out: IO[str], first: str, rest: str, *, with_stacks: bool) -> None:
    line = f"{first}{info.name} (#{info.id}) {info.state}"
    if info.system:
        line += " [system]"
    if info.waiting_on is not None:
        line += f": {info.waiting_on}"
    where = _where(info.task)
    if where is not None:
        line += f"  at {_short(where.filename)}:{where.lineno} in {where.name}"
    out.write(line + "\n")
    if with_stacks:
        for frame in info.stack:
            out.write(f"{rest}    {frame}\n")
    for g, children in enumerate(info.groups):
        last_group = g == len(info.groups) - 1
        out.write(f"{rest}{'└─' if last_group else '├─'} task group\n")
        inner = rest + ("   " if last_group else "│  ")
        for c, child in enumerate(children):
            last = c == len(children) - 1
            _render(
                child,
                out,
                inner + ("└─ " if last else "├─ "),
                inner + ("   " if last else "│  "),
                with_stacks=with_stacks,
            )


def print_task_tree(
    loop: Loop, file: IO[str] | None = None, *, stacks: bool = False, system: bool = False
) -> None:
    """``plait.print_task_tree()``: the task tree as indented text."""
    out = sys.stdout if file is None else file
    for info in task_tree(loop):
        if info.system and not system:
            continue
        _render(info, out, "", "", with_stacks=stacks)


def _waits_for(task: Task, tasks: list[Task]) -> list[Task]:
    """The tasks that ``task`` waits for, where its wait names them: a lock's owner,
    a joined task, the children of a task group it is closing, a limiter's borrowers."""
    frame = wait_frame(task)
    if frame is None:
        return []
    from ._task import Task  # (here: _task imports this module)
    from ._taskgroup import TaskGroup

    target = frame.f_locals.get("self")
    if isinstance(target, Task):
        return [target]
    if isinstance(target, TaskGroup):
        return [t for t in tasks if t._group is target]
    owner = getattr(target, "_owner", None)
    if isinstance(owner, Task):
        return [owner]
    borrowers = getattr(target, "_borrowers", None)
    if borrowers:
        return [b for b in borrowers if isinstance(b, Task)]
    return []


def _cycle(edges: dict[Task, list[Task]]) -> list[Task] | None:
    """A wait-for cycle, as the list of its tasks (the first again at the end)."""
    done: set[Task] = set()
    for start in edges:
        path: list[Task] = []
        on_path: dict[Task, int] = {}
        stack = [(start, iter(edges.get(start, ())))]
        path.append(start)
        on_path[start] = 0
        while stack:
            node, successors = stack[-1]
            successor = next(successors, None)
            if successor is None:
                stack.pop()
                path.pop()
                del on_path[node]
                done.add(node)
            elif successor in on_path:
                return [*path[on_path[successor] :], successor]
            elif successor not in done:
                on_path[successor] = len(path)
                path.append(successor)
                stack.append((successor, iter(edges.get(successor, ()))))
    return None


def awaits_cancellation(tasks: list[Task]) -> bool:
    """True if one of ``tasks`` waits in ``sleep_forever()``: for a cancellation, which
    Ctrl-C or another part of the program (its author knows) will bring. Not a
    deadlock: ``await plait.sleep_forever()`` is how a program runs until Ctrl-C."""
    for task in tasks:
        frame = wait_frame(task)
        if frame is not None and frame.f_code.co_name == "sleep_forever":
            return True
    return False


def deadlock_report(loop: Loop) -> str:
    """The text of ``plait.Deadlock``: every task, what it waits on, and where; the
    wait-for cycle if the waits name one."""
    tasks = live_tasks(loop)
    lines = [
        "deadlock: every task is waiting, and only another waiting task could wake it "
        "(no timer is set, no I/O, thread, process or signal is awaited). The tasks:"
    ]
    edges: dict[Task, list[Task]] = {}
    for task in tasks:
        what = waiting_on(task) or "nothing (runnable)"
        where = _where(task)
        at = f" at {_short(where.filename)}:{where.lineno} in {where.name}" if where else ""
        lines.append(f"  task {task.name!r} (#{task.id}) waits in {what}{at}")
        edges[task] = _waits_for(task, tasks)
    cycle = _cycle(edges)
    if cycle is not None:
        lines.append("wait-for cycle: " + " -> ".join(repr(t.name) for t in cycle))
    lines.append(
        "plait.run cancelled every task. Fix: take locks in one order everywhere, make "
        "sure something sets each event or fills each queue that is waited on, and that "
        "no task waits for itself."
    )
    return "\n".join(lines)
