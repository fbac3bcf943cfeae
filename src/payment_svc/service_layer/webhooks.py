"""Webhook endpoint management (SPEC §3d): the use cases behind
CreateWebhookEndpoint and its siblings, scoped to the calling client.

A URL is checked twice before it is stored: its shape and scheme
(domain/webhooks.check_url), then, for a name, every address it resolves to
(the dispatcher checks the address it connects to again: DNS may change).
The secret is made here and returned once; it is never logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from payment_svc.domain import webhooks as w
from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import FieldViolation, InvalidArgument, NotFound
from payment_svc.domain.feed import check_cursor
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.pagination import PageTokens, filter_fingerprint
from payment_svc.service_layer.ports import Resolver, WebhookEndpointRepository

DEFAULT_DELIVERIES_PAGE = 20
MAX_DELIVERIES_PAGE = 100
RESOLVE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class DeliveriesPage:
    attempts: list[w.DeliveryAttempt]
    next_page_token: str


class WebhookEndpointsService:
    def __init__(
        self,
        repo: WebhookEndpointRepository,
        resolver: Resolver,
        cursors: FeedCursors,
        page_tokens: PageTokens,
        *,
        production: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repo = repo
        self._resolver = resolver
        self._cursors = cursors
        self._tokens = page_tokens
        self._production = production
        self._clock = clock

    async def _check_url(self, url: str) -> None:
        parts = w.check_url(url, production=self._production)
        host = (parts.hostname or "").rstrip(".")
        try:
            ipaddress.ip_address(host)
            return  # an address: check_url has checked it
        except ValueError:
            pass
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                addresses = await self._resolver.resolve(host, port)
        except (OSError, TimeoutError):
            raise w.UrlNotAllowed("its host name does not resolve") from None
        if not addresses:
            raise w.UrlNotAllowed("its host name does not resolve")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not w.address_allowed(address, production=self._production):
                raise w.UrlNotAllowed(
                    "resolves to a loopback, private, link-local or reserved address"
                )

    def _endpoint_id(self, text: str) -> uuid.UUID:
        endpoint_id = w.parse_endpoint_id(text)
        if endpoint_id is None:
            if not text:
                raise InvalidArgument([FieldViolation("endpoint_id", "is required")])
            raise NotFound("no such webhook endpoint")
        return endpoint_id

    async def create(self, client_id: str, url: str, description: str) -> w.WebhookEndpoint:
        w.check_description(description)
        await self._check_url(url)
        now = self._clock()
        secret = secrets.token_bytes(w.SECRET_BYTES)
        endpoint = w.WebhookEndpoint(
            id=uuid.uuid4(),
            client_id=client_id,
            url=url,
            description=description,
            status=w.EndpointStatus.ENABLED,
            created_at=now,
            updated_at=now,
        )
        await self._repo.insert(endpoint, secret, limit=w.MAX_ENDPOINTS_PER_CLIENT)
        return replace(endpoint, secret=secret)

    async def list(self, client_id: str) -> list[w.WebhookEndpoint]:
        return await self._repo.of_client(client_id)

    async def update(
        self, client_id: str, endpoint_id: str, changes: w.EndpointChanges
    ) -> w.WebhookEndpoint:
        found = self._endpoint_id(endpoint_id)
        if changes.description is not None:
            w.check_description(changes.description)
        if changes.url is not None:
            await self._check_url(changes.url)
        endpoint = await self._repo.update(client_id, found, changes)
        if endpoint is None:
            raise NotFound("no such webhook endpoint")
        return endpoint

    async def delete(self, client_id: str, endpoint_id: str) -> None:
        if not await self._repo.delete(client_id, self._endpoint_id(endpoint_id)):
            raise NotFound("no such webhook endpoint")

    async def rotate(self, client_id: str, endpoint_id: str) -> w.WebhookEndpoint:
        secret = secrets.token_bytes(w.SECRET_BYTES)
        endpoint = await self._repo.rotate(
            client_id, self._endpoint_id(endpoint_id), secret, w.ROTATION_OVERLAP
        )
        if endpoint is None:
            raise NotFound("no such webhook endpoint")
        return replace(endpoint, secret=secret)

    async def deliveries(
        self, client_id: str, endpoint_id: str, page_size: int, page_token: str
    ) -> DeliveriesPage:
        found = self._endpoint_id(endpoint_id)
        if page_size < 0:
            raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
        limit = min(page_size or DEFAULT_DELIVERIES_PAGE, MAX_DELIVERIES_PAGE)
        filters = filter_fingerprint("webhook_deliveries", client_id, found.hex)
        after = self._tokens.decode(page_token, filters)
        attempts = await self._repo.attempts(client_id, found, after, limit + 1)
        if attempts is None:
            raise NotFound("no such webhook endpoint")
        token = ""
        if len(attempts) > limit:
            attempts = attempts[:limit]
            last = attempts[-1]
            token = self._tokens.encode(PageCursor(last.attempted_at, last.id), filters)
        return DeliveriesPage(attempts, token)

    def cursor(self, client_id: str, position: int) -> str:
        return self._cursors.encode(client_id, position)

    async def redeliver(self, client_id: str, endpoint_id: str, after_cursor: str) -> None:
        found = self._endpoint_id(endpoint_id)
        after = self._cursors.decode(client_id, after_cursor)
        horizon = await self._repo.rewind(client_id, found, after)
        if horizon is None:
            raise NotFound("no such webhook endpoint")
        check_cursor(after, horizon)
