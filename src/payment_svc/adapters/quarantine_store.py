"""SQL of the quarantine: provider events that could not be understood or
stored, kept (redacted) with the reason. The service layer reports each as
an UNPROCESSABLE_PROVIDER_EVENT discrepancy in the same unit of work.

    QuarantineStore (reads)   list(...) newest first, get(id)
    PgQuarantine (writes, on the unit of work's connection)
        keep(entry)           insert, or count a redelivery of the same bytes
        replayed(id)          mark it applied
"""

from __future__ import annotations

import uuid

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.domain.errors import NotFound
from payment_svc.domain.records import NewQuarantined, Quarantined

_KEEP = """
INSERT INTO quarantined_provider_events AS q
    (id, payload_sha256, payload, provider_event_id, event_type, reason, source)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (payload_sha256) DO UPDATE
SET deliveries = q.deliveries + 1, last_received_at = now(), reason = EXCLUDED.reason
RETURNING id, deliveries
"""

_COLUMNS = """id, payload, provider_event_id, event_type, reason, source, received_at,
    last_received_at, deliveries, replayed_at"""


def _row(row: asyncpg.Record) -> Quarantined:
    return Quarantined(**{k: row[k] for k in row.keys()})  # noqa: SIM118


class QuarantineStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, *, include_replayed: bool, limit: int) -> list[Quarantined]:
        rows = await self._db.run(
            lambda c: c.fetch(
                f"""SELECT {_COLUMNS} FROM quarantined_provider_events
                    WHERE $1 OR replayed_at IS NULL
                    ORDER BY received_at DESC, id DESC LIMIT $2""",
                include_replayed,
                limit,
            )
        )
        return [_row(r) for r in rows]

    async def get(self, quarantine_id: uuid.UUID) -> Quarantined:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"SELECT {_COLUMNS} FROM quarantined_provider_events WHERE id = $1",
                quarantine_id,
            )
        )
        if row is None:
            raise NotFound(f"quarantined event {quarantine_id} not found")
        return _row(row)


class PgQuarantine:
    """LockedQuarantine (service_layer/unit_of_work.py) on the unit of work's
    connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def keep(self, entry: NewQuarantined) -> tuple[uuid.UUID, int]:
        row = await self._conn.fetchrow(
            _KEEP,
            uuid.uuid4(),
            entry.payload_sha256,
            entry.payload,
            entry.provider_event_id,
            entry.event_type,
            entry.reason,
            entry.source,
        )
        assert row is not None
        return row["id"], int(row["deliveries"])

    async def replayed(self, quarantine_id: uuid.UUID) -> Quarantined:
        row = await self._conn.fetchrow(
            f"""UPDATE quarantined_provider_events SET replayed_at = now()
                WHERE id = $1 RETURNING {_COLUMNS}""",
            quarantine_id,
        )
        if row is None:
            raise NotFound(f"quarantined event {quarantine_id} not found")
        return _row(row)
