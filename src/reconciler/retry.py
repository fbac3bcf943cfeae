"""Retries of payment-svc calls. Every call the reconciler makes is safe to
repeat (snapshots and events apply once, findings are deduplicated, a re-drive
reuses the provider idempotency key), so a retryable error is retried a few
times before the item counts as an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from payments.errors import RetryableError

T = TypeVar("T")

ATTEMPTS = 3
FIRST_DELAY = 0.1


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS) -> T:
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryableError as exc:
            if attempt == attempts:
                raise
            await asyncio.sleep(exc.retry_delay if exc.retry_delay is not None else delay)
            delay *= 4
    raise AssertionError("unreachable")
