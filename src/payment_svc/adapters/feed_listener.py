"""The one LISTEN connection of a process: the sequencer's NOTIFY (from any
process on the database) wakes this process's streams.

A connection of its own (pooled connections never LISTEN). After a
(re)connect every stream is woken, since news may have been missed while it
was down; a connection that stops answering is replaced (a ping every
`ping_every` seconds, bounded by the database timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from payment_svc.adapters.db import UNAVAILABLE_ERRORS
from payment_svc.adapters.feed_store import CHANNEL

log = structlog.get_logger("payment_svc.feed")

_LOST: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, TimeoutError, asyncpg.PostgresError)

News = Callable[[frozenset[str] | None], None]


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


class FeedListener:
    def __init__(
        self,
        dsn: str,
        *,
        tag: str,
        on_news: News,
        timeout: float,
        on_connected: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self._dsn = dsn
        self._tag = tag
        self._on_news = on_news
        self._timeout = timeout
        self._on_connected = on_connected
        self.connected = False

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        tag, _, clients = payload.partition("|")
        if tag == self._tag:
            return  # this process's own sequencer rang its streams already
        self._on_news(None if clients == "*" else frozenset(clients.split(",")))

    async def run_forever(self, *, retry_every: float = 1.0, ping_every: float = 5.0) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
                closed = asyncio.Event()
                conn.add_termination_listener(_setter(closed))
                await conn.add_listener(CHANNEL, self._heard)
                self.connected = True
                self._on_connected(True)
                self._on_news(None)
                while not closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(ping_every):
                            await closed.wait()
                    if not closed.is_set():
                        async with asyncio.timeout(self._timeout):
                            await conn.fetchval("SELECT 1")
            except _LOST as exc:
                log.warning("feed_listener_lost", error=type(exc).__name__)
            finally:
                if self.connected:
                    self._on_connected(False)
                self.connected = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(retry_every)
