"""The database's own side of a call's bound: a statement or a lock wait the
service gave up on does not run on in Postgres (holding a connection slot,
and locks, long after the caller was told UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payment_svc.adapters.db import Conn, Database
from payment_svc.domain.errors import StoreUnavailable
from tests.support import promised


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, timeout=1.0, max_size=2)
    await db.open()
    assert await db.ping()
    try:
        yield db
    finally:
        await db.close()


async def _backends(admin: asyncpg.Connection, marker: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state <> 'idle'"
        " AND pid <> pg_backend_pid()",
        f"%{marker}%",
    )
    return count


async def _until_gone(admin: asyncpg.Connection, marker: str, within: float) -> float:
    t0 = time.monotonic()
    while await _backends(admin, marker):
        assert time.monotonic() - t0 < within, f"a backend still runs {marker}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_pooled_connections_carry_server_side_bounds(database: Database) -> None:
    async def settings(conn: Conn) -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"],
        )
        return {r["name"]: r["setting"] for r in rows}

    assert await database.run(settings) == {
        "statement_timeout": "800",  # ms: 0.8 of DB_TIMEOUT_SECONDS
        "lock_timeout": "800",
        "idle_in_transaction_session_timeout": "1000",
    }


async def test_a_statement_given_up_on_does_not_run_on(
    database: Database, database_url: str
) -> None:
    marker = f"dbsafe_sleep_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await database.run(lambda c: c.fetchval(f"SELECT pg_sleep(30) /* {marker} */"))
        assert time.monotonic() - t0 < promised(database.timeout, 0.3)
        await _until_gone(admin, marker, within=promised(0.0, 1.0))
        # A slow statement is not an outage.
        assert database.healthy
        assert await database.run(lambda c: c.fetchval("SELECT 1")) == 1
    finally:
        await admin.close()


async def test_a_lock_wait_given_up_on_does_not_wait_on(
    database: Database, database_url: str
) -> None:
    table = f"dbsafe_lock_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    holder = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)")
        await admin.execute(f"INSERT INTO {table} VALUES (1, 0)")
        async with holder.transaction():
            await holder.execute(f"SELECT * FROM {table} WHERE id = 1 FOR UPDATE")
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await database.run(
                    lambda c: c.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
                )
            assert time.monotonic() - t0 < promised(database.timeout, 0.3)
            # While the lock is still held, nothing of ours waits for it.
            await _until_gone(admin, f"UPDATE {table}", within=promised(0.0, 1.0))
            assert database.healthy
        # ...and nothing applies later, when the lock is free: a locking read
        # queues behind any update still waiting for the row, and sees it.
        assert await admin.fetchval(f"SELECT n FROM {table} WHERE id = 1 FOR UPDATE") == 0
    finally:
        await holder.close()
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()
