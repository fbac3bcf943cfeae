"""The decisions of recording a payment and the provider's answer to it; the
adapter (adapters/payment_store.py) writes what they say, one statement each.

    plan_result(payment, answer)   NOTHING (already there), RECORD (history
                                   only: the transition table refuses it, or
                                   another provider payment carries our id:
                                   DUPLICATE_PROVIDER_PAYMENT, never rebinding),
                                   or MOVE (status, binding, history)
    duplicate_of(existing, new)    a key used before: a retry of the same
                                   request (DUPLICATE_PAYMENT) or a reuse of
                                   the key for another one (IDEMPOTENCY_KEY_REUSED)
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from payment_svc.domain import status as st
from payment_svc.domain.binding import bind, duplicate_note
from payment_svc.domain.errors import DuplicatePayment
from payment_svc.domain.model import NewPayment, Payment, ProviderResult, format_payment_id
from payment_svc.domain.status import PaymentStatus, Source


class ResultWrite(enum.Enum):
    NOTHING = "nothing"
    RECORD = "record"
    MOVE = "move"


@dataclass(frozen=True)
class ResultPlan:
    write: ResultWrite
    note: str | None = None
    # DUPLICATE_PROVIDER_PAYMENT's details, when the answer is about another
    # provider payment than the one the payment is bound to
    duplicate: Mapping[str, str] | None = None


ResultPlanner = Callable[[Payment, ProviderResult, Source], ResultPlan]


def plan_result(payment: Payment, result: ProviderResult, source: Source) -> ResultPlan:
    move = st.decide(payment.status, result.status, authoritative=False)
    if move is st.Move.NOOP:
        return ResultPlan(ResultWrite.NOTHING)
    if not bind(payment.provider_payment_id, result.provider_payment_id).may_apply:
        return ResultPlan(
            ResultWrite.RECORD,
            duplicate_note(payment.provider_payment_id, result.provider_payment_id),
            duplicate={
                "bound_provider_payment_id": payment.provider_payment_id or "",
                "provider_status": result.provider_status or "",
                "our_status": payment.status.value,
                "source": source.value,
            },
        )
    if move is st.Move.REJECT:
        return ResultPlan(
            ResultWrite.RECORD, result.note or "transition not allowed; recorded only"
        )
    return ResultPlan(ResultWrite.MOVE, result.note)


@dataclass(frozen=True)
class ExistingPayment:
    """The payment that already holds an idempotency key."""

    id: uuid.UUID
    status: PaymentStatus
    fingerprint: bytes


def duplicate_of(existing: ExistingPayment, new: NewPayment) -> DuplicatePayment:
    return DuplicatePayment(
        format_payment_id(existing.id),
        existing.status,
        same_parameters=existing.fingerprint == new.fingerprint,
    )
