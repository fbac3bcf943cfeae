"""Stripe's objects as the reconciler reads them: payment intents (with their
latest charge) and events. Pure: no I/O.

Statuses map to ours through this package's one table (status.py), which
payment-svc's snapshots use too; the event types we replay are the list that
payment-svc applies (events.py), so that the reconciler asks the provider for
exactly what payment-svc knows how to apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from payments_stripe.events import StripeEventType
from payments_stripe.status import (
    RefundState,
    Status,
    StripeIntentStatus,
    intent_failure,
    intent_status,
    refund_failure,
    refund_status,
    reversed_status,
    snapshot_reversed,
)

# What catch-up asks `GET /v1/events` for (Stripe accepts up to 20 types).
EVENT_TYPES: Final = tuple(t.value for t in StripeEventType if t is not StripeEventType.UNKNOWN)

# Intents whose money moved or is moving: one we never recorded is a payment
# we do not know about. Others (never confirmed, declined, canceled) moved
# nothing.
MONEY_MOVING: Final = frozenset(
    {
        StripeIntentStatus.SUCCEEDED,
        StripeIntentStatus.PROCESSING,
        StripeIntentStatus.REQUIRES_CAPTURE,
    }
)


class MalformedAnswer(ValueError):
    """The provider answered with something that is not the object asked for."""


@dataclass(frozen=True, slots=True)
class ProviderIntent:
    id: str
    status: str  # Stripe's own word
    amount: int
    currency: str  # upper case, as ours
    created: int
    payment_id: str  # metadata['payment_id'], "" when absent
    amount_refunded: int  # from the latest charge (0 when it was not expanded)
    disputed: bool
    failure_code: str
    failure_message: str
    # Our status for the intent's own status (reversals aside): this package's mapping.
    mapped: Status

    @property
    def stripe_status(self) -> StripeIntentStatus:
        return StripeIntentStatus.parse(self.status)

    @property
    def moved_money(self) -> bool:
        return self.stripe_status in MONEY_MOVING


def parse_intent(obj: Any) -> ProviderIntent:
    if not isinstance(obj, dict) or obj.get("object", "payment_intent") != "payment_intent":
        raise MalformedAnswer("not a payment intent")
    intent_id, amount, currency = obj.get("id"), obj.get("amount"), obj.get("currency")
    if not isinstance(intent_id, str) or not intent_id:
        raise MalformedAnswer("a payment intent without an id")
    if not _is_int(amount) or not isinstance(currency, str):
        raise MalformedAnswer(f"payment intent {intent_id} without amount or currency")
    _, ours = intent_status(obj)
    code, message = intent_failure(obj) if ours is Status.FAILED else (None, None)
    if ours is Status.FAILED and not code:
        # payment-svc reads a failure code as "the attempt failed": never leave it empty.
        code = str(obj.get("cancellation_reason") or obj.get("status"))
    metadata = obj.get("metadata")
    payment_id = metadata.get("payment_id") if isinstance(metadata, dict) else None
    # latest_charge is an id unless expanded (expand[]=latest_charge).
    charge = obj.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {}
    refunded = charge.get("amount_refunded")
    created = obj.get("created")
    return ProviderIntent(
        id=intent_id,
        status=str(obj.get("status") or ""),
        amount=amount,
        currency=currency.upper(),
        created=created if _is_int(created) else 0,
        payment_id=payment_id if isinstance(payment_id, str) else "",
        amount_refunded=refunded if _is_int(refunded) else 0,
        disputed=charge.get("disputed") is True,
        failure_code=code or "",
        failure_message=message or "",
        mapped=ours,
    )


def reversed_amount(intent: ProviderIntent) -> int:
    """What refunds and disputes took back of the intent's charge, counted as
    payment-svc counts a snapshot (a disputed charge is reversed whole)."""
    return snapshot_reversed(
        intent.amount, amount_refunded=intent.amount_refunded, disputed=intent.disputed
    )


def our_view(intent: ProviderIntent) -> Status:
    """The status (ours) that the intent stands for, reversals included: by
    the one rule (payments_kit/reversal.py), only reversals of the whole
    amount make it REVERSED; partly refunded, it is SUCCEEDED."""
    return reversed_status(intent.mapped, intent.amount, reversed_amount(intent))


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    payment_intent: str
    status: str  # Stripe's own word
    amount: int
    currency: str  # upper case, as ours
    created: int
    refund_id: str  # metadata['refund_id'], "" when absent (made at the provider)
    reason: str
    failure_reason: str
    # Our state for it: this package's one mapping (status.py)
    mapped: RefundState

    @property
    def counts(self) -> bool:
        """Whether it takes money back (succeeded), as our refunds count."""
        return self.mapped is RefundState.SUCCEEDED


def parse_refund(obj: Any) -> ProviderRefund:
    if not isinstance(obj, dict) or obj.get("object", "refund") != "refund":
        raise MalformedAnswer("not a refund")
    refund_id, amount, currency = obj.get("id"), obj.get("amount"), obj.get("currency")
    if not isinstance(refund_id, str) or not refund_id:
        raise MalformedAnswer("a refund without an id")
    if not _is_int(amount) or not isinstance(currency, str):
        raise MalformedAnswer(f"refund {refund_id} without amount or currency")
    _, mapped = refund_status(obj)
    code, _ = refund_failure(obj) if mapped is RefundState.FAILED else (None, None)
    metadata = obj.get("metadata")
    ours = metadata.get("refund_id") if isinstance(metadata, dict) else None
    intent = obj.get("payment_intent")
    created = obj.get("created")
    return ProviderRefund(
        id=refund_id,
        payment_intent=intent if isinstance(intent, str) else "",
        status=str(obj.get("status") or ""),
        amount=amount,
        currency=currency.upper(),
        created=created if _is_int(created) else 0,
        refund_id=ours if isinstance(ours, str) else "",
        reason=str(obj.get("reason") or ""),
        failure_reason=code or "",
        mapped=mapped,
    )


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    id: str
    type: str
    created: int
    # The event object re-serialised as compact JSON: what payment-svc stores.
    payload: bytes


def parse_event(obj: Any) -> ProviderEvent:
    if not isinstance(obj, dict):
        raise MalformedAnswer("not an event")
    event_id, event_type, created = obj.get("id"), obj.get("type"), obj.get("created")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not _is_int(created):
        raise MalformedAnswer("an event without id, type or created")
    payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return ProviderEvent(event_id, event_type, created, payload)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
