"""How much of a payment is reversed, and whether that makes it REVERSED (SPEC §3a, §4).

`amount_reversed` is derived, never accumulated: it is what the refunds and
disputes we know one by one took back, with their statuses, and nothing
else:

    amount_reversed = min(amount, succeeded refunds + amount_disputed)

    what the provider says                  what it does here
    a refund moves (refund.*, a listing,    its status moves; amount_reversed
      the reconciler's fetch of it)         is derived again from all of them
    a refund that succeeded fails later     its amount leaves amount_reversed;
                                            a REVERSED payment that no longer
                                            is whole goes back to SUCCEEDED
                                            (recorded and alerted: `undone`)
    a dispute (charge.dispute.created)      its own amount joins amount_disputed
                                            (added once: the inbox applies each
                                            event once)
    a total (a charge's amount_refunded,    evidence to compare, never a floor:
      a snapshot's refunded or disputed)    Stripe's amount_refunded counts
                                            pending refunds too; a disagreement
                                            is a REFUND_AMOUNT_MISMATCH

A payment is REVERSED when they cover its whole amount; partly refunded or
disputed it stays SUCCEEDED (the rule's one text: payments_kit/reversal.py,
shared with the reconciler). REVERSED -> SUCCEEDED is this rule's move alone,
never a source's word (domain/status.py's table does not allow it).
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_svc.domain.status import PaymentStatus
from payments_kit.reversal import reverses_whole


@dataclass(frozen=True)
class Reversal:
    """A payment's amount_reversed as its refunds and disputes make it, and
    its status for it."""

    amount_reversed: int
    status: PaymentStatus

    @property
    def whole(self) -> bool:
        return self.status is PaymentStatus.REVERSED


def reversed_by(amount: int, *, succeeded_refunds: int, disputed: int) -> int:
    """The one figure: succeeded refunds plus disputes, capped at the amount."""
    return min(amount, max(succeeded_refunds, 0) + max(disputed, 0))


def status_for(status: PaymentStatus, amount: int, amount_reversed: int) -> PaymentStatus:
    """REVERSED by the one rule (payments_kit/reversal.py, which the
    reconciler's view of an intent applies too): a succeeded payment whose
    reversals cover it is REVERSED; a REVERSED one they no longer cover (a
    refund failed after it succeeded) is SUCCEEDED again; any other status
    is what it is."""
    if status not in (PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED):
        return status
    whole = reverses_whole(succeeded=True, amount=amount, amount_reversed=amount_reversed)
    return PaymentStatus.REVERSED if whole else PaymentStatus.SUCCEEDED


def reversal(
    status: PaymentStatus, amount: int, *, succeeded_refunds: int, disputed: int
) -> Reversal:
    """What a payment's refunds and disputes make of it."""
    total = reversed_by(amount, succeeded_refunds=succeeded_refunds, disputed=disputed)
    return Reversal(total, status_for(status, amount, total))


def undone(before: PaymentStatus, after: Reversal, amount_reversed_before: int) -> bool:
    """Money we had counted as given back is not: a refund failed after it
    succeeded (SPEC §3a). Alerted on, whatever the status does."""
    return after.amount_reversed < amount_reversed_before or (
        before is PaymentStatus.REVERSED and after.status is PaymentStatus.SUCCEEDED
    )


def provider_disagrees(
    amount: int,
    *,
    amount_reversed: int,
    amount_disputed: int,
    provider_refunded: int,
    provider_disputed: bool,
) -> bool:
    """Whether what the provider took back (its succeeded refunds; whether
    the charge is disputed) disagrees with ours. The charge does not carry
    the dispute's amount: a disputed charge agrees with any dispute of ours,
    never with none, and ours counts its own amount."""
    if provider_disputed != (amount_disputed > 0):
        return True
    return min(amount, provider_refunded + amount_disputed) != amount_reversed


def note(before: int, after: int, amount: int) -> str:
    """The history's word for a change of amount_reversed."""
    return f"amount_reversed {before} -> {after} of {amount}"
