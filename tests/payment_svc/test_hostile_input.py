"""Issue 10: hostile input, black-box over real channels to the session's
payment-svc process. Nothing answers UNKNOWN/INTERNAL; a validly signed
event that can never be processed is quarantined (redacted), reported, and
replayable; page tokens are ours or refused; unexpected exceptions are
INTERNAL with a request id and no exception text.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from payment_svc.entrypoints.interceptors import CallPipeline
from payment_svc.settings import ConfigError, Principal, Role, Settings
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from tests.support import auth, create_request, rich_error, stub

PAN = "4242424242424242"


def sync_stub(channel: grpc.aio.Channel) -> sync_grpc.ProviderSyncServiceStub:
    return sync_grpc.ProviderSyncServiceStub(channel)


def event_text(obj: dict[str, Any] | None = None, **envelope: Any) -> str:
    document: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_700_000_000,
        "data": {
            "object": {
                "id": f"pi_{uuid.uuid4().hex[:20]}",
                "object": "payment_intent",
                "status": "succeeded",
                "amount": 1999,
                "currency": "usd",
                "metadata": {},
                **(obj or {}),
            }
        },
    }
    document.update(envelope)
    return json.dumps(document)


def deep(levels: int) -> str:
    return event_text().replace('"object": "event"', '"nested": ' + "[" * levels + "]" * levels)


POISON = {
    "created 10^20": event_text(created=10**20),
    "nested 982 deep": deep(982),
    "nested 65 deep": deep(65),
    "NaN": event_text().replace('"amount": 1999', '"amount": NaN'),
    "Infinity": event_text().replace('"amount": 1999', '"amount": -Infinity'),
    "1e999": event_text().replace('"amount": 1999', '"amount": 1e999'),
    "NUL": event_text({"description": "a\u0000b"}),
    "lone surrogate": event_text().replace('"usd"', '"\\ud800usd"'),
    "object id of 4,000 characters": event_text({"id": "pi_" + "x" * 4000}),
    "amount beyond int64": event_text({"amount": 2**64}),
    "negative dispute amount": event_text(
        {"amount": -500, "payment_intent": "pi_x"}, type="charge.dispute.created"
    ),
    "card number as a JSON number": event_text({"amount": int(PAN)}),
}


async def apply_raw(
    channel: grpc.aio.Channel, payload: bytes, who: str = "gateway"
) -> sync.ApplyProviderEventResponse:
    return await sync_stub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(payload=payload), metadata=auth(who), timeout=5
    )


@pytest.mark.parametrize("name", list(POISON))
@pytest.mark.parametrize("who", ["gateway", "reconciler"])
async def test_a_poison_event_is_quarantined_reported_and_answered_once_for_all(
    channel: grpc.aio.Channel, db: asyncpg.Pool, name: str, who: str
) -> None:
    payload = POISON[name].encode()
    # A result, not an error (issue 22): the caller acknowledges it.
    reply = await apply_raw(channel, payload, who)
    assert reply.quarantined and not (reply.applied or reply.duplicate or reply.payment_id)
    quarantine_id = uuid.UUID(reply.quarantine_id)
    row = await db.fetchrow(
        "SELECT payload, reason, deliveries FROM quarantined_provider_events WHERE id = $1",
        quarantine_id,
    )
    assert row is not None and row["reason"]
    assert "payload" in row["reason"]
    assert PAN not in bytes(row["payload"]).decode("utf-8", "replace")
    # A redelivery of the same bytes counts; it is not a second entry.
    again = await apply_raw(channel, payload, who)
    assert (again.quarantined, again.quarantine_id) == (True, str(quarantine_id))
    assert (
        await db.fetchval(
            "SELECT deliveries FROM quarantined_provider_events WHERE id = $1", quarantine_id
        )
        == row["deliveries"] + 1
    )
    discrepancy = await db.fetchrow(
        """SELECT kind, occurrences FROM discrepancies
           WHERE details->>'quarantine_id' = $1 AND resolved_at IS NULL""",
        str(quarantine_id),
    )
    assert discrepancy is not None
    assert discrepancy["kind"] == "UNPROCESSABLE_PROVIDER_EVENT"


@pytest.mark.parametrize("error", [5, True, "card declined", ["x"]])
async def test_a_last_payment_error_of_any_shape_is_understood(
    channel: grpc.aio.Channel, error: object
) -> None:
    payload = event_text(
        {"status": "requires_payment_method", "last_payment_error": error},
        type="payment_intent.payment_failed",
    )
    reply = await apply_raw(channel, payload.encode())
    assert not reply.duplicate


async def test_a_quarantined_event_is_listed_and_replayed_once_it_can_be_processed(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    # The gateway could not read it (its rule, not payment-svc's): quarantined
    # as it is; payment-svc can process it, so a replay applies it.
    payment = (
        await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    ).payment
    body = event_text({"metadata": {"payment_id": payment.id}}, id=f"x{uuid.uuid4().hex}")
    kept = await sync_stub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(payload=body.encode(), unreadable_reason="no evt_ id"),
        metadata=auth("gateway"),
        timeout=5,
    )
    assert kept.quarantined
    quarantine_id = kept.quarantine_id
    listed = await sync_stub(channel).ListQuarantinedEvents(
        sync.ListQuarantinedEventsRequest(page_size=500), metadata=auth("reconciler"), timeout=5
    )
    mine = next(e for e in listed.events if e.id == quarantine_id)
    assert "no evt_ id" in mine.reason
    assert mine.source == "webhook"

    reply = await sync_stub(channel).ReplayQuarantinedEvent(
        sync.ReplayQuarantinedEventRequest(quarantine_id=quarantine_id),
        metadata=auth("reconciler"),
        timeout=5,
    )
    assert not reply.still_quarantined
    assert reply.outcome.payment_id == payment.id
    assert reply.event.HasField("replayed_at")
    resolved = await db.fetchval(
        "SELECT resolved_at IS NOT NULL FROM discrepancies WHERE details->>'quarantine_id' = $1",
        quarantine_id,
    )
    assert resolved is True
    after = await sync_stub(channel).ListQuarantinedEvents(
        sync.ListQuarantinedEventsRequest(page_size=500), metadata=auth("reconciler"), timeout=5
    )
    assert quarantine_id not in {e.id for e in after.events}


async def test_a_replay_that_still_fails_stays_quarantined(channel: grpc.aio.Channel) -> None:
    kept = await apply_raw(channel, event_text(created=-(10**30)).encode())
    assert kept.quarantined
    quarantine_id = kept.quarantine_id
    reply = await sync_stub(channel).ReplayQuarantinedEvent(
        sync.ReplayQuarantinedEventRequest(quarantine_id=quarantine_id),
        metadata=auth("reconciler"),
        timeout=5,
    )
    assert reply.still_quarantined
    assert reply.event.id == quarantine_id
    for who, code in (("gateway", grpc.StatusCode.PERMISSION_DENIED),):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await sync_stub(channel).ReplayQuarantinedEvent(
                sync.ReplayQuarantinedEventRequest(quarantine_id=quarantine_id),
                metadata=auth(who),
                timeout=5,
            )
        assert denied.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await sync_stub(channel).ReplayQuarantinedEvent(
            sync.ReplayQuarantinedEventRequest(quarantine_id=str(uuid.uuid4())),
            metadata=auth("reconciler"),
            timeout=5,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _forged(body: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


FORGED_TOKENS = {
    "deep JSON": base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),
    "huge t": _forged({"t": 10**30, "i": uuid.uuid4().hex, "f": "x"}),
    "integer i": _forged({"t": 1, "i": 12345, "f": "x"}),
    "an old unsigned token": _forged({"t": 1_700_000_000_000_000, "i": uuid.uuid4().hex}),
    "signed by another key": "eyJ0IjogMX0.AAAAAAAAAAAAAAAAAAAAAA",
    "NUL-free garbage": "%%%.$$$",
    "very long": "a" * 100_000,
}


@pytest.mark.parametrize("name", list(FORGED_TOKENS))
async def test_a_page_token_we_did_not_sign_is_invalid_argument(
    channel: grpc.aio.Channel, name: str
) -> None:
    token = FORGED_TOKENS[name]
    calls = [
        stub(channel).ListPayments(
            svc.ListPaymentsRequest(page_token=token), metadata=auth(), timeout=5
        ),
        sync_stub(channel).ListPaymentsCreated(
            sync.ListPaymentsCreatedRequest(page_token=token),
            metadata=auth("reconciler"),
            timeout=5,
        ),
        sync_stub(channel).ListDiscrepancies(
            sync.ListDiscrepanciesRequest(page_token=token),
            metadata=auth("reconciler"),
            timeout=5,
        ),
        sync_stub(channel).ListPaymentsToReconcile(
            sync.ListPaymentsToReconcileRequest(page_token=token),
            metadata=auth("reconciler"),
            timeout=5,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name


FAR = Timestamp(seconds=10**15)
HOSTILE_CALLS: dict[str, tuple[str, str, Any]] = {
    "NUL in description": ("merchant", "CreatePayment", create_request(description="a\x00b")),
    "NUL in a metadata key": ("merchant", "CreatePayment", create_request(metadata={"k\x00": "v"})),
    "NUL in a metadata value": (
        "merchant",
        "CreatePayment",
        create_request(metadata={"k": "\x00"}),
    ),
    "created_after past 9999": (
        "merchant",
        "ListPayments",
        svc.ListPaymentsRequest(created_after=FAR),
    ),
    "created_before before year 1": (
        "merchant",
        "ListPayments",
        svc.ListPaymentsRequest(created_before=Timestamp(seconds=-(10**15))),
    ),
    "nanos out of range": (
        "reconciler",
        "ListPaymentsCreated",
        sync.ListPaymentsCreatedRequest(created_after=Timestamp(seconds=1, nanos=-5)),
    ),
    "NUL in a payment id": ("merchant", "GetPayment", svc.GetPaymentRequest(payment_id="pay_\x00")),
    "NUL in a checkpoint name": (
        "reconciler",
        "SaveCheckpoint",
        sync.SaveCheckpointRequest(name="a\x00", value="v"),
    ),
    "NUL in a checkpoint value": (
        "reconciler",
        "SaveCheckpoint",
        sync.SaveCheckpointRequest(name="fuzz", value="\x00"),
    ),
    "a checkpoint name of 5,000 characters": (
        "reconciler",
        "GetCheckpoint",
        sync.GetCheckpointRequest(name="n" * 5000),
    ),
    "NUL in a note": (
        "reconciler",
        "ResolveDiscrepancy",
        sync.ResolveDiscrepancyRequest(discrepancy_id=str(uuid.uuid4()), note="\x00"),
    ),
    "NUL in discrepancy details": (
        "reconciler",
        "ReportDiscrepancy",
        sync.ReportDiscrepancyRequest(
            kind=sync.DISCREPANCY_KIND_STUCK_PAYMENT,
            provider_payment_id="pi_1",
            details={"k": "\x00"},
        ),
    ),
    "a provider payment id of 5,000 characters": (
        "reconciler",
        "ReportDiscrepancy",
        sync.ReportDiscrepancyRequest(
            kind=sync.DISCREPANCY_KIND_STUCK_PAYMENT, provider_payment_id="p" * 5000
        ),
    ),
    "older_than of 10^12 s": (
        "reconciler",
        "ListPaymentsToReconcile",
        sync.ListPaymentsToReconcileRequest(older_than=Duration(seconds=10**12)),
    ),
    "older_than of 10,000 years": (
        "reconciler",
        "ListPaymentsToReconcile",
        sync.ListPaymentsToReconcileRequest(older_than=Duration(seconds=315_000_000_000)),
    ),
    "a lease of 10^12 s": (
        "reconciler",
        "ListPaymentsToReconcile",
        sync.ListPaymentsToReconcileRequest(reconciler_id="r", lease=Duration(seconds=10**12)),
    ),
    "a run started past 9999": (
        "reconciler",
        "RecordReconciliationRun",
        sync.RecordReconciliationRunRequest(
            run=sync.ReconciliationRun(job="sweep", started_at=FAR, finished_at=FAR)
        ),
    ),
    "a run with NUL in its error": (
        "reconciler",
        "RecordReconciliationRun",
        sync.RecordReconciliationRunRequest(
            run=sync.ReconciliationRun(
                job="sweep",
                started_at=Timestamp(seconds=1),
                finished_at=Timestamp(seconds=2),
                error_message="\x00",
            )
        ),
    ),
    "a job name of 5,000 characters": (
        "reconciler",
        "RecordReconciliationRun",
        sync.RecordReconciliationRunRequest(
            run=sync.ReconciliationRun(
                job="j" * 5000, started_at=Timestamp(seconds=1), finished_at=Timestamp(seconds=2)
            )
        ),
    ),
    "a negative snapshot amount": (
        "reconciler",
        "ReconcilePayment",
        sync.ReconcilePaymentRequest(
            payment_id="pay_" + "0" * 32,
            snapshot=sync.ProviderPaymentSnapshot(found=True, amount=-1, amount_refunded=-(2**63)),
        ),
    ),
    "NUL in an event id": (
        "gateway",
        "ApplyProviderEvent",
        sync.ApplyProviderEventRequest(provider_event_id="evt_\x00", payload=b"{}"),
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE_CALLS))
async def test_hostile_fields_are_invalid_argument_for_every_caller(
    channel: grpc.aio.Channel, name: str
) -> None:
    who, method, request = HOSTILE_CALLS[name]
    service = stub(channel) if who == "merchant" else sync_stub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await getattr(service, method)(request, metadata=auth(who), timeout=5)
    err = rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (name, err)
    assert "\x00" not in err.message


async def test_a_discrepancy_about_an_unknown_payment_is_not_found(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await sync_stub(channel).ReportDiscrepancy(
            sync.ReportDiscrepancyRequest(
                kind=sync.DISCREPANCY_KIND_STUCK_PAYMENT, payment_id="pay_" + "f" * 32
            ),
            metadata=auth("reconciler"),
            timeout=5,
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_production_refuses_the_development_page_token_key() -> None:
    env = {
        "DATABASE_URL": "postgresql://x/y",
        "PAYMENTS_ENV": "production",
        "PAYMENT_SVC_MERCHANT_TOKENS": "prod-token=merchant-9",
        "PAYMENT_SVC_GATEWAY_TOKEN": "prod-gw",
        "PAYMENT_SVC_RECONCILER_TOKEN": "prod-rec",
        "STRIPE_API_KEY": "sk_live_x",
    }
    with pytest.raises(ConfigError, match="PAYMENT_SVC_PAGE_TOKEN_KEY"):
        Settings.from_env(env)
    with pytest.raises(ConfigError, match="16 characters"):
        Settings.from_env({**env, "PAYMENT_SVC_PAGE_TOKEN_KEY": "short"})
    assert Settings.from_env({**env, "PAYMENT_SVC_PAGE_TOKEN_KEY": "k" * 32}).production


async def test_an_unexpected_exception_is_internal_with_a_request_id_and_no_text() -> None:
    """The last line, over a real channel: a handler that fails in a way no
    rule maps (a bug) answers INTERNAL naming the request id, never the text."""

    async def broken(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise RuntimeError(f"secret detail {PAN}")

    handler = grpc.method_handlers_generic_handler(
        "payments.v1.PaymentService",
        # A method of the authorization table (default deny refuses others).
        {"GetPayment": grpc.unary_unary_rpc_method_handler(broken)},
    )
    principals = {"t": Principal("merchant-1", Role.MERCHANT)}
    server = grpc.aio.server(interceptors=[CallPipeline(principals, 5.0)])
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/payments.v1.PaymentService/GetPayment")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call(
                    b"",
                    metadata=(("authorization", "Bearer t"), ("x-request-id", "req-7")),
                    timeout=5,
                )
    finally:
        await server.stop(None)
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "req-7" in (exc.value.details() or "")
    assert "secret" not in (exc.value.details() or "")
    assert PAN not in (exc.value.details() or "")


@pytest.mark.parametrize(
    ("method", "who"),
    [
        ("/payments.v1.PaymentService/GetPayment", "merchant"),
        ("/payments.v1.PaymentService/CreatePayment", "merchant"),
        ("/payments.v1.ProviderSyncService/ApplyProviderEvent", "gateway"),
        ("/payments.v1.ProviderSyncService/SaveCheckpoint", "reconciler"),
    ],
)
@pytest.mark.parametrize("body", [b"\x0a\x02\xff\xfe", b"\xff\xff\xff", b"\x0a\x05ab"])
async def test_a_body_protobuf_cannot_parse_is_invalid_argument(
    channel: grpc.aio.Channel, method: str, who: str, body: bytes
) -> None:
    """Bad UTF-8 in a string field, a corrupt wire format: not grpcio's
    UNKNOWN with the parser's message."""
    raw = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await raw(body, metadata=auth(who), timeout=5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (exc.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await raw(body, timeout=5)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
