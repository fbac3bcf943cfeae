"""The provider's books: every payment intent, the charges made, their refunds and
disputes, the events emitted (ledger_core.py holds intents and events).

Pure and synchronous (no I/O, no awaits), so one call is atomic on the event loop.

    Ledger (LedgerCore)
      ├─ refund:        re_... pending or succeeded at once; refund.created (+ charge.refunded)
      ├─ settle_refund: pending -> succeeded (refund.updated, charge.refunded)
      │                         -> failed    (refund.updated, refund.failed; amount back)
      └─ dispute:       dp_... takes what is left; charge.dispute.created
"""

from __future__ import annotations

from provider_sim.charges import DEFAULT_DISPUTE_REASON, Dispute, charge_json, refundable
from provider_sim.events import EventType
from provider_sim.intents import TEST_PAYMENT_METHODS, IntentStatus, JsonObject, PaymentIntent
from provider_sim.ledger_core import (
    CreateIntent,
    CreateRefund,
    EventCallback,
    LedgerCore,
    LedgerJournal,
    SettleOutcome,
    random_id,
)
from provider_sim.listing import CreatedRange
from provider_sim.refunds import (
    CARD_REFUND_FAILURE,
    DEFAULT_REFUND_FAILURE,
    Refund,
    RefundStatus,
)
from provider_sim.refusals import (
    AlreadyDisputed,
    AlreadyRefunded,
    AmountTooLarge,
    ChargeDisputed,
    ChargeMismatch,
    IntentNotFound,
    NotSucceeded,
    RefundNotFound,
    RefundNotPending,
    RefundNotSucceeded,
)

# What the rest of the simulator imports from here.
__all__ = [
    "CreateIntent",
    "CreateRefund",
    "EventCallback",
    "Ledger",
    "LedgerJournal",
    "SettleOutcome",
    "random_id",
]


class Ledger(LedgerCore):
    def refund(self, command: CreateRefund, *, pending: bool = False) -> Refund:
        """Refund some or all of what is left of a succeeded intent's charge.

        It succeeds at once, unless `pending` (the simulator's refund_pending_rate):
        then it waits for settle_refund. A refund of pm_card_refundFail succeeds at
        first too, as on Stripe, and fails later (fail_refund; the simulator times it).
        """
        intent = self._intent_of(command)
        charge_id = self._charge_to_reverse(intent, "refund")
        if intent.disputed:
            raise ChargeDisputed(charge_id)
        remaining = refundable(intent)
        amount = remaining if command.amount is None else command.amount
        if amount > remaining:
            raise AmountTooLarge(amount, remaining)
        status = RefundStatus.PENDING if pending else RefundStatus.SUCCEEDED
        refund = Refund(
            id=self._new_id("re"),
            amount=amount,
            charge=charge_id,
            payment_intent=intent.id,
            currency=intent.currency,
            created=int(self._clock()),
            reason=command.reason,
            metadata=dict(command.metadata),
            status=status,
            idempotency_key=command.idempotency_key,
        )
        self._refunds.add(refund)
        # Pending refunds count too, as in Stripe's charge.amount_refunded.
        intent.amount_refunded += amount
        if self._journal is not None:
            self._journal.refund(refund)
            self._journal.intent(intent)
        key = command.idempotency_key
        self._emit(EventType.REFUND_CREATED, refund.to_json(), key)
        if status is RefundStatus.SUCCEEDED:
            self._emit(EventType.CHARGE_REFUNDED, self._charge_json(intent), key)
        return refund

    def settle_refund(
        self,
        refund_id: str,
        outcome: SettleOutcome | None = None,
        failure_reason: str | None = None,
    ) -> Refund:
        """A pending refund completes (refund.updated, charge.refunded) or fails
        (refund.updated, refund.failed; its amount can be refunded again). Without
        an outcome, refunds of pm_card_refundFail fail and the others succeed."""
        refund = self.refund_by_id(refund_id)
        if refund.status is not RefundStatus.PENDING:
            raise RefundNotPending(refund)
        intent = self.get(refund.payment_intent)
        if outcome is None:
            outcome = SettleOutcome.FAILED if _refunds_fail(intent) else SettleOutcome.SUCCEEDED
        if outcome is SettleOutcome.SUCCEEDED:
            refund.status = RefundStatus.SUCCEEDED
        else:
            refund.status = RefundStatus.FAILED
            refund.failure_reason = failure_reason or (
                CARD_REFUND_FAILURE if _refunds_fail(intent) else DEFAULT_REFUND_FAILURE
            )
            intent.amount_refunded -= refund.amount
        if self._journal is not None:
            self._journal.refund(refund)
            self._journal.intent(intent)
        self._emit(EventType.REFUND_UPDATED, refund.to_json(), None)
        if refund.status is RefundStatus.SUCCEEDED:
            self._emit(EventType.CHARGE_REFUNDED, self._charge_json(intent), None)
        else:
            self._emit(EventType.REFUND_FAILED, refund.to_json(), None)
        return refund

    def fail_refund(self, refund_id: str, failure_reason: str | None = None) -> Refund:
        """A refund that had succeeded fails later (Stripe does this, e.g. for
        a closed card): refund.updated and refund.failed; its amount leaves
        amount_refunded and can be refunded again."""
        refund = self.refund_by_id(refund_id)
        if refund.status is not RefundStatus.SUCCEEDED:
            raise RefundNotSucceeded(refund)
        intent = self.get(refund.payment_intent)
        refund.status = RefundStatus.FAILED
        refund.failure_reason = failure_reason or (
            CARD_REFUND_FAILURE if _refunds_fail(intent) else DEFAULT_REFUND_FAILURE
        )
        intent.amount_refunded -= refund.amount
        if self._journal is not None:
            self._journal.refund(refund)
            self._journal.intent(intent)
        self._emit(EventType.REFUND_UPDATED, refund.to_json(), None)
        self._emit(EventType.REFUND_FAILED, refund.to_json(), None)
        return refund

    def dispute(self, intent_id: str, reason: str = DEFAULT_DISPUTE_REASON) -> Dispute:
        """The cardholder's bank claws back what is left of the charge (a chargeback)."""
        intent = self.get(intent_id)
        charge_id = self._charge_to_reverse(intent, "dispute")
        if intent.disputed:
            raise AlreadyDisputed(charge_id)
        dispute = Dispute(
            id=self._new_id("dp"),
            amount=refundable(intent),
            charge=charge_id,
            payment_intent=intent.id,
            currency=intent.currency,
            created=int(self._clock()),
            reason=reason,
            metadata=dict(intent.metadata),
        )
        self._disputes[dispute.id] = dispute
        intent.disputed = True
        if self._journal is not None:
            self._journal.dispute(dispute)
            self._journal.intent(intent)
        self._emit(EventType.CHARGE_DISPUTE_CREATED, dispute.to_json(), None)
        return dispute

    def refund_by_id(self, refund_id: str) -> Refund:
        refund = self._refunds.get(refund_id)
        if refund is None:
            raise RefundNotFound(refund_id)
        return refund

    def fails_refunds(self, intent_id: str) -> bool:
        """Whether the intent was paid with a card whose refunds fail (pm_card_refundFail)."""
        return _refunds_fail(self.get(intent_id))

    def all_refunds(self) -> list[Refund]:
        return self._refunds.all()

    def refunds_of(self, intent_id: str) -> list[Refund]:
        """An intent's refunds, oldest first."""
        return self._refunds.of_intent(intent_id)

    def refunds_page(
        self,
        window: CreatedRange,
        *,
        limit: int,
        payment_intent: str | None = None,
        charge: str | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[Refund], bool]:
        """A page of refunds newest first, as `GET /v1/refunds` lists them (of one
        intent when it or its charge is given). A cursor must be a refund listed."""
        intent_id = None
        if charge is not None:
            intent_id = self._intent_of(CreateRefund(payment_intent, charge)).id
        elif payment_intent is not None:
            intent_id = self.get(payment_intent).id
        after = None if starting_after is None else self.refund_by_id(starting_after)
        before = None if ending_before is None else self.refund_by_id(ending_before)
        try:
            return self._refunds.page(
                window,
                limit=limit,
                intent_id=intent_id,
                starting_after=after,
                ending_before=before,
            )
        except ValueError:
            raise RefundNotFound(starting_after or ending_before or "") from None

    def _intent_of(self, command: CreateRefund) -> PaymentIntent:
        if command.charge is None:
            if command.payment_intent is None:
                raise IntentNotFound("")
            return self.get(command.payment_intent)
        intent = self.by_charge(command.charge)
        if command.payment_intent is not None and command.payment_intent != intent.id:
            raise ChargeMismatch(command.charge, command.payment_intent)
        return intent

    def _charge_to_reverse(self, intent: PaymentIntent, action: str) -> str:
        """The charge a refund or dispute would reverse, if anything is left of it."""
        if intent.status is not IntentStatus.SUCCEEDED or intent.latest_charge is None:
            raise NotSucceeded(intent, action)
        if refundable(intent) <= 0:
            raise AlreadyRefunded(intent.latest_charge)
        return intent.latest_charge

    def _charge_json(self, intent: PaymentIntent) -> JsonObject:
        """The charge as the charge.refunded event shows it: with its refunds."""
        return charge_json(intent, self._refunds.of_intent(intent.id))


def _refunds_fail(intent: PaymentIntent) -> bool:
    card = TEST_PAYMENT_METHODS.get(intent.payment_method or "")
    return card is not None and card.refunds_fail
