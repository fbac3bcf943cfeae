"""Caller-initiated refunds as the payment service makes them (SPEC §5): Stripe's
shapes through the official SDK, idempotency, listing by payment intent, pending
refunds settled or failed through the control API, pm_card_refundFail, the
refund.* events (listed and delivered signed), the faults, and the ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import stripe
from sim_testkit import Receiver, Sim, running_sim, sdk_client

from provider_sim import SimSettings

API_KEY = "sk_test_refund_flow"
SECRET = "whsec_test_refund_flow"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver(SECRET).start()
    yield started
    await started.stop()


@pytest.fixture(scope="module")
async def sim(receiver: Receiver) -> AsyncIterator[Sim]:
    settings = SimSettings(port=0, webhook_url=receiver.url, webhook_secret=SECRET, seed=5)
    async with running_sim(settings) as url, aiohttp.ClientSession() as http:
        yield Sim(url, http)


@pytest.fixture(scope="module")
async def client(sim: Sim) -> AsyncIterator[stripe.StripeClient]:
    async with sdk_client(sim.url, API_KEY) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
async def _reset(sim: Sim) -> None:
    await sim.ok("/_sim/reset")  # keeps the webhook endpoint


async def pay(
    client: stripe.StripeClient, payment_method: str = "pm_card_visa", amount: int = 1000
) -> stripe.PaymentIntent:
    return await client.v1.payment_intents.create_async(
        {
            "amount": amount,
            "currency": "eur",
            "payment_method": payment_method,
            "confirm": True,
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


async def refused(client: stripe.StripeClient, **params: Any) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await refund(client, **params)
    assert caught.value.http_status == 400
    assert caught.value.error is not None and caught.value.error.type == "invalid_request_error"
    return caught.value


async def event_types(client: stripe.StripeClient, prefix: str = "") -> list[str]:
    """Types of the recorded events, oldest first."""
    page = await client.v1.events.list_async({"limit": 100})
    return [e.type for e in reversed(page.data) if e.type.startswith(prefix)]


async def events_of(client: stripe.StripeClient, event_type: str) -> list[stripe.Event]:
    page = await client.v1.events.list_async({"type": event_type, "limit": 100})
    return list(page.data)


async def refunds_row(sim: Sim, intent: stripe.PaymentIntent) -> tuple[int, list[Any]]:
    row = await sim.ledger_row(intent.metadata["payment_id"])
    return row["amount_refunded"], row["refunds"]


async def test_a_refund_in_stripes_shape_with_its_events(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    intent = await pay(client)
    made = await refund(
        client,
        "ref_1",
        payment_intent=intent.id,
        amount=300,
        reason="requested_by_customer",
        metadata={"refund_id": "ref_1"},
    )

    assert made.id.startswith("re_") and made.object == "refund"
    assert (made.amount, made.currency, made.status) == (300, "eur", "succeeded")
    assert (made.payment_intent, made.charge) == (intent.id, intent.latest_charge)
    assert made.metadata is not None and made.metadata.to_dict() == {"refund_id": "ref_1"}
    assert made.reason == "requested_by_customer"
    assert abs(made.created - time.time()) < 60
    assert "failure_reason" not in made  # Stripe shows it once a refund failed
    assert (await client.v1.refunds.retrieve_async(made.id)).to_dict() == made.to_dict()

    assert await event_types(client) == [
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
    ]
    [created] = await events_of(client, "refund.created")
    delivered = await receiver.event(created.id)
    assert delivered.data.object.to_dict() == made.to_dict()
    assert delivered.request is not None and delivered.request.idempotency_key == "ref_1"
    [refunded] = await events_of(client, "charge.refunded")
    charge = (await receiver.event(refunded.id)).data.object
    assert (charge["id"], charge["amount_refunded"], charge["refunded"]) == (
        intent.latest_charge,
        300,
        False,
    )
    assert [r["id"] for r in charge["refunds"]["data"]] == [made.id]
    assert charge["metadata"]["payment_id"] == intent.metadata["payment_id"]

    amount_refunded, [row] = await refunds_row(sim, intent)
    assert amount_refunded == 300
    assert {k: row[k] for k in ("id", "amount", "status", "metadata", "idempotency_key")} == {
        "id": made.id,
        "amount": 300,
        "status": "succeeded",
        "metadata": {"refund_id": "ref_1"},
        "idempotency_key": "ref_1",
    }


async def test_the_rest_by_default_then_charge_already_refunded(
    client: stripe.StripeClient, sim: Sim
) -> None:
    intent = await pay(client)
    first = await refund(client, payment_intent=intent.id, amount=300)
    second = await refund(client, payment_intent=intent.id, amount=300)
    rest = await refund(client, payment_intent=intent.id)

    assert [first.amount, second.amount, rest.amount] == [300, 300, 400]
    error = await refused(client, payment_intent=intent.id, amount=1)
    assert (error.code, error.param) == ("charge_already_refunded", "payment_intent")
    amount_refunded, rows = await refunds_row(sim, intent)
    assert amount_refunded == 1000
    assert [r["id"] for r in rows] == [first.id, second.id, rest.id]  # oldest first
    expanded = await client.v1.payment_intents.retrieve_async(
        intent.id, {"expand": ["latest_charge"]}
    )
    assert isinstance(expanded.latest_charge, stripe.Charge)
    assert (expanded.latest_charge.amount_refunded, expanded.latest_charge.refunded) == (1000, True)


async def test_idempotency_key_replays_or_refuses_other_parameters(
    client: stripe.StripeClient, sim: Sim
) -> None:
    intent = await pay(client)
    params = {"payment_intent": intent.id, "amount": 250, "metadata": {"refund_id": "ref_k"}}
    made = await refund(client, "ref_k", **params)
    again = await refund(client, "ref_k", **params)

    assert again.to_dict() == made.to_dict()
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    for other in (
        {**params, "amount": 251},
        {**params, "metadata": {"refund_id": "ref_other"}},
        {**params, "reason": "duplicate"},
    ):
        with pytest.raises(stripe.IdempotencyError) as caught:
            await refund(client, "ref_k", **other)
        assert caught.value.http_status == 400
        assert caught.value.error is not None and caught.value.error.type == "idempotency_error"
    amount_refunded, rows = await refunds_row(sim, intent)
    assert (amount_refunded, [r["id"] for r in rows]) == (250, [made.id])
    assert len(await events_of(client, "refund.created")) == 1


async def test_refusals_make_no_refund(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await pay(client)
    processing = await pay(client, "pm_card_processing")
    disputed = await pay(client)
    await sim.ok(f"/_sim/payment_intents/{disputed.id}/dispute")
    await refund(client, payment_intent=intent.id, amount=600)

    too_large = await refused(client, payment_intent=intent.id, amount=401)
    assert (too_large.code, too_large.param) == (None, "amount")
    assert "(401) is greater than unrefunded amount on charge (400)" in too_large.user_message
    not_succeeded = await refused(client, payment_intent=processing.id)
    assert not_succeeded.code == "payment_intent_unexpected_state"
    charged_back = await refused(client, payment_intent=disputed.id, amount=1)
    assert (charged_back.code, charged_back.param) == ("charge_disputed", "payment_intent")
    for reason in ("bored", "expired_uncaptured_charge"):
        bad_reason = await refused(client, payment_intent=intent.id, amount=1, reason=reason)
        assert bad_reason.param == "reason"
    missing = await refused(client, payment_intent="pi_missing", amount=1)
    assert (missing.code, missing.param) == ("resource_missing", "payment_intent")

    assert (await refunds_row(sim, intent))[0] == 600
    assert (await refunds_row(sim, processing))[1] == []
    assert (await refunds_row(sim, disputed))[1] == []
    assert len(await events_of(client, "refund.created")) == 1


async def test_list_by_payment_intent_newest_first_in_pages(
    client: stripe.StripeClient, sim: Sim
) -> None:
    intent = await pay(client)
    other = await pay(client)
    ours = [(await refund(client, payment_intent=intent.id, amount=100)).id for _ in range(5)]
    theirs = await refund(client, payment_intent=other.id, amount=100)
    newest_first = ours[::-1]

    page = await client.v1.refunds.list_async({"payment_intent": intent.id, "limit": 2})
    assert (str(page["object"]), page.url, page.has_more) == ("list", "/v1/refunds", True)
    assert [r.id for r in page.data] == newest_first[:2]
    assert all(isinstance(r, stripe.Refund) for r in page.data)
    assert [r.id async for r in page.auto_paging_iter()] == newest_first
    after = await client.v1.refunds.list_async(
        {"payment_intent": intent.id, "starting_after": ours[1]}
    )
    assert ([r.id for r in after.data], after.has_more) == ([ours[0]], False)
    newer = await client.v1.refunds.list_async(
        {"payment_intent": intent.id, "ending_before": ours[1], "limit": 2}
    )
    assert ([r.id for r in newer.data], newer.has_more) == ([ours[3], ours[2]], True)
    by_charge = await client.v1.refunds.list_async({"charge": other.latest_charge})
    assert [r.id for r in by_charge.data] == [theirs.id]
    everything = await client.v1.refunds.list_async({"limit": 100})
    assert [r.id for r in everything.data] == [theirs.id, *newest_first]
    none_yet = await client.v1.refunds.list_async({"payment_intent": (await pay(client)).id})
    assert (none_yet.data, none_yet.has_more) == ([], False)

    for params, param in [
        ({"payment_intent": "pi_missing"}, "payment_intent"),
        ({"charge": "ch_missing"}, "charge"),
        ({"payment_intent": intent.id, "starting_after": theirs.id}, "starting_after"),
        ({"starting_after": "re_missing"}, "starting_after"),
        ({"limit": 0}, "limit"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await client.v1.refunds.list_async(params)  # type: ignore[arg-type]
        assert (caught.value.http_status, caught.value.param) == (400, param), params
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.refunds.retrieve_async("re_missing")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


async def test_pending_refund_settles_with_its_events(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    await sim.ok("/_sim/faults", {"refund_pending_rate": 1})
    assert (await sim.control("GET", "/_sim/faults"))[1]["refund_pending_rate"] == 1
    intent = await pay(client)
    made = await refund(client, payment_intent=intent.id, amount=400)

    assert made.status == "pending"
    # Pending refunds take from what is left, as on Stripe.
    assert (await refunds_row(sim, intent))[0] == 400
    assert (await refused(client, payment_intent=intent.id, amount=601)).param == "amount"
    assert await event_types(client, "refund.") == ["refund.created"]
    assert await events_of(client, "charge.refunded") == []

    settled = await sim.ok(f"/_sim/refunds/{made.id}/settle", {"outcome": "succeeded"})
    assert (settled["id"], settled["status"]) == (made.id, "succeeded")
    assert (await client.v1.refunds.retrieve_async(made.id)).status == "succeeded"
    assert await event_types(client) == [
        "payment_intent.succeeded",
        "refund.created",
        "refund.updated",
        "charge.refunded",
    ]
    [updated] = await events_of(client, "refund.updated")
    assert (await receiver.event(updated.id)).data.object["status"] == "succeeded"
    [charge_refunded] = await events_of(client, "charge.refunded")
    charge = (await receiver.event(charge_refunded.id)).data.object
    assert charge["amount_refunded"] == 400
    assert [r["status"] for r in charge["refunds"]["data"]] == ["succeeded"]
    _, [row] = await refunds_row(sim, intent)
    assert row["status"] == "succeeded"

    status, error = await sim.control("POST", f"/_sim/refunds/{made.id}/settle", {})
    assert (status, error["error"]["reason"]) == (409, "not_pending")
    status, error = await sim.control("POST", "/_sim/refunds/re_missing/settle", {})
    assert (status, error["error"]["reason"]) == (404, "not_found")


async def test_a_failed_refund_gives_its_amount_back(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    await sim.ok("/_sim/faults", {"refund_pending_rate": 1})
    intent = await pay(client)
    made = await refund(client, payment_intent=intent.id, metadata={"refund_id": "ref_f"})
    assert (made.amount, made.status) == (1000, "pending")

    failed = await sim.ok(
        f"/_sim/refunds/{made.id}/settle", {"outcome": "failed", "failure_reason": "declined"}
    )
    assert (failed["status"], failed["failure_reason"]) == ("failed", "declined")
    fetched = await client.v1.refunds.retrieve_async(made.id)
    assert (fetched.status, fetched.failure_reason) == ("failed", "declined")
    assert await event_types(client, "refund.") == [
        "refund.created",
        "refund.updated",
        "refund.failed",
    ]
    [failed_event] = await events_of(client, "refund.failed")
    delivered = (await receiver.event(failed_event.id)).data.object
    assert (delivered["id"], delivered["status"], delivered["failure_reason"]) == (
        made.id,
        "failed",
        "declined",
    )
    assert delivered["metadata"]["refund_id"] == "ref_f"
    assert await events_of(client, "charge.refunded") == []
    amount_refunded, [row] = await refunds_row(sim, intent)
    assert (amount_refunded, row["status"], row["failure_reason"]) == (0, "failed", "declined")

    await sim.ok("/_sim/faults", {"refund_pending_rate": 0})
    again = await refund(client, payment_intent=intent.id)
    assert (again.amount, again.status) == (1000, "succeeded")
    assert (await refunds_row(sim, intent))[0] == 1000


async def test_refund_fail_card_fails_when_settled(client: stripe.StripeClient, sim: Sim) -> None:
    # Left pending (refund_pending_rate), its refunds settle as the card does.
    await sim.ok("/_sim/faults", {"refund_pending_rate": 1, "refund_fail_after_ms": 0})
    intent = await pay(client, "pm_card_refundFail")
    assert intent.status == "succeeded"
    made = await refund(client, payment_intent=intent.id, amount=700)
    by_provider = await sim.ok(f"/_sim/payment_intents/{intent.id}/refund", {"amount": 300})
    assert (made.status, by_provider["status"]) == ("pending", "pending")

    for refund_id in (made.id, by_provider["id"]):
        failed = await sim.ok(f"/_sim/refunds/{refund_id}/settle")  # no body: as the card does
        assert (failed["status"], failed["failure_reason"]) == (
            "failed",
            "expired_or_canceled_card",
        )
    amount_refunded, rows = await refunds_row(sim, intent)
    assert (amount_refunded, [r["status"] for r in rows]) == (0, ["failed", "failed"])
    assert [r["idempotency_key"] is None for r in rows] == [False, True]
    assert await event_types(client, "refund.failed") == ["refund.failed", "refund.failed"]
    # An outcome given is obeyed: the card's refunds can be made to succeed too.
    last = await refund(client, payment_intent=intent.id)
    assert (await sim.ok(f"/_sim/refunds/{last.id}/settle", {"outcome": "succeeded"}))[
        "status"
    ] == "succeeded"


async def test_refund_fail_card_succeeds_at_first_then_fails_by_hand(
    client: stripe.StripeClient, sim: Sim
) -> None:
    """SPEC §5: as on Stripe, succeeded at first (charge.refunded), then
    failed (refund.updated, refund.failed), its amount refundable again."""
    await sim.ok("/_sim/faults", {"refund_fail_after_ms": 0})  # by hand only
    intent = await pay(client, "pm_card_refundFail")
    made = await refund(client, payment_intent=intent.id, amount=400)
    assert made.status == "succeeded"
    assert (await refunds_row(sim, intent))[0] == 400
    assert await event_types(client, "charge.refunded") == ["charge.refunded"]
    failed = await sim.ok(f"/_sim/refunds/{made.id}/fail", {})
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert (await refunds_row(sim, intent))[0] == 0
    assert await event_types(client, "refund.failed") == ["refund.failed"]
    # Once only; any succeeded refund can fail so, with a reason given.
    status, again = await sim.control("POST", f"/_sim/refunds/{made.id}/fail", {})
    assert (status, again["error"]["reason"]) == (409, "not_succeeded")
    visa = await pay(client)
    fine = await refund(client, payment_intent=visa.id, amount=100)
    closed = await sim.ok(
        f"/_sim/refunds/{fine.id}/fail", {"failure_reason": "lost_or_stolen_card"}
    )
    assert closed["failure_reason"] == "lost_or_stolen_card"
    status, bad = await sim.control(
        "POST", f"/_sim/refunds/{fine.id}/fail", {"failure_reason": "bored"}
    )
    assert (status, bad["error"]["reason"]) == (400, "invalid_failure_reason")


async def test_settle_refund_validates_its_body(client: stripe.StripeClient, sim: Sim) -> None:
    await sim.ok("/_sim/faults", {"refund_pending_rate": 1})
    made = await refund(client, payment_intent=(await pay(client)).id)
    path = f"/_sim/refunds/{made.id}/settle"
    for body, reason in [
        ({"outcome": "maybe"}, "invalid_outcome"),
        ({"outcome": 1}, "invalid_outcome"),
        ({"outcome": "failed", "failure_reason": "bored"}, "invalid_failure_reason"),
        ({"outcome": "succeeded", "failure_reason": "declined"}, "invalid_failure_reason"),
        ([1], "invalid_body"),
    ]:
        assert await sim.refused(path, body) == (400, reason), body
    assert (await client.v1.refunds.retrieve_async(made.id)).status == "pending"
    assert (await sim.ok(path))["status"] == "succeeded"  # a card whose refunds go through


async def test_latency_and_errors_apply_to_refunds(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await pay(client)
    await sim.ok("/_sim/faults", {"error_rate": 1})
    with pytest.raises(stripe.APIError) as caught:
        await refund(client, "ref_e", payment_intent=intent.id, amount=100)
    assert caught.value.http_status == 500
    assert caught.value.headers is not None
    assert caught.value.headers["Stripe-Should-Retry"] == "true"
    assert (await refunds_row(sim, intent))[1] == []  # failed before the refund was made

    await sim.ok("/_sim/faults", {"error_rate": 0, "latency_ms": 200})
    started = time.monotonic()
    made = await refund(client, "ref_e", payment_intent=intent.id, amount=100)  # the retry runs
    assert time.monotonic() - started >= 0.2
    assert made.status == "succeeded"
    amount_refunded, [row] = await refunds_row(sim, intent)
    assert (amount_refunded, row["idempotency_key"]) == (100, "ref_e")


async def test_timeout_after_the_refund_was_made(client: stripe.StripeClient, sim: Sim) -> None:
    intent = await pay(client)
    await sim.ok(
        "/_sim/faults", {"timeout_after_charge_rate": 1, "timeout_after_charge_hold_ms": 2000}
    )
    form = {"payment_intent": intent.id, "amount": "300", "metadata[refund_id]": "ref_t"}
    headers = AUTH | {"Idempotency-Key": "ref_t"}
    with pytest.raises(asyncio.TimeoutError):
        async with sim.http.post(
            f"{sim.url}/v1/refunds",
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    # The refund was made: the ledger and the list by payment intent show it.
    amount_refunded, [row] = await refunds_row(sim, intent)
    assert (amount_refunded, row["status"], row["idempotency_key"]) == (300, "succeeded", "ref_t")
    listed = await client.v1.refunds.list_async({"payment_intent": intent.id})
    assert [r.metadata["refund_id"] for r in listed.data if r.metadata] == ["ref_t"]

    await sim.ok("/_sim/faults", {"timeout_after_charge_rate": 0})
    retried = await refund(
        client, "ref_t", payment_intent=intent.id, amount=300, metadata={"refund_id": "ref_t"}
    )
    assert retried.id == row["id"]
    assert retried.last_response is not None
    assert retried.last_response.headers["Idempotent-Replayed"] == "true"
    assert len((await refunds_row(sim, intent))[1]) == 1


async def test_refund_fail_card_fails_on_its_own_when_asked(
    client: stripe.StripeClient, sim: Sim, receiver: Receiver
) -> None:
    await sim.ok("/_sim/faults", {"refund_fail_after_ms": 150})
    intent = await pay(client, "pm_card_refundFail")
    visa = await pay(client)
    made = await refund(client, payment_intent=intent.id, amount=400)
    fine = await refund(client, payment_intent=visa.id, amount=100)
    assert (made.status, fine.status) == ("succeeded", "succeeded")  # at first, as on Stripe

    deadline = time.monotonic() + 5
    while (await client.v1.refunds.retrieve_async(made.id)).status == "succeeded":
        assert time.monotonic() < deadline, "the refund did not fail on its own"
        await asyncio.sleep(0.05)
    fetched = await client.v1.refunds.retrieve_async(made.id)
    assert (fetched.status, fetched.failure_reason) == ("failed", "expired_or_canceled_card")
    [failed] = await events_of(client, "refund.failed")
    assert (await receiver.event(failed.id)).data.object["id"] == made.id
    await asyncio.sleep(0.3)  # the other card's refund is left as it was
    assert (await client.v1.refunds.retrieve_async(fine.id)).status == "succeeded"
    assert len(await events_of(client, "refund.failed")) == 1
    assert (await refunds_row(sim, intent))[0] == 0


async def test_a_reset_forgets_refunds_due_to_fail(client: stripe.StripeClient, sim: Sim) -> None:
    await sim.ok("/_sim/faults", {"refund_fail_after_ms": 100})
    made = await refund(client, payment_intent=(await pay(client, "pm_card_refundFail")).id)
    assert made.status == "succeeded"
    await sim.ok("/_sim/reset")
    await asyncio.sleep(0.25)
    assert (await client.v1.events.list_async()).data == []


async def test_concurrent_refunds_never_exceed_the_charge(
    client: stripe.StripeClient, sim: Sim
) -> None:
    intent = await pay(client)
    await sim.ok("/_sim/faults", {"latency_ms": 30})

    async def attempt(n: int) -> str:
        try:
            made = await refund(client, f"ref_c{n}", payment_intent=intent.id, amount=100)
        except stripe.InvalidRequestError as exc:
            return str(exc.code)
        return made.status

    outcomes = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sorted(outcomes) == ["charge_already_refunded"] * 10 + ["succeeded"] * 10
    amount_refunded, rows = await refunds_row(sim, intent)
    assert (amount_refunded, len(rows)) == (1000, 10)
    assert len({r["idempotency_key"] for r in rows}) == 10
