"""The monitor: what ``plait ps PID`` and ``plait pstree PID`` ask. Layer L4.

``plait.run(main, monitor=True)`` (or ``PLAIT_MONITOR=1`` in the environment) serves the
running program's task tree on a Unix socket, ``<runtime dir>/plait/<pid>.sock``: the
runtime dir is ``$XDG_RUNTIME_DIR`` (the user's own, mode 0700) or else a
``plait-<uid>`` directory in the temporary directory, made with mode 0700 and refused if
another user owns it. The socket has mode 0600: only its user can connect. It is
removed when the run ends.

A plain thread (``plait monitor``) accepts one connection at a time and reads one
request line, ``ps`` or ``pstree``; the answer is computed in the loop's thread
(``call_soon_threadsafe``) so it sees the tasks as they are between steps. A loop that
does not answer within a second is blocked: the answer then says so, with the loop
thread's current stack.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
import tempfile
import threading
import traceback
from typing import TYPE_CHECKING

from ._core._inspect import print_task_tree, task_tree
from ._core._kernel import MONITOR_NAME

if TYPE_CHECKING:
    from ._core._kernel import Loop

__all__ = ["Monitor", "ask", "monitor_enabled", "socket_path"]

ANSWER_TIMEOUT = 1.0


def monitor_enabled(monitor: bool | None) -> bool:
    if monitor is None:
        return os.environ.get("PLAIT_MONITOR", "") not in ("", "0")
    if not isinstance(monitor, bool):
        raise TypeError(f"monitor must be True, False or None, got {monitor!r}")
    return monitor


def _runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        path = os.path.join(base, "plait")
    else:
        path = os.path.join(tempfile.gettempdir(), f"plait-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(
            f"{path} is not a directory of this user's: the plait monitor will not put "
            "its socket there (remove it, or set XDG_RUNTIME_DIR)"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def socket_path(pid: int) -> str:
    """Where the monitor of process ``pid`` listens."""
    return os.path.join(_runtime_dir(), f"{pid}.sock")


def _ps(loop: Loop) -> str:
    lines = [f"{'ID':>6}  {'STATE':<9} {'NAME':<32} WAITING ON"]
    stack = list(task_tree(loop))
    while stack:
        info = stack.pop(0)
        system = " [system]" if info.system else ""
        lines.append(
            f"{info.id:>6}  {info.state:<9} {(info.name + system)[:32]:<32} "
            f"{info.waiting_on or ''}"
        )
        stack[:0] = [child for group in info.groups for child in group]
    return "\n".join(lines) + "\n"


def _pstree(loop: Loop) -> str:
    out = io.StringIO()
    print_task_tree(loop, out, system=True)
    return out.getvalue()


class Monitor:
    """The monitor of one ``plait.run``: started before the main task, closed after."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.path = socket_path(os.getpid())
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket of an earlier process with this pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # the socket is made with mode 0600
        try:
            self._sock.bind(self.path)
        finally:
            os.umask(old_mask)
        os.chmod(self.path, 0o600)
        self._sock.listen(4)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=MONITOR_NAME, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    conn.settimeout(5)
                    request = conn.makefile("r").readline().strip()
                    conn.sendall(self._answer(request).encode())
                except OSError:
                    pass

    def _answer(self, request: str) -> str:
        if request not in ("ps", "pstree"):
            return f"error: unknown request {request!r}: ask 'ps' or 'pstree'\n"
        render = _ps if request == "ps" else _pstree
        box: list[str] = []
        done = threading.Event()

        def in_loop() -> None:
            try:
                box.append(render(self._loop))
            except BaseException as exc:  # report it to the asker, not the loop
                box.append(f"error: {type(exc).__name__}: {exc}\n")
            finally:
                done.set()

        try:
            self._loop.call_soon_threadsafe(in_loop)
        except RuntimeError:
            return "the loop has closed\n"
        if done.wait(ANSWER_TIMEOUT):
            return box[0]
        frame = sys._current_frames().get(self._loop_thread)
        where = "".join(traceback.format_stack(frame)) if frame is not None else "?\n"
        return (
            f"the loop did not answer within {ANSWER_TIMEOUT:g} s: a task step is blocking "
            f"it (see plait.run(slow_step=...)). The loop thread is here:\n{where}"
        )


def ask(pid: int, request: str, timeout: float = 10.0) -> str:
    """Send ``request`` to the monitor of process ``pid`` and return its answer."""
    path = socket_path(pid)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no plait monitor for process {pid} ({path} does not exist): run the program "
            "with plait.run(main, monitor=True), PLAIT_MONITOR=1 in its environment, or "
            "'plait run --monitor'"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
