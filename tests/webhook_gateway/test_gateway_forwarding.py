"""The gateway in front of the real payment-svc (the session's stack: real processes,
real Postgres): a verified event is acknowledged only once payment-svc recorded it,
a redelivery is acknowledged as a duplicate, and nothing invalid ever reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from gateway_testkit import (
    OLD_SECRET,
    SECRET,
    GatewayClient,
    body_of,
    event,
    forwarded,
    post,
    running,
    sample,
    settings,
    signed,
)

from payments_dev.stack import DEV_TOKENS, Stack, wait_serving
from webhook_gateway.errors import Reason


@pytest.fixture(scope="module")
async def gateway(stack: Stack) -> AsyncIterator[GatewayClient]:
    """Mid-rotation: both secrets active, the newest first."""
    gateway_settings = settings(
        payment_svc_target=stack.grpc_target, secrets=(SECRET, OLD_SECRET), forward_timeout=5.0
    )
    async with running(gateway_settings) as client:
        yield client


async def test_a_verified_event_is_acknowledged_once_payment_svc_recorded_it(
    gateway: GatewayClient,
) -> None:
    body = body_of(event(type="payment_intent.succeeded"))
    ok_before = sample(gateway, "webhook_gateway_forward_seconds_count", outcome="ok")

    status, answer = await post(gateway, body, signed(body))
    assert (status, answer) == (200, {"received": True, "duplicate": False})

    # The provider delivers again (at least once): acknowledged, applied no second time.
    status, answer = await post(gateway, body, signed(body))
    assert (status, answer) == (200, {"received": True, "duplicate": True})
    assert sample(gateway, "webhook_gateway_forward_seconds_count", outcome="ok") == ok_before + 2


async def test_during_rotation_an_event_signed_with_the_old_secret_is_recorded(
    gateway: GatewayClient,
) -> None:
    body = body_of(event(type="payment_intent.processing"))
    status, answer = await post(gateway, body, signed(body, OLD_SECRET))
    assert (status, answer) == (200, {"received": True, "duplicate": False})


async def test_ready_when_payment_svc_serves(gateway: GatewayClient) -> None:
    async with gateway.get("/readyz") as response:
        assert response.status == 200


async def test_invalid_deliveries_never_reach_payment_svc(
    gateway: GatewayClient, db: asyncpg.Pool
) -> None:
    # Counted on this gateway (payment-svc's own counters also see the session
    # simulator's webhook retries), and checked in payment-svc's inbox.
    document = event()
    body = body_of(document)
    calls = forwarded(gateway)
    refusals = [
        (body, {}),
        (body, {"Stripe-Signature": "t=1"}),
        (body, signed(body, "whsec_wrong")),
        (body + b" ", signed(body)),
    ]
    for refused_body, headers in refusals:
        status, _ = await post(gateway, refused_body, headers)
        assert status == 400
    assert forwarded(gateway) == calls
    # Issue 10: verified bodies that are no event go to payment-svc's
    # quarantine, acknowledged (a redelivery cannot help), never to the inbox.
    not_json, not_an_event = b"{not json", body_of(event(id="x"))
    for unreadable in (not_json, not_an_event):
        status, answer = await post(gateway, unreadable, signed(unreadable))
        assert (status, answer.get("quarantined")) == (200, True)
    assert forwarded(gateway) == calls + 2
    assert (
        await db.fetchval("SELECT count(*) FROM provider_events WHERE provider_event_id = 'x'") == 0
    )
    calls += 2
    inbox = "SELECT count(*) FROM provider_events WHERE provider_event_id = $1"
    assert await db.fetchval(inbox, document["id"]) == 0

    status, _ = await post(gateway, body, signed(body))
    assert status == 200
    assert forwarded(gateway) == calls + 1
    assert await db.fetchval(inbox, document["id"]) == 1


@pytest.mark.parametrize("token", [DEV_TOKENS["merchant"], "not-a-token"])
async def test_a_token_payment_svc_refuses_is_503_so_the_provider_retries(
    stack: Stack, token: str
) -> None:
    gateway_settings = settings(payment_svc_target=stack.grpc_target, token=token)
    async with running(gateway_settings) as client:
        body = body_of(event())
        status, answer = await post(client, body, signed(body))
    assert (status, answer["error"]["reason"]) == (503, Reason.PAYMENT_SERVICE_MISCONFIGURED)


async def test_payment_svc_down_is_503_and_a_retry_once_it_is_back_is_recorded(
    spawn_payment_svc: Callable[..., Awaitable[Stack]],
) -> None:
    own = await spawn_payment_svc()
    async with running(settings(payment_svc_target=own.grpc_target)) as client:
        body = body_of(event())
        own.processes["payment-svc"].stop()

        status, answer = await post(client, body, signed(body))
        assert (status, answer["error"]["reason"]) == (503, Reason.PAYMENT_SERVICE_UNAVAILABLE)
        async with client.get("/readyz") as response:
            assert response.status == 503

        own.start_payment_svc()  # same port
        await wait_serving(own.grpc_target)
        # The provider retries with backoff; the gateway's channel must be back within ~1 s.
        deadline = time.monotonic() + 5
        while True:
            status, answer = await post(client, body, signed(body))
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (status, answer) == (200, {"received": True, "duplicate": False})
        await asyncio.sleep(1.1)  # past the readiness cache
        async with client.get("/readyz") as response:
            assert response.status == 200
