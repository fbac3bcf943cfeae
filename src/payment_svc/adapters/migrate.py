"""Schema migrations: numbered SQL files applied in order, once each.

A small runner rather than a separate tool (dbmate, alembic): the service
already speaks asyncpg, the schema is plain SQL, and a Postgres advisory lock
makes concurrent runs (several replicas starting, a Job and `payments up`)
safe without another binary in the image.

Safe on a live database:

- Every statement runs under a short `lock_timeout`. A migration that cannot
  get its lock at once (a long transaction holds the table) gives up before
  the queue it heads blocks the service's own statements for long, and is
  retried with backoff; a file in a transaction is retried whole.
- A file whose first line is `-- migrate: no-transaction` runs outside a
  transaction, statement by statement (each ends with `;` at the end of a
  line; no function bodies): that is what `CREATE INDEX CONCURRENTLY` needs.
  Its statements must be safe to run again (`IF NOT EXISTS`): a run that
  stopped half way runs the file again. A concurrent index build that failed
  leaves an INVALID index of that name behind, which `IF NOT EXISTS` would
  keep; the runner drops it (concurrently) and builds it again.
- An applied file never changes (its checksum is checked), except for the
  earlier texts listed in SUPERSEDED: the same schema, built more safely.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("payment_svc.migrate")

# An arbitrary constant, the same in every process that migrates.
_LOCK_ID = 0x7061796D656E7473  # "payments"

NO_TRANSACTION = "-- migrate: no-transaction"

# Applied texts that a later text of the same file replaces with the same
# schema: (version, checksum applied, checksum of the text that replaces it).
# 0004 first built its index without CONCURRENTLY (inserts blocked for the
# whole build); databases that applied that text keep it.
SUPERSEDED: frozenset[tuple[str, str, str]] = frozenset(
    {
        (
            "0004_payments_created",
            "b783fbd50014798896d37c5d69c774d2950bfc913e46bb58045f2dc7da7c74c7",
            "fac5c3941d033deeb60adf1e9fae59d481f4c2b7dcac2abc645851a11df5750c",
        ),
    }
)

LOCK_TIMEOUT_SECONDS = 2.0
LOCK_ATTEMPTS = 10
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 10.0

# Errors after which a statement is tried again: it could not get its lock
# in time (or was chosen as a deadlock's victim) and changed nothing.
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
)

_CONCURRENT_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(IF\s+NOT\s+EXISTS\s+)?([\w.\"]+)",
    re.IGNORECASE,
)
_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        lines = self.sql.lstrip().splitlines()
        return not lines or lines[0].strip() != NO_TRANSACTION

    def statements(self) -> list[str]:
        """The statements of a no-transaction file, in order."""
        chunks = _STATEMENT_END.split(self.sql)
        statements = []
        for chunk in chunks:
            code = "\n".join(
                line for line in chunk.splitlines() if not line.strip().startswith("--")
            ).strip()
            if code:
                statements.append(code)
        for statement in statements:
            index = _concurrent_index(statement)
            if index is not None and not index[0]:
                raise ValueError(
                    f"migration {self.version}: {index[1]} must be built IF NOT EXISTS"
                    " (a no-transaction file may run again)"
                )
        return statements


def _concurrent_index(statement: str) -> tuple[bool, str] | None:
    """(has IF NOT EXISTS, index name) of a CREATE INDEX CONCURRENTLY."""
    match = _CONCURRENT_INDEX.match(statement)
    if match is None:
        return None
    return bool(match.group(1)), match.group(2)


def available(folder: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in `folder` (default: the package's), in order."""
    if folder is None:
        folder = resources.files("payment_svc.adapters") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [Migration(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(
    dsn: str,
    *,
    timeout: float = 60.0,
    folder: Traversable | Path | None = None,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    attempts: int = LOCK_ATTEMPTS,
) -> list[str]:
    """Applies what is missing; returns the versions applied now."""
    conn = await asyncpg.connect(
        dsn,
        timeout=timeout,
        # A migration's statements may run long (an index build); the waits
        # for locks are what is bounded, below.
        server_settings={"statement_timeout": "0", "idle_in_transaction_session_timeout": "0"},
    )
    try:
        # Waits for another migrating process, however long it takes.
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(f"SET lock_timeout = '{max(1, round(lock_timeout * 1000))}ms'")
            return await _apply_missing(conn, available(folder), attempts)
        finally:
            await conn.execute("RESET lock_timeout")
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def _apply_missing(
    conn: asyncpg.Connection, migrations: list[Migration], attempts: int
) -> list[str]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    text PRIMARY KEY,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {
        r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
    }
    applied = []
    for m in migrations:
        if m.version in done:
            if done[m.version] != m.checksum and (
                (m.version, done[m.version], m.checksum) not in SUPERSEDED
            ):
                raise RuntimeError(f"migration {m.version} was changed after it was applied")
            continue
        if m.transactional:
            await _retrying(m.version, attempts, functools.partial(_apply_in_transaction, conn, m))
        else:
            for statement in m.statements():
                await _retrying(
                    m.version, attempts, functools.partial(_apply_statement, conn, statement)
                )
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                m.version,
                m.checksum,
            )
        log.info("migration_applied", version=m.version)
        applied.append(m.version)
    return applied


async def _apply_in_transaction(conn: asyncpg.Connection, m: Migration) -> None:
    async with conn.transaction():
        await conn.execute(m.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
            m.version,
            m.checksum,
        )


async def _apply_statement(conn: asyncpg.Connection, statement: str) -> None:
    index = _concurrent_index(statement)
    if index is not None:
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", index[1]
        )
        if valid is False:
            # Left by a concurrent build that failed: IF NOT EXISTS would keep it.
            log.warning("migration_invalid_index_rebuilt", index=index[1])
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index[1]}")
    await conn.execute(statement)


async def _retrying(version: str, attempts: int, step: Callable[[], Awaitable[None]]) -> None:
    delay = _BACKOFF_FIRST
    for attempt in range(1, attempts + 1):
        try:
            await step()
            return
        except _RETRYABLE as exc:
            if attempt == attempts:
                raise RuntimeError(
                    f"migration {version}: no lock after {attempts} attempts ({exc})"
                ) from exc
            pause = delay * random.uniform(0.5, 1.0)
            log.warning(
                "migration_lock_timeout",
                version=version,
                attempt=attempt,
                retry_in_seconds=round(pause, 2),
                error=type(exc).__name__,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, _BACKOFF_MAX)
