"""The reconciler's decisions, as plain functions of plain values (no I/O).

    sweep, provider says "never heard of it"   -> REDRIVE within the provider's
                                                  idempotency retention, else
                                                  report MISSING_AT_PROVIDER
    still non-final long after creation        -> STUCK_PAYMENT
    settlement diff, one provider intent       -> AGREES | RECONCILE | UNRECORDED | IGNORE

Whether a snapshot moves a payment (and whether amounts differ) is
payment-svc's decision: it owns our side of every comparison that changes
something. The settlement verdict only spares it the intents that agree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from payment_svc.domain.status import PaymentStatus
from reconciler.stripe_objects import ProviderIntent, our_view


class Missing(enum.Enum):
    REDRIVE = "redrive"
    REPORT = "report"


def when_missing(created_at: datetime, now: datetime, redrive_window: float) -> Missing:
    """A payment the provider has never heard of. Re-driving reuses the provider
    idempotency key, which charges at most once only while the provider still
    remembers the key; past that, a retry could charge twice, so a person decides."""
    if now - created_at < timedelta(seconds=redrive_window):
        return Missing.REDRIVE
    return Missing.REPORT


def is_stuck(status: PaymentStatus, created_at: datetime, now: datetime, after: float) -> bool:
    return not status.is_final and now - created_at >= timedelta(seconds=after)


@dataclass(frozen=True, slots=True)
class Ours:
    """What the settlement diff needs of one of our payments."""

    id: str
    status: PaymentStatus
    amount: int
    currency: str
    provider_payment_id: str
    amount_reversed: int


class Verdict(enum.Enum):
    AGREES = "agrees"  # nothing to do
    RECONCILE = "reconcile"  # ours differs: payment-svc applies the snapshot
    UNRECORDED = "unrecorded"  # the provider moved money for a payment we never recorded
    IGNORE = "ignore"  # not ours, and no money moved (never confirmed, declined, canceled)


def settlement_verdict(
    intent: ProviderIntent, by_provider_id: Mapping[str, Ours], by_id: Mapping[str, Ours]
) -> tuple[Verdict, Ours | None]:
    ours = by_provider_id.get(intent.id)
    if ours is None and intent.payment_id:
        claimed = by_id.get(intent.payment_id)
        # A payment already tied to another intent does not own this one (a
        # second charge for it): that is a provider payment we never recorded.
        if claimed is not None and claimed.provider_payment_id in ("", intent.id):
            ours = claimed
    if ours is None:
        return (Verdict.UNRECORDED if intent.moved_money else Verdict.IGNORE), None
    return (Verdict.AGREES if agrees(ours, intent) else Verdict.RECONCILE), ours


def agrees(ours: Ours, intent: ProviderIntent) -> bool:
    expected = our_view(intent)
    if (ours.provider_payment_id, ours.amount, ours.currency) != (
        intent.id,
        intent.amount,
        intent.currency,
    ):
        return False
    if ours.status is not expected:
        return False
    # A refund of a different amount is still news; a dispute's amount is not
    # on the charge, so a disputed payment that is REVERSED agrees.
    return expected is not PaymentStatus.REVERSED or (
        intent.disputed or ours.amount_reversed == intent.amount_refunded
    )
