"""plait.testing.explore: classic races are found within the default runs, reported
with a shrunk schedule that replays exactly, and their correct versions pass every run;
the report's contents; the arguments."""

from __future__ import annotations

from typing import Any

import pytest

import plait
from plait.testing import ExploreReport, MockClock, Replay, ScheduleLog, explore

# -- the races, and their correct versions ----------------------------------------------


async def lost_update(locked: bool = False) -> None:
    """Three increments of a shared counter, each reading, yielding, then writing."""
    state = {"n": 0}
    lock = plait.Lock()

    async def increment() -> None:
        await plait.sleep(0.1 * len(state))  # (all start at the same virtual time)
        if locked:
            await lock.acquire()
        n = state["n"]
        await plait.checkpoint()  # e.g. a database round trip
        state["n"] = n + 1
        if locked:
            lock.release()

    async with plait.TaskGroup() as tg:
        for _ in range(3):
            tg.spawn(increment)
    assert state["n"] == 3, f"lost an update: {state['n']} of 3"


async def staggered_lost_update(locked: bool = False) -> None:
    """A lost update that FIFO order never shows: the second increment starts one
    step after the first, so in FIFO order the first has written before the second
    reads. Only another order of a batch shows the race."""
    state = {"n": 0}
    lock = plait.Lock()

    async def increment() -> None:
        async with lock if locked else _nothing():
            n = state["n"]
            await plait.checkpoint()
            state["n"] = n + 1

    async with plait.TaskGroup() as tg:
        tg.spawn(increment, name="first")
        await plait.checkpoint()
        tg.spawn(increment, name="second")
    assert state["n"] == 2, f"lost an update: {state['n']} of 2"


class _nothing:
    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        pass


async def check_then_act(guarded: bool = False) -> None:
    """Two tasks get the same key from a cache; a miss fetches (a virtual sleep) and
    fills it. The check and the act are apart, so both fetch."""
    cache: dict[str, object] = {}
    fetches: list[str] = []
    in_flight: dict[str, plait.Event] = {}

    async def get(key: str) -> object:
        if key not in cache:
            if guarded and key in in_flight:
                await in_flight[key].wait()
            else:
                if guarded:
                    in_flight[key] = plait.Event()
                await plait.sleep(0.01)  # the fetch
                fetches.append(key)
                cache[key] = object()
                if guarded:
                    in_flight.pop(key).set()
        return cache[key]

    async with plait.TaskGroup() as tg:
        tg.spawn(get, "k")
        tg.spawn(get, "k")
    assert fetches == ["k"], f"fetched {len(fetches)} times"


async def lock_order_inversion(same_order: bool = False) -> None:
    a, b = plait.Lock(), plait.Lock()

    async def take(first: plait.Lock, second: plait.Lock) -> None:
        async with first:
            await plait.checkpoint()
            async with second:
                pass

    async with plait.TaskGroup() as tg:
        tg.spawn(take, a, b, name="a_then_b")
        tg.spawn(take, *((a, b) if same_order else (b, a)), name="b_then_a")


class TestRacesAreFound:
    @pytest.mark.parametrize(
        ("fn", "error"),
        [
            (lost_update, AssertionError),
            (staggered_lost_update, AssertionError),
            (check_then_act, AssertionError),
            (lock_order_inversion, plait.Deadlock),
        ],
    )
    def test_found_and_replayed_exactly(self, fn: Any, error: type) -> None:
        report = explore(fn)
        assert report.failed and not report and report.reproducible
        assert report.runs <= 1000 and report.seed == report.runs - 1
        assert isinstance(report.exception, error)
        policy = Replay(report.log)
        with pytest.raises(error):
            plait.run(fn, clock=MockClock(autojump_threshold=0), schedule=policy)
        assert policy.trace == report.trace  # step for step
        assert policy.log == report.log

    @pytest.mark.parametrize(
        "fn", [lost_update, staggered_lost_update, check_then_act, lock_order_inversion]
    )
    def test_the_correct_version_passes_every_run(self, fn: Any) -> None:
        report = explore(fn, True)
        assert not report.failed and report, report
        assert report.runs == 1000 and report.exception is None and report.log is None
        assert str(report) == "explore: all 1000 runs passed (seeds 0 to 999)"

    def test_a_race_fifo_hides_is_shrunk_to_one_decision(self) -> None:
        # FIFO order passes...
        plait.run(staggered_lost_update, clock=MockClock(autojump_threshold=0))
        report = explore(staggered_lost_update)
        # ...so the shrunk log keeps the one reordering that shows the race: the
        # second increment reads before the first one writes.
        assert len(report.log) == 1 and report.log.deviations == 2
        assert len(report.original_log) >= len(report.log)
        first_steps = [i for i, label in enumerate(report.trace) if label == "first#2"]
        assert first_steps[0] < report.trace.index("second#3") < first_steps[1]
        assert "lost an update: 1 of 2" in str(report.exception)

    def test_a_race_fifo_shows_is_shrunk_to_the_fifo_run(self) -> None:
        report = explore(check_then_act)
        assert report.log == ScheduleLog() and report.log.seed == report.seed
        assert "fails in plain FIFO order too" in str(report)

    def test_without_shrinking_the_failing_runs_log_is_kept(self) -> None:
        report = explore(staggered_lost_update, shrink=False)
        assert report.log == report.original_log
        assert len(report.log) >= 1

    def test_a_hang_is_caught_by_a_virtual_timeout(self) -> None:
        async def waits_for_a_reply_that_one_order_loses() -> None:
            reply = plait.Event()
            asked: list[str] = []

            async def server() -> None:
                if asked:  # checks once; a request that comes later is never seen
                    reply.set()

            async def client() -> None:
                asked.append("question")
                with plait.fail_after(60):  # virtual seconds: costs nothing
                    await reply.wait()

            async with plait.TaskGroup() as tg:
                tg.spawn(server)
                tg.spawn(client)

        report = explore(waits_for_a_reply_that_one_order_loses)
        assert report.failed
        assert report.exception is not None
        assert isinstance(report.exception, BaseExceptionGroup)
        assert [type(e) for e in report.exception.exceptions] == [TimeoutError]


def test_a_deadlock_is_found_while_another_thread_lives() -> None:
    """Without a scheduling policy a live thread that plait did not start might call in,
    so plait.run does not declare a deadlock while one lives. Under Seeded and Replay
    the run is a closed world: explore reports the deadlock (in a test process other
    threads are the rule: executors, dask's, earlier tests')."""
    import threading

    release = threading.Event()
    bystander = threading.Thread(target=release.wait, name="bystander")
    bystander.start()
    try:
        report = explore(lock_order_inversion)
    finally:
        release.set()
        bystander.join()
    assert isinstance(report.exception, plait.Deadlock)


class TestReport:
    def test_a_failure_that_does_not_replay_is_reported_as_such(self) -> None:
        calls = []

        async def fails_on_its_third_call() -> None:
            calls.append(None)
            assert len(calls) != 3, "third call"

        report = explore(fails_on_its_third_call)
        assert report.failed and not report.reproducible
        assert report.seed == 2 and str(report.exception).startswith("third call")
        assert "NOT REPRODUCIBLE" in str(report)
        assert report.log == report.original_log

    def test_what_str_says(self) -> None:
        report = explore(staggered_lost_update)
        text = str(report)
        assert text.startswith(f"explore: run {report.runs} failed (Seeded({report.seed}))")
        assert f"plait.testing.Replay({report.log!r})" in text
        # The traceback starts at the explored function (not in explore or plait.run)
        # and shows the failing line.
        assert "Traceback (most recent call last):" in text
        assert 'assert state["n"] == 2' in text
        assert "plait/testing/_explore.py" not in text and "_kernel.py" not in text
        assert f"steps of the replayed run ({len(report.trace)}; '|' between batches):" in text
        assert "staggered_lost_update#1 | staggered_lost_update#1 first#2 | second#3" in text
        steps = text.split("between batches):\n")[1]
        assert report.batch_starts[0] == 0 and steps.count("|") == len(report.batch_starts) - 1
        assert report.traceback in text

    def test_a_deadlock_shows_its_message_not_plaits_frames(self) -> None:
        report = explore(lock_order_inversion)
        assert report.traceback.startswith("plait.Deadlock: deadlock")
        assert "wait-for cycle" in report.traceback

    def test_repr(self) -> None:
        assert repr(explore(lost_update, True, runs=3)) == "<ExploreReport: 3 runs passed>"
        failed = explore(lost_update)
        assert repr(failed).startswith(f"<ExploreReport: run {failed.runs} failed, seed ")

    def test_reports_are_reproducible(self) -> None:
        one, two = explore(staggered_lost_update), explore(staggered_lost_update)
        assert (one.seed, one.log, one.trace) == (two.seed, two.log, two.trace)


class TestArguments:
    def test_runs(self) -> None:
        for bad in (0, -1, 1.5, "10"):
            with pytest.raises(ValueError, match="runs"):
                explore(lost_update, runs=bad)  # type: ignore[arg-type]

    def test_not_a_function(self) -> None:
        with pytest.raises(TypeError, match="async function"):
            explore(42)  # type: ignore[arg-type]

    def test_clock_is_a_factory(self) -> None:
        with pytest.raises(TypeError, match="callable that returns a new clock"):
            explore(lost_update, clock=MockClock())  # type: ignore[arg-type]
        times: list[float] = []

        async def record() -> None:
            await plait.sleep(5)
            times.append(plait.current_time())

        def clock_at_100() -> MockClock:
            clock = MockClock(autojump_threshold=0)
            clock.jump(100)
            return clock

        report = explore(record, runs=2, clock=clock_at_100)
        assert report, report
        assert times == [105, 105]

    def test_arguments_are_passed(self) -> None:
        seen: list[tuple[int, str]] = []

        async def fn(a: int, b: str) -> None:
            seen.append((a, b))

        assert explore(fn, 1, "x", runs=2)
        assert seen == [(1, "x"), (1, "x")]

    def test_other_base_exceptions_stop_explore(self) -> None:
        """A test runner's own exceptions (pytest's outcomes, pytest-timeout's) are
        BaseExceptions: explore must not take one for a failing run and go on."""

        class RunnerTimeout(BaseException):
            pass

        runs = []

        async def timed_out() -> None:
            runs.append(None)
            raise RunnerTimeout

        with pytest.raises(RunnerTimeout):
            explore(timed_out)
        assert len(runs) == 1

    def test_keyboard_interrupt_stops_explore(self) -> None:
        async def interrupted() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            explore(interrupted)

    def test_report_type(self) -> None:
        assert isinstance(explore(lost_update, True, runs=1), ExploreReport)
