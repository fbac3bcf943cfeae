"""provider-sim over real HTTP: the official stripe SDK for /v1, aiohttp for /_sim."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web

from provider_sim import SIMULATOR, SimSettings, init_app

API_KEY = "sk_test_provider_sim"


class Sim:
    def __init__(self, url: str, app: web.Application, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.app = app
        self.http = http

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body) as response:
            return response.status, await response.json()

    async def set_faults(self, **faults: Any) -> None:
        status, body = await self.control("POST", "/_sim/faults", faults)
        assert status == 200, body

    async def ledger(self, **filters: str) -> list[dict[str, Any]]:
        async with self.http.get(self.url + "/_sim/ledger", params=filters) as response:
            assert response.status == 200
            rows: list[dict[str, Any]] = (await response.json())["payment_intents"]
            return rows

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.app[SIMULATOR].ledger.events]


async def start(settings: SimSettings) -> tuple[web.AppRunner, str, web.Application]:
    app = init_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", app


def stripe_client(url: str, http_client: stripe.AIOHTTPClient) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": url},
        http_client=http_client,
        max_network_retries=0,
    )


@pytest.fixture(scope="session")
async def sim() -> AsyncIterator[Sim]:
    runner, url, app = await start(SimSettings(host="127.0.0.1", port=0))
    async with aiohttp.ClientSession() as http:
        yield Sim(url, app, http)
    await runner.cleanup()


@pytest.fixture(scope="session")
async def client(sim: Sim) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.AIOHTTPClient()
    yield stripe_client(sim.url, http_client)
    await http_client.close_async()


@pytest.fixture(autouse=True)
async def _reset(sim: Sim) -> None:
    status, _ = await sim.control("POST", "/_sim/reset")
    assert status == 200


def params(payment_method: str = "pm_card_visa", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "amount": 1250,
        "currency": "USD",
        "payment_method": payment_method,
        "confirm": True,
        "metadata": {"payment_id": f"pay_{uuid.uuid4().hex[:8]}"},
        "payment_method_types": ["card"],
    }
    return base | extra


async def create(
    client: stripe.StripeClient, body: dict[str, Any], key: str | None = None
) -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        body,  # type: ignore[arg-type]
        {"idempotency_key": key or uuid.uuid4().hex},
    )


async def test_visa_succeeds_with_one_charge(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await create(client, params(description="order 7"), key="k-visa")

    assert intent.id.startswith("pi_")
    assert intent.status == "succeeded"
    assert intent.currency == "usd"
    assert intent.amount == intent.amount_received == 1250
    assert intent.latest_charge is not None and str(intent.latest_charge).startswith("ch_")
    assert intent.capture_method == "automatic"
    assert intent.livemode is False
    assert intent.description == "order 7"
    [row] = await sim.ledger(idempotency_key="k-visa")
    assert row["id"] == intent.id
    assert row["charges"] == 1
    assert row["idempotency_key"] == "k-visa"
    assert row["amount_refunded"] == 0
    assert sim.event_types() == ["payment_intent.succeeded"]
    event = sim.app[SIMULATOR].ledger.events[0]
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["data"]["object"]["id"] == intent.id


@pytest.mark.parametrize(
    ("payment_method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_decline_is_a_card_error_without_charge(
    client: stripe.StripeClient, sim: Sim, payment_method: str, decline_code: str
) -> None:
    body = params(payment_method)
    with pytest.raises(stripe.CardError) as caught:
        await create(client, body, key="k-decline")

    error = caught.value
    assert error.http_status == 402
    assert error.code == "card_declined"
    assert error.error is not None
    assert error.error.decline_code == decline_code
    intent = error.error.payment_intent
    assert intent is not None
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.decline_code == decline_code
    [row] = await sim.ledger(payment_id=body["metadata"]["payment_id"])
    assert row["id"] == intent.id
    assert row["charges"] == 0
    assert sim.event_types() == ["payment_intent.payment_failed"]


@pytest.mark.parametrize(
    ("outcome", "status", "event"),
    [
        ("succeeded", "succeeded", "payment_intent.succeeded"),
        ("failed", "requires_payment_method", "payment_intent.payment_failed"),
    ],
)
async def test_processing_settles_through_control_api(
    client: stripe.StripeClient, sim: Sim, outcome: str, status: str, event: str
) -> None:
    intent = await create(client, params("pm_card_processing"), key="k-processing")
    assert intent.status == "processing"
    [row] = await sim.ledger(idempotency_key="k-processing")
    assert row["charges"] == 1

    code, settled = await sim.control(
        "POST", f"/_sim/payment_intents/{intent.id}/settle", {"outcome": outcome}
    )
    assert code == 200
    assert settled["status"] == status

    fetched = await client.v1.payment_intents.retrieve_async(intent.id)
    assert fetched.status == status
    if outcome == "failed":
        assert fetched.last_payment_error is not None
        assert fetched.last_payment_error.code == "card_declined"
    assert sim.event_types() == ["payment_intent.processing", event]
    code, body = await sim.control(
        "POST", f"/_sim/payment_intents/{intent.id}/settle", {"outcome": outcome}
    )
    assert code == 409
    assert body["error"]["reason"] == "not_processing"


async def test_settle_errors(sim: Sim) -> None:
    code, body = await sim.control(
        "POST", "/_sim/payment_intents/pi_nope/settle", {"outcome": "failed"}
    )
    assert code == 404
    assert body["error"]["reason"] == "not_found"
    code, body = await sim.control(
        "POST", "/_sim/payment_intents/pi_nope/settle", {"outcome": "maybe"}
    )
    assert code == 400
    assert body["error"]["reason"] == "invalid_outcome"
    code, body = await sim.control("POST", "/_sim/payment_intents/pi_nope/settle", [1])
    assert code == 400


async def test_idempotent_replay_returns_the_same_intent(
    client: stripe.StripeClient, sim: Sim
) -> None:
    body = params()
    first = await create(client, body, key="k-replay")
    again = await create(client, body, key="k-replay")

    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    assert first.last_response is not None and again.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    [row] = await sim.ledger(idempotency_key="k-replay")
    assert row["charges"] == 1
    assert sim.event_types() == ["payment_intent.succeeded"]


async def test_declined_key_replays_the_decline(client: stripe.StripeClient, sim: Sim) -> None:
    body = params("pm_card_chargeDeclined")
    with pytest.raises(stripe.CardError) as first:
        await create(client, body, key="k-declined")
    with pytest.raises(stripe.CardError) as again:
        await create(client, body, key="k-declined")
    assert first.value.json_body == again.value.json_body
    assert again.value.headers is not None
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert len(await sim.ledger(idempotency_key="k-declined")) == 1


async def test_key_reused_with_other_parameters(client: stripe.StripeClient, sim: Sim) -> None:
    await create(client, params(amount=1000), key="k-reuse")
    with pytest.raises(stripe.IdempotencyError) as caught:
        await create(client, params(amount=2000), key="k-reuse")
    assert caught.value.http_status == 400
    assert "same parameters" in str(caught.value)
    [row] = await sim.ledger(idempotency_key="k-reuse")
    assert row["amount"] == 1000


async def test_keys_are_scoped_per_api_key(sim: Sim) -> None:
    headers = {"Idempotency-Key": "k-scope"}
    form = {"amount": "500", "currency": "eur", "payment_method": "pm_card_visa", "confirm": "true"}
    ids = []
    for key in ("sk_test_one", "sk_test_two"):
        async with sim.http.post(
            sim.url + "/v1/payment_intents",
            data=form,
            headers=headers | {"Authorization": f"Bearer {key}"},
        ) as response:
            assert response.status == 200
            ids.append((await response.json())["id"])
    assert ids[0] != ids[1]


async def test_concurrent_creates_with_one_key_charge_once(
    client: stripe.StripeClient, sim: Sim
) -> None:
    await sim.set_faults(latency_ms=100)
    body = params()
    intents = await asyncio.gather(*(create(client, body, key="k-race") for _ in range(20)))

    assert {intent.id for intent in intents} == {intents[0].id}
    replayed = [
        intent.last_response is not None
        and intent.last_response.headers.get("Idempotent-Replayed") == "true"
        for intent in intents
    ]
    assert replayed.count(False) == 1
    [row] = await sim.ledger(idempotency_key="k-race")
    assert row["charges"] == 1


async def test_retrieve_and_not_found(client: stripe.StripeClient) -> None:
    intent = await create(client, params())
    fetched = await client.v1.payment_intents.retrieve_async(intent.id)
    assert fetched.to_dict() == intent.to_dict()

    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.payment_intents.retrieve_async("pi_missing")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


async def test_search_by_payment_id_status_and_pages(client: stripe.StripeClient) -> None:
    target = params("pm_card_chargeDeclined", metadata={"payment_id": "pay_search"})
    with pytest.raises(stripe.CardError):
        await create(client, target)
    retry = await create(client, params(metadata={"payment_id": "pay_search"}))
    await create(client, params(metadata={"payment_id": "pay_other"}))

    found = await client.v1.payment_intents.search_async(
        {"query": "metadata['payment_id']:'pay_search'"}
    )
    assert found.object == "search_result"
    assert [intent.metadata["payment_id"] for intent in found.data] == ["pay_search"] * 2
    assert found.data[0].id == retry.id  # newest first
    assert found.has_more is False

    both = await client.v1.payment_intents.search_async(
        {"query": "metadata['payment_id']:'pay_search' AND status:'succeeded'"}
    )
    assert [intent.id for intent in both.data] == [retry.id]

    page = await client.v1.payment_intents.search_async(
        {"query": "status:'succeeded' AND currency:'usd'", "limit": 1}
    )
    assert len(page.data) == 1 and page.has_more and page.next_page
    rest = await client.v1.payment_intents.search_async(
        {"query": "status:'succeeded' AND currency:'usd'", "limit": 1, "page": page.next_page}
    )
    assert len(rest.data) == 1 and not rest.has_more
    assert rest.data[0].id != page.data[0].id


@pytest.mark.parametrize(
    "query", ["metadata['payment_id']='x'", "status:succeeded", "colour:'red'", "", "a:'b' AND"]
)
async def test_malformed_search_is_400(client: stripe.StripeClient, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.payment_intents.search_async({"query": query})
    assert caught.value.http_status == 400
    assert caught.value.param == "query"


async def test_validation_errors_name_the_param(client: stripe.StripeClient, sim: Sim) -> None:
    cases = [
        (params(amount=0), "amount"),
        (params(amount="ten"), "amount"),
        ({"currency": "usd"}, "amount"),
        (params(currency="dollars"), "currency"),
        (params("pm_card_unknown"), "payment_method"),
        (params(confirm="yes"), "confirm"),
    ]
    for body, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await create(client, body)
        assert caught.value.http_status == 400
        assert caught.value.param == param
    assert await sim.ledger() == []


async def test_unconfirmed_intent_is_not_charged(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await create(client, params(confirm=False))
    assert intent.status == "requires_confirmation"
    assert intent.latest_charge is None
    [row] = await sim.ledger()
    assert row["charges"] == 0
    canceled = await client.v1.payment_intents.cancel_async(intent.id)
    assert canceled.status == "canceled"
    assert sim.event_types() == ["payment_intent.canceled"]


async def test_authentication(sim: Sim) -> None:
    async with sim.http.get(sim.url + "/v1/payment_intents/pi_x") as response:
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    http_client = stripe.AIOHTTPClient()
    wrong = stripe.StripeClient(
        "sk_live_nope", base_addresses={"api": sim.url}, http_client=http_client
    )
    with pytest.raises(stripe.AuthenticationError):
        await wrong.v1.payment_intents.retrieve_async("pi_x")
    await http_client.close_async()


async def test_configured_api_key_is_the_only_one_accepted() -> None:
    runner, url, _ = await start(SimSettings(port=0, api_key="sk_test_only"))
    try:
        async with aiohttp.ClientSession() as http:
            for key, status in [("sk_test_only", 404), ("sk_test_other", 401)]:
                async with http.get(
                    url + "/v1/payment_intents/pi_x", headers={"Authorization": f"Bearer {key}"}
                ) as response:
                    assert response.status == status
    finally:
        await runner.cleanup()


async def test_error_rate_fails_before_charging(client: stripe.StripeClient, sim: Sim) -> None:
    await sim.set_faults(error_rate=1)
    body = params()
    with pytest.raises(stripe.APIError) as caught:
        await create(client, body, key="k-error")
    assert caught.value.http_status == 500
    assert await sim.ledger() == []

    await sim.set_faults(error_rate=0)
    intent = await create(client, body, key="k-error")  # the failed try stored nothing
    assert intent.status == "succeeded"
    assert [row["charges"] for row in await sim.ledger()] == [1]


async def test_unavailable_routes_fail_those_routes_alone(
    client: stripe.StripeClient, sim: Sim
) -> None:
    intent = await create(client, params(), key="k-routes")
    await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 100})
    await sim.set_faults(unavailable_routes=["GET /v1/refunds"])
    _, faults = await sim.control("GET", "/_sim/faults")
    assert faults["unavailable_routes"] == ["GET /v1/refunds"]
    with pytest.raises(stripe.APIError) as caught:
        await client.v1.refunds.list_async({"payment_intent": intent.id})
    assert caught.value.http_status == 503
    # The intent itself, and a refund by its id, still answer.
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).amount_received > 0
    await sim.set_faults(unavailable_routes=[])
    listed = await client.v1.refunds.list_async({"payment_intent": intent.id})
    assert [r.amount for r in listed.data] == [100]


async def test_timeout_after_charge_then_replay(client: stripe.StripeClient, sim: Sim) -> None:
    await sim.set_faults(timeout_after_charge_rate=1, timeout_after_charge_hold_ms=1500)
    impatient_http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=0.3))
    impatient = stripe_client(sim.url, impatient_http)
    body = params()
    try:
        with pytest.raises(stripe.APIConnectionError):
            await create(impatient, body, key="k-timeout")
    finally:
        await impatient_http.close_async()
    [row] = await sim.ledger(idempotency_key="k-timeout")
    assert row["charges"] == 1

    await sim.set_faults(timeout_after_charge_rate=0)
    intent = await create(client, body, key="k-timeout")
    assert intent.id == row["id"]
    assert intent.status == "succeeded"
    assert intent.last_response is not None
    assert intent.last_response.headers["Idempotent-Replayed"] == "true"
    assert (await sim.ledger(idempotency_key="k-timeout"))[0]["charges"] == 1


async def test_faults_merge_and_validate(sim: Sim) -> None:
    status, faults = await sim.control("GET", "/_sim/faults")
    assert status == 200
    assert set(faults) == {
        "latency_ms",
        "error_rate",
        "timeout_after_charge_rate",
        "timeout_after_charge_hold_ms",
        "webhook_drop_rate",
        "webhook_duplicate_rate",
        "webhook_reorder",
        "webhook_delay_ms",
        "refund_pending_rate",
        "refund_fail_after_ms",
        "unavailable_routes",
    }
    await sim.set_faults(webhook_drop_rate=0.25, webhook_reorder=True)
    await sim.set_faults(webhook_delay_ms=40)
    _, faults = await sim.control("GET", "/_sim/faults")
    assert faults["webhook_drop_rate"] == 0.25
    assert faults["webhook_reorder"] is True
    assert faults["webhook_delay_ms"] == 40

    for bad, reason in [
        ({"latency": 5}, "unknown_fault"),
        ({"error_rate": 1.5}, "invalid_value"),
        ({"latency_ms": -1}, "invalid_value"),
        ({"latency_ms": "5"}, "invalid_value"),
        ({"webhook_reorder": 1}, "invalid_value"),
        ({"unavailable_routes": "GET /v1/refunds"}, "invalid_value"),
        ({"unavailable_routes": ["DELETE /v1/refunds"]}, "invalid_value"),
        ({"unavailable_routes": ["GET /_sim/ledger"]}, "invalid_value"),
        ({"unavailable_routes": ["GET /v1/x"] * 21}, "invalid_value"),
        ([1, 2], "invalid_body"),
    ]:
        status, body = await sim.control("POST", "/_sim/faults", bad)
        assert status == 400, bad
        assert body["error"]["reason"] == reason
    async with sim.http.post(sim.url + "/_sim/faults", data=b"{nope") as response:
        assert response.status == 400
        assert (await response.json())["error"]["reason"] == "invalid_json"
    _, unchanged = await sim.control("GET", "/_sim/faults")
    assert unchanged == faults


async def test_reset_clears_everything(client: stripe.StripeClient, sim: Sim) -> None:
    body = params()
    first = await create(client, body, key="k-reset")
    await sim.set_faults(latency_ms=5)

    await sim.control("POST", "/_sim/reset")

    assert await sim.ledger() == []
    assert sim.event_types() == []
    _, faults = await sim.control("GET", "/_sim/faults")
    assert faults["latency_ms"] == 0
    second = await create(client, body, key="k-reset")  # the key was forgotten too
    assert second.id != first.id


async def test_unrecorded_charge(sim: Sim, client: stripe.StripeClient) -> None:
    status, intent = await sim.control(
        "POST", "/_sim/unrecorded_charges", {"amount": 777, "currency": "EUR"}
    )
    assert status == 200
    assert intent["status"] == "succeeded"
    assert intent["currency"] == "eur"
    [row] = await sim.ledger()
    assert row == {
        "id": intent["id"],
        "status": "succeeded",
        "amount": 777,
        "currency": "eur",
        "amount_refunded": 0,
        "disputed": False,
        "metadata": {},
        "idempotency_key": None,
        "charges": 1,
        "refunds": [],
    }
    fetched = await client.v1.payment_intents.retrieve_async(intent["id"])
    assert fetched.status == "succeeded"
    status, body = await sim.control("POST", "/_sim/unrecorded_charges", {"amount": -1})
    assert status == 400
    assert body["error"]["reason"] == "invalid_amount"


async def test_unknown_routes_answer_json(sim: Sim) -> None:
    async with sim.http.get(
        sim.url + "/v1/charges", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    status, body = await sim.control("DELETE", "/_sim/ledger")
    assert status == 405
    assert "message" in body["error"]
