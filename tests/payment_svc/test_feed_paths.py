"""Every path that changes a payment writes its update in the change's
transaction, carrying the payment as it stood after that change: creation,
the provider's answer, a webhook, the rematch of a kept event, a
reconciliation snapshot, a re-drive, amount_reversed changes (partial and
whole reversals)."""

from __future__ import annotations

import asyncio
import time

import grpc

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from tests.e2e.test_change_feed import latest_cursor
from tests.payment_svc.test_provider_events import apply, intent_event
from tests.payment_svc.test_reconciliation_rpcs import REC, create, rec, reconcile, snap
from tests.support import SimControl, auth, stub


async def updates_of(
    channel: grpc.aio.Channel, cursor: str, payment_id: str, count: int
) -> list[pb.PaymentUpdate]:
    """The payment's updates after `cursor`, once there are `count` of them."""
    async with asyncio.timeout(10):
        while True:
            reply = await stub(channel).ListPaymentUpdates(
                svc.ListPaymentUpdatesRequest(after_cursor=cursor, page_size=500),
                metadata=auth(),
                timeout=5,
            )
            mine = [u for u in reply.updates if u.payment.id == payment_id]
            if len(mine) >= count:
                assert len(mine) == count, [u.event for u in mine]
                return mine
            await asyncio.sleep(0.05)


def as_of(u: pb.PaymentUpdate) -> tuple[int, int, str]:
    return (u.payment.status, u.payment.amount_reversed, u.payment.provider_payment_id)


async def test_creation_and_the_providers_answer(channel: grpc.aio.Channel) -> None:
    cursor = await latest_cursor(channel)
    p = await create(channel)
    created, answered = await updates_of(channel, cursor, p.id, 2)
    assert as_of(created) == (pb.PAYMENT_STATUS_PENDING, 0, "")
    assert created.event.source == pb.PAYMENT_EVENT_SOURCE_API
    assert answered.payment == p  # what CreatePayment returned: as it stood after
    assert answered.event.to_status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_unknown_then_a_snapshot_and_reversals_by_refund_snapshots(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    cursor = await latest_cursor(channel)
    p = await create(channel)
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    await sim.clear_faults()
    settled = await reconcile(channel, p, snap(p, "succeeded", provider_payment_id="pi_feed_1"))
    # A snapshot's refunded total is evidence, never a floor (issue 25): it
    # writes nothing; the refunds, fetched one by one, move the payment.
    total = await reconcile(
        channel, settled.payment, snap(settled.payment, "succeeded", amount_refunded=500)
    )
    assert not total.changed and total.payment == settled.payment
    partly = await refund_snapshot(channel, "re_feed_1", 500)
    whole = await refund_snapshot(channel, "re_feed_2", p.amount - 500)
    ups = await updates_of(channel, cursor, p.id, 5)
    assert [u.payment.status for u in ups] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_UNKNOWN,
        pb.PAYMENT_STATUS_SUCCEEDED,
        pb.PAYMENT_STATUS_SUCCEEDED,  # amount_reversed 500
        pb.PAYMENT_STATUS_REVERSED,
    ]
    assert ups[1].payment == p
    assert ups[2].payment == settled.payment
    assert as_of(ups[3]) == (pb.PAYMENT_STATUS_SUCCEEDED, 500, "pi_feed_1")
    assert ups[3].refund.id == partly.refund.id
    assert as_of(ups[4]) == (pb.PAYMENT_STATUS_REVERSED, p.amount, "pi_feed_1")
    assert ups[4].refund.id == whole.refund.id
    assert {u.event.source for u in ups[2:]} == {pb.PAYMENT_EVENT_SOURCE_RECONCILER}


async def refund_snapshot(
    channel: grpc.aio.Channel, re_id: str, amount: int
) -> sync.ReconcileRefundResponse:
    """The reconciler's fetch of a refund made at the provider directly."""
    reply: sync.ReconcileRefundResponse = await rec(channel).ReconcileRefund(
        sync.ReconcileRefundRequest(
            provider_payment_id="pi_feed_1",
            snapshot=sync.ProviderRefundSnapshot(
                found=True,
                provider_refund_id=re_id,
                provider_status="succeeded",
                amount=amount,
                currency="usd",
            ),
        ),
        metadata=REC,
        timeout=10,
    )
    assert reply.changed
    return reply


async def test_a_redrive(channel: grpc.aio.Channel, sim: SimControl) -> None:
    await sim.faults(error_rate=1.0)
    cursor = await latest_cursor(channel)
    p = await create(channel)
    await sim.clear_faults()
    redriven = await rec(channel).RedrivePayment(
        sync.RedrivePaymentRequest(payment_id=p.id), metadata=REC, timeout=10
    )
    ups = await updates_of(channel, cursor, p.id, 3)
    assert ups[-1].payment == redriven.payment
    assert ups[-1].payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_webhook_events_and_the_rematch_of_a_kept_one(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    """An event for a provider payment not bound yet is kept; once a snapshot
    binds the payment to it, the inbox upkeep's rematch applies it."""
    await sim.faults(error_rate=1.0)
    cursor = await latest_cursor(channel)
    p = await create(channel)
    await sim.clear_faults()
    now = int(time.time())
    kept = await apply(
        channel,
        intent_event(
            "payment_intent.succeeded",
            pi="pi_feed_rematch",
            payment_id=None,
            status="succeeded",
            created=now,
        ),
    )
    assert kept.payment_id == ""
    bound = await reconcile(
        channel, p, snap(p, "processing", provider_payment_id="pi_feed_rematch")
    )
    assert bound.payment.status == pb.PAYMENT_STATUS_PENDING
    ups = await updates_of(channel, cursor, p.id, 4)  # the upkeep runs every second
    rematched = ups[-1]
    assert rematched.event.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    assert rematched.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    got = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=p.id), metadata=auth(), timeout=5
    )
    assert rematched.payment == got.payment


async def test_reversals_by_webhook(channel: grpc.aio.Channel, sim: SimControl) -> None:
    """The provider refunds part, then the rest (charge.refunded webhooks):
    amount_reversed moves, then the payment is REVERSED."""
    cursor = await latest_cursor(channel)
    p = await create(channel)
    await sim.post(f"/_sim/payment_intents/{p.provider_payment_id}/refund", {"amount": 500})
    partly = await updates_of(channel, cursor, p.id, 3)
    assert as_of(partly[-1]) == (pb.PAYMENT_STATUS_SUCCEEDED, 500, p.provider_payment_id)
    assert partly[-1].event.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    await sim.post(f"/_sim/payment_intents/{p.provider_payment_id}/refund", {})
    whole = await updates_of(channel, cursor, p.id, 4)
    assert as_of(whole[-1]) == (pb.PAYMENT_STATUS_REVERSED, p.amount, p.provider_payment_id)
    got = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=p.id), metadata=auth(), timeout=5
    )
    assert whole[-1].payment == got.payment
