"""Stripe event objects: the types the simulator emits, their shape, and listing them.

Pure: no I/O. The ledger appends one event per state change; `/v1/events` pages
through them newest first, and the webhook deliverer posts them as they are. A new
event type is one `EventType` member plus one `_emit` call where it happens: the
deliverer and the listings do not look at the type.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from provider_sim.intents import JsonObject

API_VERSION: Final = "2024-06-20"


class EventType(enum.StrEnum):
    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    CHARGE_REFUNDED = "charge.refunded"
    CHARGE_DISPUTE_CREATED = "charge.dispute.created"


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
    """Our payment id, carried in the metadata of the event's object (intents and charges)."""
    metadata = event["data"]["object"].get("metadata") or {}
    payment_id = metadata.get("payment_id")
    return payment_id if isinstance(payment_id, str) else None


@dataclass(frozen=True, slots=True)
class CreatedRange:
    """Stripe's `created` filter: `created=t` or any of `created[gt|gte|lt|lte]=t`."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def accepts(self, created: int) -> bool:
        return (
            (self.gt is None or created > self.gt)
            and (self.gte is None or created >= self.gte)
            and (self.lt is None or created < self.lt)
            and (self.lte is None or created <= self.lte)
        )

    def below(self, created: int) -> bool:
        """Whether `created` is older than anything the range accepts."""
        return (self.gt is not None and created <= self.gt) or (
            self.gte is not None and created < self.gte
        )


@dataclass(frozen=True, slots=True)
class EventListQuery:
    created: CreatedRange = CreatedRange()
    # Exact types, or prefixes written `payment_intent.*`; empty: every type.
    types: tuple[str, ...] = ()
    limit: int = 10

    def matches(self, event: JsonObject) -> bool:
        if not self.created.accepts(event["created"]):
            return False
        return not self.types or any(_type_matches(t, event["type"]) for t in self.types)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def page_newest_first(
    events: Sequence[JsonObject],
    query: EventListQuery,
    *,
    before: int | None = None,
    after: int | None = None,
) -> tuple[list[JsonObject], bool]:
    """One page of `events` (oldest first, as appended), newest first, and `has_more`.

    `before` (starting_after's position) keeps older events only and pages towards
    the past; `after` (ending_before's position) keeps newer ones: the page closest
    to it. Events are appended in `created` order, so a scan stops at the range.
    """
    if after is not None:
        found: list[JsonObject] = []
        for event in events[after + 1 :]:
            if query.matches(event):
                found.append(event)
        has_more = len(found) > query.limit
        return list(reversed(found[: query.limit])), has_more
    found = []
    end = len(events) if before is None else before
    for index in range(end - 1, -1, -1):
        event = events[index]
        if query.created.below(event["created"]):
            break
        if query.matches(event):
            if len(found) == query.limit:
                return found, True
            found.append(event)
    return found, False
