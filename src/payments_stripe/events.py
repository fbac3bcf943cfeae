"""Stripe event objects: their types, and the checks that make one safe to
read and store (payment_svc/adapters/stripe_observations.py says what an
event means for a payment).

Every event type we act on is listed once; any other type is `Unknown`: it
is stored in the inbox and matched, but moves nothing.

An event that can never be understood or stored is MalformedEvent (payment-svc
sends it to the quarantine, never to a retry): not a JSON object, nesting deeper
than MAX_DEPTH, NaN/Infinity or numbers out of range, NUL or a lone surrogate
in any string (Postgres's jsonb refuses both), ids longer than MAX_ID_CHARS
(index keys), a `created` outside the years 1970..9999, amounts outside
0..MAX_PROVIDER_AMOUNT.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from payments_kit.cards import redact_value
from payments_stripe.status import RefundState, StripeRefundStatus, refund_failure, refund_status


class StripeEventType(enum.StrEnum):
    """The types the provider sends (SPEC §5); anything else is UNKNOWN."""

    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    CHARGE_REFUNDED = "charge.refunded"
    CHARGE_DISPUTE_CREATED = "charge.dispute.created"
    REFUND_CREATED = "refund.created"
    REFUND_UPDATED = "refund.updated"
    REFUND_FAILED = "refund.failed"
    UNKNOWN = "unknown"

    @classmethod
    def classify(cls, raw: str) -> StripeEventType:
        try:
            return cls(raw) if raw != cls.UNKNOWN else cls.UNKNOWN
        except ValueError:
            return cls.UNKNOWN


class MalformedEvent(ValueError):
    """An event that can never be understood or stored; `description` says why."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: datetime | None
    # The body to store: the provider's JSON with every card number redacted
    # (it should never be there; it is never stored).
    stored_json: str
    # data.object, redacted: what the event is about
    object: dict[str, Any]


MAX_DEPTH = 64
MAX_ID_CHARS = 255
MAX_MESSAGE_CHARS = 1000
# Far above any real charge, far below bigint: sums of two stay in range.
MAX_PROVIDER_AMOUNT = 10**15
MAX_CREATED = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_NUMBER_CHARS = 64
# What Postgres's jsonb and text refuse: NUL, and lone surrogates.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def _bad(description: str) -> MalformedEvent:
    return MalformedEvent(description)


# jsonb prints numbers in plain decimal notation (1e300 comes back as 301
# digits): a stored event must parse again when it is read back (the inbox's
# rematch, a replay), so magnitudes stay where that text stays short.
_MAX_MAGNITUDE = 1e40
_MIN_MAGNITUDE = 1e-20


def _number(literal: str) -> float:
    value = float(literal)
    if len(literal) > _MAX_NUMBER_CHARS or not math.isfinite(value):
        raise ValueError("number out of range")
    if value and not _MIN_MAGNITUDE <= abs(value) < _MAX_MAGNITUDE:
        raise ValueError("number out of range")
    return value


def _integer(literal: str) -> int:
    if len(literal) > _MAX_NUMBER_CHARS:
        raise ValueError("number out of range")
    return int(literal)


def _refuse(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def _check_tree(document: Any) -> None:
    """Depth and strings of the whole document, without recursion."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise _bad(f"must not nest deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _UNSTORABLE_CHARS.search(key):
                    raise _bad("must not hold NUL characters or lone surrogates")
                stack.append((item, depth + 1))
        elif isinstance(value, str) and _UNSTORABLE_CHARS.search(value):
            raise _bad("must not hold NUL characters or lone surrogates")


def parse_event(payload: bytes) -> StripeEvent:
    try:
        text = payload.decode()
        event = json.loads(text, parse_float=_number, parse_int=_integer, parse_constant=_refuse)
    except (ValueError, RecursionError):  # bad UTF-8 and bad JSON are ValueErrors
        raise _bad("must be a JSON event object") from None
    if not isinstance(event, dict):
        raise _bad("must be a JSON event object")
    _check_tree(event)
    # The one place an event's contents come in: every card number goes here,
    # structurally (the stored body stays valid JSON), before anything is
    # taken from it (ids, type, object, failure message, metadata). The tree
    # was checked above, so its depth is bounded.
    event = redact_value(event)
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_CHARS:
        raise _bad("id must be the provider's event id")
    if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_ID_CHARS:
        raise _bad(f"type must be a string of 1..{MAX_ID_CHARS} characters")
    if not isinstance(obj, dict):
        raise _bad("data.object must be an object")
    created_raw = event.get("created")
    created = None
    if isinstance(created_raw, int) and not isinstance(created_raw, bool):
        if not 0 <= created_raw <= MAX_CREATED:
            raise _bad("created must be a unix time of the years 1970..9999")
        created = datetime.fromtimestamp(created_raw, tz=UTC)
    stored = json.dumps(event)
    return StripeEvent(event_id, event_type, created, stored, obj)


def text_field(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        raise _bad(f"data.object.{key} must be at most {MAX_ID_CHARS} characters")
    return value if isinstance(value, str) and value else None


def amount_field(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # Stripe's amounts are integers: anything else (a string, a float, a card
    # number redacted into the marker) is an event we do not understand.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"data.object.{key} must be an integer")
    if not 0 <= value <= MAX_PROVIDER_AMOUNT:
        raise _bad(f"data.object.{key} must be 0..{MAX_PROVIDER_AMOUNT}")
    return value


@dataclass(frozen=True)
class EventRefund:
    """A refund object of an event (refund.*, or one listed by a
    charge.refunded), checked; its status by the one mapping (status.py)."""

    id: str
    payment_intent: str | None
    amount: int
    currency: str
    provider_status: StripeRefundStatus
    state: RefundState
    # metadata.refund_id: ours when we asked for it; None when the refund
    # was made at the provider directly (dashboard, API)
    metadata_refund_id: str | None
    metadata_payment_id: str | None
    reason: str | None
    failure_code: str | None
    failure_message: str | None


def event_refund(obj: dict[str, Any]) -> EventRefund:
    """A refund object of an event, or MalformedEvent."""
    refund_id = text_field(obj, "id")
    amount = amount_field(obj, "amount")
    currency = text_field(obj, "currency")
    if refund_id is None or amount is None or currency is None:
        raise _bad("a refund must have an id, an amount and a currency")
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    provider_status, state = refund_status(obj)
    code, message = refund_failure(obj) if state is RefundState.FAILED else (None, None)
    return EventRefund(
        id=refund_id,
        payment_intent=text_field(obj, "payment_intent"),
        amount=amount,
        currency=currency.upper(),
        provider_status=provider_status,
        state=state,
        metadata_refund_id=text_field(metadata, "refund_id"),
        metadata_payment_id=text_field(metadata, "payment_id"),
        reason=text_field(obj, "reason"),
        failure_code=code[:MAX_ID_CHARS] if code else None,
        failure_message=message[:MAX_MESSAGE_CHARS] if message else None,
    )


def listed_refunds(charge: dict[str, Any]) -> list[EventRefund] | None:
    """The refunds a charge lists (`refunds.data`, as charge.refunded shows
    them in API versions before 2022-11-15 and in provider-sim), or None
    when it lists none: then only its cumulative amount_refunded is known."""
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, dict) else None
    if not isinstance(data, list):
        return None
    if not all(isinstance(r, dict) for r in data):
        raise _bad("data.object.refunds.data must hold refund objects")
    return [event_refund(r) for r in data]
