"""Retries of payment-svc calls. Every call the reconciler makes is safe to
repeat (snapshots and events apply once, findings are deduplicated, a re-drive
reuses the provider idempotency key), so a retryable error is retried a few
times before the item counts as an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from payments.errors import PaymentsClientError, RetryableError
from reconciler.rules import MOVED_SINCE_LISTED
from reconciler.runs import Tally

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


log = structlog.get_logger("reconciler")


async def redrive(call: Callable[[], Awaitable[T]], tally: Tally, **item: str) -> T | None:
    """One re-drive through payment-svc, a payment's or a refund's (the same
    provider idempotency key, so never twice): the reply, or None when it
    could not be done. Refused because the item moved since it was listed
    (a webhook, or another replica, recorded it meanwhile: MOVED_SINCE_LISTED)
    is nothing to do and no error; any other failure is an error of the run.
    `item`: its id for the logs (payment_id=..., or refund_id=...)."""
    try:
        return await retrying(call)
    except PaymentsClientError as exc:
        if exc.reason in MOVED_SINCE_LISTED:
            log.info("redrive_not_needed", reason=exc.reason, **item)
            return None
        tally.errors += 1
        log.warning("redrive_failed", error=str(exc), **item)
        return None
