"""plait.abc.Instrument: the kernel's hooks, installing and removing instruments, an
instrument that fails, and jobs (threads, processes, subprocesses) (issue 9)."""

from __future__ import annotations

import logging
import sys

import pytest

import plait
import plait.lowlevel
from plait.abc import Instrument


class Recorder(Instrument):
    """Records every hook call as (hook, detail)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def before_run(self):
        self.calls.append(("before_run", None))

    def after_run(self):
        self.calls.append(("after_run", None))

    def task_spawned(self, task):
        self.calls.append(("task_spawned", task.name))

    def task_scheduled(self, task):
        self.calls.append(("task_scheduled", task.name))

    def before_task_step(self, task):
        self.calls.append(("before_task_step", task.name))

    def after_task_step(self, task):
        self.calls.append(("after_task_step", task.name))

    def task_exited(self, task):
        self.calls.append(("task_exited", task.name))

    def before_io_wait(self, timeout):
        self.calls.append(("before_io_wait", timeout))

    def after_io_wait(self, timeout):
        self.calls.append(("after_io_wait", timeout))

    def job_started(self, job):
        self.calls.append(("job_started", (job.kind, job.name, job.task.name)))

    def job_finished(self, job):
        self.calls.append(("job_finished", (job.kind, job.name, job.task.name)))

    def of(self, *hooks: str) -> list[tuple[str, object]]:
        return [call for call in self.calls if call[0] in hooks]


def test_the_hooks_of_a_task_that_passes_one_checkpoint():
    recorder = Recorder()

    async def main():
        await plait.checkpoint()
        return "done"

    assert plait.run(main, instruments=[recorder], name="main") == "done"
    assert recorder.calls == [
        ("before_run", None),
        ("task_spawned", "main"),
        ("task_scheduled", "main"),
        ("before_task_step", "main"),
        ("after_task_step", "main"),
        ("task_scheduled", "main"),  # the checkpoint: runnable again at once
        ("before_task_step", "main"),
        ("task_exited", "main"),  # inside the step that ended it (as in trio)
        ("after_task_step", "main"),
        ("after_run", None),
    ]


def test_a_task_woken_by_another_is_scheduled_and_io_waits_have_their_timeout():
    recorder = Recorder()

    async def main():
        event = plait.Event()

        async def setter():
            await plait.sleep(0.001)
            event.set()

        async with plait.TaskGroup() as tg:
            tg.spawn(setter, name="setter")
            await event.wait()

    plait.run(main, instruments=[recorder], name="main")
    names = [(hook, name) for hook, name in recorder.of("task_spawned", "task_exited")]
    assert names == [
        ("task_spawned", "main"),
        ("task_spawned", "setter"),
        ("task_exited", "setter"),
        ("task_exited", "main"),
    ]
    # main was woken (scheduled) by the setter's event.set(), between the setter's
    # steps and main's next step
    steps = recorder.of("task_scheduled", "before_task_step", "after_task_step")
    woken = steps.index(("task_scheduled", "main"), 2)
    assert steps[woken - 1] == ("before_task_step", "setter")
    waits = recorder.of("before_io_wait", "after_io_wait")
    assert waits, "the sleep waited in the reactor"
    slept = [timeout for hook, timeout in waits if hook == "before_io_wait" and timeout > 0]
    assert slept and all(0 < t <= 0.001 for t in slept)
    assert len(waits) % 2 == 0 and all(
        a[0] == "before_io_wait" and b == ("after_io_wait", a[1])
        for a, b in zip(waits[::2], waits[1::2], strict=True)
    )


def test_instruments_added_and_removed_while_running():
    recorder = Recorder()

    async def main():
        await plait.checkpoint()
        plait.lowlevel.add_instrument(recorder)
        plait.lowlevel.add_instrument(recorder)  # already there: nothing happens
        async with plait.TaskGroup() as tg:
            tg.spawn(plait.checkpoint, name="child")
        plait.lowlevel.remove_instrument(recorder)
        with pytest.raises(KeyError, match="is not installed"):
            plait.lowlevel.remove_instrument(recorder)
        await plait.checkpoint()

    plait.run(main, name="main")
    assert ("before_run", None) not in recorder.calls
    assert recorder.of("task_spawned", "task_exited") == [
        ("task_spawned", "child"),
        ("task_exited", "child"),
    ]
    assert recorder.calls.count(("before_task_step", "child")) == 2  # not doubled
    assert ("after_run", None) not in recorder.calls


def test_an_instrument_that_removes_itself_in_a_hook():
    class Once(Instrument):
        def __init__(self):
            self.steps = 0

        def before_task_step(self, task):
            self.steps += 1
            plait.lowlevel.remove_instrument(self)

    once = Once()

    async def main():
        for _ in range(5):
            await plait.checkpoint()

    plait.run(main, instruments=[once])
    assert once.steps == 1


def test_a_failing_hook_removes_its_instrument_and_is_reported(caplog):
    class Broken(Instrument):
        def __init__(self):
            self.calls = 0

        def after_task_step(self, task):
            self.calls += 1
            raise ZeroDivisionError("bug in the instrument")

    broken, recorder = Broken(), Recorder()

    async def main():
        for _ in range(3):
            await plait.checkpoint()
        return "the program goes on"

    with caplog.at_level(logging.ERROR):
        assert (
            plait.run(main, instruments=[broken, recorder], name="main") == "the program goes on"
        )
    assert broken.calls == 1
    assert recorder.calls.count(("after_task_step", "main")) == 4  # the other one stays
    [record] = [r for r in caplog.records if "instrument" in r.getMessage()]
    assert "after_task_step() hook and has been removed" in record.getMessage()
    assert record.exc_info[0] is ZeroDivisionError


def test_only_the_overridden_hooks_are_called():
    class StepsOnly(Instrument):
        def __init__(self):
            self.steps = 0

        def before_task_step(self, task):
            self.steps += 1

    async def main():
        await plait.checkpoint()

    instrument = StepsOnly()
    with plait.Loop(instruments=[instrument]) as loop:
        hooks = loop._instruments
        assert hooks.before_task_step and not hooks.after_task_step
        assert not hooks.task_scheduled and not hooks.before_io_wait
        loop.run_until_complete(main)
    assert instrument.steps == 2


def test_bad_instruments():
    async def main():
        pass

    with pytest.raises(TypeError, match=r"pass instruments=\[instrument\]"):
        plait.run(main, instruments=Recorder())
    with pytest.raises(TypeError, match=r"pass an instance, Recorder\(\)"):
        plait.run(main, instruments=[Recorder])
    with pytest.raises(TypeError, match=r"subclass plait\.abc\.Instrument"):
        plait.run(main, instruments=[object()])
    with pytest.raises(TypeError, match=r"list of plait\.abc\.Instrument"):
        plait.run(main, instruments=42)
    with pytest.raises(RuntimeError, match="no plait loop is running"):
        plait.lowlevel.add_instrument(Recorder())
    assert plait.abc.Instrument.__module__ == "plait.abc"


def job_fn(x):
    return x + 1


def test_jobs_of_threads_pools_processes_and_subprocesses():
    recorder = Recorder()

    async def main():
        assert await plait.to_thread.run_sync(job_fn, 1) == 2
        async with plait.ThreadPool(2) as pool:
            assert await pool.run_sync(job_fn, 2) == 3
        async with plait.ProcessPool(1) as pool:
            assert await pool.run_sync(job_fn, 3) == 4
            async for _ in pool.map(job_fn, [4]):
                pass
        await plait.run_process([sys.executable, "-c", "pass"])

    plait.run(main, instruments=[recorder], name="main")
    jobs = recorder.of("job_started", "job_finished")
    workers = [job for job in jobs if "_processes/_worker.py" in job[1][1]]
    assert [hook for hook, _ in workers] == ["job_started", "job_finished"]  # the pool's
    assert workers[0][1][0] == "subprocess"
    jobs = [job for job in jobs if job not in workers]
    command = f"{sys.executable} -c pass"
    assert jobs == [
        ("job_started", ("thread", "job_fn", "main")),
        ("job_finished", ("thread", "job_fn", "main")),
        ("job_started", ("thread", "job_fn", "main")),
        ("job_finished", ("thread", "job_fn", "main")),
        ("job_started", ("process", "job_fn", "main")),
        ("job_finished", ("process", "job_fn", "main")),
        ("job_started", ("process", "job_fn", jobs[6][1][2])),  # a task of the map
        ("job_finished", ("process", "job_fn", jobs[6][1][2])),
        ("job_started", ("subprocess", command, "main")),
        ("job_finished", ("subprocess", command, "main")),
    ]


def test_no_job_is_made_without_an_instrument_that_listens():
    class StepsOnly(Instrument):
        def before_task_step(self, task):
            pass

    async def main():
        loop = plait.lowlevel.current_loop()
        from plait._core._instrument import start_job

        assert start_job(loop, "thread", job_fn) is None
        return await plait.to_thread.run_sync(job_fn, 1)

    assert plait.run(main, instruments=[StepsOnly()]) == 2


def test_every_step_follows_exactly_one_scheduled_report():
    """Whatever made a task runnable (spawn, checkpoint, schedule point, a wake-up, a
    cancellation of its wait, a deadline, a thread finishing), the instrument hears of
    it once: per task the hooks go scheduled, step, scheduled, step, ..."""
    recorder = Recorder()

    async def main():
        event = plait.Event()

        async def waiter():
            await event.wait()
            with plait.move_on_after(0.001):
                await plait.sleep_forever()  # a deadline ends the wait
            await plait.lowlevel.schedule_point()

        async def cancelled():
            with plait.CancelScope() as scope:
                tg2_scopes.append(scope)
                await plait.sleep_forever()  # cancelled from outside

        tg2_scopes: list[plait.CancelScope] = []
        async with plait.TaskGroup() as tg:
            tg.spawn(waiter, name="waiter")
            tg.spawn(cancelled, name="cancelled")
            await plait.checkpoint()
            await plait.to_thread.run_sync(job_fn, 1)
            event.set()
            tg2_scopes[0].cancel()

    plait.run(main, instruments=[recorder], name="main")
    for name in ("main", "waiter", "cancelled"):
        hooks = [
            hook
            for hook, who in recorder.of("task_scheduled", "before_task_step", "task_exited")
            if who == name
        ]
        assert hooks[-1] == "task_exited"
        pairs = hooks[:-1]
        assert pairs == ["task_scheduled", "before_task_step"] * (len(pairs) // 2), name
