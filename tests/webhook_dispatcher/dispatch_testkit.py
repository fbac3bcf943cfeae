"""What the dispatcher's tests share: a real receiver (aiohttp on
127.0.0.1), webhook-dispatcher processes started from their console script
with short schedules, and endpoint helpers over the real gRPC channel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import webhooks_pb2 as wh
from payments_dev.devdb import free_port
from payments_dev.stack import Process, Stack, wait_for_port
from tests.support import auth, stub

# Retries every 0.2 s, 8 times (the SPEC's nine steps, shrunk).
FAST_ENV = {
    "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2",
    "WEBHOOK_RETRY_JITTER": "0",
    "WEBHOOK_LEASE_SECONDS": "3",
    "WEBHOOK_ATTEMPT_TIMEOUT_SECONDS": "2",
    "WEBHOOK_POLL_SECONDS": "0.05",
    "WEBHOOK_DRAIN_SECONDS": "3",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


Reply = Callable[[Delivery, int], Awaitable[web.StreamResponse]]


async def ok(_: Delivery, __: int) -> web.StreamResponse:
    return web.Response(status=204)


@dataclass
class Receiver:
    """Every request it got, in arrival order; `reply(delivery, n)` answers
    (n: how many requests with this webhook-id came before)."""

    reply: Reply = ok
    got: list[Delivery] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        delivery = Delivery(
            {k.lower(): v for k, v in request.headers.items()}, await request.read(), time.time()
        )
        seen = sum(d.webhook_id == delivery.webhook_id for d in self.got)
        self.got.append(delivery)
        self._event.set()
        return await self.reply(delivery, seen)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hooks"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def for_payments(self, payment_ids: set[str]) -> list[Delivery]:
        return [d for d in self.got if d.message["data"]["payment"]["id"] in payment_ids]

    async def wait_for(
        self, done: Callable[[list[Delivery]], bool], timeout: float = 30
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while not done(self.got):
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {len(self.got)} requests, not what was awaited")
            self._event.clear()
            try:
                async with asyncio.timeout(0.2):
                    await self._event.wait()
            except TimeoutError:
                pass
        return self.got


async def receiver(reply: Reply = ok) -> AsyncIterator[Receiver]:
    r = Receiver(reply)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def start_dispatcher(stack: Stack, log_dir: Path, name: str = "dispatcher", **env: str) -> Process:
    port = free_port()
    proc = Process(
        f"webhook-dispatcher-{name}",
        [str(Path(_venv_bin()) / "webhook-dispatcher")],
        {
            **stack.env(),
            **FAST_ENV,
            "WEBHOOK_DISPATCHER_METRICS_LISTEN": f"127.0.0.1:{port}",
            "WEBHOOK_DISPATCHER_ID": f"test-{name}-{port}",
            **env,
        },
        log_path=log_dir / f"webhook-dispatcher-{name}.log",
    )
    proc.start()
    wait_for_port("127.0.0.1", port, 30, proc.popen, proc.name)
    proc.metrics_port = port  # type: ignore[attr-defined]
    return proc


def _venv_bin() -> str:
    import sys

    return str(Path(sys.executable).parent)


async def create_endpoint(
    channel: grpc.aio.Channel, url: str, who: str = "merchant"
) -> wh.WebhookEndpoint:
    reply = await stub(channel).CreateWebhookEndpoint(
        wh.CreateWebhookEndpointRequest(url=url, description="test receiver"),
        metadata=auth(who),
        timeout=10,
    )
    return reply.endpoint


async def delete_endpoint(
    channel: grpc.aio.Channel, endpoint_id: str, who: str = "merchant"
) -> None:
    try:
        await stub(channel).DeleteWebhookEndpoint(
            wh.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=auth(who), timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise


async def feed_of(
    channel: grpc.aio.Channel, payment_ids: set[str], who: str = "merchant"
) -> list[pb.PaymentUpdate]:
    """The client's feed updates of these payments, in feed order."""
    updates = []
    cursor = ""
    while True:
        page = await stub(channel).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(after_cursor=cursor, page_size=500),
            metadata=auth(who),
            timeout=10,
        )
        updates += [u for u in page.updates if u.payment.id in payment_ids]
        if not page.updates:
            return updates
        cursor = page.next_cursor
