"""Stripe event objects: the types the simulator emits, their shape, and listing them.

Pure: no I/O. The ledger appends one event per state change; `/v1/events` pages
through them newest first (listing.py), and the webhook deliverer posts them as
they are. A new event type is one `EventType` member plus one `_emit` call where it
happens: the deliverer and the listings do not look at the type.

    payment_intent.*        data.object: the payment intent
    charge.refunded         data.object: the charge (amount_refunded, refunded, metadata,
                            refunds: its refunds newest first); when a refund succeeds
    charge.dispute.created  data.object: the dispute (dp_..., charge, payment_intent)
    refund.created          data.object: the refund (re_..., status, metadata), when made
    refund.updated          data.object: the refund, when its status changes
    refund.failed           data.object: the refund (status failed, failure_reason)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from provider_sim.intents import JsonObject
from provider_sim.listing import CreatedRange

API_VERSION: Final = "2024-06-20"


class EventType(enum.StrEnum):
    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    CHARGE_REFUNDED = "charge.refunded"
    CHARGE_DISPUTE_CREATED = "charge.dispute.created"
    REFUND_CREATED = "refund.created"
    REFUND_UPDATED = "refund.updated"
    REFUND_FAILED = "refund.failed"


def event_object(
    event_id: str, event_type: EventType, created: int, obj: JsonObject, request_key: str | None
) -> JsonObject:
    """The event as Stripe's API returns it; `obj` is a snapshot taken at that moment."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": request_key},
        "type": event_type.value,
    }


def payment_id_of(event: JsonObject) -> str | None:
    """Our payment id, carried in the metadata of the event's object (intents, charges and
    disputes)."""
    metadata = event["data"]["object"].get("metadata") or {}
    payment_id = metadata.get("payment_id")
    return payment_id if isinstance(payment_id, str) else None


@dataclass(frozen=True, slots=True)
class EventListQuery:
    created: CreatedRange = field(default_factory=CreatedRange)
    # Exact types, or prefixes written `payment_intent.*`; empty: every type.
    types: tuple[str, ...] = ()
    limit: int = 10

    def matches(self, event: JsonObject) -> bool:
        return self.created.accepts(event["created"]) and self.matches_type(event)

    def matches_type(self, event: JsonObject) -> bool:
        return not self.types or any(_type_matches(t, event["type"]) for t in self.types)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern
