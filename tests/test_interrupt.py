"""Ctrl-C (SIGINT) against a real child process: finally blocks run, then
KeyboardInterrupt leaves plait.run."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import IO

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

TIMEOUT = 20  # seconds: "promptly", for a child; far below the 60 s test timeout

PROGRAM = textwrap.dedent(
    """
    import os, signal, sys, threading
    import plait

    mode = sys.argv[1]

    async def worker(i):
        try:
            await plait.sleep_forever()
        finally:
            print(f"finally {i}", flush=True)

    async def trigger():
        await plait.testing.wait_all_tasks_blocked()
        if mode == "idle":
            # Arrives while the loop is blocked in the OS poll (plait's own code).
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            await plait.sleep_forever()
        elif mode == "busy":
            # Arrives while this task runs user code: raised right there.
            os.kill(os.getpid(), signal.SIGINT)
            while True:
                pass
        elif mode == "callback":
            plait.lowlevel.current_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)
            await plait.sleep_forever()

    async def main():
        async with plait.TaskGroup() as tg:
            for i in range(3):
                tg.spawn(worker, i)
            tg.spawn(trigger)

    try:
        plait.run(main)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        sys.exit(0)
    print("no interrupt", flush=True)
    sys.exit(1)
    """
)


@pytest.mark.parametrize("mode", ["idle", "busy", "callback"])
def test_ctrl_c_runs_finally_blocks_then_raises(mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(lines[:3]) == ["finally 0", "finally 1", "finally 2"]
    assert lines[3:] == ["KeyboardInterrupt"]


def test_custom_sigint_handler_is_left_alone() -> None:
    program = textwrap.dedent(
        """
        import signal, plait
        seen = []
        def mine(signum, frame):
            seen.append(signum)
        signal.signal(signal.SIGINT, mine)
        async def main():
            assert signal.getsignal(signal.SIGINT) is mine
            signal.raise_signal(signal.SIGINT)
            await plait.sleep(0)
        plait.run(main)
        assert seen == [signal.SIGINT], seen
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr


LAST_ITERATION = textwrap.dedent(
    """
    import functools, os, signal, sys
    import plait

    async def main():
        loop = plait.lowlevel.current_loop()
        # A C callable run by the loop: the innermost Python frame is plait's, so the
        # handler only records the Ctrl-C; main then finishes in this very iteration
        # ("checkpoint") or in a later one ("sleep").
        loop.call_soon(functools.partial(os.kill, os.getpid(), signal.SIGINT))
        if sys.argv[1] == "checkpoint":
            await plait.checkpoint()
        else:
            await plait.sleep(0.001)
        return "finished"

    try:
        result = plait.run(main)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    else:
        print("returned", result, flush=True)
    """
)


@pytest.mark.parametrize("end", ["checkpoint", "sleep"])
def test_ctrl_c_during_the_last_iteration_is_not_lost(end: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LAST_ITERATION, end],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.splitlines() == ["KeyboardInterrupt"], proc.stdout + proc.stderr


# -- children driven through their stdout ------------------------------------------------


# Every child can be asked for its Python stack (SIGUSR1): a child that does not print
# what a test waits for is reported with where it is stuck.
DUMP_ON_SIGUSR1 = "import faulthandler, signal; faulthandler.register(signal.SIGUSR1)\n"


class Child:
    """A child Python process running ``program``, driven through its stdout lines.

    A thread reads the lines (so every wait has a timeout), stderr goes to a file. A
    wait that times out fails with the lines so far and the child's stack."""

    def __init__(self, program: str, *args: str) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DUMP_ON_SIGUSR1 + textwrap.dedent(program), *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,))
        self.reader.start()
        self.lines: list[str] = []
        self.eof = False

    def _read(self, stdout: IO[str]) -> None:
        with stdout:
            for line in stdout:
                self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def _next_line(self, what: str) -> str | None:
        try:
            line = self.queue.get(timeout=TIMEOUT)
        except queue.Empty:
            try:  # which signals are pending, blocked, ignored, caught
                with open(f"/proc/{self.proc.pid}/status") as status:
                    sigs = [s.strip() for s in status if s.startswith(("Sig", "Shd"))]
            except OSError:
                sigs = []
            self.proc.send_signal(signal.SIGUSR1)  # its stack, to stderr
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)  # (failure path only: time for the dump)
            self.proc.kill()
            self.stderr.seek(0)
            raise AssertionError(
                f"no {what} from the child in {TIMEOUT} s; its output: {self.lines}\n"
                f"{sigs}\n{self.stderr.read()}"
            ) from None
        if line is None:
            self.eof = True
        else:
            self.lines.append(line)
        return line

    def expect(self, prefix: str) -> str:
        """Read lines until one starts with ``prefix``; return it."""
        while not self.eof:
            line = self._next_line(f"line starting with {prefix!r}")
            if line is not None and line.startswith(prefix):
                return line
        _, _, err = self.finish()
        raise AssertionError(f"the child exited before {prefix!r}: {self.lines}\n{err}")

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self) -> tuple[int, list[str], str]:
        """Wait for the end of its output and its exit; return code, every stdout line,
        stderr."""
        while not self.eof:
            self._next_line("end of output")
        code = self.proc.wait(timeout=TIMEOUT)
        self.stderr.seek(0)
        return code, self.lines, self.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join()
        self.stderr.close()


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(program: str, *args: str) -> Child:
        children.append(Child(program, *args))
        return children[-1]

    try:
        yield start
    finally:
        for c in children:
            c.close()


TCP_SERVER = """
    import plait

    async def handler(stream):
        try:
            print("handling", flush=True)
            while await stream.receive_some():
                pass
        finally:
            print("handler finally", flush=True)

    async def main():
        try:
            async with plait.TaskGroup() as tg:
                listeners = await tg.start(plait.serve_tcp, handler, 0, "127.0.0.1")
                print("port", listeners[0].port, flush=True)
        finally:
            print("main finally", flush=True)

    plait.run(main)
"""


class TestServerCtrlC:
    def test_ctrl_c_stops_a_tcp_server_with_a_connection_in_progress(
        self, child: Callable[..., Child]
    ) -> None:
        server = child(TCP_SERVER)
        port = int(server.expect("port ").split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            server.expect("handling")
            server.interrupt()
            code, lines, err = server.finish()
            assert client.recv(100) == b""  # the server closed the connection
        assert code == -signal.SIGINT, err  # KeyboardInterrupt uncaught: killed by SIGINT
        assert err.rstrip().endswith("KeyboardInterrupt"), err
        assert lines[-2:] == ["handler finally", "main finally"], lines


HANGING_CLEANUP = """
    import signal, sys, time
    import plait

    modes = sys.argv[1].split(",")

    async def stuck(mode):
        try:
            await plait.sleep_forever()
        finally:
            print("cleanup", mode, flush=True)
            if mode == "sleep":
                time.sleep(600)
            else:
                with plait.CancelScope(shield=True):
                    await plait.sleep(600)
            print("cleanup done", flush=True)

    async def main():
        async with plait.TaskGroup() as tg:
            for mode in modes:
                tg.spawn(stuck, mode)
            await plait.testing.wait_all_tasks_blocked()
            print("ready", flush=True)

    try:
        plait.run(main)
    except KeyboardInterrupt:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        print("KeyboardInterrupt", flush=True)
"""


class TestSecondCtrlC:
    # (Not "shielded,sleep": the second task's cleanup may not have started when the
    # run is abandoned, and Python runs it when it collects the coroutine at exit,
    # where its time.sleep(600) would hang again.)
    @pytest.mark.parametrize("modes", ["sleep", "shielded", "sleep,shielded", "shielded,shielded"])
    def test_a_second_ctrl_c_ends_a_hanging_cleanup(
        self, child: Callable[..., Child], modes: str
    ) -> None:
        proc = child(HANGING_CLEANUP, modes)
        proc.expect("ready")
        proc.interrupt()
        # The first cleanup hangs (a blocking one blocks the whole loop: the other
        # task's cleanup may not even start).
        proc.expect("cleanup ")
        proc.interrupt()
        code, lines, err = proc.finish()
        assert code == 0, err
        # (The KeyboardInterrupt may cut a print short: "cleanupKeyboardInterrupt".)
        assert any(line.endswith("KeyboardInterrupt") for line in lines), lines
        assert "cleanup done" not in lines

    def test_the_second_ctrl_c_may_come_before_the_first_is_handled(
        self, child: Callable[..., Child]
    ) -> None:
        program = """
            import os, signal
            import plait

            async def main():
                try:
                    print("ready", flush=True)
                    # Both arrive while plait's code runs (os.kill is C, called by the
                    # loop): the first only sets the flag, the second raises at once.
                    loop = plait.lowlevel.current_loop()
                    loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
                    loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
                    await plait.sleep_forever()
                finally:
                    print("finally", flush=True)

            try:
                plait.run(main)
            except KeyboardInterrupt:
                print("KeyboardInterrupt", flush=True)
        """
        proc = child(program)
        code, lines, err = proc.finish()
        assert code == 0, err
        # No waiting for main's finally: it only runs when Python collects the
        # abandoned coroutine, at exit.
        assert lines[:2] == ["ready", "KeyboardInterrupt"], lines


SIGINT_RECEIVER = """
    import os, signal, sys
    import plait

    async def main():
        try:
            with plait.open_signal_receiver(signal.SIGINT) as signals:
                print("ready", flush=True)
                if sys.argv[1] == "unconsumed":
                    os.kill(os.getpid(), signal.SIGINT)  # left for the handler before
                else:
                    count = 0
                    async for signum in signals:
                        count += 1
                        print("got", signal.Signals(signum).name, count, flush=True)
                        if count == 3:
                            break
            handler = signal.getsignal(signal.SIGINT)
            print("handler", handler.__qualname__.split(".")[-1], flush=True)
            await plait.sleep_forever() if sys.argv[1] == "unconsumed" else None
        finally:
            print("finally", flush=True)
        return "returned"

    try:
        print(plait.run(main), flush=True)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
"""


class TestSigintReceiver:
    def test_a_receiver_gets_sigint_instead_of_keyboard_interrupt(
        self, child: Callable[..., Child]
    ) -> None:
        proc = child(SIGINT_RECEIVER, "consume")
        proc.expect("ready")
        for i in (1, 2, 3):  # the second and third are no "second Ctrl-C" either
            proc.interrupt()
            assert proc.expect("got ") == f"got SIGINT {i}"
        code, lines, err = proc.finish()
        assert code == 0, err
        assert lines[-3:] == ["handler on_sigint", "finally", "returned"], lines

    def test_an_unconsumed_sigint_goes_back_to_plait_s_handler(
        self, child: Callable[..., Child]
    ) -> None:
        proc = child(SIGINT_RECEIVER, "unconsumed")
        code, lines, err = proc.finish()
        assert code == 0, err
        assert lines == ["ready", "handler on_sigint", "finally", "KeyboardInterrupt"], err
