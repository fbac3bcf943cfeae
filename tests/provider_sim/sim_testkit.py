"""What the simulator's HTTP test files share: a simulator on a free port,
the real Stripe SDK pointed at it, a webhook receiver, and the control API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import stripe
from aiohttp import web

from provider_sim import SimSettings, init_app


@contextlib.asynccontextmanager
async def running_sim(settings: SimSettings) -> AsyncIterator[str]:
    """Serves the simulator on 127.0.0.1, a free port; yields its base URL."""
    runner = web.AppRunner(init_app(settings), access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sdk_client(url: str, api_key: str) -> AsyncIterator[stripe.StripeClient]:
    """The official SDK, async, as payment-svc and the reconciler use it."""
    http_client = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(
            api_key, base_addresses={"api": url}, http_client=http_client, max_network_retries=0
        )
    finally:
        await http_client.close_async()


class Receiver:
    """A webhook endpoint that keeps every delivery by event id."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.arrivals: dict[str, list[tuple[bytes, str]]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = json.loads(body)["id"]
        self.arrivals.setdefault(event_id, []).append((body, request.headers["Stripe-Signature"]))
        return web.Response(text="ok")

    async def event(self, event_id: str) -> stripe.Event:
        """The event as delivered, once it arrives; its signature must verify."""
        deadline = time.monotonic() + 5
        while event_id not in self.arrivals:
            assert time.monotonic() < deadline, f"{event_id} was not delivered"
            await asyncio.sleep(0.01)
        body, header = self.arrivals[event_id][0]
        event: stripe.Event = stripe.Webhook.construct_event(body, header, self.secret)
        return event

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hooks"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Sim:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body) as response:
            return response.status, await response.json()

    async def ok(self, path: str, body: Any = None) -> Any:
        status, answer = await self.control("POST", path, body)
        assert status == 200, answer
        return answer

    async def refused(self, path: str, body: Any = None) -> tuple[int, str]:
        status, answer = await self.control("POST", path, body)
        return status, answer["error"]["reason"]

    async def ledger_row(self, payment_id: str) -> dict[str, Any]:
        _, body = await self.control("GET", f"/_sim/ledger?payment_id={payment_id}")
        [row] = body["payment_intents"]
        return dict(row)
