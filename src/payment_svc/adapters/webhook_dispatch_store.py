"""The dispatcher's SQL (migration 0020): leases, the per-endpoint queue,
attempts.

Why nothing is lost: an update enters an endpoint's queue in the same
transaction that moves the endpoint's cursor past it, and leaves it only
when an attempt's outcome says delivered or given up. A dispatcher killed
at any moment leaves its rows queued; the lease expires and whoever takes
the endpoint sends them again, with the same webhook-id (the update id).

Sharing: each lease call says the replica is alive (webhook_dispatchers);
a replica takes at most its share, the enabled endpoints over the replicas
alive, rounded up, its own first, and gives back what it holds beyond.

Why order holds: only the lowest queued position of a payment is ever
handed out (the head), and the next one only after the head left the
queue; positions follow commit order per payment (adapters/feed_store.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
import structlog

from payment_svc.adapters.db import Conn, Database
from payment_svc.adapters.feed_store import update_from_row
from payment_svc.domain.webhook_dispatch import (
    AttemptOutcome,
    AttemptRecord,
    DueMessage,
    DueMessages,
    EndpointState,
    LeasedEndpoint,
    LeaseLost,
)

log = structlog.get_logger("payment_svc.webhooks")

# The caller is alive until its lease ends; replicas not seen for an hour
# are forgotten.
_HEARTBEAT = """INSERT INTO webhook_dispatchers (dispatcher_id, seen_until)
VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (dispatcher_id) DO UPDATE SET seen_until = EXCLUDED.seen_until"""

_FORGET = "DELETE FROM webhook_dispatchers WHERE seen_until < now() - interval '1 hour'"

# A replica's share: the enabled endpoints over the replicas alive, rounded up.
_SHARE = """SELECT ceil(
    (SELECT count(*) FROM webhook_endpoints WHERE status = 'ENABLED')::numeric
    / GREATEST(1, (SELECT count(*) FROM webhook_dispatchers WHERE seen_until > now()))
)::int"""

_RETURNING = """RETURNING e.id, e.client_id, e.url, e.secret,
    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret"""

# The caller's own, up to its share (waiting for a fetch that holds one
# of them: a renewal is never skipped).
_RENEW = f"""WITH keep AS (
    SELECT id FROM webhook_endpoints
    WHERE lease_owner = $1 AND status = 'ENABLED' ORDER BY id LIMIT $3
)
UPDATE webhook_endpoints AS e SET lease_until = now() + make_interval(secs => $2)
FROM keep WHERE e.id = keep.id
{_RETURNING}"""

# Free ones (never leased, or their lease ran out), up to what the share
# leaves; rows another transaction holds are skipped.
_CLAIM = f"""WITH chosen AS (
    SELECT id FROM webhook_endpoints
    WHERE status = 'ENABLED' AND lease_owner IS DISTINCT FROM $1
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_endpoints AS e
SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
FROM chosen WHERE e.id = chosen.id
{_RETURNING}"""

# What the caller holds beyond what it renewed or claimed now goes back
# (above its share, or disabled): another replica takes it at once.
_GIVE_BACK = """UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL
WHERE lease_owner = $1 AND NOT (id = ANY($2::uuid[]))"""

_RELEASE = """UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL
WHERE lease_owner = $1"""

# Read only, without a lock: whether the locked path has anything to do. An
# idle endpoint is polled often; this keeps its polls from writing (a row
# lock is a write).
_PEEK = """SELECT e.lease_owner = $2 AND e.lease_until > now() AND e.status = 'ENABLED' AS held,
    EXISTS (SELECT 1 FROM payment_updates AS u
            WHERE u.client_id = e.client_id AND u.position > e.feed_position) AS news,
    EXISTS (SELECT 1 FROM webhook_queue AS q
            WHERE q.endpoint_id = e.id AND q.next_attempt_at <= now()) AS due
FROM webhook_endpoints AS e WHERE e.id = $1"""

_HOLD = """SELECT client_id, feed_position,
    (SELECT horizon FROM payment_updates_state) AS horizon
FROM webhook_endpoints
WHERE id = $1 AND lease_owner = $2 AND lease_until > now() AND status = 'ENABLED'
FOR UPDATE"""

# The client's updates after the endpoint's cursor enter its queue, and the
# cursor moves past them, in one statement.
_INGEST = """WITH batch AS (
    SELECT id, position, payment_id, recorded_at FROM payment_updates
    WHERE client_id = $2 AND position > $3 ORDER BY position LIMIT $4
), queued AS (
    INSERT INTO webhook_queue (endpoint_id, position, update_id, payment_id, recorded_at)
    SELECT $1, position, id, payment_id, recorded_at FROM batch
    ON CONFLICT DO NOTHING
)
UPDATE webhook_endpoints SET feed_position = (SELECT max(position) FROM batch)
WHERE id = $1 AND EXISTS (SELECT 1 FROM batch)"""

# Of each payment the oldest queued update (its head), when due, with the
# update itself (none when retention deleted it).
_HEADS = """SELECT q.position, q.update_id, q.attempts, u.id, u.type, u.payload, u.recorded_at
FROM (SELECT DISTINCT ON (payment_id) position, update_id, payment_id, attempts, next_attempt_at
      FROM webhook_queue WHERE endpoint_id = $1 ORDER BY payment_id, position) AS q
LEFT JOIN payment_updates AS u ON u.position = q.position
WHERE q.next_attempt_at <= now() AND NOT (q.payment_id = ANY($2::uuid[]))
ORDER BY q.next_attempt_at, q.position
LIMIT $3"""

_WAITING = """SELECT min(next_attempt_at) FILTER (WHERE next_attempt_at > now()) - now(),
       min(recorded_at)
FROM webhook_queue WHERE endpoint_id = $1"""

_ATTEMPT = """INSERT INTO webhook_attempts (endpoint_id, update_id, position, payment_id, attempt,
    attempted_at, http_status, error, duration_ms, delivered)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""

_DONE = "DELETE FROM webhook_queue WHERE endpoint_id = $1 AND position = $2"

_RETRY = """UPDATE webhook_queue SET attempts = GREATEST(attempts, $3),
    next_attempt_at = now() + $4::interval
WHERE endpoint_id = $1 AND position = $2"""

# failing_since: the first failure since the last delivery (payment-svc's
# clock); failing for longer than the caller's `disable_after_failing` (5
# days) disables the endpoint, as does a 410.
_ENDPOINT_AFTER = """WITH failing AS (
    SELECT CASE WHEN $2 THEN NULL ELSE COALESCE(failing_since, now()) END AS since,
           status = 'ENABLED' AS enabled
    FROM webhook_endpoints WHERE id = $1
), next AS (
    SELECT since, CASE
        WHEN NOT enabled THEN NULL
        WHEN $3 THEN 'DISABLED_GONE'
        WHEN since IS NOT NULL AND $4::interval IS NOT NULL
             AND since < now() - $4::interval THEN 'DISABLED_FAILING'
        END AS disabled
    FROM failing
)
UPDATE webhook_endpoints AS e SET
    failing_since = next.since,
    status = COALESCE(next.disabled, e.status),
    updated_at = CASE WHEN next.disabled IS NULL THEN e.updated_at ELSE now() END
FROM next WHERE e.id = $1
RETURNING e.status"""


def _leased(row: asyncpg.Record) -> LeasedEndpoint:
    secrets: tuple[bytes, ...] = (bytes(row["secret"]),)
    if row["previous_secret"] is not None:
        secrets += (bytes(row["previous_secret"]),)
    return LeasedEndpoint(row["id"], row["client_id"], row["url"], secrets)


class WebhookDispatchStore:
    def __init__(self, db: Database, *, ingest_batch: int = 1000) -> None:
        self._db = db
        self._ingest_batch = ingest_batch

    async def lease(
        self, dispatcher_id: str, lease_seconds: float, max_endpoints: int
    ) -> list[LeasedEndpoint]:
        async def op(conn: Conn) -> list[asyncpg.Record]:
            async with conn.transaction():
                if max_endpoints == 0:  # a clean stop
                    await conn.execute(_RELEASE, dispatcher_id)
                    await conn.execute(
                        "DELETE FROM webhook_dispatchers WHERE dispatcher_id = $1", dispatcher_id
                    )
                    return []
                await conn.execute(_HEARTBEAT, dispatcher_id, lease_seconds)
                await conn.execute(_FORGET)
                share: int = await conn.fetchval(_SHARE)
                limit = min(max_endpoints, share)
                rows = list(await conn.fetch(_RENEW, dispatcher_id, lease_seconds, limit))
                if len(rows) < limit:
                    rows += await conn.fetch(
                        _CLAIM, dispatcher_id, lease_seconds, limit - len(rows)
                    )
                await conn.execute(_GIVE_BACK, dispatcher_id, [r["id"] for r in rows])
                return rows

        return [_leased(r) for r in await self._db.run(op)]

    async def fetch(
        self,
        dispatcher_id: str,
        endpoint_id: uuid.UUID,
        limit: int,
        busy: list[uuid.UUID],
    ) -> DueMessages:
        async def op(conn: Conn) -> tuple[str, list[asyncpg.Record], asyncpg.Record]:
            peek = await conn.fetchrow(_PEEK, endpoint_id, dispatcher_id)
            if peek is None or not peek["held"]:
                raise LeaseLost("this dispatcher no longer holds the endpoint")
            if not (peek["news"] or peek["due"]):
                waiting = await conn.fetchrow(_WAITING, endpoint_id)
                assert waiting is not None
                return "", [], waiting
            async with conn.transaction():
                held = await conn.fetchrow(_HOLD, endpoint_id, dispatcher_id)
                if held is None:
                    raise LeaseLost("this dispatcher no longer holds the endpoint")
                client_id = held["client_id"]
                if held["feed_position"] < held["horizon"]:
                    # Disabled longer than the feed's retention: what was
                    # deleted meanwhile can no longer be sent.
                    log.warning(
                        "webhook_updates_expired_before_queued",
                        endpoint_id=str(endpoint_id),
                        cursor=held["feed_position"],
                        horizon=held["horizon"],
                    )
                await conn.execute(
                    _INGEST, endpoint_id, client_id, held["feed_position"], self._ingest_batch
                )
                heads = list(await conn.fetch(_HEADS, endpoint_id, busy, limit))
                gone = [h["position"] for h in heads if h["id"] is None]
                if gone:  # deleted by retention before it could be delivered
                    log.warning(
                        "webhook_updates_expired_in_queue",
                        endpoint_id=str(endpoint_id),
                        positions=gone,
                    )
                    await conn.execute(
                        "DELETE FROM webhook_queue WHERE endpoint_id = $1"
                        " AND position = ANY($2::bigint[])",
                        endpoint_id,
                        gone,
                    )
                waiting = await conn.fetchrow(_WAITING, endpoint_id)
                assert waiting is not None
                return client_id, heads, waiting

        client_id, heads, waiting = await self._db.run(op)
        messages = [
            DueMessage(attempt=h["attempts"] + 1, update=update_from_row(h))
            for h in heads
            if h["id"] is not None
        ]
        next_due: timedelta | None = waiting[0]
        oldest: datetime | None = waiting[1]
        return DueMessages(client_id, messages, next_due, oldest)

    async def expire_attempts(self, before: datetime, limit: int) -> int:
        """Deletes up to `limit` attempts made before `before` (the
        deliveries' listing keeps what the feed keeps)."""
        deleted: int = await self._db.run(
            lambda c: c.fetchval(
                """WITH gone AS (
                       DELETE FROM webhook_attempts WHERE id IN (
                           SELECT id FROM webhook_attempts WHERE attempted_at < $1 LIMIT $2)
                       RETURNING 1)
                   SELECT count(*) FROM gone""",
                before,
                limit,
            )
        )
        return deleted

    async def record(self, r: AttemptRecord) -> EndpointState:
        delivered = r.outcome is AttemptOutcome.DELIVERED

        async def op(conn: Conn) -> str | None:
            async with conn.transaction():
                try:
                    await conn.execute(
                        _ATTEMPT,
                        r.endpoint_id,
                        r.update_id,
                        r.position,
                        r.payment_id,
                        r.attempt,
                        r.attempted_at,
                        r.http_status,
                        r.error,
                        r.duration_ms,
                        delivered,
                    )
                except asyncpg.ForeignKeyViolationError:
                    return None  # the endpoint was deleted meanwhile
                if r.outcome in (AttemptOutcome.DELIVERED, AttemptOutcome.GIVEN_UP):
                    await conn.execute(_DONE, r.endpoint_id, r.position)
                else:
                    retry_in = r.retry_in if r.outcome is AttemptOutcome.RETRY else timedelta(0)
                    await conn.execute(_RETRY, r.endpoint_id, r.position, r.attempt, retry_in)
                status: str | None = await conn.fetchval(
                    _ENDPOINT_AFTER,
                    r.endpoint_id,
                    delivered,
                    r.outcome is AttemptOutcome.GONE,
                    r.disable_after_failing,
                )
                return status

        status = await self._db.run(op)
        if status is None:
            return EndpointState(False, "deleted")
        return EndpointState(status == "ENABLED", "" if status == "ENABLED" else status)
