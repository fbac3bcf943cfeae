"""What the provider says about a refund (an event, or the reconciler's
fetch), and what it does to our refunds (SPEC §3a, §4).

    the provider's refund            ours
    known by its provider id         that refund
    else metadata.refund_id is ours  that refund (its provider id learnt now)
    else                             a refund made at the provider directly
                                     (dashboard, API): recorded as ours, once
                                     (no idempotency key; source webhook or
                                     reconciler; provider_refund_id is unique)

An existing refund moves by the one transition table (domain/refunds.py)
with the provider's ordering as payments have it (domain/provider_events.py):
an event older than the refund's newest provider state applied, or of the
same second and a lower rank (pending 1 < settled 2), is recorded, not
applied. An amount or currency that differs from ours is recorded and
reported (REFUND_AMOUNT_MISMATCH), never applied. Every new event leaves one
history entry of its payment per refund it is about.

What refunds reverse is domain/reversals.py's one rule: the payment's
amount_reversed is derived from the succeeded refunds plus the disputes
(never a floor: a refund that fails after it succeeded takes its amount
back out), REVERSED when whole. A refund therefore counts once, however
many events (refund.*, charge.refunded, duplicates) or fetches report it:
charge.refunded's cumulative amount_refunded, which counts pending refunds
at Stripe, is evidence, never added to anything (`refunded_total_note`).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from payment_svc.domain import reversals
from payment_svc.domain.model import Payment
from payment_svc.domain.provider_events import StateRank, is_stale
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.refunds import (
    NewRefund,
    Refund,
    RefundOutcome,
    RefundPlan,
    RefundStatus,
    RefundWrite,
    plan_outcome,
    reversal_of,
)
from payment_svc.domain.status import Source


class RefundRank(enum.IntEnum):
    IN_PROGRESS = 1
    SETTLED = 2


def refund_rank(status: RefundStatus) -> RefundRank:
    return RefundRank.SETTLED if status.is_final else RefundRank.IN_PROGRESS


@dataclass(frozen=True)
class ProviderRefundWords:
    """One refund as the reconciler read it at the provider, in the
    provider's words (its status string, its failure reason): what it means
    is the provider adapter's to say (a RefundReader, service_layer/ports.py),
    as ProviderFacts are for a payment."""

    provider_refund_id: str
    provider_status: str
    amount: int
    currency: str
    failure_reason: str = ""
    metadata_refund_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ProviderRefundFact:
    """One refund as the provider shows it, in our terms (the adapter maps
    the provider's shapes and statuses)."""

    provider_refund_id: str
    provider_payment_id: str | None
    metadata_refund_id: str | None
    amount: int
    currency: str
    # PENDING, SUCCEEDED or FAILED: UNKNOWN is never the provider's word
    status: RefundStatus
    provider_status: str
    reason: str = ""
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class RefundState:
    """The newest provider state applied to a refund (its time and rank)."""

    at: datetime | None = None
    rank: int | None = None


class RefundAction(enum.Enum):
    INSERT = "insert"  # made at the provider directly: recorded as ours
    # an existing refund: `plan` says what is written (a move, a history entry
    # only, or nothing)
    EXISTING = "existing"
    MISMATCH = "mismatch"  # recorded (when ours exists) and reported, never applied


@dataclass(frozen=True)
class RefundDecision:
    action: RefundAction
    plan: RefundPlan
    outcome: RefundOutcome
    new: NewRefund | None = None
    finding: tuple[DiscrepancyKind, dict[str, str]] | None = None
    # the refund's provider state moves to the fact's (time, rank)
    touch: bool = False


def succeeded_besides(refunds: Iterable[Refund], refund_id: uuid.UUID | None) -> int:
    return sum(
        r.amount for r in refunds if r.status is RefundStatus.SUCCEEDED and r.id != refund_id
    )


def _outcome(
    fact: ProviderRefundFact,
    *,
    event_id: str | None,
    event_type: str | None,
    occurred_at: datetime | None,
) -> RefundOutcome:
    return RefundOutcome(
        status=fact.status,
        provider_refund_id=fact.provider_refund_id,
        provider_status=fact.provider_status,
        failure_code=fact.failure_code,
        failure_message=fact.failure_message,
        note=f"provider refund {fact.provider_refund_id} {fact.provider_status}",
        provider_event_id=event_id,
        provider_event_type=event_type,
        provider_created_at=occurred_at,
    )


def _record_only(payment: Payment, fact: ProviderRefundFact, note: str) -> RefundPlan:
    return RefundPlan(
        RefundWrite.RECORD,
        fact.status,
        payment.status,
        payment.status,
        payment.amount_reversed,
        note,
    )


def decide_refund(
    payment: Payment,
    refunds: list[Refund],
    refund: Refund | None,
    fact: ProviderRefundFact,
    *,
    source: Source,
    state: RefundState = RefundState(),
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    event_type: str | None = None,
    authoritative: bool = False,
    new_id: uuid.UUID,
) -> RefundDecision:
    """What one provider fact does. `refunds`: the payment's refunds, read
    under its lock; `refund`: ours that the fact is about (found by provider
    id or metadata), None when there is none; `new_id`: the id the refund
    gets if it is new to us (the caller's: the domain reads no clock and no
    randomness)."""
    outcome = _outcome(fact, event_id=event_id, event_type=event_type, occurred_at=occurred_at)
    if refund is None:
        return _decide_new(payment, refunds, fact, outcome, source=source, new_id=new_id)
    differs = _differs(payment, refund, fact)
    if differs:
        return RefundDecision(
            RefundAction.MISMATCH,
            _record_only(payment, fact, f"{differs}: not applied"),
            outcome,
            finding=(
                DiscrepancyKind.REFUND_AMOUNT_MISMATCH,
                {
                    "reason": differs,
                    "our_amount": str(refund.amount),
                    "our_currency": refund.currency,
                    "our_provider_refund_id": refund.provider_refund_id or "",
                    "provider_refund_id": fact.provider_refund_id,
                    "provider_amount": str(fact.amount),
                    "provider_currency": fact.currency.upper(),
                    "provider_status": fact.provider_status,
                    "provider_event_id": event_id or "",
                },
            ),
        )
    rank = refund_rank(fact.status)
    if not authoritative and is_stale(occurred_at, StateRank(int(rank)), state.at, state.rank):
        return RefundDecision(
            RefundAction.EXISTING,
            _record_only(payment, fact, "older than the refund's provider state already applied"),
            outcome,
        )
    # Whatever the payment's status: a refund the provider made is money
    # moved, and amount_reversed counts it; only a succeeded payment becomes
    # REVERSED by it (one not known to have succeeded yet does when it does:
    # domain/reversals.status_for on every path to SUCCEEDED).
    plan = plan_outcome(
        payment,
        refund,
        succeeded_besides(refunds, refund.id),
        outcome,
        authoritative=authoritative,
    )
    if plan.write is RefundWrite.NOTHING and event_id is not None:
        # A new event leaves its entry in the history all the same.
        plan = _record_only(payment, fact, f"already {refund.status.value}")
    return RefundDecision(
        RefundAction.EXISTING, plan, outcome, touch=plan.write is RefundWrite.MOVE
    )


def _differs(payment: Payment, refund: Refund, fact: ProviderRefundFact) -> str | None:
    if refund.payment_id != payment.id:
        return "the provider's refund is of another payment than ours"
    if refund.provider_refund_id and refund.provider_refund_id != fact.provider_refund_id:
        return (
            f"a second provider refund {fact.provider_refund_id} carries our refund id "
            f"(ours is {refund.provider_refund_id})"
        )
    if fact.amount != refund.amount or fact.currency.upper() != refund.currency:
        return f"provider has {fact.amount} {fact.currency.upper()}"
    return None


def _decide_new(
    payment: Payment,
    refunds: list[Refund],
    fact: ProviderRefundFact,
    outcome: RefundOutcome,
    *,
    source: Source,
    new_id: uuid.UUID,
) -> RefundDecision:
    if fact.currency.upper() != payment.currency or fact.amount <= 0:
        return RefundDecision(
            RefundAction.MISMATCH,
            _record_only(payment, fact, "a provider refund unlike its payment: not recorded"),
            outcome,
            finding=(
                DiscrepancyKind.REFUND_AMOUNT_MISMATCH,
                {
                    "reason": "a provider refund in another currency than its payment",
                    "provider_refund_id": fact.provider_refund_id,
                    "provider_amount": str(fact.amount),
                    "provider_currency": fact.currency.upper(),
                    "our_currency": payment.currency,
                    "provider_event_id": outcome.provider_event_id or "",
                },
            ),
        )
    new = NewRefund(
        id=new_id,
        payment_id=payment.id,
        client_id=payment.client_id,
        idempotency_key=None,
        fingerprint=None,
        amount=fact.amount,
        currency=payment.currency,
        reason=fact.reason,
        source=source,
        status=fact.status,
        provider_refund_id=fact.provider_refund_id,
        payment_status=payment.status,
    )
    note = f"refund made at the provider ({fact.provider_refund_id}) recorded as ours"
    total = succeeded_besides(refunds, None) + (
        fact.amount if fact.status is RefundStatus.SUCCEEDED else 0
    )
    after = reversal_of(payment, total)
    changed = after.amount_reversed != payment.amount_reversed
    undone = reversals.undone(payment.status, after, payment.amount_reversed)
    if changed:
        change = reversals.note(payment.amount_reversed, after.amount_reversed, payment.amount)
        note = f"{note}; {change}"
    plan = RefundPlan(
        RefundWrite.MOVE,
        fact.status,
        payment.status,
        after.status,
        after.amount_reversed,
        note,
        amount_reversed_changed=changed,
        undone=undone,
    )
    return RefundDecision(RefundAction.INSERT, plan, outcome, new=new, touch=True)


def refunded_total_note(amount_refunded: int, refunds: Iterable[Refund], payment: Payment) -> str:
    """charge.refunded without its refunds listed (Stripe's API since
    2022-11-15): its amount_refunded counts the refunds that succeeded and
    the pending ones. Evidence only (domain/reversals.py): the history says
    what it claimed against what our refunds hold; the refunds' own events,
    and the reconciler's listing of them, move the payment."""
    held = sum(r.amount for r in refunds if r.status.holds_amount)
    agrees = "agrees with" if held == amount_refunded else "differs from"
    return (
        f"provider counts {amount_refunded} refunded (pending included): {agrees} "
        f"our refunds ({held} succeeded or in flight); amount_reversed "
        f"{payment.amount_reversed} of {payment.amount} follows the refunds one by one"
    )
