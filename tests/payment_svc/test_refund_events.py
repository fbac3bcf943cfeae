"""What the provider says of refunds, decided in the domain
(domain/refund_events.py) and applied in the service layer
(service_layer/refund_sync.py) on in-memory fakes: no Postgres, no
provider-sim (the same on real parts: tests/e2e/test_refund_sync.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from payment_svc.adapters.stripe_observations import parse_event
from payment_svc.domain.inbox import InboxEvent
from payment_svc.domain.model import Payment
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.refund_events import (
    ProviderRefundFact,
    RefundAction,
    RefundDecision,
    RefundState,
    decide_refund,
    refunded_total_note,
)
from payment_svc.domain.refunds import Refund, RefundStatus, RefundWrite, format_refund_id
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.provider_sync import apply_to_inbox
from tests.payment_svc.fakes import (
    FakeDiscrepancies,
    FakePaymentRepository,
    FakeRefundRepository,
    FakeUnitOfWork,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T0 = 1_767_225_600  # NOW as a unix time
S, R = PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED
RP, RU, RS, RF = (
    RefundStatus.PENDING,
    RefundStatus.UNKNOWN,
    RefundStatus.SUCCEEDED,
    RefundStatus.FAILED,
)


def payment(amount: int = 1000, status: PaymentStatus = S, reversed_: int = 0) -> Payment:
    return Payment(
        id=uuid.uuid4(),
        client_id="c1",
        idempotency_key=f"k-{uuid.uuid4()}",
        amount=amount,
        currency="USD",
        status=status,
        payment_method="pm_card_visa",
        description="",
        metadata={},
        provider_payment_id=f"pi_{uuid.uuid4().hex[:8]}",
        failure_code=None,
        failure_message=None,
        amount_reversed=reversed_,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


def ours(p: Payment, amount: int, status: RefundStatus, provider_id: str | None = None) -> Refund:
    return Refund(
        id=uuid.uuid4(),
        payment_id=p.id,
        client_id=p.client_id,
        idempotency_key="key",
        amount=amount,
        currency=p.currency,
        status=status,
        reason="",
        source=Source.API,
        provider_refund_id=provider_id,
        failure_code=None,
        failure_message=None,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


def fact(
    amount: int, status: RefundStatus, re_id: str = "re_1", refund_id: str | None = None
) -> ProviderRefundFact:
    return ProviderRefundFact(
        provider_refund_id=re_id,
        provider_payment_id=None,
        metadata_refund_id=refund_id,
        amount=amount,
        currency="usd",
        status=status,
        provider_status=status.value.lower(),
    )


# -- the domain ---------------------------------------------------------------


NEW_ID = uuid.UUID(int=7)


def decide(*args: Any, **kwargs: Any) -> RefundDecision:
    """decide_refund with the id a new refund gets (the caller's to give)."""
    return decide_refund(*args, new_id=NEW_ID, **kwargs)


def test_a_refund_made_at_the_provider_is_new_and_reverses_what_it_took() -> None:
    p = payment()
    d = decide(p, [], None, fact(300, RS), source=Source.WEBHOOK, event_id="evt_1")
    assert d.action is RefundAction.INSERT and d.new is not None
    assert d.new.id == NEW_ID  # the caller's id: the domain makes none
    assert (d.new.idempotency_key, d.new.source, d.new.provider_refund_id) == (
        None,
        Source.WEBHOOK,
        "re_1",
    )
    assert (d.plan.payment_to, d.plan.amount_reversed) == (S, 300)
    whole = decide(p, [], None, fact(1000, RS), source=Source.RECONCILER)
    assert (whole.plan.payment_to, whole.plan.amount_reversed) == (R, 1000)


def test_a_pending_refund_made_at_the_provider_reverses_nothing_yet() -> None:
    p = payment()
    d = decide(p, [], None, fact(300, RP), source=Source.WEBHOOK)
    assert d.action is RefundAction.INSERT
    assert (d.plan.refund_status, d.plan.amount_reversed) == (RP, 0)


def test_a_refund_already_counted_is_not_counted_again() -> None:
    p = payment(reversed_=300)
    mine = ours(p, 300, RS, "re_1")
    again = decide(p, [mine], mine, fact(300, RS), source=Source.WEBHOOK, event_id="evt_2")
    # a new event: in the history, moving nothing
    assert (again.plan.write, again.plan.amount_reversed) == (RefundWrite.RECORD, 300)
    snapshot = decide(p, [mine], mine, fact(300, RS), source=Source.RECONCILER)
    assert snapshot.plan.write is RefundWrite.NOTHING


def test_a_second_refund_adds_to_the_first_and_reverses_the_whole() -> None:
    p = payment(reversed_=600)
    first = ours(p, 600, RS, "re_1")
    second = ours(p, 400, RP, "re_2")
    d = decide(p, [first, second], second, fact(400, RS, "re_2"), source=Source.WEBHOOK)
    assert (d.plan.write, d.plan.payment_to, d.plan.amount_reversed) == (RefundWrite.MOVE, R, 1000)


def test_an_older_event_is_recorded_not_applied() -> None:
    p = payment()
    mine = ours(p, 300, RP, "re_1")
    state = RefundState(NOW + timedelta(seconds=5), 1)
    d = decide(
        p,
        [mine],
        mine,
        fact(300, RP),
        source=Source.WEBHOOK,
        state=state,
        occurred_at=NOW,
        event_id="evt_old",
    )
    assert d.plan.write is RefundWrite.RECORD and "older" in (d.plan.note or "")
    # a higher rank is never stale for its time alone (as payments' events)
    later = decide(
        p, [mine], mine, fact(300, RS), source=Source.WEBHOOK, state=state, occurred_at=NOW
    )
    assert later.plan.write is RefundWrite.MOVE
    # the same second, a higher rank (settled after pending): applied
    same = decide(
        p,
        [mine],
        mine,
        fact(300, RS),
        source=Source.WEBHOOK,
        state=RefundState(NOW, 1),
        occurred_at=NOW,
        event_id="evt_same",
    )
    assert same.plan.write is RefundWrite.MOVE


def test_a_pending_refund_observed_pending_again_is_no_entry_and_no_fix() -> None:
    """Two reconcilers observing one pending refund wrote two identical
    history entries and counted two fixes (issue 22): a snapshot that
    changes nothing writes nothing; a new event is still recorded; the
    provider's id learnt is a change."""
    p = payment()
    mine = ours(p, 300, RP, "re_1")
    fetch = decide(p, [mine], mine, fact(300, RP), source=Source.RECONCILER, authoritative=True)
    assert (fetch.plan.write, fetch.touch) == (RefundWrite.NOTHING, False)
    event = decide(p, [mine], mine, fact(300, RP), source=Source.WEBHOOK, event_id="evt_p")
    assert event.plan.write is RefundWrite.RECORD
    unbound = ours(p, 300, RP)
    learns = decide(
        p,
        [unbound],
        unbound,
        fact(300, RP, refund_id=format_refund_id(unbound.id)),
        source=Source.RECONCILER,
        authoritative=True,
    )
    assert (learns.plan.write, learns.outcome.provider_refund_id) == (RefundWrite.MOVE, "re_1")


def test_an_unknown_refund_is_moved_by_the_provider_never_failed_on_a_guess() -> None:
    p = payment()
    mine = ours(p, 300, RU)
    d = decide(
        p, [mine], mine, fact(300, RS, refund_id=format_refund_id(mine.id)), source=Source.WEBHOOK
    )
    assert (d.plan.write, d.plan.refund_status, d.outcome.provider_refund_id) == (
        RefundWrite.MOVE,
        RS,
        "re_1",
    )


def test_a_final_refund_contradicted_by_an_event_is_recorded_by_a_fetch_followed() -> None:
    p = payment(reversed_=300)
    mine = ours(p, 300, RS, "re_1")
    event = decide(p, [mine], mine, fact(300, RF), source=Source.WEBHOOK, event_id="e")
    assert event.plan.write is RefundWrite.RECORD
    assert (event.plan.amount_reversed, event.plan.undone) == (300, False)  # nothing moved
    fetch = decide(p, [mine], mine, fact(300, RF), source=Source.RECONCILER, authoritative=True)
    assert (fetch.plan.write, fetch.plan.refund_status) == (RefundWrite.MOVE, RF)
    # Its amount leaves amount_reversed (never a floor), and that is alerted.
    assert (fetch.plan.payment_to, fetch.plan.amount_reversed, fetch.plan.undone) == (S, 0, True)


def test_a_refund_that_made_a_payment_whole_fails_and_it_is_succeeded_again() -> None:
    p = payment(status=R, reversed_=1000)
    first = ours(p, 600, RS, "re_1")
    second = ours(p, 400, RS, "re_2")
    d = decide(
        p,
        [first, second],
        second,
        fact(400, RF, "re_2"),
        source=Source.RECONCILER,
        authoritative=True,
    )
    assert (d.plan.payment_from, d.plan.payment_to) == (R, S)
    assert (d.plan.amount_reversed, d.plan.undone, d.plan.payment_changes) == (600, True, True)
    assert d.plan.note is not None and "1000 -> 600" in d.plan.note


def test_a_pending_refund_that_fails_never_moved_money_and_undoes_nothing() -> None:
    p = payment()
    mine = ours(p, 1000, RP, "re_1")
    d = decide(p, [mine], mine, fact(1000, RF), source=Source.WEBHOOK, event_id="e")
    assert (d.plan.write, d.plan.payment_to, d.plan.amount_reversed) == (RefundWrite.MOVE, S, 0)
    assert not d.plan.undone


def test_an_amount_that_differs_is_a_mismatch_never_applied() -> None:
    p = payment()
    mine = ours(p, 300, RU)
    d = decide(p, [mine], mine, fact(350, RS), source=Source.WEBHOOK)
    assert d.action is RefundAction.MISMATCH and d.finding is not None
    assert d.finding[0] is DiscrepancyKind.REFUND_AMOUNT_MISMATCH
    assert d.plan.write is RefundWrite.RECORD
    # a second provider refund carrying our refund id
    bound = ours(p, 300, RS, "re_1")
    dup = decide(p, [bound], bound, fact(300, RS, "re_2"), source=Source.WEBHOOK)
    assert dup.action is RefundAction.MISMATCH


def test_a_charge_refunded_without_its_refunds_is_evidence_said_against_ours() -> None:
    p = payment()
    pending = ours(p, 300, RP, "re_1")
    unknown = ours(p, 200, RU)
    # Stripe's amount_refunded counts the pending 300: compared, never added.
    agrees = refunded_total_note(500, [pending, unknown], p)
    assert "agrees with our refunds (500" in agrees and "amount_reversed 0 of 1000" in agrees
    differs = refunded_total_note(700, [pending], p)
    assert "differs from our refunds (300" in differs


# -- the service layer, on fakes ----------------------------------------------


class World:
    def __init__(self) -> None:
        self.payments = FakePaymentRepository()
        self.refunds = FakeRefundRepository(self.payments)
        self.discrepancies = FakeDiscrepancies()
        self.uow = FakeUnitOfWork(self.payments, self.discrepancies, refunds=self.refunds)

    def pay(self, amount: int = 1000) -> Payment:
        p = payment(amount)
        self.payments.payments[p.id] = p
        return p

    async def deliver(self, body: dict[str, Any]) -> Any:
        parsed = parse_event(json.dumps(body).encode())
        return await apply_to_inbox(
            lambda: self.uow,
            InboxEvent(
                provider_event_id=parsed.id,
                event_type=parsed.type,
                created=parsed.created,
                stored_json=parsed.stored_json,
                observation=parsed.observation,
                source=Source.WEBHOOK,
            ),
        )

    def of(self, p: Payment) -> list[Refund]:
        return [r for r in self.refunds.refunds.values() if r.payment_id == p.id]


def refund_event(
    kind: str, p: Payment, re_id: str, status: str, created: int, amount: int = 300, **meta: str
) -> dict[str, Any]:
    obj = {
        "id": re_id,
        "object": "refund",
        "amount": amount,
        "currency": "usd",
        "payment_intent": p.provider_payment_id,
        "status": status,
        "metadata": meta,
    }
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": kind,
        "created": created,
        "data": {"object": obj},
    }


def charge_refunded(p: Payment, refunds: list[dict[str, Any]], created: int) -> dict[str, Any]:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": p.provider_payment_id,
        "amount": p.amount,
        "amount_refunded": sum(r["amount"] for r in refunds),
        "refunds": {"object": "list", "data": refunds, "has_more": False},
    }
    return {"id": f"evt_{uuid.uuid4().hex}", "type": "charge.refunded", "created": created,
            "data": {"object": charge}}  # fmt: skip


async def test_refund_events_and_charge_refunded_count_a_refund_once_in_any_order() -> None:
    for order in ("refund_first", "charge_first"):
        w = World()
        p = w.pay()
        created = refund_event("refund.created", p, "re_1", "succeeded", T0)
        charge = charge_refunded(p, [created["data"]["object"]], T0)
        events = [created, charge] if order == "refund_first" else [charge, created]
        outcomes = [await w.deliver(e) for e in events + events]  # and each again
        assert [o.applied for o in outcomes] == [True, False, False, False], order
        assert [o.duplicate for o in outcomes] == [False, False, True, True], order
        [r] = w.of(p)
        assert (r.status, r.amount, r.idempotency_key, r.source) == (RS, 300, None, Source.WEBHOOK)
        assert w.payments.payments[p.id].amount_reversed == 300, order


async def test_a_refund_found_by_metadata_learns_its_provider_id_then_fails() -> None:
    w = World()
    p = w.pay()
    mine = ours(p, 300, RU)
    w.refunds.refunds[mine.id] = mine
    meta = {"refund_id": format_refund_id(mine.id)}
    assert (
        await w.deliver(refund_event("refund.created", p, "re_9", "pending", T0, **meta))
    ).applied
    [r] = w.of(p)
    assert (r.status, r.provider_refund_id) == (RP, "re_9")
    failed = refund_event("refund.failed", p, "re_9", "failed", T0 + 5)
    failed["data"]["object"]["failure_reason"] = "expired_or_canceled_card"
    assert (await w.deliver(failed)).applied
    [r] = w.of(p)
    assert (r.status, r.failure_code) == (RF, "expired_or_canceled_card")
    assert w.payments.payments[p.id].amount_reversed == 0
    # an older pending event after it: recorded only
    late = refund_event("refund.updated", p, "re_9", "pending", T0 + 1)
    assert not (await w.deliver(late)).applied
    assert w.of(p)[0].status == RF


async def test_a_mismatched_refund_event_is_reported_with_the_refund() -> None:
    w = World()
    p = w.pay()
    mine = ours(p, 300, RU)
    w.refunds.refunds[mine.id] = mine
    event = refund_event(
        "refund.created",
        p,
        "re_5",
        "succeeded",
        T0,
        amount=999,
        refund_id=format_refund_id(mine.id),
    )
    outcome = await w.deliver(event)
    assert (outcome.applied, outcome.discrepancy) == (False, DiscrepancyKind.REFUND_AMOUNT_MISMATCH)
    [found] = w.discrepancies.open.values()
    assert (found.refund_id, found.payment_id) == (mine.id, p.id)
    assert w.of(p)[0].status == RU


async def test_a_charge_listing_a_refund_unlike_ours_is_reported() -> None:
    w = World()
    p = w.pay()
    mine = ours(p, 300, RS, "re_7")
    w.refunds.refunds[mine.id] = mine
    listed = refund_event("refund.created", p, "re_7", "succeeded", T0, amount=400)
    outcome = await w.deliver(charge_refunded(p, [listed["data"]["object"]], T0))
    assert (outcome.applied, outcome.discrepancy) == (False, DiscrepancyKind.REFUND_AMOUNT_MISMATCH)
    assert w.of(p)[0].amount == 300
