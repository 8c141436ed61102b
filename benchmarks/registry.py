"""Registries of workloads, runtimes and implementations.

A *workload* is a named measurement (``spawn_join``) with a unit, a direction ("higher is
better" or not), parameters for the full and the ``--quick`` run, and a ``metric`` function
that turns what an implementation returned (usually the elapsed seconds of the timed core)
into the reported number.

A *runtime* is a named way of running an async function (``asyncio.run``, ``trio.run``,
...). A runtime may name a ``family``: an implementation registered for the family is used
when the runtime has none of its own (``uvloop`` reuses the ``asyncio`` implementations).

An *implementation* is one ``async def`` per (workload, runtime or family). It receives the
workload parameters as keyword arguments, times the core of the work with
``time.perf_counter`` and returns the raw measurement (seconds, bytes, ...).

Workload modules live in ``benchmarks/workloads/`` and are imported by ``load_workloads``;
they must import runtime packages (trio, uvloop, plait) lazily, inside the implementations.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

Params = Mapping[str, Any]
Impl = Callable[..., Awaitable[float]]
"""``async def impl(**params) -> float``: returns the raw measurement."""
Metric = Callable[..., float]
"""``def metric(raw, **params) -> float``: turns the raw measurement into the result."""
Runner = Callable[[Callable[[], Awaitable[float]]], float]
"""``def runner(main) -> float``: runs the async function ``main`` to completion."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Workload:
    name: str
    unit: str
    higher_is_better: bool
    params: Params
    quick: Params
    metric: Metric
    doc: str

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def sizes(self, quick: bool) -> dict[str, Any]:
        """The parameters of a run: ``params`` updated with ``quick`` for a quick run."""
        return {**self.params, **self.quick} if quick else dict(self.params)


@dataclass(frozen=True)
class Runtime:
    name: str
    runner: Runner
    modules: tuple[str, ...]
    """Modules that must be importable; if one is missing the runtime is "not installed"."""
    family: str | None
    distributions: tuple[str, ...]
    """Distributions whose versions the report shows."""
    probe: Callable[[], str | None] | None = None
    """Extra availability check: returns ``None`` if usable, else the reason it is not."""
    doc: str = ""

    def unavailable(self) -> str | None:
        """``None`` if the runtime can run here, else a short reason ("not installed")."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return "not installed"
        return self.probe() if self.probe is not None else None

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for dist in self.distributions:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out


WORKLOADS: dict[str, Workload] = {}
RUNTIMES: dict[str, Runtime] = {}
IMPLS: dict[tuple[str, str], Impl] = {}


def workload(
    name: str,
    *,
    unit: str,
    higher_is_better: bool,
    params: Params,
    quick: Params | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as the *metric* of workload ``name``.

    The function receives the raw measurement and the parameters as keyword arguments;
    its docstring describes the workload in the report::

        @workload("spawn_join", unit="tasks/s", higher_is_better=True,
                  params={"n": 100_000}, quick={"n": 1_000})
        def spawn_join(seconds: float, n: int) -> float:
            "Spawn n no-op tasks in one task group and wait for all of them."
            return n / seconds
    """

    def register(fn: F) -> F:
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} is registered twice")
        doc = " ".join((fn.__doc__ or "").split())
        WORKLOADS[name] = Workload(
            name, unit, higher_is_better, dict(params), dict(quick or {}), fn, doc
        )
        return fn

    return register


def impl(workload_name: str, *runtimes: str) -> Callable[[F], F]:
    """Register the decorated ``async def`` as the implementation of a workload for the
    given runtimes or runtime families (``@impl("spawn_join", "asyncio")`` also serves
    uvloop, whose family is asyncio)."""
    if not runtimes:
        raise ValueError("impl() needs at least one runtime name")

    def register(fn: F) -> F:
        for rt in runtimes:
            key = (workload_name, rt)
            if key in IMPLS:
                raise ValueError(f"implementation {key} is registered twice")
            IMPLS[key] = fn
        return fn

    return register


def runtime(
    name: str,
    *,
    modules: tuple[str, ...] = (),
    family: str | None = None,
    distributions: tuple[str, ...] = (),
    probe: Callable[[], str | None] | None = None,
) -> Callable[[F], F]:
    """Register the decorated ``runner(main) -> float`` as runtime ``name``. ``runner``
    runs the argument-less async function ``main`` and returns its result."""

    def register(fn: F) -> F:
        if name in RUNTIMES:
            raise ValueError(f"runtime {name!r} is registered twice")
        doc = " ".join((fn.__doc__ or "").split())
        RUNTIMES[name] = Runtime(name, fn, modules, family, distributions, probe, doc)
        return fn

    return register


def find_impl(workload_name: str, runtime_name: str) -> Impl | None:
    """The implementation for the runtime itself, else for its family, else ``None``."""
    found = IMPLS.get((workload_name, runtime_name))
    if found is None:
        family = RUNTIMES[runtime_name].family
        if family is not None:
            found = IMPLS.get((workload_name, family))
    return found


def load_all() -> None:
    """Import the runtime definitions and every module in ``benchmarks.workloads``."""
    importlib.import_module("benchmarks.runtimes")
    package = importlib.import_module("benchmarks.workloads")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    order: tuple[str, ...] = getattr(package, "ORDER", ())
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(WORKLOADS.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    WORKLOADS.clear()
    WORKLOADS.update(ordered)
