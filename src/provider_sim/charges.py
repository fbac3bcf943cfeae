"""Charges, refunds and disputes: the money side of a payment intent, as Stripe shows it.

Pure: no I/O.

    PaymentIntent ── latest_charge ─ ch_...  a view of the intent: amount, status,
                                      │       amount_refunded, refunded, disputed
                                      ├─ Refund  re_...  many, up to the amount received
                                      │                  (refunds.py)
                                      └─ Dispute dp_...  at most one (a chargeback)

The charge is not stored on its own: an intent makes at most one, so its JSON is
built from the intent when asked for (`expand[]=latest_charge`, event payloads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from provider_sim.intents import IntentStatus, JsonObject, PaymentIntent
from provider_sim.refunds import Refund

DISPUTE_REASONS: Final = frozenset(
    {
        "bank_cannot_process",
        "credit_not_processed",
        "customer_initiated",
        "debit_not_authorized",
        "duplicate",
        "fraudulent",
        "general",
        "incorrect_account_details",
        "insufficient_funds",
        "product_not_received",
        "product_unacceptable",
        "subscription_canceled",
        "unrecognized",
    }
)
DEFAULT_DISPUTE_REASON: Final = "fraudulent"

# The status of an intent's charge; only intents that were charged have one.
CHARGE_STATUS: Final[dict[IntentStatus, str]] = {
    IntentStatus.PROCESSING: "pending",
    IntentStatus.SUCCEEDED: "succeeded",
    # The charge of a settled-as-failed or voided intent; a new confirmation would
    # make a new charge.
    IntentStatus.REQUIRES_PAYMENT_METHOD: "failed",
    IntentStatus.REQUIRES_CONFIRMATION: "failed",
    IntentStatus.CANCELED: "failed",
}


def refundable(intent: PaymentIntent) -> int:
    """What is left to refund (or to dispute) of the intent's charge."""
    return intent.amount_received - intent.amount_refunded


def charge_json(intent: PaymentIntent, refunds: list[Refund] | None = None) -> JsonObject:
    """The intent's latest charge as Stripe's API returns it (a fresh snapshot).

    With `refunds` (the intent's, oldest first), the charge carries them as Stripe's
    list, newest first, as the `charge.refunded` event shows them; the API leaves
    it out (not included by default since API version 2022-11-15)."""
    assert intent.latest_charge is not None
    status = CHARGE_STATUS[intent.status]
    error = intent.last_payment_error if status == "failed" else None
    captured = intent.amount_received
    body: JsonObject = {
        "id": intent.latest_charge,
        "object": "charge",
        "amount": intent.amount,
        "amount_captured": captured,
        "amount_refunded": intent.amount_refunded,
        "balance_transaction": None,
        "captured": captured > 0,
        "created": intent.created,
        "currency": intent.currency,
        "description": intent.description,
        "disputed": intent.disputed,
        "failure_code": None if error is None else error.code,
        "failure_message": None if error is None else error.message,
        "livemode": False,
        "metadata": dict(intent.metadata),
        "paid": status == "succeeded",
        "payment_intent": intent.id,
        "payment_method": intent.payment_method,
        "refunded": captured > 0 and intent.amount_refunded >= captured,
        "status": status,
    }
    if refunds is not None:
        body["refunds"] = {
            "object": "list",
            "data": [refund.to_json() for refund in reversed(refunds)],
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{intent.latest_charge}/refunds",
        }
    return body


def intent_json(intent: PaymentIntent, *, expand_charge: bool = False) -> JsonObject:
    """The intent, with `latest_charge` as the charge object when expanded (and charged)."""
    body = intent.to_json()
    if expand_charge and intent.latest_charge is not None:
        body["latest_charge"] = charge_json(intent)
    return body


@dataclass(frozen=True, slots=True)
class Dispute:
    id: str
    amount: int
    charge: str
    payment_intent: str
    currency: str
    created: int
    reason: str
    # Copied from the intent, so a consumer finds its own payment id on the dispute too.
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "object": "dispute",
            "amount": self.amount,
            "balance_transactions": [],
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": "needs_response",
        }
