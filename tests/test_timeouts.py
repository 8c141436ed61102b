"""Time: sleep, sleep_until, sleep_forever, checkpoint, current_time, move_on_*, fail_*.

Every test runs on a MockClock with autojump_threshold=0, so sleeps take no real time
and the virtual times asserted below are exact.
"""

from __future__ import annotations

import asyncio
import math

import pytest

import plait
from helpers import vrun as run
from plait.testing import MockClock

NAN = float("nan")


class TestSleep:
    def test_exact_virtual_times(self):
        async def main():
            t0 = plait.current_time()
            await plait.sleep(1.5)
            t1 = plait.current_time()
            await plait.sleep(2)
            return t1 - t0, plait.current_time() - t0

        assert run(main) == (1.5, 3.5)

    def test_concurrent_sleepers_wake_in_deadline_order(self):
        woke = []

        async def sleeper(seconds):
            await plait.sleep(seconds)
            woke.append((seconds, plait.current_time()))

        async def main():
            async with plait.TaskGroup() as tg:
                for seconds in (3, 1, 2):
                    tg.spawn(sleeper, seconds)

        run(main)
        assert woke == [(1, 1.0), (2, 2.0), (3, 3.0)]

    def test_sleep_zero_is_a_schedule_point(self):
        log = []

        async def other():
            log.append("other ran")

        async def main():
            async with plait.TaskGroup() as tg:
                tg.spawn(other)
                assert log == []
                t0 = plait.current_time()
                await plait.sleep(0)
                assert log == ["other ran"]
                assert plait.current_time() == t0

        run(main)

    def test_sleep_zero_is_a_cancel_point(self):
        async def main():
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.sleep(0)
                pytest.fail("sleep(0) did not raise Cancelled")
            return scope.cancelled_caught

        assert run(main) is True

    def test_sleep_inf_sleeps_until_cancelled(self):
        async def main():
            with plait.move_on_after(7) as scope:
                await plait.sleep(math.inf)
            return scope.cancelled_caught, plait.current_time()

        assert run(main) == (True, 7.0)

    def test_sleep_forever(self):
        async def main():
            with plait.move_on_after(2) as scope:
                await plait.sleep_forever()
                pytest.fail("sleep_forever returned")
            return scope.cancelled_caught, plait.current_time()

        assert run(main) == (True, 2.0)


class TestSleepUntil:
    def test_wakes_at_the_deadline(self):
        async def main():
            target = plait.current_time() + 4.25
            await plait.sleep_until(target)
            return plait.current_time() - target

        assert run(main) == 0.0

    def test_past_deadline_still_checkpoints(self):
        log = []

        async def other():
            log.append("other ran")

        async def main():
            t0 = plait.current_time()
            async with plait.TaskGroup() as tg:
                tg.spawn(other)
                await plait.sleep_until(t0 - 10)
                assert log == ["other ran"]
            assert plait.current_time() == t0
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.sleep_until(-math.inf)
                pytest.fail("sleep_until(past) is not a cancel point")
            return scope.cancelled_caught

        assert run(main) is True

    def test_inf_deadline_sleeps_until_cancelled(self):
        async def main():
            with plait.move_on_after(3) as scope:
                await plait.sleep_until(math.inf)
            return scope.cancelled_caught, plait.current_time()

        assert run(main) == (True, 3.0)


class TestCheckpointAndTime:
    def test_checkpoint_lets_others_run_and_takes_no_time(self):
        log = []

        async def other():
            log.append("other ran")

        async def main():
            t0 = plait.current_time()
            async with plait.TaskGroup() as tg:
                tg.spawn(other)
                await plait.checkpoint()
                assert log == ["other ran"]
            assert plait.current_time() == t0

        run(main)

    def test_checkpoint_is_a_cancel_point(self):
        async def main():
            with plait.CancelScope() as scope:
                scope.cancel()
                await plait.checkpoint()
                pytest.fail("checkpoint did not raise")
            return scope.cancelled_caught

        assert run(main) is True

    def test_current_time_follows_the_mock_clock(self):
        clock = MockClock(autojump_threshold=0)

        async def main():
            t0 = plait.current_time()
            assert t0 == clock.current_time()
            clock.jump(5)
            return plait.current_time() - t0

        assert run(main, clock=clock) == 5.0


class TestMoveOn:
    def test_move_on_after_times_out(self):
        async def main():
            with plait.move_on_after(2) as scope:
                assert scope.deadline == plait.current_time() + 2
                await plait.sleep(10)
                pytest.fail("not cancelled")
            return scope.cancel_called, scope.cancelled_caught, plait.current_time()

        assert run(main) == (True, True, 2.0)

    def test_move_on_after_not_reached(self):
        async def main():
            with plait.move_on_after(5) as scope:
                await plait.sleep(1)
            await plait.sleep(10)  # the scope's timer must not fire after it exited
            return scope.cancel_called, scope.cancelled_caught, plait.current_time()

        assert run(main) == (False, False, 11.0)

    def test_move_on_at(self):
        async def main():
            deadline = plait.current_time() + 3
            with plait.move_on_at(deadline) as scope:
                assert scope.deadline == deadline
                await plait.sleep_forever()
            return scope.cancelled_caught, plait.current_time() - deadline

        assert run(main) == (True, 0.0)

    def test_zero_or_past_deadline_cancels_at_the_first_checkpoint(self):
        async def main():
            log = []
            with plait.move_on_after(0) as first:
                log.append("body runs")
                await plait.checkpoint()
                log.append("after checkpoint")
            with plait.move_on_at(plait.current_time() - 1) as second:
                await plait.sleep(1)
            assert log == ["body runs"]
            return first.cancelled_caught, second.cancelled_caught, plait.current_time()

        assert run(main) == (True, True, 0.0)

    def test_infinite_move_on_after_never_fires(self):
        async def main():
            with plait.move_on_after(math.inf) as scope:
                await plait.sleep(100)
            return scope.deadline, scope.cancel_called

        assert run(main) == (math.inf, False)

    def test_shielded_move_on_after_ignores_outer_cancellation(self):
        async def main():
            with plait.CancelScope() as outer:
                outer.cancel()
                with plait.move_on_after(3, shield=True) as inner:
                    await plait.sleep(10)
                assert plait.current_time() == 3.0
                await plait.checkpoint()
            return outer.cancelled_caught, inner.cancelled_caught

        assert run(main) == (True, True)


class TestFail:
    def test_fail_after_raises_builtin_timeout_error(self):
        async def main():
            with pytest.raises(TimeoutError):
                with plait.fail_after(2) as scope:
                    assert isinstance(scope, plait.CancelScope)
                    await plait.sleep(5)
            assert scope.cancelled_caught
            return plait.current_time()

        assert run(main) == 2.0

    def test_fail_at_raises_builtin_timeout_error(self):
        async def main():
            deadline = plait.current_time() + 1.5
            with pytest.raises(TimeoutError):
                with plait.fail_at(deadline) as scope:
                    assert scope.deadline == deadline
                    await plait.sleep_forever()
            return plait.current_time()

        assert run(main) == 1.5

    def test_no_timeout_no_error(self):
        async def main():
            with plait.fail_after(5) as scope:
                await plait.sleep(1)
            with plait.fail_at(plait.current_time() + 5):
                await plait.sleep(1)
            return scope.cancelled_caught, plait.current_time()

        assert run(main) == (False, 2.0)

    def test_outer_cancellation_is_not_a_timeout(self):
        async def main():
            with plait.move_on_after(1) as outer:
                with plait.fail_after(10) as inner:
                    await plait.sleep_forever()
            return outer.cancelled_caught, inner.cancelled_caught, plait.current_time()

        assert run(main) == (True, False, 1.0)

    def test_other_errors_pass_through(self):
        async def main():
            with pytest.raises(KeyError):
                with plait.fail_after(1):
                    await plait.sleep(0.5)
                    raise KeyError("x")

        run(main)


class TestBadInput:
    @pytest.mark.parametrize(
        ("api", "value"),
        [
            (plait.sleep, -1),
            (plait.sleep, -0.001),
            (plait.sleep, NAN),
            (plait.move_on_after, -1),
            (plait.move_on_after, NAN),
            (plait.fail_after, -1),
            (plait.fail_after, NAN),
        ],
    )
    def test_bad_seconds(self, api, value):
        async def main():
            with pytest.raises(ValueError, match="seconds"):
                result = api(value)
                if asyncio.iscoroutine(result):
                    await result

        run(main)

    @pytest.mark.parametrize("api", [plait.move_on_at, plait.fail_at, plait.sleep_until])
    def test_nan_deadline(self, api):
        async def main():
            with pytest.raises(ValueError, match="deadline"):
                result = api(NAN)
                if asyncio.iscoroutine(result):
                    await result

        run(main)

    @pytest.mark.parametrize(
        "api",
        [
            plait.sleep,
            plait.sleep_until,
            plait.move_on_after,
            plait.move_on_at,
            plait.fail_after,
            plait.fail_at,
        ],
    )
    @pytest.mark.parametrize("value", ["1", None, [1], 1j])
    def test_not_a_number(self, api, value):
        async def main():
            with pytest.raises(TypeError):
                result = api(value)
                if asyncio.iscoroutine(result):
                    await result

        run(main)

    def test_bad_input_does_not_advance_time(self):
        async def main():
            t0 = plait.current_time()
            with pytest.raises(ValueError):
                await plait.sleep(-5)
            return plait.current_time() - t0

        assert run(main) == 0.0


class TestOutsideRun:
    def test_sleep_driven_by_asyncio(self):
        async def uses_plait():
            await plait.sleep(1)

        with pytest.raises(RuntimeError, match=r"plait\.run"):
            asyncio.run(uses_plait())

    @pytest.mark.parametrize(
        "make",
        [
            lambda: plait.sleep(0),
            lambda: plait.sleep_until(0),
            plait.sleep_forever,
        ],
        ids=["sleep0", "sleep_until", "sleep_forever"],
    )
    def test_other_waits_driven_by_asyncio(self, make):
        async def uses_plait():
            await make()

        with pytest.raises(RuntimeError, match=r"plait\.run"):
            asyncio.run(uses_plait())

    def test_current_time_outside(self):
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            plait.current_time()

    def test_move_on_after_outside(self):
        with pytest.raises(RuntimeError, match=r"plait\.run"):
            plait.move_on_after(1)

    def test_current_time_after_run_returns(self):
        async def main():
            return plait.current_time()

        assert run(main) == 0.0
        with pytest.raises(RuntimeError):
            plait.current_time()
