"""The reconciler's decisions and the provider's shapes, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from reconciler_testkit import catch_up_asks_for_types

from payments_stripe.objects import (
    MalformedAnswer,
    our_view,
    parse_event,
    parse_intent,
)
from payments_stripe.status import Status as PaymentStatus
from reconciler.catch_up import Position
from reconciler.rules import (
    Missing,
    Ours,
    Verdict,
    agrees,
    is_stuck,
    ours_among,
    settlement_verdict,
    when_missing,
)
from reconciler.runs import parse_jobs

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def intent_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1999,
        "currency": "usd",
        "status": "succeeded",
        "created": 1700000000,
        "metadata": {"payment_id": "pay_1"},
        "last_payment_error": None,
        "latest_charge": "ch_1",
    }
    body.update(overrides)
    return body


def ours(**overrides: Any) -> Ours:
    fields: dict[str, Any] = {
        "id": "pay_1",
        "status": PaymentStatus.SUCCEEDED,
        "amount": 1999,
        "currency": "USD",
        "provider_payment_id": "pi_1",
        "amount_reversed": 0,
    }
    fields.update(overrides)
    return Ours(**fields)


def test_a_missing_payment_is_redriven_only_within_the_window() -> None:
    window = 3600.0
    assert when_missing(NOW - timedelta(seconds=3599), NOW, window) is Missing.REDRIVE
    assert when_missing(NOW - timedelta(seconds=3600), NOW, window) is Missing.REPORT


def test_a_payment_with_a_provider_id_is_never_redriven() -> None:
    # However young: the provider gave the id, so it has heard of the payment.
    assert when_missing(NOW, NOW, 3600.0, "pi_1") is Missing.REPORT
    assert when_missing(NOW - timedelta(seconds=10), NOW, 82800.0, "pi_1") is Missing.REPORT


def test_of_several_intents_with_our_id_the_one_that_moved_money_is_ours() -> None:
    newest = parse_intent(intent_json(id="pi_3", status="requires_payment_method"))
    charged = parse_intent(intent_json(id="pi_2"))
    oldest = parse_intent(intent_json(id="pi_1", status="canceled"))
    assert ours_among([newest, charged, oldest]) == (charged, [newest, oldest])
    # None moved money: the oldest is the one our key made first.
    assert ours_among([newest, oldest]) == (oldest, [newest])
    assert ours_among([charged]) == (charged, [])


def test_only_non_final_payments_get_stuck() -> None:
    old = NOW - timedelta(hours=2)
    assert is_stuck(PaymentStatus.UNKNOWN, old, NOW, 3600)
    assert is_stuck(PaymentStatus.PENDING, old, NOW, 3600)
    assert not is_stuck(PaymentStatus.PENDING, NOW - timedelta(minutes=59), NOW, 3600)
    for final in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REVERSED):
        assert not is_stuck(final, old, NOW, 3600)


def test_an_intent_is_read_with_our_currency_and_its_charge() -> None:
    charge = {"id": "ch_1", "amount_refunded": 500, "disputed": False}
    intent = parse_intent(intent_json(latest_charge=charge))
    assert (intent.id, intent.amount, intent.currency, intent.payment_id) == (
        "pi_1",
        1999,
        "USD",
        "pay_1",
    )
    assert intent.amount_refunded == 500
    # Partly refunded it stays SUCCEEDED (SPEC §3a; this asserted REVERSED, the defect).
    assert our_view(intent) is PaymentStatus.SUCCEEDED
    whole = parse_intent(intent_json(latest_charge={**charge, "amount_refunded": 1999}))
    assert our_view(whole) is PaymentStatus.REVERSED
    assert not parse_intent(intent_json()).amount_refunded  # charge not expanded


def test_a_declined_intent_carries_its_code_and_a_processing_one_none() -> None:
    error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "no"}
    failed = parse_intent(intent_json(status="requires_payment_method", last_payment_error=error))
    assert (failed.failure_code, failed.failure_message) == ("insufficient_funds", "no")
    assert our_view(failed) is PaymentStatus.FAILED
    canceled = parse_intent(intent_json(status="canceled", cancellation_reason="abandoned"))
    assert canceled.failure_code == "abandoned"  # never empty on a failure
    processing = parse_intent(intent_json(status="processing"))
    assert processing.failure_code == ""
    assert our_view(processing) is PaymentStatus.PENDING


def test_a_status_stripe_adds_later_is_not_final_and_moves_no_money() -> None:
    intent = parse_intent(intent_json(status="some_new_status"))
    assert our_view(intent) is PaymentStatus.PENDING
    assert not intent.moved_money


@pytest.mark.parametrize(
    "body",
    [None, [], {"object": "charge", "id": "ch_1"}, intent_json(amount="1999"), intent_json(id="")],
)
def test_what_is_not_an_intent_is_refused(body: Any) -> None:
    with pytest.raises(MalformedAnswer):
        parse_intent(body)


def test_an_event_is_kept_as_compact_json() -> None:
    event = parse_event({"id": "evt_1", "type": "charge.refunded", "created": 5, "data": {}})
    assert event.payload == b'{"id":"evt_1","type":"charge.refunded","created":5,"data":{}}'
    with pytest.raises(MalformedAnswer):
        parse_event({"id": "evt_1", "type": "x", "created": True})


async def test_catch_up_asks_for_the_event_types_payment_svc_applies() -> None:
    # As the provider receives the request, not EVENT_TYPES against its enum.
    asked = await catch_up_asks_for_types()
    assert "payment_intent.succeeded" in asked
    assert "charge.refunded" in asked
    assert "charge.dispute.created" in asked
    assert "unknown" not in asked
    assert len(asked) <= 20  # Stripe's limit on types[]


def test_ours_and_the_provider_agree_or_not() -> None:
    intent = parse_intent(intent_json())
    assert agrees(ours(), intent)
    assert not agrees(ours(amount=2000), intent)
    assert not agrees(ours(currency="EUR"), intent)
    assert not agrees(ours(status=PaymentStatus.UNKNOWN), intent)
    assert not agrees(ours(provider_payment_id=""), intent)
    refunded = parse_intent(intent_json(latest_charge={"amount_refunded": 500}))
    assert not agrees(ours(), refunded)
    # 500 of 1999 refunded: SUCCEEDED with 500 reversed (this asserted REVERSED, the defect).
    assert agrees(ours(amount_reversed=500), refunded)
    assert not agrees(ours(status=PaymentStatus.REVERSED, amount_reversed=500), refunded)
    assert not agrees(ours(amount_reversed=300), refunded)
    whole = parse_intent(intent_json(latest_charge={"amount_refunded": 1999}))
    assert agrees(ours(status=PaymentStatus.REVERSED, amount_reversed=1999), whole)
    assert not agrees(ours(amount_reversed=500), whole)
    assert not agrees(ours(status=PaymentStatus.REVERSED, amount_reversed=1999), refunded)
    disputed = parse_intent(intent_json(latest_charge={"disputed": True}))
    assert agrees(ours(status=PaymentStatus.REVERSED, amount_reversed=1999), disputed)


def test_settlement_verdicts() -> None:
    mine = ours()
    by_provider, by_id = {"pi_1": mine}, {"pay_1": mine}
    assert settlement_verdict(parse_intent(intent_json()), by_provider, by_id) == (
        Verdict.AGREES,
        mine,
    )
    # Ours never learned its provider id (a timeout): found by our id, reconciled.
    unknown = ours(status=PaymentStatus.UNKNOWN, provider_payment_id="")
    assert settlement_verdict(parse_intent(intent_json()), {}, {"pay_1": unknown}) == (
        Verdict.RECONCILE,
        unknown,
    )
    stranger = parse_intent(intent_json(id="pi_9", metadata={}))
    assert settlement_verdict(stranger, by_provider, by_id) == (Verdict.UNRECORDED, None)
    declined = parse_intent(intent_json(id="pi_9", metadata={}, status="requires_payment_method"))
    assert settlement_verdict(declined, by_provider, by_id) == (Verdict.IGNORE, None)
    # A second intent naming a payment already tied to another one: a possible
    # double charge of ours, for payment-svc to record (never to apply).
    second = parse_intent(intent_json(id="pi_2"))
    assert settlement_verdict(second, by_provider, by_id) == (Verdict.DUPLICATE, mine)
    unmoved = parse_intent(intent_json(id="pi_3", status="requires_payment_method"))
    assert settlement_verdict(unmoved, by_provider, by_id) == (Verdict.DUPLICATE, mine)


def test_a_checkpoint_round_trips_and_junk_starts_afresh() -> None:
    position = Position(1700000000, "evt_1")
    assert Position.decode(position.encode()) == position
    for junk in ("", "nope", "[]", '{"created": "x"}'):
        assert Position.decode(junk) is None


def test_jobs_are_named_and_run_in_the_order_given() -> None:
    assert parse_jobs("catch_up, sweep") == ("catch_up", "sweep")
    with pytest.raises(ValueError, match="settle"):
        parse_jobs("sweep,settle")
    with pytest.raises(ValueError, match="none"):
        parse_jobs(" , ")
