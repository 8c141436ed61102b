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


def _hooked_instrument() -> object:
    """A plait instrument that overrides every hook with one that does nothing: the
    price of the hooks themselves."""
    import plait.abc

    def nothing(self: object, *args: object) -> None:
        pass

    hooks = [name for name in vars(plait.abc.Instrument) if not name.startswith("_")]
    cls = type("EveryHook", (plait.abc.Instrument,), dict.fromkeys(hooks, nothing))
    return cls()


@runtime(
    "plait+hooks",
    modules=("plait",),
    family="plait",
    distributions=("plait",),
    probe=_plait_probe,
)
def run_plait_hooked(main: Main) -> float:
    """`plait.run(main, instruments=[i])`, `i` an instrument overriding every hook with
    one that does nothing (plait implementations; not in the default runtimes)"""
    import plait

    result: float = plait.run(main, instruments=[_hooked_instrument()])
    return result


@runtime(
    "plait+empty",
    modules=("plait",),
    family="plait",
    distributions=("plait",),
    probe=_plait_probe,
)
def run_plait_empty(main: Main) -> float:
    """`plait.run(main, instruments=[plait.abc.Instrument()])`: an instrument that
    overrides no hook (plait implementations; not in the default runtimes)"""
    import plait
    import plait.abc

    result: float = plait.run(main, instruments=[plait.abc.Instrument()])
    return result


@runtime(
    "plait+tracer",
    modules=("plait",),
    family="plait",
    distributions=("plait",),
    probe=_plait_probe,
)
def run_plait_traced(main: Main) -> float:
    """`plait.run(main, instruments=[plait.trace.Tracer()])`: every step, wake-up,
    I/O wait and job recorded (plait implementations; not in the default runtimes)"""
    import plait
    import plait.trace

    result: float = plait.run(main, instruments=[plait.trace.Tracer()])
    return result


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
