"""All SQL of the payment service: payments and their history.

Each public method is one bounded database call (see db.py) and one
transaction at most; none calls out to the network. The specific asyncpg
errors are caught here: a unique violation on the idempotency key is a
duplicate payment.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.discrepancy_sql import report as report_discrepancy
from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import (
    NewPayment,
    Payment,
    PaymentEvent,
    ProviderResult,
    format_payment_id,
)
from payment_svc.domain.payment_results import (
    ExistingPayment,
    ResultPlan,
    ResultWrite,
)
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.refunds import RefundStatus
from payment_svc.domain.status import PaymentStatus, Source

PAYMENT_COLUMNS = """id, client_id, idempotency_key, amount, currency, status, payment_method,
    description, metadata, provider_payment_id, failure_code, failure_message,
    amount_reversed, version, created_at, updated_at, amount_disputed"""

# One round trip and one commit: the payment and its first history entry.
# ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to
# commit, so concurrent duplicates all see the winner afterwards.
_INSERT = f"""
WITH p AS (
    INSERT INTO payments (id, client_id, idempotency_key, request_fingerprint, amount, currency,
                          status, payment_method, description, metadata)
    VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7, $8, $9)
    ON CONFLICT (client_id, idempotency_key) DO NOTHING
    RETURNING {PAYMENT_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied, recorded_at)
    SELECT id, NULL, 'PENDING', 'api', true, created_at FROM p
)
SELECT {PAYMENT_COLUMNS} FROM p
"""

_EXISTING = """SELECT id, status, request_fingerprint FROM payments
    WHERE client_id = $1 AND idempotency_key = $2"""

# The fast path of a transition: succeeds only if nobody changed the payment
# since we read it (version), in one round trip with its history entry.
_TRANSITION = f"""
WITH u AS (
    UPDATE payments
    SET status = $3,
        provider_payment_id = COALESCE(provider_payment_id, $4),
        failure_code = $5,
        failure_message = $6,
        version = version + 1,
        updated_at = now()
    WHERE id = $1 AND version = $2
      -- never rebinds a payment to another provider payment (domain/binding.py)
      AND (provider_payment_id IS NULL OR $4::text IS NULL OR provider_payment_id = $4)
    RETURNING {PAYMENT_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                failure_code, note)
    SELECT id, $7, $3, $8, true, $5, $9 FROM u
)
SELECT {PAYMENT_COLUMNS} FROM u
"""

_RECORD_ONLY = """INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
    failure_code, note) VALUES ($1, $2, $3, $4, false, $5, $6)"""


def payment_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Payment:
    return Payment(
        id=row["id"],
        client_id=row["client_id"],
        idempotency_key=row["idempotency_key"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        payment_method=row["payment_method"],
        description=row["description"],
        metadata=row["metadata"],
        provider_payment_id=row["provider_payment_id"],
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        amount_reversed=row["amount_reversed"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        amount_disputed=row["amount_disputed"],
    )


def _event(row: asyncpg.Record) -> PaymentEvent:
    return PaymentEvent(
        id=row["id"],
        payment_id=row["payment_id"],
        from_status=PaymentStatus(row["from_status"]) if row["from_status"] else None,
        to_status=PaymentStatus(row["to_status"]),
        source=Source(row["source"]),
        applied=row["applied"],
        provider_event_id=row["provider_event_id"],
        provider_event_type=row["provider_event_type"],
        failure_code=row["failure_code"],
        note=row["note"],
        provider_created_at=row["provider_created_at"],
        recorded_at=row["recorded_at"],
        refund_id=row["refund_id"],
        refund_status=RefundStatus(row["refund_status"]) if row["refund_status"] else None,
    )


async def _record_only(
    conn: Conn, payment: Payment, result: ProviderResult, source: Source, plan: ResultPlan
) -> None:
    """The answer in the history, not applied; with its discrepancy when the
    plan found one (both or neither)."""
    args = (
        payment.id,
        payment.status.value,
        result.status.value,
        source.value,
        result.failure_code,
        plan.note,
    )
    if plan.duplicate is None:
        await conn.execute(_RECORD_ONLY, *args)
        return
    async with conn.transaction():
        await conn.execute(_RECORD_ONLY, *args)
        await report_discrepancy(
            conn,
            DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT,
            payment.id,
            result.provider_payment_id,
            plan.duplicate,
        )


class PaymentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_new(self, new: NewPayment) -> Payment | ExistingPayment:
        """Commits the payment as PENDING; or, when the key is taken, the
        payment that holds it (the service layer decides what that means)."""

        async def op(conn: Conn) -> Payment | asyncpg.Record:
            row = await conn.fetchrow(
                _INSERT,
                new.id,
                new.client_id,
                new.idempotency_key,
                new.fingerprint,
                new.amount,
                new.currency,
                new.payment_method,
                new.description,
                dict(new.metadata),
            )
            if row is not None:
                return payment_from_row(row)
            existing = await conn.fetchrow(_EXISTING, new.client_id, new.idempotency_key)
            assert existing is not None, "a conflicting row is committed before DO NOTHING returns"
            return existing

        result = await self._db.run(op)
        if isinstance(result, Payment):
            return result
        return ExistingPayment(
            result["id"],
            PaymentStatus(result["status"]),
            bytes(result["request_fingerprint"]),
        )

    async def write_result(
        self, payment: Payment, result: ProviderResult, *, source: Source, plan: ResultPlan
    ) -> Payment | None:
        """Writes what `plan` (domain/payment_results.py) says of the provider's
        answer, as decided on `payment`: the move in one statement, only if
        nobody changed the payment since it was read (None when somebody did:
        the service layer reads it again and decides again), or the history
        entry only (and DUPLICATE_PROVIDER_PAYMENT)."""
        if plan.write is ResultWrite.NOTHING:
            return payment
        if plan.write is ResultWrite.RECORD:
            await self._db.run(lambda c: _record_only(c, payment, result, source, plan))
            return payment
        row = await self._db.run(
            lambda c: c.fetchrow(
                _TRANSITION,
                payment.id,
                payment.version,
                result.status.value,
                result.provider_payment_id,
                result.failure_code,
                result.failure_message,
                payment.status.value,
                source.value,
                plan.note,
            )
        )
        return payment_from_row(row) if row is not None else None

    async def get(self, client_id: str, payment_id: uuid.UUID) -> Payment:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 AND client_id = $2",
                payment_id,
                client_id,
            )
        )
        if row is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return payment_from_row(row)

    async def search(
        self,
        client_id: str | None,
        *,
        limit: int,
        statuses: frozenset[PaymentStatus],
        created_after: datetime | None,
        created_before: datetime | None,
        after: PageCursor | None,
    ) -> list[Payment]:
        """Newest first; `after` continues below the last row of a page."""
        rows = await self._db.run(
            lambda c: c.fetch(
                f"""SELECT {PAYMENT_COLUMNS} FROM payments
                WHERE ($1::text IS NULL OR client_id = $1)
                  AND ($2::text[] IS NULL OR status = ANY($2))
                  AND ($3::timestamptz IS NULL OR created_at >= $3)
                  AND ($4::timestamptz IS NULL OR created_at < $4)
                  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
                ORDER BY created_at DESC, id DESC
                LIMIT $7""",
                client_id,
                sorted(s.value for s in statuses) or None,
                created_after,
                created_before,
                after.sort_key if after else None,
                after.id if after else None,
                limit,
            )
        )
        return [payment_from_row(r) for r in rows]

    async def events(self, client_id: str, payment_id: uuid.UUID) -> list[PaymentEvent]:
        async def op(conn: Conn) -> list[asyncpg.Record] | None:
            owner = await conn.fetchval("SELECT client_id FROM payments WHERE id = $1", payment_id)
            if owner != client_id:
                return None
            return list(
                await conn.fetch(
                    "SELECT * FROM payment_events WHERE payment_id = $1 ORDER BY id", payment_id
                )
            )

        rows = await self._db.run(op)
        if rows is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return [_event(r) for r in rows]
