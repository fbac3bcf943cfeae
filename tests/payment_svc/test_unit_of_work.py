"""The Postgres unit of work (adapters/postgres_uow.py) on real Postgres:
nothing is kept without commit(), what is committed stays, and an error in
the block comes out as it was, with the connection back in the pool."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.postgres_uow import PostgresUnitOfWork
from payment_svc.domain.errors import NotFound
from payment_svc.domain.reconciliation import DiscrepancyKind


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, timeout=5, max_size=1)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def _count(pool: asyncpg.Pool, marker: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM discrepancies WHERE provider_payment_id = $1", marker
        )
    )


async def test_without_commit_nothing_is_kept(database: Database, db: asyncpg.Pool) -> None:
    marker = f"pi_uow_{uuid.uuid4().hex}"
    async with PostgresUnitOfWork(database) as uow:
        await uow.discrepancies.report(DiscrepancyKind.STUCK_PAYMENT, None, marker, {})
    assert await _count(db, marker) == 0
    async with PostgresUnitOfWork(database) as uow:
        await uow.discrepancies.report(DiscrepancyKind.STUCK_PAYMENT, None, marker, {})
        await uow.commit()
    assert await _count(db, marker) == 1


async def test_an_error_in_the_block_rolls_back_and_comes_out_as_it_was(
    database: Database, db: asyncpg.Pool
) -> None:
    marker = f"pi_uow_{uuid.uuid4().hex}"

    async def half_way() -> None:
        async with PostgresUnitOfWork(database) as uow:
            await uow.discrepancies.report(DiscrepancyKind.STUCK_PAYMENT, None, marker, {})
            await uow.payments.get_for_update(uuid.uuid4())

    with pytest.raises(NotFound):
        await half_way()
    assert await _count(db, marker) == 0
    # the pool's one connection is usable again
    async with PostgresUnitOfWork(database) as uow:
        await uow.discrepancies.report(DiscrepancyKind.STUCK_PAYMENT, None, marker, {})
        await uow.commit()
    assert await _count(db, marker) == 1


async def test_a_caller_cancelled_while_waiting_for_a_connection_leaks_none(
    database: Database, db: asyncpg.Pool
) -> None:
    marker = f"pi_uow_{uuid.uuid4().hex}"
    async with PostgresUnitOfWork(database) as holder:
        # the pool's one connection is taken: this one waits, and is cancelled
        waiting = asyncio.ensure_future(PostgresUnitOfWork(database).__aenter__())
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await holder.commit()
    async with asyncio.timeout(3):
        async with PostgresUnitOfWork(database) as uow:
            await uow.discrepancies.report(DiscrepancyKind.STUCK_PAYMENT, None, marker, {})
            await uow.commit()
    assert await _count(db, marker) == 1
