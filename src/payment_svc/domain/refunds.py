"""Refunds: their states, the one transition table, and what remains (SPEC §3a, §4).

    from \\ to   PENDING  UNKNOWN  SUCCEEDED  FAILED
    (new)       recorded before the provider call (source api), or first
                seen at the provider (webhook, reconciler)
    PENDING     (1)      yes      yes        yes
    UNKNOWN     yes               yes        yes
    SUCCEEDED                                authoritative fetch only
    FAILED                        authoritative fetch only

    (1) the provider says it is still processing: no move. A new event
        saying so is recorded in the history (every new event is); a
        snapshot that says so changes nothing and writes nothing (two
        reconcilers observing one pending refund leave no entry, and count
        no fix), unless it brings the provider's refund id

What remains of a payment to refund, and what its refunds reverse:

    remaining        amount - (refunds SUCCEEDED + PENDING + UNKNOWN)
                            - amount_disputed
                     (and never more than amount - amount_reversed: a
                     reversal recorded before refunds were rows still counts)
    amount_reversed  succeeded refunds + amount_disputed, capped at the
                     amount, derived again at every change (domain/
                     reversals.py: never a floor, so a refund that fails
                     after it succeeded leaves it); REVERSED when it covers
                     the whole amount, SUCCEEDED while partial
                     (reversals.status_for)

A PENDING or UNKNOWN refund holds its amount: two refunds in flight can
never together exceed the payment, whatever the provider says later.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from payment_svc.domain import reversals
from payment_svc.domain.errors import (
    DuplicateRefund,
    PaymentNotRefundable,
    RefundExceedsRemaining,
)
from payment_svc.domain.model import Payment, format_payment_id
from payment_svc.domain.status import Move, PaymentStatus, Source

REFUND_ID_PREFIX = "rfd_"


class RefundStatus(enum.Enum):
    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)

    @property
    def holds_amount(self) -> bool:
        """Whether the refund counts against what remains of its payment."""
        return self is not RefundStatus.FAILED


_P, _U, _S, _F = (
    RefundStatus.PENDING,
    RefundStatus.UNKNOWN,
    RefundStatus.SUCCEEDED,
    RefundStatus.FAILED,
)

TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    _P: frozenset({_U, _S, _F}),
    _U: frozenset({_P, _S, _F}),
    _S: frozenset(),
    _F: frozenset(),
}

# Contradicting a final state only on an authoritative provider fetch.
AUTHORITATIVE_ONLY: dict[RefundStatus, frozenset[RefundStatus]] = {
    _S: frozenset({_F}),
    _F: frozenset({_S}),
}


def decide(current: RefundStatus, target: RefundStatus, *, authoritative: bool) -> Move:
    """What to do when a source says the refund is now `target`."""
    if target in TRANSITIONS[current]:
        return Move.APPLY
    if authoritative and target in AUTHORITATIVE_ONLY.get(current, frozenset()):
        return Move.APPLY
    if current is target:
        return Move.NOOP
    return Move.REJECT


class RefundReason(enum.Enum):
    """Stripe's refund reasons; NONE is the empty string."""

    NONE = ""
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"


def format_refund_id(value: uuid.UUID) -> str:
    return REFUND_ID_PREFIX + value.hex


def parse_refund_id(text: str) -> uuid.UUID | None:
    """`rfd_<32 hex>` to its UUID, or None when it is not one of ours."""
    if not text.startswith(REFUND_ID_PREFIX) or len(text) != len(REFUND_ID_PREFIX) + 32:
        return None
    try:
        return uuid.UUID(hex=text[len(REFUND_ID_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True)
class Refund:
    id: uuid.UUID
    payment_id: uuid.UUID
    client_id: str
    # None for a refund made at the provider directly
    idempotency_key: str | None
    amount: int
    currency: str
    status: RefundStatus
    reason: str
    source: Source
    provider_refund_id: str | None
    failure_code: str | None
    failure_message: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def public_id(self) -> str:
        return format_refund_id(self.id)

    @property
    def public_payment_id(self) -> str:
        return format_payment_id(self.payment_id)


@dataclass(frozen=True)
class NewRefund:
    """What is written first: the refund, PENDING unless the provider said
    otherwise (a refund first seen at the provider), and its payment's
    history entry, in one statement. `fingerprint` and `idempotency_key`
    are None for a refund made at the provider directly."""

    id: uuid.UUID
    payment_id: uuid.UUID
    client_id: str
    idempotency_key: str | None
    fingerprint: bytes | None
    amount: int
    currency: str
    reason: str
    source: Source
    status: RefundStatus = RefundStatus.PENDING
    provider_refund_id: str | None = None
    # the payment's status, for the history entry (unchanged by a new refund)
    payment_status: PaymentStatus = PaymentStatus.SUCCEEDED


@dataclass(frozen=True)
class ExistingRefund:
    """The refund that already holds an idempotency key."""

    id: uuid.UUID
    status: RefundStatus
    fingerprint: bytes | None


@dataclass(frozen=True)
class PaymentRefunds:
    """A payment and its refunds, oldest first, as one statement read them
    (the aggregate RefundPayment decides on), and the client's refund that
    holds the request's idempotency key, when one was asked for."""

    payment: Payment
    refunds: list[Refund]
    by_key: ExistingRefund | None = None

    def refund(self, refund_id: uuid.UUID) -> Refund | None:
        return next((r for r in self.refunds if r.id == refund_id), None)

    def others(self, refund_id: uuid.UUID) -> list[Refund]:
        return [r for r in self.refunds if r.id != refund_id]

    def with_new(self, refund: Refund) -> PaymentRefunds:
        """This read as it would be just after `refund` was inserted on it,
        if nobody wrote in between: a refund's change moves its payment's
        version by one. A guess, worth a read saved: a write planned on it
        is made only if the payment is exactly so."""
        return PaymentRefunds(
            replace(self.payment, version=self.payment.version + 1), [*self.refunds, refund]
        )


def refund_fingerprint(payment_id: str, amount: int, reason: str) -> bytes:
    """Identifies the parameters of a refund request (the amount as asked:
    0, "the rest", is the same request when retried)."""
    canonical = json.dumps([payment_id, amount, reason], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def duplicate_of(existing: ExistingRefund, fingerprint: bytes | None) -> DuplicateRefund:
    return DuplicateRefund(
        format_refund_id(existing.id),
        existing.status,
        same_parameters=existing.fingerprint is not None and existing.fingerprint == fingerprint,
    )


# -- what remains, and what the refunds reverse ------------------------------


def held(refunds: Iterable[Refund]) -> int:
    """What refunds that succeeded, are pending or are unknown take."""
    return sum(r.amount for r in refunds if r.status.holds_amount)


def succeeded(refunds: Iterable[Refund]) -> int:
    return sum(r.amount for r in refunds if r.status is RefundStatus.SUCCEEDED)


def remaining(payment: Payment, refunds: Iterable[Refund]) -> int:
    """What may still be refunded (module docstring)."""
    taken = max(held(refunds) + payment.amount_disputed, payment.amount_reversed)
    return max(0, payment.amount - taken)


def is_refundable(payment: Payment) -> bool:
    """Only a succeeded payment (a REVERSED one has nothing left) that was
    charged through us: one the provider never gave an id for has nothing
    at the provider to refund."""
    return payment.status is PaymentStatus.SUCCEEDED and payment.provider_payment_id is not None


def admit(payment: Payment, refunds: Iterable[Refund], asked: int) -> int:
    """The amount of a new refund of `payment` (`asked` 0: all that
    remains), or PaymentNotRefundable / RefundExceedsRemaining."""
    if not is_refundable(payment):
        raise PaymentNotRefundable(payment.public_id, payment.status)
    left = remaining(payment, refunds)
    amount = left if asked == 0 else asked
    if amount > left or amount <= 0:
        # Nothing left (refunds in flight hold it all) is "more than remains"
        # too: the payment is still SUCCEEDED, and `remaining` says 0.
        raise RefundExceedsRemaining(payment.public_id, remaining=left)
    return amount


def reversal_of(payment: Payment, succeeded_refunds: int) -> reversals.Reversal:
    """The payment's amount_reversed and status for the refunds that
    succeeded and its disputes (domain/reversals.py's one rule)."""
    return reversals.reversal(
        payment.status,
        payment.amount,
        succeeded_refunds=succeeded_refunds,
        disputed=payment.amount_disputed,
    )


# -- recording what the provider says about a refund --------------------------


@dataclass(frozen=True)
class RefundOutcome:
    """What one provider answer, event or fetch says of a refund, in our
    terms (the adapter maps the provider's shapes). `provider_status` keeps
    the provider's word."""

    status: RefundStatus
    provider_refund_id: str | None = None
    provider_status: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    note: str | None = None
    # set for provider events (the history keeps them)
    provider_event_id: str | None = None
    provider_event_type: str | None = None
    provider_created_at: datetime | None = None


class RefundWrite(enum.Enum):
    NOTHING = "nothing"  # already there
    RECORD = "record"  # history entry only: the transition table refuses it
    MOVE = "move"  # the refund (and maybe its payment) changes, with history


@dataclass(frozen=True)
class RefundPlan:
    """What recording an outcome writes: the refund's new state, the
    payment's reversal (amount_reversed, status), and one history entry of
    the payment carrying refund_id and the refund's status."""

    write: RefundWrite
    refund_status: RefundStatus
    payment_from: PaymentStatus
    payment_to: PaymentStatus
    amount_reversed: int
    note: str | None
    amount_reversed_changed: bool = False
    # Money counted as given back is not (a refund failed after it
    # succeeded): alerted (domain/reversals.undone).
    undone: bool = False

    @property
    def payment_changes(self) -> bool:
        return self.write is RefundWrite.MOVE and (
            self.payment_from is not self.payment_to or self.amount_reversed_changed
        )


def plan_outcome(
    payment: Payment,
    refund: Refund,
    others_succeeded: int,
    outcome: RefundOutcome,
    *,
    authoritative: bool = False,
) -> RefundPlan:
    """`others_succeeded`: what the payment's other refunds that succeeded
    add up to (read under the payment's lock, as `payment` and `refund`)."""
    move = decide(refund.status, outcome.status, authoritative=authoritative)
    same = payment.status
    if move is Move.NOOP and not (outcome.provider_refund_id and not refund.provider_refund_id):
        return RefundPlan(
            RefundWrite.NOTHING, refund.status, same, same, payment.amount_reversed, None
        )
    if move is Move.REJECT:
        return RefundPlan(
            RefundWrite.RECORD,
            outcome.status,
            same,
            same,
            payment.amount_reversed,
            outcome.note
            or f"refund {refund.status.value} -> {outcome.status.value} not allowed; recorded only",
        )
    total = others_succeeded + (refund.amount if outcome.status is RefundStatus.SUCCEEDED else 0)
    after = reversal_of(payment, total)
    note = outcome.note
    undone = reversals.undone(payment.status, after, payment.amount_reversed)
    if after.amount_reversed != payment.amount_reversed:
        change = reversals.note(payment.amount_reversed, after.amount_reversed, payment.amount)
        if undone:
            change = f"{change}: a refund counted as given back failed"
        note = f"{note}; {change}" if note else change
    return RefundPlan(
        RefundWrite.MOVE,
        outcome.status,
        same,
        after.status,
        after.amount_reversed,
        note,
        amount_reversed_changed=after.amount_reversed != payment.amount_reversed,
        undone=undone,
    )


@dataclass(frozen=True)
class ProviderRefundRequest:
    """What the provider is asked to refund. Our refund id is the
    provider's idempotency key and in its metadata, so a retry or a
    re-drive can never refund twice, and the refund can be found by it."""

    refund_id: str
    payment_id: str
    provider_payment_id: str
    amount: int
    currency: str
    reason: str
