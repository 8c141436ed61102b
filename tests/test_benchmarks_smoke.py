"""Smoke test of the benchmark harness (benchmarks/): a --quick run with one repetition on
every runtime writes a report with one row per workload and runtime. Runtimes that cannot
run here (uvloop/trio not installed, plait.run not written yet) must show up as such."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# uvloop runs the asyncio implementations on another loop (the full runs cover it): left
# out here to keep CI under 20 minutes.
RUNTIMES = ("plait", "asyncio", "trio")
WORKLOADS = (
    *("spawn_join", "checkpoints", "timers", "queue_ping_pong", "idle_task_bytes"),
    *("tcp_echo", "tcp_echo_lowlevel", "tcp_bulk", "tcp_bulk_lowlevel", "tcp_conn_bytes"),
    *("to_thread", "thread_queue_baseline", "portal_submit", "executor_submit_baseline"),
    *("gil_scaling_hash", "gil_scaling_python"),
    *("process_call", "process_call_baseline", "process_call_concurrent", "process_bulk"),
    "process_bulk_numpy",
    "process_cpu_scaling",
    *(
        (
            *("cluster_calls", "cluster_calls_baseline"),
            *("cluster_calls_local", "cluster_calls_local_baseline"),
        )
        if importlib.util.find_spec("distributed")
        else ()
    ),
)
"""At least these (issues 2, 3, 4, 5, 6 and 7; issue 7's need dask.distributed)."""
NUMBER = re.compile(r"^-?\d+(\.\d+)?[kM]?$")


def runnable(runtime: str) -> bool:
    if runtime == "plait":
        import plait

        return callable(getattr(plait, "run", None))
    return runtime == "asyncio" or importlib.util.find_spec(runtime) is not None


def table_rows(report: str) -> dict[tuple[str, str], list[str]]:
    rows: dict[tuple[str, str], list[str]] = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and cells[0] not in ("workload", ""):
            if cells[0].startswith("---"):
                continue
            rows.setdefault((cells[0], cells[1]), cells)
    return rows


@pytest.mark.timeout(260)
def test_quick_run_reports_every_workload_and_runtime(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--reps", "1"]
    cmd += ["--runtimes", ",".join(RUNTIMES), "--write", str(out)]
    # 78 measurement subprocesses (12 start a dask cluster, 3 s each): about a minute
    # on an idle 2-core machine, more when loaded
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=250, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = out.read_text()
    assert "python -m benchmarks --quick --reps 1" in report
    assert "| repetitions | 1 per workload and runtime" in report
    rows = table_rows(report)
    workloads = {w for w, _ in rows}
    assert set(WORKLOADS) <= workloads, sorted(workloads)
    for workload in workloads:
        for runtime in RUNTIMES:
            assert (workload, runtime) in rows, f"no row for {workload} on {runtime}"
            median = rows[workload, runtime][2]
            if runnable(runtime):
                assert NUMBER.match(median), f"{workload} on {runtime}: {median}"
            else:
                assert median.startswith(("not installed", "not available")), median
    # the table also goes to stdout
    assert "| spawn_join | asyncio |" in proc.stdout
