"""The change feed's rules (SPEC §3b): what an update is, its type, where a
reader starts, and when a cursor has expired.

An update is numbered by its position: positions are handed out after
commit, in one sequence for every client (adapters/feed_store.py), so the
numbered updates a reader can see are always a prefix of the feed. A reader
that resumes after the last position it processed misses nothing. Retention
deletes the oldest updates and raises the horizon, the highest position
deleted: a cursor below it would silently skip what was deleted, so it is
refused (CURSOR_EXPIRED).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from payment_svc.domain.errors import CursorExpired, FieldViolation, InvalidArgument
from payment_svc.domain.model import Payment, PaymentEvent
from payment_svc.domain.refunds import Refund
from payment_svc.domain.status import PaymentStatus

DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class PaymentUpdate:
    id: uuid.UUID
    position: int
    type: str
    payment: Payment
    event: PaymentEvent
    refund: Refund | None
    # when the change committed (near enough: the outbox row is written at commit)
    recorded_at: datetime


@dataclass(frozen=True)
class FeedPage:
    updates: list[PaymentUpdate]
    # the highest position retention deleted, read after the updates
    horizon: int


def is_feed_change(event: PaymentEvent, refund_id: uuid.UUID | None) -> bool:
    """Whether a history entry is a change callers are told of: an applied
    entry of a refund's change, or one that moved the payment's status or
    amount_reversed. An applied entry that keeps the status changed
    amount_reversed when the payment is SUCCEEDED or REVERSED (nothing else
    moves those without a new status);
    PENDING -> PENDING only records that the provider is still processing.
    The trigger of migration 0011 applies the same rule in SQL."""
    if not event.applied:
        return False  # recorded, changed nothing (a stale provider event)
    if refund_id is not None:
        return True
    return event.from_status is not event.to_status or event.to_status in (
        PaymentStatus.SUCCEEDED,
        PaymentStatus.REVERSED,
    )


def update_type(event: PaymentEvent, refund_status: str | None) -> str:
    """The outbox row's `type` (Debezium's event type). The trigger of
    migration 0011 applies the same rule in SQL; tests hold them together."""
    if refund_status is not None:
        return f"refund.{refund_status.lower()}"
    if event.from_status is event.to_status:
        return "payment.amount_reversed"
    return f"payment.{event.to_status.value.lower()}"


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def check_cursor(after: int, horizon: int) -> None:
    """Reading after `after` is complete only if nothing above it was
    deleted. `after` 0 (no cursor) means from the oldest kept: never expired."""
    if after and after < horizon:
        raise CursorExpired(
            "the cursor is older than the updates kept; start again without a cursor "
            "and look payments up to catch up"
        )


def effective_start(after: int, horizon: int) -> int:
    """Where a read starts: after the cursor, or after what was deleted."""
    check_cursor(after, horizon)
    return max(after, horizon)
