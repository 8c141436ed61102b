"""Child processes: ``open_process``, ``run_process`` and ``Process``. Layer L5.

Theory of operation: ``subprocess.Popen`` spawns the child (it uses vfork or
posix_spawn where it can, and reports a failed exec as an exception in the parent). The
pipes are ours: ``os.pipe()`` (close-on-exec, so no other child inherits them), the
child's end handed to ``Popen`` and closed in the parent right after the spawn, our end
wrapped in a non-blocking :mod:`plait._fdstream` stream.

Reaping never blocks the loop. On Linux >= 5.3 a *pidfd* (``os.pidfd_open``) becomes
readable when the child exits; the reactor waits for that like for any fd, then
``Popen.poll()`` (``waitpid(pid, WNOHANG)``) reaps it. Without pidfds a worker thread
blocks in ``waitid(P_PID, pid, WEXITED | WNOWAIT)``, which waits for the exit *without*
reaping, and hands the news back to the loop; the loop thread then reaps. Reaping always
goes through ``Popen`` (in the loop thread, except on systems without ``waitid``, where
the worker thread calls ``Popen.wait()``), so ``Popen``'s own bookkeeping
(``returncode``, its "still running" ``ResourceWarning``) stays right. A SIGCHLD handler
(asyncio's child watchers) was rejected: it is process-global, fights with other
libraries for the signal, and needs a thread or a loop per watcher anyway.

Signals are only sent to a child that is not reaped yet (``send_signal`` polls first):
once reaped its pid may belong to another process. A dead but unreaped child (a
zombie) still owns its pid, so signalling it is harmless.

Ending a child (``Process.aclose``, a cancelled ``run_process``) is always shielded from
cancellation: SIGTERM, up to ``grace_period`` seconds for it to exit, SIGKILL, reap. No
zombie is left behind, whatever happens to the caller.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ._core._cancel import CancelScope
from ._core._instrument import Job, finish_job, start_job
from ._core._kernel import Loop
from ._core._local import current_loop_or_none
from ._core._reactor import READABLE
from ._core._taskgroup import TASK_STATUS_IGNORED, TaskGroup, TaskStatus
from ._core._thread_cache import start_thread_soon
from ._core._traps import checkpoint, schedule_point
from ._exceptions import BrokenResourceError, ClosedResourceError
from ._fdstream import PipeReceiveStream, PipeSendStream
from ._socket import _raise_if_cancelled
from ._sync import Event, Lock
from ._timeouts import move_on_after
from ._util import check_seconds, describe, public

__all__ = ["DEFAULT_GRACE_PERIOD", "Process", "open_process", "run_process"]

DEFAULT_GRACE_PERIOD = 5.0

# Reap through pidfds where the OS has them. Tests set this to False to exercise the
# waitid thread; it also turns False by itself if pidfd_open fails (old kernel, seccomp).
_use_pidfd: bool = hasattr(os, "pidfd_open")

_TEXT_OPTIONS = ("text", "universal_newlines", "encoding", "errors")

Command = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _check_command(cmd: Any, shell: bool) -> None:
    """Raise TypeError/ValueError unless ``cmd`` is something Popen can run."""
    if isinstance(cmd, str | bytes):
        if not cmd:
            raise ValueError("empty command: give the program to run")
        return
    if isinstance(cmd, os.PathLike):
        if shell:
            raise TypeError(
                f"with shell=True the command must be a str, got {describe(cmd)}; pass str(path)"
            )
        return
    if not isinstance(cmd, Sequence):
        raise TypeError(
            "the command must be a str, bytes or os.PathLike, or a sequence (list or "
            f"tuple) of them, got {describe(cmd)}"
        )
    if shell:
        raise TypeError(
            f"with shell=True the command must be one str, got {describe(cmd)}; join the "
            "arguments with shlex.join(), or drop shell=True"
        )
    if not cmd:
        raise ValueError("empty command: the sequence needs at least the program to run")
    for index, arg in enumerate(cmd):
        if not isinstance(arg, str | bytes | os.PathLike):
            raise TypeError(
                f"command argument {index} must be a str, bytes or os.PathLike, got "
                f"{describe(arg)}; convert it with str()"
            )
    if not os.fspath(cmd[0]):
        raise ValueError("the program name (the command's first element) is empty")


def _check_stdio(value: Any, name: str) -> None:
    if value is None or value in (subprocess.PIPE, subprocess.DEVNULL):
        return
    if value == subprocess.STDOUT and not isinstance(value, bool):
        if name != "stderr":
            raise ValueError(f"{name}=subprocess.STDOUT only makes sense for stderr")
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} must be PIPE, DEVNULL, a file or an fd, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name}={value} is neither a file descriptor nor PIPE/DEVNULL")
        return
    if not callable(getattr(value, "fileno", None)):
        raise TypeError(
            f"{name} must be None (inherit), subprocess.PIPE, subprocess.DEVNULL, an fd or "
            f"an object with a fileno() method, got {describe(value)}"
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@public
class Process:
    """A child process started by :func:`open_process`.

    ``stdin`` (a send stream), ``stdout`` and ``stderr`` (receive streams) are set when
    the corresponding argument was ``subprocess.PIPE``, else ``None``. ``returncode`` is
    ``None`` while the child runs, its exit status once it has exited, ``-N`` if a
    signal N killed it (reading it reaps a child that has exited).

    ``async with process:`` closes the pipes at the end of the block and, if the child
    is still running, terminates it (SIGTERM, then SIGKILL after a grace period) and
    reaps it; see :meth:`aclose`.
    """

    __slots__ = (
        "_exited",
        "_job",
        "_pidfd",
        "_popen",
        "_wait_lock",
        "args",
        "pid",
        "stderr",
        "stdin",
        "stdout",
    )

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: PipeSendStream | None = None,
        stdout: PipeReceiveStream | None = None,
        stderr: PipeReceiveStream | None = None,
    ) -> None:
        self._popen = popen
        self.args: Any = popen.args
        self.pid: int = popen.pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._wait_lock = Lock()
        # (loop, job) while instruments (plait.abc.Instrument) watch it run
        self._job: tuple[Loop, Job] | None = None
        # Fallback reaping: set (by the waitid thread) once the child can be reaped.
        self._exited: Event | None = None
        # Invariant: _pidfd is None once the child is reaped (closed in poll()).
        self._pidfd: int | None = None
        global _use_pidfd
        if _use_pidfd:
            try:
                self._pidfd = os.pidfd_open(popen.pid)
            except OSError:
                _use_pidfd = False

    def __repr__(self) -> str:
        code = self._popen.returncode
        if code is None:
            status = "running"
        elif code < 0:
            status = f"killed by {_signal_name(-code)}"
        else:
            status = f"exited with status {code}"
        return f"<plait.Process {self.args!r} pid={self.pid} {status}>"

    @property
    def returncode(self) -> int | None:
        """The exit status, ``-N`` for a signal N, or ``None`` while the child runs.
        Always current: reading it reaps the child if it has exited."""
        return self.poll()

    def poll(self) -> int | None:
        """Reap the child if it has exited, without waiting; return ``returncode``."""
        code = self._popen.returncode
        if code is None:
            code = self._popen.poll()
        if code is not None:
            if self._pidfd is not None:
                self._close_pidfd()
            if self._job is not None:
                (loop, job), self._job = self._job, None
                if current_loop_or_none() is loop:
                    finish_job(loop, job)
        return code

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is None:
            return
        loop = current_loop_or_none()
        if loop is not None and not loop.is_closed():
            loop._notify_closing(fd)  # a task in wait() on it wakes and polls again
        os.close(fd)

    async def wait(self) -> int:
        """Wait until the child exits, reap it and return its ``returncode``.

        A checkpoint; cancellation stops the wait and leaves the child alone (it goes on
        running). Any number of tasks may wait at once.
        """
        loop = _raise_if_cancelled("Process.wait()")
        code = self.poll()
        if code is not None:
            await schedule_point()
            return code
        async with self._wait_lock:
            code = self.poll()
            if code is None:
                if self._pidfd is not None:
                    try:
                        await loop._wait_fd(self._pidfd, READABLE)
                    except ClosedResourceError:
                        pass  # poll() reaped it (and closed the pidfd) meanwhile
                else:
                    await self._wait_by_thread(loop)
                code = self.poll()
                if code is None:  # pragma: no cover - exited, but Popen's lock was held
                    code = self._popen.wait()  # it is reapable: this returns at once
                    self.poll()
        return code

    async def _wait_by_thread(self, loop: Any) -> None:
        # Discussion: the thread is started once per process, not once per wait(), so a
        # wait() cancelled over and over does not pile up threads. It only waits (no
        # reap), so the pid cannot be reused while the thread still names it, except in
        # one case: the loop reaps through poll() before the thread has entered
        # waitid(). The thread then gets ECHILD (or, if the pid was reused by another of
        # our children in between, waits for that one); either way it only sets an
        # event nobody waits on any more.
        event = self._exited
        if event is None:
            event = self._exited = Event()
            pid = self.pid

            def exiting() -> None:
                if hasattr(os, "waitid"):
                    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                else:  # pragma: no cover - macOS: Popen.wait() reaps under Popen's lock
                    popen.wait()

            def deliver(_value: object, _error: BaseException | None) -> None:
                # ECHILD (reaped by someone else, SIGCHLD ignored) also means "go and poll".
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # pragma: no cover - the loop has closed
                    pass

            popen = self._popen
            start_thread_soon(exiting, deliver, name=f"plait: waiting for process {pid}")
        await event.wait()

    def send_signal(self, sig: int) -> None:
        """Send signal ``sig`` to the child, unless it has already been reaped (then its
        pid may belong to someone else, so nothing is sent)."""
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(f"send_signal() needs a signal number, got {describe(sig)}")
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """Ask the child to exit (SIGTERM)."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the child (SIGKILL); it cannot refuse. ``await wait()`` to reap it."""
        self.send_signal(signal.SIGKILL)

    async def aclose(self, *, grace_period: float = DEFAULT_GRACE_PERIOD) -> None:
        """Close the pipes; if the child is still running, send SIGTERM, wait up to
        ``grace_period`` seconds for it to exit, then SIGKILL it; reap it.

        Runs to the end even if the caller is cancelled (shielded); a checkpoint after.
        """
        grace = check_seconds(grace_period, "grace_period")
        with CancelScope(shield=True):
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
            await _end_child(self, grace)
        await checkpoint()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        fd = getattr(self, "_pidfd", None)
        if fd is not None:
            self._pidfd = None
            os.close(fd)


async def _end_child(process: Process, grace: float) -> None:
    """Terminate, wait ``grace`` s, kill, reap. Call it shielded."""
    if process.poll() is not None:
        return
    process.terminate()
    with move_on_after(grace):
        await process.wait()
    if process.poll() is None:
        process.kill()
        await process.wait()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


@public
async def open_process(
    cmd: Command | Sequence[Command],
    *,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    cwd: Command | None = None,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    **popen_kwargs: Any,
) -> Process:
    """Start ``cmd`` as a child process and return its :class:`Process`.

    ``stdin``, ``stdout``, ``stderr``: ``subprocess.PIPE`` (a plait stream on the
    ``Process``), ``subprocess.DEVNULL``, ``subprocess.STDOUT`` (stderr only: merge it
    into stdout), a file object or fd, or ``None`` to inherit ours. Other keyword
    arguments go to ``subprocess.Popen`` (``shell``, ``start_new_session``, ...); the
    pipes carry bytes, so the text-mode options are refused.

    A checkpoint (cancellation before the spawn prevents it; once spawned, the child is
    returned). Raises ``FileNotFoundError`` (naming it) if the program is missing,
    ``TypeError``/``ValueError`` for a malformed command or option. Use ``async with``
    on the result (or :func:`run_process`) so that the child is always reaped.
    """
    shell = popen_kwargs.get("shell", False)
    if not isinstance(shell, bool):
        raise TypeError(f"shell must be True or False, got {describe(shell)}")
    _check_command(cmd, shell)
    for option in _TEXT_OPTIONS:
        if popen_kwargs.get(option):
            raise TypeError(
                f"plait process pipes carry bytes, so {option}= is not supported; decode "
                "the output yourself (e.g. data.decode())"
            )
    _check_stdio(stdin, "stdin")
    _check_stdio(stdout, "stdout")
    _check_stdio(stderr, "stderr")
    _raise_if_cancelled("plait.open_process()")

    child_fds: list[int] = []  # the child's pipe ends: closed here once it has them
    ours: list[int] = []  # our ends: closed if the spawn fails
    streams: dict[str, Any] = {}
    try:
        if stdin == subprocess.PIPE:
            read_fd, write_fd = os.pipe()
            child_fds.append(read_fd)
            ours.append(write_fd)
            stdin = read_fd
            streams["stdin"] = write_fd
        for name in ("stdout", "stderr"):
            if (stdout if name == "stdout" else stderr) == subprocess.PIPE:
                read_fd, write_fd = os.pipe()
                child_fds.append(write_fd)
                ours.append(read_fd)
                streams[name] = read_fd
                if name == "stdout":
                    stdout = write_fd
                else:
                    stderr = write_fd
        try:
            popen: subprocess.Popen[bytes] = subprocess.Popen(
                cmd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                **popen_kwargs,
            )
        except FileNotFoundError as exc:
            program = cmd if isinstance(cmd, str) else None
            if isinstance(cmd, list | tuple) and len(cmd) == 1 and isinstance(cmd[0], str):
                program = cmd[0]
            if not shell and program and exc.filename == program and " " in program:
                exc.add_note(
                    f"hint: {program!r} was taken as the name of one program; pass the "
                    "program and its arguments as separate list items, or use shell=True"
                )
            raise
    except BaseException:
        _close_all(ours)
        raise
    finally:
        _close_all(child_fds)
    process = Process(
        popen,
        PipeSendStream(streams["stdin"]) if "stdin" in streams else None,
        PipeReceiveStream(streams["stdout"]) if "stdout" in streams else None,
        PipeReceiveStream(streams["stderr"]) if "stderr" in streams else None,
    )
    loop = current_loop_or_none()
    if loop is not None and (job := start_job(loop, "subprocess", process.args)) is not None:
        process._job = (loop, job)
    await schedule_point()  # cannot raise: the child exists now and must be returned
    return process


async def _feed(stream: PipeSendStream, data: Any) -> None:
    try:
        await stream.send_all(data)
    except BrokenResourceError:
        pass  # the child exited or closed stdin without reading it all (as communicate())
    finally:
        stream.close()


async def _drain(stream: PipeReceiveStream, chunks: list[bytes]) -> None:
    while True:
        chunk = await stream.receive_some()
        if not chunk:
            return
        chunks.append(chunk)


@public
async def run_process(
    cmd: Command | Sequence[Command],
    *,
    input: Any = None,
    capture_output: bool = False,
    stdout: Any = None,
    stderr: Any = None,
    check: bool = True,
    cwd: Command | None = None,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    task_status: TaskStatus = TASK_STATUS_IGNORED,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` to completion, like ``subprocess.run``, without blocking the loop.

    ``input`` (bytes) is fed to the child's stdin while its stdout and stderr are read,
    all at once, so a child that writes much before reading cannot deadlock.
    ``capture_output=True`` captures both outputs (or pass ``stdout=``/``stderr=``
    ``subprocess.PIPE``; ``stderr=subprocess.STDOUT`` merges them); other values are as
    for :func:`open_process`. With ``check=True`` (the default) a non-zero exit raises
    ``subprocess.CalledProcessError`` carrying the captured ``output`` and ``stderr``.
    Under ``await tg.start(run_process, ...)`` it ``started()``s with the ``Process``.

    A checkpoint. If the caller is cancelled, the child gets SIGTERM, then SIGKILL if
    it is still there ``grace_period`` seconds later, and is reaped before
    ``Cancelled`` propagates (this cleanup cannot itself be cancelled).
    """
    grace = check_seconds(grace_period, "grace_period")
    if input is not None:
        if "stdin" in popen_kwargs:
            raise ValueError("stdin= and input= cannot both be given: input= feeds stdin")
        if isinstance(input, str):
            raise TypeError("input must be bytes, not str (pipes carry bytes); encode it first")
        try:
            memoryview(input).release()
        except TypeError:
            raise TypeError(f"input must be bytes or bytes-like, got {describe(input)}") from None
        stdin: Any = subprocess.PIPE
    else:
        stdin = popen_kwargs.pop("stdin", None)
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("capture_output=True cannot be combined with stdout= or stderr=")
        stdout = stderr = subprocess.PIPE

    process = await open_process(
        cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, **popen_kwargs
    )
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        task_status.started(process)
        try:
            async with TaskGroup() as tg:
                if process.stdin is not None:
                    tg.spawn(_feed, process.stdin, input)
                if process.stdout is not None:
                    tg.spawn(_drain, process.stdout, out)
                if process.stderr is not None:
                    tg.spawn(_drain, process.stderr, err)
                code = await process.wait()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        with CancelScope(shield=True):
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            await _end_child(process, grace)
    output = b"".join(out) if process.stdout is not None else None
    errors = b"".join(err) if process.stderr is not None else None
    if check and code:
        raise subprocess.CalledProcessError(code, process.args, output, errors)
    return subprocess.CompletedProcess(process.args, code, output, errors)
