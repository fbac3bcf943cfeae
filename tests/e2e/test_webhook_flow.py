"""The webhook flow with every process running: provider-sim delivers signed
events to webhook-gateway, which forwards them to payment-svc."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Stack, StackConfig, wait_serving
from tests.support import SimControl, auth, create_request, stub

FINAL = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_FAILED, pb.PAYMENT_STATUS_REVERSED}


async def get(channel: grpc.aio.Channel, payment_id: str) -> pb.Payment:
    reply = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return reply.payment


async def history(channel: grpc.aio.Channel, payment_id: str) -> list[pb.PaymentEvent]:
    reply = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return list(reply.events)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


async def processing(channel: grpc.aio.Channel) -> pb.Payment:
    reply = await stub(channel).CreatePayment(
        create_request(payment_method="pm_card_processing"), metadata=auth(), timeout=5
    )
    assert reply.payment.status == pb.PAYMENT_STATUS_PENDING
    return reply.payment


@pytest.fixture
async def fast_retries(sim: SimControl) -> AsyncIterator[SimControl]:
    before = await sim.webhooks()
    await sim.webhooks(retry_initial_ms=50, retry_max_ms=400)
    yield sim
    await sim.webhooks(
        retry_initial_ms=before["retry_initial_ms"], retry_max_ms=before["retry_max_ms"]
    )


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("succeeded", pb.PAYMENT_STATUS_SUCCEEDED), ("failed", pb.PAYMENT_STATUS_FAILED)],
)
async def test_a_processing_payment_settles_through_the_webhook(
    channel: grpc.aio.Channel, sim: SimControl, outcome: str, status: int
) -> None:
    p = await processing(channel)
    await sim.settle(p.provider_payment_id, outcome)

    async def settled() -> bool:
        return (await get(channel, p.id)).status == status

    await until(settled, timeout=10)
    applied = [e for e in await history(channel, p.id) if e.applied and e.to_status == status]
    assert len(applied) == 1
    assert applied[0].source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    assert applied[0].provider_event_id.startswith("evt_")


async def test_one_event_delivered_100_times_changes_the_payment_once(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await processing(channel)
    await sim.settle(p.provider_payment_id, "succeeded")

    async def settled() -> bool:
        return (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

    await until(settled)
    before = await get(channel, p.id)
    [event] = await sim.events(payment_id=p.id, type="payment_intent.succeeded")
    await sim.post(f"/_sim/events/{event['id']}/redeliver", {"copies": 100})

    async def all_delivered() -> bool:
        [row] = await sim.events(payment_id=p.id, type="payment_intent.succeeded")
        return bool(row["copies"] >= 101 and row["delivery_state"] == "delivered")

    await until(all_delivered, timeout=30)
    assert await get(channel, p.id) == before  # not changed again: same version, same updated_at
    ids = [e.provider_event_id for e in await history(channel, p.id)]
    assert ids.count(event["id"]) == 1


async def test_succeeded_delivered_before_processing_ends_succeeded(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # The processing event's first delivery is lost; its retry comes after
    # the succeeded event.
    await sim.webhooks(retry_initial_ms=800, retry_max_ms=800)
    try:
        await sim.faults(webhook_drop_rate=1.0)
        p = await processing(channel)
        await asyncio.sleep(0.05)
        await sim.faults(webhook_drop_rate=0)
        await sim.settle(p.provider_payment_id, "succeeded")

        async def processing_arrived() -> bool:
            rows = await sim.events(payment_id=p.id, type="payment_intent.processing")
            return bool(rows and rows[0]["delivered"])

        await until(processing_arrived, timeout=10)
    finally:
        await sim.webhooks(retry_initial_ms=1000, retry_max_ms=60000)
    got = await get(channel, p.id)
    assert got.status == pb.PAYMENT_STATUS_SUCCEEDED
    entries = await history(channel, p.id)
    types = [(e.provider_event_type, e.applied) for e in entries if e.provider_event_type]
    assert types == [("payment_intent.succeeded", True), ("payment_intent.processing", False)]


async def test_the_webhook_arrives_before_the_create_call_stored_the_provider_id(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # The provider charges and then holds its answer past our timeout: the
    # webhook is all we learn from, and it comes while the call is in flight.
    await sim.faults(timeout_after_charge_rate=1.0)
    reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
    p = reply.payment
    assert p.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert p.provider_payment_id.startswith("pi_")
    entries = await history(channel, p.id)
    [applied] = [e for e in entries if e.applied and e.to_status == pb.PAYMENT_STATUS_SUCCEEDED]
    assert applied.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    late_api = [e for e in entries if e.source == pb.PAYMENT_EVENT_SOURCE_API and not e.applied]
    assert [e.to_status for e in late_api] == [pb.PAYMENT_STATUS_UNKNOWN]


@pytest.fixture
async def own_stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A second full stack (own simulator, gateway and payment-svc) on the
    session's database, that the test may take apart."""
    s = Stack(
        StackConfig.on_free_ports(
            database_url=database_url,
            log_dir=tmp_path,
            extra_env={
                "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "100",
                "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS": "500",
                "WEBHOOK_FORWARD_TIMEOUT_SECONDS": "1",
            },
        )
    )
    s.start_payment_svc()
    s.start_webhook_gateway()
    s.start_provider_sim()
    await wait_serving(s.grpc_target)
    yield s
    s.stop()


async def test_payment_svc_down_is_503_and_the_providers_retry_gets_through(
    own_stack: Stack,
) -> None:
    import aiohttp

    async with (
        grpc.aio.insecure_channel(own_stack.grpc_target) as channel,
        aiohttp.ClientSession(own_stack.sim_url) as http,
    ):
        sim = SimControl(http)
        p = await processing(channel)
        own_stack.processes["payment-svc"].stop()
        await sim.settle(p.provider_payment_id, "succeeded")

        async def refused() -> bool:
            rows = await sim.events(payment_id=p.id, type="payment_intent.succeeded")
            return bool(rows and rows[0]["last_status"] == 503)

        await until(refused, timeout=10)
        own_stack.start_payment_svc()
        await wait_serving(own_stack.grpc_target)

        async def settled() -> bool:
            return (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

        await until(settled, timeout=15)
        [row] = await sim.events(payment_id=p.id, type="payment_intent.succeeded")
        assert row["delivered"]
        assert row["attempts"] >= 2


async def test_200_payments_converge_despite_drops_duplicates_and_reordering(
    channel: grpc.aio.Channel, fast_retries: SimControl, db: asyncpg.Pool
) -> None:
    sim = fast_retries
    await sim.faults(webhook_drop_rate=0.2, webhook_duplicate_rate=0.2, webhook_reorder=True)
    gate = asyncio.Semaphore(16)

    async def make() -> pb.Payment:
        async with gate:
            return await processing(channel)

    payments = await asyncio.gather(*(make() for _ in range(200)))
    rng = random.Random(4242)
    outcomes = {p.id: rng.choice(["succeeded", "failed"]) for p in payments}

    async def settle(p: pb.Payment) -> None:
        async with gate:
            await sim.settle(p.provider_payment_id, outcomes[p.id])

    await asyncio.gather(*(settle(p) for p in payments))
    ids = [uuid.UUID(hex=p.id[4:]) for p in payments]

    async def all_final() -> bool:
        pending = await db.fetchval(
            "SELECT count(*) FROM payments WHERE id = ANY($1) AND status IN ('PENDING', 'UNKNOWN')",
            ids,
        )
        return bool(pending == 0)

    await until(all_final, timeout=90)

    truth = {
        row["metadata"]["payment_id"]: row["status"]
        for row in await sim.ledger()
        if row["metadata"].get("payment_id") in outcomes
    }
    expected = {"succeeded": "SUCCEEDED", "requires_payment_method": "FAILED"}
    rows = await db.fetch("SELECT id, status FROM payments WHERE id = ANY($1)", ids)
    ours = {"pay_" + r["id"].hex: r["status"] for r in rows}
    assert ours == {pid: expected[status] for pid, status in truth.items()}
    # Each provider event is in a payment's history at most once...
    repeated = await db.fetch(
        """SELECT provider_event_id, count(*) FROM payment_events
           WHERE payment_id = ANY($1) AND provider_event_id IS NOT NULL
           GROUP BY 1 HAVING count(*) > 1""",
        ids,
    )
    assert repeated == []
    # ...and each payment was settled exactly once.
    settled_twice = await db.fetch(
        """SELECT payment_id FROM payment_events
           WHERE payment_id = ANY($1) AND applied AND to_status IN ('SUCCEEDED', 'FAILED')
           GROUP BY 1 HAVING count(*) <> 1""",
        ids,
    )
    assert settled_twice == []
