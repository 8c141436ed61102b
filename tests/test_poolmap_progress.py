"""``Pool.map(..., progress=True)``: the progress bar (``plait._poolmap.ProgressBar``).

Its drawing on its own (a fake clock and a fake terminal: an ``io.StringIO`` whose
``isatty()`` is True), then through ``plait.ThreadPool`` maps with the stream set by
the module hook ``_poolmap.PROGRESS_STREAM``: the last line drawn and how it ends when
the map ends normally, by an error, by ``break``, by ``aclose`` and by cancellation; the
one summary line off a terminal; streams that are missing or closed; validation.

Determinism: rates and times come from the real clock in the map tests, so those are
matched with patterns; the counts are exact. A gated call waits for a
``threading.Event`` that only the test sets, polling ``from_thread.check_cancelled()``
(how a thread notices cancellation), and tells the loop it started (a ``plait.Event``).
"""

from __future__ import annotations

import collections
import io
import os
import re
import sys
import threading

import pytest

import plait
from plait import _poolmap
from plait._poolmap import REDRAW_INTERVAL, ProgressBar
from plait.abc import MapProgress
from plait.testing import wait_all_tasks_blocked
from test_refcycles import run_no_gc

POLL = 0.001  # how often a gated thread call checks whether it was cancelled
TIME = r"\d+\.\ds"
RATE = r"(-|\d+(\.\d)?)/s"


class Boom(Exception):
    pass


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def last_line(text):
    """What a terminal shows last: the text after the last carriage return."""
    return text.rsplit("\r", 1)[-1]


def bar(stream, clock):
    return ProgressBar("f", stream=stream, clock=clock)


class TestDrawing:
    def test_line_with_total(self):
        clock, tty = FakeClock(), FakeTTY()
        b = bar(tty, clock)
        clock.now += 2.0
        b.update(MapProgress(done=45, submitted=50, total=100))
        assert tty.getvalue() == "\rmap f: [#########...........]  45/100  45%  22.5/s  eta 2.4s"

    def test_line_without_total(self):
        clock, tty = FakeClock(), FakeTTY()
        b = bar(tty, clock)
        clock.now += 0.5
        b.update(MapProgress(done=300, submitted=301, total=None))
        assert tty.getvalue() == "\rmap f: 300 done  600/s"
        b.finish(MapProgress(300, 301, None), "done")
        assert last_line(tty.getvalue()) == "map f: 300 done  600/s  in 0.5s\n"

    def test_first_update_before_any_result(self):
        clock, tty = FakeClock(), FakeTTY()
        bar(tty, clock).update(MapProgress(done=0, submitted=4, total=10))
        assert tty.getvalue() == "\rmap f: [....................]  0/10   0%  -/s  eta ?"

    def test_redrawn_at_most_every_interval_and_at_the_end(self):
        clock, tty = FakeClock(), FakeTTY()
        b = bar(tty, clock)
        for done in range(1, 11):
            b.update(MapProgress(done, done, 10))
            clock.now += REDRAW_INTERVAL / 4
        assert tty.getvalue().count("\r") == 3  # at 1, 5 and 9 (each 0.1 s apart)
        assert last_line(tty.getvalue()).startswith("map f: [##################..]  9/10")
        clock.now = 102.5
        b.finish(MapProgress(10, 10, 10), "done")
        final = last_line(tty.getvalue())
        assert final.endswith("\n")
        assert final.rstrip() == "map f: [####################] 10/10 100%  4.0/s  in 2.5s"
        b.update(MapProgress(11, 11, 10))  # after the end: nothing more
        b.finish(MapProgress(11, 11, 10), "done")
        assert last_line(tty.getvalue()) == final

    def test_a_shorter_redraw_pads_over_the_longer_line(self):
        clock, tty = FakeClock(), FakeTTY()
        b = bar(tty, clock)
        clock.now += 65
        b.update(MapProgress(1, 1, 2))
        clock.now += 1
        b.update(MapProgress(2, 2, 2))
        first, second = tty.getvalue().split("\r")[1:]
        assert first.endswith("  eta 1m05s")
        assert second.endswith("  eta 0.0s ") and len(second) == len(first)
        b.finish(MapProgress(2, 2, 2), "done")
        assert last_line(tty.getvalue()).endswith("  in 1m06s\n")

    def test_long_names_are_cut_and_the_line_fits_80_columns(self):
        tty = FakeTTY()
        b = ProgressBar("x" * 100, stream=tty, clock=FakeClock())
        b.finish(MapProgress(10**8, 10**8, 10**8), "cancelled")
        line = last_line(tty.getvalue())
        assert "x" * 39 + "\u2026" in line
        assert line.endswith("\n") and len(line) <= 80

    @pytest.mark.parametrize("columns", [60, 0])
    def test_narrow_terminal_loses_the_bar_first(self, monkeypatch, columns):
        class Terminal(FakeTTY):
            def fileno(self):
                return 2

        size = os.terminal_size((columns, 24))
        monkeypatch.setattr(os, "get_terminal_size", lambda fd: size)
        tty = Terminal()
        b = ProgressBar("collatz_steps", stream=tty, clock=FakeClock())
        b.finish(MapProgress(5, 5, 40), "stopped")
        line = last_line(tty.getvalue())
        if columns:  # 59 columns: no room for the bar
            assert line == "map collatz_steps:  5/40  12%  -/s  stopped after 0.0s\n"
        else:  # a terminal that does not know its size: 80 columns
            assert line.startswith("map collatz_steps: [##..................]  5/40  12%")

    def test_summary_off_a_terminal(self):
        clock, log = FakeClock(), io.StringIO()
        b = bar(log, clock)
        for done in range(1, 101):
            b.update(MapProgress(done, done, 100))
        assert log.getvalue() == ""  # nothing per step
        clock.now += 3.2
        b.finish(MapProgress(100, 100, 100), "done")
        assert log.getvalue() == "map f: 100 done in 3.2s (31.2/s)\n"

    def test_summaries_of_maps_that_did_not_finish(self):
        for total, outcome, expected in [
            (100, "failed", "map f: 45 of 100 done, failed after 1m15s\n"),
            (None, "stopped", "map f: 45 done, stopped after 1m15s\n"),
            (100, "cancelled", "map f: 45 of 100 done, cancelled after 1m15s\n"),
        ]:
            clock, log = FakeClock(), io.StringIO()
            b = bar(log, clock)
            clock.now += 75
            b.finish(MapProgress(45, 50, total), outcome)
            assert log.getvalue() == expected


class BrokenStream(FakeTTY):
    def write(self, text):
        raise OSError(32, "Broken pipe")


class NoTTY(io.StringIO):
    def isatty(self):
        raise ValueError("I/O operation on closed file")


class TestStreamsThatCannotBeWritten:
    @pytest.mark.parametrize("make", [BrokenStream, NoTTY])
    def test_never_raises(self, make):
        b = bar(make(), FakeClock())
        b.update(MapProgress(1, 1, 2))
        b.finish(MapProgress(2, 2, 2), "done")
        assert b.finished

    def test_closed_stream(self):
        tty = FakeTTY()
        tty.close()
        b = bar(tty, FakeClock())
        b.update(MapProgress(1, 1, 2))
        b.finish(MapProgress(2, 2, 2), "failed")

    def test_map_with_stderr_none_or_closed(self, monkeypatch):
        closed = FakeTTY()
        closed.close()
        for stderr in (None, closed):
            monkeypatch.setattr(sys, "stderr", stderr)

            async def main():
                async with plait.ThreadPool(2) as pool:
                    return [x async for x in pool.map(abs, [-1, -2, -3], progress=True)]

            assert plait.run(main) == [1, 2, 3]


def make_work(free=(0,), fail=()):
    """``work(x)``: returns ``x * 10`` at once for ``x`` in ``free``, raises ``Boom``
    for ``x`` in ``fail``, and otherwise waits for ``gate`` (polling for cancellation).
    ``started[x]`` is set on the loop when call ``x`` has started."""
    gate = threading.Event()
    started = collections.defaultdict(plait.Event)

    def work(x):
        plait.from_thread.run_sync(started[x].set)
        if x in fail:
            raise Boom(x)
        if x not in free:
            while not gate.wait(POLL):
                plait.from_thread.check_cancelled()
        return x * 10

    return work, gate, started


@pytest.fixture
def tty(monkeypatch):
    stream = FakeTTY()
    monkeypatch.setattr(_poolmap, "PROGRESS_STREAM", stream)
    return stream


@pytest.fixture
def log(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(_poolmap, "PROGRESS_STREAM", stream)
    return stream


class TestMapOnATerminal:
    def test_normal_end(self, tty):
        def double(x):
            return 2 * x

        async def main():
            async with plait.ThreadPool(2) as pool:
                return [x async for x in pool.map(double, range(10), progress=True)]

        assert plait.run(main) == [2 * x for x in range(10)]
        text = tty.getvalue()
        assert text.startswith("\rmap double: [")
        assert text.count("\n") == 1 and text.endswith("\n")
        pattern = rf"map double: \[#{{20}}\] 10/10 100%  {RATE}  in {TIME} *\n"
        assert re.fullmatch(pattern, last_line(text))

    def test_unknown_total(self, tty):
        async def main():
            async with plait.ThreadPool(2) as pool:
                items = (x for x in range(5))
                return [x async for x in pool.map(abs, items, progress=True)]

        assert plait.run(main) == list(range(5))
        assert re.fullmatch(rf"map abs: 5 done  {RATE}  in {TIME} *\n", last_line(tty.getvalue()))

    def test_break_ends_the_line_at_once(self, tty):
        work, gate, _ = make_work()

        async def main():
            async with plait.ThreadPool(2) as pool:
                async for _ in pool.map(work, range(10), progress=True):
                    break
                text = tty.getvalue()  # the map was dropped: its line is finished
                gate.set()
                return text

        text = plait.run(main)
        pattern = rf"map work: \[##\.{{18}}\]  1/10  10%  {RATE}  stopped after {TIME} *\n"
        assert re.fullmatch(pattern, last_line(text))
        assert tty.getvalue() == text  # calls that ended afterwards drew nothing

    def test_aclose(self, tty):
        work, gate, _ = make_work()

        async def main():
            async with plait.ThreadPool(2) as pool:
                async with pool.map(work, range(10), progress=True) as it:
                    assert await it.__anext__() == 0
                    gate.set()

        plait.run(main)
        text = tty.getvalue()
        assert text.count("\n") == 1
        assert re.fullmatch(rf"map work: .* stopped after {TIME} *\n", last_line(text))
        assert re.search(r"\] +\d/10 ", last_line(text))  # at most 1 + read_ahead done

    def test_error(self, tty):
        work, _, _ = make_work(fail=(1,))

        async def main():
            async with plait.ThreadPool(2) as pool:
                return [x async for x in pool.map(work, range(10), progress=True)]

        with pytest.raises(Boom):
            plait.run(main)
        text = tty.getvalue()
        pattern = rf"map work: \[##\.{{18}}\]  1/10  10%  {RATE}  failed after {TIME} *\n"
        assert text.count("\n") == 1
        assert re.fullmatch(pattern, last_line(text))

    def test_cancelled(self, tty):
        work, _, started = make_work()

        async def consume(pool, task_status=plait.TASK_STATUS_IGNORED):
            with plait.CancelScope() as scope:
                it = pool.map(work, range(10), progress=True)  # its calls are in scope
                task_status.started((scope, it))
                async for _ in it:
                    pass

        async def main():
            async with plait.ThreadPool(2) as pool:
                async with plait.TaskGroup() as tg:
                    scope, it = await tg.start(consume, pool)
                    await started[1].wait()
                    await started[2].wait()  # so call 0 has given back its worker
                    await wait_all_tasks_blocked()
                    assert it.progress().done == 1
                    scope.cancel()
                assert scope.cancelled_caught

        plait.run(main)
        text = tty.getvalue()
        pattern = rf"map work: \[##\.{{18}}\]  1/10  10%  {RATE}  cancelled after {TIME} *\n"
        assert text.count("\n") == 1
        assert re.fullmatch(pattern, last_line(text))

    def test_default_stream_is_stderr_when_the_map_is_made(self, monkeypatch):
        monkeypatch.setattr(_poolmap, "PROGRESS_STREAM", None)
        fake = FakeTTY()
        monkeypatch.setattr(sys, "stderr", fake)

        async def main():
            async with plait.ThreadPool(1) as pool:
                return [x async for x in pool.map(abs, [-1], progress=True)]

        assert plait.run(main) == [1]
        assert re.fullmatch(
            rf"map abs: \[#{{20}}\] 1/1 100%  {RATE}  in {TIME} *\n", last_line(fake.getvalue())
        )


class TestMapOffATerminal:
    def test_a_map_never_started_writes_nothing(self, log):
        async def main():
            async with plait.ThreadPool(1) as pool:
                pool.map(abs, [1, 2], progress=True)  # dropped at once
                async with pool.map(abs, [1, 2], progress=True):
                    pass

        plait.run(main)
        assert log.getvalue() == ""

    def test_empty_iterable(self, log):
        async def main():
            async with plait.ThreadPool(1) as pool:
                return [x async for x in pool.map(abs, [], progress=True)]

        assert plait.run(main) == []
        assert re.fullmatch(rf"map abs: 0 done in {TIME}\n", log.getvalue())

    def test_one_summary_line(self, log):
        async def main():
            async with plait.ThreadPool(2) as pool:
                return [x async for x in pool.map(abs, range(100), progress=True)]

        assert plait.run(main) == list(range(100))
        assert re.fullmatch(rf"map abs: 100 done in {TIME}( \({RATE}\))?\n", log.getvalue())

    def test_summary_of_a_failed_map(self, log):
        work, _, _ = make_work(fail=(1,))

        async def main():
            async with plait.ThreadPool(2) as pool:
                return [x async for x in pool.map(work, range(10), progress=True)]

        with pytest.raises(Boom):
            plait.run(main)
        assert re.fullmatch(rf"map work: 1 of 10 done, failed after {TIME}\n", log.getvalue())


class TestValidation:
    def test_false_is_none(self, tty):
        async def main():
            async with plait.ThreadPool(1) as pool:
                it = pool.map(abs, [-1, -2], progress=False)
                return [x async for x in it], it.progress()

        assert plait.run(main) == ([1, 2], MapProgress(2, 2, 2))
        assert tty.getvalue() == ""

    @pytest.mark.parametrize("bad", [1, 0, "yes", object()])
    def test_anything_else_is_a_type_error(self, bad):
        async def main():
            async with plait.ThreadPool(1) as pool:
                with pytest.raises(TypeError, match=r"progress must be .* True .*got"):
                    pool.map(abs, [1], progress=bad)

        plait.run(main)

    def test_a_callback_still_draws_nothing(self, tty):
        seen = []

        async def main():
            async with plait.ThreadPool(1) as pool:
                return [x async for x in pool.map(abs, [-1, -2], progress=seen.append)]

        assert plait.run(main) == [1, 2]
        assert [p.done for p in seen] == [1, 2]
        assert tty.getvalue() == ""


class TestNoReferenceCycles:
    def test_maps_with_a_bar_are_freed(self, tty):
        async def main(track):
            def fn(x):
                if x == 3:
                    raise track("error of a call", Boom(3))
                return x

            async with plait.ThreadPool(2) as pool:
                it = track("finished map", pool.map(fn, range(3), progress=True))
                assert [x async for x in it] == [0, 1, 2]
                del it
                with pytest.raises(Boom):
                    [x async for x in pool.map(fn, range(10), progress=True)]
                async for _ in pool.map(abs, range(10), progress=True):
                    break
            track("main task", plait.current_task())

        run_no_gc(main)
        assert tty.getvalue().count("\n") == 3
