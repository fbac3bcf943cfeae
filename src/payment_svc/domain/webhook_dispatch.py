"""What the dispatcher's calls carry (SPEC §3d), as plain data.

LeaseWebhookEndpoints   -> LeasedEndpoint        (who serves which endpoint)
FetchWebhookMessages    -> DueMessages           (of each payment its oldest
                                                  undelivered update, when due)
RecordWebhookAttempt    <- AttemptRecord         (the outcome, decided by the
                                                  dispatcher from its schedule)
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from payment_svc.domain.errors import FailedPrecondition
from payment_svc.domain.feed import PaymentUpdate


class LeaseLost(FailedPrecondition):
    """The dispatcher no longer holds the endpoint (expired and taken over,
    disabled, deleted): it stops serving it."""

    reason = "WEBHOOK_LEASE_LOST"


class AttemptOutcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVEN_UP = "given_up"
    GONE = "gone"


@dataclass(frozen=True)
class LeasedEndpoint:
    id: uuid.UUID
    client_id: str
    url: str
    # the current key first, then the previous one during a rotation
    secrets: tuple[bytes, ...]


@dataclass(frozen=True)
class DueMessage:
    attempt: int
    update: PaymentUpdate


@dataclass(frozen=True)
class DueMessages:
    client_id: str
    messages: list[DueMessage]
    next_due_in: timedelta | None
    oldest_undelivered_at: datetime | None


@dataclass(frozen=True)
class AttemptRecord:
    dispatcher_id: str
    endpoint_id: uuid.UUID
    position: int
    update_id: uuid.UUID
    payment_id: uuid.UUID
    attempt: int
    attempted_at: datetime
    http_status: int
    error: str
    duration_ms: int
    outcome: AttemptOutcome
    retry_in: timedelta
    disable_after_failing: timedelta | None


@dataclass(frozen=True)
class EndpointState:
    enabled: bool
    disabled_reason: str
