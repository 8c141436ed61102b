"""plait.open_process / run_process / Process, on real child processes."""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest

import plait
from plait import _subprocess
from plait._fdstream import PipeReceiveStream, PipeSendStream
from plait.testing import wait_all_tasks_blocked

PIPE = subprocess.PIPE

BIG = 10 * 1024 * 1024


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


ECHO = py(
    "import sys\n"
    "while chunk := sys.stdin.buffer.read1(65536):\n"
    "    sys.stdout.buffer.write(chunk); sys.stdout.buffer.flush()"
)
SLEEPER = py("import sys, time; print('ready', flush=True); time.sleep(60)")
STUBBORN = py(
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)"
)


def assert_reaped(pid: int) -> None:
    """The child is gone: not a zombie, and not ours to wait for any more."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        pass
    else:
        assert state != "Z", f"process {pid} is a zombie"
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(params=["pidfd", "thread"])
def reaper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with pidfd reaping and once with the waitid-thread fallback."""
    if request.param == "pidfd":
        if not _subprocess._use_pidfd:
            pytest.skip("pidfd_open is not available here")
    else:
        monkeypatch.setattr(_subprocess, "_use_pidfd", False)
    return request.param


def check_reaper(process: plait.Process, reaper: str) -> None:
    """Call right after open_process: the child is reaped the way the fixture asked."""
    assert (process._pidfd is not None) == (reaper == "pidfd")


async def read_line(fd: int) -> bytes:
    stream = PipeReceiveStream(fd)
    async with stream:
        return await stream.receive_until(b"\n")


class TestPipes:
    def test_echo_through_stdin_and_stdout(self, reaper: str) -> None:
        async def main() -> None:
            async with await plait.open_process(ECHO, stdin=PIPE, stdout=PIPE) as proc:
                check_reaper(proc, reaper)
                assert isinstance(proc.stdin, PipeSendStream)
                assert isinstance(proc.stdout, PipeReceiveStream)
                assert proc.stderr is None
                for word in (b"hello", b"plait", b"x" * 100_000):
                    await proc.stdin.send_all(word)
                    assert await proc.stdout.receive_exactly(len(word)) == word
                await proc.stdin.send_eof()
                assert await proc.stdout.receive_some() == b""
                assert await proc.wait() == 0
                assert proc.returncode == 0
            assert_reaped(proc.pid)

        plait.run(main)

    def test_receive_until_and_async_for_on_stdout(self) -> None:
        async def main() -> None:
            code = "for i in range(3): print(f'line {i}')\nprint('tail', end='')"
            async with await plait.open_process(py(code), stdout=PIPE) as proc:
                assert proc.stdout is not None
                assert await proc.stdout.receive_until(b"\n") == b"line 0\n"
                assert await proc.stdout.receive_until(b"\n") == b"line 1\n"
                rest = b"".join([chunk async for chunk in proc.stdout])
                assert rest == b"line 2\ntail"
                assert await proc.wait() == 0

        plait.run(main)

    def test_send_eof_makes_cat_exit(self, reaper: str) -> None:
        async def main() -> None:
            async with await plait.open_process(
                ["cat"], stdin=PIPE, stdout=subprocess.DEVNULL
            ) as proc:
                assert proc.stdin is not None
                await proc.stdin.send_all(b"some input\n")
                await proc.stdin.send_eof()
                assert proc.stdin.closed
                assert await proc.wait() == 0
                with pytest.raises(plait.ClosedResourceError):
                    await proc.stdin.send_all(b"more")

        plait.run(main)

    def test_closing_stdin_makes_cat_exit(self) -> None:
        async def main() -> None:
            async with await plait.open_process(["cat"], stdin=PIPE, stdout=PIPE) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                await proc.stdin.send_all(b"abc")
                await proc.stdin.aclose()
                assert await proc.stdout.receive_exactly(3) == b"abc"
                assert await proc.wait() == 0

        plait.run(main)

    def test_stderr_to_stdout_merges(self) -> None:
        async def main() -> None:
            code = (
                "import sys; sys.stdout.write('out\\n'); sys.stdout.flush(); "
                "sys.stderr.write('err\\n')"
            )
            async with await plait.open_process(
                py(code), stdout=PIPE, stderr=subprocess.STDOUT
            ) as proc:
                assert proc.stderr is None and proc.stdout is not None
                assert b"".join([c async for c in proc.stdout]) == b"out\nerr\n"
                assert await proc.wait() == 0

        plait.run(main)

    def test_stdout_to_a_file(self, tmp_path: Any) -> None:
        async def main() -> None:
            with open(tmp_path / "out", "wb") as f:
                async with await plait.open_process(py("print('to file')"), stdout=f) as proc:
                    assert proc.stdout is None
                    assert await proc.wait() == 0
            assert (tmp_path / "out").read_bytes() == b"to file\n"

        plait.run(main)

    def test_closing_stdout_wakes_its_reader(self) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                assert proc.stdout is not None
                assert await proc.stdout.receive_until(b"\n") == b"ready\n"
                errors: list[BaseException] = []

                async def reader() -> None:
                    assert proc.stdout is not None
                    try:
                        await proc.stdout.receive_some()
                    except plait.ClosedResourceError as exc:
                        errors.append(exc)

                async with plait.TaskGroup() as tg:
                    tg.spawn(reader)
                    await wait_all_tasks_blocked()
                    await proc.stdout.aclose()
                assert len(errors) == 1
            assert proc.returncode == -signal.SIGTERM

        plait.run(main)

    def test_two_readers_on_one_pipe_are_refused(self) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                assert proc.stdout is not None
                await proc.stdout.receive_until(b"\n")
                async with plait.TaskGroup() as tg:
                    tg.spawn(proc.stdout.receive_some)
                    await wait_all_tasks_blocked()
                    with pytest.raises(plait.BusyResourceError):
                        await proc.stdout.receive_some()
                    tg.cancel_scope.cancel()

        plait.run(main)

    def test_writing_to_a_child_that_exited_is_broken(self) -> None:
        async def main() -> None:
            async with await plait.open_process(py("pass"), stdin=PIPE) as proc:
                assert proc.stdin is not None
                assert await proc.wait() == 0
                with pytest.raises(plait.BrokenResourceError):
                    await proc.stdin.send_all(b"x" * 1_000_000)

        plait.run(main)

    def test_pipe_directions_are_enforced(self) -> None:
        async def main() -> None:
            async with await plait.open_process(["cat"], stdin=PIPE, stdout=PIPE) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                with pytest.raises(TypeError, match="write end"):
                    await proc.stdin.receive_some()
                with pytest.raises(TypeError, match="read end"):
                    await proc.stdout.send_all(b"x")
                with pytest.raises(TypeError, match="read end"):
                    await proc.stdout.send_eof()
                assert "fd=" in repr(proc.stdin)
            assert repr(proc.stdin) == "<plait.PipeSendStream closed>"

        plait.run(main)

    def test_no_fd_leaks(self) -> None:
        async def main() -> None:
            await plait.run_process(py("pass"))  # warm up: worker threads, etc.
            before = open_fds()
            for _ in range(5):
                await plait.run_process(ECHO, input=b"abc", capture_output=True)
                async with await plait.open_process(SLEEPER, stdin=PIPE, stdout=PIPE):
                    pass
            assert open_fds() == before

        plait.run(main)


class TestProcess:
    def test_repr_and_poll(self) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                assert proc.poll() is None
                assert proc.returncode is None
                assert repr(proc) == f"<plait.Process {SLEEPER!r} pid={proc.pid} running>"
                assert proc.args == SLEEPER
            assert repr(proc) == f"<plait.Process {SLEEPER!r} pid={proc.pid} killed by SIGTERM>"
            proc = await plait.open_process(py("raise SystemExit(7)"))
            async with proc:
                assert await proc.wait() == 7
            assert repr(proc).endswith(" exited with status 7>")

        plait.run(main)

    @pytest.mark.parametrize(
        ("method", "signum"),
        [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM), ("usr1", signal.SIGUSR1)],
    )
    def test_returncode_for_a_signal_is_negative(self, method: str, signum: int) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                assert proc.stdout is not None
                await proc.stdout.receive_until(b"\n")
                if method == "usr1":
                    proc.send_signal(signal.SIGUSR1)
                else:
                    getattr(proc, method)()
                assert await proc.wait() == -signum
                proc.kill()  # reaped: nothing is sent to the pid any more
                proc.send_signal(signal.SIGTERM)
                assert proc.returncode == -signum

        plait.run(main)

    def test_many_tasks_wait_at_once(self, reaper: str) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                check_reaper(proc, reaper)
                results: list[int] = []

                async def waiter() -> None:
                    results.append(await proc.wait())

                async with plait.TaskGroup() as tg:
                    for _ in range(3):
                        tg.spawn(waiter)
                    await wait_all_tasks_blocked()
                    proc.kill()
                assert results == [-signal.SIGKILL] * 3
                assert (proc._exited is not None) == (reaper == "thread")

        plait.run(main)

    def test_cancelled_wait_leaves_the_child_running(self, reaper: str) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                for _ in range(3):  # cancelled over and over: no threads pile up
                    with plait.CancelScope() as scope:
                        async with plait.TaskGroup() as tg:
                            tg.spawn(proc.wait)
                            await wait_all_tasks_blocked()
                            scope.cancel()
                    assert scope.cancelled_caught
                    assert proc.poll() is None
                proc.terminate()
                assert await proc.wait() == -signal.SIGTERM
            assert_reaped(proc.pid)

        plait.run(main)

    def test_context_manager_terminates_a_running_child(self, reaper: str) -> None:
        async def main() -> None:
            async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                assert proc.stdout is not None
                await proc.stdout.receive_until(b"\n")
            assert proc.returncode == -signal.SIGTERM
            assert proc.stdout.closed
            assert_reaped(proc.pid)

        plait.run(main)

    def test_aclose_kills_a_child_that_ignores_sigterm(self, reaper: str) -> None:
        async def main() -> None:
            proc = await plait.open_process(STUBBORN, stdout=PIPE)
            assert proc.stdout is not None
            await proc.stdout.receive_until(b"\n")
            await proc.aclose(grace_period=0.3)
            assert proc.returncode == -signal.SIGKILL
            assert_reaped(proc.pid)

        plait.run(main)

    def test_context_manager_reaps_when_the_body_raises(self) -> None:
        async def main() -> None:
            with pytest.raises(ZeroDivisionError):
                async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                    1 / 0
            assert_reaped(proc.pid)

        plait.run(main)

    def test_context_manager_cleanup_survives_cancellation(self) -> None:
        async def main() -> None:
            with plait.CancelScope() as scope:
                async with await plait.open_process(SLEEPER, stdout=PIPE) as proc:
                    assert proc.stdout is not None
                    await proc.stdout.receive_until(b"\n")
                    scope.cancel()
            assert scope.cancelled_caught
            assert proc.returncode == -signal.SIGTERM
            assert_reaped(proc.pid)

        plait.run(main)

    def test_aclose_in_a_cancelled_scope_still_kills(self) -> None:
        async def main() -> None:
            with plait.CancelScope() as scope:
                proc = await plait.open_process(STUBBORN, stdout=PIPE)
                assert proc.stdout is not None
                await proc.stdout.receive_until(b"\n")
                scope.cancel()
                await proc.aclose(grace_period=0.2)  # shielded; Cancelled comes after
            assert scope.cancelled_caught
            assert proc.returncode == -signal.SIGKILL
            assert_reaped(proc.pid)

        plait.run(main)


class TestRunProcess:
    def test_capture_output(self, reaper: str) -> None:
        async def main() -> None:
            code = "import sys; print('out'); print('err', file=sys.stderr)"
            result = await plait.run_process(py(code), capture_output=True)
            assert isinstance(result, subprocess.CompletedProcess)
            assert result.args == py(code)
            assert (result.returncode, result.stdout, result.stderr) == (0, b"out\n", b"err\n")

        plait.run(main)

    def test_uncaptured_output_is_none(self) -> None:
        async def main() -> None:
            result = await plait.run_process(py("pass"), stdout=subprocess.DEVNULL)
            assert (result.stdout, result.stderr) == (None, None)
            result = await plait.run_process(py("print('x')"), stdout=PIPE)
            assert (result.stdout, result.stderr) == (b"x\n", None)

        plait.run(main)

    def test_check_raises_called_process_error_with_output(self) -> None:
        async def main() -> None:
            code = "import sys; print('partial'); print('oops', file=sys.stderr); sys.exit(3)"
            with pytest.raises(subprocess.CalledProcessError) as info:
                await plait.run_process(py(code), capture_output=True)
            exc = info.value
            assert exc.returncode == 3
            assert exc.cmd == py(code)
            assert (exc.output, exc.stderr) == (b"partial\n", b"oops\n")
            result = await plait.run_process(py(code), capture_output=True, check=False)
            assert result.returncode == 3

        plait.run(main)

    def test_ten_megabytes_on_stdout_and_stderr_at_once(self, reaper: str) -> None:
        code = (
            "import random, sys\n"
            f"data = random.Random(1).randbytes({BIG})\n"
            "for i in range(0, len(data), 65536):\n"
            "    sys.stdout.buffer.write(data[i:i + 65536]); sys.stdout.buffer.flush()\n"
            "    sys.stderr.buffer.write(data[i:i + 65536][::-1]); sys.stderr.buffer.flush()\n"
        )
        data = random.Random(1).randbytes(BIG)
        want_err = b"".join(data[i : i + 65536][::-1] for i in range(0, BIG, 65536))

        async def main() -> subprocess.CompletedProcess[bytes]:
            return await plait.run_process(py(code), capture_output=True)

        result = plait.run(main)
        assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()
        assert hashlib.sha256(result.stderr).digest() == hashlib.sha256(want_err).digest()

    def test_large_input_is_fed_while_output_is_read(self) -> None:
        data = random.Random(2).randbytes(BIG)

        async def main() -> subprocess.CompletedProcess[bytes]:
            return await plait.run_process(ECHO, input=data, capture_output=True)

        result = plait.run(main)
        assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(data).digest()

    def test_input_not_read_by_the_child_is_dropped(self) -> None:
        async def main() -> None:
            result = await plait.run_process(py("pass"), input=b"x" * BIG)
            assert result.returncode == 0

        plait.run(main)

    def test_start_reveals_the_process(self) -> None:
        async def main() -> None:
            async with plait.TaskGroup() as tg:
                proc = await tg.start(functools.partial(plait.run_process, py("pass")))
                assert isinstance(proc, plait.Process)
            assert proc.returncode == 0

        plait.run(main)


class TestCancellation:
    async def _cancel_run_process(self, cmd: list[str], grace: float) -> plait.Process:
        read_fd, write_fd = os.pipe()
        try:
            async with plait.TaskGroup() as tg:
                run = functools.partial(
                    plait.run_process, cmd, stdout=write_fd, grace_period=grace
                )
                proc: plait.Process = await tg.start(run)
                os.close(write_fd)
                write_fd = -1
                assert await read_line(read_fd) == b"ready\n"
                tg.cancel_scope.cancel()
        finally:
            if write_fd != -1:
                os.close(write_fd)
        return proc

    def test_child_that_exits_on_sigterm(self, reaper: str) -> None:
        async def main() -> None:
            proc = await self._cancel_run_process(SLEEPER, grace=30)
            assert proc.returncode == -signal.SIGTERM
            assert_reaped(proc.pid)

        plait.run(main)

    def test_child_that_ignores_sigterm_is_killed(self, reaper: str) -> None:
        async def main() -> None:
            proc = await self._cancel_run_process(STUBBORN, grace=0.5)
            assert proc.returncode == -signal.SIGKILL
            assert_reaped(proc.pid)

        plait.run(main)

    def test_cancelled_with_captured_output(self) -> None:
        async def main() -> None:
            with plait.move_on_after(0.05) as scope:
                await plait.run_process(SLEEPER, capture_output=True, input=b"")
            assert scope.cancelled_caught

        plait.run(main)
        # (Nothing to inspect: the test fails on a leaked fd's ResourceWarning or a
        # zombie's "still running" warning from subprocess.Popen.__del__.)

    def test_cancelled_before_it_starts_spawns_nothing(self) -> None:
        async def main() -> None:
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.run_process(["definitely-not-run"])
            assert scope.cancelled_caught

        plait.run(main)


class TestNoCycles:
    def test_everything_is_freed_by_reference_counting(self, reaper: str) -> None:
        async def main() -> None:
            await plait.run_process(ECHO, input=b"x", capture_output=True)
            with pytest.raises(subprocess.CalledProcessError):
                await plait.run_process(py("raise SystemExit(2)"), capture_output=True)
            async with plait.TaskGroup() as tg:
                proc = await tg.start(functools.partial(plait.run_process, SLEEPER, stdout=PIPE))
                tg.cancel_scope.cancel()
            assert proc.returncode is not None
            async with await plait.open_process(SLEEPER, stdin=PIPE, stdout=PIPE):
                pass
            with pytest.raises(FileNotFoundError):
                await plait.open_process(["no-such-program-xyz"], stdout=PIPE)

        plait.run(main)  # warm up (imports, caches)
        gc.collect()
        gc.disable()
        try:
            plait.run(main)
            assert gc.collect() == 0
        finally:
            gc.enable()


class TestValidation:
    @pytest.mark.parametrize(
        ("cmd", "kwargs", "error", "match"),
        [
            ([], {}, ValueError, "empty command"),
            ("", {}, ValueError, "empty command"),
            (["", "x"], {}, ValueError, "program name"),
            ([sys.executable, 3], {}, TypeError, "argument 1 must be"),
            (42, {}, TypeError, "must be a str, bytes or os.PathLike"),
            (iter(["ls"]), {}, TypeError, "sequence"),
            (["ls", "-l"], {"shell": True}, TypeError, "shlex.join"),
            ("ls", {"shell": "yes"}, TypeError, "shell must be"),
            ("ls", {"text": True}, TypeError, "text= is not supported"),
            ("ls", {"encoding": "utf-8"}, TypeError, "encoding= is not supported"),
            ("ls", {"stdout": subprocess.STDOUT}, ValueError, "only makes sense for stderr"),
            ("ls", {"stdin": object()}, TypeError, "stdin must be"),
            ("ls", {"stdin": -7}, ValueError, "neither a file descriptor"),
            ("ls", {"stdout": True}, TypeError, "stdout must be"),
        ],
    )
    def test_bad_arguments(self, cmd: Any, kwargs: Any, error: Any, match: str) -> None:
        async def main() -> None:
            with pytest.raises(error, match=match):
                await plait.open_process(cmd, **kwargs)

        plait.run(main)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"input": "text"}, TypeError, "encode it"),
            ({"input": 5}, TypeError, "bytes-like, got 5"),
            ({"input": b"x", "stdin": PIPE}, ValueError, "cannot both"),
            ({"capture_output": True, "stdout": PIPE}, ValueError, "capture_output"),
            ({"grace_period": -1}, ValueError, "grace_period"),
        ],
    )
    def test_bad_run_process_arguments(self, kwargs: Any, error: Any, match: str) -> None:
        async def main() -> None:
            with pytest.raises(error, match=match):
                await plait.run_process(py("pass"), **kwargs)

        plait.run(main)

    def test_missing_executable_names_it(self) -> None:
        async def main() -> None:
            before = open_fds()
            with pytest.raises(FileNotFoundError, match="no-such-program-xyz") as info:
                await plait.open_process(["no-such-program-xyz", "arg"], stdin=PIPE, stdout=PIPE)
            assert info.value.filename == "no-such-program-xyz"
            assert open_fds() == before  # the pipes were closed again
            with pytest.raises(FileNotFoundError) as info:
                await plait.run_process("no-such-program-xyz --flag")
            assert "separate list items" in "".join(info.value.__notes__)

        plait.run(main)

    def test_shell_command_string(self) -> None:
        async def main() -> None:
            result = await plait.run_process("echo $((6 * 7))", shell=True, stdout=PIPE)
            assert result.stdout == b"42\n"

        plait.run(main)

    def test_pathlike_and_bytes_commands(self, tmp_path: Any) -> None:
        async def main() -> None:
            from pathlib import Path

            result = await plait.run_process(
                [Path(sys.executable), b"-c", "print('ok')"], stdout=PIPE, cwd=tmp_path
            )
            assert result.stdout == b"ok\n"

        plait.run(main)
