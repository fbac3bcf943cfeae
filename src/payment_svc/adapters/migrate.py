"""Schema migrations: numbered SQL files applied in order, once each.

A small runner rather than a separate tool (dbmate, alembic): the service
already speaks asyncpg, the schema is plain SQL, and a Postgres advisory lock
makes concurrent runs (several replicas starting, a Job and `payments up`)
safe without another binary in the image. Each file runs in its own
transaction together with its bookkeeping row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

# An arbitrary constant, the same in every process that migrates.
_LOCK_ID = 0x7061796D656E7473  # "payments"


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    folder = resources.files("payment_svc.adapters") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [Migration(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(dsn: str, *, timeout: float = 60.0) -> list[str]:
    """Applies what is missing; returns the versions applied now."""
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            return await _apply_missing(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def _apply_missing(conn: asyncpg.Connection) -> list[str]:
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
    for m in available():
        if m.version in done:
            if done[m.version] != m.checksum:
                raise RuntimeError(f"migration {m.version} was changed after it was applied")
            continue
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                m.version,
                m.checksum,
            )
        applied.append(m.version)
    return applied
