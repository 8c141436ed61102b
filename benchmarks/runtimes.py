"""The runtimes the benchmarks compare. Each is one function: run `main()` and return
its result. Imports are lazy so that a missing package only disables its runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from benchmarks.registry import runtime

Main = Callable[[], Awaitable[float]]


def _plait_probe() -> str | None:
    try:
        import plait
    except Exception as exc:  # the kernel is work in progress: report, do not crash
        return f"import failed: {type(exc).__name__}: {exc}"
    if not callable(getattr(plait, "run", None)):
        return "not available (plait.run missing)"
    return None


@runtime("plait", modules=("plait",), distributions=("plait",), probe=_plait_probe)
def run_plait(main: Main) -> float:
    """`plait.run(main)`"""
    import plait

    result: float = plait.run(main)
    return result


def _every_hook() -> object:
    """A plait instrument that overrides every hook with one that does nothing: the
    price of the hooks themselves."""
    import plait.abc

    def nothing(self: object, *args: object) -> None:
        pass

    hooks = [name for name in vars(plait.abc.Instrument) if not name.startswith("_")]
    cls = type("EveryHook", (plait.abc.Instrument,), dict.fromkeys(hooks, nothing))
    return cls()


def _no_hook() -> object:
    import plait.abc

    return plait.abc.Instrument()


def _tracer() -> object:
    import plait.trace

    return plait.trace.Tracer()


def _instrumented(name: str, make: Callable[[], object], doc: str) -> None:
    """Register runtime ``name``: ``plait.run(main, instruments=[make()])``, with the
    plait implementations (not in the default runtimes: ``--runtimes plait,NAME``)."""

    def run(main: Main) -> float:
        import plait

        result: float = plait.run(main, instruments=[make()])
        return result

    run.__doc__ = f"`plait.run(main, instruments=[...])` with {doc} (plait implementations)"
    runtime(name, modules=("plait",), family="plait", distributions=("plait",),
            probe=_plait_probe)(run)  # fmt: skip


_instrumented("plait+empty", _no_hook, "an instrument that overrides no hook")
_instrumented("plait+hooks", _every_hook, "an instrument whose every hook does nothing")
_instrumented("plait+tracer", _tracer, "a plait.trace.Tracer recording everything")


@runtime("asyncio")
def run_asyncio(main: Main) -> float:
    """`asyncio.run(main())` with the default (selector) event loop"""
    import asyncio

    async def coro() -> float:
        return await main()

    return asyncio.run(coro())


@runtime("uvloop", modules=("uvloop",), family="asyncio", distributions=("uvloop",))
def run_uvloop(main: Main) -> float:
    """`asyncio.Runner(loop_factory=uvloop.new_event_loop)`, asyncio implementations"""
    import asyncio

    import uvloop

    async def coro() -> float:
        return await main()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro())


@runtime(
    "plait.aio",
    modules=("plait",),
    family="asyncio",
    distributions=("plait",),
    probe=_plait_probe,
)
def run_plait_aio(main: Main) -> float:
    """`asyncio.Runner(loop_factory=plait.aio.new_event_loop)`, asyncio implementations:
    the same asyncio programs on plait's loop"""
    import asyncio

    import plait.aio

    async def coro() -> float:
        return await main()

    with asyncio.Runner(loop_factory=plait.aio.new_event_loop) as runner:
        return runner.run(coro())


@runtime("trio", modules=("trio",), distributions=("trio",))
def run_trio(main: Main) -> float:
    """`trio.run(main)`"""
    import trio

    return trio.run(main)
