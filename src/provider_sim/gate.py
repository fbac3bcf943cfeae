"""The gate every /v1 request passes: injected faults and Stripe's idempotency.

An idempotent POST claims its key first, then sleeps the injected latency, then
maybe fails before charging (not stored, so a retry runs), then executes and
stores the response, then maybe holds it (timeout after charge). A request that
arrives while another with the same key is still in flight waits for it and
replays its stored response, so a key is charged at most once.

Reads (`before_read`) get the latency and the errors; POSTs (`post`) all three
faults, so refunds are treated exactly as payment intents are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from provider_sim.errors import StripeApiError
from provider_sim.faults import Faults
from provider_sim.idempotency import (
    Fingerprint,
    IdempotencyStore,
    InFlight,
    Mismatch,
    Replay,
    Reservation,
    StoredResponse,
)


@dataclass(frozen=True, slots=True)
class Reply:
    response: StoredResponse
    replayed: bool = False


class RequestGate:
    def __init__(
        self, idempotency: IdempotencyStore, faults: Callable[[], Faults], rng: random.Random
    ) -> None:
        self.idempotency = idempotency
        self._faults = faults
        self._rng = rng
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Let responses held by `timeout_after_charge` go, so shutdown is quick."""
        self._closing.set()

    async def post(
        self,
        api_key: str,
        key: str | None,
        fingerprint: Fingerprint,
        execute: Callable[[], StoredResponse],
    ) -> Reply:
        if key is None:
            await self._delay()
            self._maybe_fail()
            response = execute()
            await self._maybe_hold()
            return Reply(response)
        waited = False
        while True:
            claim = self.idempotency.claim(_scope(api_key), key, fingerprint)
            if not isinstance(claim, InFlight):
                break
            await claim.wait()
            waited = True
        if isinstance(claim, Reservation):
            response = await self._execute_reserved(claim, execute, delay=not waited)
            await self._maybe_hold()
            return Reply(response)
        if not waited:
            await self._delay()
        if isinstance(claim, Mismatch):
            raise StripeApiError.idempotency_mismatch(claim.key)
        assert isinstance(claim, Replay)
        return Reply(claim.response, replayed=True)

    async def _execute_reserved(
        self, reservation: Reservation, execute: Callable[[], StoredResponse], *, delay: bool
    ) -> StoredResponse:
        stored = False
        try:
            if delay:
                await self._delay()
            self._maybe_fail()
            response = execute()
            self.idempotency.complete(reservation, response)
            stored = True
            return response
        finally:
            if not stored:
                self.idempotency.release(reservation)

    def roll(self, rate: float) -> bool:
        """True with probability `rate` (a fault that strikes some requests)."""
        return bool(rate) and self._rng.random() < rate

    async def before_read(self) -> None:
        await self._delay()
        self._maybe_fail()

    async def _delay(self) -> None:
        latency_ms = self._faults().latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)

    def _maybe_fail(self) -> None:
        rate = self._faults().error_rate
        if rate and self._rng.random() < rate:
            raise StripeApiError.injected()

    async def _maybe_hold(self) -> None:
        faults = self._faults()
        rate = faults.timeout_after_charge_rate
        if rate and self._rng.random() < rate:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._closing.wait(), faults.timeout_after_charge_hold_ms / 1000
                )


@functools.lru_cache(maxsize=64)
def _scope(api_key: str) -> str:
    """Keys are remembered per API key; by its digest, so no secret key is written
    to the state file."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]
