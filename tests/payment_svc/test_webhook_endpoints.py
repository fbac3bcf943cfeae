"""Webhook endpoint management (SPEC §3d) over a real gRPC channel on real
Postgres: create (the secret once), list, update, delete, rotate, the
attempts' listing, redelivery, the per-client limit, scoping and the
authorization table. Only loopback URLs are registered; the refused ones
are addresses and names that are never resolved or contacted (IP
literals, `localhost`)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from payments.v1 import payment_service_pb2 as svc
from payments.v1 import webhooks_pb2 as wh
from payments_dev.stack import Stack
from tests.support import auth, create_request, rich_error, stub

URL = "http://127.0.0.1:9/hooks"


async def _create(
    channel: grpc.aio.Channel, who: str = "merchant", url: str = URL, description: str = ""
) -> wh.WebhookEndpoint:
    reply = await stub(channel).CreateWebhookEndpoint(
        wh.CreateWebhookEndpointRequest(url=url, description=description),
        metadata=auth(who),
        timeout=10,
    )
    return reply.endpoint


async def _error(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    err = rich_error(exc.value)
    return err.code, err.reason, err.violations


async def _list(channel: grpc.aio.Channel, who: str = "merchant") -> list[wh.WebhookEndpoint]:
    reply = await stub(channel).ListWebhookEndpoints(
        wh.ListWebhookEndpointsRequest(), metadata=auth(who), timeout=5
    )
    return list(reply.endpoints)


async def test_create_shows_the_secret_once(channel: grpc.aio.Channel) -> None:
    created = await _create(channel, description="orders")
    assert created.id.startswith("we_")
    assert created.status == wh.WEBHOOK_ENDPOINT_STATUS_ENABLED
    assert (created.url, created.description) == (URL, "orders")
    assert created.secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(created.secret.removeprefix("whsec_"))) <= 64
    listed = {e.id: e for e in await _list(channel)}
    assert listed[created.id].secret == ""
    assert listed[created.id].url == URL
    assert created.id not in {e.id for e in await _list(channel, "merchant-2")}


async def test_update_disable_enable_and_delete(channel: grpc.aio.Channel) -> None:
    created = await _create(channel)
    s = stub(channel)
    reply = await s.UpdateWebhookEndpoint(
        wh.UpdateWebhookEndpointRequest(
            endpoint_id=created.id, url="http://localhost:9/v2", enabled=False
        ),
        metadata=auth(),
        timeout=5,
    )
    e = reply.endpoint
    assert (e.url, e.description, e.status) == (
        "http://localhost:9/v2",
        "",
        wh.WEBHOOK_ENDPOINT_STATUS_DISABLED,
    )
    assert e.secret == ""
    reply = await s.UpdateWebhookEndpoint(
        wh.UpdateWebhookEndpointRequest(endpoint_id=created.id, description="v2", enabled=True),
        metadata=auth(),
        timeout=5,
    )
    assert (reply.endpoint.url, reply.endpoint.description, reply.endpoint.status) == (
        "http://localhost:9/v2",
        "v2",
        wh.WEBHOOK_ENDPOINT_STATUS_ENABLED,
    )
    # Another client's endpoint is not found, whatever the call.
    other = auth("merchant-2")
    for call in (
        s.UpdateWebhookEndpoint(
            wh.UpdateWebhookEndpointRequest(endpoint_id=created.id, enabled=False), metadata=other
        ),
        s.DeleteWebhookEndpoint(
            wh.DeleteWebhookEndpointRequest(endpoint_id=created.id), metadata=other
        ),
        s.RotateWebhookSecret(
            wh.RotateWebhookSecretRequest(endpoint_id=created.id), metadata=other
        ),
        s.ListWebhookDeliveries(
            wh.ListWebhookDeliveriesRequest(endpoint_id=created.id), metadata=other
        ),
        s.RedeliverWebhooks(wh.RedeliverWebhooksRequest(endpoint_id=created.id), metadata=other),
    ):
        assert (await _error(call))[0] == grpc.StatusCode.NOT_FOUND
    await s.DeleteWebhookEndpoint(
        wh.DeleteWebhookEndpointRequest(endpoint_id=created.id), metadata=auth(), timeout=5
    )
    assert created.id not in {e.id for e in await _list(channel)}
    code, _, _ = await _error(
        s.DeleteWebhookEndpoint(
            wh.DeleteWebhookEndpointRequest(endpoint_id=created.id), metadata=auth()
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_rotation_keeps_the_previous_secret_for_a_day(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    created = await _create(channel)
    reply = await stub(channel).RotateWebhookSecret(
        wh.RotateWebhookSecretRequest(endpoint_id=created.id), metadata=auth(), timeout=5
    )
    rotated = reply.endpoint
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    until = rotated.previous_secret_expires_at.ToDatetime(tzinfo=UTC)
    assert abs(until - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    row = await db.fetchrow(
        "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1",
        uuid.UUID(hex=created.id.removeprefix("we_")),
    )
    assert row is not None
    assert base64.b64encode(row["previous_secret"]).decode() == created.secret[6:]
    assert base64.b64encode(row["secret"]).decode() == rotated.secret[6:]
    listed = {e.id: e for e in await _list(channel)}[created.id]
    assert (
        listed.secret == ""
        and listed.previous_secret_expires_at == rotated.previous_secret_expires_at
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/hook", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://169.254.169.254/latest/meta-data", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://[fe80::1]/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://100.64.0.1/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://0.0.0.0/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://224.0.0.1/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://[64:ff9b::a9fe:a9fe]/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://[2002:a9fe:a9fe::1]/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://[fd00::1]/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("https://[::ffff:192.168.0.1]/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("http://93.184.216.34/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("gopher://127.0.0.1/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("http://user:pass@127.0.0.1/", "WEBHOOK_URL_NOT_ALLOWED"),
        ("", "INVALID_ARGUMENT"),
        ("https://127.0.0.1/" + "a" * 2040, "INVALID_ARGUMENT"),
    ],
)
async def test_refused_urls(channel: grpc.aio.Channel, url: str, reason: str) -> None:
    code, got, violations = await _error(
        stub(channel).CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(url=url), metadata=auth(), timeout=5
        )
    )
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert set(violations) == {"url"}


async def test_long_description_and_bad_ids(channel: grpc.aio.Channel) -> None:
    s = stub(channel)
    code, _, violations = await _error(
        s.CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(url=URL, description="d" * 501), metadata=auth()
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and set(violations) == {"description"}
    await _create(channel, description="d" * 500)
    code, _, _ = await _error(
        s.DeleteWebhookEndpoint(
            wh.DeleteWebhookEndpointRequest(endpoint_id="we_x"), metadata=auth()
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, violations = await _error(
        s.DeleteWebhookEndpoint(wh.DeleteWebhookEndpointRequest(), metadata=auth())
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and set(violations) == {"endpoint_id"}


async def test_only_merchants_may_manage_endpoints(channel: grpc.aio.Channel) -> None:
    s = stub(channel)
    code, _, _ = await _error(
        s.ListWebhookEndpoints(wh.ListWebhookEndpointsRequest(), metadata=auth("gateway"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = await _error(s.ListWebhookEndpoints(wh.ListWebhookEndpointsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_at_most_16_endpoints_a_client_even_when_created_at_once(
    spawn_payment_svc: object,
) -> None:
    own: Stack = await spawn_payment_svc(  # type: ignore[operator]
        PAYMENT_SVC_MERCHANT_TOKENS="limit-token=merchant-limit-" + uuid.uuid4().hex[:8]
    )
    metadata = (("authorization", "Bearer limit-token"),)
    async with grpc.aio.insecure_channel(own.grpc_target) as ch:
        s = stub(ch)
        calls = [
            s.CreateWebhookEndpoint(
                wh.CreateWebhookEndpointRequest(url=URL), metadata=metadata, timeout=10
            )
            for _ in range(20)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [rich_error(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(made) == 16 and len(refused) == 4
        assert {(e.code, e.reason) for e in refused} == {
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WEBHOOK_ENDPOINTS")
        }
        listed = await s.ListWebhookEndpoints(
            wh.ListWebhookEndpointsRequest(), metadata=metadata, timeout=5
        )
        assert len(listed.endpoints) == 16
        # Deleting one makes room for one.
        await s.DeleteWebhookEndpoint(
            wh.DeleteWebhookEndpointRequest(endpoint_id=listed.endpoints[0].id),
            metadata=metadata,
            timeout=5,
        )
        await s.CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(url=URL), metadata=metadata, timeout=10
        )


async def test_deliveries_are_listed_newest_first_in_pages(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    created = await _create(channel)
    endpoint_id = uuid.UUID(hex=created.id.removeprefix("we_"))
    start = datetime.now(UTC)
    update_ids = [uuid.uuid4() for _ in range(25)]
    await db.executemany(
        """INSERT INTO webhook_attempts (endpoint_id, update_id, position, payment_id, attempt,
               attempted_at, http_status, error, duration_ms, delivered)
           VALUES ($1, $2, $3, $4, 1, $5, $6, $7, 12, $8)""",
        [
            (
                endpoint_id,
                u,
                i + 1,
                uuid.uuid4(),
                start + timedelta(seconds=i),
                200 if i % 2 else 0,
                "" if i % 2 else "timeout",
                bool(i % 2),
            )
            for i, u in enumerate(update_ids)
        ],
    )
    seen: list[wh.WebhookDelivery] = []
    token = ""
    while True:
        page = await stub(channel).ListWebhookDeliveries(
            wh.ListWebhookDeliveriesRequest(endpoint_id=created.id, page_size=10, page_token=token),
            metadata=auth(),
            timeout=5,
        )
        assert len(page.deliveries) <= 10
        seen.extend(page.deliveries)
        token = page.next_page_token
        if not token:
            break
    assert [d.update_id for d in seen] == [str(u) for u in reversed(update_ids)]
    newest = seen[0]
    assert (newest.http_status, newest.error, newest.delivered, newest.attempt) == (
        0,
        "timeout",
        False,
        1,
    )
    assert newest.duration.ToMilliseconds() == 12
    assert newest.payment_id.startswith("pay_") and newest.cursor.startswith("c1.")
    # A token is bound to its endpoint.
    other = await _create(channel)
    code, _, _ = await _error(
        stub(channel).ListWebhookDeliveries(
            wh.ListWebhookDeliveriesRequest(
                endpoint_id=other.id, page_size=10, page_token=page.next_page_token or "x.y"
            ),
            metadata=auth(),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_redeliver_moves_the_endpoints_cursor_back(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    for _ in range(2):
        await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
    # Both payments' updates numbered: the endpoint starts after them.
    async with asyncio.timeout(10):
        while True:
            updates = await stub(channel).ListPaymentUpdates(
                svc.ListPaymentUpdatesRequest(page_size=500), metadata=auth(), timeout=5
            )
            if len(updates.updates) >= 2:
                break
            await asyncio.sleep(0.1)
    created = await _create(channel)
    endpoint_id = uuid.UUID(hex=created.id.removeprefix("we_"))
    first = await db.fetchval(
        "SELECT feed_position FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    await stub(channel).RedeliverWebhooks(
        wh.RedeliverWebhooksRequest(endpoint_id=created.id, after_cursor=updates.updates[0].cursor),
        metadata=auth(),
        timeout=5,
    )
    now = await db.fetchval(
        "SELECT feed_position FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    assert 0 < now < first
    # Empty: from the oldest kept, the feed's horizon (0 unless the retention
    # of another test of the session's database deleted some).
    await stub(channel).RedeliverWebhooks(
        wh.RedeliverWebhooksRequest(endpoint_id=created.id), metadata=auth(), timeout=5
    )
    horizon = await db.fetchval("SELECT horizon FROM payment_updates_state")
    assert horizon < now
    assert (
        await db.fetchval("SELECT feed_position FROM webhook_endpoints WHERE id = $1", endpoint_id)
        == horizon
    )
    # Another client's cursor, or one we never issued, is refused.
    theirs = await stub(channel).ListPaymentUpdates(
        svc.ListPaymentUpdatesRequest(page_size=1), metadata=auth("merchant-2"), timeout=5
    )
    for bad in (theirs.next_cursor or "c1.AAAAAAAAAAE.xxxx", "nonsense"):
        code, reason, _ = await _error(
            stub(channel).RedeliverWebhooks(
                wh.RedeliverWebhooksRequest(endpoint_id=created.id, after_cursor=bad),
                metadata=auth(),
            )
        )
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR")
