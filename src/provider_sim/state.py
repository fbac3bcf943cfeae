"""The simulator's books on disk, when it is given a state location (`--state PATH`).

    loop thread                                   writer thread (one)
      ledger, idempotency, deliverer
        └─ note what changed (by reference) ──┐
      a response is sent only after           ├─ flush: serialise, then one SQLite
        `durable()`: what it saw is on disk ◄─┘   transaction (WAL, synchronous=FULL)
    start: `open()` loads everything back: intents (their charges), refunds (with
      their status),
      disputes, events, stored idempotent responses still within retention,
      and the delivery records of events still on their way.

Group commit: what is noted while one transaction is being written goes into the
next, so concurrent requests share an fsync. A request notes all its changes
without awaiting in between, so a transaction holds all of a request or none.
Delivery progress is written the same way but waited for by nobody: lost at a
SIGKILL, it makes the event be sent again (at least once, as Stripe does).
Without a state location there is no store: nothing is noted, nothing waits.
The file is held with an exclusive lock: one simulator per state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from provider_sim.charges import Dispute
from provider_sim.idempotency import Fingerprint, StoredKey, StoredResponse
from provider_sim.intents import IntentStatus, JsonObject, PaymentError, PaymentIntent
from provider_sim.refunds import Refund
from provider_sim.webhooks import DeliveryRecord

log = structlog.get_logger("provider_sim")

SCHEMA_VERSION: Final = 1
_TABLES: Final = ("intents", "refunds", "disputes", "events", "idempotency_keys", "deliveries")
_SCHEMA: Final = """
CREATE TABLE intents (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE refunds (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE disputes (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE events (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, completed_at REAL NOT NULL,
    PRIMARY KEY (scope, key));
CREATE INDEX idempotency_keys_completed_at ON idempotency_keys (completed_at);
CREATE TABLE deliveries (event_id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


class StateError(Exception):
    """The state file cannot be opened or written; retrying the same request does not help
    until the file (disk, permissions, another simulator holding it) is fixed."""


@dataclass(slots=True)
class Snapshot:
    """Everything a previous run left, oldest first."""

    intents: list[PaymentIntent] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    disputes: list[Dispute] = field(default_factory=list)
    events: list[JsonObject] = field(default_factory=list)
    keys: list[StoredKey] = field(default_factory=list)
    deliveries: dict[str, DeliveryRecord] = field(default_factory=dict)


@dataclass(slots=True)
class _Changes:
    """What was noted since the last flush, by reference (serialised at flush time)."""

    reset: bool = False
    intents: dict[str, PaymentIntent] = field(default_factory=dict)
    # By id: a refund noted again (its status changed) is written once, as it is now.
    refunds: dict[str, Refund] = field(default_factory=dict)
    disputes: list[Dispute] = field(default_factory=list)
    events: list[JsonObject] = field(default_factory=list)
    keys: dict[tuple[str, str], tuple[Fingerprint, StoredResponse, float]] = field(
        default_factory=dict
    )
    deliveries: dict[str, DeliveryRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rows:
    reset: bool
    intents: list[tuple[str, int, str]]
    refunds: list[tuple[str, str]]
    disputes: list[tuple[str, str]]
    events: list[tuple[str, str]]
    keys: list[tuple[str, str, str, int, bytes, float]]
    deliveries: list[tuple[str, str]]
    expired_before: float


class StateStore:
    def __init__(
        self, path: Path, *, retention_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._retention_s = retention_s
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "provider-sim-state")
        self._changes = _Changes()
        # Changes are numbered as noted; everything up to `_durable_upto` is on disk.
        self._noted = 0
        self._durable_upto = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._failure: StateError | None = None
        self._closing = False

    # -- life cycle (in the running loop) -------------------------------------------

    async def open(self) -> Snapshot:
        """Open (or create) the file, take its lock, load it, and start writing."""
        loop = asyncio.get_running_loop()
        snapshot = await loop.run_in_executor(self._writer, self._open)
        self._wake = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_forever(), name="provider-sim-state")
        return snapshot

    async def close(self) -> None:
        """Write what is left, then release the file."""
        if self._flusher is not None and self._wake is not None:
            self._closing = True
            self._wake.set()
            await self._flusher
            self._flusher = None
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._db.close)
            self._db = None
        self._writer.shutdown()

    async def durable(self) -> None:
        """Returns once everything noted so far is on disk (at once when it is)."""
        if self._failure is not None:
            raise self._failure
        target = self._noted
        if self._durable_upto >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    # -- noting changes (loop thread; synchronous, never raises) ------------------------

    def intent(self, intent: PaymentIntent) -> None:
        self._changes.intents[intent.id] = intent
        self._noted_one()

    def refund(self, refund: Refund) -> None:
        self._changes.refunds[refund.id] = refund
        self._noted_one()

    def dispute(self, dispute: Dispute) -> None:
        self._changes.disputes.append(dispute)
        self._noted_one()

    def event(self, event: JsonObject) -> None:
        self._changes.events.append(event)
        self._noted_one()

    def key(
        self, slot: tuple[str, str], fingerprint: Fingerprint, response: StoredResponse
    ) -> None:
        self._changes.keys[slot] = (fingerprint, response, self._clock())
        self._noted_one()

    def delivery(self, event_id: str, record: DeliveryRecord) -> None:
        self._changes.deliveries[event_id] = record
        self._noted_one()

    def reset(self) -> None:
        """Forget everything on disk too (with the next flush)."""
        self._changes = _Changes(reset=True)
        self._noted_one()

    def _noted_one(self) -> None:
        self._noted += 1
        if self._wake is not None:
            self._wake.set()

    # -- writing --------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while self._failure is None and not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
        if self._failure is None:
            await self._flush()  # what was noted during the last one

    async def _flush(self) -> None:
        upto = self._noted
        if self._durable_upto >= upto:
            return
        changes, self._changes = self._changes, _Changes()
        rows = _rows(changes, self._clock() - self._retention_s)
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._write, rows)
        except (sqlite3.Error, OSError) as exc:
            self._failure = StateError(f"cannot write the state file {self.path}: {exc}")
            log.error("provider_sim.state_write_failed", path=str(self.path), error=str(exc))
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(self._failure)
            self._waiters = []
            return
        self._durable_upto = upto
        waiting = []
        for target, future in self._waiters:
            if target <= upto:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    # -- SQLite (writer thread only) ------------------------------------------------

    def _open(self) -> Snapshot:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # timeout=0: a file held by another simulator is an error, not a wait.
            db = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the state file {self.path}: {exc}") from None
        try:
            # Exclusive before WAL: the lock is held until we close (or die), and
            # the WAL index lives in our memory instead of a shared -shm file.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsync'd) before it returns.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has state version {version}; this provider-sim reads "
                    f"{SCHEMA_VERSION} (start it with a new --state)"
                )
            db.execute("COMMIT")
            snapshot = _load(db, self._clock() - self._retention_s)
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc):
                raise StateError(
                    f"{self.path} is in use by another provider-sim (one simulator per state)"
                ) from None
            raise StateError(f"cannot use the state file {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StateError(f"{self.path} is not a provider-sim state file: {exc}") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        return snapshot

    def _write(self, rows: _Rows) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            if rows.reset:
                for table in _TABLES:
                    db.execute(f"DELETE FROM {table}")  # our own table names
            db.executemany(
                "INSERT INTO intents (id, seq, body) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                rows.intents,
            )
            # A refund's status changes (pending -> succeeded | failed): upsert,
            # which keeps its rowid, so refunds load back in creation order.
            db.executemany(
                "INSERT INTO refunds (id, body) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                rows.refunds,
            )
            db.executemany("INSERT INTO disputes (id, body) VALUES (?, ?)", rows.disputes)
            db.executemany("INSERT INTO events (id, body) VALUES (?, ?)", rows.events)
            db.executemany(
                "INSERT OR REPLACE INTO idempotency_keys "
                "(scope, key, fingerprint, status, body, completed_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows.keys,
            )
            db.execute(
                "DELETE FROM idempotency_keys WHERE completed_at < ?", (rows.expired_before,)
            )
            db.executemany(
                "INSERT OR REPLACE INTO deliveries (event_id, body) VALUES (?, ?)", rows.deliveries
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _rows(changes: _Changes, expired_before: float) -> _Rows:
    return _Rows(
        reset=changes.reset,
        intents=[(i.id, i.seq, _dumps(intent_state(i))) for i in changes.intents.values()],
        refunds=[(r.id, _dumps(_fields(r, _REFUND_FIELDS))) for r in changes.refunds.values()],
        disputes=[(d.id, _dumps(_fields(d, _DISPUTE_FIELDS))) for d in changes.disputes],
        events=[(e["id"], _dumps(e)) for e in changes.events],
        keys=[
            (scope, key, _dumps(fingerprint), response.status, response.body, completed_at)
            for (scope, key), (fingerprint, response, completed_at) in changes.keys.items()
        ],
        deliveries=[
            (event_id, _dumps(_fields(record, _DELIVERY_FIELDS)))
            for event_id, record in changes.deliveries.items()
        ],
        expired_before=expired_before,
    )


def _load(db: sqlite3.Connection, expired_before: float) -> Snapshot:
    def bodies(query: str, *args: object) -> list[Any]:
        return [json.loads(body) for (body,) in db.execute(query, args)]

    now = time.time()
    keys = [
        StoredKey(
            slot=(scope, key),
            fingerprint=_fingerprint(json.loads(fingerprint)),
            response=StoredResponse(status, bytes(body)),
            age_s=max(0.0, now - completed_at),
        )
        for scope, key, fingerprint, status, body, completed_at in db.execute(
            "SELECT scope, key, fingerprint, status, body, completed_at FROM idempotency_keys "
            "WHERE completed_at >= ? ORDER BY completed_at",
            (expired_before,),
        )
    ]
    return Snapshot(
        intents=[intent_from_state(s) for s in bodies("SELECT body FROM intents ORDER BY seq")],
        refunds=[Refund(**s) for s in bodies("SELECT body FROM refunds ORDER BY rowid")],
        disputes=[Dispute(**s) for s in bodies("SELECT body FROM disputes ORDER BY rowid")],
        events=bodies("SELECT body FROM events ORDER BY position"),
        keys=keys,
        deliveries={
            event_id: DeliveryRecord(**json.loads(body))
            for event_id, body in db.execute("SELECT event_id, body FROM deliveries")
        },
    )


def intent_state(intent: PaymentIntent) -> JsonObject:
    """Every field of the intent (more than its API JSON shows), as JSON values."""
    state = _fields(intent, _INTENT_FIELDS)
    state["status"] = intent.status.value
    error = intent.last_payment_error
    state["last_payment_error"] = None if error is None else _fields(error, _ERROR_FIELDS)
    return state


def intent_from_state(state: JsonObject) -> PaymentIntent:
    fields = dict(state)
    error = fields.pop("last_payment_error")
    return PaymentIntent(
        **fields
        | {
            "status": IntentStatus(fields["status"]),
            "last_payment_error": None if error is None else PaymentError(**error),
        }
    )


def _fields(obj: object, names: tuple[str, ...]) -> JsonObject:
    # Shallow, unlike dataclasses.asdict (which deep-copies): serialised at once.
    return {name: getattr(obj, name) for name in names}


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_INTENT_FIELDS: Final = _names(PaymentIntent)
_ERROR_FIELDS: Final = _names(PaymentError)
_REFUND_FIELDS: Final = _names(Refund)
_DISPUTE_FIELDS: Final = _names(Dispute)
_DELIVERY_FIELDS: Final = _names(DeliveryRecord)


def _fingerprint(raw: list[Any]) -> Fingerprint:
    method, pairs = raw
    return (method, tuple((name, value) for name, value in pairs))


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
