"""The provider's event envelope, parsed from a verified body. Pure: no I/O.

    {"id": "evt_...", "type": "payment_intent.succeeded", "created": 1700000000,
     "data": {"object": {...}}, ...}

Only the envelope is checked here; what the object means is payment-svc's
business. Event types we do not know are still forwarded (payment-svc records
them; refusing them would make the provider retry forever): `EventType.UNKNOWN`
only keeps the metric's `type` label bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The one list of provider event types, payment-svc's: the gateway forwards
# what payment-svc understands, and names the rest UNKNOWN in its metrics.
from payments_stripe.events import StripeEventType
from webhook_gateway.errors import EventError, Reason

EventType = StripeEventType

_MAX_FIELD_CHARS = 255
# google.protobuf.Timestamp's range ends at 9999-12-31T23:59:59Z.
_MAX_CREATED = 253_402_300_799


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    id: str
    type: str
    created: int
    # The verified body, byte for byte: forwarded as received, never re-serialised.
    payload: bytes
    # Why the verified body is not an event we can read ("": it is one);
    # payment-svc then quarantines it.
    unreadable: str = ""

    @property
    def kind(self) -> EventType:
        return EventType.classify(self.type)


def parse_event(body: bytes) -> ProviderEvent:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 and bad JSON are ValueErrors
        raise EventError(Reason.INVALID_JSON, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise _invalid("the body is not a JSON object")
    event_id = _text(document, "id")
    if not event_id.startswith("evt_") or not event_id.isascii():
        raise _invalid("id must be an event id (evt_...)")
    event_type = _text(document, "type")
    created = document.get("created")
    # bool is an int in Python, never a time.
    if type(created) is not int or not 0 <= created <= _MAX_CREATED:
        raise _invalid("created must be a unix time in seconds")
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _invalid("data.object must be an object")
    return ProviderEvent(event_id, event_type, created, body)


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD_CHARS:
        raise _invalid(f"{key} must be a string of 1 to {_MAX_FIELD_CHARS} characters")
    # Also refuses lone surrogates (a JSON "\ud800"), which protobuf cannot encode.
    if not value.isprintable():
        raise _invalid(f"{key} must be printable text")
    return value


def _invalid(message: str) -> EventError:
    return EventError(Reason.INVALID_EVENT, message)
