"""Typed inputs of the use cases, and the input rules of SPEC §3.

Violations never echo the offending value: it may be card data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from payment_svc.domain import money
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.model import parse_payment_id
from payment_svc.domain.refunds import RefundReason
from payment_svc.domain.status import PaymentStatus
from payments_kit.cards import contains_card_number, contains_embedded_card_number

MAX_KEY_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 1000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
# Provider payment-method tokens: pm_card_visa, pm_1Nx...; never raw card data.
_PAYMENT_METHOD = re.compile(r"pm_[A-Za-z0-9_]{1,250}")

CARD_DATA = "looks like a card number; send a provider token (pm_...) instead"


@dataclass(frozen=True)
class CreatePayment:
    idempotency_key: str
    amount: int
    currency: str
    payment_method: str
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raises InvalidArgument naming every field that breaks a rule."""
        v = _key_violations(self.idempotency_key)
        if not money.MIN_AMOUNT <= self.amount <= money.MAX_AMOUNT:
            v.append(
                FieldViolation(
                    "amount",
                    f"must be {money.MIN_AMOUNT}..{money.MAX_AMOUNT} minor units of the currency",
                )
            )
        if not money.is_currency(self.currency):
            v.append(FieldViolation("currency", "must be an ISO 4217 code in upper case (USD)"))
        if contains_embedded_card_number(self.payment_method):
            v.append(FieldViolation("payment_method", CARD_DATA))
        elif not _PAYMENT_METHOD.fullmatch(self.payment_method):
            v.append(
                FieldViolation("payment_method", "must be a provider token such as pm_card_visa")
            )
        if len(self.description) > MAX_DESCRIPTION_LENGTH:
            v.append(
                FieldViolation(
                    "description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters"
                )
            )
        elif contains_card_number(self.description):
            v.append(FieldViolation("description", CARD_DATA))
        v.extend(_metadata_violations(self.metadata))
        if v:
            raise InvalidArgument(v)


def _key_violations(key: str) -> list[FieldViolation]:
    """The idempotency-key rules, the same for payments and refunds."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return [FieldViolation("idempotency_key", f"must be 1..{MAX_KEY_LENGTH} characters")]
    if not _PRINTABLE_ASCII.fullmatch(key):
        return [FieldViolation("idempotency_key", "must be printable ASCII characters")]
    if contains_card_number(key):
        return [FieldViolation("idempotency_key", CARD_DATA)]
    return []


def _payment_id_violations(payment_id: str) -> list[FieldViolation]:
    if parse_payment_id(payment_id) is None:
        return [FieldViolation("payment_id", "must be a payment id (pay_...)")]
    return []


REFUND_REASONS = frozenset(r.value for r in RefundReason)


@dataclass(frozen=True)
class RefundPayment:
    """RefundPayment's input. `amount` 0 means all that remains."""

    payment_id: str
    idempotency_key: str
    amount: int = 0
    reason: str = ""

    def validate(self) -> None:
        v = _payment_id_violations(self.payment_id)
        v.extend(_key_violations(self.idempotency_key))
        if not 0 <= self.amount <= money.MAX_AMOUNT:
            v.append(
                FieldViolation(
                    "amount",
                    f"must be 0..{money.MAX_AMOUNT} minor units of the payment's currency "
                    "(0: all that remains)",
                )
            )
        if self.reason not in REFUND_REASONS:
            v.append(
                FieldViolation(
                    "reason", "must be empty, duplicate, fraudulent or requested_by_customer"
                )
            )
        if v:
            raise InvalidArgument(v)


@dataclass(frozen=True)
class ListRefunds:
    payment_id: str

    def validate(self) -> None:
        v = _payment_id_violations(self.payment_id)
        if v:
            raise InvalidArgument(v)


def _metadata_violations(metadata: Mapping[str, str]) -> list[FieldViolation]:
    v: list[FieldViolation] = []
    if len(metadata) > MAX_METADATA_KEYS:
        v.append(FieldViolation("metadata", f"must have at most {MAX_METADATA_KEYS} keys"))
    for k, val in sorted(metadata.items()):
        # The key is named in the path only when it is safe to repeat.
        name = (
            f"metadata[{k}]"
            if len(k) <= MAX_METADATA_KEY_LENGTH and not contains_card_number(k)
            else "metadata"
        )
        if not 1 <= len(k) <= MAX_METADATA_KEY_LENGTH:
            v.append(FieldViolation(name, f"keys must be 1..{MAX_METADATA_KEY_LENGTH} characters"))
        elif contains_card_number(k):
            v.append(FieldViolation(name, CARD_DATA))
        if len(val) > MAX_METADATA_VALUE_LENGTH:
            v.append(
                FieldViolation(
                    name, f"values must be at most {MAX_METADATA_VALUE_LENGTH} characters"
                )
            )
        elif contains_card_number(val):
            v.append(FieldViolation(name, CARD_DATA))
    return v


@dataclass(frozen=True)
class ListPayments:
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""
    statuses: frozenset[PaymentStatus] = frozenset()
    created_after: datetime | None = None
    created_before: datetime | None = None

    def validate(self) -> None:
        v: list[FieldViolation] = []
        if self.page_size < 0:
            v.append(FieldViolation("page_size", "must not be negative"))
        if (
            self.created_after is not None
            and self.created_before is not None
            and self.created_after >= self.created_before
        ):
            v.append(FieldViolation("created_before", "must be later than created_after"))
        if v:
            raise InvalidArgument(v)

    @property
    def effective_page_size(self) -> int:
        if self.page_size == 0:
            return DEFAULT_PAGE_SIZE
        return min(self.page_size, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class PageCursor:
    """Where a keyset page ended: the last row's sort key (created_at,
    updated_at or first_seen_at, whichever the listing orders by) and id."""

    sort_key: datetime
    id: uuid.UUID
