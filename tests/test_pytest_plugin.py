"""Tests for the pytest plugin (plait.testing._pytest_plugin), through pytester.

Each test writes a small test file and runs pytest on it in-process: the plugin comes in
through its ``pytest11`` entry point, as in a user's project (this repository's own
runs leave it out, see pyproject.toml).
"""

from __future__ import annotations

import shlex
import textwrap

import hypothesis  # noqa: F401 - see below
import pytest

import plait
from plait.testing import MockClock, Seeded

pytest_plugins = ["pytester"]

# Each in-process session below forgets the modules it imported (pytester restores
# sys.modules), and Hypothesis's pytest plugin imports hypothesis at the end of a session:
# imported here, it stays loaded, instead of being assertion-rewritten again (4 s) in
# every session when Python writes no bytecode (PYTHONDONTWRITEBYTECODE).

INI = """
[pytest]
filterwarnings = error
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=textwrap.dedent(source))
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


class TestRunning:
    def test_pass(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            @pytest.mark.plait
            async def test_it():
                async with plait.TaskGroup() as tg:
                    tg.spawn(plait.sleep, 0)
                assert plait.current_task().name == "test_it"
            """,
        )
        result.assert_outcomes(passed=1)

    def test_a_failure_is_reported_as_usual(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            @pytest.mark.plait
            async def test_it():
                await plait.sleep(0)
                assert 1 + 1 == 3
            """,
        )
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*async def test_it():*", "E*assert (1 + 1) == 3"])
        result.stdout.no_fnmatch_line("*plait: failed under*")

    def test_arguments_and_classes(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            @pytest.mark.plait
            @pytest.mark.parametrize("n", [1, 2])
            async def test_param(n, tmp_path):
                await plait.sleep(0)
                assert n in (1, 2) and tmp_path.is_dir()

            @pytest.mark.plait
            class TestIt:
                @pytest.fixture
                async def doubled(self):
                    return self.base * 2

                base = 21

                async def test_method(self, doubled):
                    assert doubled == 42
            """,
        )
        result.assert_outcomes(passed=3)

    def test_unmarked_async_tests_are_left_to_others(self, pytester: pytest.Pytester) -> None:
        result = run(pytester, "async def test_it():\n    pass\n")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])

    def test_only_async_def_tests(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest
            from hypothesis import given, strategies as st

            @pytest.mark.plait
            def test_sync():
                pass

            @pytest.mark.plait
            async def test_agen():
                yield

            @pytest.mark.plait
            @given(st.integers())
            async def test_hypothesis(n):
                pass

            @pytest.mark.plait
            class TestMixed:
                def test_sync_under_a_class_mark(self):
                    pass
            """,
        )
        result.assert_outcomes(passed=1, errors=3)
        result.stdout.fnmatch_lines_random(
            [
                "*@pytest.mark.plait marks async def tests; test_sync is a regular function",
                "*@pytest.mark.plait marks async def tests; test_agen is an async generator",
                "*@pytest.mark.plait does not run Hypothesis tests; in test_hypothesis, *",
            ]
        )


class TestMarkerArguments:
    def test_bad_arguments(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest

            @pytest.mark.plait(seeds=0)
            async def test_zero(): pass

            @pytest.mark.plait(seeds=True)
            async def test_bool(): pass

            @pytest.mark.plait(seeds="3")
            async def test_str(): pass

            @pytest.mark.plait(autojump="yes")
            async def test_autojump(): pass

            @pytest.mark.plait(seed=3)
            async def test_unknown(): pass

            @pytest.mark.plait(5)
            async def test_positional(): pass
            """,
        )
        result.assert_outcomes(errors=6)
        accepts = "autojump (True or False) and seeds (an int >= 1)"
        result.stdout.fnmatch_lines_random(
            [
                "*@pytest.mark.plait(seeds=0): seeds must be an int >= 1",
                "*@pytest.mark.plait(seeds=True): seeds must be an int >= 1",
                "*@pytest.mark.plait(seeds='3'): seeds must be an int >= 1",
                "*@pytest.mark.plait(autojump='yes'): autojump must be True or False",
                f"*@pytest.mark.plait got an unknown argument 'seed'; it accepts {accepts}",
                f"*@pytest.mark.plait takes keyword arguments only, {accepts}; got (5,) *",
            ]
        )

    def test_the_closest_marker_wins(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait
            from plait.lowlevel import current_clock
            from plait.testing import MockClock

            pytestmark = pytest.mark.plait(autojump=True)

            async def test_module_mark():
                assert isinstance(current_clock(), MockClock)

            @pytest.mark.plait(autojump=False)
            async def test_own_mark():
                assert not isinstance(current_clock(), MockClock)
            """,
        )
        result.assert_outcomes(passed=2)

    def test_bad_mode(self, pytester: pytest.Pytester) -> None:
        pytester.makeini(INI + "plait_mode = sometimes\n")
        result = run(pytester, "def test_it(): pass\n")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            ["*plait_mode (pytest configuration) must be 'strict' or 'auto', got 'sometimes'"]
        )


class TestAutoMode:
    def test_auto_claims_unclaimed_async_tests(self, pytester: pytest.Pytester) -> None:
        pytester.makeini(INI + "plait_mode = auto\n")
        result = run(
            pytester,
            """
            import asyncio, pytest, plait

            @pytest.fixture
            async def value():
                await plait.sleep(0)
                return 7

            async def test_plait(value):
                assert value == 7
                assert plait.current_task().name == "test_plait"

            @pytest.mark.asyncio
            async def test_asyncio():
                asyncio.get_running_loop()

            def test_sync():
                pass
            """,
            "-m",
            "plait",
        )
        result.assert_outcomes(passed=1, deselected=2)
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3)


class TestFixtures:
    def test_order_nesting_and_teardown(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            pytestmark = pytest.mark.plait
            EVENTS = []

            @pytest.fixture
            def base():
                EVENTS.append("base up")
                yield 1
                EVENTS.append("base down")

            @pytest.fixture
            async def resource(base):
                EVENTS.append("resource up")
                await plait.sleep(0)
                yield base + 1
                await plait.sleep(0)
                EVENTS.append(f"resource down in {plait.current_task().name}")

            @pytest.fixture
            async def client(resource):
                await plait.sleep(0)
                EVENTS.append("client")
                return resource + 1

            @pytest.fixture
            def view(client):
                EVENTS.append("view up")
                yield client * 10
                EVENTS.append("view down")

            @pytest.fixture(autouse=True)
            async def auto():
                yield
                EVENTS.append("auto down")

            @pytest.fixture(params=[1, 2])
            async def param(request):
                return request.param

            async def test_it(view, client, base):
                EVENTS.append("body")
                assert (view, client, base) == (30, 3, 1)

            async def test_order():
                assert EVENTS == [
                    "base up", "resource up", "client", "view up", "body",
                    "view down", "resource down in test_it", "auto down", "base down",
                ]

            async def test_param(param):
                EVENTS.append(param)

            async def test_params():
                assert EVENTS[-4:] == [1, "auto down", 2, "auto down"]
            """,
        )
        result.assert_outcomes(passed=5)

    def test_teardown_runs_when_the_body_fails(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            EVENTS = []

            @pytest.fixture
            async def resource():
                yield
                await plait.sleep(0)
                EVENTS.append("down")

            @pytest.fixture
            async def broken(resource):
                raise ValueError("cannot set up")

            @pytest.mark.plait
            async def test_body_fails(resource):
                raise KeyError("in the body")

            @pytest.mark.plait
            async def test_setup_fails(broken):
                EVENTS.append("body")

            def test_after():
                assert EVENTS == ["down", "down"]
            """,
        )
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines_random(
            [
                "E*KeyError: 'in the body'",
                "E*ValueError: cannot set up",
                "*plait: raised while setting up the fixture 'broken'",
            ]
        )

    def test_teardown_errors(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            @pytest.fixture
            async def fragile():
                yield
                await plait.sleep(0)
                raise OSError("teardown broke")

            @pytest.fixture
            async def twice():
                yield
                yield

            @pytest.fixture
            async def barren():
                if False:
                    yield

            @pytest.fixture
            def sync_gen(barren):
                yield

            @pytest.mark.plait
            async def test_passes(fragile):
                pass

            @pytest.mark.plait
            async def test_fails(fragile):
                assert False, "body broke"

            @pytest.mark.plait
            async def test_twice(twice):
                pass

            @pytest.mark.plait
            async def test_barren(sync_gen):
                pass
            """,
            "-rA",
        )
        result.assert_outcomes(passed=2, failed=2, errors=3)
        result.stdout.fnmatch_lines_random(
            [
                "*ERROR at teardown of test_passes*",
                "*ERROR at teardown of test_fails*",
                "*ERROR at teardown of test_twice*",
                "FAILED test_it.py::test_fails - AssertionError: body broke*",
                "ERROR test_it.py::test_passes - OSError: teardown broke",
                "ERROR test_it.py::test_twice - ValueError: the fixture 'twice' yielded more*",
                "FAILED test_it.py::test_barren - ValueError: the fixture 'barren' did not *",
            ]
        )

    def test_a_task_group_fixture_reports_its_child_error(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            async def crash():
                await plait.sleep(1)
                raise RuntimeError("the server crashed")

            @pytest.fixture
            async def server():
                async with plait.TaskGroup() as tg:
                    tg.spawn(crash)
                    yield
                    tg.cancel_scope.cancel()

            @pytest.fixture
            async def deadline():
                with plait.move_on_after(5):
                    yield

            @pytest.fixture
            async def timeout():
                with plait.fail_after(5):
                    yield

            @pytest.mark.plait(autojump=True)
            async def test_crash(server):
                await plait.sleep(10)

            @pytest.mark.plait(autojump=True)
            async def test_stopped_by_fixture(deadline):
                await plait.sleep(10)
                raise AssertionError("not reached")

            @pytest.mark.plait(autojump=True)
            async def test_timed_out_by_fixture(timeout):
                await plait.sleep(10)
            """,
        )
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines_random(
            [
                "*RuntimeError: the server crashed",
                "FAILED *test_timed_out_by_fixture - TimeoutError*",
            ]
        )
        crash_report = result.stdout.str().split(" test_crash ")[1].split(" test_timed_out_")[0]
        assert "Cancelled" not in crash_report

    def test_a_wider_scope_is_an_error(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest

            @pytest.fixture(scope="module")
            async def shared():
                return 1

            @pytest.mark.plait
            async def test_it(shared):
                pass
            """,
        )
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            [
                "*async fixture 'shared' has scope 'module', but test_it runs under plait, "
                "where each test has its own loop: make the fixture function-scoped*"
            ]
        )


class TestAutojump:
    def test_virtual_time(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait
            from plait.lowlevel import current_clock
            from plait.testing import MockClock

            @pytest.mark.plait(autojump=True)
            async def test_hour():
                assert isinstance(current_clock(), MockClock)
                start = plait.current_time()
                await plait.sleep(3600)
                assert plait.current_time() - start == 3600

            @pytest.mark.plait
            async def test_real_clock_by_default():
                assert not isinstance(current_clock(), MockClock)

            @pytest.mark.plait(seeds=2)
            async def test_seeds_imply_virtual_time():
                assert isinstance(current_clock(), MockClock)

            @pytest.mark.plait(seeds=2, autojump=False)
            async def test_unless_told_otherwise():
                assert not isinstance(current_clock(), MockClock)
            """,
        )
        result.assert_outcomes(passed=4)


RACE = """
import pytest, plait

async def race():
    shared = 0

    async def read_first():
        nonlocal shared
        x = shared
        await plait.checkpoint()
        shared = x + 1

    async def read_late():
        nonlocal shared
        await plait.checkpoint()
        x = shared
        await plait.checkpoint()
        shared = x + 1

    async with plait.TaskGroup() as tg:
        tg.spawn(read_first)
        tg.spawn(read_late)
    assert shared == 2, "lost update"
"""


def race_outcomes(count: int) -> list[bool]:
    """Whether RACE passes under Seeded(0) ... Seeded(count - 1), as the plugin runs it."""
    namespace: dict[str, object] = {}
    exec(RACE, namespace)
    outcomes = []
    for seed in range(count):
        try:
            plait.run(
                namespace["race"], clock=MockClock(autojump_threshold=0), schedule=Seeded(seed)
            )
        except AssertionError:
            outcomes.append(False)
        else:
            outcomes.append(True)
    return outcomes


class TestSeeds:
    def test_fail_with_seed_and_replay(self, pytester: pytest.Pytester) -> None:
        outcomes = race_outcomes(20)
        assert True in outcomes and False in outcomes  # the race is a real one
        failing, passing = outcomes.index(False), outcomes.index(True)
        source = RACE + (
            "\n@pytest.mark.plait(seeds=20)\nasync def test_race():\n    await race()\n"
            "\n@pytest.mark.plait\nasync def test_fifo():\n    await race()\n"
        )
        result = run(pytester, source)
        result.assert_outcomes(passed=1, failed=1)
        command = f"pytest test_it.py::test_race --plait-seed={failing}"
        result.stdout.fnmatch_lines(
            [
                "E*AssertionError: lost update*",
                f"E*plait: failed under schedule seed {failing} of 20; replay it with: {command}",
            ]
        )

        replay = pytester.runpytest_inprocess("-p", "no:cacheprovider", *shlex.split(command)[1:])
        replay.assert_outcomes(failed=1)
        replay.stdout.fnmatch_lines(
            [
                f"E*plait: failed under schedule seed {failing} (--plait-seed={failing}); "
                f"replay it with: {command}"
            ]
        )
        passes = pytester.runpytest_inprocess(
            "-p", "no:cacheprovider", "test_it.py::test_race", f"--plait-seed={passing}"
        )
        passes.assert_outcomes(passed=1)
        # Without seeds, --plait-seed still picks the schedule.
        fifo = pytester.runpytest_inprocess(
            "-p", "no:cacheprovider", "-k", "test_fifo", f"--plait-seed={failing}"
        )
        fifo.assert_outcomes(failed=1)

    def test_the_command_names_the_exact_node(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest

            @pytest.mark.plait(seeds=3)
            @pytest.mark.parametrize("word", ["a b"])
            async def test_word(word):
                assert word == "ab"
            """,
        )
        result.assert_outcomes(failed=1)
        command = "pytest 'test_it.py::test_word[a b]' --plait-seed=0"
        assert f"replay it with: {command}\n" in result.stdout.str()

    def test_every_seed_runs_with_fresh_async_fixtures(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import pytest, plait

            RUNS = []
            SYNC = []

            @pytest.fixture
            def once():
                SYNC.append(1)

            @pytest.fixture
            async def fresh(once):
                RUNS.append("up")
                yield len(RUNS)
                RUNS.append("down")

            @pytest.mark.plait(seeds=5)
            async def test_it(fresh):
                await plait.sleep(1)
                RUNS.append(fresh)

            def test_after():
                assert RUNS == ["up", 1, "down", "up", 4, "down", "up", 7, "down",
                                "up", 10, "down", "up", 13, "down"]
                assert SYNC == [1]
            """,
        )
        result.assert_outcomes(passed=2)


class TestCoexistence:
    def test_with_pytest_asyncio(self, pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import asyncio, pytest, pytest_asyncio, plait

            @pytest_asyncio.fixture
            async def aio_value():
                await asyncio.sleep(0)
                return asyncio.get_running_loop()

            @pytest.fixture
            async def plait_value():
                await plait.sleep(0)
                yield plait.current_task()

            @pytest.mark.asyncio
            async def test_asyncio(aio_value):
                assert aio_value is asyncio.get_running_loop()
                with pytest.raises(RuntimeError):
                    plait.current_task()

            @pytest.mark.plait
            async def test_plait(plait_value):
                assert plait_value is plait.current_task()

            @pytest.mark.plait
            @pytest.mark.asyncio
            async def test_both():
                pass
            """,
        )
        result.assert_outcomes(passed=2, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*test_both is marked both plait and asyncio: one event loop runs a test; "
                "remove one of the marks"
            ]
        )

    def test_asyncio_auto_mode_is_a_conflict(self, pytester: pytest.Pytester) -> None:
        pytester.makeini(INI.replace("asyncio_mode = strict", "asyncio_mode = auto"))
        result = run(
            pytester,
            """
            import pytest

            @pytest.mark.plait
            async def test_it():
                pass
            """,
        )
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*test_it is marked both plait and asyncio: one event loop runs a test; *"]
        )
