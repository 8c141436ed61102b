"""Helpers shared by the test modules (import with ``from helpers import ...``)."""

from __future__ import annotations

from typing import Any

import plait
from plait.testing import MockClock


def vrun(fn: Any, *args: Any, clock: plait.lowlevel.Clock | None = None) -> Any:
    """``plait.run`` on virtual time: sleeps finish at once (unless ``clock`` is given)."""
    return plait.run(
        fn, *args, clock=clock if clock is not None else MockClock(autojump_threshold=0)
    )


def isolated(test_file: str, case: str, timeout: float = 60) -> None:
    """Run ``case()``, a module-level function of ``test_file``, in a fresh interpreter
    and fail with its output if it fails.

    For what depends on the whole process: plait.Deadlock is declared only while no
    thread but plait's own is alive (any other might call in), and a test process has
    threads that earlier tests left (executors, dask's)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(test_file).resolve().parent)
    module = Path(test_file).stem
    code = f"import {module}; {module}.{case}()"
    env = child_env()
    env["PYTHONPATH"] += os.pathsep + here
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{case}() failed in a fresh interpreter:\n{done.stderr}"


def child_env() -> dict[str, str]:
    """The environment for a child interpreter that imports this checkout's plait."""
    import os
    from pathlib import Path

    src = str(Path(plait.__file__).resolve().parent.parent)
    path = [src, os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [src]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


class ChildLines:
    """Reads a child's stdout line by line, never waiting longer than ``timeout``."""

    def __init__(self, proc: Any, timeout: float = 30.0) -> None:
        self.proc = proc
        self.timeout = timeout
        self.buffer = b""

    def next(self) -> str:
        import os
        import select

        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            ready = select.select([self.proc.stdout], [], [], self.timeout)[0]
            assert ready, f"the child said nothing for {self.timeout} s"
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"the child closed its stdout (exit code {self.proc.wait(30)})"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def out_of_fds_dialogue(child_code: str, tmp_path: Any, waiting_clients: int) -> None:
    """Drive a child server that runs out of file descriptors (the accept-backoff tests
    of plait.serve_tcp and of plait.aio's start_server).

    The child prints ``EXHAUSTED <port>`` once it holds every descriptor but its
    listener; each connection it then fails to accept makes it print ``BACKOFF``. On
    ``free`` (stdin) it closes its filler descriptors (``FREED``) and must serve the
    clients waiting in the backlog (``RECOVERED``; each gets its bytes upper-cased back)
    and new ones; on ``stop`` it ends (``EXITED``) with status 0."""
    import socket
    import subprocess
    import sys

    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", child_code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )
    assert proc.stdin is not None and proc.stdout is not None
    clients: list[socket.socket] = []
    try:
        lines = ChildLines(proc)
        first = lines.next()
        assert first.startswith("EXHAUSTED "), first
        port = int(first.split()[1])
        for _ in range(waiting_clients):
            # The kernel completes the handshake; the server cannot accept it.
            client = socket.create_connection(("127.0.0.1", port), timeout=30)
            clients.append(client)
            client.sendall(b"hello")
        assert lines.next() == "BACKOFF"
        proc.stdin.write(b"free\n")
        proc.stdin.flush()
        line = lines.next()
        while line == "BACKOFF":  # logging each retry would be noisy, not wrong
            line = lines.next()
        assert line == "FREED"
        assert lines.next() == "RECOVERED"
        for client in clients:
            assert client.recv(100) == b"HELLO", "served once fds were free"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as late:
            late.sendall(b"later")
            assert late.recv(100) == b"LATER"
        proc.stdin.write(b"stop\n")
        proc.stdin.flush()
        assert lines.next() == "EXITED"
        assert proc.wait(30) == 0
    except BaseException:
        proc.kill()
        proc.wait()
        print(stderr_path.read_text(errors="replace"), file=sys.stderr)
        raise
    finally:
        for client in clients:
            client.close()
        proc.stdin.close()
        proc.stdout.close()


def open_in_chromium(path: Any, tmp_path: Any) -> str:
    """Open the page at ``path`` in a real headless Chromium and return the DOM once its
    scripts have run; fail on any uncaught JavaScript error. Skips where there is no
    Chromium, except under CI (``.ci/run`` installs it)."""
    import os
    import shutil
    import subprocess

    import pytest

    browser = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
        None,
    )
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium for this test: .ci/run installs it (apt-get)")
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "Uncaught" in line]
    assert errors == [], errors
    return result.stdout
