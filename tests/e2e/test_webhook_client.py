"""payments.client's webhook endpoint methods against a real payment-svc
(SPEC §3d), and their errors in the client's tree."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from payments.client import (
    InvalidArgument,
    NotFound,
    PaymentsClient,
    PermanentError,
    TooManyWebhookEndpoints,
)
from payments.v1 import webhooks_pb2 as wh
from payments_dev.stack import Stack


async def test_the_client_manages_endpoints(
    spawn_payment_svc: Callable[..., Awaitable[Stack]],
) -> None:
    client_id = "merchant-client-" + uuid.uuid4().hex[:8]
    own = await spawn_payment_svc(PAYMENT_SVC_MERCHANT_TOKENS=f"client-token={client_id}")
    async with PaymentsClient(own.grpc_target, "client-token") as client:
        created = await client.create_webhook_endpoint("http://127.0.0.1:9/a", "first")
        assert created.secret.startswith("whsec_")
        assert [e.id for e in await client.list_webhook_endpoints()] == [created.id]

        updated = await client.update_webhook_endpoint(created.id, enabled=False)
        assert (updated.status, updated.url, updated.description) == (
            wh.WEBHOOK_ENDPOINT_STATUS_DISABLED,
            "http://127.0.0.1:9/a",
            "first",
        )
        updated = await client.update_webhook_endpoint(
            created.id, url="http://localhost:9/b", description="", enabled=True
        )
        assert (updated.status, updated.url, updated.description) == (
            wh.WEBHOOK_ENDPOINT_STATUS_ENABLED,
            "http://localhost:9/b",
            "",
        )
        rotated = await client.rotate_webhook_secret(created.id)
        assert rotated.secret and rotated.secret != created.secret
        assert await client.list_webhook_deliveries(created.id) == ([], "")
        await client.redeliver_webhooks(created.id)

        with pytest.raises(InvalidArgument) as refused:
            await client.create_webhook_endpoint("https://10.0.0.1/")
        assert refused.value.reason == "WEBHOOK_URL_NOT_ALLOWED"
        assert refused.value.field_violations[0][0] == "url"

        for _ in range(15):
            await client.create_webhook_endpoint("http://127.0.0.1:9/more")
        with pytest.raises(TooManyWebhookEndpoints) as full:
            await client.create_webhook_endpoint("http://127.0.0.1:9/one-too-many")
        assert isinstance(full.value, PermanentError) and not full.value.retryable

        await client.delete_webhook_endpoint(created.id)
        with pytest.raises(NotFound):
            await client.delete_webhook_endpoint(created.id)
        for endpoint in await client.list_webhook_endpoints():
            await client.delete_webhook_endpoint(endpoint.id)
        assert await client.list_webhook_endpoints() == []
