"""The SQL of refunds (migration 0009): reads outside a unit of work
(RefundStore), and the writes inside one (PgLockedRefunds), their payment
locked first. A refund's change is an entry of its payment's history
(payment_events.refund_id, refund_status)."""

from __future__ import annotations

import uuid

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import Payment, format_payment_id
from payment_svc.domain.refunds import (
    ExistingRefund,
    NewRefund,
    Refund,
    RefundOutcome,
    RefundPlan,
    RefundStatus,
    RefundWrite,
    duplicate_of,
    format_refund_id,
)
from payment_svc.domain.status import Source

REFUND_COLUMNS = """id, payment_id, client_id, idempotency_key, amount, currency, status, reason,
    source, provider_refund_id, failure_code, failure_message, version, created_at, updated_at"""

# One statement: the refund and its payment's history entry (the payment's
# status unchanged). ON CONFLICT DO NOTHING waits for a concurrent insert of
# the same key to commit, so concurrent duplicates see the winner after.
_INSERT = f"""
WITH r AS (
    INSERT INTO refunds (id, payment_id, client_id, idempotency_key, request_fingerprint, amount,
                         currency, status, reason, source, provider_refund_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (client_id, idempotency_key) DO NOTHING
    RETURNING {REFUND_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied, note,
                                refund_id, refund_status, recorded_at)
    SELECT payment_id, $12, $12, source, true, $13, id, status, created_at FROM r
)
SELECT {REFUND_COLUMNS} FROM r
"""

_BY_KEY = """SELECT id, status, request_fingerprint FROM refunds
    WHERE client_id = $1 AND idempotency_key = $2"""

# The refund's move and its history entry, one statement.
_MOVE = f"""
WITH r AS (
    UPDATE refunds
    SET status = $2,
        provider_refund_id = COALESCE(provider_refund_id, $3),
        failure_code = CASE WHEN $2 = 'FAILED' THEN $4 ELSE NULL END,
        failure_message = CASE WHEN $2 = 'FAILED' THEN $5 ELSE NULL END,
        version = version + 1,
        updated_at = now()
    WHERE id = $1
    RETURNING {REFUND_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                failure_code, note, refund_id, refund_status,
                                provider_event_id, provider_event_type, provider_created_at)
    SELECT payment_id, $6, $7, $8, true, $4, $9, id, status, $10, $11, $12 FROM r
)
SELECT {REFUND_COLUMNS} FROM r
"""

# After the payment's lock (a statement of its own: this one's snapshot then
# holds every refund committed before the lock was granted).
_OF_PAYMENT_AND_KEY = f"""SELECT {REFUND_COLUMNS}, request_fingerprint FROM refunds
    WHERE payment_id = $1 OR (client_id = $2 AND idempotency_key = $3)
    ORDER BY created_at, id"""

_OF_PAYMENT_LOCKED = f"""SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1
    ORDER BY created_at, id FOR UPDATE"""

_PAYMENT_FIELDS = [c.strip() for c in PAYMENT_COLUMNS.split(",")]

# _MOVE and _REVERSE in one statement: the refund's move, its history entry
# and the payment's reversal.
_MOVE_AND_REVERSE = f"""
WITH r AS (
    UPDATE refunds
    SET status = $2,
        provider_refund_id = COALESCE(provider_refund_id, $3),
        failure_code = CASE WHEN $2 = 'FAILED' THEN $4 ELSE NULL END,
        failure_message = CASE WHEN $2 = 'FAILED' THEN $5 ELSE NULL END,
        version = version + 1,
        updated_at = now()
    WHERE id = $1
    RETURNING {REFUND_COLUMNS}
), p AS (
    UPDATE payments SET status = $7, amount_reversed = $13, version = version + 1,
        updated_at = now()
    WHERE id = (SELECT payment_id FROM r)
    RETURNING {PAYMENT_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                failure_code, note, refund_id, refund_status,
                                provider_event_id, provider_event_type, provider_created_at)
    SELECT payment_id, $6, $7, $8, true, $4, $9, id, status, $10, $11, $12 FROM r
)
SELECT r.*, {", ".join(f"p.{c} AS p_{c}" for c in _PAYMENT_FIELDS)} FROM r, p
"""

_RECORD_ONLY = """INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
    failure_code, note, refund_id, refund_status, provider_event_id, provider_event_type,
    provider_created_at) VALUES ($1, $2, $2, $3, false, $4, $5, $6, $7, $8, $9, $10)"""


def refund_from_row(row: asyncpg.Record) -> Refund:
    return Refund(
        id=row["id"],
        payment_id=row["payment_id"],
        client_id=row["client_id"],
        idempotency_key=row["idempotency_key"],
        amount=row["amount"],
        currency=row["currency"],
        status=RefundStatus(row["status"]),
        reason=row["reason"],
        source=Source(row["source"]),
        provider_refund_id=row["provider_refund_id"],
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class RefundStore:
    """RefundRepository: one bounded database call each."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def for_payment(self, client_id: str, payment_id: uuid.UUID) -> list[Refund]:
        async def op(conn: Conn) -> list[asyncpg.Record] | None:
            owner = await conn.fetchval("SELECT client_id FROM payments WHERE id = $1", payment_id)
            if owner != client_id:
                return None
            return list(
                await conn.fetch(
                    f"SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 "
                    "ORDER BY created_at, id",
                    payment_id,
                )
            )

        rows = await self._db.run(op)
        if rows is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return [refund_from_row(r) for r in rows]

    async def get(self, client_id: str, refund_id: uuid.UUID) -> Refund:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1 AND client_id = $2",
                refund_id,
                client_id,
            )
        )
        if row is None:
            raise NotFound(f"refund {format_refund_id(refund_id)} not found")
        return refund_from_row(row)


class PgLockedRefunds:
    """LockedRefunds (service_layer/unit_of_work.py) on the unit of work's
    connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def by_key(self, client_id: str, idempotency_key: str) -> ExistingRefund | None:
        row = await self._conn.fetchrow(_BY_KEY, client_id, idempotency_key)
        if row is None:
            return None
        fingerprint = row["request_fingerprint"]
        return ExistingRefund(
            row["id"], RefundStatus(row["status"]), bytes(fingerprint) if fingerprint else None
        )

    async def of_payment(self, payment_id: uuid.UUID) -> list[Refund]:
        rows = await self._conn.fetch(
            f"SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY created_at, id",
            payment_id,
        )
        return [refund_from_row(r) for r in rows]

    async def of_payment_and_key(
        self, payment_id: uuid.UUID, client_id: str, idempotency_key: str
    ) -> tuple[list[Refund], ExistingRefund | None]:
        rows = await self._conn.fetch(_OF_PAYMENT_AND_KEY, payment_id, client_id, idempotency_key)
        existing = None
        for r in rows:
            if (r["client_id"], r["idempotency_key"]) == (client_id, idempotency_key):
                fingerprint = r["request_fingerprint"]
                existing = ExistingRefund(
                    r["id"], RefundStatus(r["status"]), bytes(fingerprint) if fingerprint else None
                )
        return [refund_from_row(r) for r in rows if r["payment_id"] == payment_id], existing

    async def of_payment_locked(self, payment_id: uuid.UUID) -> list[Refund]:
        rows = await self._conn.fetch(_OF_PAYMENT_LOCKED, payment_id)
        return [refund_from_row(r) for r in rows]

    async def get_for_update(self, refund_id: uuid.UUID) -> Refund:
        row = await self._conn.fetchrow(
            f"SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1 FOR UPDATE", refund_id
        )
        if row is None:
            raise NotFound(f"refund {format_refund_id(refund_id)} not found")
        return refund_from_row(row)

    async def by_provider_id(self, provider_refund_id: str) -> Refund | None:
        row = await self._conn.fetchrow(
            f"SELECT {REFUND_COLUMNS} FROM refunds WHERE provider_refund_id = $1 FOR UPDATE",
            provider_refund_id,
        )
        return refund_from_row(row) if row is not None else None

    async def insert(self, new: NewRefund) -> Refund:
        row = await self._conn.fetchrow(
            _INSERT,
            new.id,
            new.payment_id,
            new.client_id,
            new.idempotency_key,
            new.fingerprint,
            new.amount,
            new.currency,
            new.status.value,
            new.reason,
            new.source.value,
            new.provider_refund_id,
            new.payment_status.value,
            f"refund of {new.amount} recorded",
        )
        if row is not None:
            return refund_from_row(row)
        assert new.idempotency_key is not None, "only a keyed insert can conflict"
        existing = await self.by_key(new.client_id, new.idempotency_key)
        assert existing is not None, "a conflicting row is committed before DO NOTHING returns"
        raise duplicate_of(existing, new.fingerprint)

    async def record(
        self,
        payment: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> tuple[Refund, Payment]:
        if plan.write is RefundWrite.NOTHING:
            return refund, payment
        if plan.write is RefundWrite.RECORD:
            await self._conn.execute(
                _RECORD_ONLY,
                payment.id,
                payment.status.value,
                source.value,
                outcome.failure_code,
                plan.note,
                refund.id,
                plan.refund_status.value,
                outcome.provider_event_id,
                outcome.provider_event_type,
                outcome.provider_created_at,
            )
            return refund, payment
        if plan.payment_changes:
            return await self._move_and_reverse(refund, outcome, plan, source=source)
        row = await self._conn.fetchrow(
            _MOVE,
            refund.id,
            plan.refund_status.value,
            outcome.provider_refund_id,
            outcome.failure_code,
            outcome.failure_message,
            plan.payment_from.value,
            plan.payment_to.value,
            source.value,
            plan.note,
            outcome.provider_event_id,
            outcome.provider_event_type,
            outcome.provider_created_at,
        )
        if row is None:
            raise NotFound(f"refund {refund.public_id} not found")
        return refund_from_row(row), payment

    async def _move_and_reverse(
        self, refund: Refund, outcome: RefundOutcome, plan: RefundPlan, *, source: Source
    ) -> tuple[Refund, Payment]:
        row = await self._conn.fetchrow(
            _MOVE_AND_REVERSE,
            refund.id,
            plan.refund_status.value,
            outcome.provider_refund_id,
            outcome.failure_code,
            outcome.failure_message,
            plan.payment_from.value,
            plan.payment_to.value,
            source.value,
            plan.note,
            outcome.provider_event_id,
            outcome.provider_event_type,
            outcome.provider_created_at,
            plan.amount_reversed,
        )
        if row is None:
            raise NotFound(f"refund {refund.public_id} not found")
        payment = payment_from_row({c: row[f"p_{c}"] for c in _PAYMENT_FIELDS})
        return refund_from_row(row), payment
