"""The provider-event inbox in our terms: an event to apply, what applying it
did, and the upkeep's views of unmatched events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from payment_svc.domain.model import Payment, PaymentRow
from payment_svc.domain.provider_events import (
    EventPlan,
    ProviderObservation,
    advance,
    plan_event,
)
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.status import PaymentStatus, Source


@dataclass(frozen=True)
class InboxEvent:
    provider_event_id: str
    event_type: str
    created: datetime | None
    stored_json: str
    observation: ProviderObservation
    source: Source


@dataclass(frozen=True)
class EventOutcome:
    duplicate: bool
    payment_id: uuid.UUID | None
    applied: bool
    # A discrepancy this event revealed (recorded in the same transaction).
    discrepancy: DiscrepancyKind | None = None
    # A refund counted as given back failed (domain/reversals.undone): alerted.
    undone: bool = False
    # The event could never be understood or stored: kept in the quarantine
    # under this id (a result, not an error: its callers acknowledge it).
    quarantine_id: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """An inbox row as stored, for the upkeep to parse again."""

    payload: str
    provider_created_at: datetime | None
    source: str


@dataclass(frozen=True)
class UnmatchedEvent:
    """An inbox event that matched no payment before its deadline."""

    provider_event_id: str
    event_type: str
    provider_object_id: str | None
    metadata_payment_id: str | None
    received_at: datetime


@dataclass
class Rematched:
    matched: int = 0
    # inbox rows that no longer parse (stored by an older parser)
    unreadable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EventTarget:
    """The payment an event is about, locked, with the newest provider state
    applied to it (provider_events.is_stale compares with it)."""

    payment: Payment
    provider_state_at: datetime | None
    provider_state_rank: int | None


@dataclass(frozen=True)
class EventWrite:
    """What one matched event writes, decided here; the inbox adapter writes
    it in one statement (the inbox row, the payment, its history entry)."""

    payment_id: uuid.UUID
    # the history entry: from, to, whether the payment moved, why
    from_status: PaymentStatus
    to_status: PaymentStatus
    applied: bool
    note: str | None
    # The payment's own history entry for the event; an event about refunds
    # writes one per refund instead (domain/refund_events.py).
    history: bool = True
    # The payment's row after the event; None: the row is not written.
    row: PaymentRow | None = None


def refund_event_write(target: EventTarget, note: str | None = None) -> EventWrite:
    """An event about refunds: the inbox row only (the payment moves with
    its refunds, each with its own history entry)."""
    payment = target.payment
    return EventWrite(
        payment_id=payment.id,
        from_status=payment.status,
        to_status=payment.status,
        applied=False,
        note=note,
        history=note is not None,
    )


def row_after(target: EventTarget, obs: ProviderObservation, plan: EventPlan) -> PaymentRow | None:
    """The payment's row once `plan` is applied: the status when applied,
    the binding and the newest provider state when touched
    (provider_events.advance), the amounts when a reversal counted."""
    if not plan.touch and plan.disputed_added is None:
        return None
    p = target.payment
    status = (plan.status or obs.status or p.status) if plan.applied else p.status
    failed = plan.applied and status is PaymentStatus.FAILED
    at, rank = target.provider_state_at, target.provider_state_rank
    if plan.touch:
        at, rank = advance(at, rank, obs.occurred_at, obs.rank)
    return PaymentRow(
        status=status,
        provider_payment_id=(
            (p.provider_payment_id or obs.provider_payment_id)
            if plan.touch
            else p.provider_payment_id
        ),
        failure_code=obs.failure_code if failed else p.failure_code,
        failure_message=obs.failure_message if failed else p.failure_message,
        amount_reversed=p.amount_reversed if plan.amount_reversed is None else plan.amount_reversed,
        amount_disputed=min(p.amount, p.amount_disputed + (plan.disputed_added or 0)),
        provider_state_at=at,
        provider_state_rank=rank,
    )


def plan_inbox_write(
    target: EventTarget, event: InboxEvent, *, authoritative: bool, succeeded_refunds: int = 0
) -> tuple[EventPlan, EventWrite]:
    """The domain's plan for `event` against the locked payment, and the
    values the one inbox statement writes for it. `succeeded_refunds`: what
    the payment's refunds that succeeded add up to (read under its lock; a
    dispute derives amount_reversed from it)."""
    obs = event.observation
    payment = target.payment
    plan = plan_event(
        payment.status,
        target.provider_state_at,
        target.provider_state_rank,
        obs,
        amount=payment.amount,
        currency=payment.currency,
        authoritative=authoritative,
        bound_provider_id=payment.provider_payment_id,
        amount_reversed=payment.amount_reversed,
        succeeded_refunds=succeeded_refunds,
        amount_disputed=payment.amount_disputed,
    )
    write = EventWrite(
        payment_id=payment.id,
        from_status=payment.status,
        to_status=plan.status or obs.status or payment.status,
        applied=plan.applied,
        note=plan.note,
        row=row_after(target, obs, plan),
    )
    return plan, write


def event_findings(
    target: EventTarget, event: InboxEvent, plan: EventPlan
) -> list[tuple[DiscrepancyKind, dict[str, str]]]:
    """The discrepancies an event reveals about its payment, with their
    details (reported in the same transaction as the event's write)."""
    obs = event.observation
    payment = target.payment
    found: list[tuple[DiscrepancyKind, dict[str, str]]] = []
    if plan.duplicate:
        found.append(
            (
                DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT,
                {
                    "bound_provider_payment_id": payment.provider_payment_id or "",
                    "provider_event_id": event.provider_event_id,
                    "event_type": event.event_type,
                    "provider_status": obs.provider_status or "",
                    "provider_amount": "" if obs.amount is None else str(obs.amount),
                    "provider_currency": (obs.currency or "").upper(),
                    "our_status": payment.status.value,
                    "our_amount": str(payment.amount),
                    "our_currency": payment.currency,
                },
            )
        )
    if plan.mismatch:
        found.append(
            (
                DiscrepancyKind.AMOUNT_MISMATCH,
                {
                    "our_amount": str(payment.amount),
                    "our_currency": payment.currency,
                    "provider_amount": str(obs.amount),
                    "provider_currency": (obs.currency or "").upper(),
                    "provider_event_id": event.provider_event_id,
                },
            )
        )
    return found
