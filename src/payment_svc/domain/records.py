"""What the reconciliation flow keeps besides payments: discrepancies, runs,
the quarantine, and the figures behind the gauges."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from payment_svc.domain.model import Payment
from payment_svc.domain.reconciliation import DiscrepancyKind


@dataclass(frozen=True)
class Discrepancy:
    id: uuid.UUID
    kind: DiscrepancyKind
    payment_id: uuid.UUID | None
    provider_payment_id: str | None
    details: Mapping[str, str]
    first_seen_at: datetime
    last_seen_at: datetime
    occurrences: int
    resolved_at: datetime | None
    resolved_by: str | None
    note: str | None
    # set for a finding about one of our refunds
    refund_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Reported:
    id: uuid.UUID
    occurrences: int


@dataclass(frozen=True)
class Run:
    job: str
    reconciler_id: str
    started_at: datetime
    finished_at: datetime
    scanned: int
    fixed: int
    discrepancies: int
    errors: int
    succeeded: bool
    error_message: str | None
    id: uuid.UUID | None = None


@dataclass(frozen=True)
class Reconciled:
    payment: Payment
    changed: bool
    discrepancies: list[DiscrepancyKind]


@dataclass(frozen=True)
class Status:
    open_by_kind: dict[DiscrepancyKind, int]
    oldest_non_final_created_at: datetime | None
    non_final: int
    last_runs: list[Run]
    # PENDING and UNKNOWN refunds
    oldest_non_final_refund_created_at: datetime | None = None
    non_final_refunds: int = 0


@dataclass(frozen=True)
class NewQuarantined:
    payload_sha256: str
    payload: bytes  # redacted
    provider_event_id: str | None
    event_type: str | None
    reason: str
    source: str


@dataclass(frozen=True)
class Quarantined:
    id: uuid.UUID
    payload: bytes
    provider_event_id: str | None
    event_type: str | None
    reason: str
    source: str
    received_at: datetime
    last_received_at: datetime
    deliveries: int
    replayed_at: datetime | None


def quarantine_dedup_key(quarantine_id: uuid.UUID) -> str:
    """One open discrepancy per quarantined event (it has no payment)."""
    return f"{DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT.value}|quarantine|{quarantine_id}"
