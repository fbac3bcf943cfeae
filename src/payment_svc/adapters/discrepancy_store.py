"""SQL of discrepancies outside another use case's transaction: report one
(deduplicated while open, discrepancy_sql.py), list them, resolve one."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

import asyncpg

from payment_svc.adapters.db import Database
from payment_svc.adapters.discrepancy_sql import report
from payment_svc.domain.errors import NotFound
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.records import Discrepancy, Reported

_DISCREPANCY_COLUMNS = """id, kind, payment_id, provider_payment_id, details, first_seen_at,
    last_seen_at, occurrences, resolved_at, resolved_by, note, refund_id"""


def _discrepancy(row: asyncpg.Record) -> Discrepancy:
    details = row["details"]
    return Discrepancy(
        id=row["id"],
        kind=DiscrepancyKind(row["kind"]),
        payment_id=row["payment_id"],
        provider_payment_id=row["provider_payment_id"],
        details={str(k): str(v) for k, v in details.items()} if isinstance(details, dict) else {},
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        occurrences=row["occurrences"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        note=row["note"],
        refund_id=row["refund_id"],
    )


class DiscrepancyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: uuid.UUID | None,
        provider_payment_id: str | None,
        details: Mapping[str, str],
        *,
        refund_id: uuid.UUID | None = None,
    ) -> Reported:
        return await self._db.run(
            lambda c: report(c, kind, payment_id, provider_payment_id, details, refund_id=refund_id)
        )

    async def discrepancies(
        self,
        *,
        kinds: frozenset[DiscrepancyKind],
        include_resolved: bool,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[Discrepancy]:
        rows = await self._db.run(
            lambda c: c.fetch(
                f"""SELECT {_DISCREPANCY_COLUMNS} FROM discrepancies
                WHERE ($1::text[] IS NULL OR kind = ANY($1))
                  AND ($2 OR resolved_at IS NULL)
                  AND ($3::timestamptz IS NULL OR (first_seen_at, id) < ($3, $4::uuid))
                ORDER BY first_seen_at DESC, id DESC LIMIT $5""",
                sorted(k.value for k in kinds) or None,
                include_resolved,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        )
        return [_discrepancy(r) for r in rows]

    async def resolve(self, discrepancy_id: uuid.UUID, by: str, note: str) -> Discrepancy:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"""UPDATE discrepancies
                SET resolved_at = coalesce(resolved_at, now()),
                    resolved_by = coalesce(resolved_by, $2), note = $3
                WHERE id = $1 RETURNING {_DISCREPANCY_COLUMNS}""",
                discrepancy_id,
                by,
                note,
            )
        )
        if row is None:
            raise NotFound(f"discrepancy {discrepancy_id} not found")
        return _discrepancy(row)
