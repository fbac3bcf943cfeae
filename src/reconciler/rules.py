"""The reconciler's decisions, as plain functions of plain values (no I/O).

    sweep, ours has a provider id the provider
      says it does not know                    -> MISSING_AT_PROVIDER, never a re-drive
    sweep, no provider id, the search answered
      with no intent carrying our id           -> REDRIVE within the re-drive window
                                                  (RECONCILER_REDRIVE_WINDOW_SECONDS),
                                                  else MISSING_AT_PROVIDER
    sweep, the search found several intents    -> the one that moved money is ours,
                                                  the others DUPLICATE_PROVIDER_PAYMENT
    a re-drive payment-svc refuses because the
      item moved since the sweep looked (a
      webhook recorded it meanwhile)           -> nothing to do, no error
                                                  (MOVED_SINCE_LISTED)
    still non-final long after creation        -> STUCK_PAYMENT
    settlement diff, one provider intent       -> AGREES | RECONCILE | DUPLICATE |
                                                  UNRECORDED | IGNORE

Whether a snapshot moves a payment (and whether amounts differ) is
payment-svc's decision: it owns our side of every comparison that changes
something. The settlement verdict only spares it the intents that agree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from payments.v1 import payment_pb2 as pb
from payments_stripe.objects import ProviderIntent, ProviderRefund, our_view
from payments_stripe.status import RefundState, Status

# payment-svc's refusals of a re-drive that say the payment or refund moved
# after the sweep listed it: it has the provider's id now (a webhook, or
# another replica, recorded it). REFUND_NOT_REDRIVABLE is not one: it also
# means "past the re-drive window", which must stay visible.
MOVED_SINCE_LISTED = frozenset({"PAYMENT_ALREADY_AT_PROVIDER", "REFUND_ALREADY_AT_PROVIDER"})


class Missing(enum.Enum):
    REDRIVE = "redrive"
    REPORT = "report"


def when_missing(
    created_at: datetime, now: datetime, redrive_window: float, provider_payment_id: str = ""
) -> Missing:
    """A payment the provider does not know. One it gave an id for has reached
    it (payment_svc.domain.binding): a lookup that fails now is another
    account's key, a wrong base URL or a provider that lost it, and sending it
    again could charge twice. One it never gave an id for is re-driven with
    the same idempotency key, which charges at most once only while the
    provider still remembers the key; past the window a person decides."""
    if provider_payment_id:
        return Missing.REPORT
    if now - created_at < timedelta(seconds=redrive_window):
        return Missing.REDRIVE
    return Missing.REPORT


def ours_among(intents: list[ProviderIntent]) -> tuple[ProviderIntent, list[ProviderIntent]]:
    """The search found intents carrying our payment id (newest first): one key,
    one intent, unless another system made one with our id. The one that moved
    money is taken as ours (else the oldest, the one our key made first); the
    others are possible double charges."""
    chosen = next((i for i in intents if i.moved_money), intents[-1])
    return chosen, [i for i in intents if i.id != chosen.id]


def is_stuck(status: Status, created_at: datetime, now: datetime, after: float) -> bool:
    return not status.is_final and now - created_at >= timedelta(seconds=after)


# -- refunds (refund_sweep.py, settlement.py) -----------------------------------

_FINAL_REFUND = frozenset({pb.REFUND_STATUS_SUCCEEDED, pb.REFUND_STATUS_FAILED})


def refund_state(status: pb.RefundStatus.ValueType) -> str:
    """SUCCEEDED for REFUND_STATUS_SUCCEEDED."""
    return pb.RefundStatus.Name(status).removeprefix("REFUND_STATUS_")


def is_stuck_refund(
    status: pb.RefundStatus.ValueType, created_at: datetime, now: datetime, after: float
) -> bool:
    return status not in _FINAL_REFUND and now - created_at >= timedelta(seconds=after)


def ours_among_refunds(refunds: list[ProviderRefund]) -> ProviderRefund:
    """The provider's refunds carrying our refund id (one key, one refund):
    the one that moved money, else the oldest (listed newest first)."""
    return next((r for r in refunds if r.counts), refunds[-1])


def refund_agrees(ours: pb.Refund, theirs: ProviderRefund) -> bool:
    """Nothing for payment-svc to do: the same refund, amount and state."""
    return (
        ours.provider_refund_id == theirs.id
        and ours.amount == theirs.amount
        and ours.currency == theirs.currency
        and refund_state(ours.status) == theirs.mapped.name
    )


def provider_refunded(refunds: list[ProviderRefund]) -> int:
    """What the provider's refunds took back: the succeeded ones (a pending
    one counts in Stripe's amount_refunded, not in ours)."""
    return sum(r.amount for r in refunds if r.mapped is RefundState.SUCCEEDED)


@dataclass(frozen=True, slots=True)
class Ours:
    """What the settlement diff needs of one of our payments."""

    id: str
    status: Status
    amount: int
    currency: str
    provider_payment_id: str
    amount_reversed: int


class Verdict(enum.Enum):
    AGREES = "agrees"  # nothing to do
    RECONCILE = "reconcile"  # ours differs: payment-svc applies the snapshot
    # Carries the id of a payment of ours bound to another intent: a possible
    # double charge (payment-svc records DUPLICATE_PROVIDER_PAYMENT from the snapshot).
    DUPLICATE = "duplicate"
    UNRECORDED = "unrecorded"  # the provider moved money for a payment we never recorded
    IGNORE = "ignore"  # not ours, and no money moved (never confirmed, declined, canceled)


def settlement_verdict(
    intent: ProviderIntent, by_provider_id: Mapping[str, Ours], by_id: Mapping[str, Ours]
) -> tuple[Verdict, Ours | None]:
    ours = by_provider_id.get(intent.id)
    if ours is None and intent.payment_id:
        claimed = by_id.get(intent.payment_id)
        # A payment already tied to another intent does not own this one: a
        # second provider payment for it.
        if claimed is not None and claimed.provider_payment_id not in ("", intent.id):
            return Verdict.DUPLICATE, claimed
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
    # A refund of a different amount is still news, whether it reverses the
    # payment whole or in part (SUCCEEDED, amount_reversed > 0); a dispute's
    # amount is not on the charge, so a disputed payment that is REVERSED agrees.
    if expected not in (Status.SUCCEEDED, Status.REVERSED) or intent.disputed:
        return True
    return ours.amount_reversed == intent.amount_refunded
