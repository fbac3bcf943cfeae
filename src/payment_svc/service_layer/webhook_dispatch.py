"""The dispatcher's use cases (SPEC §3d): which endpoints a replica serves,
the messages due for one, and the outcome of an attempt. The retry schedule
is the dispatcher's configuration; this side keeps the state it decides on
(the queue, the cursor, failing_since), so the dispatcher keeps none."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from payment_svc.domain.errors import FieldViolation, InvalidArgument, NotFound
from payment_svc.domain.model import parse_payment_id
from payment_svc.domain.webhook_dispatch import (
    AttemptRecord,
    DueMessages,
    EndpointState,
    LeasedEndpoint,
)
from payment_svc.domain.webhooks import parse_endpoint_id
from payment_svc.service_layer.ports import WebhookDispatchRepository

MAX_ENDPOINTS = 1000
MAX_MESSAGES = 500
MAX_LEASE_SECONDS = 3600.0


def _dispatcher_id(value: str) -> str:
    if not value:
        raise InvalidArgument([FieldViolation("dispatcher_id", "is required")])
    return value


def endpoint_id(text: str) -> uuid.UUID:
    found = parse_endpoint_id(text)
    if found is None:
        raise NotFound("no such webhook endpoint")
    return found


class WebhookDispatch:
    def __init__(self, repo: WebhookDispatchRepository) -> None:
        self._repo = repo

    async def lease(
        self, dispatcher_id: str, lease_seconds: float, max_endpoints: int
    ) -> list[LeasedEndpoint]:
        """max_endpoints 0 releases every lease the dispatcher holds."""
        if not 0 <= max_endpoints <= MAX_ENDPOINTS:
            raise InvalidArgument([FieldViolation("max_endpoints", f"must be 0..{MAX_ENDPOINTS}")])
        if max_endpoints and not 0 < lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument([FieldViolation("lease", "must be 0..1 hour, not 0")])
        return await self._repo.lease(_dispatcher_id(dispatcher_id), lease_seconds, max_endpoints)

    async def fetch(
        self, dispatcher_id: str, endpoint: str, limit: int, busy_payment_ids: list[str]
    ) -> DueMessages:
        if not 1 <= limit <= MAX_MESSAGES:
            raise InvalidArgument([FieldViolation("max_messages", f"must be 1..{MAX_MESSAGES}")])
        busy = [p for p in (parse_payment_id(t) for t in busy_payment_ids) if p is not None]
        return await self._repo.fetch(
            _dispatcher_id(dispatcher_id), endpoint_id(endpoint), limit, busy
        )

    async def record(self, record: AttemptRecord) -> EndpointState:
        _dispatcher_id(record.dispatcher_id)
        return await self._repo.record(record)

    async def expire_attempts(self, retention_seconds: float, batch: int = 1000) -> int:
        """Deletes attempts older than the retention (the feed's), a batch
        per statement."""
        before = datetime.now(UTC) - timedelta(seconds=retention_seconds)
        total = 0
        while True:
            deleted = await self._repo.expire_attempts(before, batch)
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(0)
