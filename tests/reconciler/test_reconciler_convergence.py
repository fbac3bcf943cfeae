"""Reconciliation with every process running: whatever webhooks were lost and
whatever the provider did behind our back, one `reconciler --once` brings each
payment to the provider's truth, and records what it cannot fix."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from reconciler_testkit import (
    assert_completed,
    create,
    discrepancies,
    get,
    history,
    reconciler_fixes,
    run_once,
    sim_stripe_post,
    sync_stub,
)

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.stack import Stack
from tests.support import SimControl, auth


@pytest.fixture
async def webhooks_lost(sim: SimControl) -> SimControl:
    # The `sim` fixture clears every fault after the test.
    await sim.faults(webhook_drop_rate=1.0)
    return sim


async def processing(channel: grpc.aio.Channel, amount: int = 1999) -> pb.Payment:
    p = await create(channel, payment_method="pm_card_processing", amount=amount)
    assert p.status == pb.PAYMENT_STATUS_PENDING
    return p


async def test_lost_webhooks_settled_failed_refunded_and_disputed_all_converge(
    stack: Stack, channel: grpc.aio.Channel, webhooks_lost: SimControl
) -> None:
    sim = webhooks_lost
    settled, failed = await processing(channel), await processing(channel)
    refunded = await create(channel, payment_method="pm_card_visa", amount=3000)
    partly = await create(channel, payment_method="pm_card_visa", amount=3000)
    disputed = await create(channel, payment_method="pm_card_visa", amount=2500)
    assert refunded.status == pb.PAYMENT_STATUS_SUCCEEDED
    await sim.settle(settled.provider_payment_id, "succeeded")
    await sim.settle(failed.provider_payment_id, "failed")
    await sim.post(f"/_sim/payment_intents/{refunded.provider_payment_id}/refund")
    await sim.post(f"/_sim/payment_intents/{partly.provider_payment_id}/refund", {"amount": 1000})
    await sim.post(f"/_sim/payment_intents/{disputed.provider_payment_id}/dispute")
    # Nothing reached payment-svc.
    assert (await get(channel, settled.id)).status == pb.PAYMENT_STATUS_PENDING
    assert (await get(channel, refunded.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

    assert_completed(await run_once(stack))

    expected = {
        settled.id: (pb.PAYMENT_STATUS_SUCCEEDED, 0),
        failed.id: (pb.PAYMENT_STATUS_FAILED, 0),
        refunded.id: (pb.PAYMENT_STATUS_REVERSED, 3000),
        # SPEC §3a: partly refunded, it stays SUCCEEDED (this asserted REVERSED, the defect).
        partly.id: (pb.PAYMENT_STATUS_SUCCEEDED, 1000),
        disputed.id: (pb.PAYMENT_STATUS_REVERSED, 2500),
    }
    for payment_id, (status, reversed_amount) in expected.items():
        now = await get(channel, payment_id)
        assert (now.status, now.amount_reversed) == (status, reversed_amount), payment_id
        if payment_id == partly.id:
            continue
        assert len(reconciler_fixes(await history(channel, payment_id))) == 1, payment_id
    # The partial refund is in the history all the same: one reconciler entry
    # that changed amount_reversed and not the status.
    [entry] = [
        e
        for e in await history(channel, partly.id)
        if e.source == pb.PAYMENT_EVENT_SOURCE_RECONCILER and e.applied
    ]
    assert (entry.from_status, entry.to_status) == (pb.PAYMENT_STATUS_SUCCEEDED,) * 2
    assert "amount_reversed 0 -> 1000 of 3000" in entry.note
    assert (await get(channel, failed.id)).failure_code


async def test_a_charge_whose_answer_timed_out_is_found_and_succeeds(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(
        timeout_after_charge_rate=1.0, timeout_after_charge_hold_ms=5000, webhook_drop_rate=1.0
    )
    p = await create(channel, payment_method="pm_card_visa")
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    assert not p.provider_payment_id  # never learned: the sweep searches by our id
    await sim.clear_faults()
    await sim.faults(webhook_drop_rate=1.0)

    assert_completed(await run_once(stack, "--jobs", "sweep"))

    now = await get(channel, p.id)
    assert now.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert now.provider_payment_id.startswith("pi_")
    [fix] = reconciler_fixes(await history(channel, p.id))
    assert (fix.from_status, fix.to_status) == (
        pb.PAYMENT_STATUS_UNKNOWN,
        pb.PAYMENT_STATUS_SUCCEEDED,
    )
    [intent] = await sim.ledger(payment_id=p.id)
    assert intent["charges"] == 1


async def test_a_charge_the_provider_never_received_is_redriven_once(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = await create(channel, payment_method="pm_card_visa")
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    await sim.clear_faults()
    assert await sim.ledger(payment_id=p.id) == []

    first = await run_once(stack, "--jobs", "sweep")
    assert_completed(first)
    [redriven] = [e for e in first.events("payment_redriven") if e["payment_id"] == p.id]
    assert redriven["status"] == "SUCCEEDED"
    assert_completed(await run_once(stack, "--jobs", "sweep"))  # nothing left to do

    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    [intent] = await sim.ledger(payment_id=p.id)
    assert intent["charges"] == 1
    assert intent["idempotency_key"]
    assert len(reconciler_fixes(await history(channel, p.id))) == 1


async def test_a_charge_made_behind_our_back_is_one_discrepancy_however_often_seen(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    intent = await sim.post("/_sim/unrecorded_charges", {"amount": 4242, "currency": "eur"})

    async def found() -> list[sync.Discrepancy]:
        rows = await discrepancies(channel, sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT)
        return [d for d in rows if d.provider_payment_id == intent["id"]]

    first = await run_once(stack, "--jobs", "settlement_diff")
    assert_completed(first)
    assert first.runs["settlement_diff"]["discrepancies"] >= 1
    [d] = await found()
    assert d.details["amount"] == "4242"
    assert d.details["currency"] == "EUR"
    assert d.details["provider_status"] == "succeeded"
    logged = [e for e in first.events("discrepancy") if e["provider_payment_id"] == intent["id"]]
    assert [(e["level"], e["kind"]) for e in logged] == [("error", "UNRECORDED_PROVIDER_PAYMENT")]

    for _ in range(2):
        assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    [again] = await found()
    assert again.id == d.id
    assert again.occurrences == d.occurrences + 2


async def test_an_amount_the_provider_disagrees_with_is_a_discrepancy_not_a_change(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # The provider never got our call; an intent for the same payment was made
    # elsewhere with another amount (a bug in another system holding our key).
    # Its webhook is lost: this is about what the sweep's snapshot does.
    await sim.faults(error_rate=1.0)
    p = await create(channel, payment_method="pm_card_visa", amount=1000)
    await sim.clear_faults()
    await sim.faults(webhook_drop_rate=1.0)
    await sim_stripe_post(
        sim,
        "/v1/payment_intents",
        {
            "amount": "1100",
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": "true",
            "metadata[payment_id]": p.id,
        },
    )

    result = await run_once(stack, "--jobs", "sweep")
    assert_completed(result)

    now = await get(channel, p.id)
    assert (now.amount, now.currency) == (1000, "USD")
    assert now.status == pb.PAYMENT_STATUS_UNKNOWN
    assert not reconciler_fixes(await history(channel, p.id))
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_AMOUNT_MISMATCH)
    assert [d.payment_id for d in rows].count(p.id) == 1
    assert not [e for e in result.events("payment_redriven") if e["payment_id"] == p.id]
    assert [e["kind"] for e in result.events("discrepancy") if e["payment_id"] == p.id] == [
        "AMOUNT_MISMATCH"
    ]
    [intent] = await sim.ledger(payment_id=p.id)  # no second charge either
    assert intent["amount"] == 1100


async def test_the_provider_saying_failed_where_we_say_succeeded_is_followed_and_recorded(
    stack: Stack, channel: grpc.aio.Channel, webhooks_lost: SimControl
) -> None:
    p = await processing(channel)
    # A webhook (forged here, as the gateway would forward it) says succeeded...
    intent = await webhooks_lost.http.get(
        f"/v1/payment_intents/{p.provider_payment_id}",
        headers={"Authorization": "Bearer sk_test_dev"},
    )
    body = await intent.json()
    intent.release()
    event_id, created = f"evt_forged_{uuid.uuid4().hex}", int(time.time()) - 5
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": created,
        "data": {"object": {**body, "status": "succeeded"}},
    }
    await sync_stub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(
            provider_event_id=event_id,
            event_type="payment_intent.succeeded",
            provider_created_at=Timestamp(seconds=created),
            payload=json.dumps(event).encode(),
        ),
        metadata=auth("gateway"),
        timeout=5,
    )
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED
    # ...but the provider's truth is that it failed.
    await webhooks_lost.settle(p.provider_payment_id, "failed")

    result = await run_once(stack)
    assert_completed(result)

    now = await get(channel, p.id)
    assert now.status == pb.PAYMENT_STATUS_FAILED
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_FINAL_STATE_CONTRADICTED)
    assert [d.payment_id for d in rows].count(p.id) == 1
    [fix] = reconciler_fixes(await history(channel, p.id))
    assert (fix.from_status, fix.to_status) == (
        pb.PAYMENT_STATUS_SUCCEEDED,
        pb.PAYMENT_STATUS_FAILED,
    )


async def test_a_payment_unresolved_past_its_deadline_is_stuck(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await processing(channel)
    await asyncio.sleep(1.1)
    result = await run_once(stack, "--jobs", "sweep", RECONCILER_STUCK_AFTER_SECONDS="1")
    assert_completed(result)
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_PENDING  # not guessed
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_STUCK_PAYMENT)
    [stuck] = [d for d in rows if d.payment_id == p.id]
    assert stuck.details["status"] == "PENDING"


async def test_a_payment_never_received_past_the_redrive_window_is_missing_not_redriven(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = await create(channel, payment_method="pm_card_visa")
    await sim.clear_faults()
    await asyncio.sleep(1.1)
    result = await run_once(stack, "--jobs", "sweep", RECONCILER_REDRIVE_WINDOW_SECONDS="1")
    assert_completed(result)
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_UNKNOWN  # never FAILED
    assert await sim.ledger(payment_id=p.id) == []
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER)
    assert [d.payment_id for d in rows].count(p.id) == 1


async def test_a_settled_payment_the_provider_never_heard_of_is_missing_at_provider(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # Ours says SUCCEEDED with a provider id the provider has no intent for.
    await sim.faults(error_rate=1.0)
    p = await create(channel, payment_method="pm_card_visa")
    await sim.clear_faults()
    ghost = f"pi_ghost_{uuid.uuid4().hex[:10]}"
    reply = await sync_stub(channel).ReconcilePayment(
        sync.ReconcilePaymentRequest(
            payment_id=p.id,
            snapshot=sync.ProviderPaymentSnapshot(
                found=True,
                provider_payment_id=ghost,
                provider_status="succeeded",
                amount=p.amount,
                currency=p.currency.lower(),
            ),
        ),
        metadata=auth("reconciler"),
        timeout=5,
    )
    assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for _ in range(2):  # the finding is kept once, however often seen
        assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    rows = await discrepancies(channel, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER)
    [missing] = [d for d in rows if d.payment_id == p.id]
    assert missing.provider_payment_id == ghost
    assert missing.occurrences == 2
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED  # not altered
