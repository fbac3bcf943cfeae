"""provider-sim's webhooks over real HTTP both ways: the sim on one port, a receiver on another.

The receiver is a real aiohttp server that records every request it gets and can
answer 500 (or nothing in time) to the first few.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web
from sim_testkit import running_sim, sdk_client

from payments_dev.devdb import free_port
from provider_sim import SimSettings, init_app
from tests.support import promised

API_KEY = "sk_test_webhooks"
SECRET = "whsec_test_webhooks"


@dataclass
class Arrival:
    at: float
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Answers 500 to the first `fail_first` requests, holds the next `slow_first`
    longer than the sim waits, then answers 200."""

    fail_first: int = 0
    slow_first: int = 0
    attempts: list[Arrival] = field(default_factory=list)
    delivered: list[Arrival] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def delivered_ids(self) -> list[str]:
        return [arrival.event["id"] for arrival in self.delivered]

    async def _handle(self, request: web.Request) -> web.Response:
        arrival = Arrival(time.monotonic(), await request.read(), dict(request.headers))
        self.attempts.append(arrival)
        if len(self.attempts) <= self.fail_first:
            return web.Response(status=500, text="try again")
        if len(self.attempts) <= self.fail_first + self.slow_first:
            await asyncio.sleep(0.5)
            return web.Response(text="too late")
        self.delivered.append(arrival)
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhooks/stripe", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Sim:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.control(method, path, body)
        assert status == 200, answer
        return answer

    async def events(self, **query: str) -> list[dict[str, Any]]:
        async with self.http.get(self.url + "/_sim/events", params=query) as response:
            assert response.status == 200
            rows: list[dict[str, Any]] = (await response.json())["events"]
            return rows

    async def stats(self) -> dict[str, int]:
        stats: dict[str, int] = (await self.ok("GET", "/_sim/webhooks"))["stats"]
        return stats

    async def charge(self, amount: int = 100) -> str:
        intent = await self.ok(
            "POST", "/_sim/unrecorded_charges", {"amount": amount, "currency": "usd"}
        )
        intent_id: str = intent["id"]
        return intent_id


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def until_delivered(receiver: Receiver, count: int) -> None:
    async def check() -> bool:
        return len(receiver.delivered) >= count

    await eventually(check)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Sim]:
    settings = SimSettings(
        port=0,
        webhook_secret=SECRET,
        webhook_retry_initial_ms=20,
        webhook_retry_max_ms=200,
        webhook_timeout_ms=2000,
        seed=7,
    )
    async with running_sim(settings) as url, aiohttp.ClientSession() as http:
        yield Sim(url, http)


@pytest.fixture(scope="module")
async def client(sim: Sim) -> AsyncIterator[stripe.StripeClient]:
    async with sdk_client(sim.url, API_KEY) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
async def _reset(sim: Sim) -> None:
    await sim.ok("POST", "/_sim/reset", {"webhook_config": True})


@pytest.fixture
async def receiver(sim: Sim) -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    await sim.ok("POST", "/_sim/webhooks", {"url": started.url})
    yield started
    await started.stop()


async def create(client: stripe.StripeClient, payment_method: str, payment_id: str) -> str:
    intent = await client.v1.payment_intents.create_async(
        {
            "amount": 1250,
            "currency": "usd",
            "payment_method": payment_method,
            "confirm": True,
            "metadata": {"payment_id": payment_id},
        },
        {"idempotency_key": uuid.uuid4().hex},
    )
    return intent.id


async def test_events_are_signed_as_stripe_signs_them(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent_id = await create(client, "pm_card_processing", "pay_signed")
    await until_delivered(receiver, 1)
    await sim.ok("POST", f"/_sim/payment_intents/{intent_id}/settle", {"outcome": "succeeded"})
    await until_delivered(receiver, 2)

    events = []
    for arrival in receiver.delivered:
        assert arrival.headers["Content-Type"].startswith("application/json")
        header = arrival.headers["Stripe-Signature"]
        event = stripe.Webhook.construct_event(arrival.body, header, SECRET)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(arrival.body, header, "whsec_other")
        events.append(event)
    assert [e.type for e in events] == ["payment_intent.processing", "payment_intent.succeeded"]
    assert [e.data.object["status"] for e in events] == ["processing", "succeeded"]
    for event in events:
        assert event.id.startswith("evt_")
        assert event.object == "event"
        assert event.livemode is False
        assert event.pending_webhooks == 1
        assert isinstance(event.created, int)
        assert event.data.object["id"] == intent_id
        assert event.data.object["metadata"]["payment_id"] == "pay_signed"

    rows = await sim.events(payment_id="pay_signed")
    assert [(r["type"], r["delivered"], r["attempts"], r["dropped"]) for r in rows] == [
        ("payment_intent.processing", True, 1, False),
        ("payment_intent.succeeded", True, 1, False),
    ]
    assert [r["id"] for r in rows] == [e.id for e in events]
    assert await sim.events(type="payment_intent.succeeded", payment_id="pay_other") == []


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("settle", {"outcome": "succeeded"}, "payment_intent.succeeded"),
        ("settle", {"outcome": "failed"}, "payment_intent.payment_failed"),
        ("cancel", {}, "payment_intent.canceled"),
    ],
)
async def test_provider_side_moves_emit_their_event(
    sim: Sim,
    client: stripe.StripeClient,
    receiver: Receiver,
    path: str,
    body: dict[str, str],
    expected: str,
) -> None:
    intent_id = await create(client, "pm_card_processing", "pay_move")
    await until_delivered(receiver, 1)
    moved = await sim.ok("POST", f"/_sim/payment_intents/{intent_id}/{path}", body)
    await until_delivered(receiver, 2)

    assert [a.event["type"] for a in receiver.delivered] == ["payment_intent.processing", expected]
    assert receiver.delivered[1].event["data"]["object"]["status"] == moved["status"]
    ledger = (await sim.ok("GET", "/_sim/ledger"))["payment_intents"]
    assert ledger[0]["charges"] == (1 if expected == "payment_intent.succeeded" else 0)
    # A failed intent waits for another payment method and may still be canceled.
    status, _ = await sim.control("POST", f"/_sim/payment_intents/{intent_id}/cancel")
    assert status == (200 if expected == "payment_intent.payment_failed" else 409)


async def test_cancel_errors(sim: Sim) -> None:
    status, body = await sim.control("POST", "/_sim/payment_intents/pi_nope/cancel")
    assert (status, body["error"]["reason"]) == (404, "not_found")
    intent_id = await sim.charge()
    status, body = await sim.control(
        "POST", f"/_sim/payment_intents/{intent_id}/cancel", {"reason": "bored"}
    )
    assert (status, body["error"]["reason"]) == (400, "invalid_reason")


async def test_retried_after_500s_with_growing_waits(sim: Sim, receiver: Receiver) -> None:
    receiver.fail_first = 2
    await sim.ok("POST", "/_sim/webhooks", {"retry_initial_ms": 100, "retry_max_ms": 1000})
    await sim.charge()
    await until_delivered(receiver, 1)

    assert len(receiver.attempts) == 3
    first, second, third = (a.at for a in receiver.attempts)
    assert 0.07 <= second - first < third - second
    assert len({a.event["id"] for a in receiver.attempts}) == 1
    # Each attempt is signed afresh.
    assert stripe.Webhook.construct_event(
        receiver.delivered[0].body, receiver.delivered[0].headers["Stripe-Signature"], SECRET
    )
    [row] = await sim.events()
    assert (row["delivered"], row["attempts"], row["delivery_state"]) == (True, 3, "delivered")
    stats = await sim.stats()
    assert (stats["delivered"], stats["failed_attempts"], stats["pending"]) == (1, 2, 0)


async def test_timeouts_are_retried(sim: Sim, receiver: Receiver) -> None:
    receiver.slow_first = 1
    await sim.ok("POST", "/_sim/webhooks", {"timeout_ms": 100})
    await sim.charge()
    await until_delivered(receiver, 1)

    assert len(receiver.attempts) == 2
    [row] = await sim.events()
    assert (row["delivered"], row["attempts"]) == (True, 2)


async def test_delivered_once_the_receiver_comes_up(sim: Sim) -> None:
    receiver = Receiver(port=free_port())
    await sim.ok("POST", "/_sim/webhooks", {"url": receiver.url})
    await sim.charge()

    async def failed_twice() -> bool:
        [row] = await sim.events()
        return bool(row["attempts"] >= 2)

    await eventually(failed_twice)
    [row] = await sim.events()
    assert row["delivered"] is False
    assert row["delivery_state"] == "pending"
    assert "Connect" in row["last_error"]
    await receiver.start()
    try:
        await until_delivered(receiver, 1)
    finally:
        await receiver.stop()
    [row] = await sim.events()
    assert row["delivered"] is True
    assert len(receiver.delivered) == 1


async def test_a_new_url_takes_the_pending_retries(sim: Sim, receiver: Receiver) -> None:
    await sim.ok("POST", "/_sim/webhooks", {"url": f"http://127.0.0.1:{free_port()}/x"})
    await sim.charge()

    async def failed_once() -> bool:
        [row] = await sim.events()
        return bool(row["attempts"] >= 1)

    await eventually(failed_once)  # at the old URL
    assert receiver.attempts == []
    await sim.ok("POST", "/_sim/webhooks", {"url": receiver.url})
    await until_delivered(receiver, 1)


async def test_gives_up_after_max_attempts(sim: Sim, receiver: Receiver) -> None:
    receiver.fail_first = 100
    await sim.ok("POST", "/_sim/webhooks", {"max_attempts": 3})
    await sim.charge()

    async def gave_up() -> bool:
        return (await sim.stats())["gave_up"] == 1

    await eventually(gave_up)
    [row] = await sim.events()
    assert (row["delivered"], row["attempts"], row["delivery_state"]) == (False, 3, "failed")
    assert row["last_status"] == 500
    assert len(receiver.attempts) == 3


async def test_drop_rate_one_delivers_nothing(sim: Sim, receiver: Receiver) -> None:
    # Every attempt is lost in transit; the provider sees failures and retries.
    await sim.ok("POST", "/_sim/webhooks", {"retry_initial_ms": 1000, "retry_max_ms": 1000})
    await sim.ok("POST", "/_sim/faults", {"webhook_drop_rate": 1.0})
    dropped = [await sim.charge() for _ in range(5)]

    async def all_dropped() -> bool:
        return (await sim.stats())["dropped"] == 5

    await eventually(all_dropped)
    assert receiver.attempts == []
    rows = await sim.events()
    assert [r["object_id"] for r in rows] == dropped
    assert [(r["dropped"], r["delivered"], r["delivery_state"]) for r in rows] == [
        (True, False, "pending")
    ] * 5
    assert (await sim.stats())["dropped"] == 5


async def test_dropped_attempts_are_retried_until_they_get_through(
    sim: Sim, receiver: Receiver
) -> None:
    await sim.ok("POST", "/_sim/faults", {"webhook_drop_rate": 1.0})
    lost_first = [await sim.charge() for _ in range(5)]

    async def all_dropped() -> bool:
        return (await sim.stats())["dropped"] == 5

    await eventually(all_dropped)
    await sim.ok("POST", "/_sim/faults", {"webhook_drop_rate": 0})
    await until_delivered(receiver, 5)

    assert sorted(a.event["data"]["object"]["id"] for a in receiver.attempts) == sorted(lost_first)
    rows = await sim.events()
    assert all(r["dropped"] and r["delivered"] and r["attempts"] >= 2 for r in rows)


async def test_duplicate_rate_one_delivers_each_event_twice(sim: Sim, receiver: Receiver) -> None:
    await sim.ok("POST", "/_sim/faults", {"webhook_duplicate_rate": 1.0})
    for _ in range(5):
        await sim.charge()
    await until_delivered(receiver, 10)

    ids = receiver.delivered_ids()
    assert len(ids) == 10
    assert all(ids.count(event_id) == 2 for event_id in ids)
    rows = await sim.events()
    assert {r["id"] for r in rows} == set(ids)
    assert all(r["copies"] == 2 and r["attempts"] == 2 for r in rows)
    stats = await sim.stats()
    assert (stats["duplicated"], stats["delivered"], stats["pending"]) == (5, 10, 0)


async def test_reorder_shuffles_deliveries(sim: Sim, receiver: Receiver) -> None:
    await sim.ok("POST", "/_sim/faults", {"webhook_reorder": True})
    for _ in range(50):
        await sim.charge()
    await until_delivered(receiver, 50)

    emitted = [r["id"] for r in await sim.events()]
    arrived = receiver.delivered_ids()
    assert sorted(arrived) == sorted(emitted)
    assert arrived != emitted


async def test_delay_holds_every_delivery(sim: Sim, receiver: Receiver) -> None:
    await sim.ok("POST", "/_sim/faults", {"webhook_delay_ms": 200})
    started = time.monotonic()
    await sim.charge()
    await asyncio.sleep(0.1)
    assert receiver.attempts == []
    await until_delivered(receiver, 1)
    assert receiver.delivered[0].at - started >= 0.19


async def test_many_events_all_arrive_once(sim: Sim, receiver: Receiver) -> None:
    semaphore = asyncio.Semaphore(32)

    async def charge() -> None:
        async with semaphore:
            await sim.charge()

    await asyncio.gather(*(charge() for _ in range(500)))
    await until_delivered(receiver, 500)

    ids = receiver.delivered_ids()
    assert len(ids) == len(set(ids)) == 500
    assert set(ids) == {r["id"] for r in await sim.events()}
    stats = await sim.stats()
    assert (stats["delivered"], stats["failed_attempts"], stats["pending"]) == (500, 0, 0)


async def test_redeliver_sends_the_same_event_again(sim: Sim, receiver: Receiver) -> None:
    await sim.charge()
    await until_delivered(receiver, 1)
    event_id = receiver.delivered_ids()[0]
    delivery = await sim.ok("POST", f"/_sim/events/{event_id}/redeliver", {"copies": 3})
    assert delivery["copies"] == 4
    await until_delivered(receiver, 4)
    assert receiver.delivered_ids() == [event_id] * 4

    for bad, status, reason in [
        ({"copies": 0}, 400, "invalid_copies"),
        ({"copies": True}, 400, "invalid_copies"),
    ]:
        code, body = await sim.control("POST", f"/_sim/events/{event_id}/redeliver", bad)
        assert (code, body["error"]["reason"]) == (status, reason)
    code, body = await sim.control("POST", "/_sim/events/evt_nope/redeliver")
    assert (code, body["error"]["reason"]) == (404, "not_found")


async def test_without_url_events_are_only_recorded(sim: Sim) -> None:
    config = await sim.ok("GET", "/_sim/webhooks")
    assert config["url"] is None
    await sim.charge()
    [row] = await sim.events()
    assert (row["delivered"], row["attempts"], row["delivery_state"]) == (
        False,
        0,
        "no_endpoint",
    )
    code, body = await sim.control("POST", f"/_sim/events/{row['id']}/redeliver")
    assert (code, body["error"]["reason"]) == (409, "no_webhook_url")


async def test_webhook_settings_read_back_and_validate(sim: Sim) -> None:
    config = await sim.ok("GET", "/_sim/webhooks")
    assert config == {
        "url": None,
        "secret": SECRET,
        "retry_initial_ms": 20,
        "retry_max_ms": 200,
        "max_attempts": 25,
        "timeout_ms": 2000,
        "concurrency": 16,
        "stats": {
            "delivered": 0,
            "failed_attempts": 0,
            "pending": 0,
            "dropped": 0,
            "duplicated": 0,
            "gave_up": 0,
            "attempts": 0,
        },
    }
    updated = await sim.ok(
        "POST", "/_sim/webhooks", {"url": "http://127.0.0.1:9/hooks", "secret": "whsec_new"}
    )
    assert (updated["url"], updated["secret"], updated["retry_max_ms"]) == (
        "http://127.0.0.1:9/hooks",
        "whsec_new",
        200,
    )
    for bad, reason in [
        ({"url": "ftp://example.com"}, "invalid_value"),
        ({"url": "not a url"}, "invalid_value"),
        ({"url": 5}, "invalid_value"),
        ({"secret": ""}, "invalid_value"),
        ({"retry_initial_ms": 0}, "invalid_value"),
        ({"retry_max_ms": 10}, "invalid_value"),
        ({"max_attempts": "3"}, "invalid_value"),
        ({"concurrency": 4}, "start_up_only"),
        ({"colour": "red"}, "unknown_setting"),
        ([1], "invalid_body"),
    ]:
        status, body = await sim.control("POST", "/_sim/webhooks", bad)
        assert status == 400, bad
        assert body["error"]["reason"] == reason, bad
    assert (await sim.ok("GET", "/_sim/webhooks"))["url"] == "http://127.0.0.1:9/hooks"
    await sim.ok("POST", "/_sim/webhooks", {"url": None})
    assert (await sim.ok("GET", "/_sim/webhooks"))["url"] is None


async def test_reset_clears_deliveries_and_keeps_the_endpoint(sim: Sim) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks"
    await sim.ok("POST", "/_sim/webhooks", {"url": dead, "retry_initial_ms": 50})
    await sim.charge()
    assert (await sim.stats())["pending"] == 1

    assert await sim.ok("POST", "/_sim/reset") == {"reset": True, "webhook_config": False}

    config = await sim.ok("GET", "/_sim/webhooks")
    assert (config["url"], config["retry_initial_ms"]) == (dead, 50)
    assert config["stats"]["pending"] == 0
    assert await sim.events() == []
    # The old retry is gone: by the time an event made after the reset has
    # been tried twice at the same URL (50 ms apart), it would have been tried.
    await sim.charge()

    async def tried_twice() -> bool:
        [row] = await sim.events()
        return bool(row["attempts"] >= 2)

    await eventually(tried_twice)
    [row] = await sim.events()
    assert (await sim.stats())["attempts"] == row["attempts"]
    await sim.ok("POST", "/_sim/reset", {"webhook_config": True})
    assert (await sim.ok("GET", "/_sim/webhooks"))["url"] is None
    status, body = await sim.control("POST", "/_sim/reset", {"webhook_config": "yes"})
    assert (status, body["error"]["reason"]) == (400, "invalid_value")


async def test_shutdown_with_pending_retries_is_quick() -> None:
    settings = SimSettings(port=0, webhook_url=f"http://127.0.0.1:{free_port()}/hooks")
    # Retries that held the shutdown would hold it for shutdown_timeout.
    runner = web.AppRunner(init_app(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url + "/_sim/unrecorded_charges", json={"amount": 5, "currency": "usd"}
        ) as response:
            assert response.status == 200

        async def retrying() -> bool:
            async with http.get(url + "/_sim/webhooks") as response:
                stats = (await response.json())["stats"]
            return bool(stats["pending"] == 1 and stats["failed_attempts"] >= 1)

        await eventually(retrying)
    started = time.monotonic()
    await runner.cleanup()
    assert time.monotonic() - started < promised(0.0, 0.5)


async def test_v1_events_list_and_retrieve(sim: Sim, client: stripe.StripeClient) -> None:
    since = int(time.time())
    ids = [await sim.charge(amount) for amount in range(1, 6)]
    intent_id = await create(client, "pm_card_processing", "pay_list")

    page = await client.v1.events.list_async({"created": {"gte": since}, "limit": 4})
    assert page["object"] == "list"
    assert page.url == "/v1/events"
    assert page.has_more is True
    assert page.data[0].type == "payment_intent.processing"
    assert page.data[0].data.object["id"] == intent_id
    assert [e.data.object["id"] for e in page.data[1:]] == ids[::-1][:3]

    rest = await client.v1.events.list_async(
        {"created": {"gte": since}, "limit": 4, "starting_after": page.data[-1].id}
    )
    assert rest.has_more is False
    assert [e.data.object["id"] for e in rest.data] == ids[:2][::-1]

    everything = [e.id async for e in page.auto_paging_iter()]
    assert len(everything) == 6
    newer = await client.v1.events.list_async({"ending_before": rest.data[0].id, "limit": 2})
    assert [e.id for e in newer.data] == everything[2:4]
    assert newer.has_more is True

    assert (await client.v1.events.list_async({"created": {"gt": since + 3600}})).data == []
    typed = await client.v1.events.list_async({"type": "payment_intent.processing"})
    assert [e.data.object["id"] for e in typed.data] == [intent_id]
    wildcard = await client.v1.events.list_async({"type": "payment_intent.*", "limit": 100})
    assert len(wildcard.data) == 6

    fetched = await client.v1.events.retrieve_async(page.data[0].id)
    assert fetched.to_dict() == page.data[0].to_dict()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.events.retrieve_async("evt_missing")
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as bad_cursor:
        await client.v1.events.list_async({"starting_after": "evt_missing"})
    assert bad_cursor.value.param == "starting_after"
    with pytest.raises(stripe.InvalidRequestError) as bad_limit:
        await client.v1.events.list_async({"limit": 101})
    assert bad_limit.value.param == "limit"
