"""Migrations on a live database: payments keep flowing while one is
applied, a lock it cannot get is waited for in short tries, indexes are built
concurrently, and what a failed or earlier run left behind is handled."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
import structlog

from payment_svc.adapters import migrate
from payments.v1 import payment_pb2 as pb
from payments_dev.stack import Stack
from tests.support import auth, create_request, eventually, stub

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

    def tries() -> int:
        return sum(e["event"] == "migration_lock_timeout" for e in logged)

    async def flowing(more_than: int) -> None:
        async def enough() -> bool:
            return len(created) > more_than

        await eventually(enough, f"more than {more_than} payments")

    report = await asyncpg.connect(fresh_database)
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        callers = [asyncio.create_task(caller(channel)) for _ in range(4)]
        try:
            await flowing(4)
            with structlog.testing.capture_logs() as logged:
                async with report.transaction(isolation="repeatable_read"):
                    await report.fetchval("SELECT count(*) FROM payments")
                    migrating = asyncio.create_task(
                        migrate.migrate(fresh_database, folder=migrations, lock_timeout=0.2)
                    )
                    # The report runs on, and so do payments, while the
                    # migration gives up its lock wait and tries again.
                    before_report = len(created)

                    async def tried_twice() -> bool:
                        return tries() >= 2

                    await eventually(tried_twice, "two lock timeouts of the migration")
                    await flowing(before_report + 10)
                    assert not migrating.done()
                    tries_during_report = tries()
                applied = await asyncio.wait_for(migrating, 20)
            await flowing(len(created) + 4)  # and after it
        finally:
            stop.set()
            await asyncio.gather(*callers)

    assert applied == ["9901_test_live_column", "9902_test_live_index"]
    assert tries_during_report >= 2  # it waited for the report, in tries
    assert failures == [], failures
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
        with structlog.testing.capture_logs() as logged:
            async with report.transaction(isolation="repeatable_read"):
                await report.fetchval("SELECT count(*) FROM payments")
                migrating = asyncio.create_task(
                    migrate.migrate(fresh_database, folder=migrations, lock_timeout=0.2)
                )

                # (An index being built is INVALID too: the build has failed
                # once its lock wait timed out, and left the index so.)
                async def build_failed() -> bool:
                    timed_out = any(e["event"] == "migration_lock_timeout" for e in logged)
                    return timed_out and await _index_valid(conn, "payments_test_method") is False

                await eventually(build_failed, "the build failed, leaving an INVALID index")
            applied = await asyncio.wait_for(migrating, 20)
        assert applied == ["9903_test_method_index"]
        assert await _index_valid(conn, "payments_test_method") is True
        assert [e["index"] for e in logged if e["event"] == "migration_invalid_index_rebuilt"] == [
            "payments_test_method"
        ]
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
