"""The ledger's refunds, pure: statuses, what is left to refund, the events in order,
the journal told of each change, and the book's pages."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import pytest

from provider_sim.charges import Dispute
from provider_sim.events import EventType
from provider_sim.intents import JsonObject, PaymentIntent
from provider_sim.ledger import CreateIntent, CreateRefund, Ledger, SettleOutcome
from provider_sim.listing import CreatedRange
from provider_sim.refunds import Refund, RefundStatus
from provider_sim.refusals import (
    AmountTooLarge,
    RefundNotFound,
    RefundNotPending,
    RefundNotSucceeded,
)


class Journal:
    def __init__(self) -> None:
        self.refunds: list[tuple[str, str]] = []

    def intent(self, intent: PaymentIntent) -> None:
        pass

    def refund(self, refund: Refund) -> None:
        self.refunds.append((refund.id, refund.status.value))

    def dispute(self, dispute: Dispute) -> None:
        pass

    def event(self, event: JsonObject) -> None:
        pass


def ledger_with(journal: Journal | None = None) -> Ledger:
    ticks = itertools.count(1_700_000_000)
    ids = itertools.count(1)
    return Ledger(clock=lambda: next(ticks), new_id=lambda p: f"{p}_{next(ids)}", journal=journal)


def paid(ledger: Ledger, card: str = "pm_card_visa", amount: int = 1000) -> PaymentIntent:
    return ledger.create(CreateIntent(amount, "usd", card, True, None, {"payment_id": "p"}))


def types(ledger: Ledger) -> list[str]:
    return [e["type"] for e in ledger.events]


def test_succeeded_pending_failed_and_what_is_left() -> None:
    journal = Journal()
    ledger = ledger_with(journal)
    intent = paid(ledger)
    done = ledger.refund(CreateRefund(payment_intent=intent.id, amount=300, idempotency_key="k"))
    waiting = ledger.refund(CreateRefund(payment_intent=intent.id, amount=300), pending=True)

    assert (done.status, waiting.status) == (RefundStatus.SUCCEEDED, RefundStatus.PENDING)
    assert (done.idempotency_key, waiting.idempotency_key) == ("k", None)
    assert intent.amount_refunded == 600
    with pytest.raises(AmountTooLarge):
        ledger.refund(CreateRefund(payment_intent=intent.id, amount=401))
    assert types(ledger)[1:] == ["refund.created", "charge.refunded", "refund.created"]

    ledger.settle_refund(waiting.id, SettleOutcome.FAILED)
    assert (waiting.status, waiting.failure_reason) == (RefundStatus.FAILED, "declined")
    assert intent.amount_refunded == 300
    assert types(ledger)[-2:] == ["refund.updated", "refund.failed"]
    with pytest.raises(RefundNotPending):
        ledger.settle_refund(waiting.id, SettleOutcome.SUCCEEDED)
    with pytest.raises(RefundNotFound):
        ledger.settle_refund("re_nope")
    rest = ledger.refund(CreateRefund(charge=intent.latest_charge))
    assert (rest.amount, intent.amount_refunded) == (700, 1000)
    charge = ledger.events[-1]["data"]["object"]
    assert ledger.events[-1]["type"] == EventType.CHARGE_REFUNDED
    assert [(r["id"], r["status"]) for r in charge["refunds"]["data"]] == [
        (rest.id, "succeeded"),
        (waiting.id, "failed"),
        (done.id, "succeeded"),
    ]
    assert journal.refunds == [
        (done.id, "succeeded"),
        (waiting.id, "pending"),
        (waiting.id, "failed"),
        (rest.id, "succeeded"),
    ]
    assert ledger.refunds_of(intent.id) == [done, waiting, rest]


def test_refund_fail_card_and_settle_without_outcome() -> None:
    ledger = ledger_with()
    failing, visa = paid(ledger, "pm_card_refundFail"), paid(ledger)
    bad = ledger.refund(CreateRefund(payment_intent=failing.id), pending=True)
    good = ledger.refund(CreateRefund(payment_intent=visa.id, amount=10), pending=True)

    assert bad.status is RefundStatus.PENDING and ledger.fails_refunds(failing.id)
    assert not ledger.fails_refunds(visa.id)
    ledger.settle_refund(bad.id)
    ledger.settle_refund(good.id)
    assert (bad.status, bad.failure_reason) == (RefundStatus.FAILED, "expired_or_canceled_card")
    assert (good.status, good.failure_reason) == (RefundStatus.SUCCEEDED, None)
    assert (failing.amount_refunded, visa.amount_refunded) == (0, 10)
    assert bad.to_json()["failure_reason"] == "expired_or_canceled_card"
    assert "failure_reason" not in good.to_json()


def test_refund_fail_card_succeeds_at_first_and_fails_later() -> None:
    """SPEC §5: as on Stripe, a refund of pm_card_refundFail succeeds, then
    fails (refund.updated, refund.failed); its amount can be refunded again."""
    ledger = ledger_with()
    failing = paid(ledger, "pm_card_refundFail")
    first = ledger.refund(CreateRefund(payment_intent=failing.id, amount=400))
    assert (first.status, failing.amount_refunded) == (RefundStatus.SUCCEEDED, 400)
    ledger.fail_refund(first.id)
    assert (first.status, first.failure_reason) == (RefundStatus.FAILED, "expired_or_canceled_card")
    assert failing.amount_refunded == 0
    with pytest.raises(RefundNotSucceeded):
        ledger.fail_refund(first.id)  # once only


def test_pages_newest_first_per_intent_and_overall() -> None:
    ledger = ledger_with()
    one, two = paid(ledger), paid(ledger)
    made = [ledger.refund(CreateRefund(payment_intent=i.id, amount=10)) for i in (one, two) * 3]
    ones = [r for r in made if r.payment_intent == one.id]

    everything = CreatedRange()
    page, more = ledger.refunds_page(everything, limit=2, payment_intent=one.id)
    assert (page, more) == ([ones[2], ones[1]], True)
    page, more = ledger.refunds_page(
        everything, limit=2, payment_intent=one.id, starting_after=ones[1].id
    )
    assert (page, more) == ([ones[0]], False)
    page, _ = ledger.refunds_page(everything, limit=100, charge=two.latest_charge)
    assert [r.payment_intent for r in page] == [two.id] * 3
    page, more = ledger.refunds_page(everything, limit=100)
    assert (page, more) == (made[::-1], False)
    with pytest.raises(RefundNotFound):
        ledger.refunds_page(everything, limit=1, payment_intent=one.id, starting_after=made[1].id)


def test_a_refund_round_trips_through_its_stored_fields() -> None:
    ledger = ledger_with()
    refund = ledger.refund(
        CreateRefund(payment_intent=paid(ledger).id, metadata={"refund_id": "r"}), pending=True
    )
    ledger.settle_refund(refund.id, SettleOutcome.FAILED, "lost_or_stolen_card")
    # As state.py stores it: each field, as JSON.
    fields = {f.name: getattr(refund, f.name) for f in dataclasses.fields(Refund)}
    stored: dict[str, Any] = json.loads(json.dumps(fields))
    again = Refund(**stored)
    assert again.to_json() == refund.to_json()
    assert again.status is RefundStatus.FAILED
    old = {k: v for k, v in stored.items() if k not in ("status", "failure_reason")}
    assert Refund(**old).status is RefundStatus.SUCCEEDED  # books of an earlier version
