"""Webhook endpoints' SQL (migration 0020), scoped to the client: every
statement names the client, so another client's endpoint is not found.

A new endpoint starts at the feed's end (the last position handed out): it
receives the updates numbered after it was registered. The per-client limit
is checked under a transaction-scoped advisory lock on the client, so that
concurrent creates are counted one after another.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from payment_svc.adapters.db import Conn, Database
from payment_svc.domain.commands import PageCursor
from payment_svc.domain.webhooks import (
    DeliveryAttempt,
    EndpointChanges,
    EndpointStatus,
    TooManyEndpoints,
    WebhookEndpoint,
)

_COLUMNS = """id, client_id, url, description, status, created_at, updated_at,
    CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
        AS previous_secret_expires_at"""

_LOCK_CLIENT = "SELECT pg_advisory_xact_lock(hashtextextended('webhook_endpoints:' || $1, 0))"

_INSERT = """INSERT INTO webhook_endpoints
    (id, client_id, url, description, status, secret, feed_position, created_at, updated_at)
SELECT $1, $2, $3, $4, 'ENABLED', $5, last_position, $6, $6 FROM payment_updates_state"""

# enabled: true enables (whoever disabled it) and forgets past failures;
# false disables; NULL keeps the status.
_UPDATE = f"""UPDATE webhook_endpoints SET
    url = COALESCE($3, url),
    description = COALESCE($4, description),
    status = CASE WHEN $5::boolean IS NULL THEN status
                  WHEN $5 THEN 'ENABLED' ELSE 'DISABLED' END,
    failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE client_id = $1 AND id = $2
RETURNING {_COLUMNS}"""

_ROTATE = f"""UPDATE webhook_endpoints SET
    previous_secret = secret,
    previous_secret_expires_at = now() + $4::interval,
    secret = $3,
    updated_at = now()
WHERE client_id = $1 AND id = $2
RETURNING {_COLUMNS}"""

_ATTEMPTS = """SELECT a.* FROM webhook_attempts AS a
JOIN webhook_endpoints AS e ON e.id = a.endpoint_id
WHERE e.client_id = $1 AND a.endpoint_id = $2
  AND ($3::timestamptz IS NULL OR (a.attempted_at, a.id) < ($3, $4))
ORDER BY a.attempted_at DESC, a.id DESC LIMIT $5"""

# The endpoint's cursor goes back (never forward: what is queued stays
# queued) unless the position has expired; the queue's rows above it are
# kept as they are (their attempts go on), the others are queued again as
# the dispatcher reads on from the cursor.
_REWIND = """WITH state AS (SELECT horizon FROM payment_updates_state),
rewound AS (
    UPDATE webhook_endpoints SET
        feed_position = LEAST(feed_position, GREATEST($3, (SELECT horizon FROM state))),
        updated_at = now()
    WHERE client_id = $1 AND id = $2 AND ($3 = 0 OR $3 >= (SELECT horizon FROM state))
    RETURNING id
)
SELECT (SELECT horizon FROM state) AS horizon,
       EXISTS (SELECT 1 FROM webhook_endpoints WHERE client_id = $1 AND id = $2) AS found"""


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        client_id=row["client_id"],
        url=row["url"],
        description=row["description"],
        status=EndpointStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
    )


def _attempt(row: asyncpg.Record) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row["id"],
        update_id=row["update_id"],
        position=row["position"],
        payment_id=row["payment_id"],
        attempt=row["attempt"],
        attempted_at=row["attempted_at"],
        http_status=row["http_status"],
        error=row["error"],
        duration_ms=row["duration_ms"],
        delivered=row["delivered"],
    )


class WebhookEndpointStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, endpoint: WebhookEndpoint, secret: bytes, *, limit: int) -> None:
        async def op(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(_LOCK_CLIENT, endpoint.client_id)
                count = await conn.fetchval(
                    "SELECT count(*) FROM webhook_endpoints WHERE client_id = $1",
                    endpoint.client_id,
                )
                if count >= limit:
                    raise TooManyEndpoints()
                await conn.execute(
                    _INSERT,
                    endpoint.id,
                    endpoint.client_id,
                    endpoint.url,
                    endpoint.description,
                    secret,
                    endpoint.created_at,
                )

        await self._db.run(op)

    async def of_client(self, client_id: str) -> list[WebhookEndpoint]:
        rows = await self._db.run(
            lambda c: c.fetch(
                f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE client_id = $1"
                " ORDER BY created_at, id",
                client_id,
            )
        )
        return [_endpoint(r) for r in rows]

    async def get(self, client_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        row = await self._db.run(
            lambda c: c.fetchrow(
                f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE client_id = $1 AND id = $2",
                client_id,
                endpoint_id,
            )
        )
        return None if row is None else _endpoint(row)

    async def update(
        self, client_id: str, endpoint_id: uuid.UUID, changes: EndpointChanges
    ) -> WebhookEndpoint | None:
        row = await self._db.run(
            lambda c: c.fetchrow(
                _UPDATE, client_id, endpoint_id, changes.url, changes.description, changes.enabled
            )
        )
        return None if row is None else _endpoint(row)

    async def delete(self, client_id: str, endpoint_id: uuid.UUID) -> bool:
        done: str = await self._db.run(
            lambda c: c.execute(
                "DELETE FROM webhook_endpoints WHERE client_id = $1 AND id = $2",
                client_id,
                endpoint_id,
            )
        )
        return done != "DELETE 0"

    async def rotate(
        self, client_id: str, endpoint_id: uuid.UUID, secret: bytes, overlap: timedelta
    ) -> WebhookEndpoint | None:
        row = await self._db.run(
            lambda c: c.fetchrow(_ROTATE, client_id, endpoint_id, secret, overlap)
        )
        return None if row is None else _endpoint(row)

    async def attempts(
        self, client_id: str, endpoint_id: uuid.UUID, after: PageCursor | None, limit: int
    ) -> list[DeliveryAttempt] | None:
        async def op(conn: Conn) -> list[asyncpg.Record] | None:
            rows = await conn.fetch(
                _ATTEMPTS,
                client_id,
                endpoint_id,
                after.sort_key if after else None,
                after.id if after else None,
                limit,
            )
            if rows:
                return list(rows)
            exists = await conn.fetchval(
                "SELECT 1 FROM webhook_endpoints WHERE client_id = $1 AND id = $2",
                client_id,
                endpoint_id,
            )
            return [] if exists else None

        rows = await self._db.run(op)
        return None if rows is None else [_attempt(r) for r in rows]

    async def rewind(
        self, client_id: str, endpoint_id: uuid.UUID, after_position: int
    ) -> int | None:
        row = await self._db.run(
            lambda c: c.fetchrow(_REWIND, client_id, endpoint_id, after_position)
        )
        assert row is not None
        return int(row["horizon"]) if row["found"] else None
