"""SQL of the provider-event inbox. The orchestration (find and lock the
payment, plan with the domain rules, report, write) is the service layer's
(service_layer/provider_sync.py), in a unit of work; here:

    PgInbox           inside the unit of work: find and lock the payment;
                      one statement inserts the inbox row already matched and
                      updates payment + history as decided, only if the event
                      is new (a redelivery writes nothing: duplicate); or
                      keeps the event unmatched; the rematch's row lock, match
    EventStore        the upkeep: unmatched ids, overdue (marked as
                      reported), the count

An event Postgres refuses to store (a value out of a column's range, a key
past the index limit: whatever the parser's checks missed) is
UnprocessableEvent, for the quarantine, never a retry.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.payment_store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.domain.errors import FieldViolation, UnprocessableEvent
from payment_svc.domain.inbox import (
    EventOutcome,
    EventTarget,
    EventWrite,
    InboxEvent,
    StoredEvent,
    UnmatchedEvent,
)
from payment_svc.domain.model import parse_payment_id
from payment_svc.domain.provider_events import ProviderObservation

_FIND_PAYMENT = f"""
SELECT {PAYMENT_COLUMNS}, provider_state_at, provider_state_rank FROM payments
WHERE provider_payment_id = $1 OR id = $2
ORDER BY provider_payment_id = $1 DESC NULLS LAST
LIMIT 1
FOR UPDATE
"""

# A new event for a payment we have not found: kept in the inbox unmatched (the
# upkeep matches it again as payments appear). A redelivery inserts nothing.
_INSERT_UNMATCHED = """
INSERT INTO provider_events (provider_event_id, event_type, provider_object_id,
                             metadata_payment_id, provider_created_at, payload, source)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)
ON CONFLICT (provider_event_id) DO NOTHING
RETURNING provider_event_id
"""

_INBOX_ROW = "SELECT payment_id, applied FROM provider_events WHERE provider_event_id = $1"


def _payment_writes(only_if: str) -> str:
    """The CTEs `u` and `h` of what one matched event writes: the payment's
    row as the domain planned it under the row's lock (domain/inbox.py
    row_after: every value final, assigned; $10 false: not written) and its
    history entry, both only when `only_if` holds."""
    return f"""
u AS (
    UPDATE payments
    SET status = $3, provider_payment_id = $4, failure_code = $5, failure_message = $6,
        amount_reversed = $7, amount_disputed = $17,
        provider_state_at = $8, provider_state_rank = $9,
        -- a confirmation of the state we have is not a change of the payment
        version = version + CASE WHEN $2 THEN 1 ELSE 0 END,
        updated_at = CASE WHEN $2 THEN now() ELSE updated_at END
    WHERE id = $1 AND $10 AND {only_if}
), h AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
        provider_event_id, provider_event_type, failure_code, note, provider_created_at)
    SELECT $1, $11, $18, $12, $2, $13, $14, $19, $15, $20 WHERE {only_if} AND $16
)"""


# A new event for the payment locked in this transaction, in one statement:
# the inbox row, inserted matched (one write of its payload, not an insert and
# then an update), and the payment's writes, all only if the event is new. A
# redelivery writes nothing and reads the inbox row as it was (the statement's
# snapshot precedes the insert).
_INSERT_MATCHED = f"""
WITH ins AS (
    INSERT INTO provider_events (provider_event_id, event_type, provider_object_id,
        metadata_payment_id, provider_created_at, payload, source,
        payment_id, matched_at, applied)
    VALUES ($13, $14, $21, $22, $20, $23::text::jsonb, $12, $1, now(), $2)
    ON CONFLICT (provider_event_id) DO NOTHING
    RETURNING provider_event_id
), {_payment_writes("EXISTS (SELECT FROM ins)")}
SELECT (SELECT count(*) FROM ins) AS inserted, prior.payment_id, prior.applied
FROM (VALUES (1)) AS one
LEFT JOIN provider_events AS prior ON prior.provider_event_id = $13
"""

# An inbox event matched later (the upkeep's rematch): the payment's writes and
# the inbox row's match, in one statement.
_RECORD_MATCH = f"""
WITH {_payment_writes("true")}
UPDATE provider_events SET payment_id = $1, matched_at = now(), applied = $2
WHERE provider_event_id = $13
"""


# What Postgres says about values that can never be stored, as opposed to
# an outage (StoreUnavailable) or a conflict the statements handle.
_UNSTORABLE = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.exceptions._base.DataError,  # asyncpg's own: an argument out of range
)


class PgInbox:
    """The inbox inside a unit of work (adapters/postgres_uow.py): SQL only;
    service_layer/provider_sync.py decides what is written."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def find_payment(self, obs: ProviderObservation) -> EventTarget | None:
        by_metadata = _metadata_uuid(obs)
        if obs.provider_payment_id is None and by_metadata is None:
            return None
        row = await self._conn.fetchrow(_FIND_PAYMENT, obs.provider_payment_id, by_metadata)
        if row is None:
            return None
        return EventTarget(
            payment_from_row(row), row["provider_state_at"], row["provider_state_rank"]
        )

    async def insert_matched(self, event: InboxEvent, write: EventWrite) -> EventOutcome | None:
        with _unstorable():
            written = await self._conn.fetchrow(
                _INSERT_MATCHED,
                *_write_args(event, write),
                event.observation.provider_payment_id,
                event.observation.metadata_payment_id,
                event.stored_json,
            )
        assert written is not None
        if written["inserted"]:
            return None
        return await self._duplicate(event.provider_event_id, written)

    async def insert_unmatched(self, event: InboxEvent) -> EventOutcome | None:
        obs = event.observation
        with _unstorable():
            inserted = await self._conn.fetchval(
                _INSERT_UNMATCHED,
                event.provider_event_id,
                event.event_type,
                obs.provider_payment_id,
                obs.metadata_payment_id,
                event.created,
                event.stored_json,
                event.source.value,
            )
        if inserted is not None:
            return None
        return await self._duplicate(event.provider_event_id, None)

    async def claim_unmatched(self, provider_event_id: str) -> StoredEvent | None:
        row = await self._conn.fetchrow(
            """SELECT provider_event_id, event_type, provider_created_at,
                      payload::text AS payload, source
               FROM provider_events
               WHERE provider_event_id = $1 AND payment_id IS NULL
               FOR UPDATE SKIP LOCKED""",
            provider_event_id,
        )
        if row is None:
            return None
        return StoredEvent(row["payload"], row["provider_created_at"], row["source"])

    async def record_match(self, event: InboxEvent, write: EventWrite) -> None:
        with _unstorable():
            await self._conn.execute(_RECORD_MATCH, *_write_args(event, write))

    async def mark_attempted(self, provider_event_id: str) -> None:
        await self._conn.execute(
            "UPDATE provider_events SET match_attempted_at = now() WHERE provider_event_id = $1",
            provider_event_id,
        )

    async def _duplicate(
        self, provider_event_id: str, prior: asyncpg.Record | None
    ) -> EventOutcome:
        """A redelivery: what became of the event the first time. `prior` is
        the inbox row as the writing statement saw it; when that snapshot
        predates a concurrent first delivery, the row is read again."""
        if prior is None or prior["payment_id"] is None:
            prior = await self._conn.fetchrow(_INBOX_ROW, provider_event_id)
        assert prior is not None
        return EventOutcome(True, prior["payment_id"], bool(prior["applied"]))


class EventStore:
    """The inbox's upkeep outside a unit of work: one bounded call each."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def unmatched_ids(self, limit: int) -> list[str]:
        """Inbox events that matched no payment yet, the longest untried first."""
        rows = await self._db.run(
            lambda c: c.fetch(
                """SELECT provider_event_id FROM provider_events
                   WHERE payment_id IS NULL AND unmatched_reported_at IS NULL
                   ORDER BY match_attempted_at NULLS FIRST LIMIT $1""",
                limit,
            )
        )
        return [r["provider_event_id"] for r in rows]

    async def overdue_unmatched(self, older_than_seconds: float) -> list[UnmatchedEvent]:
        """Unmatched events past their deadline, not reported before; marks
        them reported and returns them."""
        rows = await self._db.run(
            lambda c: c.fetch(
                """UPDATE provider_events SET unmatched_reported_at = now()
                   WHERE payment_id IS NULL AND unmatched_reported_at IS NULL
                     AND received_at < now() - make_interval(secs => $1)
                   RETURNING provider_event_id, event_type, provider_object_id,
                             metadata_payment_id, received_at""",
                older_than_seconds,
            )
        )
        return [UnmatchedEvent(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118

    async def count_unmatched(self) -> int:
        value = await self._db.run(
            lambda c: c.fetchval("SELECT count(*) FROM provider_events WHERE payment_id IS NULL")
        )
        return int(value)


def _metadata_uuid(obs: ProviderObservation) -> uuid.UUID | None:
    return parse_payment_id(obs.metadata_payment_id) if obs.metadata_payment_id else None


def _write_args(event: InboxEvent, write: EventWrite) -> tuple[object, ...]:
    """$1..$20 of _payment_writes: the planned row (or placeholders when it
    is not written: $10 false), then the history entry."""
    obs = event.observation
    row = write.row
    return (
        write.payment_id,
        write.applied,
        row.status.value if row else write.from_status.value,
        row.provider_payment_id if row else None,
        row.failure_code if row else None,
        row.failure_message if row else None,
        row.amount_reversed if row else 0,
        row.provider_state_at if row else None,
        row.provider_state_rank if row else None,
        row is not None,
        write.from_status.value,
        event.source.value,
        event.provider_event_id,
        event.event_type,
        write.note,
        write.history,
        row.amount_disputed if row else 0,
        write.to_status.value,
        obs.failure_code,
        obs.occurred_at,
    )


@contextlib.contextmanager
def _unstorable() -> Iterator[None]:
    """An event Postgres refuses to store: UnprocessableEvent."""
    try:
        yield
    except _UNSTORABLE as exc:
        state = getattr(exc, "sqlstate", None) or type(exc).__name__
        raise UnprocessableEvent(
            [FieldViolation("payload", f"the database refused to store it ({state})")]
        ) from None
