"""The SQL of refunds (migration 0009): reads outside a unit of work
(RefundStore), and the writes inside one (PgLockedRefunds), their payment
locked first. A refund's change is an entry of its payment's history
(payment_events.refund_id, refund_status)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.payment_store import PAYMENT_COLUMNS, payment_from_row
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import Payment, format_payment_id
from payment_svc.domain.refunds import (
    ExistingRefund,
    NewRefund,
    PaymentRefunds,
    Refund,
    RefundOutcome,
    RefundPlan,
    RefundStatus,
    RefundWrite,
    format_refund_id,
)
from payment_svc.domain.status import Source

REFUND_COLUMNS = """id, payment_id, client_id, idempotency_key, amount, currency, status, reason,
    source, provider_refund_id, failure_code, failure_message, version, created_at, updated_at"""

_PAYMENT_FIELDS = [c.strip() for c in PAYMENT_COLUMNS.split(",")]
_REFUND_FIELDS = [c.strip() for c in REFUND_COLUMNS.split(",")]

# -- the fragments ------------------------------------------------------------

# A refund's move ($1 the refund, $2..$5 its new state, $3 the provider's id)
# where `only` holds, and its payment's history entry ($6 -> $7, $8 source,
# $9 note, $10..$12 the provider event).
_REFUND_MOVE = f"""r AS (
    UPDATE refunds
    SET status = $2,
        provider_refund_id = COALESCE(provider_refund_id, $3),
        failure_code = CASE WHEN $2 = 'FAILED' THEN $4 ELSE NULL END,
        failure_message = CASE WHEN $2 = 'FAILED' THEN $5 ELSE NULL END,
        version = version + 1,
        updated_at = now()
    WHERE id = $1 {{only}}
    RETURNING {REFUND_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied,
                                failure_code, note, refund_id, refund_status,
                                provider_event_id, provider_event_type, provider_created_at)
    SELECT payment_id, $6, $7, $8, true, $4, $9, id, status, $10, $11, $12 FROM r
)"""

# The payment's reversal ($7 its status, $13 amount_reversed) where `only` holds.
_REVERSAL = """p AS (
    UPDATE payments SET status = $7, amount_reversed = $13, version = version + 1,
        updated_at = now()
    WHERE {only}
    RETURNING {returning}
)"""

# A history entry that records what a source said without applying it.
_RECORD_ONLY_COLUMNS = """payment_events (payment_id, from_status, to_status, source, applied,
    failure_code, note, refund_id, refund_status, provider_event_id, provider_event_type,
    provider_created_at)"""

# RefundPayment's path (RefundStore.read, then the *_UNLESS_MOVED writes): one
# statement reads the payment, its refunds and the key's refund; a write
# planned on that read happens only if the payment is still as read. Any
# refund's change moves its payment's version (migration 0013's trigger);
# amount_reversed and amount_disputed are compared too, since a provider
# event may change them without a version of its own. The guard locks the
# payment row (FOR UPDATE, or the UPDATE's own lock): a concurrent writer
# waits for it, then finds the payment moved and writes nothing; its caller
# reads again and decides again.
_UNMOVED = "id = ${0} AND version = ${1} AND amount_reversed = ${2} AND amount_disputed = ${3}"


def _unmoved_lock(*params: int) -> str:
    return f"p AS (SELECT id FROM payments WHERE {_UNMOVED.format(*params)} FOR UPDATE)"


def _unmoved_move(*params: int) -> str:
    """The guard that also moves the payment's version (the refund's change
    will: the trigger then leaves the row alone, one new version not two)."""
    return f"""p AS (UPDATE payments SET version = version + 1
    WHERE {_UNMOVED.format(*params)} RETURNING id)"""


# -- the statements -----------------------------------------------------------

# Under the payment's lock (the unit of work's): the refund's move and its
# history entry; with the payment's reversal.
_MOVE = f"""WITH {_REFUND_MOVE.format(only="")}
SELECT {REFUND_COLUMNS} FROM r"""

_MOVE_AND_REVERSE = f"""WITH {_REFUND_MOVE.format(only="")},
{_REVERSAL.format(only="id = (SELECT payment_id FROM r)", returning=PAYMENT_COLUMNS)}
SELECT r.*, {", ".join(f"p.{c} AS p_{c}" for c in _PAYMENT_FIELDS)} FROM r, p"""

_RECORD_ONLY = f"""INSERT INTO {_RECORD_ONLY_COLUMNS}
    VALUES ($1, $2, $2, $3, false, $4, $5, $6, $7, $8, $9, $10)"""

_READ = f"""
SELECT {", ".join(f"p.{c} AS p_{c}" for c in _PAYMENT_FIELDS)},
       k.id AS k_id, k.status AS k_status, k.request_fingerprint AS k_fingerprint,
       {", ".join(f"r.{c} AS r_{c}" for c in _REFUND_FIELDS)}
FROM payments p
LEFT JOIN refunds k ON k.client_id = $2 AND k.idempotency_key = $3
LEFT JOIN refunds r ON r.payment_id = p.id
WHERE p.id = $1
ORDER BY r.created_at, r.id"""

# $14..$16: the payment's version, amount_reversed, amount_disputed as read.
# The refund ($1..$11) and its payment's history entry ($12 the payment's
# status, unchanged; $13 the note). ON CONFLICT DO NOTHING waits for a
# concurrent insert of the same key to commit: the loser writes nothing, and
# its caller's read finds the winner.
_INSERT_UNLESS_MOVED = f"""WITH {_unmoved_move(2, 14, 15, 16)},
r AS (
    INSERT INTO refunds (id, payment_id, client_id, idempotency_key, request_fingerprint, amount,
                         currency, status, reason, source, provider_refund_id)
    SELECT $1, p.id, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM p
    ON CONFLICT (client_id, idempotency_key) DO NOTHING
    RETURNING {REFUND_COLUMNS}
), e AS (
    INSERT INTO payment_events (payment_id, from_status, to_status, source, applied, note,
                                refund_id, refund_status, recorded_at)
    SELECT payment_id, $12, $12, source, true, $13, id, status, created_at FROM r
)
SELECT {REFUND_COLUMNS} FROM r"""

# $13 the payment; $14..$16 as read.
_MOVE_UNLESS_MOVED = f"""WITH {_unmoved_move(13, 14, 15, 16)},
{_REFUND_MOVE.format(only="AND payment_id = (SELECT id FROM p)")}
SELECT {REFUND_COLUMNS} FROM r"""

# $14 the payment; $15..$17 as read.
_REVERSAL_UNLESS_MOVED = _REVERSAL.format(only=_UNMOVED.format(14, 15, 16, 17), returning="id")
_MOVE_AND_REVERSE_UNLESS_MOVED = f"""WITH {_REVERSAL_UNLESS_MOVED},
{_REFUND_MOVE.format(only="AND payment_id = (SELECT id FROM p)")}
SELECT {REFUND_COLUMNS} FROM r"""

# $1 the payment; $11..$13 as read.
_RECORD_ONLY_UNLESS_MOVED = f"""WITH {_unmoved_lock(1, 11, 12, 13)}
INSERT INTO {_RECORD_ONLY_COLUMNS}
SELECT p.id, $2, $2, $3, false, $4, $5, $6, $7, $8, $9, $10 FROM p
RETURNING id"""


def refund_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Refund:
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

    async def read(
        self, payment_id: uuid.UUID, key: tuple[str, str] | None = None
    ) -> PaymentRefunds:
        client_id, idempotency_key = key if key is not None else (None, None)
        rows = await self._db.run(lambda c: c.fetch(_READ, payment_id, client_id, idempotency_key))
        if not rows:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        first = rows[0]
        by_key = None
        if first["k_id"] is not None:
            fingerprint = first["k_fingerprint"]
            by_key = ExistingRefund(
                first["k_id"],
                RefundStatus(first["k_status"]),
                bytes(fingerprint) if fingerprint else None,
            )
        return PaymentRefunds(
            payment=payment_from_row({c: first[f"p_{c}"] for c in _PAYMENT_FIELDS}),
            refunds=[
                refund_from_row({c: r[f"r_{c}"] for c in _REFUND_FIELDS})
                for r in rows
                if r["r_id"] is not None
            ],
            by_key=by_key,
        )

    async def insert_unless_moved(self, new: NewRefund, seen: Payment) -> Refund | None:
        row = await self._db.run(
            lambda c: c.fetchrow(
                _INSERT_UNLESS_MOVED,
                *_new_refund_args(new),
                seen.version,
                seen.amount_reversed,
                seen.amount_disputed,
            )
        )
        return refund_from_row(row) if row is not None else None

    async def record_unless_moved(
        self,
        seen: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> Refund | None:
        if plan.write is RefundWrite.NOTHING:
            return refund
        unmoved = (seen.version, seen.amount_reversed, seen.amount_disputed)
        if plan.write is RefundWrite.RECORD:
            recorded = await self._db.run(
                lambda c: c.fetchval(
                    _RECORD_ONLY_UNLESS_MOVED,
                    *_record_only_args(seen, refund, outcome, plan, source),
                    *unmoved,
                )
            )
            return refund if recorded is not None else None
        move = _move_args(refund, outcome, plan, source)
        if plan.payment_changes:
            row = await self._db.run(
                lambda c: c.fetchrow(
                    _MOVE_AND_REVERSE_UNLESS_MOVED,
                    *move,
                    plan.amount_reversed,
                    seen.id,
                    *unmoved,
                )
            )
        else:
            row = await self._db.run(
                lambda c: c.fetchrow(_MOVE_UNLESS_MOVED, *move, seen.id, *unmoved)
            )
        return refund_from_row(row) if row is not None else None


def _new_refund_args(new: NewRefund) -> tuple[Any, ...]:
    return (
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


def _move_args(
    refund: Refund, outcome: RefundOutcome, plan: RefundPlan, source: Source
) -> tuple[Any, ...]:
    return (
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


def _record_only_args(
    payment: Payment, refund: Refund, outcome: RefundOutcome, plan: RefundPlan, source: Source
) -> tuple[Any, ...]:
    return (
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


class PgLockedRefunds:
    """LockedRefunds (service_layer/unit_of_work.py) on the unit of work's
    connection: the writes of webhooks and the reconciler, their payment
    locked first."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def of_payment(self, payment_id: uuid.UUID) -> list[Refund]:
        rows = await self._conn.fetch(
            f"SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY created_at, id",
            payment_id,
        )
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
                _RECORD_ONLY, *_record_only_args(payment, refund, outcome, plan, source)
            )
            return refund, payment
        move = _move_args(refund, outcome, plan, source)
        if plan.payment_changes:
            row = await self._conn.fetchrow(_MOVE_AND_REVERSE, *move, plan.amount_reversed)
            if row is None:
                raise NotFound(f"refund {refund.public_id} not found")
            payment = payment_from_row({c: row[f"p_{c}"] for c in _PAYMENT_FIELDS})
            return refund_from_row(row), payment
        row = await self._conn.fetchrow(_MOVE, *move)
        if row is None:
            raise NotFound(f"refund {refund.public_id} not found")
        return refund_from_row(row), payment
