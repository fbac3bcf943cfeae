"""ProviderSyncService's reconciliation RPCs against real Postgres: snapshots,
discrepancies, leases, re-drives, runs, checkpoints, status."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from tests.support import SimControl, auth, create_request, rich_error, stub

REC = auth("reconciler")


def rec(channel: grpc.aio.Channel) -> sync_grpc.ProviderSyncServiceStub:
    return sync_grpc.ProviderSyncServiceStub(channel)


async def create(channel: grpc.aio.Channel, **kw: object) -> pb.Payment:
    reply = await stub(channel).CreatePayment(create_request(**kw), metadata=auth(), timeout=5)
    return reply.payment


def snap(p: pb.Payment, status: str, **kw: object) -> sync.ProviderPaymentSnapshot:
    fields: dict[str, object] = {
        "found": True,
        "provider_payment_id": p.provider_payment_id or "pi_snap",
        "provider_status": status,
        "amount": p.amount,
        "currency": p.currency.lower(),
    }
    fields.update(kw)
    return sync.ProviderPaymentSnapshot(**fields)  # type: ignore[arg-type]


async def reconcile(
    channel: grpc.aio.Channel, p: pb.Payment, snapshot: sync.ProviderPaymentSnapshot
) -> sync.ReconcilePaymentResponse:
    return await rec(channel).ReconcilePayment(
        sync.ReconcilePaymentRequest(payment_id=p.id, snapshot=snapshot), metadata=REC, timeout=5
    )


async def history_sources(db: asyncpg.Pool, payment_id: str) -> list[tuple[str, str, bool]]:
    rows = await db.fetch(
        "SELECT to_status, source, applied FROM payment_events WHERE payment_id = $1 ORDER BY id",
        uuid.UUID(hex=payment_id[4:]),
    )
    return [(r["to_status"], r["source"], r["applied"]) for r in rows]


async def test_a_snapshot_settles_an_unknown_payment_once(
    channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool
) -> None:
    await sim.faults(error_rate=1.0)
    p = await create(channel)
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    first = await reconcile(channel, p, snap(p, "succeeded", provider_payment_id="pi_rec_1"))
    again = await reconcile(channel, p, snap(p, "succeeded", provider_payment_id="pi_rec_1"))
    assert (first.changed, again.changed) == (True, False)
    assert first.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert first.payment.provider_payment_id == "pi_rec_1"
    entries = await history_sources(db, p.id)
    assert [e for e in entries if e[1] == "reconciler"] == [("SUCCEEDED", "reconciler", True)]


async def test_the_provider_contradicting_a_final_state_is_followed_and_recorded(
    channel: grpc.aio.Channel,
) -> None:
    p = await create(channel)
    assert p.status == pb.PAYMENT_STATUS_SUCCEEDED
    reply = await reconcile(
        channel,
        p,
        snap(p, "requires_payment_method", failure_code="card_declined", failure_message="no"),
    )
    assert reply.changed
    assert reply.payment.status == pb.PAYMENT_STATUS_FAILED
    assert list(reply.discrepancies) == [sync.DISCREPANCY_KIND_FINAL_STATE_CONTRADICTED]
    listed = await rec(channel).ListDiscrepancies(
        sync.ListDiscrepanciesRequest(kinds=[sync.DISCREPANCY_KIND_FINAL_STATE_CONTRADICTED]),
        metadata=REC,
        timeout=5,
    )
    assert p.id in {d.payment_id for d in listed.discrepancies}


async def test_an_amount_mismatch_is_recorded_and_the_payment_left_alone(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = await create(channel)
    reply = await reconcile(channel, p, snap(p, "succeeded", amount=p.amount + 100))
    assert not reply.changed
    assert list(reply.discrepancies) == [sync.DISCREPANCY_KIND_AMOUNT_MISMATCH]
    assert (reply.payment.status, reply.payment.amount) == (pb.PAYMENT_STATUS_UNKNOWN, p.amount)


async def test_a_snapshots_refunded_or_disputed_total_is_reported_never_applied(
    channel: grpc.aio.Channel,
) -> None:
    """Issue 25: amount_reversed is what the refunds and disputes we know one
    by one took back. A snapshot's total (Stripe's amount_refunded counts
    pending refunds too) is evidence: differing from ours on a settled
    payment, it is a REFUND_AMOUNT_MISMATCH, and nothing moves."""
    for fields in ({"amount_refunded": 500}, {"disputed": True}):
        p = await create(channel)
        reply = await reconcile(channel, p, snap(p, "succeeded", **fields))
        assert not reply.changed
        assert (reply.payment.status, reply.payment.amount_reversed) == (
            pb.PAYMENT_STATUS_SUCCEEDED,
            0,
        )
        assert list(reply.discrepancies) == [sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH]
        listed = await rec(channel).ListDiscrepancies(
            sync.ListDiscrepanciesRequest(kinds=[sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH]),
            metadata=REC,
            timeout=5,
        )
        [found] = [d for d in listed.discrepancies if d.payment_id == p.id]
        assert found.details["our_amount_reversed"] == "0"
        assert found.details["provider_refunded"] == str(fields.get("amount_refunded", 0))
        # The same snapshot of a payment whose books agree: nothing to report.
        same = await reconcile(channel, p, snap(p, "succeeded"))
        assert (same.changed, list(same.discrepancies)) == (False, [])


async def test_discrepancies_are_deduplicated_while_open_and_resolved_with_a_note(
    channel: grpc.aio.Channel,
) -> None:
    pi = f"pi_unrecorded_{uuid.uuid4().hex[:8]}"
    report = sync.ReportDiscrepancyRequest(
        kind=sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT,
        provider_payment_id=pi,
        details={"amount": "700"},
    )
    first = await rec(channel).ReportDiscrepancy(report, metadata=REC, timeout=5)
    second = await rec(channel).ReportDiscrepancy(report, metadata=REC, timeout=5)
    assert first.discrepancy_id == second.discrepancy_id
    assert (first.occurrences, second.occurrences) == (1, 2)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rec(channel).ResolveDiscrepancy(
            sync.ResolveDiscrepancyRequest(discrepancy_id=first.discrepancy_id),
            metadata=REC,
            timeout=5,
        )
    assert "note" in rich_error(exc.value).violations
    resolved = await rec(channel).ResolveDiscrepancy(
        sync.ResolveDiscrepancyRequest(
            discrepancy_id=first.discrepancy_id, note="refunded by hand"
        ),
        metadata=REC,
        timeout=5,
    )
    assert resolved.discrepancy.resolved_by == "reconciler"
    assert resolved.discrepancy.note == "refunded by hand"
    third = await rec(channel).ReportDiscrepancy(report, metadata=REC, timeout=5)
    assert third.discrepancy_id != first.discrepancy_id  # a new finding after resolution
    open_only = await rec(channel).ListDiscrepancies(
        sync.ListDiscrepanciesRequest(kinds=[sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT]),
        metadata=REC,
        timeout=5,
    )
    ids = {d.id for d in open_only.discrepancies}
    assert third.discrepancy_id in ids
    assert first.discrepancy_id not in ids


async def test_leases_give_each_reconciler_its_own_payments(
    channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool
) -> None:
    await sim.faults(error_rate=1.0)
    made = await asyncio.gather(*(create(channel) for _ in range(30)))
    ids = [uuid.UUID(hex=p.id[4:]) for p in made]
    # Make them stale without waiting.
    await db.execute(
        "UPDATE payments SET updated_at = now() - interval '1 hour' WHERE id = ANY($1)", ids
    )
    ours = {p.id for p in made}

    async def claim(owner: str) -> set[str]:
        got: set[str] = set()
        token = ""
        while True:
            page = await rec(channel).ListPaymentsToReconcile(
                sync.ListPaymentsToReconcileRequest(
                    older_than=Duration(seconds=600),
                    page_size=7,
                    page_token=token,
                    reconciler_id=owner,
                    lease=Duration(seconds=60),
                ),
                metadata=REC,
                timeout=5,
            )
            got |= {p.id for p in page.payments} & ours
            token = page.next_page_token
            if not token:
                return got

    a, b = await asyncio.gather(claim("rec-a"), claim("rec-b"))
    assert a.isdisjoint(b)
    assert a | b == ours
    # A reconciled payment's lease is released.
    p = made[0]
    await reconcile(
        channel, p, snap(p, "succeeded", provider_payment_id=f"pi_{uuid.uuid4().hex[:10]}")
    )
    owner = await db.fetchval(
        "SELECT reconcile_lease_owner FROM payments WHERE id = $1", uuid.UUID(hex=p.id[4:])
    )
    assert owner is None


async def test_a_redrive_charges_once_with_the_same_key(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(error_rate=1.0)
    p = await create(channel)
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    assert await sim.ledger(payment_id=p.id) == []
    await sim.clear_faults()
    first = await rec(channel).RedrivePayment(
        sync.RedrivePaymentRequest(payment_id=p.id), metadata=REC, timeout=10
    )
    assert first.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    [intent] = await sim.ledger(payment_id=p.id)
    assert (intent["charges"], intent["idempotency_key"]) == (1, p.id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await rec(channel).RedrivePayment(
            sync.RedrivePaymentRequest(payment_id=p.id), metadata=REC, timeout=10
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [i["charges"] for i in await sim.ledger(payment_id=p.id)] == [1]


async def test_runs_checkpoints_status_and_lookup(channel: grpc.aio.Channel) -> None:
    now = datetime.now(UTC)
    started, finished = Timestamp(), Timestamp()
    started.FromDatetime(now - timedelta(seconds=2))
    finished.FromDatetime(now)
    run = sync.ReconciliationRun(
        job="sweep", started_at=started, finished_at=finished, scanned=5, fixed=2, succeeded=True
    )
    recorded = await rec(channel).RecordReconciliationRun(
        sync.RecordReconciliationRunRequest(run=run), metadata=REC, timeout=5
    )
    assert recorded.run.id
    assert recorded.run.reconciler_id == "reconciler"
    name = f"catch_up_{uuid.uuid4().hex[:6]}"
    empty = await rec(channel).GetCheckpoint(
        sync.GetCheckpointRequest(name=name), metadata=REC, timeout=5
    )
    assert empty.value == ""
    await rec(channel).SaveCheckpoint(
        sync.SaveCheckpointRequest(name=name, value="1700000000|evt_1"), metadata=REC, timeout=5
    )
    got = await rec(channel).GetCheckpoint(
        sync.GetCheckpointRequest(name=name), metadata=REC, timeout=5
    )
    assert got.value == "1700000000|evt_1"
    status = await rec(channel).GetReconciliationStatus(
        sync.GetReconciliationStatusRequest(), metadata=REC, timeout=5
    )
    assert "sweep" in {r.job for r in status.last_runs}
    p = await create(channel)
    found = await rec(channel).LookupPayments(
        sync.LookupPaymentsRequest(
            provider_payment_ids=[p.provider_payment_id], payment_ids=[p.id]
        ),
        metadata=REC,
        timeout=5,
    )
    assert [x.id for x in found.payments] == [p.id]


async def test_reconciliation_rpcs_are_the_reconcilers_alone(channel: grpc.aio.Channel) -> None:
    for who in ("gateway", "merchant"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await rec(channel).GetReconciliationStatus(
                sync.GetReconciliationStatusRequest(), metadata=auth(who), timeout=5
            )
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
