"""``plait demo`` (``make demo``): a short run ends with a summary of every part and no
errors, writes a timeline that a real headless Chromium renders, and refuses bad knobs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import plait
from helpers import child_env, open_in_chromium
from plait._demo import Stats, Store, percentile


def plait_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plait", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=child_env(),
    )


@pytest.mark.timeout(180)
def test_a_short_demo_reports_every_part_and_writes_a_timeline(tmp_path: Path) -> None:
    done = plait_demo(
        "--clients", "60", "--duration", "2.5", "--jobs", "2", "--trace-at", "1", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "errors: none" in out
    counts = {
        name: int(count.replace(",", ""))
        for name, count in re.findall(r"^\s+(\S[\w. -]*?)\s{2,}([\d,]+) \w+", out, re.MULTILINE)
    }
    for part in (
        "TCP key-value service",
        "process pool",
        "cancellation",
        "threads",
        "subprocesses",
        "plait.sched",
        "async generators",
    ):
        assert counts.get(part, 0) > 0, (part, out)
    assert "60 clients" in out and "p99" in out
    trace = tmp_path / "plait-demo-trace.html"  # the default name, in the current directory
    assert trace.exists() and f"open {trace.as_uri()}" in out
    dom = open_in_chromium(trace, tmp_path)
    rows = int(re.search(r'<body data-rendered="(\d+)">', dom)[1])
    assert rows > 60  # (clients, handlers, the demo's own tasks, the I/O row)


def test_help_lists_the_knobs(tmp_path: Path) -> None:
    done = plait_demo("--help", cwd=tmp_path)
    assert done.returncode == 0
    for knob in ("--clients", "--duration", "--jobs", "--trace"):
        assert knob in done.stdout


@pytest.mark.parametrize(
    "args", [["--clients", "0"], ["--jobs", "0"], ["--duration", "0"], ["--duration", "nan"]]
)
def test_bad_knobs_are_refused(tmp_path: Path, args: list[str]) -> None:
    done = plait_demo(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "--clients and --jobs must be >= 1, --duration > 0" in done.stderr
    assert not (tmp_path / "plait-demo-trace.html").exists()


def test_the_service_answers_each_command() -> None:
    async def main() -> list[bytes]:
        store = Store(Stats())
        async with plait.TaskGroup() as tg:
            listeners = await tg.start(plait.serve_tcp, store.handle, 0, "127.0.0.1")
            stream = await plait.open_tcp_stream("127.0.0.1", listeners[0].port)
            replies = []
            for request in (b"GET a\n", b"SET a 1\n", b"GET a\n", b"BOGUS\n"):
                await stream.send_all(request)
                replies.append(await stream.receive_until(b"\n"))
            await stream.aclose()
            assert store.changes.qsize() == 1  # the SET, for the audit trail
            tg.cancel_scope.cancel()
        return replies

    assert plait.run(main) == [
        b"NONE\n",
        b"OK\n",
        b"VALUE 1\n",
        b"ERROR unknown command 'BOGUS'\n",
    ]


def test_percentile() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 51.0 and percentile(values, 99) == 100.0
    assert percentile([], 50) != percentile([], 50)  # NaN: no requests, no latency
