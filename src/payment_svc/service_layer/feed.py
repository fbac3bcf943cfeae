"""The change feed's use cases (SPEC §3b): pages, streams, the sequencer and
retention.

    writer's commit ──NOTICE──> Sequencer.kick()      (the writing process)
    Sequencer: numbers committed updates ──NOTIFY──> every process's listener
    listener ──> FeedBell.ring(clients) ──> the streams of those clients read
                                            their next page from the database

One database listener per process wakes any number of streams (the bell is
in process); a stream reads its next page only once the previous one was
sent, so a slow consumer holds one page, never a queue. Every wait is
bounded (`idle_check`), so a lost notification delays, never loses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from payment_svc.domain import feed
from payment_svc.domain.errors import StoreUnavailable
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.ports import FeedRepository, Sequenced

log = structlog.get_logger("payment_svc.feed")


class FeedBell:
    """Wakes the streams of a client, in this process."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._rung: dict[str, int] = {}
        self._rung_all = 0

    def rung(self, client_id: str) -> int:
        """A ring count to pass to wait(): rings after it are not missed."""
        return self._rung_all + self._rung.get(client_id, 0)

    def ring(self, client_ids: Iterable[str] | None) -> None:
        """Wakes the streams of these clients (None: of every client)."""
        if client_ids is None:
            self._rung_all += 1
        for client_id in list(self._events) if client_ids is None else client_ids:
            if client_ids is not None:
                self._rung[client_id] = self._rung.get(client_id, 0) + 1
            event = self._events.pop(client_id, None)
            if event is not None:
                event.set()

    async def wait(self, client_id: str, seen: int, timeout: float) -> None:
        if self.rung(client_id) != seen:
            return
        event = self._events.setdefault(client_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


@dataclass(frozen=True)
class UpdatesPage:
    updates: list[feed.PaymentUpdate]
    next_cursor: str


class FeedService:
    def __init__(
        self,
        repo: FeedRepository,
        cursors: FeedCursors,
        bell: FeedBell,
        *,
        idle_check: float = 5.0,
        stream_page: int = 100,
        upkeep: FeedRepository | None = None,
    ) -> None:
        self._repo = repo
        # Retention's repository (its own connections in main: background
        # work never takes a connection a call is waiting for).
        self._upkeep = upkeep or repo
        self._cursors = cursors
        self._bell = bell
        self._idle_check = idle_check
        self._stream_page = stream_page
        # Reads in flight, shared: the streams of one client woken by one
        # ring are mostly at the same cursor, and read their page once.
        self._reads: dict[tuple[str, int, int], asyncio.Future[feed.FeedPage]] = {}
        self._closing = False

    def close(self) -> None:
        """Ends every stream (shutdown): each finishes the update it is
        sending and returns, so the drain does not wait for streams that
        never end by themselves; their callers resume on another replica."""
        self._closing = True
        self._bell.ring(None)

    def cursor(self, client_id: str, update: feed.PaymentUpdate) -> str:
        return self._cursors.encode(client_id, update.position)

    async def page(self, client_id: str, after_cursor: str, page_size: int) -> UpdatesPage:
        limit = feed.page_size(page_size)
        after = self._cursors.decode(client_id, after_cursor)
        page = await self._repo.page(client_id, after, limit)
        feed.check_cursor(after, page.horizon)
        if not page.updates:
            return UpdatesPage([], after_cursor)
        return UpdatesPage(page.updates, self.cursor(client_id, page.updates[-1]))

    async def watch(
        self, client_id: str, after_cursor: str
    ) -> AsyncIterator[list[feed.PaymentUpdate]]:
        """Pages of the client's updates after the cursor, then of new ones as
        they are numbered; the next page is read when the caller asks for it
        (after it sent the previous one)."""
        after = self._cursors.decode(client_id, after_cursor)
        while not self._closing:
            seen = self._bell.rung(client_id)
            page = await self._shared_read(client_id, after, seen)
            feed.check_cursor(after, page.horizon)
            if page.updates:
                after = page.updates[-1].position
                yield page.updates
                if len(page.updates) == self._stream_page:
                    continue
            await self._bell.wait(client_id, seen, self._idle_check)

    async def _shared_read(self, client_id: str, after: int, seen: int) -> feed.FeedPage:
        """The page after `after`, read once for every stream that asks for
        it before the read ends. Shared only with streams that saw the same
        ring count: such a read began after the ring each of them is
        answering, so it holds whatever that ring announced."""
        key = (client_id, after, seen)
        read = self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._repo.page(client_id, after, self._stream_page))
            self._reads[key] = read
            read.add_done_callback(lambda _: self._reads.pop(key, None))
        # A stream that goes away does not cancel the others' read.
        return await asyncio.shield(read)

    async def expire(self, retention_seconds: float, batch: int = 500) -> int:
        """Deletes updates older than the retention, a batch per
        transaction (short ones: writers never wait long)."""
        before = datetime.now(UTC) - timedelta(seconds=retention_seconds)
        total = 0
        while True:
            deleted = await self._upkeep.expire(before, batch)
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(0)  # let other work in between batches


class Sequencer:
    """Numbers committed updates. Kicked after a commit that wrote updates
    (adapters/db.py hears the trigger's NOTICE), and every `safety_every`
    seconds whatever happened (writers outside this process, a lost kick).
    Runs coalesce: at most one runs and one more is wanted, and a run starts
    at least `gap` seconds after the previous one ended: the commits of the
    gap are numbered, announced and sent to the streams together (one page
    a stream, not one a commit: under load a stream's messages, not its
    updates, are what a delivery costs). `gap` adds at most that much to the
    delivery lag."""

    def __init__(
        self,
        repo: FeedRepository,
        *,
        on_sequenced: Callable[[Sequenced], None] = lambda _: None,
        batch: int = 5000,
        gap: float = 0.0,
    ) -> None:
        self._repo = repo
        self._on_sequenced = on_sequenced
        self._batch = batch
        self._gap = gap
        self._wanted = asyncio.Event()

    def kick(self) -> None:
        self._wanted.set()

    async def run_once(self) -> int:
        """One or more runs until nothing is left; returns how many updates
        got a position."""
        total = 0
        while True:
            done = await self._repo.sequence(self._batch)
            if done.count:
                self._on_sequenced(done)
            total += done.count
            if done.count < self._batch:
                return total

    async def run_forever(self, safety_every: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(safety_every):
                    await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.run_once()
                if self._gap:
                    await asyncio.sleep(self._gap)
            except StoreUnavailable:
                await asyncio.sleep(min(safety_every, 0.5))  # the health watcher says why
                self._wanted.set()
            except Exception:
                log.exception("feed_sequencer_failed")
                await asyncio.sleep(safety_every)
