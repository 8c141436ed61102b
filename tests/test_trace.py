"""plait.trace.Tracer: the timeline of a known program, as Perfetto JSON, as an HTML
page, and as a summary (issue 9)."""

from __future__ import annotations

import json
import re
import time

import plait
from helpers import open_in_chromium
from plait.trace import Tracer


async def known_program():
    """ping and pong hand a token back and forth 3 times through events; a thread job;
    a short sleep (the loop waits for I/O)."""
    ping_turn, pong_turn = plait.Event(), plait.Event()

    async def ping():
        nonlocal ping_turn
        for _ in range(3):
            pong_turn.set()
            await ping_turn.wait()
            ping_turn = plait.Event()

    async def pong():
        nonlocal pong_turn
        for _ in range(3):
            await pong_turn.wait()
            pong_turn = plait.Event()
            ping_turn.set()

    async with plait.TaskGroup() as tg:
        tg.spawn(pong, name="pong")
        tg.spawn(ping, name="ping")
    await plait.to_thread.run_sync(time.sleep, 0.001)
    await plait.sleep(0.002)


def traced() -> Tracer:
    tracer = Tracer()
    plait.run(known_program, instruments=[tracer], name="main")
    return tracer


def test_the_trace_of_a_known_program():
    tracer = traced()
    events = tracer.events()
    names = {
        e["tid"]: e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == 1
    }
    by_name = {name.split(" #")[0]: tid for tid, name in names.items()}
    assert {"main", "ping", "pong", "loop: waiting for I/O"} <= set(by_name)
    steps = [e for e in events if e["ph"] == "X" and e["cat"] == "step"]
    per_task = {tid: sum(1 for e in steps if e["tid"] == tid) for tid in names}
    assert per_task[by_name["ping"]] >= 4 and per_task[by_name["pong"]] >= 4
    assert all(e["dur"] > 0 for e in steps)
    # who woke whom: ping's event.set() wakes pong and the other way round
    flows = {}
    for e in events:
        if e["ph"] in ("s", "f"):
            flows.setdefault(e["id"], {})[e["ph"]] = e
    pairs = [(f["s"]["tid"], f["f"]["tid"]) for f in flows.values()]
    assert (by_name["ping"], by_name["pong"]) in pairs
    assert (by_name["pong"], by_name["ping"]) in pairs
    assert all(f["f"]["ts"] >= f["s"]["ts"] for f in flows.values())
    # the loop waited for I/O (the sleep), a thread job ran for main
    waits = [e for e in events if e.get("cat") == "io"]
    assert any(e["dur"] >= 1000 for e in waits)  # the 2 ms sleep, in microseconds
    [job] = [e for e in events if e["ph"] == "X" and e["pid"] == 2]
    assert job["name"] == "thread: sleep" and job["args"]["task"].startswith("main #")
    exits = {e["tid"]: e["name"] for e in events if e["ph"] == "i"}
    assert exits[by_name["ping"]] == "exit: returned"


def test_perfetto_file_and_summary(tmp_path):
    tracer = traced()
    path = tmp_path / "trace.json"
    tracer.write_perfetto(path)
    loaded = json.loads(path.read_text())
    assert loaded["displayTimeUnit"] == "ms" and loaded["traceEvents"] == json.loads(
        json.dumps(tracer.events())
    )
    summary = tracer.summary()
    assert summary.startswith("plait trace: ")
    assert re.search(r"^ping #\d+ +\d+ ", summary, re.MULTILINE)
    assert "thread" in summary and "longest steps:" in summary
    tracer.clear()
    assert tracer.events()[3:] == []  # only the process and loop names are left


def test_the_html_timeline_is_one_self_contained_file(tmp_path):
    tracer = traced()
    path = tmp_path / "timeline.html"
    tracer.write_html(path, title="known <program>")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>known &lt;program&gt;</title>" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page), "nothing to fetch"
    data = json.loads(re.search(r'<script id="data"[^>]*>(.*?)</script>', page, re.S)[1])
    assert [row["name"] for row in data["rows"]][:3] == ["main", "pong", "ping"]
    assert len(data["steps"]) == len(tracer._steps) and data["io"] and data["jobs"]
    assert data["jobs"][0][:2] == ["thread", "sleep"]


def test_a_tracer_records_runs_one_after_the_other():
    tracer = Tracer()
    plait.run(plait.checkpoint, instruments=[tracer], name="first")
    plait.run(plait.checkpoint, instruments=[tracer], name="second")
    tasks = [
        e["args"]["name"]
        for e in tracer.events()
        if e["ph"] == "M" and e["name"] == "thread_name" and e.get("tid")
    ]
    assert any(n.startswith("first #") for n in tasks)
    assert any(n.startswith("second #") for n in tasks)


def test_the_html_timeline_renders_in_a_headless_browser(tmp_path):
    """The page opened by a real headless Chromium: its script runs to the end (it
    marks the body with the number of rows it drew) with no JavaScript error."""
    tracer = traced()
    path = tmp_path / "timeline.html"
    tracer.write_html(path)
    dom = open_in_chromium(path, tmp_path)
    rows = len(tracer._tasks) + 2  # tasks, the loop's I/O row, one row of thread jobs
    assert f'<body data-rendered="{rows}">' in dom


def test_a_timeline_of_thousands_of_tasks_scrolls_its_rows(tmp_path):
    """3,000 rows of 18 px would need a canvas taller than a browser draws (32,767 px
    in Chromium): the canvas is the window's height and shows the rows in view."""

    async def many():
        async with plait.TaskGroup() as tg:
            for _ in range(3000):
                tg.spawn(plait.checkpoint)

    tracer = Tracer()
    plait.run(many, instruments=[tracer])
    path = tmp_path / "many.html"
    tracer.write_html(path)
    dom = open_in_chromium(path, tmp_path)
    assert '<body data-rendered="3002">' in dom  # 3,001 tasks and the I/O row
    height = int(re.search(r'<canvas id="timeline" width="\d+" height="(\d+)"', dom)[1])
    assert 100 <= height <= 2000
    spacer = int(re.search(r'<div id="spacer" style="height: (\d+)px;', dom)[1])
    assert height + spacer == 22 + 3002 * 18 + 10  # the whole height, to scroll through


def test_a_tracer_added_while_running_records_the_tasks_it_sees():
    tracer = Tracer()

    async def main():
        release = plait.Event()

        async def early():
            await release.wait()
            await plait.checkpoint()

        async with plait.TaskGroup() as tg:
            tg.spawn(early, name="early")
            await plait.testing.wait_all_tasks_blocked()
            plait.lowlevel.add_instrument(tracer)
            release.set()
        plait.lowlevel.remove_instrument(tracer)
        await plait.checkpoint()  # not recorded

    plait.run(main)
    # main's steps began or ended without the tracer; early's two steps are recorded.
    timeline = tracer._timeline()
    assert [row["name"] for row in timeline["rows"]] == ["early"]
    assert [step[0] for step in timeline["steps"]] == [0, 0]
