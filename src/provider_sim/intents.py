"""Payment intents as the simulated provider keeps them: statuses, test cards, JSON.

Pure: no I/O. The transition table is the only place that says which status may
follow which; the test payment methods table is the only place that says what a
card does when an intent is confirmed with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

JsonObject = dict[str, Any]


class IntentStatus(enum.StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


TRANSITIONS: Final[dict[IntentStatus, frozenset[IntentStatus]]] = {
    IntentStatus.REQUIRES_CONFIRMATION: frozenset(
        {
            IntentStatus.PROCESSING,
            IntentStatus.SUCCEEDED,
            IntentStatus.REQUIRES_PAYMENT_METHOD,
            IntentStatus.CANCELED,
        }
    ),
    IntentStatus.REQUIRES_PAYMENT_METHOD: frozenset(
        {IntentStatus.CANCELED, IntentStatus.REQUIRES_CONFIRMATION}
    ),
    # PROCESSING -> CANCELED is a provider-side move only (the pending charge is voided):
    # through the API, Stripe refuses to cancel a processing intent.
    IntentStatus.PROCESSING: frozenset(
        {IntentStatus.SUCCEEDED, IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.CANCELED}
    ),
    IntentStatus.SUCCEEDED: frozenset(),
    IntentStatus.CANCELED: frozenset(),
}


class CardBehaviour(enum.Enum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class PaymentError:
    """Stripe's `last_payment_error` (and the body of a 402 card error)."""

    code: str
    decline_code: str
    message: str
    type: str = "card_error"

    def to_json(self) -> JsonObject:
        return {
            "type": self.type,
            "code": self.code,
            "decline_code": self.decline_code,
            "message": self.message,
            "doc_url": f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}",
        }


GENERIC_DECLINE: Final = PaymentError("card_declined", "generic_decline", "Your card was declined.")


@dataclass(frozen=True, slots=True)
class CardProfile:
    behaviour: CardBehaviour
    error: PaymentError | None = None
    # The payment succeeds, but its refunds stay pending and then fail (Stripe's
    # pm_card_refundFail): see RefundBook / Ledger.settle_refund.
    refunds_fail: bool = False


TEST_PAYMENT_METHODS: Final[dict[str, CardProfile]] = {
    "pm_card_visa": CardProfile(CardBehaviour.SUCCEED),
    "pm_card_visa_debit": CardProfile(CardBehaviour.SUCCEED),
    "pm_card_mastercard": CardProfile(CardBehaviour.SUCCEED),
    "pm_card_amex": CardProfile(CardBehaviour.SUCCEED),
    "pm_card_processing": CardProfile(CardBehaviour.PROCESS),
    "pm_card_refundFail": CardProfile(CardBehaviour.SUCCEED, refunds_fail=True),
    "pm_card_chargeDeclined": CardProfile(CardBehaviour.DECLINE, GENERIC_DECLINE),
    "pm_card_visa_chargeDeclinedInsufficientFunds": CardProfile(
        CardBehaviour.DECLINE,
        PaymentError("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_chargeDeclinedInsufficientFunds": CardProfile(
        CardBehaviour.DECLINE,
        PaymentError("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_visa_chargeDeclinedLostCard": CardProfile(
        CardBehaviour.DECLINE, PaymentError("card_declined", "lost_card", "Your card was declined.")
    ),
    "pm_card_visa_chargeDeclinedStolenCard": CardProfile(
        CardBehaviour.DECLINE,
        PaymentError("card_declined", "stolen_card", "Your card was declined."),
    ),
}


@dataclass(slots=True, eq=False)
class PaymentIntent:
    id: str
    seq: int
    amount: int
    currency: str
    status: IntentStatus
    payment_method: str | None
    description: str | None
    metadata: dict[str, str]
    created: int
    idempotency_key: str | None
    latest_charge: str | None = None
    last_payment_error: PaymentError | None = None
    amount_received: int = 0
    amount_refunded: int = 0
    # The charge was disputed (a chargeback); at most one dispute per charge.
    disputed: bool = False
    # Charges that really moved (or are moving) money; never above 1 per intent.
    charges: int = 0
    canceled_at: int | None = None
    cancellation_reason: str | None = None
    payment_method_types: list[str] = field(default_factory=lambda: ["card"])

    @property
    def payment_id(self) -> str | None:
        return self.metadata.get("payment_id")

    def to_json(self) -> JsonObject:
        """The intent as Stripe's API returns it (a fresh snapshot)."""
        error = self.last_payment_error
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": 0,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "last_payment_error": None if error is None else error.to_json(),
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "payment_method": self.payment_method,
            "payment_method_types": list(self.payment_method_types),
            "status": self.status.value,
        }

    def to_ledger_json(self) -> JsonObject:
        """The row `GET /_sim/ledger` shows (a public contract of the control API)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "amount": self.amount,
            "currency": self.currency,
            "amount_refunded": self.amount_refunded,
            "disputed": self.disputed,
            "metadata": dict(self.metadata),
            "idempotency_key": self.idempotency_key,
            "charges": self.charges,
        }
