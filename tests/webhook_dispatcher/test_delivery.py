"""webhook-dispatcher end to end (SPEC §3d): the session's payment-svc and
Postgres, a real dispatcher process, a real receiver on 127.0.0.1. Every
message is verified with the reference package `standardwebhooks`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from payments.v1 import webhooks_pb2 as wh
from payments_dev.stack import Process, Stack
from tests.support import auth, create_request, eventually, stub
from tests.webhook_dispatcher.dispatch_testkit import (
    Delivery,
    Receiver,
    create_endpoint,
    delete_endpoint,
    feed_of,
    start_dispatcher,
)


@pytest.fixture
async def dispatcher(stack: Stack, tmp_path: Path) -> AsyncIterator[Process]:
    proc = start_dispatcher(stack, tmp_path)
    yield proc
    proc.stop()


async def _pay(channel: grpc.aio.Channel, n: int, who: str = "merchant", **kw: str) -> set[str]:
    made = set()
    for _ in range(n):
        reply = await stub(channel).CreatePayment(
            create_request(**kw), metadata=auth(who), timeout=10
        )
        made.add(reply.payment.id)
    return made


def _verified(secret: str, deliveries: list[Delivery]) -> None:
    hook = Webhook(secret)
    for d in deliveries:
        hook.verify(d.body, d.headers)


def _by_payment(ids: list[tuple[str, str]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for payment_id, update_id in ids:
        order.setdefault(payment_id, []).append(update_id)
    return order


async def _endpoint(
    channel: grpc.aio.Channel, url: str, who: str = "merchant"
) -> wh.WebhookEndpoint:
    return await create_endpoint(channel, url, who)


async def test_every_update_is_delivered_signed_and_in_order_per_payment(
    channel: grpc.aio.Channel, dispatcher: Process
) -> None:
    r = Receiver()
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 4) | await _pay(
            channel, 2, payment_method="pm_card_chargeDeclined"
        )
        await asyncio.sleep(0.5)
        expected = await feed_of(channel, payments)
        want = {u.id for u in expected}
        await r.wait_for(lambda got: want <= {d.webhook_id for d in r.for_payments(payments)})
        mine = r.for_payments(payments)
        _verified(endpoint.secret, mine)
        first = {}
        for d in mine:
            first.setdefault(d.webhook_id, d)
        message = first[expected[0].id].message
        assert message["type"] == "payment.updated"
        assert message["data"]["id"] == expected[0].id
        assert message["data"]["cursor"] == expected[0].cursor
        assert set(message) == {"type", "timestamp", "data"}
        delivered = _by_payment([(d.message["data"]["payment"]["id"], d.webhook_id) for d in mine])
        feed = _by_payment([(u.payment.id, u.id) for u in expected])
        assert {p: list(dict.fromkeys(ids)) for p, ids in delivered.items()} == feed
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_a_receiver_failing_three_times_gets_the_same_webhook_id_until_it_succeeds(
    channel: grpc.aio.Channel, dispatcher: Process
) -> None:
    async def flaky(_: Delivery, seen: int) -> web.StreamResponse:
        return web.Response(status=500 if seen < 3 else 200)

    r = Receiver(flaky)
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 1, payment_method="pm_card_chargeDeclined")
        await asyncio.sleep(0.5)
        expected = await feed_of(channel, payments)
        want = {u.id for u in expected}

        def done(_: list[Delivery]) -> bool:
            counts = {i: 0 for i in want}
            for d in r.for_payments(payments):
                counts[d.webhook_id] += 1
            return all(c >= 4 for c in counts.values())

        await r.wait_for(done)
        mine = r.for_payments(payments)
        _verified(endpoint.secret, mine)
        for update in expected:
            attempts = [d for d in mine if d.webhook_id == update.id]
            assert len(attempts) == 4
            assert len({d.body for d in attempts}) == 1  # the same message, re-signed
        # The attempts are listed, newest first, with their statuses.
        await asyncio.sleep(0.3)
        listed = await stub(channel).ListWebhookDeliveries(
            wh.ListWebhookDeliveriesRequest(endpoint_id=endpoint.id, page_size=100),
            metadata=auth(),
            timeout=5,
        )
        by_update = [d for d in listed.deliveries if d.update_id == expected[0].id]
        assert [d.attempt for d in by_update] == [4, 3, 2, 1]
        assert [d.http_status for d in by_update] == [200, 500, 500, 500]
        assert [d.delivered for d in by_update] == [True, False, False, False]
        # The second update of the payment waited for the first.
        if len(expected) > 1:
            first_ok = max(d.at for d in mine if d.webhook_id == expected[0].id)
            second = min(d.at for d in mine if d.webhook_id == expected[1].id)
            assert second >= first_ok
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_410_disables_the_endpoint(channel: grpc.aio.Channel, dispatcher: Process) -> None:
    async def gone(_: Delivery, __: int) -> web.StreamResponse:
        return web.Response(status=410)

    r = Receiver(gone)
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        await _pay(channel, 2)
        await r.wait_for(lambda got: len(got) >= 1)
        async with asyncio.timeout(10):
            while True:
                listed = await stub(channel).ListWebhookEndpoints(
                    wh.ListWebhookEndpointsRequest(), metadata=auth(), timeout=5
                )
                mine = next(e for e in listed.endpoints if e.id == endpoint.id)
                if mine.status == wh.WEBHOOK_ENDPOINT_STATUS_DISABLED_GONE:
                    break
                await asyncio.sleep(0.1)
        count = len(r.got)
        await _pay(channel, 1)
        await asyncio.sleep(1.5)
        assert len(r.got) == count  # nothing more is posted to it
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_retry_after_is_honoured(channel: grpc.aio.Channel, dispatcher: Process) -> None:
    async def busy(_: Delivery, seen: int) -> web.StreamResponse:
        if seen == 0:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=200)

    r = Receiver(busy)
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 1, payment_method="pm_card_chargeDeclined")
        await asyncio.sleep(0.5)
        first = (await feed_of(channel, payments))[0].id
        await r.wait_for(lambda got: sum(d.webhook_id == first for d in got) >= 2, timeout=20)
        times = [d.at for d in r.got if d.webhook_id == first]
        # The schedule says 0.2 s; the endpoint asked for 2 s.
        assert times[1] - times[0] >= 1.9
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_a_receiver_slower_than_the_timeout_fails_and_is_retried(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    proc = start_dispatcher(stack, tmp_path, "slow", WEBHOOK_ATTEMPT_TIMEOUT_SECONDS="0.5")
    slow_ids: set[str] = set()

    async def slow(d: Delivery, seen: int) -> web.StreamResponse:
        if seen == 0:
            slow_ids.add(d.webhook_id)
            await asyncio.sleep(2)
        return web.Response(status=200)

    r = Receiver(slow)
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 1, payment_method="pm_card_chargeDeclined")
        await asyncio.sleep(0.5)
        first = (await feed_of(channel, payments))[0].id
        await r.wait_for(lambda got: sum(d.webhook_id == first for d in got) >= 2)
        await asyncio.sleep(0.5)
        listed = await stub(channel).ListWebhookDeliveries(
            wh.ListWebhookDeliveriesRequest(endpoint_id=endpoint.id, page_size=100),
            metadata=auth(),
            timeout=5,
        )
        attempts = sorted(
            (d for d in listed.deliveries if d.update_id == first), key=lambda d: d.attempt
        )
        assert (attempts[0].error, attempts[0].http_status, attempts[0].delivered) == (
            "timeout",
            0,
            False,
        )
        assert attempts[0].duration.ToMilliseconds() < 1500
        assert attempts[1].delivered
    finally:
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_during_a_rotation_either_secret_verifies(
    channel: grpc.aio.Channel, dispatcher: Process, stack: Stack
) -> None:
    r = Receiver()
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        rotated = await stub(channel).RotateWebhookSecret(
            wh.RotateWebhookSecretRequest(endpoint_id=endpoint.id), metadata=auth(), timeout=5
        )
        # The dispatcher picks the new secret up with its next lease (every second).
        await asyncio.sleep(1.5)
        payments = await _pay(channel, 1)
        await asyncio.sleep(0.5)
        want = {u.id for u in await feed_of(channel, payments)}
        await r.wait_for(lambda got: want <= {d.webhook_id for d in r.for_payments(payments)})
        mine = r.for_payments(payments)
        _verified(endpoint.secret, mine)
        _verified(rotated.endpoint.secret, mine)
        assert all(len(d.headers["webhook-signature"].split(" ")) == 2 for d in mine)
        # Secrets are never logged, in either process (text or key base64).
        logs = [dispatcher.log_path, stack.config.log_dir / "payment-svc.log"]  # type: ignore[operator]
        text = "".join(Path(p).read_text() for p in logs if p is not None)
        assert "webhook_attempt" in text and "payment_svc_started" in text
        for secret in (endpoint.secret, rotated.endpoint.secret):
            assert secret.removeprefix("whsec_") not in text
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_redeliver_sends_again_every_update_after_a_cursor(
    channel: grpc.aio.Channel, dispatcher: Process
) -> None:
    r = Receiver()
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 3)
        await asyncio.sleep(0.5)
        expected = await feed_of(channel, payments)
        want = [u.id for u in expected]
        await r.wait_for(lambda got: set(want) <= {d.webhook_id for d in got})

        # Every first attempt recorded delivered before the rewind: one still
        # in flight (received, its answer not recorded yet) stays queued and
        # is not sent again (RedeliverWebhooks keeps queued rows as they are).
        async def recorded() -> bool:
            listed = await stub(channel).ListWebhookDeliveries(
                wh.ListWebhookDeliveriesRequest(endpoint_id=endpoint.id, page_size=100),
                metadata=auth(),
                timeout=5,
            )
            return set(want) <= {d.update_id for d in listed.deliveries if d.delivered}

        await eventually(recorded, "every first attempt recorded delivered")
        before = len(r.got)
        await stub(channel).RedeliverWebhooks(
            wh.RedeliverWebhooksRequest(endpoint_id=endpoint.id, after_cursor=expected[0].cursor),
            metadata=auth(),
            timeout=5,
        )
        await r.wait_for(lambda got: set(want[1:]) <= {d.webhook_id for d in got[before:]})
        again = {d.webhook_id for d in r.got[before:]}
        assert expected[0].id not in again
    finally:
        await delete_endpoint(channel, endpoint.id)
        await r.stop()


async def test_two_clients_are_isolated(channel: grpc.aio.Channel, dispatcher: Process) -> None:
    r1, r2 = Receiver(), Receiver()
    await r1.start()
    await r2.start()
    e1 = await _endpoint(channel, r1.url, "merchant")
    e2 = await _endpoint(channel, r2.url, "merchant-2")
    try:
        p1 = await _pay(channel, 2, "merchant")
        p2 = await _pay(channel, 2, "merchant-2")
        await asyncio.sleep(0.5)
        w1 = {u.id for u in await feed_of(channel, p1, "merchant")}
        w2 = {u.id for u in await feed_of(channel, p2, "merchant-2")}
        await r1.wait_for(lambda got: w1 <= {d.webhook_id for d in got})
        await r2.wait_for(lambda got: w2 <= {d.webhook_id for d in got})
        await asyncio.sleep(0.5)
        assert not r1.for_payments(p2) and not r2.for_payments(p1)
        _verified(e1.secret, r1.got)
        _verified(e2.secret, r2.got)
        assert base64.b64decode(e1.secret[6:]) != base64.b64decode(e2.secret[6:])
    finally:
        await delete_endpoint(channel, e1.id, "merchant")
        await delete_endpoint(channel, e2.id, "merchant-2")
        await r1.stop()
        await r2.stop()


async def test_failing_past_the_limit_disables_the_endpoint_and_given_up_updates_free_the_next(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    """Two retries, then given up: the payment's next update is sent; and
    an endpoint failing for longer than the limit (here 2 s for 5 days) is
    disabled."""
    proc = start_dispatcher(
        stack,
        tmp_path,
        "failing",
        WEBHOOK_RETRY_SCHEDULE="0.1,0.1",
        WEBHOOK_DISABLE_AFTER_FAILING_SECONDS="2",
    )

    async def down(_: Delivery, __: int) -> web.StreamResponse:
        return web.Response(status=500)

    r = Receiver(down)
    await r.start()
    endpoint = await _endpoint(channel, r.url)
    try:
        payments = await _pay(channel, 1, payment_method="pm_card_chargeDeclined")
        await asyncio.sleep(0.5)
        expected = [u.id for u in await feed_of(channel, payments)]
        assert len(expected) == 2
        # Each update: 3 attempts (the first and two retries), then the next.
        await r.wait_for(lambda got: sum(d.webhook_id == expected[1] for d in got) >= 3)
        ids = [d.webhook_id for d in r.for_payments(payments)]
        assert ids[:6] == [expected[0]] * 3 + [expected[1]] * 3
        async with asyncio.timeout(15):
            while True:
                await _pay(channel, 1)  # more failures, past the limit
                listed = await stub(channel).ListWebhookEndpoints(
                    wh.ListWebhookEndpointsRequest(), metadata=auth(), timeout=5
                )
                mine = next(e for e in listed.endpoints if e.id == endpoint.id)
                if mine.status == wh.WEBHOOK_ENDPOINT_STATUS_DISABLED_FAILING:
                    break
                await asyncio.sleep(0.5)
    finally:
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await r.stop()
