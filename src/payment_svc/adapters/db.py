"""The asyncpg pool, with every call bounded in time.

asyncpg's own timeouts do not cover everything a pool does: a transaction
cancelled by a timeout tries to ROLLBACK on the same socket, and against a
paused (SIGSTOPped) or black-holed server that waits forever. So one deadline
is set when a call asks for a connection and covers all of it: the wait for a
pooled connection, a new connection's connect and set-up, the statements, and
the release. Past it the connection is terminated (the socket closed at once),
which ends any await on it, and the caller gets StoreUnavailable; a terminated
connection is never handed back to the pool as usable, the pool connects a
new one on demand. A timer rather than a task per call: this is the hot path.

The server bounds its side too: every pooled connection carries
statement_timeout and lock_timeout (a little under the call's timeout, so the
server usually answers first with an error and the connection survives) and
idle_in_transaction_session_timeout (the call's timeout), so that a backend
whose client gave up neither runs on nor keeps its locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
import structlog

from payment_svc.domain.errors import StoreUnavailable
from payments_kit.cards import redact_card_numbers, redact_value

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
    ConnectionError,
)
# The server's own bounds (statement_timeout, lock_timeout,
# idle_in_transaction_session_timeout) and asyncpg's: a slow call, not an
# outage, so they do not touch health.
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.IdleInTransactionSessionTimeoutError,
)
_TIMEOUT_OR_UNAVAILABLE: tuple[type[BaseException], ...] = (*TIMEOUT_ERRORS, *UNAVAILABLE_ERRORS)

# What the change feed's trigger (migration 0011) says, once per transaction
# that wrote updates: heard on the connection that committed them.
UPDATES_WRITTEN_NOTICE = "payment_updates_written"

_PROBE_FAILURES: tuple[type[BaseException], ...] = (*_TIMEOUT_OR_UNAVAILABLE, asyncpg.PostgresError)

# What store functions receive: a pooled connection.
Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


def server_settings(timeout: float) -> dict[str, str]:
    """The server-side bounds of a pooled connection, derived from the call
    timeout: statements and lock waits end a little before the call's own
    deadline (the server answers with an error, the connection stays good),
    and a transaction left idle longer than a whole call (its client froze or
    vanished) is ended by the server, releasing its locks."""
    call_ms = max(1, round(timeout * 1000))
    statement_ms = max(1, round(call_ms * 0.8))
    return {
        "statement_timeout": f"{statement_ms}ms",
        "lock_timeout": f"{statement_ms}ms",
        "idle_in_transaction_session_timeout": f"{call_ms}ms",
        # The change feed's trigger tells the committing connection with a
        # NOTICE (UPDATES_WRITTEN_NOTICE): a server configured to send fewer
        # messages would leave the sequencer to its periodic run.
        "client_min_messages": "notice",
    }


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


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """The pool's connect: asyncpg's, then our set-up. Not the pool's `init`
    hook: when that is cancelled (the call's deadline) asyncpg closes the new
    connection politely, which waits for a server that may be frozen; here a
    connection that fails or is cancelled half set up is terminated."""
    conn: asyncpg.Connection = await asyncpg.connect(*args, **kwargs)
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


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
        self._on_updates_written: Callable[[], None] | None = None

    def on_updates_written(self, hook: Callable[[], None]) -> None:
        """Calls `hook` after a call whose transaction committed change-feed
        updates (the sequencer's kick): the trigger's NOTICE arrives with
        the commit, on the committing connection, so this costs no round
        trip and none of NOTIFY's database-wide lock at every commit."""
        self._on_updates_written = hook

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
        # No command_timeout: the deadline in run() bounds every statement,
        # and asyncpg's would send a cancel request over a new connection to
        # a server that may not answer.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            connect=_connect,
            reset=_keep_session,
            timeout=self.timeout,  # connection establishment
            server_settings=server_settings(self.timeout),
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
        """Runs fn on a pooled connection within the timeout, counted from
        now (the wait for a connection included), or raises StoreUnavailable.
        fn may open a transaction; it must not call out."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("database pool not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            # A timeout of our own around it: asyncpg's would wrap the
            # acquire in a task of its own (asyncio.wait_for), on every call.
            async with asyncio.timeout_at(deadline):
                conn = await pool.acquire()
        except TIMEOUT_ERRORS as exc:
            # Every connection busy (load) or connecting hangs (outage): the
            # probe tells which; the caller may retry either way.
            raise StoreUnavailable("no database connection within the timeout") from exc
        except UNAVAILABLE_ERRORS as exc:
            self._set_healthy(False)
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        # The watchdog, on the same deadline: past it the socket is closed,
        # which ends any await on it at once (a ROLLBACK on the way out
        # included), and the pool discards the connection.
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            conn.terminate()

        watchdog = loop.call_at(deadline, expire)
        # Set by the trigger's NOTICE (delivered before the call returns).
        heard: list[bool] = []

        def hear(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
            if message.message == UPDATES_WRITTEN_NOTICE:
                heard.append(True)

        hook = self._on_updates_written
        if hook is not None:
            conn.add_log_listener(hear)
        try:
            return await fn(conn)
        except asyncio.CancelledError:
            # Our caller went away (RPC cancelled): do not leave the
            # connection mid-statement.
            conn.terminate()
            raise
        except TIMEOUT_ERRORS as exc:
            raise StoreUnavailable("database call timed out") from exc
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
            if hook is not None:
                # A terminated connection was handed back already: its
                # listeners went with it.
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.remove_log_listener(hear)
                if heard:
                    hook()
            # Within what is left of the deadline: the pool rolls back a
            # transaction left open and terminates the connection itself when
            # that does not finish in time. A failed release must not turn a
            # call that already committed into an error. A connection the
            # server closed has been handed back already (InternalClientError).
            left = max(deadline - loop.time(), 0.001)
            with contextlib.suppress(*_TIMEOUT_OR_UNAVAILABLE, asyncpg.InternalClientError):
                await pool.release(conn, timeout=left)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Conn]:
        """run() for a block rather than a function (the unit of work's): a
        pooled connection, one deadline from now for all of it, the same
        errors. run() stays a plain function: it is the hot path."""
        result: list[Conn] = []
        entered = asyncio.Event()
        leave = asyncio.get_running_loop().create_future()

        async def hold(conn: Conn) -> None:
            result.append(conn)
            entered.set()
            await leave

        # Simple and exact, where copying run()'s bounds would drift from
        # them: the block's statements run while run(hold) holds the
        # connection; run()'s deadline and watchdog cover them.
        task = asyncio.ensure_future(self.run(hold))
        waiter = asyncio.ensure_future(entered.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Our caller went away before the block began: give the
            # connection back (run() terminates it if it was handed over).
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if not result:
            await task  # raises run()'s error (StoreUnavailable)
        try:
            yield result[0]
        except BaseException as exc:
            leave.set_exception(exc)
            try:
                await task
            except BaseException as translated:
                if translated is exc:
                    raise
                raise translated from exc
            raise
        else:
            leave.set_result(None)
            await task

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
