"""Stripe's idempotency layer: one stored response per (API key, Idempotency-Key).

    claim(scope, key, fingerprint)
      ├─ Reservation  first use: execute, then complete() (stored) or release() (not)
      ├─ Replay       a stored response for the same parameters: send it again
      ├─ Mismatch     the key was first used with other parameters
      └─ InFlight     the first request is still executing: wait(), then claim again

Only responses from requests that executed are stored (successes and card
declines), as Stripe does; validation errors and injected server errors release
the key so a retry can run. No I/O; the only asyncio use is waiting for the
request that holds a key. A journal (state.py) is told of every stored response,
and `restore()` takes back those of a previous run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Fingerprint = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


# Told of every response stored: (slot, fingerprint, response).
KeyJournal = Callable[[tuple[str, str], Fingerprint, StoredResponse], None]


@dataclass(slots=True, eq=False)
class _Record:
    fingerprint: Fingerprint
    created_at: float
    response: StoredResponse | None = None
    # Created only when a second request has to wait for this one.
    done: asyncio.Event | None = None

    def wake(self) -> None:
        if self.done is not None:
            self.done.set()


@dataclass(frozen=True, slots=True)
class Reservation:
    slot: tuple[str, str]
    record: _Record


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Mismatch:
    key: str


@dataclass(frozen=True, slots=True)
class InFlight:
    record: _Record

    async def wait(self) -> None:
        if self.record.done is None:
            self.record.done = asyncio.Event()
        await self.record.done.wait()


Claim = Reservation | Replay | Mismatch | InFlight


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A stored response of a previous run, `age_s` seconds old."""

    slot: tuple[str, str]
    fingerprint: Fingerprint
    response: StoredResponse
    age_s: float


class IdempotencyStore:
    def __init__(
        self,
        *,
        retention_s: float,
        clock: Callable[[], float] = time.monotonic,
        journal: KeyJournal | None = None,
    ) -> None:
        self._retention_s = retention_s
        self._clock = clock
        self._journal = journal
        # Insertion order is claim order, so the oldest records are always first.
        self._records: dict[tuple[str, str], _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def claim(self, scope: str, key: str, fingerprint: Fingerprint) -> Claim:
        now = self._clock()
        self._expire(now)
        slot = (scope, key)
        record = self._records.get(slot)
        if record is None:
            record = _Record(fingerprint, now)
            self._records[slot] = record
            return Reservation(slot, record)
        if record.fingerprint != fingerprint:
            return Mismatch(key)
        if record.response is None:
            return InFlight(record)
        return Replay(record.response)

    def complete(self, reservation: Reservation, response: StoredResponse) -> None:
        reservation.record.response = response
        reservation.record.wake()
        if self._journal is not None:
            self._journal(reservation.slot, reservation.record.fingerprint, response)

    def release(self, reservation: Reservation) -> None:
        if self._records.get(reservation.slot) is reservation.record:
            del self._records[reservation.slot]
        reservation.record.wake()

    def restore(self, keys: Iterable[StoredKey]) -> None:
        """Take back stored responses (oldest first), keeping their age."""
        now = self._clock()
        for stored in keys:
            if stored.age_s < self._retention_s:
                self._records[stored.slot] = _Record(
                    stored.fingerprint, now - stored.age_s, stored.response
                )

    def clear(self) -> None:
        records, self._records = self._records, {}
        for record in records.values():
            record.wake()

    def _expire(self, now: float) -> None:
        # Amortised O(1): stop at the first record still kept or still in flight.
        cutoff = now - self._retention_s
        while self._records:
            slot, record = next(iter(self._records.items()))
            if record.created_at > cutoff or record.response is None:
                return
            del self._records[slot]
