"""The use cases of ProviderSyncService that exist so far: applying a
provider event (webhook or catch-up), and the upkeep of the inbox (matching
events that arrived before their payment could be found, reporting the ones
that never match).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from payment_svc.adapters.event_store import EventOutcome, EventStore, InboxEvent
from payment_svc.adapters.reconciliation_store import ReconciliationStore
from payment_svc.adapters.stripe_events import parse_event
from payment_svc.domain.cards import redact_card_numbers
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.status import Source

log = structlog.get_logger("payment_svc.provider_sync")


@dataclass(frozen=True)
class ApplyProviderEvent:
    provider_event_id: str
    event_type: str
    payload: bytes
    source: Source


class ProviderSyncService:
    def __init__(
        self,
        events: EventStore,
        discrepancies: ReconciliationStore,
        *,
        unmatched_deadline_seconds: float,
    ) -> None:
        self._events = events
        self._discrepancies = discrepancies
        self._unmatched_deadline = unmatched_deadline_seconds

    async def apply_event(self, cmd: ApplyProviderEvent) -> EventOutcome:
        parsed = parse_event(cmd.payload)
        mismatch = [
            FieldViolation(name, "does not match the payload")
            for name, given, actual in (
                ("provider_event_id", cmd.provider_event_id, parsed.id),
                ("event_type", cmd.event_type, parsed.type),
            )
            # the payload's values are redacted: so is what is compared with them
            if given and redact_card_numbers(given) != actual
        ]
        if mismatch:
            raise InvalidArgument(mismatch)
        structlog.contextvars.bind_contextvars(provider_event_id=parsed.id)
        outcome = await self._events.apply(
            InboxEvent(
                provider_event_id=parsed.id,
                event_type=parsed.type,
                created=parsed.created,
                stored_json=parsed.stored_json,
                observation=parsed.observation,
                source=cmd.source,
            )
        )
        # DEBUG: the inbox is the record of every event; at INFO this line
        # cost more than the rest of the call.
        log.debug(
            "provider_event_received",
            event_type=parsed.type,
            duplicate=outcome.duplicate,
            applied=outcome.applied,
            matched=outcome.payment_id is not None,
        )
        return outcome

    async def rematch(self, limit: int = 100) -> int:
        return await self._events.rematch(limit, _inbox_event)

    async def report_overdue(self) -> int:
        """Unmatched events past the deadline become UNMATCHED_PROVIDER_EVENT
        discrepancies, logged at ERROR once each."""
        rows = await self._events.overdue_unmatched(self._unmatched_deadline)
        for row in rows:
            log.error(
                "provider_event_unmatched",
                kind=DiscrepancyKind.UNMATCHED_PROVIDER_EVENT.value,
                provider_event_id=row["provider_event_id"],
                event_type=row["event_type"],
                provider_object_id=row["provider_object_id"],
                received_at=row["received_at"].isoformat(),
            )
            await self._discrepancies.report(
                DiscrepancyKind.UNMATCHED_PROVIDER_EVENT,
                None,
                row["provider_object_id"] or row["provider_event_id"],
                {
                    "provider_event_id": row["provider_event_id"],
                    "event_type": row["event_type"],
                    "metadata_payment_id": row["metadata_payment_id"] or "",
                },
            )
        return len(rows)

    async def count_unmatched(self) -> int:
        return await self._events.count_unmatched()


def _inbox_event(row: asyncpg.Record) -> InboxEvent:
    parsed = parse_event(row["payload"].encode())
    created: datetime | None = row["provider_created_at"]
    return InboxEvent(
        provider_event_id=parsed.id,
        event_type=parsed.type,
        created=created,
        stored_json=parsed.stored_json,
        observation=parsed.observation,
        source=Source(row["source"]),
    )
