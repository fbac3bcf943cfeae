"""Opaque page tokens for keyset pagination, signed.

A token carries the last row's sort key and a fingerprint of the filters it
was issued for, so a token reused with other filters is refused rather than
silently paging through something else. It is signed (HMAC-SHA256 with the
deployment's PAYMENT_SVC_PAGE_TOKEN_KEY): a token we did not issue is refused
before anything in it is read, so no crafted token reaches the database.

    base64url(json {"t": microseconds, "i": uuid hex, "f": filters}) "." base64url(mac)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

# Far longer than any token we issue (about 150 characters).
MAX_TOKEN_CHARS = 512
_MAC_BYTES = 16


# The operator listings' page sizes (the work list, discrepancies).
DEFAULT_PAGE = 100
MAX_PAGE = 500


def bounded_page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(value or DEFAULT_PAGE, MAX_PAGE)


def filter_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issues and checks page tokens with one deployment key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a page token key is needed")
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, cursor: PageCursor, filters: str) -> str:
        body = json.dumps(
            {"t": int(cursor.sort_key.timestamp() * 1_000_000), "i": cursor.id.hex, "f": filters}
        ).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, token: str, filters: str) -> PageCursor | None:
        if not token:
            return None
        bad = InvalidArgument([FieldViolation("page_token", "is not a token this query issued")])
        body_text, dot, mac_text = token.partition(".")
        if len(token) > MAX_TOKEN_CHARS or not dot or not token.isascii():
            raise bad
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise bad from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise bad
        # Ours, so well formed; still checked, as a key may outlive a format.
        try:
            fields = json.loads(body)
            cursor = PageCursor(
                sort_key=datetime.fromtimestamp(fields["t"] / 1_000_000, tz=UTC),
                id=uuid.UUID(hex=fields["i"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError, OSError, RecursionError):
            raise bad from None
        if fields.get("f") != filters:
            raise bad
        return cursor


# The reconciler's leased work lists (payments and refunds to reconcile).
MAX_OLDER_THAN_SECONDS = 100 * 366 * 86400.0
MAX_LEASE_SECONDS = 86400.0


@dataclass(frozen=True)
class LeasedPageQuery:
    """One page of a leased work list, as the reconciler asks for it."""

    older_than_seconds: float
    page_size: int
    page_token: str
    owner: str
    lease_seconds: float | None


async def leased_page(
    tokens: PageTokens,
    name: str,
    query: LeasedPageQuery,
    fetch: Callable[[int, tuple[datetime, uuid.UUID] | None], Awaitable[list[T]]],
    key_of: Callable[[T], PageCursor],
) -> tuple[list[T], str]:
    """The payments' and the refunds' work lists alike: the query checked,
    the token decoded for this list and its filters, one page fetched (and
    leased by the store when asked), the next token ("" on the last page)."""
    if not 0 <= query.older_than_seconds <= MAX_OLDER_THAN_SECONDS:
        raise InvalidArgument([FieldViolation("older_than", "must be 0 to 100 years")])
    lease = query.lease_seconds
    if lease is not None and not 0 <= lease <= MAX_LEASE_SECONDS:
        raise InvalidArgument([FieldViolation("lease", "must be 0 to 86400 seconds")])
    if lease is not None and not query.owner:
        raise InvalidArgument([FieldViolation("reconciler_id", "is needed with a lease")])
    limit = bounded_page_size(query.page_size)
    filters = filter_fingerprint(name, query.older_than_seconds)
    after = tokens.decode(query.page_token, filters)
    found = await fetch(limit, (after.sort_key, after.id) if after else None)
    token = tokens.encode(key_of(found[-1]), filters) if len(found) == limit else ""
    return found, token
