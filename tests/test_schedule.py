"""Scheduling policies (plait.run(schedule=...)): Seeded runs are reproducible step for
step, different seeds give different runs, Replay reproduces a logged run, and the log
and the arguments are checked. (Finding races with them: tests/test_explore.py.)"""

from __future__ import annotations

import random

import pytest

import plait
from plait.testing import MockClock, Replay, ScheduleLog, SchedulePolicy, Seeded


async def busy_program(tasks: int = 50, rounds: int = 6) -> list[int]:
    """``tasks`` workers doing random virtual sleeps (from their own seeded PRNG, so
    the program's inputs do not depend on the schedule), lock, queue and event
    operations; returns the order in which the consumer got the items."""
    lock = plait.Lock()
    queue: plait.Queue[int] = plait.Queue(4)
    started = plait.Event()
    got: list[int] = []

    async def worker(i: int) -> None:
        rng = random.Random(i)
        await started.wait()
        for _ in range(rounds):
            await plait.sleep(rng.choice([0, 0, 0.001, 0.01, 0.5]))
            async with lock:
                await plait.checkpoint()
            await queue.put(i)

    async def consumer() -> None:
        for _ in range(tasks * rounds):
            got.append(await queue.get())

    async with plait.TaskGroup() as tg:
        tg.spawn(consumer)
        for i in range(tasks):
            tg.spawn(worker, i, name=f"w{i}")
        await plait.checkpoint()
        started.set()
    return got


def run_under(policy: SchedulePolicy, fn=busy_program, *args) -> object:
    return plait.run(fn, *args, clock=MockClock(autojump_threshold=0), schedule=policy)


class TestDeterminism:
    def test_one_seed_twice_gives_identical_step_traces(self) -> None:
        first, second = Seeded(7), Seeded(7)
        got_first = run_under(first)
        got_second = run_under(second)
        assert len(first.trace) > 1000  # (every step of every task is in it)
        assert first.trace == second.trace
        assert got_first == got_second
        assert first.log == second.log and len(first.log) > 10

    def test_different_seeds_give_different_traces(self) -> None:
        traces = []
        for seed in range(5):
            policy = Seeded(seed)
            run_under(policy)
            traces.append(tuple(policy.trace))
        assert len(set(traces)) == 5

    def test_fifo_differs_from_a_seeded_run(self) -> None:
        fifo, seeded = Replay(ScheduleLog()), Seeded(0)
        run_under(fifo)
        run_under(seeded)
        assert fifo.log == ScheduleLog() and fifo.trace != seeded.trace

    def test_a_policy_starts_afresh_for_each_run(self) -> None:
        policy = Seeded(3)
        run_under(policy)
        trace, log = policy.trace, policy.log
        run_under(policy)
        assert policy.trace == trace and policy.log == log

    def test_the_trace_labels_tasks_by_name_and_first_step(self) -> None:
        async def main() -> None:
            async def child() -> None:
                await plait.checkpoint()

            async with plait.TaskGroup() as tg:
                tg.spawn(child)
                tg.spawn(child, name="second")

        policy = Replay({})
        run_under(policy, main)
        # main spawns both and waits; the children step twice (start, checkpoint).
        assert policy.trace == ["main#1", "child#2", "second#3", "child#2", "second#3", "main#1"]


class TestReplay:
    def test_replaying_a_seeded_log_gives_the_same_run(self) -> None:
        seeded = Seeded(11)
        got = run_under(seeded)
        replay = Replay(seeded.log)
        assert run_under(replay) == got
        assert replay.trace == seeded.trace
        assert replay.log == seeded.log

    def test_a_hand_made_log_reorders_one_batch(self) -> None:
        async def main() -> list[str]:
            order: list[str] = []

            async def child(name: str) -> None:
                order.append(name)

            async with plait.TaskGroup() as tg:
                for name in "abc":
                    tg.spawn(child, name, name=name)
            return order

        # Batch 0 is main alone; batch 1 holds a, b, c (spawned during batch 0).
        assert run_under(Replay({}), main) == ["a", "b", "c"]
        assert run_under(Replay({1: (2, 0, 1)}), main) == ["c", "a", "b"]
        # An order for fewer tasks than the batch has: the rest follow, FIFO.
        assert run_under(Replay({1: (1,)}), main) == ["b", "a", "c"]
        # Indices past the batch are ignored.
        assert run_under(Replay({1: (5, 2)}), main) == ["c", "a", "b"]

    def test_fifo_is_the_default(self) -> None:
        async def main() -> list[str]:
            order: list[str] = []

            async def child(name: str) -> None:
                await plait.checkpoint()
                order.append(name)

            async with plait.TaskGroup() as tg:
                for name in "abcd":
                    tg.spawn(child, name)
            return order

        assert plait.run(main) == list("abcd")


class TestScheduleLog:
    def test_identity_orders_are_dropped_and_entries_sorted(self) -> None:
        log = ScheduleLog({5: (1, 0), 2: (0, 1, 2), 1: [0, 2, 1]})
        assert log.decisions == {1: (0, 2, 1), 5: (1, 0)}
        assert len(log) == 2 and log.deviations == 4
        assert log == ScheduleLog([(1, (0, 2, 1)), (5, (1, 0))])
        assert eval(repr(log), {"ScheduleLog": ScheduleLog}) == log

    def test_the_seed_is_kept(self) -> None:
        policy = Seeded(4)
        run_under(policy)
        assert policy.log.seed == 4 and "seed=4" in repr(policy.log)

    @pytest.mark.parametrize(
        ("decisions", "error", "match"),
        [
            ({-1: (1, 0)}, ValueError, "batch number"),
            ({"1": (1, 0)}, ValueError, "batch number"),
            ({1: (1, 1)}, ValueError, "distinct indices"),
            ({1: (0, -1)}, ValueError, "distinct indices"),
            ({1: 3}, TypeError, "order of indices"),
            ([(1, (1, 0), 2)], TypeError, "order of indices"),
        ],
    )
    def test_bad_logs(self, decisions: object, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            ScheduleLog(decisions)  # type: ignore[arg-type]


class TestArguments:
    def test_a_schedule_must_be_a_policy(self) -> None:
        async def main() -> None:
            pass

        with pytest.raises(TypeError, match=r"Seeded\(seed\).*got int"):
            plait.run(main, schedule=3)  # type: ignore[arg-type]

    def test_seeded_takes_an_int(self) -> None:
        with pytest.raises(TypeError, match="seed must be an int"):
            Seeded("3")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="seed must be an int"):
            Seeded(1.5)  # type: ignore[arg-type]

    def test_replay_takes_a_log(self) -> None:
        with pytest.raises(TypeError, match="ScheduleLog"):
            Replay([1, 0])  # type: ignore[arg-type]

    def test_repr(self) -> None:
        assert repr(Seeded(2)) == "Seeded(2)"
        assert repr(Replay({3: (1, 0)})) == "Replay(ScheduleLog({3: (1, 0)}))"
