"""The reconciler's findings and what an authoritative snapshot does.

A snapshot is the provider's answer to "what is this payment now?": the
truth. It may contradict a final state (SUCCEEDED against FAILED): the payment
follows the provider and the contradiction is recorded. Amount or currency
differing is never fixed by overwriting: it is recorded and left alone.
Refunds and disputes count as in domain/reversals.py: amount_reversed is
what the refunds and disputes we know one by one took back, so a snapshot's
reversed amount (the provider's succeeded refunds and disputes, as the
reconciler counted them) is evidence, never a floor: when it differs from
ours on a settled payment it is a REFUND_AMOUNT_MISMATCH and nothing moves
(the reconciler's listing of the refunds moves them one by one). The
snapshot's own status is the intent's; REVERSED is ours to derive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from payment_svc.domain import reversals
from payment_svc.domain.binding import Binding, bind, duplicate_note
from payment_svc.domain.model import Payment, PaymentRow
from payment_svc.domain.provider_events import rank_of
from payment_svc.domain.status import Move, PaymentStatus, contradicts_final, decide


class DiscrepancyKind(enum.Enum):
    STUCK_PAYMENT = "STUCK_PAYMENT"
    UNRECORDED_PROVIDER_PAYMENT = "UNRECORDED_PROVIDER_PAYMENT"
    MISSING_AT_PROVIDER = "MISSING_AT_PROVIDER"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    FINAL_STATE_CONTRADICTED = "FINAL_STATE_CONTRADICTED"
    UNMATCHED_PROVIDER_EVENT = "UNMATCHED_PROVIDER_EVENT"
    # Another provider payment carries our payment id (domain/binding.py).
    DUPLICATE_PROVIDER_PAYMENT = "DUPLICATE_PROVIDER_PAYMENT"

    UNPROCESSABLE_PROVIDER_EVENT = "UNPROCESSABLE_PROVIDER_EVENT"
    # Refunds (migration 0012): a provider refund of a payment we do not
    # know; a provider refund unlike ours (or refunded totals that differ);
    # one non-final past its deadline; one the provider does not know.
    UNRECORDED_PROVIDER_REFUND = "UNRECORDED_PROVIDER_REFUND"
    REFUND_AMOUNT_MISMATCH = "REFUND_AMOUNT_MISMATCH"
    STUCK_REFUND = "STUCK_REFUND"
    REFUND_MISSING_AT_PROVIDER = "REFUND_MISSING_AT_PROVIDER"


def dedup_key(
    kind: DiscrepancyKind,
    payment_id: str | None,
    provider_payment_id: str | None,
    refund_id: str | None = None,
) -> str:
    key = f"{kind.value}|{payment_id or ''}|{provider_payment_id or ''}"
    # a finding about a refund is its own (one payment may have several)
    return f"{key}|{refund_id}" if refund_id else key


@dataclass(frozen=True)
class ProviderFacts:
    """What the reconciler read at the provider about one payment, in the
    provider's words (its status string, refunded amount, dispute): what it
    means for the payment is the provider adapter's to say (a SnapshotReader,
    service_layer/ports.py)."""

    found: bool
    provider_status: str
    provider_payment_id: str | None
    amount: int
    currency: str
    amount_refunded: int
    disputed: bool
    failure_code: str | None
    failure_message: str | None


@dataclass(frozen=True)
class Snapshot:
    """The provider's view of one payment, in our terms: `status` is the
    intent's own (never REVERSED), `amount_reversed` what its succeeded
    refunds and disputes took back, to compare with ours."""

    found: bool
    status: PaymentStatus | None
    provider_payment_id: str | None
    amount: int
    currency: str
    amount_reversed: int
    failure_code: str | None
    failure_message: str | None
    provider_status: str
    # The parts of amount_reversed: what the provider's succeeded refunds
    # took, and whether the charge is disputed (it does not say how much).
    refunded: int = 0
    disputed: bool = False

    def reversal_differs(self, amount: int, amount_reversed: int, amount_disputed: int) -> bool:
        """Whether ours disagrees with what the provider took back: its
        succeeded refunds, and a dispute (ours counts the dispute's own
        amount, which the charge does not carry: a disputed charge agrees
        with any dispute of ours, never with none)."""
        return reversals.provider_disagrees(
            amount,
            amount_reversed=amount_reversed,
            amount_disputed=amount_disputed,
            provider_refunded=self.refunded,
            provider_disputed=self.disputed,
        )


@dataclass(frozen=True)
class SnapshotPlan:
    apply: bool
    mismatch: bool = False
    contradiction: bool = False
    # The snapshot is of another provider payment than the one the payment is
    # bound to: DUPLICATE_PROVIDER_PAYMENT, never applied.
    duplicate: bool = False
    note: str | None = None
    # When `apply`: what the payment becomes, and its amount_reversed.
    status: PaymentStatus | None = None
    amount_reversed: int = 0
    # A settled payment whose amount_reversed differs from what the provider's
    # refunds and disputes took back: REFUND_AMOUNT_MISMATCH, nothing moves.
    reversal_differs: bool = False


def plan_snapshot(
    current: PaymentStatus,
    amount: int,
    currency: str,
    snap: Snapshot,
    *,
    bound_provider_id: str | None = None,
    amount_reversed: int = 0,
    amount_disputed: int = 0,
) -> SnapshotPlan:
    if not snap.found or snap.status is None:
        return SnapshotPlan(apply=False, note="nothing the provider says moves it")
    if bind(bound_provider_id, snap.provider_payment_id) is Binding.DUPLICATE:
        return SnapshotPlan(
            apply=False,
            duplicate=True,
            note=duplicate_note(bound_provider_id, snap.provider_payment_id),
        )
    if snap.amount != amount or snap.currency.upper() != currency:
        return SnapshotPlan(
            apply=False,
            mismatch=True,
            note=f"provider has {snap.amount} {snap.currency.upper()}, we have {amount} {currency}",
        )
    settled = (PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED)
    target = reversals.status_for(snap.status, amount, amount_reversed)
    differs = (
        current in settled
        and target in settled
        and snap.reversal_differs(amount, amount_reversed, amount_disputed)
    )
    if target is current:
        return SnapshotPlan(apply=False, reversal_differs=differs, amount_reversed=amount_reversed)
    # A success whose refunds or disputes (recorded before it was known)
    # cover it is REVERSED: the move is the provider's status, then the rule.
    move = decide(current, target, authoritative=True)
    if move is not Move.APPLY:
        move = decide(current, snap.status, authoritative=True)
    if move is not Move.APPLY:
        return SnapshotPlan(
            apply=False,
            note=f"{current.value} -> {target.value} is not a transition",
            reversal_differs=differs,
            amount_reversed=amount_reversed,
        )
    contradiction = contradicts_final(current, snap.status)
    return SnapshotPlan(
        apply=True,
        contradiction=contradiction,
        note=(
            f"provider contradicts {current.value}: followed"
            if contradiction
            else f"provider status {snap.provider_status}"
        ),
        status=target,
        amount_reversed=amount_reversed,
        reversal_differs=differs,
    )


def snapshot_row(
    payment: Payment,
    state_at: datetime | None,
    state_rank: int | None,
    snap: Snapshot,
    plan: SnapshotPlan,
) -> PaymentRow:
    """The payment's row once an applied snapshot is written (payment locked,
    with the newest provider state applied). A snapshot carries no provider
    time: the time stays the newest event's (our clock is never provider
    time), and the rank only grows, so that older events of a lower rank
    stay stale (provider_events.is_stale)."""
    assert plan.apply
    assert plan.status is not None
    failed = plan.status is PaymentStatus.FAILED
    rank = int(rank_of(plan.status, amount_reversed=plan.amount_reversed))
    return PaymentRow(
        status=plan.status,
        provider_payment_id=payment.provider_payment_id or snap.provider_payment_id,
        failure_code=snap.failure_code if failed else payment.failure_code,
        failure_message=snap.failure_message if failed else payment.failure_message,
        amount_reversed=plan.amount_reversed,
        amount_disputed=payment.amount_disputed,
        provider_state_at=state_at,
        provider_state_rank=max(state_rank or 0, rank),
    )


def snapshot_findings(
    payment: Payment, snap: Snapshot, plan: SnapshotPlan
) -> list[tuple[DiscrepancyKind, dict[str, str]]]:
    """The discrepancies a planned snapshot reveals, with their details."""
    found: list[tuple[DiscrepancyKind, dict[str, str]]] = []
    ours = {
        "our_amount": str(payment.amount),
        "our_currency": payment.currency,
        "provider_amount": str(snap.amount),
        "provider_currency": snap.currency.upper(),
    }
    if plan.duplicate:
        details = {
            "bound_provider_payment_id": payment.provider_payment_id or "",
            "provider_status": snap.provider_status,
            "provider_amount": ours["provider_amount"],
            "provider_currency": ours["provider_currency"],
            "our_status": payment.status.value,
            "our_amount": ours["our_amount"],
            "our_currency": ours["our_currency"],
        }
        found.append((DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT, details))
    if plan.mismatch:
        found.append((DiscrepancyKind.AMOUNT_MISMATCH, ours))
    if plan.reversal_differs:
        found.append(
            (
                DiscrepancyKind.REFUND_AMOUNT_MISMATCH,
                {
                    "reason": "amount_reversed differs from the provider's succeeded "
                    "refunds and disputes",
                    "our_amount_reversed": str(payment.amount_reversed),
                    "our_amount_disputed": str(payment.amount_disputed),
                    "provider_refunded": str(snap.refunded),
                    "provider_disputed": "true" if snap.disputed else "false",
                    "currency": payment.currency,
                },
            )
        )
    if plan.contradiction:
        found.append(
            (
                DiscrepancyKind.FINAL_STATE_CONTRADICTED,
                {"ours": payment.status.value, "provider": snap.provider_status},
            )
        )
    return found
