"""Stripe event objects -> what they say about a payment (ProviderObservation).

Every event type we act on is listed once; any other type is `Unknown`: it
is stored in the inbox and matched, but moves nothing.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from payment_svc.adapters.stripe_mapping import intent_failure, intent_status
from payment_svc.domain.cards import redact_value
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.provider_events import ProviderObservation, StateRank
from payment_svc.domain.status import PaymentStatus


class StripeEventType(enum.StrEnum):
    """The types the provider sends (SPEC §5); anything else is UNKNOWN."""

    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    CHARGE_REFUNDED = "charge.refunded"
    CHARGE_DISPUTE_CREATED = "charge.dispute.created"
    UNKNOWN = "unknown"

    @classmethod
    def classify(cls, raw: str) -> StripeEventType:
        try:
            return cls(raw) if raw != cls.UNKNOWN else cls.UNKNOWN
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    type: str
    created: datetime | None
    # The body to store: the provider's JSON with every card number redacted
    # (it should never be there; it is never stored).
    stored_json: str
    observation: ProviderObservation


def _bad(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("payload", description)])


def parse_event(payload: bytes) -> ParsedEvent:
    try:
        text = payload.decode()
        event = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad("must be a JSON event object") from None
    if not isinstance(event, dict):
        raise _bad("must be a JSON event object")
    # The one place an event's contents come in: every card number goes here,
    # structurally (the stored body stays valid JSON), before anything is
    # taken from it (ids, type, object, failure message, metadata).
    try:
        event = redact_value(event)
    except RecursionError:
        raise _bad("must not be nested this deep") from None
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise _bad("id must be the provider's event id")
    if not isinstance(event_type, str) or not event_type:
        raise _bad("type must be a non-empty string")
    if not isinstance(obj, dict):
        raise _bad("data.object must be an object")
    created_raw = event.get("created")
    created = (
        datetime.fromtimestamp(created_raw, tz=UTC)
        if isinstance(created_raw, int) and not isinstance(created_raw, bool)
        else None
    )
    stored = json.dumps(event)
    return ParsedEvent(event_id, event_type, created, stored, observe(event_type, obj, created))


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def observe(event_type: str, obj: dict[str, Any], created: datetime | None) -> ProviderObservation:
    kind = StripeEventType.classify(event_type)
    metadata = obj.get("metadata")
    metadata_payment_id = _str(metadata, "payment_id") if isinstance(metadata, dict) else None
    match kind:
        case (
            StripeEventType.PAYMENT_INTENT_PROCESSING
            | StripeEventType.PAYMENT_INTENT_SUCCEEDED
            | StripeEventType.PAYMENT_INTENT_PAYMENT_FAILED
            | StripeEventType.PAYMENT_INTENT_CANCELED
        ):
            provider_status, ours = intent_status(obj)
            code, message = intent_failure(obj) if ours is PaymentStatus.FAILED else (None, None)
            if (
                ours is PaymentStatus.FAILED
                and code is None
                and provider_status.value == "canceled"
            ):
                code = "canceled"
            return ProviderObservation(
                provider_payment_id=_str(obj, "id"),
                metadata_payment_id=metadata_payment_id,
                status=ours,
                rank=StateRank.IN_PROGRESS if ours is PaymentStatus.PENDING else StateRank.SETTLED,
                occurred_at=created,
                provider_status=provider_status.value,
                failure_code=code,
                failure_message=message,
                amount=_int(obj, "amount"),
                currency=_str(obj, "currency"),
            )
        case StripeEventType.CHARGE_REFUNDED | StripeEventType.CHARGE_DISPUTE_CREATED:
            refund = kind is StripeEventType.CHARGE_REFUNDED
            return ProviderObservation(
                provider_payment_id=_str(obj, "payment_intent"),
                metadata_payment_id=metadata_payment_id,
                status=PaymentStatus.REVERSED,
                rank=StateRank.REVERSED,
                occurred_at=created,
                provider_status=kind.value,
                # the charge's cumulative refunds, or the dispute's own amount
                amount_reversed=_int(obj, "amount_refunded") if refund else None,
                reversal_added=None if refund else _int(obj, "amount"),
            )
        case StripeEventType.UNKNOWN:
            return ProviderObservation(
                provider_payment_id=_str(obj, "payment_intent") or _str(obj, "id"),
                metadata_payment_id=metadata_payment_id,
                status=None,
                rank=StateRank.IN_PROGRESS,
                occurred_at=created,
            )
