"""Stripe events -> what they say about a payment (ProviderObservation).

The Stripe package (payments_stripe.events) checks an event and lists its
types; here its meaning for a payment is read, in the domain's words. An event
it refuses is UnprocessableEvent (the quarantine, never a retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from payment_svc.domain.errors import FieldViolation, UnprocessableEvent
from payment_svc.domain.provider_events import ProviderObservation, StateRank
from payment_svc.domain.reconciliation import ProviderFacts, Snapshot
from payment_svc.domain.refund_events import ProviderRefundFact, ProviderRefundWords
from payment_svc.domain.refunds import RefundStatus
from payment_svc.domain.status import PaymentStatus
from payments_stripe import events as stripe_events
from payments_stripe.events import (
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    EventRefund,
    MalformedEvent,
    StripeEventType,
    amount_field,
    event_refund,
    listed_refunds,
    text_field,
)
from payments_stripe.status import (
    RefundState,
    Status,
    StripeIntentStatus,
    StripeRefundStatus,
    intent_failure,
    intent_status,
    refund_failure,
    snapshot_reversed,
    to_payment_status,
    to_refund_state,
)


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    type: str
    created: datetime | None
    # The body to store: the provider's JSON with every card number redacted
    # (it should never be there; it is never stored).
    stored_json: str
    observation: ProviderObservation


def ours(status: Status) -> PaymentStatus:
    """The Stripe package's word for a payment state, as the domain's."""
    return PaymentStatus[status.name]


def snapshot(facts: ProviderFacts) -> Snapshot:
    """The reconciler's snapshot of an intent (Stripe's words) in the domain's:
    the intent's own status by the Stripe package's one mapping, and the
    amount refunds and disputes took back as the package counts it (evidence
    to compare with ours: domain/reversals.py; REVERSED is the domain's to
    derive from the refunds and disputes it knows). payment-svc's
    SnapshotReader (service_layer/ports.py), wired in main."""
    amount = facts.amount
    reversed_amount = snapshot_reversed(
        amount, amount_refunded=facts.amount_refunded, disputed=facts.disputed
    )
    status = None
    if facts.found:
        own = to_payment_status(
            StripeIntentStatus.parse(facts.provider_status),
            has_payment_error=bool(facts.failure_code),
        )
        status = ours(own)
    return Snapshot(
        found=facts.found,
        status=status,
        provider_payment_id=facts.provider_payment_id,
        amount=amount,
        currency=facts.currency,
        amount_reversed=reversed_amount,
        failure_code=facts.failure_code,
        failure_message=facts.failure_message,
        provider_status=facts.provider_status,
        refunded=facts.amount_refunded,
        disputed=facts.disputed,
    )


def parse_event(payload: bytes) -> ParsedEvent:
    try:
        event = stripe_events.parse_event(payload)
        observation = observe(event.type, event.object, event.created)
    except MalformedEvent as exc:
        raise UnprocessableEvent([FieldViolation("payload", exc.description)]) from None
    return ParsedEvent(event.id, event.type, event.created, event.stored_json, observation)


def observe(event_type: str, obj: dict[str, Any], created: datetime | None) -> ProviderObservation:
    kind = StripeEventType.classify(event_type)
    metadata = obj.get("metadata")
    metadata_payment_id = text_field(metadata, "payment_id") if isinstance(metadata, dict) else None
    match kind:
        case (
            StripeEventType.PAYMENT_INTENT_PROCESSING
            | StripeEventType.PAYMENT_INTENT_SUCCEEDED
            | StripeEventType.PAYMENT_INTENT_PAYMENT_FAILED
            | StripeEventType.PAYMENT_INTENT_CANCELED
        ):
            provider_status, mapped = intent_status(obj)
            now = ours(mapped)
            code, message = intent_failure(obj) if now is PaymentStatus.FAILED else (None, None)
            canceled = provider_status is StripeIntentStatus.CANCELED
            if now is PaymentStatus.FAILED and code is None and canceled:
                code = "canceled"
            return ProviderObservation(
                provider_payment_id=text_field(obj, "id"),
                metadata_payment_id=metadata_payment_id,
                status=now,
                rank=StateRank.IN_PROGRESS if now is PaymentStatus.PENDING else StateRank.SETTLED,
                occurred_at=created,
                provider_status=provider_status.value,
                failure_code=code[:MAX_ID_CHARS] if code else None,
                failure_message=message[:MAX_MESSAGE_CHARS] if message else None,
                amount=amount_field(obj, "amount"),
                currency=text_field(obj, "currency"),
            )
        case (
            StripeEventType.REFUND_CREATED
            | StripeEventType.REFUND_UPDATED
            | StripeEventType.REFUND_FAILED
        ):
            one = event_refund(obj)
            return _refunds_observed(
                [one], one.payment_intent, one.metadata_payment_id, created, kind
            )
        case StripeEventType.CHARGE_REFUNDED if (listed := listed_refunds(obj)) is not None:
            # The refunds are the truth: the charge's amount_refunded counts
            # the pending ones too (domain/refund_events.py).
            return _refunds_observed(
                listed, text_field(obj, "payment_intent"), metadata_payment_id, created, kind
            )
        case StripeEventType.CHARGE_REFUNDED | StripeEventType.CHARGE_DISPUTE_CREATED:
            refund = kind is StripeEventType.CHARGE_REFUNDED
            return ProviderObservation(
                provider_payment_id=text_field(obj, "payment_intent"),
                metadata_payment_id=metadata_payment_id,
                # Of a succeeded charge; whether it reverses the payment
                # whole is the domain's rule (domain/reversals.py).
                status=PaymentStatus.SUCCEEDED,
                rank=StateRank.REVERSED,
                occurred_at=created,
                provider_status=kind.value,
                # the charge's cumulative refunds, or the dispute's own amount
                amount_reversed=amount_field(obj, "amount_refunded") if refund else None,
                reversal_added=None if refund else amount_field(obj, "amount"),
                reversal=True,
            )
        case StripeEventType.UNKNOWN:
            return ProviderObservation(
                provider_payment_id=text_field(obj, "payment_intent") or text_field(obj, "id"),
                metadata_payment_id=metadata_payment_id,
                status=None,
                rank=StateRank.IN_PROGRESS,
                occurred_at=created,
            )


def refund_snapshot(words: ProviderRefundWords) -> ProviderRefundFact:
    """The reconciler's fetch of one refund (Stripe's words) in the domain's:
    its status by the Stripe package's one mapping, a failure's reason as
    its code. payment-svc's RefundReader (service_layer/ports.py), wired in
    main."""
    provider_status = StripeRefundStatus.parse(words.provider_status)
    state = to_refund_state(provider_status)
    failed = state is RefundState.FAILED
    # The Stripe package's one reading of a failure, as for events.
    code, message = refund_failure(
        {"failure_reason": words.failure_reason, "status": words.provider_status}
    )
    return ProviderRefundFact(
        provider_refund_id=words.provider_refund_id,
        provider_payment_id=None,
        metadata_refund_id=words.metadata_refund_id or None,
        amount=words.amount,
        currency=words.currency.upper(),
        status=RefundStatus[state.name],
        provider_status=provider_status.value,
        reason=words.reason,
        failure_code=(code or "failed") if failed else None,
        failure_message=(message or "refund failed at the provider: failed") if failed else None,
    )


def refund_fact(refund: EventRefund) -> ProviderRefundFact:
    """A provider refund in the domain's words (the status by the Stripe
    package's one mapping)."""
    return ProviderRefundFact(
        provider_refund_id=refund.id,
        provider_payment_id=refund.payment_intent,
        metadata_refund_id=refund.metadata_refund_id,
        amount=refund.amount,
        currency=refund.currency,
        status=RefundStatus[refund.state.name],
        provider_status=refund.provider_status.value,
        reason=refund.reason or "",
        failure_code=refund.failure_code,
        failure_message=refund.failure_message,
    )


def _refunds_observed(
    refunds: list[EventRefund],
    provider_payment_id: str | None,
    metadata_payment_id: str | None,
    created: datetime | None,
    kind: StripeEventType,
) -> ProviderObservation:
    return ProviderObservation(
        provider_payment_id=provider_payment_id,
        metadata_payment_id=metadata_payment_id,
        status=None,
        rank=StateRank.REVERSED,
        occurred_at=created,
        provider_status=kind.value,
        refund_event=True,
        refunds=tuple(refund_fact(r) for r in refunds),
        refund_listing=kind is StripeEventType.CHARGE_REFUNDED,
    )
