"""ApplyProviderEvent: the inbox, matching, ordering, at-most-once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.stack import Stack
from tests.support import SimControl, auth, create_request, stub

Spawn = Callable[..., Awaitable[Stack]]


def intent_event(
    event_type: str,
    *,
    pi: str,
    payment_id: str | None,
    status: str,
    created: int,
    error: dict[str, Any] | None = None,
) -> bytes:
    obj: dict[str, Any] = {
        "id": pi,
        "object": "payment_intent",
        "status": status,
        "amount": 1999,
        "currency": "usd",
        "metadata": {"payment_id": payment_id} if payment_id else {},
        "last_payment_error": error,
    }
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": created,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


async def apply(
    channel: grpc.aio.Channel, payload: bytes, who: str = "gateway"
) -> sync.ApplyProviderEventResponse:
    event = json.loads(payload)
    return await sync_grpc.ProviderSyncServiceStub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(
            provider_event_id=event["id"], event_type=event["type"], payload=payload
        ),
        metadata=auth(who),
        timeout=5,
    )


async def history(channel: grpc.aio.Channel, payment_id: str) -> list[pb.PaymentEvent]:
    reply = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return list(reply.events)


async def get(channel: grpc.aio.Channel, payment_id: str) -> pb.Payment:
    reply = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return reply.payment


async def processing_payment(channel: grpc.aio.Channel) -> pb.Payment:
    reply = await stub(channel).CreatePayment(
        create_request(payment_method="pm_card_processing"), metadata=auth(), timeout=5
    )
    assert reply.payment.status == pb.PAYMENT_STATUS_PENDING
    return reply.payment


async def test_an_event_settles_a_pending_payment(channel: grpc.aio.Channel) -> None:
    p = await processing_payment(channel)
    now = int(time.time())
    payload = intent_event(
        "payment_intent.succeeded",
        pi=p.provider_payment_id,
        payment_id=p.id,
        status="succeeded",
        created=now,
    )
    reply = await apply(channel, payload)
    assert (reply.duplicate, reply.applied, reply.payment_id) == (False, True, p.id)
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    # (the simulator's own processing event may be in the history too)
    [last] = [
        e for e in await history(channel, p.id) if e.provider_event_id == json.loads(payload)["id"]
    ]
    assert last.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    assert last.provider_event_type == "payment_intent.succeeded"
    assert last.provider_event_id.startswith("evt_")
    assert last.provider_created_at.seconds == now
    assert (last.from_status, last.to_status, last.applied) == (
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
        True,
    )


async def test_a_failure_event_carries_the_decline_code(channel: grpc.aio.Channel) -> None:
    p = await processing_payment(channel)
    await apply(
        channel,
        intent_event(
            "payment_intent.payment_failed",
            pi=p.provider_payment_id,
            payment_id=p.id,
            status="requires_payment_method",
            created=int(time.time()),
            error={
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Insufficient funds.",
            },
        ),
    )
    got = await get(channel, p.id)
    assert got.status == pb.PAYMENT_STATUS_FAILED
    assert got.failure_code == "insufficient_funds"


async def test_one_event_delivered_100_times_is_applied_once(channel: grpc.aio.Channel) -> None:
    p = await processing_payment(channel)
    payload = intent_event(
        "payment_intent.succeeded",
        pi=p.provider_payment_id,
        payment_id=p.id,
        status="succeeded",
        created=int(time.time()),
    )
    first_half = await asyncio.gather(*(apply(channel, payload) for _ in range(50)))
    second_half = [await apply(channel, payload) for _ in range(50)]
    replies = first_half + second_half
    assert sum(not r.duplicate for r in replies) == 1
    assert sum(r.applied for r in replies) == 100  # a duplicate reports the first outcome
    assert {r.payment_id for r in replies} == {p.id}
    event_id = json.loads(payload)["id"]
    assert [e.provider_event_id for e in await history(channel, p.id)].count(event_id) == 1


async def test_an_older_event_is_recorded_but_does_not_move_the_payment(
    channel: grpc.aio.Channel,
) -> None:
    p = await processing_payment(channel)
    now = int(time.time())
    common = {"pi": p.provider_payment_id, "payment_id": p.id}
    await apply(
        channel, intent_event("payment_intent.succeeded", status="succeeded", created=now, **common)
    )
    same_second = intent_event(
        "payment_intent.processing", status="processing", created=now, **common
    )
    older = intent_event(
        "payment_intent.processing", status="processing", created=now - 5, **common
    )
    assert not (await apply(channel, same_second)).applied
    assert not (await apply(channel, older)).applied
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    ours = {json.loads(same_second)["id"], json.loads(older)["id"]}
    late = [e for e in await history(channel, p.id) if e.provider_event_id in ours]
    assert len(late) == 2
    assert all(not e.applied and e.note for e in late)


async def test_an_event_finds_its_payment_by_metadata_before_the_provider_id_is_known(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = (await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)).payment
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    assert p.provider_payment_id == ""
    reply = await apply(
        channel,
        intent_event(
            "payment_intent.succeeded",
            pi="pi_from_event",
            payment_id=p.id,
            status="succeeded",
            created=int(time.time()),
        ),
    )
    assert reply.applied
    got = await get(channel, p.id)
    assert (got.status, got.provider_payment_id) == (pb.PAYMENT_STATUS_SUCCEEDED, "pi_from_event")


async def test_an_unmatched_event_is_kept_and_matched_when_its_payment_appears(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = (await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)).payment
    pi = f"pi_late_{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    # No metadata: only the provider id could match it, and nobody has it yet.
    orphan = intent_event(
        "payment_intent.succeeded", pi=pi, payment_id=None, status="succeeded", created=now
    )
    reply = await apply(channel, orphan)
    assert (reply.duplicate, reply.applied, reply.payment_id) == (False, False, "")
    # A later event teaches us the provider id (still processing)...
    await apply(
        channel,
        intent_event(
            "payment_intent.processing",
            pi=pi,
            payment_id=p.id,
            status="processing",
            created=now - 1,
        ),
    )
    # ...and the inbox upkeep matches the orphan, which settles the payment.
    orphan_id = json.loads(orphan)["id"]
    for _ in range(50):
        if orphan_id in {e.provider_event_id for e in await history(channel, p.id)}:
            break
        await asyncio.sleep(0.1)
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    again = await apply(channel, orphan)
    assert again.duplicate
    assert again.payment_id == p.id


async def test_an_unmatched_event_delivered_20_times_at_once_is_kept_once(
    channel: grpc.aio.Channel,
) -> None:
    orphan = intent_event(
        "payment_intent.succeeded",
        pi=f"pi_orphan_{uuid.uuid4().hex[:8]}",
        payment_id=None,
        status="succeeded",
        created=int(time.time()),
    )
    replies = await asyncio.gather(*(apply(channel, orphan) for _ in range(20)))
    assert sum(not r.duplicate for r in replies) == 1
    assert {(r.applied, r.payment_id) for r in replies} == {(False, "")}


async def test_only_the_gateway_and_the_reconciler_may_apply_events(
    channel: grpc.aio.Channel,
) -> None:
    payload = intent_event(
        "payment_intent.succeeded", pi="pi_x", payment_id=None, status="succeeded", created=1
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await apply(channel, payload, who="merchant")
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await apply(channel, payload, who="reconciler")
    assert not reply.duplicate


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"id": "evt_1", "type": "x"}',
        b'{"id": "", "type": "x", "data": {"object": {}}}',
    ],
)
async def test_a_malformed_event_is_quarantined_with_why(
    channel: grpc.aio.Channel, payload: bytes
) -> None:
    # A result, not an error (issue 22): quarantined, the payload named why.
    reply = await sync_grpc.ProviderSyncServiceStub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(payload=payload), metadata=auth("gateway"), timeout=5
    )
    assert reply.quarantined and reply.quarantine_id
    assert not (reply.applied or reply.duplicate or reply.payment_id)
    listed = await sync_grpc.ProviderSyncServiceStub(channel).ListQuarantinedEvents(
        sync.ListQuarantinedEventsRequest(page_size=500), metadata=auth("reconciler"), timeout=5
    )
    [entry] = [e for e in listed.events if e.id == reply.quarantine_id]
    assert "payload" in entry.reason


async def test_an_event_that_never_matches_is_reported(spawn_payment_svc: Spawn) -> None:
    extra = await spawn_payment_svc(
        PAYMENT_SVC_UNMATCHED_EVENT_DEADLINE_SECONDS="0.5", PAYMENT_SVC_INBOX_UPKEEP_SECONDS="0.2"
    )
    pi = f"pi_nobody_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        await apply(
            ch,
            intent_event(
                "payment_intent.succeeded", pi=pi, payment_id=None, status="succeeded", created=1
            ),
        )
    assert extra.config.log_dir is not None
    log = Path(extra.config.log_dir) / "payment-svc.log"
    for _ in range(50):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        reported = [ln for ln in lines if ln.get("event") == "provider_event_unmatched"]
        if any(ln.get("provider_object_id") == pi for ln in reported):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the unmatched event was never reported")
    assert [ln["level"] for ln in reported if ln.get("provider_object_id") == pi] == ["error"]


async def test_an_event_with_another_amount_is_a_discrepancy_and_not_applied(
    channel: grpc.aio.Channel,
) -> None:
    p = await processing_payment(channel)
    event = json.loads(
        intent_event(
            "payment_intent.succeeded",
            pi=p.provider_payment_id,
            payment_id=p.id,
            status="succeeded",
            created=int(time.time()),
        )
    )
    event["data"]["object"]["amount"] = p.amount + 1
    reply = await apply(channel, json.dumps(event).encode())
    assert not reply.applied
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_PENDING
    listed = await sync_grpc.ProviderSyncServiceStub(channel).ListDiscrepancies(
        sync.ListDiscrepanciesRequest(kinds=[sync.DISCREPANCY_KIND_AMOUNT_MISMATCH]),
        metadata=auth("reconciler"),
        timeout=5,
    )
    [found] = [d for d in listed.discrepancies if d.payment_id == p.id]
    assert found.details["provider_amount"] == str(p.amount + 1)


def charge_event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


async def test_a_partial_refund_then_a_dispute_reverse_the_whole_amount(
    channel: grpc.aio.Channel,
) -> None:
    p = (await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)).payment
    assert p.status == pb.PAYMENT_STATUS_SUCCEEDED
    charge = {"id": "ch_x", "object": "charge", "payment_intent": p.provider_payment_id}
    # A charge's refunded total is evidence, never a floor (issue 25): it
    # counts pending refunds too, and moves nothing.
    await apply(
        channel,
        charge_event("charge.refunded", {**charge, "amount": p.amount, "amount_refunded": 500}),
    )
    assert (await get(channel, p.id)).amount_reversed == 0
    # The refund itself, succeeded at the provider (made from its dashboard).
    refund = {
        "id": f"re_{uuid.uuid4().hex[:12]}",
        "object": "refund",
        "amount": 500,
        "currency": "usd",
        "payment_intent": p.provider_payment_id,
        "status": "succeeded",
        "metadata": {},
    }
    await apply(channel, charge_event("refund.created", refund))
    refunded = await get(channel, p.id)
    # SPEC §3a: partly refunded, it stays SUCCEEDED (this asserted REVERSED, the defect).
    assert (refunded.status, refunded.amount_reversed) == (pb.PAYMENT_STATUS_SUCCEEDED, 500)
    dispute = {"id": "dp_x", "object": "dispute", "payment_intent": p.provider_payment_id}
    disputed = charge_event("charge.dispute.created", {**dispute, "amount": p.amount - 500})
    await apply(channel, disputed)
    await apply(channel, disputed)  # a redelivery adds nothing
    now = await get(channel, p.id)
    assert now.amount_reversed == p.amount
    assert now.status == pb.PAYMENT_STATUS_REVERSED


async def test_inbox_rows_that_no_longer_parse_never_stop_the_rematch(
    channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool
) -> None:
    """More unreadable rows than one round takes (stored by an older parser,
    say), ahead of a real orphan in the queue: the orphan is still matched,
    and the unreadable rows go to the back of the queue."""
    junk = [f"evt_unreadable_{uuid.uuid4().hex}" for _ in range(120)]
    await db.executemany(
        """INSERT INTO provider_events (provider_event_id, event_type, payload, source)
           VALUES ($1, 'payment_intent.succeeded', '{"not": "an event"}', 'webhook')""",
        [(j,) for j in junk],
    )
    try:
        await test_an_unmatched_event_is_kept_and_matched_when_its_payment_appears(channel, sim)
        # The orphan may be matched in the first round, before every junk
        # row had its turn: the rounds go on through all of them.
        for _ in range(50):
            tried = await db.fetchval(
                "SELECT count(*) FROM provider_events"
                " WHERE provider_event_id = ANY($1::text[]) AND match_attempted_at IS NOT NULL",
                junk,
            )
            if tried == len(junk):
                break
            await asyncio.sleep(0.1)
        assert tried == len(junk)
    finally:
        await db.execute(
            "DELETE FROM provider_events WHERE provider_event_id = ANY($1::text[])", junk
        )
