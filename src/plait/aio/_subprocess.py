"""Subprocesses of :class:`plait.aio.EventLoop` (``subprocess_exec``,
``subprocess_shell``). Layer L6.

Theory of operation. ``subprocess.Popen`` starts the child with pipes; each pipe gets
a :class:`PipeTransport` whose protocol forwards to the application's
``SubprocessProtocol`` (``pipe_data_received``, ``pipe_connection_lost``, and flow
control of stdin). The child's exit is learnt as in ``plait.open_process``: a pidfd
(Linux >= 5.3) becomes readable when the child exits, then ``Popen.poll()`` reaps it;
without pidfds a thread waits in ``waitid(..., WNOWAIT)`` (which does not reap) and the
loop reaps. No SIGCHLD handler, no asyncio child watcher. ``process_exited()`` is
called when the child is reaped, and ``connection_lost()`` once it is reaped and
every pipe is closed. Closing the transport kills a child still running (as asyncio
does), and reaps it: no zombie is left.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["SubprocessTransport", "subprocess_exec", "subprocess_shell"]

_PIPE_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


def _check_options(
    universal_newlines: bool,
    bufsize: int,
    encoding: Any,
    errors: Any,
    text: Any,
) -> None:
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


async def subprocess_shell(
    loop: Any,
    protocol_factory: Callable[[], asyncio.SubprocessProtocol],
    cmd: str | bytes,
    *,
    stdin: Any = subprocess.PIPE,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    universal_newlines: bool = False,
    shell: bool = True,
    bufsize: int = 0,
    encoding: Any = None,
    errors: Any = None,
    text: Any = None,
    **kwargs: Any,
) -> tuple[SubprocessTransport, asyncio.SubprocessProtocol]:
    if not isinstance(cmd, bytes | str):
        raise ValueError("cmd must be a string")
    if not shell:
        raise ValueError("shell must be True")
    _check_options(universal_newlines, bufsize, encoding, errors, text)
    return await _start(loop, protocol_factory, cmd, True, stdin, stdout, stderr, kwargs)


async def subprocess_exec(
    loop: Any,
    protocol_factory: Callable[[], asyncio.SubprocessProtocol],
    program: Any,
    *args: Any,
    stdin: Any = subprocess.PIPE,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    universal_newlines: bool = False,
    shell: bool = False,
    bufsize: int = 0,
    encoding: Any = None,
    errors: Any = None,
    text: Any = None,
    **kwargs: Any,
) -> tuple[SubprocessTransport, asyncio.SubprocessProtocol]:
    if shell:
        raise ValueError("shell must be False")
    _check_options(universal_newlines, bufsize, encoding, errors, text)
    popen_args = (program, *args)
    return await _start(loop, protocol_factory, popen_args, False, stdin, stdout, stderr, kwargs)


async def _start(  # noqa: PLR0917 - internal
    loop: Any,
    protocol_factory: Callable[[], asyncio.SubprocessProtocol],
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    kwargs: dict[str, Any],
) -> tuple[SubprocessTransport, asyncio.SubprocessProtocol]:
    protocol = protocol_factory()
    proc = subprocess.Popen(
        args,
        shell=shell,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        universal_newlines=False,
        bufsize=0,
        **kwargs,
    )
    transport = SubprocessTransport(loop, protocol, proc)
    try:
        await transport._connect()
    except BaseException:
        transport.close()
        await transport._wait()
        raise
    return transport, protocol


class _PipeProtocol(asyncio.Protocol):
    """Forwards one pipe's events to the subprocess transport."""

    def __init__(self, owner: SubprocessTransport, fd: int) -> None:
        self.owner = owner
        self.fd = fd
        self.pipe: Any = None
        self.disconnected = False

    def connection_made(self, transport: Any) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        self.owner._pipe_data_received(self.fd, data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        self.owner._pipe_connection_lost(self.fd, exc)

    def pause_writing(self) -> None:
        self.owner._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.owner._protocol.resume_writing()


class SubprocessTransport(asyncio.SubprocessTransport):
    """A child process and its pipes, for an ``asyncio.SubprocessProtocol``."""

    def __init__(self, loop: Any, protocol: asyncio.SubprocessProtocol, proc: Any) -> None:
        super().__init__()
        self._loop = loop
        self._protocol: Any = protocol
        self._proc: subprocess.Popen[bytes] | None = proc
        self._pid = proc.pid
        self._returncode: int | None = None
        self._exit_waiters: list[asyncio.Future[int]] = []
        self._pipes: dict[int, _PipeProtocol | None] = {}
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = []
        self._closed = False
        self._finished = False
        self._pidfd: int | None = None
        self._extra: dict[str, Any] = {"subprocess": proc}
        for fd, stream in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
            if stream is not None:
                self._pipes[fd] = None
        self._watch_exit()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"returncode={self._returncode}"
        return f"<plait.aio.SubprocessTransport pid={self._pid} {state}>"

    async def _connect(self) -> None:
        proc = self._proc
        assert proc is not None
        loop = self._loop
        for fd, stream in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
            if stream is None:
                continue
            pipe_protocol = self._pipes[fd] = _PipeProtocol(self, fd)
            await loop._connect_pipe(lambda p=pipe_protocol: p, stream, readable=fd != 0)
        loop.call_soon(self._protocol.connection_made, self)
        pending, self._pending = self._pending, None
        for callback, args in pending or ():
            loop.call_soon(callback, *args)
        # Return once connection_made() has run (asyncio.subprocess reads the streams
        # it set up right after subprocess_exec returns).
        made = loop.create_future()
        loop.call_soon(made.set_result, None)
        await made

    # -- the child's exit --------------------------------------------------------------

    def _watch_exit(self) -> None:
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self._pid)
            except OSError:
                self._pidfd = None
        if self._pidfd is not None:
            self._loop._add_reader(self._pidfd, self._poll_exit)
            return
        threading.Thread(
            target=self._wait_in_thread, name=f"plait.aio: wait for pid {self._pid}", daemon=True
        ).start()

    def _wait_in_thread(self) -> None:
        try:
            os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped by someone else: poll() below says so
        try:
            self._loop.call_soon_threadsafe(self._poll_exit)
        except RuntimeError:  # pragma: no cover - the loop closed meanwhile
            pass

    def _poll_exit(self) -> None:
        proc = self._proc
        if proc is None or self._returncode is not None:
            return
        returncode = proc.poll()
        if returncode is None:
            return  # (not yet: a spurious wake-up)
        self._stop_watching()
        self._returncode = returncode
        self._call(self._protocol.process_exited)
        for waiter in self._exit_waiters:
            if not waiter.done():
                waiter.set_result(returncode)
        self._exit_waiters = []
        self._try_finish()

    def _stop_watching(self) -> None:
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            self._loop._remove_reader(pidfd)
            self._loop._forget_fd(pidfd)
            os.close(pidfd)

    async def _wait(self) -> int:
        """Wait for the child's exit; its return code (what asyncio.subprocess uses)."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        returncode: int = await waiter
        return returncode

    # -- pipes -------------------------------------------------------------------------

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        if self._pending is not None:
            self._pending.append((callback, args))  # before connection_made()
        else:
            self._loop.call_soon(callback, *args)

    def _pipe_data_received(self, fd: int, data: bytes) -> None:
        self._call(self._protocol.pipe_data_received, fd, data)

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._finished or self._returncode is None:
            return
        if all(p is not None and p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._connection_lost, None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._proc = None
            self._protocol = None

    # -- the transport interface -------------------------------------------------------

    def get_pid(self) -> int:
        pid: int = self._pid
        return pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        pipe = self._pipes.get(fd)
        return None if pipe is None else pipe.pipe

    def _check_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ProcessLookupError()
        return self._proc

    def send_signal(self, signal: int) -> None:
        proc = self._check_proc()
        if proc.poll() is not None:
            # (reaped now: its pid may be another process's soon)
            self._poll_exit()
            raise ProcessLookupError(f"process {self._pid} has already exited")
        proc.send_signal(signal)

    def terminate(self) -> None:
        self._check_proc().terminate()

    def kill(self) -> None:
        self._check_proc().kill()

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            if pipe is not None and pipe.pipe is not None:
                pipe.pipe.close()
        proc = self._proc
        if proc is not None and self._returncode is None and proc.poll() is None:
            if self._loop.get_debug():
                warnings.warn(
                    f"Close running child process: kill {self!r}", ResourceWarning, stacklevel=2
                )
            try:
                proc.kill()
            except ProcessLookupError:  # pragma: no cover - exited just now
                pass
        # The child is reaped when it exits: the watch stays until then.

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self, stacklevel=1)
