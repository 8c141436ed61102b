"""plait.aio.EventLoop's pipes and subprocesses: asyncio.subprocess on plait's loop,
the protocol order, killing and reaping, bad options (issue 8)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

import plait.aio

PY = sys.executable


def run(coro):
    return plait.aio.run(coro)


def test_communicate_with_all_three_pipes():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import sys; data = sys.stdin.read(); print(data.upper()); sys.stderr.write('e')",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(b"through the pipes")
        return out, err, proc.returncode

    assert run(main()) == (b"THROUGH THE PIPES\n", b"e", 0)


def test_large_output_and_exit_codes():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write('x' * 3_000_000)", stdout=subprocess.PIPE
        )
        data = await proc.stdout.read()
        shell = await asyncio.create_subprocess_shell("exit 7")
        return len(data), await proc.wait(), await shell.wait()

    assert run(main()) == (3_000_000, 0, 7)


def test_signals_and_a_process_that_has_exited():
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "3600")
        proc.terminate()
        code = await proc.wait()
        with pytest.raises(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        killed = await asyncio.create_subprocess_exec("sleep", "3600")
        killed.kill()
        return code, await killed.wait()

    assert run(main()) == (-signal.SIGTERM, -signal.SIGKILL)


def test_a_cancelled_wait_leaves_the_child_alone():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdin.read()", stdin=subprocess.PIPE
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
        assert proc.returncode is None
        proc.stdin.close()  # end of input: it exits
        return await proc.wait()

    assert run(main()) == 0


def test_closing_the_transport_kills_and_reaps_the_child():
    class Protocol(asyncio.SubprocessProtocol):
        def __init__(self):
            self.events = []
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.events.append("made")

        def pipe_connection_lost(self, fd, exc):
            self.events.append(f"pipe {fd} lost")

        def process_exited(self):
            self.events.append("exited")

        def connection_lost(self, exc):
            self.events.append("lost")
            self.done.set_result(None)

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            Protocol, "sleep", "3600", stdin=None, stderr=None
        )
        pid = transport.get_pid()
        transport.close()
        await protocol.done
        return pid, transport.get_returncode(), protocol.events

    pid, code, events = run(main())
    assert code == -signal.SIGKILL
    assert events[0] == "made" and events[-1] == "lost" and "exited" in events
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left


def test_bad_options_and_programs():
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/program")
        for kwargs, message in [
            ({"shell": True}, "shell must be False"),
            ({"bufsize": 1}, "bufsize must be 0"),
            ({"text": True}, "text must be False"),
            ({"universal_newlines": True}, "universal_newlines must be False"),
            ({"encoding": "utf-8"}, "encoding must be None"),
        ]:
            with pytest.raises(ValueError, match=message):
                await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **kwargs)
        with pytest.raises(ValueError, match="cmd must be a string"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])
        with pytest.raises(ValueError, match="shell must be True"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)

    run(main())


class PipeRecorder(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_read_and_write_pipes():
    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        reader_file = os.fdopen(r, "rb", 0)
        writer_file = os.fdopen(w, "wb", 0)
        read_transport, reader = await loop.connect_read_pipe(PipeRecorder, reader_file)
        write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, writer_file)
        write_transport.write(b"through a pipe " * 10_000)
        write_transport.write_eof()  # closes it: the reader sees end of file
        exc = await reader.lost
        return len(reader.data), exc, read_transport.is_closing()

    assert run(main()) == (150_000, None, True)


def test_a_write_pipe_learns_that_its_reader_went_away():
    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        transport, protocol = await loop.connect_write_pipe(PipeRecorder, os.fdopen(w, "wb", 0))
        transport.write(b"x" * 1_000_000)  # more than the pipe holds: some stays queued
        os.close(r)
        return await protocol.lost

    assert isinstance(run(main()), BrokenPipeError)


def test_pipe_transports_refuse_regular_files(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        with open(tmp_path / "file", "wb") as file:
            with pytest.raises(ValueError, match="for pipes/sockets only"):
                await loop.connect_write_pipe(asyncio.Protocol, file)

    run(main())


def test_a_write_transport_on_a_pty_stays_open_while_the_pty_has_data_to_read():
    async def main():
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        reader_file = os.fdopen(master, "rb", 0)
        writer_file = os.fdopen(os.dup(master), "wb", 0)
        with os.fdopen(slave, "rb+", 0) as tty:
            read_transport, reader = await loop.connect_read_pipe(PipeRecorder, reader_file)
            write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, writer_file)
            tty.write(b"from the tty\n")  # the master becomes readable...
            while b"from the tty" not in reader.data:
                await asyncio.sleep(0.001)
            assert not write_transport.is_closing()  # ...which is not a hang-up
            write_transport.write(b"to the tty\n")
            line = await loop.run_in_executor(None, tty.readline)
            write_transport.close()
            read_transport.close()
            return line

    assert run(main()) == b"to the tty\n"
