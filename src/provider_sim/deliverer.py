"""Webhook delivery: every recorded event POSTed, signed, at least once, with faults.

    ledger event ─ enqueue ─┬─ no URL configured: recorded only
                            └─ one copy (two with webhook_duplicate_rate)
                                 └─ after webhook_delay_ms ─ admit ─┬─ ready queue
                                    (webhook_reorder) reorder window ┘ (shuffled when it closes)
    ready queue ─ `concurrency` workers, one ClientSession (keep-alive) ─ POST
      webhook_drop_rate: the attempt is lost in transit (never reaches the
        receiver) and counts as failed, as a network drop does for the provider
      2xx: delivered; anything else, connection errors and timeouts included: retried
      after an exponential, jittered wait, until `max_attempts`

Duplicate and delay are decided when the event is enqueued, reorder when a copy
is admitted, drop at every attempt (so at 1.0 nothing ever arrives, and below
1.0 the provider's retries get the event through, late). The endpoint (URL,
secret, timeout, schedule) is read at every attempt, so pointing a running sim
at a new URL also redirects pending retries.
`reset()` starts a new generation: what the old one still has in flight is ignored.
A journal (state.py) is told of every delivery record that changes, and `resume()`
sends again what a previous run had not finished (the copies still pending).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp

from provider_sim.faults import Faults
from provider_sim.intents import JsonObject
from provider_sim.signature import signature_header
from provider_sim.webhooks import DeliveryRecord, DeliveryStats, WebhookConfig

# A reorder window closes this long after its first copy arrives, or when this full:
# long enough to hold a burst, short enough that tests stay quick.
REORDER_WINDOW_S: Final = 0.1
REORDER_WINDOW_SIZE: Final = 32
_HEADERS: Final = {
    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    "Accept": "*/*; q=0.5, application/xml",
    "Cache-Control": "no-cache",
}
_CONTENT_TYPE: Final = "application/json; charset=utf-8"
# Told of a delivery record that changed: (event id, record).
DeliveryJournal = Callable[[str, DeliveryRecord], None]


@dataclass(slots=True, eq=False)
class _Delivery:
    """One copy of one event on its way to the endpoint."""

    event_id: str
    record: DeliveryRecord
    body: bytes
    generation: int
    attempts: int = 0


class WebhookDeliverer:
    def __init__(
        self,
        config: WebhookConfig,
        faults: Callable[[], Faults],
        *,
        rng: random.Random,
        journal: DeliveryJournal | None = None,
    ) -> None:
        self.initial_config = config
        self.config = config
        self.stats = DeliveryStats()
        self.records: dict[str, DeliveryRecord] = {}
        self._faults = faults
        self._rng = rng
        self._journal = journal
        self._generation = 0
        self._ready: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._timers: set[asyncio.TimerHandle] = set()
        self._window: list[_Delivery] = []
        self._window_timer: asyncio.TimerHandle | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    # -- life cycle (in the running loop) -------------------------------------------

    async def start(self) -> None:
        size = self.config.concurrency
        connector = aiohttp.TCPConnector(limit=size, limit_per_host=size)
        self._session = aiohttp.ClientSession(connector=connector, headers=_HEADERS)
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-worker-{n}") for n in range(size)
        ]

    async def stop(self) -> None:
        self._cancel_scheduled()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reset(self, *, config: bool = False) -> None:
        """Forget pending deliveries, records and stats; `config`: the start-up endpoint too."""
        self._generation += 1
        self._cancel_scheduled()
        while not self._ready.empty():
            self._ready.get_nowait()
        self.records = {}
        self.stats = DeliveryStats()
        if config:
            self.config = self.initial_config

    # -- commands -------------------------------------------------------------------

    def configure(self, update: object) -> WebhookConfig:
        self.config = self.config.merged(update)
        return self.config

    def enqueue(self, event: JsonObject) -> None:
        """Take a newly recorded event (a ledger subscriber: synchronous, never raises)."""
        record = DeliveryRecord()
        self.records[event["id"]] = record
        if self.config.url is None:
            return
        faults = self._faults()
        copies = 1
        if faults.webhook_duplicate_rate and self._rng.random() < faults.webhook_duplicate_rate:
            copies = 2
            self.stats.duplicated += 1
        self._send(event["id"], record, _payload(event), copies, faults.webhook_delay_ms / 1000)

    def redeliver(self, event: JsonObject, copies: int) -> DeliveryRecord:
        """Send an event again (as Stripe's "resend"), past the faults."""
        record = self.records.setdefault(event["id"], DeliveryRecord())
        self._send(event["id"], record, _payload(event), copies, 0.0)
        return record

    def resume(self, events: Iterable[JsonObject], records: Mapping[str, DeliveryRecord]) -> int:
        """Take back the records of a previous run (events oldest first) and send the
        copies it had not finished again, with a fresh schedule; returns how many."""
        resumed = 0
        for event in events:
            record = records.get(event["id"])
            if record is None:
                continue
            self.records[event["id"]] = record
            body = _payload(event)
            for _ in range(record.copies - record.delivered_copies - record.failed_copies):
                self.stats.pending += 1
                self._admit(_Delivery(event["id"], record, body, self._generation))
                resumed += 1
        return resumed

    # -- internals ------------------------------------------------------------------

    def _send(
        self, event_id: str, record: DeliveryRecord, body: bytes, copies: int, delay_s: float
    ) -> None:
        for _ in range(copies):
            delivery = _Delivery(event_id, record, body, self._generation)
            record.copies += 1
            self.stats.pending += 1
            if delay_s:
                self._later(delay_s, self._admit, delivery)
            else:
                self._admit(delivery)
        if self._journal is not None:
            self._journal(event_id, record)

    def _admit(self, delivery: _Delivery) -> None:
        if not self._faults().webhook_reorder:
            self._ready.put_nowait(delivery)
            return
        self._window.append(delivery)
        if len(self._window) >= REORDER_WINDOW_SIZE:
            self._close_window()
        elif self._window_timer is None:
            loop = asyncio.get_running_loop()
            self._window_timer = loop.call_later(REORDER_WINDOW_S, self._close_window)

    def _close_window(self) -> None:
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        window, self._window = self._window, []
        self._rng.shuffle(window)
        for delivery in window:
            self._ready.put_nowait(delivery)

    def _later(
        self, delay_s: float, callback: Callable[[_Delivery], None], delivery: _Delivery
    ) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            callback(delivery)

        handle = asyncio.get_running_loop().call_later(delay_s, fire)
        self._timers.add(handle)

    def _cancel_scheduled(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        self._window = []

    async def _work(self) -> None:
        while True:
            delivery = await self._ready.get()
            if delivery.generation == self._generation:
                await self._attempt(delivery)

    async def _attempt(self, delivery: _Delivery) -> None:
        config = self.config
        drop_rate = self._faults().webhook_drop_rate
        status: int | None
        error: str | None
        if drop_rate and self._rng.random() < drop_rate:
            status, error = None, "dropped in transit (webhook_drop_rate)"
            delivery.record.dropped = True
            self.stats.dropped += 1
        else:
            status, error = await self._post(config, delivery.body)
        if delivery.generation != self._generation:
            return
        delivery.attempts += 1
        record, stats = delivery.record, self.stats
        record.attempts += 1
        record.last_status, record.last_error = status, error
        stats.attempts += 1
        if self._journal is not None:
            self._journal(delivery.event_id, record)
        if error is None:
            record.delivered_copies += 1
            stats.delivered += 1
            stats.pending -= 1
            return
        stats.failed_attempts += 1
        if delivery.attempts >= config.max_attempts:
            record.failed_copies += 1
            stats.gave_up += 1
            stats.pending -= 1
            return
        delay_s = config.retry_delay_s(delivery.attempts, self._rng)
        self._later(delay_s, self._ready.put_nowait, delivery)

    async def _post(self, config: WebhookConfig, body: bytes) -> tuple[int | None, str | None]:
        """The answer's status and, unless it was a 2xx, what went wrong."""
        if config.url is None:
            return None, "no webhook URL configured"
        if self._session is None:
            return None, "delivery is stopped"
        headers = {
            "Content-Type": _CONTENT_TYPE,
            "Stripe-Signature": signature_header(config.secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=config.timeout_ms / 1000)
        try:
            async with self._session.post(
                config.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                await response.read()
        except TimeoutError:
            return None, f"no answer within {config.timeout_ms} ms"
        # Whatever else goes wrong is one failed attempt; the worker must live on.
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status < 300:
            return response.status, None
        return response.status, f"HTTP {response.status}"


def _payload(event: JsonObject) -> bytes:
    # Stripe counts the endpoints still waiting for the event; here there is one.
    return json.dumps({**event, "pending_webhooks": 1}, separators=(",", ":")).encode()
