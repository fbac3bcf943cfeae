"""The dispatcher's store on real Postgres (migrations 0020-0022): attempts
expire with the feed's retention, and a recorded attempt of a deleted
endpoint is not an error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.webhook_dispatch_store import WebhookDispatchStore
from payment_svc.domain.webhook_dispatch import AttemptOutcome, AttemptRecord
from payment_svc.service_layer.webhook_dispatch import WebhookDispatch


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[WebhookDispatchStore]:
    db = Database(database_url, timeout=5, max_size=4)
    await db.open()
    try:
        yield WebhookDispatchStore(db)
    finally:
        await db.close()


async def _endpoint(db: asyncpg.Pool) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO webhook_endpoints (id, client_id, url, status, secret, feed_position)
           VALUES ($1, 'store-test', 'http://127.0.0.1:9/x', 'DISABLED', $2, 0)""",
        endpoint_id,
        b"k" * 32,
    )
    return endpoint_id


async def test_attempts_older_than_the_retention_are_deleted_in_batches(
    store: WebhookDispatchStore, db: asyncpg.Pool
) -> None:
    endpoint_id = await _endpoint(db)
    now = datetime.now(UTC)
    ages = [timedelta(days=40)] * 5 + [timedelta(days=1)] * 2
    await db.executemany(
        """INSERT INTO webhook_attempts (endpoint_id, update_id, position, payment_id, attempt,
               attempted_at, delivered) VALUES ($1, $2, 1, $3, 1, $4, true)""",
        [(endpoint_id, uuid.uuid4(), uuid.uuid4(), now - age) for age in ages],
    )
    deleted = await WebhookDispatch(store).expire_attempts(30 * 86400.0, batch=2)
    assert deleted >= 5  # others' old attempts too, if any
    left = await db.fetch(
        "SELECT attempted_at FROM webhook_attempts WHERE endpoint_id = $1", endpoint_id
    )
    assert len(left) == 2
    assert all(now - r["attempted_at"] < timedelta(days=2) for r in left)


async def test_an_attempt_recorded_for_a_deleted_endpoint_is_not_an_error(
    store: WebhookDispatchStore, db: asyncpg.Pool
) -> None:
    endpoint_id = await _endpoint(db)
    await db.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)
    state = await store.record(
        AttemptRecord(
            dispatcher_id="store-test",
            endpoint_id=endpoint_id,
            position=1,
            update_id=uuid.uuid4(),
            payment_id=uuid.uuid4(),
            attempt=1,
            attempted_at=datetime.now(UTC),
            http_status=200,
            error="",
            duration_ms=5,
            outcome=AttemptOutcome.DELIVERED,
            retry_in=timedelta(0),
            disable_after_failing=None,
        )
    )
    assert (state.enabled, state.disabled_reason) == (False, "deleted")
