"""plait.aio.EventLoop as an asyncio event loop: callbacks, timers, futures and tasks,
running and stopping, errors, file descriptors, executors, async generators, and the
ways to install it (issue 8)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import plait
import plait.aio
from helpers import isolated
from plait.aio import EventLoop


@pytest.fixture
def loop():
    loop = plait.aio.new_event_loop()
    yield loop
    loop.close()


# -- identity and installation ---------------------------------------------------------


def test_it_is_an_asyncio_loop_and_not_asyncios_own():
    assert issubclass(EventLoop, asyncio.AbstractEventLoop)
    assert not issubclass(EventLoop, asyncio.BaseEventLoop)
    assert EventLoop.__module__ == "plait.aio"


def test_run_returns_the_result_on_plaits_loop():
    async def main():
        return type(asyncio.get_running_loop()), asyncio.current_task() is not None

    assert plait.aio.run(main()) == (EventLoop, True)


def test_run_refuses_a_non_coroutine():
    async def main():
        pass

    with pytest.raises(ValueError, match="a coroutine was expected"):
        plait.aio.run(main)


def test_runner_with_the_loop_factory():
    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=plait.aio.new_event_loop) as runner:
        first = runner.run(main())
        assert runner.run(main()) is first  # one loop, run twice
    assert isinstance(first, EventLoop) and first.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_the_loop_factory():
    async def main():
        return asyncio.get_running_loop()

    loop = asyncio.run(main(), loop_factory=plait.aio.new_event_loop)
    assert isinstance(loop, EventLoop)


def test_install_sets_the_policy():
    saved = asyncio.get_event_loop_policy()
    try:
        plait.aio.install()
        assert isinstance(asyncio.get_event_loop_policy(), plait.aio.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, EventLoop)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(saved)


# -- callbacks and timers --------------------------------------------------------------


def test_callbacks_run_in_order_with_their_arguments(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    handle = loop.call_soon(seen.append, 2)
    loop.call_soon(seen.append, 3)
    handle.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, 3]
    assert isinstance(handle, asyncio.Handle) and handle.cancelled()


def test_timers_fire_in_time_order_and_can_be_cancelled(loop):
    seen = []
    now = loop.time()
    loop.call_at(now + 0.02, seen.append, "b")
    loop.call_later(0.01, seen.append, "a")
    dropped = loop.call_later(0.015, seen.append, "dropped")
    loop.call_later(0.03, loop.stop)
    dropped.cancel()
    dropped.cancel()  # idempotent
    assert isinstance(dropped, asyncio.TimerHandle) and dropped.when() == pytest.approx(
        now + 0.015, abs=0.01
    )
    loop.run_forever()
    assert seen == ["a", "b"]
    assert loop.time() >= now + 0.03


def test_many_cancelled_timers_do_not_accumulate(loop):
    handles = [loop.call_later(3600, print) for _ in range(10_000)]
    for handle in handles:
        handle.cancel()
    assert len(loop._timers) == 0 and len(loop._timers._heap) < 1_000


def test_none_times_are_refused(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    with pytest.raises(TypeError):
        loop.call_at(None, print)


def test_callbacks_run_in_a_copy_of_the_context_or_the_one_given(loop):
    var = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    seen = []
    loop.call_soon(lambda: seen.append(var.get()))
    other = contextvars.Context()
    loop.call_soon(lambda: seen.append(var.get()), context=other)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["caller", "unset"]


def test_call_soon_threadsafe_wakes_the_loop(loop):
    seen = []

    def from_thread():
        loop.call_soon_threadsafe(seen.append, threading.current_thread().name)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=from_thread, name="helper").start)
    loop.run_forever()  # would wait forever if the thread could not wake it
    assert seen == ["helper"]


def test_debug_mode_refuses_coroutines_and_other_threads(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    assert loop.get_debug()
    with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
        loop.call_soon(coro_fn)
    with pytest.raises(TypeError, match="a callable object was expected"):
        loop.call_later(1, 42)
    errors = []

    def from_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=from_thread).start)
    loop.run_forever()
    assert "Non-thread-safe operation" in str(errors[0])


# -- running, stopping, closing --------------------------------------------------------


def test_stop_lets_the_current_callbacks_finish_and_keeps_the_new_ones(loop):
    seen = []

    def first():
        seen.append("first")
        loop.stop()
        loop.call_soon(seen.append, "next run")

    loop.call_soon(first)
    loop.call_soon(seen.append, "same iteration")
    loop.run_forever()
    assert seen == ["first", "same iteration"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", "same iteration", "next run"]


def test_stop_before_run_forever_runs_one_iteration(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    loop.stop()
    loop.run_forever()
    assert seen == [1] and not loop.is_running()


def test_run_until_complete_result_exception_and_futures(loop):
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    async def fail():
        raise ValueError("boom")

    assert loop.run_until_complete(double(21)) == 42
    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(fail())
    future = loop.create_future()
    loop.call_soon(future.set_result, "set")
    assert loop.run_until_complete(future) == "set"


def test_run_until_complete_when_the_loop_stops_first(loop):
    future = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(future)


def test_is_running_and_nested_runs(loop):
    async def main():
        assert loop.is_running()
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_until_complete(coro)
        other = plait.aio.new_event_loop()
        try:
            with pytest.raises(RuntimeError, match="another loop is running"):
                other.run_until_complete(coro)
        finally:
            other.close()
            coro.close()
        with pytest.raises(RuntimeError, match="Cannot close a running event loop"):
            loop.close()

    assert not loop.is_running()
    loop.run_until_complete(main())
    assert not loop.is_running()


def test_a_closed_loop_refuses_work():
    loop = plait.aio.new_event_loop()
    loop.close()
    loop.close()  # idempotent
    assert loop.is_closed()
    coro = asyncio.sleep(0)
    for attempt in (
        lambda: loop.call_soon(print),
        lambda: loop.call_later(1, print),
        lambda: loop.call_soon_threadsafe(print),
        lambda: loop.create_task(coro),
        loop.run_forever,
        lambda: loop.run_in_executor(None, print),
    ):
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            attempt()
    coro.close()
    assert loop.remove_reader(0) is False


def test_plait_run_inside_is_refused_and_asyncio_inside_plait_run_still_explains():
    async def asyncio_main():
        with pytest.raises(RuntimeError, match="inside a running plait loop"):
            plait.run(plait.sleep, 0)

    plait.aio.run(asyncio_main())

    async def plait_main():
        with pytest.raises(RuntimeError, match="plait's loop is not an asyncio event loop"):
            asyncio.get_running_loop().call_soon(print)

    plait.run(plait_main)


# -- tasks -----------------------------------------------------------------------------


def test_create_task_names_context_and_factory(loop):
    var = contextvars.ContextVar("var", default="unset")
    made = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def read():
        return var.get()

    async def main():
        named = loop.create_task(read(), name="reader")
        ctx = contextvars.Context()
        ctx.run(var.set, "given")
        given = loop.create_task(read(), context=ctx)
        assert named.get_name() == "reader"
        loop.set_task_factory(factory)
        assert loop.get_task_factory() is factory
        by_factory = loop.create_task(read(), name="made")
        loop.set_task_factory(None)
        return await named, await given, by_factory.get_name(), made == [by_factory]

    assert loop.run_until_complete(main()) == ("unset", "given", "made", True)
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(42)


def test_cancellation_and_timeouts():
    async def main():
        task = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.001)
        async with asyncio.timeout(None):
            pass
        return "done"

    assert plait.aio.run(main()) == "done"


def test_asyncio_primitives_work():
    async def main():
        queue = asyncio.Queue(maxsize=1)
        lock = asyncio.Lock()
        event = asyncio.Event()
        got = []

        async def consumer():
            for _ in range(3):
                async with lock:
                    got.append(await queue.get())
            event.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer())
            for i in range(3):
                await queue.put(i)
            await event.wait()
        done, pending = await asyncio.wait(
            [asyncio.create_task(asyncio.sleep(0, result=i)) for i in range(3)]
        )
        return got, sorted(t.result() for t in done), pending

    assert plait.aio.run(main()) == ([0, 1, 2], [0, 1, 2], set())


# -- errors ----------------------------------------------------------------------------


def test_a_failing_callback_goes_to_the_exception_handler(loop):
    contexts = []

    def fail(n):
        raise ValueError("in a callback")

    def run_on(loop):
        loop.set_exception_handler(lambda loop, context: contexts.append(context))
        loop.call_soon(fail, 1)
        loop.call_later(0, fail, 2)
        loop.call_later(0.001, loop.stop)
        loop.run_forever()  # the loop goes on

    run_on(loop)
    ours = contexts[:]
    contexts.clear()
    reference = asyncio.new_event_loop()
    try:
        run_on(reference)
    finally:
        reference.close()
    assert len(ours) == 2
    for context, expected in zip(ours, contexts, strict=True):
        assert isinstance(context["exception"], ValueError)
        assert context["message"] == expected["message"]  # as asyncio's own loop says it
        assert isinstance(context["handle"], asyncio.Handle)
    assert isinstance(ours[1]["handle"], asyncio.TimerHandle)
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler(42)


def test_the_default_handler_logs_to_the_asyncio_logger(loop, caplog):
    def fail():
        raise ValueError("logged")

    loop.call_soon(fail)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    [record] = caplog.records
    assert record.name == "asyncio" and "Exception in callback" in record.getMessage()
    assert record.exc_info[0] is ValueError


def test_an_error_in_the_handler_is_logged_too(loop, caplog):
    def bad_handler(loop, context):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    [record] = caplog.records
    assert "Unhandled error in exception handler" in record.getMessage()
    assert "original" in record.getMessage()


def test_a_never_retrieved_task_exception_is_reported(loop):
    contexts = []
    loop.set_exception_handler(lambda loop, context: contexts.append(context))

    async def fail():
        raise KeyError("lost")

    async def main():
        task = asyncio.create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task

    loop.run_until_complete(main())
    gc.collect()  # (the task is freed: its __del__ reports the exception)
    [context] = contexts
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], KeyError)


# -- file descriptors, executors -------------------------------------------------------


def test_readers_and_writers_on_a_socket_pair(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    seen = []
    try:

        def readable():
            seen.append(b.recv(100))
            assert loop.remove_reader(b)
            loop.stop()

        def writable():
            a.send(b"ping")
            assert loop.remove_writer(a.fileno())

        loop.add_reader(b, readable)
        loop.add_writer(a, writable)
        loop.run_forever()
        assert seen == [b"ping"]
        assert loop.remove_reader(b) is False
        with pytest.raises(ValueError, match="Invalid file object"):
            loop.add_reader(object(), print)
    finally:
        a.close()
        b.close()


def test_run_in_executor_and_its_shutdown(loop):
    async def main():
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_in_executor(None, print)
        return name

    assert loop.run_until_complete(main()).startswith("asyncio")
    with pytest.raises(TypeError, match="ThreadPoolExecutor"):
        loop.set_default_executor(object())


def test_getaddrinfo_and_getnameinfo(loop):
    infos = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert infos[0][4] == ("127.0.0.1", 80)
    host, port = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    )
    assert (host, port) == ("127.0.0.1", "80")


# -- async generators ------------------------------------------------------------------


def test_async_generators_left_alive_are_closed_at_the_end():
    closed = []

    async def ticker():
        try:
            while True:
                yield 1
        finally:
            await asyncio.sleep(0)  # cleanup that awaits
            closed.append("ticker")

    kept = []  # alive until the run closes it

    async def main():
        kept.append(ticker())
        await kept[0].__anext__()

    plait.aio.run(main())
    assert closed == ["ticker"]


def test_an_abandoned_async_generator_is_closed_in_a_task():
    closed = []

    async def numbers():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            closed.append(asyncio.current_task() is not None)

    async def main():
        async for _ in numbers():
            break  # (dropped here: the finalizer hook hands it to the loop)
        for _ in range(10):
            if closed:
                break
            await asyncio.sleep(0)
        return list(closed)

    assert plait.aio.run(main()) == [True]


# -- non-blocking sockets --------------------------------------------------------------


def _listener():
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def test_sock_connect_accept_sendall_recv(loop):
    async def main():
        server = _listener()
        client = socket.socket()
        client.setblocking(False)
        try:
            accepting = asyncio.create_task(loop.sock_accept(server))
            await loop.sock_connect(client, server.getsockname())
            conn, address = await accepting
            with conn:
                assert conn.gettimeout() == 0 and address == client.getsockname()
                payload = bytes(range(256)) * 8192  # 2 MiB: many partial sends
                sending = asyncio.create_task(loop.sock_sendall(client, payload))
                got = bytearray()
                while len(got) < len(payload):
                    got += await loop.sock_recv(conn, 65536)
                await sending
                buf = bytearray(10)
                await loop.sock_sendall(conn, b"0123456789")
                n = await loop.sock_recv_into(client, buf)
                return bytes(got) == payload, bytes(buf[:n])
        finally:
            client.close()
            server.close()

    assert loop.run_until_complete(main()) == (True, b"0123456789")


def test_sock_connect_resolves_names_and_reports_refusal(loop):
    async def main():
        server = _listener()
        port = server.getsockname()[1]
        client = socket.socket()
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("localhost", port))
        finally:
            client.close()
        server.close()  # nothing listens there now
        refused = socket.socket()
        refused.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(refused, ("127.0.0.1", port))
        finally:
            refused.close()

    loop.run_until_complete(main())


def test_sock_methods_refuse_blocking_sockets_and_non_sockets(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="must be non-blocking"):
                await loop.sock_recv(sock, 1)
        with pytest.raises(TypeError, match=r"a socket\.socket was expected"):
            await loop.sock_recv(42, 1)

    loop.run_until_complete(main())


def test_a_cancelled_sock_recv_stops_watching_the_socket(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b:
            task = asyncio.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.remove_reader(a) is False  # nothing left registered
            b.send(b"x")
            return await loop.sock_recv(a, 10)

    assert loop.run_until_complete(main()) == b"x"


def test_udp_sendto_recvfrom(loop):
    async def main():
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            a.setblocking(False)
            b.setblocking(False)
            await loop.sock_sendto(a, b"datagram", b.getsockname())
            data, source = await loop.sock_recvfrom(b, 100)
            await loop.sock_sendto(b, b"reply", source)
            buf = bytearray(16)
            n, _ = await loop.sock_recvfrom_into(a, buf)
            return data, source == a.getsockname(), bytes(buf[:n])

    assert loop.run_until_complete(main()) == (b"datagram", True, b"reply")


@pytest.mark.parametrize("fallback_only", [False, True])
def test_sock_sendfile(loop, tmp_path, fallback_only):
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 4096  # 1 MiB
    path.write_bytes(content)

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b, open(path, "rb") as file:
            source = io.BytesIO(content) if fallback_only else file
            sending = asyncio.create_task(loop.sock_sendfile(a, source, 1000, 500_000))
            got = bytearray()
            while len(got) < 500_000:
                got += await loop.sock_recv(b, 65536)
            sent = await sending
            return sent, bytes(got) == content[1000:501_000], source.tell()

    assert loop.run_until_complete(main()) == (500_000, True, 501_000)


def test_sock_sendfile_without_fallback(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        with a, b:
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(a, io.BytesIO(b"x"), fallback=False)

    loop.run_until_complete(main())


# -- signals ---------------------------------------------------------------------------


def test_signal_handlers(loop):
    seen = []
    before = signal.getsignal(signal.SIGUSR1)

    def on_usr1(tag):
        seen.append(tag)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, on_usr1, "usr1")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert seen == ["usr1"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == before
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.add_signal_handler("SIGUSR1", print)
    with pytest.raises(ValueError, match="invalid signal number"):
        loop.add_signal_handler(100_000, print)
    with pytest.raises(RuntimeError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, print)

    async def coro_fn():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    errors = []

    def in_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR2, print)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert "only in the main thread" in str(errors[0])


def test_closing_the_loop_removes_its_signal_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    loop = plait.aio.new_event_loop()
    loop.add_signal_handler(signal.SIGUSR2, print)
    assert signal.getsignal(signal.SIGUSR2) != before
    loop.close()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_call_soon_threadsafe_keeps_its_place_among_call_soon(loop):
    seen = []
    loop.call_soon_threadsafe(seen.append, "threadsafe first")
    loop.call_soon(seen.append, "then call_soon")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["threadsafe first", "then call_soon"]


def test_a_loop_waiting_only_for_a_signal_is_not_deadlocked():
    """Nothing but a signal can wake this loop: plait's deadlock check must not fire
    (the signal comes from a process the loop knows nothing of)."""

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "USR1")
        killer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os, time; time.sleep(0.05); os.kill({os.getpid()}, 10)",
            ],
        )
        try:
            return await got
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            killer.wait()

    assert plait.aio.run(main()) == "USR1"


def case_an_asyncio_future_nobody_completes_is_a_deadlock():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(plait.Deadlock):
        plait.aio.run(main())


def test_an_asyncio_future_nobody_completes_is_a_deadlock():
    isolated(__file__, "case_an_asyncio_future_nobody_completes_is_a_deadlock")


def test_debug_mode_logs_a_slow_callback_as_asyncio_does(caplog):
    import time

    async def slow_step():
        time.sleep(0.03)  # blocks the loop: a slow step of this task

    def slow_callback():
        time.sleep(0.03)

    def run_on(loop):
        loop.set_debug(True)
        loop.slow_callback_duration = 0.02
        loop.call_soon(slow_callback)
        task = loop.create_task(slow_step(), name="sleeper")
        loop.run_until_complete(task)
        loop.set_debug(False)
        loop.call_soon(slow_callback)  # not logged: debug mode is off again
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_on(plait.aio.new_event_loop())

    def ours_only(records):  # (on a loaded machine another callback may be slow too)
        return [
            r.getMessage()
            for r in records
            if "slow_callback" in r.getMessage() or "sleeper" in r.getMessage()
        ]

    ours = ours_only(caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_on(asyncio.new_event_loop())
    theirs = ours_only(caplog.records)
    assert len(ours) == len(theirs) == 2
    assert ours[0].startswith("Executing <Handle ") and "slow_callback" in ours[0]
    assert ours[1].startswith("Executing <Task ") and "name='sleeper'" in ours[1]
    for mine, reference in zip(ours, theirs, strict=True):
        assert (
            mine.split(" took ")[0].split(" ")[:2] == reference.split(" took ")[0].split(" ")[:2]
        )


@pytest.mark.parametrize("debug", [False, True])
def test_a_task_exception_never_retrieved_is_reported_at_once(debug):
    """Without the cyclic GC: the failed task is freed by reference counting as soon
    as nothing holds it (also in debug mode, where the loop times each callback)."""
    contexts = []

    async def fail():
        raise ZeroDivisionError

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: contexts.append(context))
        asyncio.ensure_future(fail())  # noqa: RUF006 - the point: nothing keeps the task
        await asyncio.sleep(0)
        return len(contexts)

    gc.disable()
    try:
        with asyncio.Runner(debug=debug, loop_factory=plait.aio.new_event_loop) as runner:
            seen = runner.run(main())
    finally:
        gc.enable()
    assert seen == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
