"""Payments, their history entries, and what the provider answered."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from payment_svc.domain.status import PaymentStatus, Source

if TYPE_CHECKING:  # refunds.py builds on this module
    from payment_svc.domain.refunds import RefundStatus

PAYMENT_ID_PREFIX = "pay_"


def format_payment_id(value: uuid.UUID) -> str:
    return PAYMENT_ID_PREFIX + value.hex


def parse_payment_id(text: str) -> uuid.UUID | None:
    """`pay_<32 hex>` to its UUID, or None when it is not one of ours."""
    if not text.startswith(PAYMENT_ID_PREFIX) or len(text) != len(PAYMENT_ID_PREFIX) + 32:
        return None
    try:
        return uuid.UUID(hex=text[len(PAYMENT_ID_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    client_id: str
    idempotency_key: str
    amount: int
    currency: str
    status: PaymentStatus
    payment_method: str
    description: str
    metadata: Mapping[str, str]
    provider_payment_id: str | None
    failure_code: str | None
    failure_message: str | None
    amount_reversed: int
    version: int
    created_at: datetime
    updated_at: datetime
    # What disputes took, apart from refunds (amount_reversed counts both).
    amount_disputed: int = 0

    @property
    def public_id(self) -> str:
        return format_payment_id(self.id)


@dataclass(frozen=True)
class PaymentEvent:
    id: int
    payment_id: uuid.UUID
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    source: Source
    applied: bool
    provider_event_id: str | None
    provider_event_type: str | None
    failure_code: str | None
    note: str | None
    provider_created_at: datetime | None
    recorded_at: datetime
    # set when the entry is a change of one of the payment's refunds
    refund_id: uuid.UUID | None = None
    refund_status: RefundStatus | None = None


@dataclass(frozen=True)
class ProviderResult:
    """What one provider call taught us. `status` is already ours (the
    adapter owns the mapping); `provider_status` keeps the provider's word."""

    status: PaymentStatus
    provider_payment_id: str | None = None
    provider_status: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ProviderCharge:
    """What the provider is asked to charge. `idempotency_key` is our payment
    id, so a re-drive can never charge twice."""

    payment_id: str
    amount: int
    currency: str
    payment_method: str
    description: str
    idempotency_key: str = field(default="")


def request_fingerprint(
    amount: int, currency: str, payment_method: str, description: str, metadata: Mapping[str, str]
) -> bytes:
    """Identifies the parameters of a create request, to tell a retry of the
    same request from a reuse of its idempotency key."""
    canonical = json.dumps(
        [amount, currency, payment_method, description, sorted(metadata.items())],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class NewPayment:
    """What CreatePayment writes first: the payment as PENDING (its first
    history entry goes with it, in the same statement)."""

    id: uuid.UUID
    client_id: str
    idempotency_key: str
    fingerprint: bytes
    amount: int
    currency: str
    payment_method: str
    description: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class PaymentRow:
    """The payment's row as one provider event or snapshot leaves it: every
    value final, worked out in the domain under the row's lock (inbox.row_after,
    reconciliation.snapshot_row); the adapters assign them, and no rule of
    ordering, reversal, dispute or binding is restated in SQL."""

    status: PaymentStatus
    provider_payment_id: str | None
    failure_code: str | None
    failure_message: str | None
    amount_reversed: int
    amount_disputed: int
    provider_state_at: datetime | None
    provider_state_rank: int | None
