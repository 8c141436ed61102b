"""How process-pool workers start and stop, seen from a separate parent process: a
parent run with warnings as errors (``-W error``, passed on to the workers) and in
development mode (``-X dev``, which reports unclosed resources) must work and leave
nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PARENT = textwrap.dedent(
    """
    import plait

    def init(tag):
        global TAG
        TAG = tag

    async def main():
        async with plait.ProcessPool(2, initializer=init, initargs=("t",)) as pool:
            first = await pool.run_sync(lambda x: x * 2, 21)
            squares = [s async for s in pool.map(lambda x: x * x, range(6))]
            retired = plait.ProcessPool(1, max_tasks_per_worker=1)
            async with retired:
                pids = {await retired.run_sync(__import__("os").getpid) for _ in range(3)}
        print(first, squares, len(pids))

    plait.run(main)
    """
)


def run_parent(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", PARENT],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


class TestStrictParents:
    def test_warnings_as_errors(self) -> None:
        done = run_parent("-W", "error")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["42", "[0,", "1,", "4,", "9,", "16,", "25]", "3"]
        assert done.stderr == ""

    def test_development_mode_reports_nothing_unclosed(self) -> None:
        done = run_parent("-X", "dev", "-W", "error::ResourceWarning")
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith("3\n")
        assert done.stderr == ""
