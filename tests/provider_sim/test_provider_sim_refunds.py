"""Refunds, disputes, expanded charges and intent lists, over real HTTP both ways.

The official stripe SDK drives /v1, aiohttp drives /_sim, and a real aiohttp
receiver takes the signed webhooks (each checked with `stripe.Webhook`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import stripe
from sim_testkit import Receiver, Sim, running_sim, sdk_client

from provider_sim import SimSettings

API_KEY = "sk_test_refunds"
SECRET = "whsec_test_refunds"


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver(SECRET).start()
    yield started
    await started.stop()


@pytest.fixture(scope="module")
async def sim(receiver: Receiver) -> AsyncIterator[Sim]:
    settings = SimSettings(port=0, webhook_url=receiver.url, webhook_secret=SECRET, seed=3)
    async with running_sim(settings) as url, aiohttp.ClientSession() as http:
        yield Sim(url, http)


@pytest.fixture(scope="module")
async def client(sim: Sim) -> AsyncIterator[stripe.StripeClient]:
    async with sdk_client(sim.url, API_KEY) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
async def _reset(sim: Sim) -> None:
    await sim.ok("/_sim/reset")  # keeps the webhook endpoint


async def create(
    client: stripe.StripeClient, payment_method: str = "pm_card_visa", *, confirm: bool = True
) -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        {
            "amount": 1250,
            "currency": "usd",
            "payment_method": payment_method,
            "confirm": confirm,
            "metadata": {"payment_id": f"pay_{uuid.uuid4().hex[:10]}"},
        },
        {"idempotency_key": uuid.uuid4().hex},
    )


async def refund(
    client: stripe.StripeClient, key: str | None = None, **params: Any
) -> stripe.Refund:
    return await client.v1.refunds.create_async(
        params,  # type: ignore[arg-type]
        {"idempotency_key": key or uuid.uuid4().hex},
    )


async def refund_error(client: stripe.StripeClient, **params: Any) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await refund(client, **params)
    assert caught.value.http_status == 400
    return caught.value


async def events_of(client: stripe.StripeClient, event_type: str) -> list[stripe.Event]:
    page = await client.v1.events.list_async({"type": event_type, "limit": 100})
    return list(page.data)


async def test_full_refund_emits_the_charge_signed(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    intent = await create(client)
    payment_id = intent.metadata["payment_id"]
    made = await refund(
        client,
        "rk-full",
        payment_intent=intent.id,
        reason="requested_by_customer",
        metadata={"ticket": "T-1"},
    )

    assert made.id.startswith("re_") and made.object == "refund"
    assert (made.amount, made.status, made.currency) == (1250, "succeeded", "usd")
    assert (made.charge, made.payment_intent) == (intent.latest_charge, intent.id)
    assert made.metadata is not None and made.metadata["ticket"] == "T-1"
    assert made.reason == "requested_by_customer"
    assert isinstance(made.created, int)
    row = await sim.ledger_row(payment_id)
    assert (row["amount_refunded"], row["disputed"], row["charges"]) == (1250, False, 1)

    [listed] = await events_of(client, "charge.refunded")
    event = await receiver.event(listed.id)
    charge = event.data.object
    assert charge["id"] == intent.latest_charge and charge["object"] == "charge"
    assert charge["payment_intent"] == intent.id
    assert (charge["amount"], charge["amount_refunded"], charge["refunded"]) == (1250, 1250, True)
    assert (charge["disputed"], charge["currency"], charge["status"]) == (False, "usd", "succeeded")
    assert charge["metadata"].to_dict() == {"payment_id": payment_id}
    assert event.request is not None and event.request.idempotency_key == "rk-full"

    error = await refund_error(client, payment_intent=intent.id)
    assert error.code == "charge_already_refunded"


async def test_partial_refunds_add_up_and_never_exceed_the_charge(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    intent = await create(client)
    payment_id = intent.metadata["payment_id"]
    first = await refund(client, charge=intent.latest_charge, amount=500)
    assert (first.amount, first.payment_intent) == (500, intent.id)

    error = await refund_error(client, payment_intent=intent.id, amount=1000)
    # As on Stripe: no code, only the param and the message.
    assert (error.code, error.param) == (None, "amount")
    assert "greater than unrefunded amount on charge (750)" in error.user_message
    assert (await sim.ledger_row(payment_id))["amount_refunded"] == 500

    rest = await refund(client, payment_intent=intent.id)
    assert rest.amount == 750
    assert (await sim.ledger_row(payment_id))["amount_refunded"] == 1250
    events = await events_of(client, "charge.refunded")
    charges = [(await receiver.event(e.id)).data.object for e in events]
    assert [(c["amount_refunded"], c["refunded"]) for c in charges] == [(1250, True), (500, False)]
    assert {c["metadata"]["payment_id"] for c in charges} == {payment_id}


async def test_refunds_refused_without_a_succeeded_charge(
    client: stripe.StripeClient, sim: Sim
) -> None:
    processing = await create(client, "pm_card_processing")
    with pytest.raises(stripe.CardError) as declined:
        await create(client, "pm_card_chargeDeclined")
    assert declined.value.error is not None and declined.value.error.payment_intent is not None
    succeeded = await create(client)

    for intent_id in (processing.id, declined.value.error.payment_intent.id):
        error = await refund_error(client, payment_intent=intent_id)
        assert (error.code, error.param) == ("payment_intent_unexpected_state", "payment_intent")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"payment_intent": "pi_missing"}, "resource_missing", "payment_intent"),
        ({"charge": "ch_missing"}, "resource_missing", "charge"),
        ({"amount": 100}, "parameter_missing", "payment_intent"),
        ({"charge": succeeded.latest_charge, "payment_intent": processing.id}, "", "charge"),
        ({"payment_intent": succeeded.id, "amount": 0}, "parameter_invalid_integer", "amount"),
        ({"payment_intent": succeeded.id, "reason": "bored"}, "", "reason"),
    ]
    for params, code, param in cases:
        error = await refund_error(client, **params)
        assert error.param == param, params
        assert not code or error.code == code, params
    # The raw request path of the SDK (as the payment service's adapter uses) too.
    with pytest.raises(stripe.InvalidRequestError):
        await client.raw_request_async("post", "/v1/refunds", payment_intent=processing.id)
    assert await events_of(client, "charge.*") == []
    assert (await sim.ledger_row(succeeded.metadata["payment_id"]))["amount_refunded"] == 0


async def test_a_replayed_refund_refunds_once(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await create(client)
    await sim.ok("/_sim/faults", {"latency_ms": 50})
    refunds = await asyncio.gather(
        *(refund(client, "rk-replay", payment_intent=intent.id, amount=300) for _ in range(5))
    )
    again = await refund(client, "rk-replay", payment_intent=intent.id, amount=300)

    assert {r.id for r in [*refunds, again]} == {refunds[0].id}
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert (await sim.ledger_row(intent.metadata["payment_id"]))["amount_refunded"] == 300
    assert len(await events_of(client, "charge.refunded")) == 1
    with pytest.raises(stripe.IdempotencyError):
        await refund(client, "rk-replay", payment_intent=intent.id, amount=400)
    # The payment service's adapter calls through raw_request_async: same key, same refund.
    raw = await client.raw_request_async(
        "post", "/v1/refunds", payment_intent=intent.id, amount=300, idempotency_key="rk-replay"
    )
    assert json.loads(raw.body)["id"] == refunds[0].id


async def test_control_refund_then_dispute(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    intent = await create(client)
    payment_id = intent.metadata["payment_id"]
    base = f"/_sim/payment_intents/{intent.id}"

    made = await sim.ok(f"{base}/refund", {"amount": 200})
    assert (made["object"], made["amount"], made["charge"]) == ("refund", 200, intent.latest_charge)
    [refunded] = await events_of(client, "charge.refunded")
    charge = (await receiver.event(refunded.id)).data.object
    assert (charge["amount_refunded"], charge["refunded"]) == (200, False)
    assert charge["metadata"]["payment_id"] == payment_id

    dispute = await sim.ok(f"{base}/dispute")
    assert dispute["id"].startswith("dp_")
    assert {k: dispute[k] for k in ("object", "amount", "status", "reason", "currency")} == {
        "object": "dispute",
        "amount": 1050,
        "status": "needs_response",
        "reason": "fraudulent",
        "currency": "usd",
    }
    assert (dispute["charge"], dispute["payment_intent"]) == (intent.latest_charge, intent.id)
    assert dispute["metadata"]["payment_id"] == payment_id
    [disputed] = await events_of(client, "charge.dispute.created")
    delivered = await receiver.event(disputed.id)
    assert delivered.data.object.to_dict() == dispute

    row = await sim.ledger_row(payment_id)
    assert (row["amount_refunded"], row["disputed"]) == (200, True)
    fetched = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(fetched.latest_charge, stripe.Charge)
    assert fetched.latest_charge.disputed is True
    assert await sim.refused(f"{base}/refund") == (409, "disputed")
    assert (await refund_error(client, payment_intent=intent.id)).code == "charge_disputed"
    assert await sim.refused(f"{base}/dispute") == (409, "already_disputed")


async def test_control_moves_refuse_with_stable_reasons(
    client: stripe.StripeClient, sim: Sim
) -> None:
    for move in ("refund", "dispute"):
        assert await sim.refused(f"/_sim/payment_intents/pi_nope/{move}") == (404, "not_found")
    processing = await create(client, "pm_card_processing")
    for move in ("refund", "dispute"):
        path = f"/_sim/payment_intents/{processing.id}/{move}"
        assert await sim.refused(path) == (409, "not_succeeded")

    base = f"/_sim/payment_intents/{(await create(client)).id}"
    for body, expected in [
        ({"amount": 0}, (400, "invalid_amount")),
        ({"amount": "5"}, (400, "invalid_amount")),
        ({"amount": True}, (400, "invalid_amount")),
        ({"amount": 1251}, (400, "amount_too_large")),
        ([1], (400, "invalid_body")),
    ]:
        assert await sim.refused(f"{base}/refund", body) == expected, body
    assert await sim.refused(f"{base}/dispute", {"reason": "bored"}) == (400, "invalid_reason")
    assert (await sim.ok(f"{base}/refund"))["amount"] == 1250
    assert await sim.refused(f"{base}/refund") == (409, "already_refunded")
    assert await sim.refused(f"{base}/dispute") == (409, "already_refunded")


async def test_expand_latest_charge(client: stripe.StripeClient) -> None:
    intent = await create(client)
    processing = await create(client, "pm_card_processing")
    unconfirmed = await create(client, confirm=False)
    made = await refund(client, payment_intent=intent.id, amount=300)

    plain = await client.v1.payment_intents.retrieve_async(intent.id)
    assert plain.latest_charge == intent.latest_charge
    expanded = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    charge = expanded.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert (charge.id, charge.payment_intent, charge.status) == (
        intent.latest_charge,
        intent.id,
        "succeeded",
    )
    assert (charge.amount_refunded, charge.refunded, charge.disputed) == (300, False, False)
    assert (await client.v1.charges.retrieve_async(charge.id)).to_dict() == charge.to_dict()
    assert (await client.v1.refunds.retrieve_async(made.id)).to_dict() == made.to_dict()
    pending = await client.v1.payment_intents.retrieve_async(
        processing.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(pending.latest_charge, stripe.Charge)
    assert pending.latest_charge.status == "pending"

    found = await client.v1.payment_intents.search_async(
        {
            "query": f"metadata['payment_id']:'{intent.metadata['payment_id']}'",
            "expand": ["data.latest_charge"],
        }
    )
    [hit] = found.data
    assert isinstance(hit.latest_charge, stripe.Charge)
    assert hit.latest_charge.amount_refunded == 300
    listed = await client.v1.payment_intents.list_async({"expand": ["data.latest_charge"]})
    charges = {i.id: i.latest_charge for i in listed.data}
    assert charges[unconfirmed.id] is None
    assert isinstance(charges[processing.id], stripe.Charge)
    assert isinstance(charges[intent.id], stripe.Charge)

    for call in (
        client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["data.latest_charge"]}),
        client.v1.payment_intents.list_async({"expand": ["latest_charge"]}),
        client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["customer"]}),
    ):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await call
        assert (caught.value.http_status, caught.value.param) == (400, "expand")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.charges.retrieve_async("ch_missing")
    assert missing.value.http_status == 404


async def test_list_pages_through_a_creation_window(client: stripe.StripeClient, sim: Sim) -> None:
    since = int(time.time())
    ids = [(await create(client)).id for _ in range(2)]
    for amount in range(1, 6):
        ids.append(
            (await sim.ok("/_sim/unrecorded_charges", {"amount": amount, "currency": "usd"}))["id"]
        )
    newest_first = ids[::-1]

    page = await client.v1.payment_intents.list_async({"created": {"gte": since}, "limit": 3})
    assert (str(page["object"]), page.url, page.has_more) == ("list", "/v1/payment_intents", True)
    assert [i.id for i in page.data] == newest_first[:3]
    assert [i.id async for i in page.auto_paging_iter()] == newest_first

    expanded = await client.v1.payment_intents.list_async(
        {"limit": 2, "expand": ["data.latest_charge"]}
    )
    charged = [i async for i in expanded.auto_paging_iter()]
    assert [i.id for i in charged] == newest_first
    assert all(isinstance(i.latest_charge, stripe.Charge) for i in charged)

    newer = await client.v1.payment_intents.list_async({"ending_before": ids[2], "limit": 2})
    assert ([i.id for i in newer.data], newer.has_more) == ([ids[4], ids[3]], True)
    later = await client.v1.payment_intents.list_async({"created": {"gt": since + 3600}})
    assert (later.data, later.has_more) == ([], False)
    earlier = await client.v1.payment_intents.list_async({"created": {"lt": since}})
    assert earlier.data == []

    for params, param in [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"starting_after": "pi_missing"}, "starting_after"),
        ({"starting_after": ids[0], "ending_before": ids[1]}, "ending_before"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await client.v1.payment_intents.list_async(params)  # type: ignore[arg-type]
        assert (caught.value.http_status, caught.value.param) == (400, param)


async def test_unrecorded_charge_is_announced(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    made = await sim.ok("/_sim/unrecorded_charges", {"amount": 4200, "currency": "eur"})

    [listed] = await events_of(client, "payment_intent.succeeded")
    event = await receiver.event(listed.id)
    intent = event.data.object
    assert (intent["id"], intent["status"], intent["amount"]) == (made["id"], "succeeded", 4200)
    assert intent["metadata"].to_dict() == {}
    _, rows = await sim.control("GET", "/_sim/events")
    assert [(r["object_id"], r["payment_id"]) for r in rows["events"]] == [(made["id"], None)]


async def test_events_filter_by_charge_types(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await create(client)
    payment_id = intent.metadata["payment_id"]
    await refund(client, payment_intent=intent.id, amount=100)
    dispute = await sim.ok(f"/_sim/payment_intents/{intent.id}/dispute")

    charge_events = await events_of(client, "charge.*")
    assert [e.type for e in charge_events] == ["charge.dispute.created", "charge.refunded"]
    assert [e.data.object["id"] for e in charge_events] == [dispute["id"], intent.latest_charge]
    assert [e.type for e in await events_of(client, "charge.refunded")] == ["charge.refunded"]
    assert [e.type for e in await events_of(client, "payment_intent.*")] == [
        "payment_intent.succeeded"
    ]
    both = await client.v1.events.list_async(
        {"types": ["charge.dispute.created", "payment_intent.succeeded"]}
    )
    assert [e.type for e in both.data] == ["charge.dispute.created", "payment_intent.succeeded"]
    _, rows = await sim.control("GET", f"/_sim/events?payment_id={payment_id}")
    assert [r["object_id"] for r in rows["events"]] == [
        intent.id,
        intent.latest_charge,
        dispute["id"],
    ]
