"""CreatePayment end to end: real payment-svc, real Postgres, provider-sim."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from tests.support import SimControl, auth, create_request, rich_error, stub


async def test_success_is_recorded_before_and_after_the_provider(
    channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool
) -> None:
    req = create_request(metadata={"order": "A-1"})
    reply = await stub(channel).CreatePayment(req, metadata=auth(), timeout=10)
    p = reply.payment
    assert p.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert p.id.startswith("pay_")
    assert p.provider_payment_id.startswith("pi_")
    assert (p.amount, p.currency, p.idempotency_key) == (1999, "USD", req.idempotency_key)
    assert dict(p.metadata) == {"order": "A-1"}
    [intent] = await sim.ledger(payment_id=p.id)
    assert intent["charges"] == 1
    assert intent["idempotency_key"] == p.id
    assert intent["status"] == "succeeded"
    history = await db.fetch(
        "SELECT from_status, to_status, source, applied FROM payment_events "
        "WHERE payment_id = $1 ORDER BY id",
        uuid.UUID(hex=p.id[4:]),
    )
    # Recorded as PENDING before the provider was called...
    assert tuple(history[0]) == (None, "PENDING", "api", True)
    # ...then SUCCEEDED once, from the API's answer or the provider's webhook,
    # whichever came first (the other is kept in the history, not applied).
    applied = [tuple(r) for r in history[1:] if r["applied"]]
    assert [(a[0], a[1]) for a in applied] == [("PENDING", "SUCCEEDED")]
    assert all(r["source"] == "webhook" for r in history[1:] if not r["applied"])


async def test_decline_is_failed_with_the_providers_code(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    reply = await stub(channel).CreatePayment(
        create_request(payment_method="pm_card_chargeDeclined"), metadata=auth(), timeout=10
    )
    assert reply.payment.status == pb.PAYMENT_STATUS_FAILED
    assert reply.payment.failure_code == "generic_decline"
    assert reply.payment.failure_message
    [intent] = await sim.ledger(payment_id=reply.payment.id)
    assert intent["charges"] == 0


async def test_processing_payment_stays_pending(channel: grpc.aio.Channel) -> None:
    reply = await stub(channel).CreatePayment(
        create_request(payment_method="pm_card_processing"), metadata=auth(), timeout=10
    )
    assert reply.payment.status == pb.PAYMENT_STATUS_PENDING
    assert reply.payment.provider_payment_id.startswith("pi_")


async def test_duplicate_with_same_parameters_reports_the_existing_payment(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    req = create_request()
    first = await stub(channel).CreatePayment(req, metadata=auth(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(req, metadata=auth(), timeout=10)
    err = rich_error(exc.value)
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "DUPLICATE_PAYMENT"
    assert err.metadata == {"payment_id": first.payment.id, "status": "PAYMENT_STATUS_SUCCEEDED"}
    [intent] = await sim.ledger(payment_id=first.payment.id)
    assert intent["charges"] == 1


async def test_key_reused_with_other_parameters_is_refused(channel: grpc.aio.Channel) -> None:
    req = create_request()
    first = await stub(channel).CreatePayment(req, metadata=auth(), timeout=10)
    other = create_request(idempotency_key=req.idempotency_key, amount=req.amount + 1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(other, metadata=auth(), timeout=10)
    err = rich_error(exc.value)
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "IDEMPOTENCY_KEY_REUSED"
    assert err.metadata["payment_id"] == first.payment.id


async def test_keys_are_unique_per_client_not_globally(channel: grpc.aio.Channel) -> None:
    req = create_request()
    a = await stub(channel).CreatePayment(req, metadata=auth("merchant"), timeout=10)
    b = await stub(channel).CreatePayment(req, metadata=auth("merchant-2"), timeout=10)
    assert a.payment.id != b.payment.id
    assert b.payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_fifty_concurrent_calls_with_one_key_charge_once(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # Latency keeps the first call at the provider while the others arrive.
    await sim.faults(latency_ms=200)
    req = create_request()
    results = await asyncio.gather(
        *(stub(channel).CreatePayment(req, metadata=auth(), timeout=20) for _ in range(50)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [rich_error(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert len(errors) == 49
    assert {e.code for e in errors} == {grpc.StatusCode.ALREADY_EXISTS}
    assert {e.reason for e in errors} == {"DUPLICATE_PAYMENT"}
    assert {e.metadata["payment_id"] for e in errors} == {ok[0].payment.id}
    intents = await sim.ledger(idempotency_key=ok[0].payment.id)
    assert [i["charges"] for i in intents] == [1]


async def test_provider_timeout_after_charge_is_unknown_never_failed(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # Webhooks lost for now: only the API call could tell us, and it times out.
    await sim.faults(timeout_after_charge_rate=1.0, webhook_drop_rate=1.0)
    reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
    assert reply.payment.status == pb.PAYMENT_STATUS_UNKNOWN
    intents = await sim.ledger(payment_id=reply.payment.id)
    assert [i["charges"] for i in intents] == [1]
    assert intents[0]["status"] == "succeeded"


async def test_provider_5xx_is_unknown(channel: grpc.aio.Channel, sim: SimControl) -> None:
    await sim.faults(error_rate=1.0)
    reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
    assert reply.payment.status == pb.PAYMENT_STATUS_UNKNOWN
