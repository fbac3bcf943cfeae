"""The provider-event inbox in our terms: an event to apply, what applying it
did, and the upkeep's views of unmatched events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from payment_svc.domain.provider_events import ProviderObservation
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.status import Source


@dataclass(frozen=True)
class InboxEvent:
    provider_event_id: str
    event_type: str
    created: datetime | None
    stored_json: str
    observation: ProviderObservation
    source: Source


@dataclass(frozen=True)
class EventOutcome:
    duplicate: bool
    payment_id: uuid.UUID | None
    applied: bool
    # A discrepancy this event revealed (recorded in the same transaction).
    discrepancy: DiscrepancyKind | None = None


@dataclass(frozen=True)
class StoredEvent:
    """An inbox row as stored, for the upkeep to parse again."""

    payload: str
    provider_created_at: datetime | None
    source: str


@dataclass(frozen=True)
class UnmatchedEvent:
    """An inbox event that matched no payment before its deadline."""

    provider_event_id: str
    event_type: str
    provider_object_id: str | None
    metadata_payment_id: str | None
    received_at: datetime


@dataclass
class Rematched:
    matched: int = 0
    # inbox rows that no longer parse (stored by an older parser)
    unreadable: list[str] = field(default_factory=list)
