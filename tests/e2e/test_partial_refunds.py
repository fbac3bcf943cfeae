"""Partial refunds with every process running (SPEC §3a, §4): refunded in part
at the provider, a payment stays SUCCEEDED with amount_reversed recorded and
in its history; refunded in full, it is REVERSED. Once through the webhooks
(provider-sim -> webhook-gateway -> payment-svc), once through the reconciler
with every webhook lost (its snapshot, ReconcilePayment with amount_refunded)."""

from __future__ import annotations

import grpc

from payments.v1 import payment_pb2 as pb
from payments_dev.stack import Stack
from tests.e2e.test_webhook_flow import get, history, until
from tests.reconciler.reconciler_testkit import assert_completed, run_once
from tests.support import SimControl, auth, create_request, stub

AMOUNT = 1000
S, R = pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_REVERSED


async def succeeded(channel: grpc.aio.Channel) -> pb.Payment:
    reply = await stub(channel).CreatePayment(
        create_request(amount=AMOUNT, payment_method="pm_card_visa"), metadata=auth(), timeout=10
    )
    assert reply.payment.status == S
    return reply.payment


async def refund(sim: SimControl, p: pb.Payment, amount: int | None = None) -> None:
    body = {} if amount is None else {"amount": amount}
    await sim.post(f"/_sim/payment_intents/{p.provider_payment_id}/refund", body)


async def test_a_partial_refund_through_the_webhooks_leaves_it_succeeded(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await succeeded(channel)
    await refund(sim, p, 300)

    async def reversed_300() -> bool:
        return (await get(channel, p.id)).amount_reversed == 300

    await until(reversed_300, timeout=10)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 300)
    # In the history, with its source and the provider's event id, though the
    # status did not change. The refund is the truth (issue 13): whichever of
    # refund.created and charge.refunded comes first records it and moves
    # amount_reversed, once; the other is recorded without applying.
    [partial] = [
        e
        for e in await history(channel, p.id)
        if e.applied and e.note and "amount_reversed 0 -> 300 of 1000" in e.note
    ]
    assert partial.provider_event_type in ("refund.created", "charge.refunded")
    assert partial.refund_id and partial.refund_status == pb.REFUND_STATUS_SUCCEEDED
    assert partial.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    assert partial.provider_event_id.startswith("evt_")
    assert (partial.from_status, partial.to_status, partial.applied) == (S, S, True)
    assert "amount_reversed 0 -> 300 of 1000" in partial.note
    assert partial.provider_created_at.seconds > 0

    await refund(sim, p)  # the rest

    async def reversed_whole() -> bool:
        return (await get(channel, p.id)).status == R

    await until(reversed_whole, timeout=10)
    assert (await get(channel, p.id)).amount_reversed == AMOUNT
    refunds = [
        e
        for e in await history(channel, p.id)
        if e.applied and e.note and "amount_reversed" in e.note
    ]
    assert [(e.from_status, e.to_status, e.applied) for e in refunds] == [
        (S, S, True),
        (S, R, True),
    ]
    assert {e.provider_event_type for e in refunds} <= {"refund.created", "charge.refunded"}
    assert refunds[0].refund_id != refunds[1].refund_id
    assert refunds[1].provider_event_id not in ("", refunds[0].provider_event_id)


async def test_with_the_webhooks_lost_the_reconciler_follows_the_same_rule(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(webhook_drop_rate=1.0)  # the `sim` fixture clears it after
    p = await succeeded(channel)
    await refund(sim, p, 300)
    assert (await get(channel, p.id)).amount_reversed == 0  # nothing reached payment-svc

    first = await run_once(stack, "--jobs", "settlement_diff")
    assert_completed(first)
    assert first.runs["settlement_diff"]["fixed"] >= 1
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 300)
    [entry] = [
        e
        for e in await history(channel, p.id)
        if e.source == pb.PAYMENT_EVENT_SOURCE_RECONCILER and e.applied
    ]
    assert (entry.from_status, entry.to_status) == (S, S)
    assert "amount_reversed 0 -> 300 of 1000" in entry.note

    # The reconciler agrees with what it made: no drift, nothing written again.
    before = await get(channel, p.id)
    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    assert await get(channel, p.id) == before

    await refund(sim, p)  # the rest
    assert_completed(await run_once(stack))  # every job, catch-up included
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (R, AMOUNT)
    moved = [
        e
        for e in await history(channel, p.id)
        if e.source == pb.PAYMENT_EVENT_SOURCE_RECONCILER and e.applied and e.to_status == R
    ]
    assert [(e.from_status, e.to_status) for e in moved] == [(S, R)]
