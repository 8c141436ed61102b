"""The pytest plugin: ``async def`` tests that run under ``plait.run``. Layer L7.

Theory of operation. The plugin is registered through the ``pytest11`` entry point. A
*plait test* is an ``async def`` test marked ``@pytest.mark.plait`` (in ``plait_mode =
auto``, also every ``async def`` test that no other runner claims: the marker is added
at collection). Its validated settings go into the item's stash in
``pytest_runtest_setup``; everything else asks the stash, so a test that failed
validation never reaches the fixtures or the runner.

Each test gets its own loop, so its async fixtures must be set up inside the test's own
``plait.run``, which only starts once pytest's setup phase is over. During setup,
``pytest_fixture_setup`` therefore answers, for every async fixture (coroutine or async
generator function) of a plait test, and for every sync fixture that depends on one, a
placeholder, :class:`_Deferred`, that records the function and its arguments (pytest's
own "async fixture not handled" check never runs for them). The test then runs as the
main task of ``plait.run``: it sets up the placeholders in dependency order, runs the
body, and finishes the generator fixtures in reverse order, even when the body fails.
A teardown error is kept on its placeholder and raised by a finalizer pytest calls when
it tears the fixture down, so pytest reports it as it reports a sync fixture's: an error
at teardown, beside the body's own result. Async fixtures of other tests are left to
the plugins that own them (pytest-asyncio, anyio).

A fixture that yields inside a cancel scope (a ``TaskGroup``, ``move_on_after``) holds
that scope across the test body, in the same task, as an ``async with`` would. When the
body ends in ``Cancelled``, that cancellation is thrown into the fixtures at their
``yield``, innermost first, so the scope that caused it can catch it: a fixture's
``TaskGroup`` whose child crashed then reports the child's error, not a bare
``Cancelled``. Other exceptions are not thrown into fixtures (pytest's rule).

``seeds=N`` repeats the run (fixtures included) under ``Seeded(0)`` ... ``Seeded(N-1)``
and stops at the first failure, which gets a note naming the seed and the command that
replays it (``--plait-seed``). Running each seed as a separate pytest item was
rejected: it multiplies the report by N and sets sync fixtures up N times for nothing.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeGuard

import pytest
from _pytest.fixtures import SubRequest, resolve_fixture_function

import plait

from .._core._clock import MockClock
from .._core._schedule import Seeded

__all__: list[str] = []

_OTHER_RUNNERS = ("asyncio", "anyio", "trio")
_ACCEPTS = "autojump (True or False) and seeds (an int >= 1)"


@dataclass(frozen=True)
class _Settings:
    """What ``@pytest.mark.plait`` (and ``--plait-seed``) asked for one test."""

    autojump: bool
    seeds: int | None  # None: one run (FIFO, or the --plait-seed)


_SETTINGS = pytest.StashKey[_Settings]()
_MODE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "plait_mode",
        "'strict' (the default): only tests marked @pytest.mark.plait run under plait; "
        "'auto': also every async def test no other plugin claims",
        default="strict",
    )
    parser.getgroup("plait").addoption(
        "--plait-seed",
        type=int,
        metavar="N",
        dest="plait_seed",
        help="run each plait test once, under the schedule seed N (replays a failure "
        "reported by @pytest.mark.plait(seeds=...))",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "plait(autojump=None, seeds=None): run this async def test, and its async "
        "fixtures, under plait.run. autojump=True: virtual time (MockClock). seeds=N: "
        "run it under N schedule seeds (virtual time unless autojump=False).",
    )
    mode = str(config.getini("plait_mode")).strip()
    if mode not in ("strict", "auto"):
        raise pytest.UsageError(
            f"plait_mode (pytest configuration) must be 'strict' or 'auto', got {mode!r}"
        )
    config.stash[_MODE] = mode


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.config.stash[_MODE] != "auto" or not isinstance(item, pytest.Function):
        return
    if not inspect.iscoroutinefunction(item.obj) or item.get_closest_marker("plait"):
        return
    if _other_runners(item):
        return
    item.add_marker("plait")


def _other_runners(item: pytest.Function) -> list[str]:
    claimed = [name for name in _OTHER_RUNNERS if item.get_closest_marker(name)]
    if "anyio_backend" in item.fixturenames and "anyio" not in claimed:
        claimed.append("anyio")
    return claimed


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not isinstance(item, pytest.Function) or item.get_closest_marker("plait") is None:
        return
    func = item.obj
    inner = getattr(getattr(func, "hypothesis", None), "inner_test", None)
    if inspect.iscoroutinefunction(inner):
        _fail(
            f"@pytest.mark.plait does not run Hypothesis tests; in {item.name}, call "
            "plait.run() from a regular @given test instead"
        )
    if not inspect.iscoroutinefunction(func):
        if not any(mark.name == "plait" for mark in item.own_markers):
            return  # a regular test under a module's or class's mark: it runs as usual
        kind = "an async generator" if inspect.isasyncgenfunction(func) else "a regular function"
        _fail(f"@pytest.mark.plait marks async def tests; {item.name} is {kind}")
    settings = _parse_markers(item)
    others = _other_runners(item)
    if others:
        hint = ""
        if "asyncio" in others and _ini(item.config, "asyncio_mode") == "auto":
            hint = (
                " (pytest-asyncio in asyncio_mode = auto claims every async test: set "
                "asyncio_mode = strict to use both)"
            )
        _fail(
            f"{item.name} is marked both plait and {others[0]}: one event loop runs a test; "
            f"remove one of the marks{hint}"
        )
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if not defs:
            continue
        fixturedef = defs[-1]
        if fixturedef.scope != "function" and _is_plain_async(fixturedef.func):
            _fail(
                f"async fixture {name!r} has scope {fixturedef.scope!r}, but {item.name} "
                "runs under plait, where each test has its own loop: make the fixture "
                "function-scoped (the default)"
            )
    item.stash[_SETTINGS] = settings


def _parse_markers(item: pytest.Function) -> _Settings:
    kwargs: dict[str, Any] = {}
    for marker in item.iter_markers("plait"):  # the closest first: it wins
        if marker.args:
            _fail(
                f"@pytest.mark.plait takes keyword arguments only, {_ACCEPTS}; "
                f"got {marker.args!r} on {item.name}"
            )
        for key, value in marker.kwargs.items():
            kwargs.setdefault(key, value)
    for key in kwargs:
        if key not in ("autojump", "seeds"):
            _fail(f"@pytest.mark.plait got an unknown argument {key!r}; it accepts {_ACCEPTS}")
    autojump, seeds = kwargs.get("autojump"), kwargs.get("seeds")
    if autojump is not None and type(autojump) is not bool:
        _fail(f"@pytest.mark.plait(autojump={autojump!r}): autojump must be True or False")
    if seeds is not None and (type(seeds) is not int or seeds < 1):
        _fail(f"@pytest.mark.plait(seeds={seeds!r}): seeds must be an int >= 1")
    if autojump is None:
        autojump = seeds is not None
    return _Settings(autojump=autojump, seeds=seeds)


def _fail(message: str) -> None:
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


def _ini(config: pytest.Config, name: str) -> object:
    try:
        return config.getini(name)
    except ValueError:  # not registered: the plugin that owns it is not installed
        return None


def _is_plain_async(func: object) -> bool:
    """An async fixture function no other plugin claimed (pytest-asyncio marks its own)."""
    if not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
        return False
    return not getattr(getattr(func, "__func__", func), "_force_asyncio_fixture", False)


class _Deferred:
    """The value pytest holds for a fixture of a plait test that must be set up inside
    the test's loop: an async fixture, or a sync one that depends on one. ``kwargs``
    may hold other placeholders. Hashed by identity."""

    __slots__ = ("func", "kwargs", "name", "teardown_error")

    def __init__(self, name: str, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.name = name
        self.func = func
        self.kwargs = kwargs
        # Set by the teardown of a run; raised, and cleared, by pytest's finalizer.
        self.teardown_error: BaseException | None = None

    def raise_teardown_error(self) -> None:
        error, self.teardown_error = self.teardown_error, None
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"<fixture {self.name!r}: set up inside the test's plait.run>"


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: SubRequest
) -> _Deferred | None:
    if fixturedef.scope != "function" or _SETTINGS not in request.node.stash:
        return None
    kwargs = {name: request.getfixturevalue(name) for name in fixturedef.argnames}
    func = resolve_fixture_function(fixturedef, request)
    if not _is_plain_async(func) and not any(isinstance(v, _Deferred) for v in kwargs.values()):
        return None
    deferred = _Deferred(fixturedef.argname, func, kwargs)
    fixturedef.cached_result = (deferred, fixturedef.cache_key(request), None)
    fixturedef.addfinalizer(deferred.raise_teardown_error)
    return deferred


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    settings = pyfuncitem.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    __tracebackhide__ = True
    forced: int | None = pyfuncitem.config.getoption("plait_seed")
    seeds: list[int | None]
    if forced is not None:
        seeds = [forced]
    elif settings.seeds is not None:
        seeds = list(range(settings.seeds))
    else:
        seeds = [None]
    test = _TestRun(pyfuncitem)
    for seed in seeds:
        clock = MockClock(autojump_threshold=0) if settings.autojump else None
        schedule = None if seed is None else Seeded(seed)
        failure: BaseException | None = None
        try:
            plait.run(test.main, clock=clock, schedule=schedule, name=pyfuncitem.name)
        except BaseException as exc:
            failure = exc
        errors = [e for e in (failure, *test.teardown_errors) if e is not None]
        if seed is not None and errors:
            note = _seed_note(pyfuncitem, seed, settings.seeds, forced)
            for error in errors:
                if _is_failure(error):
                    error.add_note(note)
            pyfuncitem.user_properties.append(("plait_seed", seed))
        if failure is not None:
            raise failure
        if errors:
            break  # the teardown errors are raised when pytest tears the fixtures down
    return True


def _is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the test failed (was not skipped, xfailed or interrupted)."""
    return not isinstance(
        exc,
        (
            pytest.skip.Exception,
            pytest.xfail.Exception,
            pytest.exit.Exception,
            KeyboardInterrupt,
            SystemExit,
        ),
    )


def _seed_note(item: pytest.Function, seed: int, of: int | None, forced: int | None) -> str:
    how = f"(--plait-seed={forced})" if forced is not None else f"of {of}"
    return (
        f"plait: failed under schedule seed {seed} {how}; replay it with: "
        f"{_replay_command(item, seed)}"
    )


def _replay_command(item: pytest.Item, seed: int) -> str:
    """The shell command that runs ``item`` alone under the schedule seed ``seed``, from
    the directory pytest was started in."""
    path = os.path.relpath(item.path, item.config.invocation_params.dir)
    _, _, rest = item.nodeid.partition("::")
    node = f"{path}::{rest}" if rest else path
    return f"pytest {shlex.quote(node)} --plait-seed={seed}"


class _TestRun:
    """One plait test: its function, arguments and deferred fixtures; :meth:`main` is
    the main task of each of its runs."""

    def __init__(self, item: pytest.Function) -> None:
        self.func = item.obj
        self.testargs = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
        self.deferred = [v for v in item.funcargs.values() if isinstance(v, _Deferred)]
        # The teardown errors of the last run (also kept on their placeholders).
        self.teardown_errors: list[BaseException] = []

    async def main(self) -> None:
        __tracebackhide__ = True
        values: dict[_Deferred, Any] = {}
        active: list[tuple[_Deferred, _Gen]] = []  # generator fixtures, in setup order
        self.teardown_errors = []
        failure: BaseException | None = None
        try:
            for deferred in self.deferred:
                await _set_up(deferred, values, active)
            kwargs = {k: _value(v, values) for k, v in self.testargs.items()}
            await self.func(**kwargs)
        except BaseException as exc:
            failure = exc
        carried = failure if _is_own_cancellation(failure) else None
        for deferred, gen in reversed(active):
            if _is_own_cancellation(carried) and isinstance(gen, AsyncGenerator):
                carried = await _throw(deferred, gen, carried)
            else:
                await _finish(deferred, gen)
            if deferred.teardown_error is not None:
                self.teardown_errors.append(deferred.teardown_error)
        if failure is None:
            return
        if _is_own_cancellation(failure):
            if carried is None:
                return  # a fixture's cancel scope caught it: that scope ended the test
            raise carried
        raise failure


_Gen = Generator[Any] | AsyncGenerator[Any]


def _value(value: Any, values: dict[_Deferred, Any]) -> Any:
    return values[value] if isinstance(value, _Deferred) else value


def _is_own_cancellation(exc: BaseException | None) -> TypeGuard[BaseException]:
    """A ``Cancelled`` that some cancel scope in this task may catch (``TaskCancelled``
    reports another task's fate: no scope catches it)."""
    return isinstance(exc, plait.Cancelled) and not isinstance(exc, plait.TaskCancelled)


async def _set_up(
    deferred: _Deferred, values: dict[_Deferred, Any], active: list[tuple[_Deferred, _Gen]]
) -> None:
    __tracebackhide__ = True
    if deferred in values:
        return
    kwargs = {}
    for name, value in deferred.kwargs.items():
        if isinstance(value, _Deferred):
            await _set_up(value, values, active)
        kwargs[name] = _value(value, values)
    func = deferred.func
    try:
        if inspect.isasyncgenfunction(func):
            agen = func(**kwargs)
            active.append((deferred, agen))
            try:
                values[deferred] = await agen.asend(None)
            except StopAsyncIteration:
                active.pop()
                raise ValueError(f"the fixture {deferred.name!r} did not yield a value") from None
        elif inspect.isgeneratorfunction(func):
            gen = func(**kwargs)
            active.append((deferred, gen))
            try:
                values[deferred] = next(gen)
            except StopIteration:
                active.pop()
                raise ValueError(f"the fixture {deferred.name!r} did not yield a value") from None
        elif inspect.iscoroutinefunction(func):
            values[deferred] = await func(**kwargs)
        else:
            values[deferred] = func(**kwargs)
    except Exception as exc:
        exc.add_note(f"plait: raised while setting up the fixture {deferred.name!r}")
        raise


async def _finish(deferred: _Deferred, gen: _Gen) -> None:
    """Run a generator fixture's teardown (the code after its ``yield``); keep what it
    raises on the placeholder."""
    try:
        if isinstance(gen, AsyncGenerator):
            await gen.asend(None)
        else:
            next(gen)
    except (StopAsyncIteration, StopIteration):
        return
    except BaseException as exc:
        deferred.teardown_error = exc
        return
    deferred.teardown_error = ValueError(f"the fixture {deferred.name!r} yielded more than once")
    await _close(gen)


async def _throw(
    deferred: _Deferred, agen: AsyncGenerator[Any], cancelled: BaseException
) -> BaseException | None:
    """Throw the body's ``Cancelled`` into an async generator fixture at its ``yield``;
    return what then goes on outward: the same ``Cancelled``, None if the fixture
    caught it, or the error that replaced it (a ``TaskGroup``'s)."""
    try:
        await agen.athrow(cancelled)
    except StopAsyncIteration:
        return None
    except BaseException as exc:
        return exc
    deferred.teardown_error = ValueError(f"the fixture {deferred.name!r} yielded more than once")
    await _close(agen)
    return None


async def _close(gen: _Gen) -> None:
    if isinstance(gen, AsyncGenerator):
        await gen.aclose()
    else:
        gen.close()
