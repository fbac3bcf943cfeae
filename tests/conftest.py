"""Session fixtures: a fresh database, and the stack's real processes.

The database: DATABASE_URL's server when it is set (a new database is created
for the session and dropped after), otherwise an embedded Postgres in a
temporary directory. The processes (provider-sim, payment-svc) run from their
console scripts on free ports, with logs in files the tests can read.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest
from hypothesis import settings as hypothesis_settings

from payment_svc.adapters.migrate import migrate
from payments_dev.stack import Stack, StackConfig, wait_serving
from tests.support import SimControl, embedded_postgres

# Hypothesis: in CI (CI=true) derandomized, so that the examples follow from
# the test alone and a CI failure replays on any machine (no example
# database to depend on); elsewhere random, with the reproduction blob
# printed on failure. HYPOTHESIS_PROFILE=ci|dev chooses either by hand.
# (Hypothesis loads a "ci" profile of its own when it sees CI in the
# environment: both are built on its "default" so neither inherits that one.)
_BASE = hypothesis_settings.get_profile("default")
hypothesis_settings.register_profile("ci", _BASE, derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", _BASE, print_blob=True)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("true", "1") else "dev")
)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN of a Postgres server the session may create databases on."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    pg = embedded_postgres()
    pg.start()
    try:
        yield pg.dsn
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
async def database_url(pg_server: str) -> AsyncIterator[str]:
    name = f"payments_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(pg_server, name)
    await migrate(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def stack_config(database_url: str, log_dir: Path, **env: str) -> StackConfig:
    return StackConfig.on_free_ports(
        database_url=database_url,
        log_dir=log_dir,
        # The webhook tests run their own dispatchers (short schedules, killed).
        with_dispatcher=False,
        extra_env={
            "PROVIDER_TIMEOUT_SECONDS": "1.5",
            "LOG_LEVEL": "INFO",
            # The session's reconciler stays idle: tests run passes explicitly
            # (`reconciler --once`), so nothing reconciles under their feet.
            "RECONCILER_SWEEP_SECONDS": "86400",
            "RECONCILER_CATCH_UP_SECONDS": "86400",
            "RECONCILER_SETTLEMENT_SECONDS": "86400",
            **env,
        },
    )


@pytest.fixture(scope="session")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    s = Stack(stack_config(database_url, tmp_path_factory.mktemp("logs")))
    s.start()
    try:
        await wait_serving(s.grpc_target)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def sim(stack: Stack) -> AsyncIterator[SimControl]:
    async with aiohttp.ClientSession(stack.sim_url) as http:
        control = SimControl(http)
        yield control
        await control.clear_faults()


@pytest.fixture
async def spawn_payment_svc(
    stack: Stack, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """Starts an extra payment-svc process (own ports, own env) beside the
    session's, sharing its simulator and, unless told otherwise, its database."""
    started: list[Stack] = []

    async def spawn(database_url: str | None = None, serving: bool = True, **env: str) -> Stack:
        config = stack_config(database_url or stack.database_url, tmp_path, **env)
        config.sim_port = stack.config.sim_port
        extra = Stack(config)
        started.append(extra)
        if database_url:
            extra.start_database()  # migrations
        extra.start_payment_svc()
        if serving:
            await wait_serving(extra.grpc_target)
        return extra

    yield spawn
    for s in started:
        s.stop()
