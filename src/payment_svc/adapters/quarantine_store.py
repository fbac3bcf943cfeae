"""SQL of the quarantine: provider events that could not be understood or
stored, kept (redacted) with the reason, each reported as an
UNPROCESSABLE_PROVIDER_EVENT discrepancy in the same transaction.

    keep(entry)          insert, or count a redelivery of the same bytes
    list(...)            newest first
    get(id)
    replayed(id, by)     mark it applied and resolve its discrepancy
"""

from __future__ import annotations

import uuid

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.discrepancy_sql import report as report_discrepancy
from payment_svc.domain.errors import NotFound
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.records import NewQuarantined, Quarantined
from payment_svc.domain.records import quarantine_dedup_key as dedup_key

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

    async def keep(self, entry: NewQuarantined) -> tuple[uuid.UUID, int]:
        """Returns the entry's id and how many deliveries it has had."""

        async def op(conn: Conn) -> tuple[uuid.UUID, int]:
            async with conn.transaction():
                row = await conn.fetchrow(
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
                await report_discrepancy(
                    conn,
                    DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT,
                    None,
                    None,
                    {
                        "quarantine_id": str(row["id"]),
                        "provider_event_id": entry.provider_event_id or "",
                        "event_type": entry.event_type or "",
                        "reason": entry.reason,
                    },
                    dedup=dedup_key(row["id"]),
                )
                return row["id"], int(row["deliveries"])

        return await self._db.run(op)

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

    async def replayed(self, quarantine_id: uuid.UUID, by: str) -> Quarantined:
        """Marks the entry applied, and resolves its discrepancy."""

        async def op(conn: Conn) -> asyncpg.Record | None:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"""UPDATE quarantined_provider_events SET replayed_at = now()
                        WHERE id = $1 RETURNING {_COLUMNS}""",
                    quarantine_id,
                )
                await conn.execute(
                    """UPDATE discrepancies
                       SET resolved_at = now(), resolved_by = $2,
                           note = 'replayed from the quarantine'
                       WHERE dedup_key = $1 AND resolved_at IS NULL""",
                    dedup_key(quarantine_id),
                    by,
                )
                return row

        row = await self._db.run(op)
        if row is None:
            raise NotFound(f"quarantined event {quarantine_id} not found")
        return _row(row)
