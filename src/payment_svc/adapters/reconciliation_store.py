"""SQL of the reconciliation flow about payments: the SQL of a snapshot's
writes (the unit of work runs it), the sweep's work list and its leases, look-ups. Discrepancies:
discrepancy_store.py; runs, checkpoints, status: run_store.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.discrepancy_sql import report as report
from payment_svc.adapters.store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import Payment, format_payment_id
from payment_svc.domain.provider_events import rank_of
from payment_svc.domain.reconciliation import (
    Snapshot,
    SnapshotPlan,
)


class SnapshotStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def to_reconcile(
        self,
        *,
        older_than_seconds: float,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        owner: str,
        lease_seconds: float | None,
    ) -> list[Payment]:
        """Non-final payments untouched for a while, oldest first. With a
        lease, the ones returned are claimed (others' live claims skipped)."""
        query = """
            SELECT id FROM payments
            WHERE status IN ('PENDING', 'UNKNOWN')
              AND updated_at < now() - make_interval(secs => $1)
              AND ($2::timestamptz IS NULL OR (updated_at, id) > ($2, $3::uuid))
              AND ($4::float8 IS NULL OR reconcile_lease_until IS NULL
                   OR reconcile_lease_until < now() OR reconcile_lease_owner = $5)
            ORDER BY updated_at, id
            LIMIT $6"""
        args = (
            older_than_seconds,
            after[0] if after else None,
            after[1] if after else None,
            lease_seconds,
            owner,
            limit,
        )
        if lease_seconds is None:
            rows = await self._db.run(
                lambda c: c.fetch(
                    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id IN ({query})"
                    " ORDER BY updated_at, id",
                    *args,
                )
            )
        else:
            rows = await self._db.run(
                lambda c: c.fetch(
                    f"""WITH claimed AS ({query} FOR UPDATE SKIP LOCKED)
                    UPDATE payments p
                    SET reconcile_lease_owner = $5,
                        reconcile_lease_until = now() + make_interval(secs => $4)
                    FROM claimed WHERE p.id = claimed.id
                    RETURNING {", ".join("p." + c.strip() for c in PAYMENT_COLUMNS.split(","))}""",
                    *args,
                )
            )
        payments = [payment_from_row(r) for r in rows]
        payments.sort(key=lambda p: (p.updated_at, p.id))
        return payments

    async def get_any(self, payment_id: uuid.UUID) -> Payment:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1", payment_id
            )
        )
        if row is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return payment_from_row(row)

    async def lookup(self, ids: list[uuid.UUID], provider_ids: list[str]) -> list[Payment]:
        rows = await self._db.run(
            lambda c: c.fetch(
                f"""SELECT {PAYMENT_COLUMNS} FROM payments
                WHERE id = ANY($1::uuid[]) OR provider_payment_id = ANY($2::text[])""",
                ids,
                provider_ids,
            )
        )
        return [payment_from_row(r) for r in rows]


async def apply_snapshot(
    conn: Conn, payment: Payment, snap: Snapshot, plan: SnapshotPlan
) -> Payment:
    """The planned snapshot's writes (payment and history), in one statement,
    in the caller's transaction (adapters/postgres_uow.py)."""
    assert plan.status is not None
    row = await conn.fetchrow(
        f"""WITH u AS (
            UPDATE payments SET
                status = $2,
                provider_payment_id = COALESCE(provider_payment_id, $3),
                failure_code = CASE WHEN $2 = 'FAILED' THEN $4 ELSE failure_code END,
                failure_message = CASE WHEN $2 = 'FAILED' THEN $5 ELSE failure_message END,
                amount_reversed = $6,
                -- A snapshot has no provider time: provider_state_at keeps the
                -- newest event's (our clock is never provider time); the rank
                -- only grows, so older events of a lower rank stay stale.
                provider_state_rank = GREATEST(provider_state_rank, $9),
                version = version + 1,
                updated_at = now()
            WHERE id = $1
            RETURNING {PAYMENT_COLUMNS}
        ), e AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                        failure_code, note)
            SELECT id, $7, $2, 'reconciler', true, $4, $8 FROM u
        )
        SELECT {PAYMENT_COLUMNS} FROM u""",
        payment.id,
        plan.status.value,
        snap.provider_payment_id,
        snap.failure_code,
        snap.failure_message,
        plan.amount_reversed,
        payment.status.value,
        plan.note,
        int(rank_of(plan.status, amount_reversed=plan.amount_reversed)),
    )
    assert row is not None
    return payment_from_row(row)
