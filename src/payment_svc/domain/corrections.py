"""An operator's correction of one payment (`payments correct`):
its books recomputed from its refunds and disputes, by the one rule of
domain/reversals.py, when older code left them wrong (REVERSED on a refund
that failed, say).

    the provider's books          what happens
    agree with the recomputed     the payment takes the recomputed status and
      figure                      amount_reversed (a history entry, source
                                  operator, with the operator's reason), or
                                  nothing when it already has them
    disagree                      ProviderBooksDisagree: nothing moves (the
                                  refunds are listed one by one first: the
                                  settlement diff records them)
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_svc.domain import reversals
from payment_svc.domain.errors import FailedPrecondition, ProviderBooksDisagree
from payment_svc.domain.model import Payment
from payment_svc.domain.status import PaymentStatus


@dataclass(frozen=True)
class ProviderReversal:
    """What the provider's books say was taken back of one payment."""

    refunded: int  # its refunds that succeeded
    disputed: bool


@dataclass(frozen=True)
class Correction:
    status: PaymentStatus
    amount_reversed: int
    changes: bool
    note: str


def plan_correction(
    payment: Payment, succeeded_refunds: int, provider: ProviderReversal, reason: str
) -> Correction:
    """`succeeded_refunds`: what the payment's refunds that succeeded add up
    to (read under its lock)."""
    if payment.provider_payment_id is None:
        raise FailedPrecondition(
            f"payment {payment.public_id} has no provider payment: nothing to compare"
        )
    after = reversals.reversal(
        payment.status,
        payment.amount,
        succeeded_refunds=succeeded_refunds,
        disputed=payment.amount_disputed,
    )
    if reversals.provider_disagrees(
        payment.amount,
        amount_reversed=after.amount_reversed,
        amount_disputed=payment.amount_disputed,
        provider_refunded=provider.refunded,
        provider_disputed=provider.disputed,
    ):
        raise ProviderBooksDisagree(
            payment.public_id, after.amount_reversed, provider.refunded, provider.disputed
        )
    changes = (after.status, after.amount_reversed) != (payment.status, payment.amount_reversed)
    change = reversals.note(payment.amount_reversed, after.amount_reversed, payment.amount)
    return Correction(
        status=after.status,
        amount_reversed=after.amount_reversed,
        changes=changes,
        note=f"corrected by an operator: {reason}; {change}",
    )
