"""A real asyncio library on plait's loop: aiohttp's server and client exchanging
requests over loopback, plain and with TLS, run by ``plait.aio.run`` and from plait
tasks through the bridge (issue 8)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

import plait
import plait.aio

aiohttp = pytest.importorskip("aiohttp")
web = pytest.importorskip("aiohttp.web")


def make_app(slow_events: tuple[asyncio.Event, asyncio.Event] | None = None) -> web.Application:
    async def hello(request):
        return web.json_response({"hello": request.match_info["name"]})

    async def echo(request):
        body = await request.read()
        return web.Response(body=body[::-1])

    async def stream(request):
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(int(request.query["n"])):
            await response.write(b"%d\n" % i)
        await response.write_eof()
        return response

    async def slow(request):
        assert slow_events is not None
        started, cancelled = slow_events
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="never")

    async def websocket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data.upper())
        return ws

    app = web.Application()
    app.router.add_get("/hello/{name}", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", websocket)
    return app


class Served:
    """An aiohttp app served on a loopback port for the length of an ``async with``."""

    def __init__(self, app: web.Application, server_ssl: ssl.SSLContext | None) -> None:
        # A handler whose client has gone is cancelled, as most servers want.
        self.runner = web.AppRunner(app, handler_cancellation=True)
        self.server_ssl = server_ssl

    async def __aenter__(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.server_ssl)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        scheme = "https" if self.server_ssl else "http"
        return f"{scheme}://{host}:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.cleanup()


async def serve_in_plait(app, server_ssl, task_status) -> None:
    """A plait task serving ``app`` until cancelled: aiohttp's set-up and clean-up run
    as asyncio code through the bridge, the waiting is plait's."""
    served = Served(app, server_ssl)
    base = await plait.aio.run_asyncio(served.__aenter__())
    try:
        task_status.started(base)
        await plait.sleep_forever()
    finally:
        with plait.CancelScope(shield=True):
            await plait.aio.run_asyncio(served.__aexit__(None, None, None))


async def exchange(base: str, client_ssl: ssl.SSLContext | None) -> dict[str, object]:
    """Requests of every kind against ``make_app``: concurrent JSON, a large body
    each way, a chunked stream, a websocket; keep-alive reuses the connections."""
    connector = aiohttp.TCPConnector(ssl=client_ssl if client_ssl else False, limit=4)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def hello(name: str) -> object:
            async with session.get(f"/hello/{name}") as response:
                response.raise_for_status()
                return (await response.json())["hello"]

        names = await asyncio.gather(*(hello(f"n{i}") for i in range(20)))
        body = bytes(range(256)) * 4096  # 1 MiB
        async with session.post("/echo", data=body) as response:
            echoed = await response.read()
        async with session.get("/stream", params={"n": "500"}) as response:
            lines = (await response.text()).split()
        async with session.ws_connect("/ws") as ws:
            await ws.send_str("plait")
            shout = (await ws.receive()).data
        return {
            "names": names,
            "echo_ok": echoed == body[::-1],
            "lines": len(lines),
            "shout": shout,
        }


EXPECTED = {
    "names": [f"n{i}" for i in range(20)],
    "echo_ok": True,
    "lines": 500,
    "shout": "PLAIT",
}


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
def test_aiohttp_server_and_client_on_plaits_loop(tls, use_tls):
    server_ssl, client_ssl = tls if use_tls else (None, None)

    async def main():
        assert isinstance(asyncio.get_running_loop(), plait.aio.EventLoop)
        async with Served(make_app(), server_ssl) as base:
            return await exchange(base, client_ssl)

    assert plait.aio.run(main()) == EXPECTED


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
def test_aiohttp_inside_a_plait_task_group(tls, use_tls):
    """The server runs in one plait task and clients in others, each through
    run_asyncio; the TaskGroup waits for all of them."""
    server_ssl, client_ssl = tls if use_tls else (None, None)

    async def serve(task_status=plait.TASK_STATUS_IGNORED):
        await serve_in_plait(make_app(), server_ssl, task_status)

    async def main():
        async with plait.TaskGroup() as outer:
            base = await outer.start(serve)
            async with plait.TaskGroup() as clients:
                tasks = [
                    clients.spawn(plait.aio.run_asyncio, exchange(base, client_ssl))
                    for _ in range(3)
                ]
            outer.cancel_scope.cancel()  # stops the server: cancels its asyncio task
        return [t.result() for t in tasks]

    assert plait.run(main) == [EXPECTED] * 3


def test_a_plait_deadline_cancels_an_aiohttp_request_and_the_server_goes_on(tls):
    server_ssl, client_ssl = tls
    slow_started, slow_cancelled = asyncio.Event(), asyncio.Event()

    async def main():
        async def client(base):
            connector = aiohttp.TCPConnector(ssl=client_ssl)
            async with aiohttp.ClientSession(base, connector=connector) as session:
                async with session.get("/slow") as response:
                    return await response.text()

        async def hello(base):
            async with aiohttp.ClientSession(base) as session:
                async with session.get("/hello/again", ssl=client_ssl) as response:
                    return (await response.json())["hello"]

        async def serve(task_status=plait.TASK_STATUS_IGNORED):
            await serve_in_plait(make_app((slow_started, slow_cancelled)), server_ssl, task_status)

        async with plait.TaskGroup() as tg:
            base = await tg.start(serve)
            with plait.CancelScope() as scope:

                async def cancel_when_started():
                    await plait.aio.run_asyncio(slow_started.wait())
                    scope.cancel()

                tg.spawn(cancel_when_started)
                await plait.aio.run_asyncio(client(base))
            # The server saw the client go and cancelled the handler; it serves on.
            await plait.aio.run_asyncio(slow_cancelled.wait())
            after = await plait.aio.run_asyncio(hello(base))
            tg.cancel_scope.cancel()
        return scope.cancelled_caught, after

    assert plait.run(main) == (True, "again")


def test_an_asyncio_cancellation_crosses_into_plait_code_under_aiohttp():
    """A handler that calls plait code through run_plait: the client goes away, aiohttp
    cancels the handler (handler_cancellation=True), the cancellation reaches the
    plait task, which cleans up before the handler ends."""
    events: list[str] = []
    started = asyncio.Event()
    handler_ended = asyncio.Event()

    async def plait_work():
        try:
            started.set()
            await plait.sleep_forever()
        finally:
            events.append("plait task ended")

    async def handler(request):
        try:
            await plait.aio.run_plait(plait_work)
        except asyncio.CancelledError:
            events.append("handler cancelled")
            raise
        finally:
            handler_ended.set()
        return web.Response(text="never")

    async def main():
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            async with aiohttp.ClientSession() as session:
                request = asyncio.ensure_future(session.get(f"http://{host}:{port}/"))
                await started.wait()
                request.cancel()  # closes the client's connection
                with pytest.raises(asyncio.CancelledError):
                    await request
            await handler_ended.wait()
        finally:
            await runner.cleanup()
        return events

    assert plait.aio.run(main()) == ["plait task ended", "handler cancelled"]
