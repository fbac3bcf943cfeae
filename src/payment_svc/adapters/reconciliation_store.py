"""SQL of the reconciliation flow about payments: the SQL of a snapshot's
writes (the unit of work runs it), the sweep's work list and its leases, look-ups. Discrepancies:
discrepancy_store.py; runs, checkpoints, status: run_store.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.discrepancy_sql import report as report
from payment_svc.adapters.payment_store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import Payment, PaymentRow, format_payment_id
from payment_svc.domain.reconciliation import SnapshotPlan


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
    conn: Conn, payment: Payment, row: PaymentRow, plan: SnapshotPlan
) -> Payment:
    """The planned row (domain/reconciliation.snapshot_row: every value
    final, assigned) and its history entry, in one statement, in the
    caller's transaction (adapters/postgres_uow.py)."""
    assert plan.status is not None
    written = await conn.fetchrow(
        f"""WITH u AS (
            UPDATE payments SET
                status = $2, provider_payment_id = $3, failure_code = $4,
                failure_message = $5, amount_reversed = $6, amount_disputed = $7,
                provider_state_at = $8, provider_state_rank = $9,
                version = version + 1,
                updated_at = now()
            WHERE id = $1
            RETURNING {PAYMENT_COLUMNS}
        ), e AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                        failure_code, note)
            SELECT id, $10, $2, 'reconciler', true, $11, $12 FROM u
        )
        SELECT {PAYMENT_COLUMNS} FROM u""",
        payment.id,
        row.status.value,
        row.provider_payment_id,
        row.failure_code,
        row.failure_message,
        row.amount_reversed,
        row.amount_disputed,
        row.provider_state_at,
        row.provider_state_rank,
        payment.status.value,
        row.failure_code if row.status.value == "FAILED" else None,
        plan.note,
    )
    assert written is not None
    return payment_from_row(written)
