"""Refunds from the provider to us (issue 13, items 2-4), with every process
running (payment-svc, webhook-gateway, provider-sim; `reconciler --once`
against the session stack): the webhook and the reconciler bring a refund's
outcome, a refund made at the provider directly is recorded as ours once,
events arriving twice or out of order apply once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.stack import Stack
from tests.e2e.refund_testkit import RF, RP, RS, RU, intent, paid, refund, refunds
from tests.e2e.test_webhook_flow import get, history, until
from tests.payment_svc.test_provider_events import apply
from tests.reconciler.reconciler_testkit import (
    assert_completed,
    discrepancies,
    run_once,
    sync_stub,
)
from tests.support import SimControl, auth, rich_error

S, R = pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_REVERSED
WEBHOOK, RECONCILER = pb.PAYMENT_EVENT_SOURCE_WEBHOOK, pb.PAYMENT_EVENT_SOURCE_RECONCILER


@pytest.fixture
async def psim(sim: SimControl) -> AsyncIterator[SimControl]:
    """The simulator, its refund faults cleared after the test too."""
    yield sim
    await sim.faults(refund_pending_rate=0)


async def sim_refund(sim: SimControl, p: pb.Payment, amount: int) -> dict[str, Any]:
    """A refund made at the provider directly (its dashboard): no metadata."""
    return await sim.post(
        f"/_sim/payment_intents/{p.provider_payment_id}/refund", {"amount": amount}
    )


async def settle_refund(sim: SimControl, provider_refund_id: str, outcome: str) -> None:
    await sim.post(f"/_sim/refunds/{provider_refund_id}/settle", {"outcome": outcome})


async def listed_at_provider(sim: SimControl, payment_id: str) -> list[dict[str, Any]]:
    row = await intent(sim, payment_id)
    found: list[dict[str, Any]] = row["refunds"]
    return found


async def test_a_refund_made_at_the_provider_is_recorded_as_ours_once_through_the_webhook(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    made = await sim_refund(psim, p, 300)

    async def recorded() -> bool:
        return len(await refunds(channel, p.id)) == 1

    await until(recorded, timeout=10)

    async def both_events_seen() -> bool:
        types = {e.provider_event_type for e in await history(channel, p.id)}
        return {"refund.created", "charge.refunded"} <= types

    await until(both_events_seen, timeout=10)
    [r] = await refunds(channel, p.id)
    assert (r.status, r.amount, r.provider_refund_id) == (RS, 300, made["id"])
    assert (r.idempotency_key, r.source) == ("", WEBHOOK)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 300)
    # One entry moved it; the other event is in the history, not applied.
    entries = [e for e in await history(channel, p.id) if e.provider_event_id]
    applied = [e for e in entries if e.applied]
    assert len(applied) == 1 and applied[0].refund_id == r.id
    assert "amount_reversed 0 -> 300 of 1000" in applied[0].note
    # The reconciler finds nothing left to do: still one refund, 300.
    assert_completed(await run_once(stack))
    assert [x.id for x in await refunds(channel, p.id)] == [r.id]
    assert (await get(channel, p.id)).amount_reversed == 300


async def test_a_refund_made_at_the_provider_with_the_webhooks_lost_is_recorded_by_catch_up(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    await psim.faults(webhook_drop_rate=1.0)
    p = await paid(channel)
    made = await sim_refund(psim, p, 1000)
    await asyncio.sleep(0.5)
    assert await refunds(channel, p.id) == []  # nothing reached payment-svc

    first = await run_once(stack, "--jobs", "catch_up")
    assert_completed(first)
    [r] = await refunds(channel, p.id)
    assert (r.status, r.amount, r.provider_refund_id, r.source) == (
        RS,
        1000,
        made["id"],
        RECONCILER,
    )
    assert r.idempotency_key == ""
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (R, 1000)
    # Every job again (the settlement diff lists the intent's refunds): once.
    assert_completed(await run_once(stack))
    assert [x.id for x in await refunds(channel, p.id)] == [r.id]
    assert (await get(channel, p.id)).amount_reversed == 1000


async def test_the_provider_times_out_after_making_the_refund_one_pass_makes_it_succeeded(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    # The webhooks lost too: the reconciler alone must bring the outcome.
    await psim.faults(timeout_after_charge_rate=1.0, webhook_drop_rate=1.0)
    r = await refund(channel, p.id, 400)
    # (the drop stays: cleared, the provider's retries would deliver them)
    await psim.faults(timeout_after_charge_rate=0)
    assert (r.status, r.provider_refund_id) == (RU, "")

    result = await run_once(stack, "--jobs", "sweep")
    assert_completed(result)
    [after] = await refunds(channel, p.id)
    assert after.id == r.id and after.status == RS
    assert after.provider_refund_id.startswith("re_")
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 400)
    [entry] = [
        e for e in await history(channel, p.id) if e.refund_id == r.id and e.source == RECONCILER
    ]
    assert (entry.refund_status, entry.applied) == (RS, True)
    # Exactly one refund at the provider: found by metadata.refund_id, not re-driven.
    [theirs] = await listed_at_provider(psim, p.id)
    assert (theirs["id"], theirs["amount"]) == (after.provider_refund_id, 400)
    assert theirs["metadata"]["refund_id"] == r.id


async def test_a_refund_the_provider_never_got_is_redriven_once_with_the_same_key(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    # Every provider call fails before it reaches the books: UNKNOWN, nothing made.
    await psim.faults(error_rate=1.0)
    r = await refund(channel, p.id, 250)
    await psim.clear_faults()
    assert r.status == RU
    assert await listed_at_provider(psim, p.id) == []

    assert_completed(await run_once(stack, "--jobs", "sweep"))
    [after] = await refunds(channel, p.id)
    assert (after.id, after.status) == (r.id, RS)
    [theirs] = await listed_at_provider(psim, p.id)
    assert (theirs["idempotency_key"], theirs["metadata"]["refund_id"]) == (r.id, r.id)
    # Once it has a provider id, a re-drive is refused (it could refund twice).
    assert_completed(await run_once(stack, "--jobs", "sweep"))
    assert len(await listed_at_provider(psim, p.id)) == 1


async def test_a_refund_whose_payment_the_provider_no_longer_knows_is_reported_not_an_error(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    """The provider lost the payment (its books reset): listing the payment's
    refunds answers 404. That is an answer (no refund can exist without its
    payment, and a re-drive could not make one): REFUND_MISSING_AT_PROVIDER,
    no re-drive, and no error of the run."""
    p = await paid(channel)
    await psim.faults(error_rate=1.0)
    r = await refund(channel, p.id, 150)
    await psim.clear_faults()
    assert (r.status, r.provider_refund_id) == (RU, "")
    await psim.post("/_sim/reset")

    result = await run_once(stack, "--jobs", "sweep")
    assert_completed(result)
    assert result.runs["sweep"]["errors"] == 0, result.runs
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER)
    [d] = [d for d in rows if d.refund_id == r.id]
    assert d.payment_id == p.id and "unknown at the provider" in d.details["reason"]
    [after] = await refunds(channel, p.id)
    assert (after.status, after.provider_refund_id) == (RU, "")  # never re-driven


async def test_a_refund_whose_payment_has_no_provider_payment_id_is_reported_not_an_error(
    stack: Stack, channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    """Books the API cannot make (RefundPayment refuses a payment never
    charged through the provider), written by hand (a migration, an import,
    a repair): a pending refund of a SUCCEEDED payment without a provider
    payment id. There is nothing to ask the provider (no intent to list the
    refunds of), and nothing it can have (a refund is sent with its payment's
    provider id): REFUND_MISSING_AT_PROVIDER with the reason, no re-drive,
    and no error of the run (it was one, and failed a run where it was the
    only refund as "provider unreachable"; test_feed_store's rows leave such
    a refund in the session's database)."""
    pid, rid = uuid.uuid4(), uuid.uuid4()
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO payments (id, client_id, idempotency_key, request_fingerprint,
                   amount, currency, status, payment_method)
               VALUES ($1, 'merchant-1', $2, '\\x00', 500, 'EUR', 'SUCCEEDED', 'pm_card_visa')""",
            pid,
            f"k-{pid}",
        )
        await conn.execute(
            """INSERT INTO refunds (id, payment_id, client_id, idempotency_key, amount,
                   currency, status, source)
               VALUES ($1, $2, 'merchant-1', $3, 200, 'EUR', 'PENDING', 'api')""",
            rid,
            pid,
            f"r-{rid}",
        )

    result = await run_once(stack, "--jobs", "sweep")
    assert_completed(result)
    assert result.runs["sweep"]["errors"] == 0, (result.runs, result.output[-4000:])
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER)
    [d] = [d for d in rows if d.refund_id == f"rfd_{rid.hex}"]
    assert d.payment_id == f"pay_{pid.hex}"
    assert "no provider payment id" in d.details["reason"]
    after = await db.fetchrow("SELECT status, provider_refund_id FROM refunds WHERE id = $1", rid)
    assert after is not None
    assert (after["status"], after["provider_refund_id"]) == ("PENDING", None)  # never re-driven


async def test_a_refund_of_a_closed_card_succeeds_then_fails_and_the_reconciler_applies_it(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    """SPEC §3a and §5: pm_card_refundFail's refunds succeed at first, as on
    Stripe, then fail on their own. The webhook saying so is a hint: a
    succeeded refund moves to FAILED only on the provider's authoritative
    answer (the reconciler's settlement diff), which gives its amount back."""
    await psim.faults(refund_fail_after_ms=300)
    p = await paid(channel, payment_method="pm_card_refundFail")
    r = await refund(channel, p.id, 300)
    assert r.status == RS  # succeeded at first
    assert (await get(channel, p.id)).amount_reversed == 300

    async def told() -> bool:
        return any(
            e.provider_event_type == "refund.failed" and not e.applied
            for e in await history(channel, p.id)
        )

    await until(told, timeout=10)
    [still] = await refunds(channel, p.id)
    assert still.status == RS  # recorded, not applied
    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    [after] = await refunds(channel, p.id)
    assert (after.status, after.failure_code) == (RF, "expired_or_canceled_card")
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 0)
    moved = [e for e in await history(channel, p.id) if e.refund_status == RF and e.applied]
    assert len(moved) == 1 and moved[0].source == RECONCILER


async def test_a_refund_that_fails_later_with_the_webhooks_lost_is_failed_by_the_reconciler(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    await psim.faults(refund_pending_rate=1.0, webhook_drop_rate=1.0)
    r = await refund(channel, p.id, 300)
    assert r.status == RP
    await settle_refund(psim, r.provider_refund_id, "failed")
    assert (await refunds(channel, p.id))[0].status == RP  # nothing reached payment-svc

    assert_completed(await run_once(stack, "--jobs", "sweep"))
    [after] = await refunds(channel, p.id)
    assert (after.status, after.failure_code) == (RF, "declined")
    assert (await get(channel, p.id)).amount_reversed == 0


def _refund_event(
    event_type: str,
    p: pb.Payment,
    re_id: str,
    status: str,
    created: int,
    *,
    amount: int = 200,
    refund_id: str = "",
) -> bytes:
    obj = {
        "id": re_id,
        "object": "refund",
        "amount": amount,
        "currency": "usd",
        "payment_intent": p.provider_payment_id,
        "status": status,
        "metadata": {"refund_id": refund_id} if refund_id else {},
        "created": created,
    }
    if status == "failed":
        obj["failure_reason"] = "declined"
    return _event(event_type, obj, created)


def _event(event_type: str, obj: dict[str, Any], created: int) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "created": created,
            "data": {"object": obj},
        }
    ).encode()


async def test_duplicated_and_reordered_refund_events_apply_once(
    channel: grpc.aio.Channel,
) -> None:
    p = await paid(channel, amount=1000)
    t = int(time.time())
    re_id = f"re_{uuid.uuid4().hex[:20]}"
    created = _refund_event("refund.created", p, re_id, "pending", t)
    succeeded = _refund_event("refund.updated", p, re_id, "succeeded", t + 2)
    charge = {
        "id": "ch_x",
        "object": "charge",
        "payment_intent": p.provider_payment_id,
        "amount": 1000,
        "amount_refunded": 200,
        "refunds": {
            "object": "list",
            "data": [json.loads(succeeded)["data"]["object"]],
            "has_more": False,
        },
    }
    refunded = _event("charge.refunded", charge, t + 2)
    # The newest first, then everything again, concurrently.
    first = await apply(channel, succeeded)
    assert first.applied and not first.duplicate
    replies = await asyncio.gather(*(apply(channel, e) for e in (created, refunded, succeeded)))
    assert [x.applied for x in replies] == [False, False, False]
    assert replies[2].duplicate
    [r] = await refunds(channel, p.id)
    assert (r.status, r.provider_refund_id, r.source) == (RS, re_id, WEBHOOK)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 200)
    entries = [
        e
        for e in await history(channel, p.id)
        if e.provider_event_type in ("refund.created", "refund.updated", "charge.refunded")
    ]
    # one entry per event: the newest applied, the older pending one recorded only
    assert sorted((e.provider_event_type, e.applied) for e in entries) == [
        ("charge.refunded", False),
        ("refund.created", False),
        ("refund.updated", True),
    ]
    # A failed event later contradicts a final state: recorded, never applied.
    late_fail = _refund_event("refund.failed", p, re_id, "failed", t + 5)
    assert not (await apply(channel, late_fail)).applied
    assert (await refunds(channel, p.id))[0].status == RS
    assert (await get(channel, p.id)).amount_reversed == 200


async def test_concurrent_deliveries_of_a_provider_made_refund_record_it_once(
    channel: grpc.aio.Channel,
) -> None:
    p = await paid(channel, amount=1000)
    t = int(time.time())
    re_id = f"re_{uuid.uuid4().hex[:20]}"
    # Different events about one new refund, all at once: one row.
    events = [
        _refund_event(kind, p, re_id, "succeeded", t)
        for kind in ("refund.created", "refund.updated", "refund.updated", "refund.created")
    ]
    replies = await asyncio.gather(*(apply(channel, e) for e in events))
    assert sum(x.applied for x in replies) == 1
    [r] = await refunds(channel, p.id)
    assert (r.provider_refund_id, r.amount, r.status) == (re_id, 200, RS)
    assert (await get(channel, p.id)).amount_reversed == 200


async def test_our_refund_learns_its_provider_id_from_metadata_and_a_mismatch_is_reported(
    channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel, amount=1000)
    await psim.faults(error_rate=1.0)
    r = await refund(channel, p.id, 300)  # UNKNOWN, never reached
    await psim.clear_faults()
    t = int(time.time())
    # The provider says our refund (metadata.refund_id) is of another amount.
    other = f"re_{uuid.uuid4().hex[:20]}"
    wrong = _refund_event("refund.created", p, other, "succeeded", t, amount=350, refund_id=r.id)
    assert not (await apply(channel, wrong)).applied
    [after] = await refunds(channel, p.id)
    assert (after.status, after.provider_refund_id) == (RU, "")
    found = await discrepancies(channel, sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH)
    assert any(d.refund_id == r.id and d.payment_id == p.id for d in found)
    # The right one: bound by metadata, moved.
    right = _refund_event("refund.created", p, other, "succeeded", t, amount=300, refund_id=r.id)
    assert (await apply(channel, right)).applied
    [after] = await refunds(channel, p.id)
    assert (after.status, after.provider_refund_id) == (RS, other)


async def test_a_refund_of_a_provider_payment_we_never_recorded_is_reported(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    charged = await psim.post("/_sim/unrecorded_charges", {"amount": 900, "currency": "usd"})
    made = await psim.post(f"/_sim/payment_intents/{charged['id']}/refund", {"amount": 100})

    result = await run_once(stack, "--jobs", "settlement_diff")
    assert_completed(result)
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_REFUND)
    [d] = [d for d in rows if d.provider_payment_id == charged["id"]]
    assert (d.details["provider_refund_id"], d.details["amount"]) == (made["id"], "100")
    assert d.payment_id == "" and d.refund_id == ""
    logged = [
        e for e in result.events("discrepancy") if e.get("kind") == "UNRECORDED_PROVIDER_REFUND"
    ]
    assert logged


async def test_a_refund_pending_past_its_deadline_is_a_stuck_refund(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    await psim.faults(refund_pending_rate=1.0)
    r = await refund(channel, p.id, 100)
    assert r.status == RP

    result = await run_once(stack, "--jobs", "sweep", RECONCILER_STUCK_AFTER_SECONDS="0.001")
    assert_completed(result)
    assert (await refunds(channel, p.id))[0].status == RP  # the provider still says pending
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_STUCK_REFUND)
    [d] = [d for d in rows if d.refund_id == r.id]
    assert (d.payment_id, d.details["status"], d.details["amount"]) == (p.id, "PENDING", "100")
    assert any(e.get("refund_id") == r.id for e in result.events("discrepancy"))
    # Settled at the provider: SUCCEEDED (its webhook, or the next pass), and
    # no new finding.
    await settle_refund(psim, r.provider_refund_id, "succeeded")
    again = await run_once(stack, "--jobs", "sweep", RECONCILER_STUCK_AFTER_SECONDS="0.001")
    assert_completed(again)
    assert (await refunds(channel, p.id))[0].status == RS
    assert (await get(channel, p.id)).amount_reversed == 100
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_STUCK_REFUND)
    assert [x.occurrences for x in rows if x.refund_id == r.id] == [d.occurrences]


async def test_redrive_refund_refuses_a_refund_the_provider_has_and_a_final_one(
    channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel)
    await psim.faults(refund_pending_rate=1.0)
    pending = await refund(channel, p.id, 100)
    assert pending.provider_refund_id
    stub = sync_stub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RedriveRefund(
            sync.RedriveRefundRequest(refund_id=pending.id), metadata=auth("reconciler"), timeout=5
        )
    err = rich_error(caught.value)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "REFUND_ALREADY_AT_PROVIDER"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.RedriveRefund(
            sync.RedriveRefundRequest(refund_id="nope"), metadata=auth("reconciler"), timeout=5
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(await listed_at_provider(psim, p.id)) == 1
