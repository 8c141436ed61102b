"""The plait command: plait run (with its traces), plait ps and plait pstree against a
live child process with the monitor on (issue 9)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import plait
from plait._cli import main as cli
from plait._monitor import socket_path

SRC = str(Path(plait.__file__).resolve().parent.parent)

SCRIPT = """
    import sys
    import plait

    async def main():
        async with plait.TaskGroup() as tg:
            for i in range(3):
                tg.spawn(plait.sleep, 0.001 * i, name=f"worker-{i}")
        print("args", sys.argv[1:])

    if __name__ == "__main__":
        raise SystemExit("plait run must not run the __main__ block")
"""


def plait_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "plait", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def test_plait_run_a_script_with_its_traces(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    html, trace = tmp_path / "t.html", tmp_path / "t.json"
    done = plait_cmd(
        "run", "--trace", str(html), "--perfetto", str(trace), "--slow-step", "5",
        str(script), "one", "--two",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "args ['one', '--two']\n"
    assert "timeline written to" in done.stderr
    names = {
        e["args"]["name"].split(" #")[0]
        for e in json.loads(trace.read_text())["traceEvents"]
        if e["name"] == "thread_name"
    }
    assert {"main", "worker-0", "worker-1", "worker-2"} <= names
    assert "<canvas" in html.read_text()


def test_plait_run_a_module(tmp_path):
    (tmp_path / "appmod.py").write_text(textwrap.dedent(SCRIPT))
    done = plait_cmd(
        "run", "-m", "appmod", "x", env={"PYTHONPATH": f"{SRC}{os.pathsep}{tmp_path}"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "args ['x']\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "has no main(): define async def main() in it"),
        ("def main():\n    pass\n", "not an async function: define it with async def"),
    ],
)
def test_plait_run_bad_scripts(tmp_path, monkeypatch, source, message):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # (plait run sets them)
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "bad.py"
    script.write_text(source)
    with pytest.raises(SystemExit, match=re.escape(message)):
        cli(["run", str(script)])


def test_plait_run_without_a_script(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit, match="name a script to run"):
        cli(["run"])
    with pytest.raises(SystemExit, match="no such file"):
        cli(["run", str(tmp_path / "missing.py")])


LIVE = """
    import sys
    import plait

    async def main():
        gate = plait.Event()

        async def waiter():
            await gate.wait()

        async with plait.TaskGroup() as tg:
            tg.spawn(waiter, name="waiter-a")
            tg.spawn(waiter, name="waiter-b")
            print("ready", flush=True)
            await plait.to_thread.run_sync(sys.stdin.readline)
            gate.set()

    plait.run(main, name="main")
    print("done", flush=True)
"""


def test_plait_ps_and_pstree_against_a_live_child(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC, PLAIT_MONITOR="1")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LIVE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        path = socket_path(child.pid)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        ps = plait_cmd("ps", str(child.pid))
        assert ps.returncode == 0, ps.stderr
        lines = ps.stdout.splitlines()
        assert lines[0].split() == ["ID", "STATE", "NAME", "WAITING", "ON"]
        rows = {line.split()[2]: line for line in lines[1:]}
        assert "waiting" in rows["waiter-a"] and "Event.wait(" in rows["waiter-a"]
        assert "to_thread_run_sync(" in rows["main"]
        tree = plait_cmd("pstree", str(child.pid))
        assert tree.returncode == 0, tree.stderr
        assert tree.stdout.startswith("main (#")
        assert "├─ waiter-a (#" in tree.stdout and "└─ waiter-b (#" in tree.stdout
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        assert child.wait(30) == 0
        assert not os.path.exists(path), "the monitor's socket is removed when the run ends"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


def test_plait_ps_without_a_monitor():
    done = plait_cmd("ps", str(os.getpid()))
    assert done.returncode == 1
    assert "no plait monitor for process" in done.stderr and "monitor=True" in done.stderr


def test_the_monitor_in_process():
    from plait._monitor import ask

    async def main():
        async def idle():
            await plait.sleep_forever()

        async with plait.TaskGroup() as tg:
            tg.spawn(idle, name="idle")
            await plait.testing.wait_all_tasks_blocked()
            answer = await plait.to_thread.run_sync(ask, os.getpid(), "ps")
            bad = await plait.to_thread.run_sync(ask, os.getpid(), "nonsense")
            tg.cancel_scope.cancel()
        return answer, bad

    answer, bad = plait.run(main, name="main", monitor=True)
    assert "idle" in answer and "sleep_forever()" in answer
    assert bad.startswith("error: unknown request 'nonsense'")
    assert not os.path.exists(socket_path(os.getpid()))
    with pytest.raises(TypeError, match="monitor must be True, False or None"):
        plait.run(main, monitor="yes")
