"""RefundPayment and ListRefunds with every process running, provider-sim
included (SPEC §3a, §4; issue 13): partial refunds, the rest, the refusals
that never reach the provider, and the provider timing out after it made
the refund."""

from __future__ import annotations

import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from tests.e2e.refund_testkit import (
    RF,
    RP,
    RS,
    RU,
    intent,
    paid,
    provider_refunds,
    refund,
    refunds,
    refused,
)
from tests.e2e.test_webhook_flow import get, history
from tests.support import SimControl, new_key

S, R = pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_REVERSED


async def test_partial_refunds_then_the_rest(channel: grpc.aio.Channel, sim: SimControl) -> None:
    p = await paid(channel)
    assert p.status == S

    first = await refund(channel, p.id, 300, reason="requested_by_customer")
    second = await refund(channel, p.id, 300)
    for r in (first, second):
        assert (r.status, r.amount, r.currency, r.payment_id) == (RS, 300, "USD", p.id)
        assert r.provider_refund_id.startswith("re_")
        assert r.id.startswith("rfd_")
        assert r.source == pb.PAYMENT_EVENT_SOURCE_API
    assert first.reason == "requested_by_customer"
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 600)

    rest = await refund(channel, p.id, 0)
    assert (rest.status, rest.amount) == (RS, 400)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (R, 1000)

    listed = await refunds(channel, p.id)
    assert [r.id for r in listed] == [first.id, second.id, rest.id]  # oldest first
    assert [r.status for r in listed] == [RS, RS, RS]

    # The provider agrees: what it refunded, each refund once, keyed by ours.
    row = await intent(sim, p.id)
    assert row["amount_refunded"] == 1000
    made = await provider_refunds(sim, p.id)
    by_ours = {m["metadata"]["refund_id"]: m for m in made}
    assert sorted(by_ours) == sorted(r.id for r in listed)
    for r in listed:
        theirs = by_ours[r.id]
        assert theirs["id"] == r.provider_refund_id
        assert theirs["idempotency_key"] == r.id
        assert theirs["metadata"]["payment_id"] == p.id
        assert (theirs["amount"], theirs["status"]) == (r.amount, "succeeded")

    # Every refund change is an entry of the payment's history.
    entries = [e for e in await history(channel, p.id) if e.refund_id]
    ours = [e for e in entries if e.source == pb.PAYMENT_EVENT_SOURCE_API]
    assert {e.refund_id for e in ours} == {r.id for r in listed}
    assert [
        (e.refund_status, e.from_status, e.to_status) for e in ours if e.refund_id == rest.id
    ] == [
        (pb.REFUND_STATUS_PENDING, S, S),
        (RS, S, R),
    ]


async def test_more_than_remains_is_refused_with_what_remains(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    await refund(channel, p.id, 700)
    err = await refused(channel, p.id, 301)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "REFUND_EXCEEDS_REMAINING"
    assert err.metadata["remaining"] == "300"
    assert len(await refunds(channel, p.id)) == 1
    assert (await intent(sim, p.id))["amount_refunded"] == 700
    assert len(await provider_refunds(sim, p.id)) == 1


async def test_payments_that_did_not_succeed_are_not_refundable_and_the_provider_hears_nothing(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    failed = await paid(channel, payment_method="pm_card_chargeDeclined")
    pending = await paid(channel, payment_method="pm_card_processing")
    # Charged, but the answer never comes and no webhook tells: UNKNOWN.
    await sim.faults(timeout_after_charge_rate=1.0, webhook_drop_rate=1.0)
    unknown = await paid(channel)
    await sim.clear_faults()
    assert (failed.status, pending.status, unknown.status) == (
        pb.PAYMENT_STATUS_FAILED,
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_UNKNOWN,
    )
    for p in (failed, pending, unknown):
        err = await refused(channel, p.id, 100)
        assert (err.code, err.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "PAYMENT_NOT_REFUNDABLE",
        )
        assert await refunds(channel, p.id) == []
        for row in await sim.ledger(payment_id=p.id):
            assert row["amount_refunded"] == 0
            assert not row.get("refunds")


async def test_another_clients_payment_is_not_found_and_never_refunded(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    err = await refused(channel, p.id, 100, who="merchant-2")
    assert err.code == grpc.StatusCode.NOT_FOUND
    missing = await refused(channel, "pay_" + "0" * 32, 100)
    assert missing.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as listing:
        await refunds(channel, p.id, who="merchant-2")
    assert listing.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await intent(sim, p.id))["amount_refunded"] == 0


async def test_a_repeated_key_answers_with_the_refund_and_never_reaches_the_provider(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    key = new_key()
    first = await refund(channel, p.id, 250, key=key)
    again = await refused(channel, p.id, 250, key=key)
    assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_REFUND")
    assert again.metadata == {"refund_id": first.id, "status": "REFUND_STATUS_SUCCEEDED"}
    other = await refused(channel, p.id, 100, key=key)
    assert (other.code, other.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert other.metadata["refund_id"] == first.id
    assert (await intent(sim, p.id))["amount_refunded"] == 250
    assert len(await provider_refunds(sim, p.id)) == 1


async def test_bad_input_is_invalid_argument_with_field_violations(
    channel: grpc.aio.Channel,
) -> None:
    p = await paid(channel)
    err = await refused(channel, p.id, -5, reason="because", key="")
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"amount", "reason", "idempotency_key"}
    bad_id = await refused(channel, "not-a-payment", 100)
    assert (bad_id.code, set(bad_id.violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        {"payment_id"},
    )


async def test_the_provider_times_out_after_making_the_refund_it_is_unknown(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    # The webhooks lost too: refund.created would otherwise tell payment-svc
    # the outcome before the timeout ends (issue 13: refunds from webhooks).
    await sim.faults(timeout_after_charge_rate=1.0, webhook_drop_rate=1.0)
    r = await refund(channel, p.id, 400)
    # The drop stays until the fixture clears it: the provider retries deliveries.
    await sim.faults(timeout_after_charge_rate=0)
    assert r.status == RU  # never FAILED: the provider may have made it
    assert r.provider_refund_id == ""
    [listed] = await refunds(channel, p.id)
    assert listed.status == RU
    # It still holds its amount: no second refund can take it meanwhile.
    err = await refused(channel, p.id, 601)
    assert (err.reason, err.metadata["remaining"]) == ("REFUND_EXCEEDS_REMAINING", "600")
    # The provider did make it, once.
    assert (await intent(sim, p.id))["amount_refunded"] == 400
    assert len(await provider_refunds(sim, p.id)) == 1


async def test_a_refund_the_provider_leaves_pending_stays_pending_and_holds_its_amount(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    await sim.faults(refund_pending_rate=1.0)
    r = await refund(channel, p.id, 600)
    await sim.clear_faults()
    assert r.status == RP
    assert r.provider_refund_id.startswith("re_")  # learned, for the reconciler
    assert (await get(channel, p.id)).amount_reversed == 0
    err = await refused(channel, p.id, 401)
    assert (err.reason, err.metadata["remaining"]) == ("REFUND_EXCEEDS_REMAINING", "400")
    [theirs] = await provider_refunds(sim, p.id)
    assert (theirs["id"], theirs["status"]) == (r.provider_refund_id, "pending")


async def test_a_provider_error_is_unknown_never_failed(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    await sim.faults(error_rate=1.0)
    r = await refund(channel, p.id, 100)
    await sim.clear_faults()
    assert (r.status, r.failure_code) == (RU, "")
    assert [x.status for x in await refunds(channel, p.id)] == [RU]


async def test_a_refusal_by_the_provider_is_failed_with_its_code_and_frees_the_amount(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    # Refunded whole at the provider directly, and we were not told (webhooks
    # lost): the provider refuses ours, nothing was refunded twice.
    p = await paid(channel)
    await sim.faults(webhook_drop_rate=1.0)
    await sim.post(f"/_sim/payment_intents/{p.provider_payment_id}/refund", {})
    r = await refund(channel, p.id, 100)
    await sim.clear_faults()
    assert r.status == RF
    assert r.failure_code == "charge_already_refunded"
    assert r.failure_message
    assert (await intent(sim, p.id))["amount_refunded"] == 1000
    assert [m["metadata"].get("refund_id") for m in await provider_refunds(sim, p.id)] == [None]
