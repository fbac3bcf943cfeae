"""The change feed's SQL: reading pages, the sequencer, retention.

The outbox rows are written by the trigger of migration 0011, at the commit
of whatever wrote a history entry, with no position. Why positions are handed
out after commit, by one sequencer at a time: a sequence value is taken when a
row is inserted but becomes visible when its transaction commits, so a reader
trusting "the highest id seen" would skip a row that committed late. The
sequencer locks the state row, and its next statement (READ COMMITTED: a
snapshot taken after the lock) numbers every committed row without a
position, in insert order, after the last position handed out. Runs are
serialized and each commits its numbers at once, so the numbered rows any
reader sees are a prefix of the feed: once it has read position P, nothing
will ever be numbered P or below. Two changes of one payment are serialized
by its row lock, so the first's row is inserted, and numbered, first.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.domain.feed import FeedPage, PaymentUpdate
from payment_svc.domain.model import Payment, PaymentEvent
from payment_svc.domain.refunds import Refund, RefundStatus
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ports import Sequenced

CHANNEL = "payment_updates"
# NOTIFY payloads are limited to 8000 bytes: past this, "every client".
_MAX_CLIENTS_TEXT = 7000

_PAGE = """SELECT id, position, type, payload, recorded_at FROM payment_updates
WHERE client_id = $1 AND position > $2 ORDER BY position LIMIT $3"""

_LOCK = "SELECT last_position FROM payment_updates_state FOR UPDATE"

# $1: the last position handed out (read under the lock), $2: batch size,
# $3: the sequencing process's tag (its listener ignores its own news).
_NUMBER = f"""
WITH todo AS (
    SELECT id, client_id, $1::bigint + row_number() OVER (ORDER BY seq) AS pos
    FROM (SELECT id, client_id, seq FROM payment_updates
          WHERE position IS NULL ORDER BY seq LIMIT $2) AS oldest
), numbered AS (
    UPDATE payment_updates AS u SET position = todo.pos FROM todo
    WHERE u.id = todo.id
    RETURNING u.client_id
), state AS (
    UPDATE payment_updates_state SET last_position = last_position + (SELECT count(*) FROM todo)
), summary AS (
    SELECT count(*) AS n, string_agg(DISTINCT client_id, ',') AS clients FROM numbered
)
SELECT n, clients,
    CASE WHEN n > 0 THEN pg_notify('{CHANNEL}', $3 || '|' ||
        CASE WHEN length(clients) > {_MAX_CLIENTS_TEXT} THEN '*' ELSE clients END) END
FROM summary
"""

# The oldest numbered rows, a batch; deleted up to the first one recorded
# after `before` (so what is deleted is always a prefix, and the horizon, the
# highest position deleted, says exactly what is gone).
_EXPIRE = """
WITH batch AS (
    SELECT id, position, recorded_at FROM payment_updates
    WHERE position > (SELECT horizon FROM payment_updates_state)
    ORDER BY position LIMIT $2
), stop AS (
    SELECT min(position) AS at FROM batch WHERE recorded_at >= $1
), gone AS (
    DELETE FROM payment_updates AS u USING batch
    WHERE u.id = batch.id AND batch.position < COALESCE((SELECT at FROM stop), 'infinity'::numeric)
    RETURNING batch.position
), state AS (
    UPDATE payment_updates_state
    SET horizon = GREATEST(horizon, COALESCE((SELECT max(position) FROM gone), 0))
)
SELECT count(*) FROM gone
"""


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _payment(p: dict[str, Any]) -> Payment:
    return Payment(
        id=uuid.UUID(p["id"]),
        client_id=p["client_id"],
        idempotency_key=p["idempotency_key"],
        amount=p["amount"],
        currency=p["currency"],
        status=PaymentStatus(p["status"]),
        payment_method=p["payment_method"],
        description=p["description"],
        metadata=p["metadata"],
        provider_payment_id=p["provider_payment_id"],
        failure_code=p["failure_code"],
        failure_message=p["failure_message"],
        amount_reversed=p["amount_reversed"],
        version=p["version"],
        created_at=datetime.fromisoformat(p["created_at"]),
        updated_at=datetime.fromisoformat(p["updated_at"]),
    )


def _event(e: dict[str, Any]) -> PaymentEvent:
    return PaymentEvent(
        id=e["id"],
        payment_id=uuid.UUID(e["payment_id"]),
        from_status=PaymentStatus(e["from_status"]) if e["from_status"] else None,
        to_status=PaymentStatus(e["to_status"]),
        source=Source(e["source"]),
        applied=e["applied"],
        provider_event_id=e["provider_event_id"],
        provider_event_type=e["provider_event_type"],
        failure_code=e["failure_code"],
        note=e["note"],
        provider_created_at=_ts(e["provider_created_at"]),
        recorded_at=datetime.fromisoformat(e["recorded_at"]),
        refund_id=uuid.UUID(e["refund_id"]) if e.get("refund_id") else None,
        refund_status=RefundStatus(e["refund_status"]) if e.get("refund_status") else None,
    )


def _refund(r: dict[str, Any] | None) -> Refund | None:
    if r is None:
        return None
    return Refund(
        id=uuid.UUID(r["id"]),
        payment_id=uuid.UUID(r["payment_id"]),
        client_id=r["client_id"],
        version=r["version"],
        idempotency_key=r["idempotency_key"],
        amount=r["amount"],
        currency=r["currency"],
        status=RefundStatus(r["status"]),
        provider_refund_id=r["provider_refund_id"],
        reason=r["reason"],
        failure_code=r["failure_code"],
        failure_message=r["failure_message"],
        source=Source(r["source"]),
        created_at=datetime.fromisoformat(r["created_at"]),
        updated_at=datetime.fromisoformat(r["updated_at"]),
    )


def update_from_row(row: asyncpg.Record) -> PaymentUpdate:
    payload = row["payload"]
    if isinstance(payload, str):  # a connection without our jsonb codec
        payload = json.loads(payload)
    return PaymentUpdate(
        id=row["id"],
        position=row["position"],
        type=row["type"],
        payment=_payment(payload["payment"]),
        event=_event(payload["event"]),
        refund=_refund(payload.get("refund")),
        recorded_at=row["recorded_at"],
    )


class FeedStore:
    def __init__(self, db: Database, *, tag: str = "") -> None:
        self._db = db
        # names this process in its NOTIFY payloads
        self.tag = tag

    async def page(self, client_id: str, after: int, limit: int) -> FeedPage:
        async def op(conn: Conn) -> tuple[list[asyncpg.Record], int]:
            rows = await conn.fetch(_PAGE, client_id, after, limit)
            # After the rows: a horizon that covers them says whether any
            # row after `after` was deleted before they were read.
            horizon = await conn.fetchval("SELECT horizon FROM payment_updates_state")
            return list(rows), horizon

        rows, horizon = await self._db.run(op)
        return FeedPage([update_from_row(r) for r in rows], horizon)

    async def sequence(self, limit: int) -> Sequenced:
        async def op(conn: Conn) -> asyncpg.Record:
            async with conn.transaction():
                last = await conn.fetchval(_LOCK)
                row = await conn.fetchrow(_NUMBER, last, limit, self.tag)
                assert row is not None
                return row

        row = await self._db.run(op)
        clients = frozenset(row["clients"].split(",")) if row["clients"] else frozenset()
        return Sequenced(row["n"], clients)

    async def expire(self, before: datetime, limit: int) -> int:
        deleted: int = await self._db.run(lambda c: c.fetchval(_EXPIRE, before, limit))
        return deleted
