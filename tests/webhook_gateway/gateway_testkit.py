"""What the gateway's tests share: events, signatures, a running gateway, its metrics.

A module with a unique name rather than a conftest.py: this directory is not a
package, so its modules are imported by their base name.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from payments_dev.devdb import free_port
from payments_stripe.signature import sign
from webhook_gateway.app import METRICS, init_app
from webhook_gateway.settings import Settings

SECRET = "whsec_test_newest"
OLD_SECRET = "whsec_test_older"
WEBHOOK = "/webhooks/stripe"

GatewayClient = TestClient[web.Request, web.Application]


def event(**overrides: Any) -> dict[str, Any]:
    """A Stripe event as provider-sim sends it, for a payment nobody recorded."""
    intent = f"pi_{uuid.uuid4().hex[:24]}"
    document: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "data": {
            "object": {
                "id": intent,
                "object": "payment_intent",
                "amount": 1999,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"payment_id": str(uuid.uuid4())},
            }
        },
    }
    document.update(overrides)
    return document


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def signed(body: bytes, *secrets: str, at: float | None = None) -> dict[str, str]:
    """Headers of a delivery signed at time `at` with each secret (one v1 per secret)."""
    timestamp = int(time.time() if at is None else at)
    v1s = [sign(body, s, timestamp).split(",")[1] for s in secrets or (SECRET,)]
    return {"Stripe-Signature": ",".join([f"t={timestamp}", *v1s])}


def closed_target() -> str:
    """A gRPC target where nothing listens: payment-svc unreachable."""
    return f"127.0.0.1:{free_port()}"


def settings(**overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "payment_svc_target": closed_target(),
        "secrets": (SECRET,),
        "forward_timeout": 2.0,
    }
    fields.update(overrides)
    return Settings(**fields)


@asynccontextmanager
async def running(gateway_settings: Settings) -> AsyncIterator[GatewayClient]:
    """The real application, from init_app, on a real port."""
    client: GatewayClient = TestClient(TestServer(init_app(gateway_settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def sample(client: GatewayClient, name: str, **labels: str) -> float:
    """One series of the gateway's own registry (0 when absent)."""
    value = client.app[METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


def forwarded(client: GatewayClient) -> float:
    """ApplyProviderEvent calls made, whatever their outcome."""
    total = 0.0
    for family in client.app[METRICS].registry.collect():
        if family.name == "webhook_gateway_forward_seconds":
            total += sum(s.value for s in family.samples if s.name.endswith("_count"))
    return total


async def post(
    client: GatewayClient, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with client.post(WEBHOOK, data=body, headers=headers) as response:
        return response.status, await response.json()
