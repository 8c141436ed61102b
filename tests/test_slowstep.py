"""Blocking detection: plait.run(main, slow_step=...) logs a task step that runs too
long, with the stack where it was blocking (issue 9)."""

from __future__ import annotations

import logging
import time

import pytest

import plait
from helpers import isolated
from plait._core._slowstep import SlowStepDetector


def detector() -> SlowStepDetector:
    [found] = [
        i for i in plait.lowlevel.current_loop()._instruments if isinstance(i, SlowStepDetector)
    ]
    return found


def block_until_sampled() -> None:
    """Blocks the loop (time.sleep) until the watchdog has sampled this step."""
    found = detector()
    deadline = time.monotonic() + 30
    while found._sampled is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the blocking line


BLOCKING_LINE = block_until_sampled.__code__.co_firstlineno + 5


def test_a_blocking_step_is_reported_with_the_line_where_it_blocked(caplog):
    async def main():
        await plait.checkpoint()
        block_until_sampled()
        await plait.checkpoint()
        return "done"

    with caplog.at_level(logging.WARNING, logger="plait.slow"):
        assert plait.run(main, name="blocker", slow_step=0.05) == "done"
    [record] = caplog.records
    text = record.getMessage()
    assert text.startswith("task 'blocker' (#")
    assert "without yielding (slow_step=0.05 s)" in text
    assert "It was blocking here (sampled while it ran)" in text
    assert f'test_slowstep.py", line {BLOCKING_LINE}, in block_until_sampled' in text
    assert "time.sleep(0.01)  # the blocking line" in text
    assert "_run_once" not in text  # only the task's frames


def test_quick_steps_are_not_reported_and_the_watchdog_stops(caplog):
    import threading

    async def main():
        for _ in range(100):
            await plait.checkpoint()
        assert any(t.name == "plait watchdog" for t in threading.enumerate())

    with caplog.at_level(logging.WARNING, logger="plait.slow"):
        plait.run(main, slow_step=10)
    assert caplog.records == []
    assert not any(t.name == "plait watchdog" for t in threading.enumerate())


def case_a_deadlock_is_still_found_with_the_watchdog_running():
    async def main():
        await plait.Event().wait()

    with pytest.raises(plait.Deadlock):
        plait.run(main, slow_step=10)


def test_a_deadlock_is_still_found_with_the_watchdog_running():
    isolated(__file__, "case_a_deadlock_is_still_found_with_the_watchdog_running")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, "more than 0 seconds"),
        (-1, ValueError, "slow_step"),
        ("0.1", TypeError, "slow_step must be a number of seconds"),
        (float("inf"), ValueError, "slow_step"),
    ],
)
def test_bad_thresholds(value, error, match):
    async def main():
        pass

    with pytest.raises(error, match=match):
        plait.run(main, slow_step=value)
