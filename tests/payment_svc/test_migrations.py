"""Migrations on a live database: payments keep flowing while one is
applied, a lock it cannot get is waited for in short tries, indexes are built
concurrently, and what a failed or earlier run left behind is handled."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from payment_svc.adapters import migrate
from payments.v1 import payment_pb2 as pb
from payments_dev.stack import Stack
from tests.support import auth, create_request, stub

Spawn = Callable[..., Awaitable[Stack]]

ORIGINAL_0004 = """\
-- The settlement diff lists every client's payments by creation time.
CREATE INDEX payments_created ON payments (created_at DESC, id DESC);
"""


@pytest.fixture
async def fresh_database(pg_server: str) -> AsyncIterator[str]:
    """An empty database of its own: these tests change the schema."""
    name = f"payments_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(pg_server)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A copy of the shipped migrations, for a test to add to."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for f in (resources.files("payment_svc.adapters") / "migrations").iterdir():
        if f.name.endswith(".sql"):
            (folder / f.name).write_text(f.read_text())
    return folder


async def _index_valid(conn: asyncpg.Connection, name: str) -> bool | None:
    valid: bool | None = await conn.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
    )
    return valid


async def test_a_migration_applied_while_payments_flow_fails_no_payment(
    fresh_database: str, spawn_payment_svc: Spawn, migrations: Path
) -> None:
    # A column (ACCESS EXCLUSIVE on payments) and an index, while a long
    # report holds the table: without a lock timeout the ALTER would wait
    # behind the report, and every insert behind the ALTER.
    (migrations / "9901_test_live_column.sql").write_text(
        "ALTER TABLE payments ADD COLUMN IF NOT EXISTS test_note text;\n"
    )
    (migrations / "9902_test_live_index.sql").write_text(
        f"{migrate.NO_TRANSACTION}\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_test_amount\n"
        "    ON payments (amount, id);\n"
    )
    svc_stack = await spawn_payment_svc(database_url=fresh_database, DB_TIMEOUT_SECONDS="1")
    created: list[int] = []
    failures: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def caller(channel: grpc.aio.Channel) -> None:
        while not stop.is_set():
            try:
                reply = await stub(channel).CreatePayment(
                    create_request(), metadata=auth(), timeout=5
                )
                created.append(reply.payment.status)
            except grpc.aio.AioRpcError as err:
                failures.append(err.code())

    report = await asyncpg.connect(fresh_database)
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        callers = [asyncio.create_task(caller(channel)) for _ in range(4)]
        try:
            await asyncio.sleep(0.3)
            async with report.transaction(isolation="repeatable_read"):
                await report.fetchval("SELECT count(*) FROM payments")
                t0 = time.monotonic()
                migrating = asyncio.create_task(
                    migrate.migrate(fresh_database, folder=migrations, lock_timeout=0.2)
                )
                await asyncio.sleep(2.0)  # the report runs on, and so do payments
                assert not migrating.done()
                during_report = len(created)
            applied = await asyncio.wait_for(migrating, 20)
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.gather(*callers)
    took = time.monotonic() - t0

    assert applied == ["9901_test_live_column", "9902_test_live_index"]
    assert took >= 2.0  # it waited for the report, in tries
    assert failures == [], failures
    assert during_report > 10, during_report
    assert set(created) == {pb.PAYMENT_STATUS_SUCCEEDED}
    try:
        assert await _index_valid(report, "payments_test_amount") is True
        assert await report.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'payments' AND column_name = 'test_note'"
        )
    finally:
        await report.close()


async def test_an_invalid_index_left_by_a_failed_build_is_built_again(
    fresh_database: str, migrations: Path
) -> None:
    assert await migrate.migrate(fresh_database, folder=migrations)
    (migrations / "9903_test_method_index.sql").write_text(
        f"{migrate.NO_TRANSACTION}\n"
        "-- by payment method\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_test_method\n"
        "    ON payments (payment_method);\n"
    )
    report = await asyncpg.connect(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        # A concurrent build waits for older snapshots; this one outlasts
        # its lock timeout, and the failed build leaves an INVALID index.
        async with report.transaction(isolation="repeatable_read"):
            await report.fetchval("SELECT count(*) FROM payments")
            migrating = asyncio.create_task(
                migrate.migrate(fresh_database, folder=migrations, lock_timeout=0.2)
            )
            deadline = time.monotonic() + 2.0
            while await _index_valid(conn, "payments_test_method") is not False:
                assert time.monotonic() < deadline, "the build never failed"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
        assert await asyncio.wait_for(migrating, 20) == ["9903_test_method_index"]
        assert await _index_valid(conn, "payments_test_method") is True
        # Again: nothing to do.
        assert await migrate.migrate(fresh_database, folder=migrations) == []
    finally:
        await report.close()
        await conn.close()


async def test_0004_applied_by_its_first_text_is_accepted(
    fresh_database: str, migrations: Path
) -> None:
    (migrations / "0004_payments_created.sql").write_text(ORIGINAL_0004)
    assert "0004_payments_created" in await migrate.migrate(fresh_database, folder=migrations)
    # The shipped migrations: 0004 now builds the same index concurrently.
    assert "0004_payments_created" not in await migrate.migrate(fresh_database)
    # Any other change to an applied migration is still refused.
    (migrations / "0004_payments_created.sql").write_text(ORIGINAL_0004 + "-- edited\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await migrate.migrate(fresh_database, folder=migrations)


def test_a_no_transaction_file_must_be_safe_to_run_again() -> None:
    m = migrate.Migration(
        "9904_test", f"{migrate.NO_TRANSACTION}\nCREATE INDEX CONCURRENTLY x ON payments (id);\n"
    )
    with pytest.raises(ValueError, match="IF NOT EXISTS"):
        m.statements()
