"""The unit of work on Postgres: one pooled connection (Database.session:
run()'s bounds and errors) and one transaction; repositories bound to it
that run SQL and nothing else."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from asyncpg.transaction import Transaction

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.discrepancy_sql import report
from payment_svc.adapters.event_store import PgInbox
from payment_svc.adapters.payment_store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.adapters.quarantine_store import PgQuarantine
from payment_svc.adapters.reconciliation_store import apply_snapshot
from payment_svc.adapters.refund_store import PgLockedRefunds
from payment_svc.adapters.refund_sync_store import PgLockedRefundSync
from payment_svc.domain.corrections import Correction
from payment_svc.domain.errors import NotFound
from payment_svc.domain.inbox import EventTarget
from payment_svc.domain.model import Payment, PaymentRow, format_payment_id
from payment_svc.domain.reconciliation import DiscrepancyKind, SnapshotPlan
from payment_svc.domain.records import Reported
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork


class PgLockedPayments:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def get_for_update(self, payment_id: uuid.UUID) -> Payment:
        row = await self._conn.fetchrow(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 FOR UPDATE", payment_id
        )
        if row is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return payment_from_row(row)

    async def get_target_for_update(self, payment_id: uuid.UUID) -> EventTarget:
        row = await self._conn.fetchrow(
            f"SELECT {PAYMENT_COLUMNS}, provider_state_at, provider_state_rank FROM payments "
            "WHERE id = $1 FOR UPDATE",
            payment_id,
        )
        if row is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return EventTarget(
            payment_from_row(row), row["provider_state_at"], row["provider_state_rank"]
        )

    async def apply_snapshot(
        self, payment: Payment, row: PaymentRow, plan: SnapshotPlan
    ) -> Payment:
        return await apply_snapshot(self._conn, payment, row, plan)

    async def correct(self, payment: Payment, plan: Correction) -> Payment:
        row = await self._conn.fetchrow(
            f"""WITH u AS (
                UPDATE payments SET status = $2, amount_reversed = $3,
                    version = version + 1, updated_at = now()
                WHERE id = $1
                RETURNING {PAYMENT_COLUMNS}
            ), e AS (
                INSERT INTO payment_events (payment_id, from_status, to_status, source,
                                            applied, note)
                SELECT id, $4, $2, 'operator', true, $5 FROM u
            )
            SELECT {PAYMENT_COLUMNS} FROM u""",
            payment.id,
            plan.status.value,
            plan.amount_reversed,
            payment.status.value,
            plan.note,
        )
        assert row is not None
        return payment_from_row(row)

    async def release_lease(self, payment_id: uuid.UUID) -> None:
        await self._conn.execute(
            "UPDATE payments SET reconcile_lease_owner = NULL, "
            "reconcile_lease_until = NULL WHERE id = $1",
            payment_id,
        )


class PgDiscrepancyWriter:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: uuid.UUID | None,
        provider_payment_id: str | None,
        details: Mapping[str, str],
        *,
        refund_id: uuid.UUID | None = None,
        dedup: str | None = None,
    ) -> Reported:
        return await report(
            self._conn,
            kind,
            payment_id,
            provider_payment_id,
            details,
            refund_id=refund_id,
            dedup=dedup,
        )

    async def resolve_open(self, dedup: str, by: str, note: str) -> None:
        await self._conn.execute(
            """UPDATE discrepancies SET resolved_at = now(), resolved_by = $2, note = $3
               WHERE dedup_key = $1 AND resolved_at IS NULL""",
            dedup,
            by,
            note,
        )


class PostgresUnitOfWork(AbstractUnitOfWork):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: contextlib.AbstractAsyncContextManager[Conn] | None = None
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._session = self._db.session()
        conn = await self._session.__aenter__()
        try:
            self._tx = conn.transaction()
            await self._tx.start()
        except BaseException as exc:
            await self._session.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.payments = PgLockedPayments(conn)
        self.refunds = PgLockedRefunds(conn)
        self.refund_sync = PgLockedRefundSync(conn)
        self.inbox = PgInbox(conn)
        self.discrepancies = PgDiscrepancyWriter(conn)
        self.quarantine = PgQuarantine(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._session is not None
        try:
            if exc is None:
                await super().__aexit__(exc_type, exc, tb)
            else:
                # The error that ended the block is the one to report: a
                # rollback on a connection already closed adds nothing.
                with contextlib.suppress(Exception):
                    await super().__aexit__(exc_type, exc, tb)
        except BaseException as own:
            await self._session.__aexit__(type(own), own, own.__traceback__)
            raise
        await self._session.__aexit__(exc_type, exc, tb)

    async def _commit(self) -> None:
        assert self._tx is not None
        await self._tx.commit()

    async def rollback(self) -> None:
        assert self._tx is not None
        await self._tx.rollback()
