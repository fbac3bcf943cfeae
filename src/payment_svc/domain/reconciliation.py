"""The reconciler's findings and what an authoritative snapshot does.

A snapshot is the provider's answer to "what is this payment now?": the
truth. It may contradict a final state (SUCCEEDED against FAILED): the payment
follows the provider and the contradiction is recorded. Amount or currency
differing is never fixed by overwriting: it is recorded and left alone.
Refunds and disputes count as in domain/reversals.py: a snapshot's reversed
amount is a floor, and only the whole amount reversed makes a payment
REVERSED; more reversed of a payment whose status stays is a change all the
same (recorded, with a history entry).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from payment_svc.domain import reversals
from payment_svc.domain.binding import Binding, bind, duplicate_note
from payment_svc.domain.model import Payment
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
    """The provider's view of one payment, in our terms."""

    found: bool
    status: PaymentStatus | None
    provider_payment_id: str | None
    amount: int
    currency: str
    amount_reversed: int
    failure_code: str | None
    failure_message: str | None
    provider_status: str


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


def plan_snapshot(
    current: PaymentStatus,
    amount: int,
    currency: str,
    snap: Snapshot,
    *,
    bound_provider_id: str | None = None,
    amount_reversed: int = 0,
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
    after = reversals.reversed_after(amount, amount_reversed, refunded=snap.amount_reversed)
    target = reversals.status_for(snap.status, amount, after)
    more = f", {reversals.note(amount_reversed, after, amount)}" if after != amount_reversed else ""
    if target is current:
        if not more:
            return SnapshotPlan(apply=False)
        return SnapshotPlan(
            apply=True,
            note=f"provider status {snap.provider_status}{more}",
            status=target,
            amount_reversed=after,
        )
    move = decide(current, target, authoritative=True)
    if move is not Move.APPLY:
        return SnapshotPlan(
            apply=False, note=f"{current.value} -> {target.value} is not a transition"
        )
    contradiction = contradicts_final(current, target)
    return SnapshotPlan(
        apply=True,
        contradiction=contradiction,
        note=(
            f"provider contradicts {current.value}: followed"
            if contradiction
            else f"provider status {snap.provider_status}{more}"
        ),
        status=target,
        amount_reversed=after,
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
    if plan.contradiction:
        found.append(
            (
                DiscrepancyKind.FINAL_STATE_CONTRADICTED,
                {"ours": payment.status.value, "provider": snap.provider_status},
            )
        )
    return found
