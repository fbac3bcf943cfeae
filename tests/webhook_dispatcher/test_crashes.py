"""At least once, in order per payment, across crashes (SPEC §3d): the
dispatcher SIGKILLed mid-delivery and at random moments under load, SIGTERM
with attempts in flight, two replicas with one killed. Nothing is lost:
every update of the feed reaches the receiver, counted per update id."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
from pathlib import Path

import asyncpg
import grpc
from aiohttp import web
from standardwebhooks import Webhook

from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Process, Stack
from tests.support import auth, create_request, new_key, stub
from tests.webhook_dispatcher.dispatch_testkit import (
    Delivery,
    Receiver,
    create_endpoint,
    delete_endpoint,
    feed_of,
    start_dispatcher,
)


def _in_order(deliveries: list[Delivery], feed: list[tuple[str, str]]) -> None:
    """Per payment, every arrival of an update comes before the first
    arrival of the next one (re-sends of a lost answer included)."""
    arrivals: dict[str, list[int]] = {}
    for i, d in enumerate(deliveries):
        arrivals.setdefault(d.webhook_id, []).append(i)
    by_payment: dict[str, list[str]] = {}
    for payment_id, update_id in feed:
        by_payment.setdefault(payment_id, []).append(update_id)
    for updates in by_payment.values():
        for earlier, later in itertools.pairwise(updates):
            assert max(arrivals[earlier]) < min(arrivals[later]), "out of order"


async def _writer(channel: grpc.aio.Channel, made: set[str], stop: asyncio.Event) -> None:
    """Payments, each refunded in two parts: several updates per payment."""
    s = stub(channel)
    while not stop.is_set():
        reply = await s.CreatePayment(create_request(), metadata=auth(), timeout=15)
        made.add(reply.payment.id)
        for amount in (500, 300):
            await s.RefundPayment(
                svc.RefundPaymentRequest(
                    payment_id=reply.payment.id, idempotency_key=new_key(), amount=amount
                ),
                metadata=auth(),
                timeout=15,
            )


async def _all_delivered(
    channel: grpc.aio.Channel, r: Receiver, payments: set[str], timeout: float = 60
) -> list[tuple[str, str]]:
    await asyncio.sleep(1.0)  # the last commits numbered
    feed = [(u.payment.id, u.id) for u in await feed_of(channel, payments)]
    want = {u for _, u in feed}
    await r.wait_for(lambda got: want <= {d.webhook_id for d in got}, timeout=timeout)
    return feed


async def test_sigkill_mid_delivery_sends_the_same_webhook_id_again(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    held: list[str] = []

    async def hold_first(d: Delivery, seen: int) -> web.StreamResponse:
        if not held:
            held.append(d.webhook_id)
            await asyncio.sleep(30)  # the dispatcher is killed meanwhile
        return web.Response(status=200)

    r = Receiver(hold_first)
    await r.start()
    first = start_dispatcher(stack, tmp_path, "first")
    endpoint = await create_endpoint(channel, r.url)
    second: Process | None = None
    try:
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
        await r.wait_for(lambda got: len(got) >= 1)
        first.signal(signal.SIGKILL)
        first.stop()
        second = start_dispatcher(stack, tmp_path, "second")
        await r.wait_for(lambda got: sum(d.webhook_id == held[0] for d in got) >= 2, timeout=30)
        feed = await _all_delivered(channel, r, {reply.payment.id})
        _in_order(r.got, feed)
        for d in r.got:
            Webhook(endpoint.secret).verify(d.body, d.headers)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_random_sigkills_under_load_lose_nothing_and_keep_order(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    async def sometimes_slow(_: Delivery, __: int) -> web.StreamResponse:
        await asyncio.sleep(random.uniform(0, 0.05))
        return web.Response(status=200)

    r = Receiver(sometimes_slow)
    await r.start()
    endpoint = await create_endpoint(channel, r.url)
    proc = start_dispatcher(stack, tmp_path, "k0")
    made: set[str] = set()
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(channel, made, stop)) for _ in range(8)]
    try:
        for i in range(4):
            await asyncio.sleep(random.uniform(0.5, 2.0))
            proc.signal(signal.SIGKILL)
            proc.stop()
            proc = start_dispatcher(stack, tmp_path, f"k{i + 1}")
        stop.set()
        await asyncio.gather(*writers)
        feed = await _all_delivered(channel, r, made, timeout=90)
        assert len(made) >= 8 and len(feed) >= 3 * len(made)
        mine = r.for_payments(made)
        _in_order(mine, feed)
        ids = {d.webhook_id for d in mine}
        assert ids == {u for _, u in feed}  # every update, counted by id; nothing else
    finally:
        stop.set()
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_sigterm_finishes_attempts_in_flight(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    async def slowish(_: Delivery, __: int) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    r = Receiver(slowish)
    await r.start()
    endpoint = await create_endpoint(channel, r.url)
    proc = start_dispatcher(stack, tmp_path, "term")
    try:
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
        await r.wait_for(lambda got: len(got) >= 1)
        proc.signal(signal.SIGTERM)
        assert proc.stop(timeout=10) == 0
        # What was in flight finished; the rest is sent by the next replica.
        proc = start_dispatcher(stack, tmp_path, "after-term")
        feed = await _all_delivered(channel, r, {reply.payment.id})
        _in_order(r.got, feed)
        assert r.got[0].webhook_id == feed[0][1]
    finally:
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_two_replicas_one_killed_the_other_takes_over(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path, db: asyncpg.Pool
) -> None:
    r = Receiver()
    await r.start()
    a = start_dispatcher(stack, tmp_path, "a")
    b = start_dispatcher(stack, tmp_path, "b")
    endpoint = await create_endpoint(channel, r.url)
    try:
        first = {
            (
                await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
            ).payment.id
        }
        await _all_delivered(channel, r, first)
        owner = await db.fetchval(
            "SELECT lease_owner FROM webhook_endpoints WHERE id = $1::uuid",
            endpoint.id.removeprefix("we_"),
        )
        assert owner in ("test-a-" + str(a.metrics_port), "test-b-" + str(b.metrics_port))  # type: ignore[attr-defined]
        holder, other = (a, b) if owner.startswith("test-a-") else (b, a)
        holder.signal(signal.SIGKILL)
        holder.stop()
        later = {
            (
                await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
            ).payment.id
            for _ in range(3)
        }
        # Within the lease (3 s) and a renewal (1 s), the other replica serves it.
        feed = await _all_delivered(channel, r, later, timeout=20)
        _in_order(r.for_payments(later), feed)
        owner = await db.fetchval(
            "SELECT lease_owner FROM webhook_endpoints WHERE id = $1::uuid",
            endpoint.id.removeprefix("we_"),
        )
        assert owner.startswith("test-b-" if other is b else "test-a-")
    finally:
        a.stop()
        b.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_per_payment_order_under_8_concurrent_writers(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    r = Receiver()
    await r.start()
    endpoint = await create_endpoint(channel, r.url)
    proc = start_dispatcher(stack, tmp_path, "order")
    made: set[str] = set()
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(channel, made, stop)) for _ in range(8)]
    try:
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*writers)
        feed = await _all_delivered(channel, r, made)
        mine = r.for_payments(made)
        _in_order(mine, feed)
        assert [d.webhook_id for d in mine].count(feed[0][1]) == 1  # no crash: once each
    finally:
        stop.set()
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_replicas_share_the_endpoints(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path, db: asyncpg.Pool
) -> None:
    """Each replica takes about its share of the enabled endpoints (the
    enabled ones over the replicas alive): a second replica gets half from
    the first, which gives them back; every endpoint is held by one."""
    receivers = [Receiver() for _ in range(4)]
    endpoints = []
    for r in receivers:
        await r.start()
        endpoints.append(await create_endpoint(channel, r.url))
    a = start_dispatcher(stack, tmp_path, "share-a")
    b: Process | None = None

    async def owners() -> dict[str, int]:
        rows = await db.fetch(
            "SELECT lease_owner, count(*) FROM webhook_endpoints"
            " WHERE status = 'ENABLED' AND lease_until > now() GROUP BY lease_owner"
        )
        return {r["lease_owner"]: r["count"] for r in rows}

    try:
        enabled = await db.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE status = 'ENABLED'"
        )
        async with asyncio.timeout(10):
            while True:
                if sum((await owners()).values()) == enabled:
                    break
                await asyncio.sleep(0.2)
        assert len(await owners()) == 1
        b = start_dispatcher(stack, tmp_path, "share-b")
        async with asyncio.timeout(15):
            while True:
                held = await owners()
                even = max(held.values(), default=0) - min(held.values(), default=0) <= 1
                if len(held) == 2 and sum(held.values()) == enabled and even:
                    break
                await asyncio.sleep(0.2)
        # Both serve: every endpoint gets its client's updates.
        made = {
            (
                await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
            ).payment.id
        }
        for r in receivers:
            await _all_delivered(channel, r, made)
    finally:
        a.stop()
        if b is not None:
            b.stop()
        for e in endpoints:
            await delete_endpoint(channel, e.id)
        for r in receivers:
            await r.stop()
