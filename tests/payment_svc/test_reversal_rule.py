"""The reversal rule over every order of refund and dispute facts (issue 25),
in the domain alone: whatever the provider says of a payment's refunds and
disputes, in any order, by webhook or by an authoritative fetch, before or
after the payment is known to have succeeded, once folded as the stores
write the plans, amount_reversed is the refunds we hold as SUCCEEDED plus
the disputes, capped at the amount, and the payment is REVERSED exactly when
it succeeded and that covers the whole amount."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from payment_svc.domain.provider_events import ProviderObservation, StateRank, plan_event
from payment_svc.domain.reconciliation import Snapshot, plan_snapshot
from payment_svc.domain.refund_events import ProviderRefundFact, RefundAction, decide_refund
from payment_svc.domain.refunds import Refund, RefundStatus, RefundWrite
from payment_svc.domain.status import PaymentStatus, Source
from tests.payment_svc.test_refund_events import payment

S, R = PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RefundFact:
    which: int  # which of the provider's refunds
    status: RefundStatus
    authoritative: bool  # the reconciler's fetch, else a webhook


@dataclass(frozen=True)
class DisputeFact:
    amount: int


refund_facts = st.builds(
    RefundFact,
    which=st.integers(0, 3),
    status=st.sampled_from([RefundStatus.PENDING, RefundStatus.SUCCEEDED, RefundStatus.FAILED]),
    authoritative=st.booleans(),
)
dispute_facts = st.builds(DisputeFact, amount=st.integers(1, 1500))


@dataclass(frozen=True)
class SuccessFact:
    """The payment's success: its event, or the reconciler's snapshot."""

    snapshot: bool


success_facts = st.builds(SuccessFact, snapshot=st.booleans())


class Books:
    """One payment and its refunds, as the stores keep them after each plan."""

    def __init__(self, amount: int, refund_amounts: list[int], status: PaymentStatus) -> None:
        self.payment = replace(payment(amount), status=status)
        self.refund_amounts = refund_amounts
        self.refunds: dict[str, Refund] = {}  # by provider refund id
        self.n = 0

    def refund(self, f: RefundFact) -> None:
        re_id = f"re_{f.which}"
        fact = ProviderRefundFact(
            provider_refund_id=re_id,
            provider_payment_id=self.payment.provider_payment_id,
            metadata_refund_id=None,
            amount=self.refund_amounts[f.which],
            currency="usd",
            status=f.status,
            provider_status=f.status.value.lower(),
        )
        self.n += 1
        ours = self.refunds.get(re_id)
        d = decide_refund(
            self.payment,
            list(self.refunds.values()),
            ours,
            fact,
            source=Source.RECONCILER if f.authoritative else Source.WEBHOOK,
            authoritative=f.authoritative,
            event_id=None if f.authoritative else f"evt_{self.n}",
            new_id=uuid.UUID(int=self.n),
        )
        if d.action is RefundAction.INSERT:
            assert d.new is not None
            self.refunds[re_id] = Refund(
                id=d.new.id,
                payment_id=self.payment.id,
                client_id=self.payment.client_id,
                idempotency_key=None,
                amount=d.new.amount,
                currency=d.new.currency,
                status=d.plan.refund_status,
                reason="",
                source=d.new.source,
                provider_refund_id=re_id,
                failure_code=None,
                failure_message=None,
                version=1,
                created_at=NOW,
                updated_at=NOW,
            )
        elif d.action is RefundAction.EXISTING and d.plan.write is RefundWrite.MOVE:
            assert ours is not None
            self.refunds[re_id] = replace(ours, status=d.plan.refund_status)
        else:
            return
        self.payment = replace(
            self.payment, status=d.plan.payment_to, amount_reversed=d.plan.amount_reversed
        )

    def dispute(self, f: DisputeFact) -> None:
        obs = ProviderObservation(
            provider_payment_id=self.payment.provider_payment_id,
            metadata_payment_id=None,
            status=S,
            rank=StateRank.REVERSED,
            occurred_at=None,
            reversal_added=f.amount,
            reversal=True,
        )
        plan = plan_event(
            self.payment.status,
            None,
            None,
            obs,
            amount=self.payment.amount,
            currency=self.payment.currency,
            bound_provider_id=self.payment.provider_payment_id,
            amount_reversed=self.payment.amount_reversed,
            succeeded_refunds=self.succeeded(),
            amount_disputed=self.payment.amount_disputed,
        )
        if not plan.touch and plan.disputed_added is None:
            return
        # As event_store.py's statement writes it.
        p = self.payment
        self.payment = replace(
            p,
            status=(plan.status or S) if plan.applied else p.status,
            amount_reversed=p.amount_reversed
            if plan.amount_reversed is None
            else plan.amount_reversed,
            amount_disputed=min(p.amount, p.amount_disputed + f.amount),
        )

    def success(self, f: SuccessFact) -> None:
        p = self.payment
        if f.snapshot:
            snap = Snapshot(
                found=True,
                status=S,
                provider_payment_id=p.provider_payment_id,
                amount=p.amount,
                currency=p.currency,
                amount_reversed=0,
                failure_code=None,
                failure_message=None,
                provider_status="succeeded",
            )
            plan = plan_snapshot(
                p.status,
                p.amount,
                p.currency,
                snap,
                bound_provider_id=p.provider_payment_id,
                amount_reversed=p.amount_reversed,
                amount_disputed=p.amount_disputed,
            )
            if plan.apply:
                assert plan.status is not None
                self.payment = replace(p, status=plan.status, amount_reversed=plan.amount_reversed)
            return
        obs = ProviderObservation(
            provider_payment_id=p.provider_payment_id,
            metadata_payment_id=None,
            status=S,
            rank=StateRank.SETTLED,
            occurred_at=None,
        )
        ev = plan_event(
            p.status,
            None,
            None,
            obs,
            amount=p.amount,
            currency=p.currency,
            bound_provider_id=p.provider_payment_id,
            amount_reversed=p.amount_reversed,
        )
        if ev.applied:
            self.payment = replace(p, status=ev.status or S)

    def succeeded(self) -> int:
        return sum(r.amount for r in self.refunds.values() if r.status is RefundStatus.SUCCEEDED)


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(1, 1000),
    refund_amounts=st.lists(st.integers(1, 600), min_size=4, max_size=4),
    start=st.sampled_from([S, PaymentStatus.PENDING, PaymentStatus.UNKNOWN]),
    facts=st.lists(st.one_of(refund_facts, dispute_facts, success_facts), max_size=25),
)
def test_amount_reversed_is_always_the_succeeded_refunds_plus_disputes_capped(
    amount: int,
    refund_amounts: list[int],
    start: PaymentStatus,
    facts: list[RefundFact | DisputeFact | SuccessFact],
) -> None:
    books = Books(amount, refund_amounts, start)
    for f in facts:
        if isinstance(f, RefundFact):
            books.refund(f)
        elif isinstance(f, DisputeFact):
            books.dispute(f)
        else:
            books.success(f)
        p = books.payment
        expected = min(amount, books.succeeded() + p.amount_disputed)
        assert p.amount_reversed == expected, (f, p)
        if p.status in (S, R):
            assert (p.status is R) == (expected >= amount), (f, p)
        else:
            assert p.status is start, (f, p)  # nothing but its success moves it
