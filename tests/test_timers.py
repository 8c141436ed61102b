"""Timers: thousands of timers under MockClock(autojump_threshold=0), through tasks and
through Loop callbacks, and the TimerQueue data structure itself (ordering, ties, lazy
cancel, compaction), checked against a simple reference model with hypothesis."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import plait
from plait._core import _timers
from plait._core._timers import TimerQueue
from plait.testing import MockClock, wait_all_tasks_blocked

N = 10_000


def wake_order(delays: list[float]) -> list[int]:
    """Expected firing order: by deadline, ties in scheduling order."""
    return sorted(range(len(delays)), key=lambda i: (delays[i], i))


def check_invariants(q: TimerQueue) -> None:
    heap = q._heap
    assert all(heap[(i - 1) // 2][:2] <= heap[i][:2] for i in range(1, len(heap)))
    dead = sum(1 for e in heap if e[2] is None)
    assert q._dead == dead
    assert len(q) == len(heap) - dead


class TestThousandsOfTimers:
    def test_sleeping_tasks_wake_in_deadline_order_at_their_exact_deadline(self) -> None:
        rng = random.Random(2024)
        # Multiples of 1/8 (exact in binary floating point), with many ties and zeros.
        delays = [rng.randrange(0, 4000) / 8 for _ in range(N)]
        woke: list[tuple[int, float]] = []

        async def sleeper(i: int) -> None:
            await plait.sleep(delays[i])
            woke.append((i, plait.current_time()))

        async def main() -> float:
            async with plait.TaskGroup() as tg:
                for i in range(N):
                    tg.spawn(sleeper, i)
            return plait.current_time()

        end = plait.run(main, clock=MockClock(autojump_threshold=0))
        assert [i for i, _ in woke] == wake_order(delays)
        assert all(t == delays[i] for i, t in woke)
        assert end == max(delays)

    def test_arbitrary_float_delays_never_wake_early(self) -> None:
        rng = random.Random(7)
        delays = [rng.uniform(0.0, 1000.0) for _ in range(N)]
        woke: list[tuple[int, float]] = []

        async def sleeper(i: int) -> None:
            await plait.sleep(delays[i])
            woke.append((i, plait.current_time()))

        async def main() -> None:
            async with plait.TaskGroup() as tg:
                for i in range(N):
                    tg.spawn(sleeper, i)

        plait.run(main, clock=MockClock(autojump_threshold=0))
        assert [i for i, _ in woke] == wake_order(delays)
        assert all(t >= delays[i] for i, t in woke)

    def test_loop_callbacks_fire_in_order(self) -> None:
        rng = random.Random(99)
        delays = [rng.randrange(1, 500) / 4 for _ in range(N)]
        fired: list[tuple[int, float]] = []
        with plait.Loop(clock=MockClock(autojump_threshold=0)) as loop:
            for i, delay in enumerate(delays):
                loop.call_later(delay, lambda i: fired.append((i, loop.time())), i)
            loop.run()
            assert loop.time() == max(delays)
        assert [i for i, _ in fired] == wake_order(delays)
        assert all(t == delays[i] for i, t in fired)

    def test_cancelled_sleepers_do_not_fire_and_time_stops_at_the_last_live_one(self) -> None:
        rng = random.Random(5)
        delays = [rng.randrange(1, 1000) / 2 for _ in range(N)]
        cutoff = sorted(delays)[int(N * 0.7)]
        # Cancel every task past the cutoff and every third one: most timers die, the
        # heap is compacted, and the clock must not jump to a dead deadline.
        doomed = {i for i, d in enumerate(delays) if d > cutoff or i % 3 == 0}
        woke: list[int] = []

        async def sleeper(i: int) -> None:
            await plait.sleep(delays[i])
            woke.append(i)

        async def main() -> float:
            async with plait.TaskGroup() as tg:
                tasks = [tg.spawn(sleeper, i) for i in range(N)]
                await wait_all_tasks_blocked()
                assert plait.current_time() == 0  # nobody has woken yet
                for i in doomed:
                    tasks[i].cancel()
            assert all(tasks[i].cancelled() for i in doomed)
            return plait.current_time()

        end = plait.run(main, clock=MockClock(autojump_threshold=0))
        alive = [i for i in wake_order(delays) if i not in doomed]
        assert woke == alive
        assert end == max(delays[i] for i in alive)


class TestTimerQueue:
    def test_empty(self) -> None:
        q = TimerQueue()
        assert len(q) == 0
        assert q.next_deadline() == math.inf
        assert q.fire_due(math.inf) == 0

    def test_fires_in_deadline_order_ties_in_insertion_order(self) -> None:
        rng = random.Random(3)
        whens = [rng.randrange(20) for _ in range(500)]
        q = TimerQueue()
        fired: list[int] = []
        for i, when in enumerate(whens):
            q.push(when, fired.append, i)
        assert len(q) == 500
        assert q.next_deadline() == min(whens)
        assert q.fire_due(math.inf) == 500
        assert fired == wake_order(whens)
        assert len(q) == 0

    def test_fire_due_fires_only_what_is_due_inclusive(self) -> None:
        q = TimerQueue()
        fired: list[str] = []
        for when, name in [(3.0, "c"), (1.0, "a"), (2.0, "b"), (2.0, "b2")]:
            q.push(when, fired.append, name)
        assert q.fire_due(0.5) == 0
        assert q.fire_due(2.0) == 3
        assert fired == ["a", "b", "b2"]
        assert len(q) == 1
        assert q.next_deadline() == 3.0

    def test_cancel_is_lazy_idempotent_and_harmless_after_firing(self) -> None:
        q = TimerQueue()
        fired: list[int] = []
        entries = [q.push(float(i), fired.append, i) for i in range(10)]
        q.cancel(entries[3])
        q.cancel(entries[3])
        assert len(q) == 9
        assert len(q._heap) == 10  # O(1): the entry stays until it reaches the top
        check_invariants(q)
        q.fire_due(4.0)
        assert fired == [0, 1, 2, 4]
        q.cancel(entries[0])  # already fired
        q.cancel(entries[4])
        assert len(q) == 5
        check_invariants(q)
        q.fire_due(math.inf)
        assert fired == [0, 1, 2, 4, 5, 6, 7, 8, 9]

    def test_next_deadline_skips_cancelled_entries(self) -> None:
        q = TimerQueue()
        entries = [q.push(float(i), print, None) for i in range(5)]
        for e in entries[:3]:
            q.cancel(e)
        assert q.next_deadline() == 3.0
        check_invariants(q)
        q.cancel(entries[3])
        q.cancel(entries[4])
        assert q.next_deadline() == math.inf
        assert len(q) == 0
        check_invariants(q)

    def test_compaction_when_most_entries_are_dead_keeps_the_order(self) -> None:
        rng = random.Random(11)
        q = TimerQueue()
        fired: list[int] = []
        whens = [rng.randrange(100) for _ in range(2000)]
        entries = [q.push(w, fired.append, i) for i, w in enumerate(whens)]
        dead = set(rng.sample(range(2000), 1500))
        for i in dead:
            q.cancel(entries[i])
            if i % 97 == 0:
                check_invariants(q)
        assert len(q) == 500
        assert len(q._heap) < 2000  # rebuilt: the dead entries are gone
        check_invariants(q)
        extra = q.push(-1, fired.append, -1)  # still a valid heap
        assert q.next_deadline() == -1
        q.cancel(extra)
        q.fire_due(math.inf)
        assert fired == [i for i in wake_order(whens) if i not in dead]

    def test_callbacks_that_push_and_cancel_during_fire_due(self) -> None:
        q = TimerQueue()
        log: list[str] = []
        later: list[Any] = []

        def first(_: object) -> None:
            log.append("first")
            q.push(1.0, log.append, "pushed due now")  # due: fires in this call
            q.push(0.5, log.append, "pushed in the past")
            q.push(5.0, log.append, "pushed for later")  # not due
            q.cancel(later[0])

        q.push(1.0, first, None)
        later.append(q.push(1.0, log.append, "cancelled by first"))
        q.push(1.0, log.append, "second")
        assert q.fire_due(1.0) == 4
        assert log == ["first", "pushed in the past", "second", "pushed due now"]
        assert len(q) == 1 and q.next_deadline() == 5.0
        check_invariants(q)

    def test_compaction_triggered_inside_fire_due(self) -> None:
        q = TimerQueue()
        fired: list[int] = []
        victims = [q.push(2.0 + i, fired.append, i) for i in range(1000)]

        def massacre(_: object) -> None:
            for e in victims[::2] + victims[1::4]:
                q.cancel(e)

        q.push(1.0, massacre, None)
        q.fire_due(math.inf)
        check_invariants(q)
        assert fired == [i for i in range(1000) if i % 2 and i % 4 != 1]


# -- property test against a reference model ------------------------------------------

Op = tuple[str, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 30)),  # at now + arg
        st.tuples(st.just("push"), st.integers(0, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 10_000)),  # a live entry
        st.tuples(st.just("cancel"), st.integers(0, 10_000)),
        st.tuples(st.just("cancel-any"), st.integers(0, 10_000)),  # maybe fired/cancelled
        st.tuples(st.just("fire"), st.integers(0, 6)),  # now += arg
        st.tuples(st.just("next"), st.just(0)),
    ),
    max_size=400,
)


class Model:
    """The obvious implementation: a dict of live entries, sorted on demand."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}  # name (= insertion order) -> when

    def fire(self, now: float) -> list[int]:
        due = sorted((w, n) for n, w in self.live.items() if w <= now)
        for _, n in due:
            del self.live[n]
        return [n for _, n in due]

    def next_deadline(self) -> float:
        return min(self.live.values(), default=math.inf)


@pytest.mark.parametrize("compact_min", [0, 3, 256])
@settings(max_examples=400, deadline=None)
@given(ops=ops)
def test_timer_queue_matches_a_reference_model(compact_min: int, ops: list[Op]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_timers, "_COMPACT_MIN", compact_min)
        q = TimerQueue()
        model = Model()
        fired: list[int] = []
        entries: list[Any] = []
        record: Callable[[int], None] = fired.append
        now = 0
        for op, arg in ops:
            if op == "push":
                name = len(entries)
                entries.append(q.push(now + arg, record, name))
                model.live[name] = now + arg
            elif op == "cancel" and model.live:
                name = sorted(model.live)[arg % len(model.live)]
                q.cancel(entries[name])
                del model.live[name]
            elif op == "cancel-any" and entries:
                name = arg % len(entries)
                q.cancel(entries[name])
                model.live.pop(name, None)
            elif op == "fire":
                now += arg
                del fired[:]
                assert q.fire_due(now) == len(expected := model.fire(now))
                assert fired == expected
            elif op == "next":
                assert q.next_deadline() == model.next_deadline()
            assert len(q) == len(model.live)
            check_invariants(q)
        del fired[:]
        q.fire_due(math.inf)
        assert fired == model.fire(math.inf)
