"""The gateway over HTTP, through init_app on a real port, with payment-svc unreachable
(a closed port): every refusal is a 4xx with its reason and is never forwarded; a
valid event is forwarded once and, since nobody confirms it, answered 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from gateway_testkit import (
    OLD_SECRET,
    SECRET,
    WEBHOOK,
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
from prometheus_client.parser import text_string_to_metric_families

from webhook_gateway.errors import Reason
from webhook_gateway.forwarder import FAILURES

LIMIT = 4096


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[GatewayClient]:
    """After a rotation: only the newest secret is active."""
    async with running(settings(secrets=(SECRET,), max_body_bytes=LIMIT)) as client:
        yield client


@pytest.fixture(scope="module")
async def rotating() -> AsyncIterator[GatewayClient]:
    """During a rotation: the new secret first, the old one still accepted."""
    async with running(settings(secrets=(SECRET, OLD_SECRET))) as client:
        yield client


BODY = body_of(event())


def _flipped(body: bytes) -> bytes:
    return body[:20] + bytes([body[20] ^ 0x01]) + body[21:]


# Each case: headers (made when the test runs: timestamps are relative to now), body, reason.
INVALID: dict[str, Callable[[], tuple[dict[str, str], bytes, Reason]]] = {
    "header missing": lambda: ({}, BODY, Reason.MISSING_HEADER),
    "header malformed": lambda: (
        {"Stripe-Signature": "v1=abc,t=yesterday"},
        BODY,
        Reason.MALFORMED_HEADER,
    ),
    "wrong secret": lambda: (signed(BODY, "whsec_wrong"), BODY, Reason.NO_MATCHING_SIGNATURE),
    "one flipped bit": lambda: (signed(BODY), _flipped(BODY), Reason.NO_MATCHING_SIGNATURE),
    "10 minutes old": lambda: (
        signed(BODY, at=time.time() - 600),
        BODY,
        Reason.TIMESTAMP_OUTSIDE_TOLERANCE,
    ),
    "10 minutes ahead": lambda: (
        signed(BODY, at=time.time() + 600),
        BODY,
        Reason.TIMESTAMP_OUTSIDE_TOLERANCE,
    ),
    "old secret after rotation": lambda: (
        signed(BODY, OLD_SECRET),
        BODY,
        Reason.NO_MATCHING_SIGNATURE,
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_signature_matrix_refusals_are_400_counted_and_never_forwarded(
    gateway: GatewayClient, case: str
) -> None:
    headers, body, reason = INVALID[case]()
    before = sample(gateway, "webhook_gateway_verification_failures_total", reason=reason)
    forwarded_before = forwarded(gateway)

    status, answer = await post(gateway, body, headers)

    assert status == 400
    assert answer["error"]["reason"] == reason
    assert answer["error"]["message"]
    assert sample(gateway, "webhook_gateway_verification_failures_total", reason=reason) == (
        before + 1
    )
    assert forwarded(gateway) == forwarded_before


@pytest.mark.parametrize(
    ("secrets", "matched"),
    [((SECRET,), "newest"), ((OLD_SECRET,), "older"), ((OLD_SECRET, SECRET), "newest")],
)
async def test_signature_matrix_during_rotation_both_secrets_are_accepted_and_forwarded(
    rotating: GatewayClient, secrets: tuple[str, ...], matched: str
) -> None:
    body = body_of(event())
    forwarded_before = forwarded(rotating)
    matches = sample(rotating, "webhook_gateway_signature_matches_total", secret=matched)

    status, answer = await post(rotating, body, signed(body, *secrets))

    # Verified and forwarded once; payment-svc is unreachable, so the provider must retry.
    assert (status, answer["error"]["reason"]) == (503, Reason.PAYMENT_SERVICE_UNAVAILABLE)
    assert forwarded(rotating) == forwarded_before + 1
    assert sample(rotating, "webhook_gateway_signature_matches_total", secret=matched) == (
        matches + 1
    )


async def test_a_body_over_the_limit_is_413_without_being_forwarded(gateway: GatewayClient) -> None:
    body = body_of(event(padding="x" * LIMIT))
    forwarded_before = forwarded(gateway)
    status, answer = await post(gateway, body, signed(body))
    assert (status, answer["error"]["reason"]) == (413, Reason.BODY_TOO_LARGE)
    assert forwarded(gateway) == forwarded_before


async def test_a_chunked_body_over_the_limit_is_413(gateway: GatewayClient) -> None:
    body = body_of(event(padding="x" * LIMIT))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with gateway.post(WEBHOOK, data=chunks(), headers=signed(body)) as response:
        assert response.status == 413
        assert (await response.json())["error"]["reason"] == Reason.BODY_TOO_LARGE


async def test_a_body_of_exactly_the_limit_is_read(gateway: GatewayClient) -> None:
    document = event(padding="")
    document["padding"] = "x" * (LIMIT - len(body_of(document)))
    body = body_of(document)
    assert len(body) == LIMIT
    status, _ = await post(gateway, body, signed(body))
    assert status == 503  # verified and forwarded: nobody listens


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", Reason.INVALID_JSON),
        (b"\xff\xfe\x00", Reason.INVALID_JSON),
        (b'["evt_1"]', Reason.INVALID_EVENT),
        (body_of(event(id="ch_1")), Reason.INVALID_EVENT),
        (body_of(event(created="yesterday")), Reason.INVALID_EVENT),
        (body_of(event(data={"object": None})), Reason.INVALID_EVENT),
    ],
)
async def test_a_signed_body_that_is_not_an_event_is_forwarded_for_the_quarantine(
    gateway: GatewayClient, body: bytes, reason: Reason
) -> None:
    # Issue 10: verified, so the provider's; a 400 would only make it retry the
    # same bytes for days. payment-svc quarantines it (here nobody listens: 503).
    forwarded_before = forwarded(gateway)
    status, answer = await post(gateway, body, signed(body))
    assert (status, answer["error"]["reason"]) == (503, Reason.PAYMENT_SERVICE_UNAVAILABLE)
    assert forwarded(gateway) == forwarded_before + 1
    unsigned_status, unsigned = await post(gateway, body, {})
    assert (unsigned_status, unsigned["error"]["reason"]) == (400, Reason.MISSING_HEADER)


async def test_payment_svc_unreachable_is_503_not_ready_but_alive(gateway: GatewayClient) -> None:
    body = body_of(event(type="some.future_type"))
    status, answer = await post(gateway, body, signed(body))
    assert (status, answer["error"]["reason"]) == (503, Reason.PAYMENT_SERVICE_UNAVAILABLE)
    async with gateway.get("/readyz") as response:
        assert response.status == 503
    async with gateway.get("/healthz") as response:
        assert response.status == 200
    assert sample(gateway, "webhook_gateway_events_total", type="unknown", outcome="failed") >= 1


async def test_the_request_id_is_kept_or_made_and_returned(gateway: GatewayClient) -> None:
    async with gateway.post(WEBHOOK, data=b"{}", headers={"X-Request-Id": "req-42"}) as r:
        assert r.headers["X-Request-Id"] == "req-42"
        assert (await r.json())["error"]["request_id"] == "req-42"
    async with gateway.post(WEBHOOK, data=b"{}", headers={"X-Request-Id": "bad id\t!"}) as r:
        assert r.headers["X-Request-Id"] != "bad id\t!"
        assert len(r.headers["X-Request-Id"]) == 32


async def test_unknown_routes_and_methods_answer_json(gateway: GatewayClient) -> None:
    async with gateway.get(WEBHOOK) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"]["reason"] == "method_not_allowed"
    async with gateway.get("/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"]["reason"] == "not_found"


async def test_metrics_are_exported_in_prometheus_text(gateway: GatewayClient) -> None:
    await post(gateway, b"{}", {})
    async with gateway.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    families: dict[str, Any] = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "webhook_gateway_requests",
        "webhook_gateway_verification_failures",
        "webhook_gateway_forward_seconds",
        "webhook_gateway_events",
        "webhook_gateway_signature_matches",
    ):
        assert name in families, name
    requests = {
        (s.labels["route"], s.labels["status"])
        for s in families["webhook_gateway_requests"].samples
        if s.name.endswith("_total")
    }
    assert ("/webhooks/stripe", "400") in requests
    assert families["webhook_gateway_forward_seconds"].type == "histogram"


def test_the_status_table_covers_every_grpc_code() -> None:
    assert set(FAILURES) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    statuses = {code: kind.status for code, (kind, _) in FAILURES.items()}
    assert statuses.pop(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert set(statuses.values()) == {503}


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(
    gateway: GatewayClient,
) -> None:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        writer.write(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        await writer.drain()
        # Not one byte of the gigabyte was sent: the answer cannot have waited for it.
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 413")
    finally:
        writer.close()
