"""The asyncpg pool, with every call bounded in time.

asyncpg's own timeouts do not cover everything a pool does: a transaction
cancelled by a timeout tries to ROLLBACK on the same socket, and against a
paused (SIGSTOPped) or black-holed server that waits forever. So each call
has a watchdog timer: past the deadline the connection is terminated (the
socket closed at once), which ends any await on it, and the caller gets
StoreUnavailable. The pool replaces the connection. A timer rather than a
task per call: this is the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import asyncpg
import structlog

from payment_svc.domain.cards import redact_card_numbers, redact_value
from payment_svc.domain.errors import StoreUnavailable

T = TypeVar("T")
log = structlog.get_logger("payment_svc.db")

# Errors that mean "the database is not reachable or not usable right now".
# Anything else (a constraint, a syntax error) is a bug or a domain case and
# is left to the caller.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.QueryCanceledError,
    ConnectionError,
)
_TIMEOUT_OR_UNAVAILABLE: tuple[type[BaseException], ...] = (TimeoutError, *UNAVAILABLE_ERRORS)

_PROBE_FAILURES: tuple[type[BaseException], ...] = (*_TIMEOUT_OR_UNAVAILABLE, asyncpg.PostgresError)

# What store functions receive: a pooled connection.
Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the default reset query (one round trip per call):
    our pooled connections never change session state (no SET, LISTEN or
    session advisory locks; migrations use a connection of their own), and
    asyncpg still rolls back a transaction left open before calling this."""


def _store_json(value: object) -> str:
    return json.dumps(redact_value(value))


async def _init_connection(conn: asyncpg.Connection) -> None:
    # The one choke point before anything is stored: every text and jsonb
    # value sent to Postgres goes through the card-number redactor (jsonb
    # structurally, so it stays valid JSON). Whatever a caller or the
    # provider put in an id, a type, a failure message or a detail, no card
    # number reaches a table. Text sent to be cast to jsonb must already be
    # redacted structurally (parse_event does): the text rule would find
    # nothing left in it to change.
    await conn.set_type_codec(
        "text", encoder=redact_card_numbers, decoder=str, schema="pg_catalog", format="text"
    )
    await conn.set_type_codec("jsonb", encoder=_store_json, decoder=json.loads, schema="pg_catalog")


class Database:
    def __init__(self, dsn: str, *, timeout: float, min_size: int = 0, max_size: int = 10) -> None:
        self._dsn = dsn
        self.timeout = timeout
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._probe: asyncpg.Connection | None = None
        self.healthy = False
        self._listeners: list[Callable[[bool], None]] = []

    def on_health_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            log.warning("database_health_changed", healthy=healthy)
            for listener in self._listeners:
                listener(healthy)

    async def open(self) -> None:
        # min_size=0 by default: the service starts, and reports NOT_SERVING,
        # even when the database is down; connections come as calls need them.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            init=_init_connection,
            reset=_keep_session,
            timeout=self.timeout,  # connection establishment
            command_timeout=self.timeout,
        )

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.terminate()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=self.timeout)
            except _TIMEOUT_OR_UNAVAILABLE:
                self._pool.terminate()

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Runs fn on a pooled connection within the timeout, or raises
        StoreUnavailable. fn may open a transaction; it must not call out."""
        if self._pool is None:
            raise StoreUnavailable("database pool not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            conn = await self._pool.acquire(timeout=self.timeout)
        except TimeoutError as exc:
            # Every connection busy (load) or connecting hangs (outage): the
            # probe tells which; the caller may retry either way.
            raise StoreUnavailable("no database connection within the timeout") from exc
        except UNAVAILABLE_ERRORS as exc:
            self._set_healthy(False)
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        # The watchdog: past the deadline the socket is closed, which ends
        # any await on it at once (a ROLLBACK on the way out included).
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            conn.terminate()

        watchdog = loop.call_at(deadline, expire)
        try:
            return await fn(conn)
        except asyncio.CancelledError:
            # Our caller went away (RPC cancelled): do not leave the
            # connection mid-statement.
            conn.terminate()
            raise
        except UNAVAILABLE_ERRORS as exc:
            if timed_out:
                raise StoreUnavailable("database call timed out") from exc
            self._set_healthy(False)
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        except Exception as exc:
            if timed_out:  # whatever the closed socket made fn raise
                raise StoreUnavailable("database call timed out") from exc
            raise
        finally:
            watchdog.cancel()
            # The pool resets the connection on release, and terminates it
            # itself when that fails; a failed reset must not turn a call
            # that already committed into an error. A connection the server
            # closed has been handed back already (InternalClientError).
            with contextlib.suppress(*_TIMEOUT_OR_UNAVAILABLE, asyncpg.InternalClientError):
                await self._pool.release(conn, timeout=self.timeout)

    async def ping(self) -> bool:
        """Health is decided here, on a connection of its own: a pool busy
        under load is not an outage, and must not take the service out of
        rotation. A hung probe is bounded like any call."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._probe is None or self._probe.is_closed():
                    self._probe = await asyncpg.connect(self._dsn, timeout=self.timeout)
                await self._probe.fetchval("SELECT 1")
        except _PROBE_FAILURES:
            if self._probe is not None:
                self._probe.terminate()
                self._probe = None
            self._set_healthy(False)
            return False
        self._set_healthy(True)
        return True
