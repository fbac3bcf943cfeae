"""SQL of reconciliation runs, the reconciler's checkpoints and the status
figures."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.records import Run, Status


def _run(row: asyncpg.Record) -> Run:
    return Run(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - Record has no items()


class RunStore:
    """Runs and the status figures; checkpoints too (one small table each)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_run(self, run: Run) -> Run:
        row = await self._db.run(
            lambda c: c.fetchrow(
                """INSERT INTO reconciliation_runs (id, job, reconciler_id, started_at,
                    finished_at, scanned, fixed, discrepancies, errors, succeeded, error_message)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *""",
                uuid.uuid4(),
                run.job,
                run.reconciler_id,
                run.started_at,
                run.finished_at,
                run.scanned,
                run.fixed,
                run.discrepancies,
                run.errors,
                run.succeeded,
                run.error_message,
            )
        )
        assert row is not None
        return _run(row)

    async def checkpoint(self, name: str) -> tuple[str, datetime] | None:
        row = await self._db.run(
            lambda c: c.fetchrow("SELECT value, updated_at FROM checkpoints WHERE name = $1", name)
        )
        return (row["value"], row["updated_at"]) if row else None

    async def save_checkpoint(self, name: str, value: str) -> None:
        await self._db.run(
            lambda c: c.execute(
                """INSERT INTO checkpoints (name, value) VALUES ($1, $2)
                ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
                name,
                value,
            )
        )

    async def status(self) -> Status:
        async def op(conn: Conn) -> Status:
            open_rows = await conn.fetch(
                "SELECT kind, count(*) AS n FROM discrepancies WHERE resolved_at IS NULL "
                "GROUP BY kind"
            )
            backlog = await conn.fetchrow(
                "SELECT min(created_at) AS oldest, count(*) AS n FROM payments "
                "WHERE status IN ('PENDING', 'UNKNOWN')"
            )
            refunds = await conn.fetchrow(
                "SELECT min(created_at) AS oldest, count(*) AS n FROM refunds "
                "WHERE status IN ('PENDING', 'UNKNOWN')"
            )
            assert refunds is not None
            runs = await conn.fetch(
                "SELECT DISTINCT ON (job) * FROM reconciliation_runs ORDER BY job, finished_at DESC"
            )
            assert backlog is not None
            return Status(
                open_by_kind={DiscrepancyKind(r["kind"]): r["n"] for r in open_rows},
                oldest_non_final_created_at=backlog["oldest"],
                non_final=backlog["n"],
                last_runs=[_run(r) for r in runs],
                oldest_non_final_refund_created_at=refunds["oldest"],
                non_final_refunds=refunds["n"],
            )

        return await self._db.run(op)
