"""Ordering uses the provider's facts only: a snapshot never stamps our clock
as provider time, and a reversal is never dropped for its timestamp alone."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from payment_svc.domain.provider_events import StateRank, is_stale
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from tests.support import SimControl, auth, create_request, stub

T = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("earlier", [timedelta(0), timedelta(seconds=1), timedelta(seconds=5)])
def test_a_reversal_after_a_success_is_never_stale_for_its_time(earlier: timedelta) -> None:
    assert not is_stale(T - earlier, StateRank.REVERSED, T, int(StateRank.SETTLED))
    assert not is_stale(T - earlier, StateRank.SETTLED, T, int(StateRank.IN_PROGRESS))


def test_an_older_event_of_the_same_or_a_lower_rank_is_stale() -> None:
    second = timedelta(seconds=1)
    assert is_stale(T - second, StateRank.SETTLED, T, int(StateRank.SETTLED))
    assert is_stale(T, StateRank.IN_PROGRESS, T, int(StateRank.SETTLED))
    assert is_stale(T - second, StateRank.IN_PROGRESS, T, int(StateRank.REVERSED))
    assert not is_stale(T + second, StateRank.SETTLED, T, int(StateRank.SETTLED))
    # A snapshot records a rank but no time: only the transition table decides.
    assert not is_stale(T, StateRank.IN_PROGRESS, None, int(StateRank.SETTLED))


def _sync(channel: grpc.aio.Channel) -> sync_grpc.ProviderSyncServiceStub:
    return sync_grpc.ProviderSyncServiceStub(channel)


async def _reconciled_success(channel: grpc.aio.Channel, sim: SimControl) -> pb.Payment:
    """A payment the provider's snapshot (not an event) made SUCCEEDED."""
    await sim.faults(error_rate=1.0)
    created = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    await sim.clear_faults()
    assert created.payment.status == pb.PAYMENT_STATUS_UNKNOWN
    p = created.payment
    reply = await _sync(channel).ReconcilePayment(
        sync.ReconcilePaymentRequest(
            payment_id=p.id,
            snapshot=sync.ProviderPaymentSnapshot(
                found=True,
                provider_payment_id=f"pi_order_{uuid.uuid4().hex[:12]}",
                provider_status="succeeded",
                amount=p.amount,
                currency=p.currency.lower(),
            ),
        ),
        metadata=auth("reconciler"),
        timeout=5,
    )
    assert reply.changed
    assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    return reply.payment


def _event(event_type: str, obj: dict[str, object], created: int) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "created": created,
            "data": {"object": obj},
        }
    ).encode()


async def _apply(channel: grpc.aio.Channel, payload: bytes) -> sync.ApplyProviderEventResponse:
    event = json.loads(payload)
    return await _sync(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(
            provider_event_id=event["id"], event_type=event["type"], payload=payload
        ),
        metadata=auth("gateway"),
        timeout=5,
    )


@pytest.mark.parametrize("skew", [0, 2])
async def test_a_refund_in_the_second_of_a_snapshot_is_applied(
    channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool, skew: int
) -> None:
    p = await _reconciled_success(channel, sim)
    state_at = await db.fetchval(
        "SELECT provider_state_at FROM payments WHERE id = $1", uuid.UUID(hex=p.id[4:])
    )
    assert state_at is None, "a snapshot carries no provider time and must record none"
    # The provider's `created` is whole seconds: this second (or a clock a
    # little behind ours) is before the moment the snapshot was written.
    # The refund itself (a charge's refunded total is evidence only: issue 25).
    refund = {
        "id": f"re_{uuid.uuid4().hex[:12]}",
        "object": "refund",
        "payment_intent": p.provider_payment_id,
        "amount": p.amount,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {},
    }
    reply = await _apply(channel, _event("refund.created", refund, int(time.time()) - skew))
    assert reply.applied
    got = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=p.id), metadata=auth(), timeout=5
    )
    assert (got.payment.status, got.payment.amount_reversed) == (
        pb.PAYMENT_STATUS_REVERSED,
        p.amount,
    )


async def test_a_dispute_in_the_second_of_a_snapshot_is_applied(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await _reconciled_success(channel, sim)
    dispute = {
        "id": f"dp_{uuid.uuid4().hex[:12]}",
        "object": "dispute",
        "payment_intent": p.provider_payment_id,
        "amount": p.amount,
    }
    reply = await _apply(channel, _event("charge.dispute.created", dispute, int(time.time())))
    assert reply.applied
    got = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=p.id), metadata=auth(), timeout=5
    )
    assert got.payment.amount_reversed == p.amount
