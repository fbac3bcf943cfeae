"""How much of a payment is reversed, and whether that makes it REVERSED (SPEC §3a, §4).

`amount_reversed` counts succeeded refunds and disputes. A payment is
REVERSED when they cover its whole amount; partly refunded or disputed it
stays SUCCEEDED, with the new amount_reversed recorded (the rule's one text:
payments_kit/reversal.py, shared with the reconciler).

    what the provider says                how it counts
    a refund (charge.refunded, or the     the charge's cumulative refunded amount:
      reconciler's snapshot)              a floor (a stale or repeated one never
                                          lowers what we have)
    a dispute (charge.dispute.created)    its own amount, added once (the inbox
                                          applies each event once)
    a disputed charge (snapshot)          the whole amount: a dispute takes what
                                          the refunds left, and the charge does
                                          not say how much
    the total                             capped at the payment's amount
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_svc.domain.status import PaymentStatus
from payments_kit.reversal import reverses_whole


@dataclass(frozen=True)
class Reversal:
    """A payment's reversed amount after an observation, and its status for it."""

    amount_reversed: int
    status: PaymentStatus

    @property
    def whole(self) -> bool:
        return self.status is PaymentStatus.REVERSED


def reversed_after(
    amount: int, amount_reversed: int, *, refunded: int | None = None, disputed: int | None = None
) -> int:
    """The new amount_reversed: `refunded` (cumulative) as a floor, `disputed`
    added, never less than before, never more than the payment's amount."""
    total = max(amount_reversed, refunded or 0) + max(disputed or 0, 0)
    return max(amount_reversed, min(amount, total))


def status_for(status: PaymentStatus, amount: int, amount_reversed: int) -> PaymentStatus:
    """REVERSED by the one rule (payments_kit/reversal.py, which the
    reconciler's view of an intent applies too); any other status is what
    it is."""
    succeeded = status is PaymentStatus.SUCCEEDED
    if reverses_whole(succeeded=succeeded, amount=amount, amount_reversed=amount_reversed):
        return PaymentStatus.REVERSED
    return status


def reverse(
    amount: int, amount_reversed: int, *, refunded: int | None = None, disputed: int | None = None
) -> Reversal:
    """A refund or dispute of a succeeded payment: what it becomes."""
    total = reversed_after(amount, amount_reversed, refunded=refunded, disputed=disputed)
    return Reversal(total, status_for(PaymentStatus.SUCCEEDED, amount, total))


def note(before: int, after: int, amount: int) -> str:
    """The history's word for a change of amount_reversed."""
    return f"amount_reversed {before} -> {after} of {amount}"
