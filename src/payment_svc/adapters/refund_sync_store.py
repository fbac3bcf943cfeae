"""SQL of refunds as the provider reports them: inside a unit of
work (PgLockedRefundSync: a refund first seen at the provider, the newest
provider state applied, entries that attach to no refund), and the
reconciler's reads outside one (RefundSyncStore: the sweep's work list with
its leases, look-ups). The refund's own moves are refund_store.py's."""

from __future__ import annotations

import uuid
from datetime import datetime

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.payment_store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.adapters.refund_store import REFUND_COLUMNS, refund_from_row
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import Payment
from payment_svc.domain.refund_events import RefundState
from payment_svc.domain.refunds import (
    NewRefund,
    Refund,
    RefundOutcome,
    RefundPlan,
    format_refund_id,
)
from payment_svc.domain.status import Source

# A refund made at the provider directly, with its payment's history entry,
# in one statement; nothing when its provider refund id is recorded already.
_INSERT_OBSERVED = f"""
WITH r AS (
    INSERT INTO refunds (id, payment_id, client_id, amount, currency, status, reason, source,
                         provider_refund_id, failure_code, failure_message,
                         provider_state_at, provider_state_rank)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
            CASE WHEN $6 = 'FAILED' THEN $10 END, CASE WHEN $6 = 'FAILED' THEN $11 END, $12, $13)
    ON CONFLICT (provider_refund_id) DO NOTHING
    RETURNING {REFUND_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                failure_code, note, refund_id, refund_status,
                                provider_event_id, provider_event_type, provider_created_at)
    SELECT payment_id, $14, $15, source, true, $10, $16, id, status, $17, $18, $12 FROM r
)
SELECT {REFUND_COLUMNS} FROM r
"""

_REVERSE = f"""UPDATE payments SET status = $2, amount_reversed = $3, version = version + 1,
    updated_at = now() WHERE id = $1 RETURNING {PAYMENT_COLUMNS}"""

_ENTRY = """INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
    failure_code, note, provider_event_id, provider_event_type, provider_created_at)
    VALUES ($1, $2, $2, $3, false, $4, $5, $6, $7, $8)"""


class PgLockedRefundSync:
    """LockedRefundSync (service_layer/unit_of_work.py) on the unit of
    work's connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def provider_state(self, refund_id: uuid.UUID) -> RefundState:
        row = await self._conn.fetchrow(
            "SELECT provider_state_at, provider_state_rank FROM refunds WHERE id = $1", refund_id
        )
        if row is None:
            return RefundState()
        return RefundState(row["provider_state_at"], row["provider_state_rank"])

    async def touch(self, refund_id: uuid.UUID, state: RefundState) -> None:
        await self._conn.execute(
            """UPDATE refunds SET
                provider_state_rank = CASE
                    WHEN provider_state_at IS NULL OR $2 > provider_state_at THEN $3
                    ELSE GREATEST(provider_state_rank, $3) END,
                provider_state_at = GREATEST(provider_state_at, $2)
            WHERE id = $1""",
            refund_id,
            state.at,
            state.rank,
        )

    async def insert_observed(
        self, payment: Payment, new: NewRefund, plan: RefundPlan, outcome: RefundOutcome
    ) -> tuple[Refund, Payment] | None:
        row = await self._conn.fetchrow(
            _INSERT_OBSERVED,
            new.id,
            new.payment_id,
            new.client_id,
            new.amount,
            new.currency,
            new.status.value,
            new.reason,
            new.source.value,
            new.provider_refund_id,
            outcome.failure_code,
            outcome.failure_message,
            outcome.provider_created_at,
            2 if new.status.is_final else 1,
            plan.payment_from.value,
            plan.payment_to.value,
            plan.note,
            outcome.provider_event_id,
            outcome.provider_event_type,
        )
        if row is None:
            return None
        refund = refund_from_row(row)
        if not plan.payment_changes:
            return refund, payment
        prow = await self._conn.fetchrow(
            _REVERSE, payment.id, plan.payment_to.value, plan.amount_reversed
        )
        assert prow is not None, "the payment is locked by this transaction"
        return refund, payment_from_row(prow)

    async def record_entry(
        self, payment: Payment, outcome: RefundOutcome, note: str, *, source: Source
    ) -> None:
        await self._conn.execute(
            _ENTRY,
            payment.id,
            payment.status.value,
            source.value,
            outcome.failure_code,
            note,
            outcome.provider_event_id,
            outcome.provider_event_type,
            outcome.provider_created_at,
        )

    async def release_lease(self, refund_id: uuid.UUID) -> None:
        await self._conn.execute(
            "UPDATE refunds SET reconcile_lease_owner = NULL, reconcile_lease_until = NULL "
            "WHERE id = $1",
            refund_id,
        )


class RefundSyncStore:
    """The reconciler's reads of refunds: one bounded database call each."""

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
    ) -> list[tuple[Refund, str | None]]:
        """Non-final refunds untouched for a while, oldest first, each with
        its payment's provider id. With a lease, the ones returned are
        claimed (others' live claims skipped)."""
        query = """
            SELECT id FROM refunds
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
        columns = ", ".join("r." + c.strip() for c in REFUND_COLUMNS.split(","))
        if lease_seconds is None:
            sql = f"""SELECT {columns}, p.provider_payment_id AS pp FROM refunds r
                JOIN payments p ON p.id = r.payment_id WHERE r.id IN ({query})"""
        else:
            sql = f"""WITH claimed AS ({query} FOR UPDATE SKIP LOCKED),
                u AS (
                    UPDATE refunds r
                    SET reconcile_lease_owner = $5,
                        reconcile_lease_until = now() + make_interval(secs => $4)
                    FROM claimed WHERE r.id = claimed.id
                    RETURNING r.*
                )
                SELECT {columns}, p.provider_payment_id AS pp FROM u r
                JOIN payments p ON p.id = r.payment_id"""
        rows = await self._db.run(lambda c: c.fetch(sql, *args))
        found = [(refund_from_row(r), r["pp"]) for r in rows]
        found.sort(key=lambda f: (f[0].updated_at, f[0].id))
        return found

    async def get_any(self, refund_id: uuid.UUID) -> Refund:
        row = await self._db.run(
            lambda c: c.fetchrow(f"SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1", refund_id)
        )
        if row is None:
            raise NotFound(f"refund {format_refund_id(refund_id)} not found")
        return refund_from_row(row)

    async def lookup(
        self, ids: list[uuid.UUID], provider_ids: list[str], payment_ids: list[uuid.UUID]
    ) -> list[Refund]:
        rows = await self._db.run(
            lambda c: c.fetch(
                f"""SELECT {REFUND_COLUMNS} FROM refunds
                WHERE id = ANY($1::uuid[]) OR provider_refund_id = ANY($2::text[])
                   OR payment_id = ANY($3::uuid[])
                ORDER BY created_at, id""",
                ids,
                provider_ids,
                payment_ids,
            )
        )
        return [refund_from_row(r) for r in rows]
