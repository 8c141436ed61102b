"""``plait demo``: one program that uses every part of plait at once. Layer L7.

A small key-value service on 127.0.0.1 serves a thousand clients, each a task with its
own connection that sends GET and SET requests with a pause between them, and now and
then a SLOW request it gives up on (``move_on_after``) and reconnects after. Meanwhile:

- CPU-bound jobs, closures that count primes in a range, run on a ``ProcessPool``
  (the closures travel by value); one job is given too short a deadline and its
  cancellation kills its worker process, which the pool replaces;
- a thread hashes a large buffer with ``hashlib`` every half second
  (``plait.to_thread``: hashlib releases the GIL);
- a subprocess pipeline, ``python -c generator | sort | uniq -c``, runs every two
  seconds, its pipes pumped by tasks;
- a ``plait.sched`` scheduler, the standard library's API, runs a periodic snapshot of
  the store in a worker thread;
- every SET goes to an audit trail: an async-generator pipeline reads the service's
  change queue, formats the records and feeds a ``ThreadQueue`` that a plain
  ``threading.Thread`` drains into a file.

Progress is shown while it runs (one updating line on a terminal, a plain line every
few seconds otherwise); at the end a table says what each part did, with the
service's throughput and latency, and the number of errors. A ``plait.trace.Tracer``
records one second of the run (added and removed while it runs), written as an HTML
timeline. The exit status is 0 only when there were no errors.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import plait
import plait.lowlevel
import plait.sched
from plait.trace import Tracer

__all__ = ["main"]

PIPELINE_GENERATOR = """
import random
rng = random.Random(7)
for _ in range(20_000):
    print(rng.choice(["get", "set", "slow", "miss", "hit"]))
"""


@dataclass
class Options:
    clients: int = 1000
    duration: float = 15.0
    jobs: int = 24
    trace: str = "plait-demo-trace.html"
    trace_at: float = 3.0
    trace_for: float = 1.0
    hash_mib: int = 32
    seed: int = 1


@dataclass
class Part:
    """What one part of the demo did: a count, a unit, and one line of detail."""

    name: str
    what: str
    count: int = 0
    unit: str = ""
    extra: str = ""


@dataclass
class Stats:
    started: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, per request
    traced: tuple[float, float] = (math.inf, math.inf)  # the traced window
    requests: int = 0
    gets: int = 0
    sets: int = 0
    slow_abandoned: int = 0
    reconnects: int = 0
    clients_done: int = 0
    jobs_done: int = 0
    primes: int = 0
    jobs_cancelled: int = 0
    hashes: int = 0
    hashed_bytes: int = 0
    pipelines: int = 0
    pipeline_lines: int = 0
    sched_ticks: int = 0
    audited: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, part: str, exc: BaseException) -> None:
        self.errors.append(f"{part}: {type(exc).__name__}: {exc}")


# -- the key-value service ------------------------------------------------------------


class Store:
    """The service: ``GET key``, ``SET key value``, ``SLOW`` (answers after 0.3 s),
    one request per line. Each SET is also put on ``changes`` for the audit trail."""

    def __init__(self, stats: Stats) -> None:
        self.data: dict[str, str] = {}
        self.changes: plait.Queue[tuple[float, str, str]] = plait.Queue(10_000)
        self.stats = stats

    async def handle(self, stream: plait.SocketStream) -> None:
        try:
            while True:
                try:
                    line = await stream.receive_until(b"\n", max_bytes=1024)
                except plait.EndOfStream:
                    return  # the client closed its connection
                verb, _, rest = line.decode().rstrip("\n").partition(" ")
                if verb == "GET":
                    value = self.data.get(rest)
                    reply = "NONE\n" if value is None else f"VALUE {value}\n"
                elif verb == "SET":
                    key, _, value = rest.partition(" ")
                    self.data[key] = value
                    await self.changes.put((time.time(), key, value))
                    reply = "OK\n"
                elif verb == "SLOW":
                    await plait.sleep(0.3)
                    reply = "OK\n"
                else:
                    reply = f"ERROR unknown command {verb!r}\n"
                await stream.send_all(reply.encode())
        except plait.BrokenResourceError:
            return  # the client went away mid-reply (a SLOW request it gave up on)
        finally:
            await stream.aclose()


async def client(number: int, port: int, stats: Stats, until: float) -> None:
    rng = random.Random(number)
    await plait.sleep(rng.random() * 0.5)  # connect over half a second, not all at once
    stream = await plait.open_tcp_stream("127.0.0.1", port)
    try:
        while plait.current_time() < until:
            roll = rng.random()
            if roll < 0.002:
                # A request the client will not wait for: it gives up after 50 ms, and
                # its connection (whose reply is still to come) is no use any more.
                with plait.move_on_after(0.05) as scope:
                    await stream.send_all(b"SLOW\n")
                    await stream.receive_until(b"\n")
                if scope.cancelled_caught:
                    stats.slow_abandoned += 1
                    await stream.aclose()
                    stream = await plait.open_tcp_stream("127.0.0.1", port)
                    stats.reconnects += 1
                continue
            key = f"k{rng.randrange(5000)}"
            if roll < 0.3:
                request = f"SET {key} {number}.{stats.requests}\n".encode()
                stats.sets += 1
            else:
                request = f"GET {key}\n".encode()
                stats.gets += 1
            began = time.perf_counter()
            await stream.send_all(request)
            reply = await stream.receive_until(b"\n")
            ended = time.perf_counter()
            if not reply.startswith((b"OK", b"VALUE", b"NONE")):
                raise RuntimeError(f"unexpected reply {reply!r} to {request!r}")
            stats.requests += 1
            if began > stats.traced[1] or ended < stats.traced[0]:
                stats.latencies.append(ended - began)
            await plait.sleep(0.02 + rng.random() * 0.18)  # the user thinks
    finally:
        await stream.aclose()
        stats.clients_done += 1


# -- CPU-bound closures on the process pool --------------------------------------------


def prime_counter(width: int) -> Callable[[int], int]:
    """A closure: ``width`` is captured, and travels to the worker with the function."""

    def count_primes(start: int) -> int:
        count = 0
        for n in range(max(start, 2), start + width):
            if all(n % d for d in range(2, math.isqrt(n) + 1)):
                count += 1
        return count

    return count_primes


async def cpu_jobs(options: Options, stats: Stats, until: float) -> None:
    workers = max(1, (os.cpu_count() or 2) - 1)  # a core stays with the service
    count_primes = prime_counter(60_000)
    async with plait.ProcessPool(workers) as pool:
        await pool.run_sync(prime_counter(10), 2)  # the worker is up: time what follows
        # A job with a deadline it cannot meet: cancelling it kills its worker.
        with plait.move_on_after(0.2) as scope:
            await pool.run_sync(prime_counter(5_000_000), 10**9)
        stats.jobs_cancelled += scope.cancelled_caught
        starts = [10**7 + i * 60_000 for i in range(options.jobs)]
        async for primes in pool.map(count_primes, starts):
            stats.jobs_done += 1
            stats.primes += primes
            if plait.current_time() >= until:
                break


# -- hashing on threads ------------------------------------------------------------------


async def hashing(options: Options, stats: Stats, until: float) -> None:
    # Making 32 MiB of random bytes takes a tenth of a second: not on the loop's thread.
    buffer = await plait.to_thread.run_sync(
        random.Random(options.seed).randbytes, options.hash_mib * 2**20
    )
    while plait.current_time() < until:
        digest = await plait.to_thread.run_sync(lambda: hashlib.sha256(buffer).hexdigest())
        assert len(digest) == 64
        stats.hashes += 1
        stats.hashed_bytes += len(buffer)
        await plait.sleep(0.5)


# -- a subprocess pipeline -----------------------------------------------------------------


async def pump(source: Any, sink: Any) -> None:
    async for chunk in source:
        await sink.send_all(chunk)
    await sink.send_eof()


async def pipelines(stats: Stats, until: float) -> None:
    pipe = subprocess.PIPE
    while plait.current_time() < until:
        async with (
            await plait.open_process(
                [sys.executable, "-c", PIPELINE_GENERATOR], stdout=pipe
            ) as gen,
            await plait.open_process(["sort"], stdin=pipe, stdout=pipe) as sort,
            await plait.open_process(["uniq", "-c"], stdin=pipe, stdout=pipe) as uniq,
        ):
            assert gen.stdout and sort.stdin and sort.stdout and uniq.stdin and uniq.stdout
            async with plait.TaskGroup() as tg:
                tg.spawn(pump, gen.stdout, sort.stdin)
                tg.spawn(pump, sort.stdout, uniq.stdin)
                counted = b"".join([chunk async for chunk in uniq.stdout])
            codes = [await p.wait() for p in (gen, sort, uniq)]
        if codes != [0, 0, 0]:
            raise RuntimeError(f"the pipeline's exit codes were {codes}")
        total = sum(int(line.split()[0]) for line in counted.decode().splitlines())
        if total != 20_000:
            raise RuntimeError(f"the pipeline counted {total} lines of 20000")
        stats.pipelines += 1
        stats.pipeline_lines += total
        await plait.sleep(2.0)


# -- periodic work on plait.sched ------------------------------------------------------------


def snapshots(store: Store, stats: Stats, stop: threading.Event) -> None:
    """Runs in a worker thread: the standard library's sched API, plait's scheduler."""
    scheduler = plait.sched.scheduler()

    def tick() -> None:
        len(store.data)  # (a real snapshot would write the store somewhere)
        stats.sched_ticks += 1
        if not stop.is_set():
            scheduler.enter(0.5, 1, tick)

    scheduler.enter(0.5, 1, tick)
    scheduler.run()


# -- the audit trail: async generators into a ThreadQueue, drained by a thread -------------


async def changes(store: Store) -> AsyncIterator[list[tuple[float, str, str]]]:
    """The SETs, in batches: each wait for the queue takes what has piled up with it.
    (Every plait await is a checkpoint, where every other ready task runs first: one
    item per await would move this pipeline at the pace of the loop's iterations.)"""
    while True:
        batch = [await store.changes.get()]
        while True:
            try:
                batch.append(store.changes.get_nowait())
            except plait.WouldBlock:
                break
        if not batch[-1][1]:  # the end marker
            if len(batch) > 1:
                yield batch[:-1]
            return
        yield batch


async def records(source: AsyncIterator[list[tuple[float, str, str]]]) -> AsyncIterator[str]:
    async for batch in source:
        yield "".join(f"{when:.6f} SET {key}={value}\n" for when, key, value in batch)


def audit_writer(queue: plait.ThreadQueue[str | None], path: Path, stats: Stats) -> None:
    """A plain thread: takes blocks of records from the queue until None, appends them."""
    with path.open("w") as file:
        while (block := queue.get()) is not None:
            file.write(block)
            stats.audited += block.count("\n")


async def audit(store: Store, stats: Stats, directory: Path) -> None:
    queue: plait.ThreadQueue[str | None] = plait.ThreadQueue(100)
    writer = threading.Thread(
        target=audit_writer, args=(queue, directory / "audit.log", stats), name="audit writer"
    )
    writer.start()
    try:
        async for record in records(changes(store)):
            await queue.aput(record)
    finally:
        with plait.CancelScope(shield=True):  # the writer must see its end marker
            await queue.aput(None)
            await plait.to_thread.run_sync(writer.join)


# -- progress and the summary ----------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def progress_line(stats: Stats, options: Options) -> str:
    elapsed = plait.current_time() - stats.started
    rate = stats.requests / elapsed if elapsed > 0 else 0.0
    return (
        f"{elapsed:5.1f}s  requests {stats.requests:,} ({rate:,.0f}/s)  "
        f"jobs {stats.jobs_done}/{options.jobs}  hashed {stats.hashed_bytes >> 20:,} MiB  "
        f"pipelines {stats.pipelines}  sched {stats.sched_ticks}  "
        f"audited {stats.audited:,}  errors {len(stats.errors)}"
    )


async def show_progress(stats: Stats, options: Options, out: TextIO) -> None:
    tty = out.isatty()
    try:
        while True:
            await plait.sleep(0.2 if tty else 3.0)
            if tty:
                out.write("\r\x1b[K" + progress_line(stats, options))
            else:
                out.write(progress_line(stats, options) + "\n")
            out.flush()
    finally:
        if tty:
            out.write("\r\x1b[K")
            out.flush()


def summary(stats: Stats, options: Options, elapsed: float, clients: int) -> str:
    p50 = percentile(stats.latencies, 50) * 1e3
    p99 = percentile(stats.latencies, 99) * 1e3
    parts = [
        Part(
            "TCP key-value service",
            f"{clients:,} clients, GET/SET, p50 {p50:.2f} ms, p99 {p99:.2f} ms",
            stats.requests,
            "requests",
            f"{stats.requests / elapsed:,.0f}/s",
        ),
        Part(
            "  timeouts",
            "SLOW requests given up after 50 ms (move_on_after), reconnected",
            stats.slow_abandoned,
            "abandoned",
        ),
        Part(
            "process pool",
            "closures counting primes in 60,000 numbers each",
            stats.jobs_done,
            "jobs",
            f"{stats.primes:,} primes",
        ),
        Part(
            "  cancellation",
            "a job past its deadline: its worker killed and replaced",
            stats.jobs_cancelled,
            "cancelled",
        ),
        Part(
            "threads",
            f"sha256 of a {options.hash_mib} MiB buffer (hashlib frees the GIL)",
            stats.hashes,
            "hashes",
            f"{stats.hashed_bytes / elapsed / 1e6:,.0f} MB/s",
        ),
        Part(
            "subprocesses",
            "python generator | sort | uniq -c, pipes pumped by tasks",
            stats.pipelines,
            "pipelines",
            f"{stats.pipeline_lines:,} lines",
        ),
        Part(
            "plait.sched", "snapshots every 0.5 s, in a worker thread", stats.sched_ticks, "ticks"
        ),
        Part(
            "async generators",
            "SETs -> audit records -> ThreadQueue -> a plain thread",
            stats.audited,
            "records",
        ),
    ]
    width = max(len(p.name) for p in parts)
    lines = [f"plait demo: {elapsed:.1f} s, {options.clients:,} clients", ""]
    for p in parts:
        count = f"{p.count:,} {p.unit}"
        lines.append(f"  {p.name:<{width}}  {count:>18}  {p.extra:>14}  {p.what}")
    lines.append("")
    lines.append(f"  errors: {len(stats.errors) or 'none'}")
    lines.extend(f"    {e}" for e in stats.errors[:20])
    return "\n".join(lines)


# -- the whole program -----------------------------------------------------------------------


def raise_fd_limit(clients: int) -> int:
    """Two descriptors per client (its end and the server's) and some to spare: raise
    the soft limit as far as the hard one allows; fewer clients if it is too low."""
    needed = 2 * clients + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return min(clients, max(1, (soft - 256) // 2))


async def guarded(part: str, stats: Stats, fn: Callable[..., Any], *args: Any) -> None:
    """Run one part; an error is counted and shown in the summary, not fatal."""
    try:
        await fn(*args)
    except Exception as exc:
        stats.error(part, exc)


async def run_demo(options: Options, out: TextIO) -> tuple[Stats, Tracer, int, float]:
    stats = Stats()
    clients = raise_fd_limit(options.clients)
    if clients < options.clients:
        print(
            f"plait demo: the file descriptor limit allows {clients} clients, not "
            f"{options.clients} (ulimit -n)",
            file=out,
        )
    store = Store(stats)
    tracer = Tracer()
    stats.started = plait.current_time()
    until = stats.started + options.duration
    stop_sched = threading.Event()
    with tempfile.TemporaryDirectory(prefix="plait-demo-") as tmp:
        async with plait.TaskGroup() as service:
            serve = functools.partial(plait.serve_tcp, backlog=4096)
            listeners = await service.start(serve, store.handle, 0, "127.0.0.1")
            port = listeners[0].port
            service.spawn(show_progress, stats, options, out, name="progress")
            service.spawn(guarded, "audit", stats, audit, store, stats, Path(tmp), name="audit")

            async def traced_window() -> None:
                await plait.sleep(options.trace_at)
                stats.traced = (time.perf_counter(), math.inf)
                plait.lowlevel.add_instrument(tracer)
                try:
                    await plait.sleep(options.trace_for)
                finally:
                    plait.lowlevel.remove_instrument(tracer)
                    stats.traced = (stats.traced[0], time.perf_counter())

            async with plait.TaskGroup() as work:
                work.spawn(traced_window, name="trace window")
                for number in range(clients):
                    work.spawn(guarded, "client", stats, client, number, port, stats, until)
                work.spawn(guarded, "process pool", stats, cpu_jobs, options, stats, until)
                work.spawn(guarded, "threads", stats, hashing, options, stats, until)
                work.spawn(guarded, "subprocesses", stats, pipelines, stats, until)
                work.spawn(
                    guarded,
                    "plait.sched",
                    stats,
                    plait.to_thread.run_sync,
                    snapshots,
                    store,
                    stats,
                    stop_sched,
                )
                await plait.sleep_until(until)
                stop_sched.set()
            await store.changes.put((time.time(), "", ""))  # the audit trail's end
            await plait.sleep(0)
            service.cancel_scope.cancel()  # the server, the progress line
    return stats, tracer, clients, plait.current_time() - stats.started


def _parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="plait demo",
        description="A TCP key-value service with many clients, CPU jobs on a process "
        "pool, hashing on threads, a subprocess pipeline, plait.sched, and an "
        "async-generator pipeline into a thread, all at once; then a summary and a "
        "timeline.",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=defaults.clients,
        help="concurrent TCP clients (%(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        help="seconds of load (%(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=defaults.jobs,
        help="CPU jobs for the process pool (%(default)s)",
    )
    parser.add_argument(
        "--trace",
        default=defaults.trace,
        metavar="FILE.html",
        help="where to write the timeline (%(default)s)",
    )
    parser.add_argument(
        "--trace-at",
        type=float,
        default=defaults.trace_at,
        metavar="SECONDS",
        help="start the one-second timeline this far into the run (%(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.jobs < 1 or not 0 < args.duration < math.inf:
        raise SystemExit("plait demo: --clients and --jobs must be >= 1, --duration > 0")
    options = Options(
        clients=args.clients,
        duration=args.duration,
        jobs=args.jobs,
        trace=args.trace,
        trace_at=min(args.trace_at, max(0.0, args.duration - 1.0)),
    )
    out = out or sys.stdout
    print(
        f"plait demo: {options.clients:,} clients for {options.duration:g} s, "
        f"{options.jobs} CPU jobs, threads, subprocesses, plait.sched ...",
        file=out,
        flush=True,
    )
    stats, tracer, clients, elapsed = plait.run(run_demo, options, out)
    print(summary(stats, options, elapsed, clients), file=out)
    tracer.write_html(options.trace, title="plait demo: one second of the run")
    path = Path(options.trace).resolve()
    print(
        f"\ntimeline of one second ({options.trace_at:g} s to {options.trace_at + 1:g} s) "
        f"written to {options.trace}: open {path.as_uri()} in a browser",
        file=out,
    )
    return 1 if stats.errors else 0
