"""Opaque page tokens for keyset pagination.

A token carries the last row's sort key and a fingerprint of the filters it
was issued for, so a token reused with other filters is refused rather than
silently paging through something else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime

from payment_svc.adapters.store import PageCursor
from payment_svc.domain.errors import FieldViolation, InvalidArgument


def filter_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(cursor: PageCursor, filters: str) -> str:
    body = {
        "t": int(cursor.created_at.timestamp() * 1_000_000),
        "i": cursor.id.hex,
        "f": filters,
    }
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode(token: str, filters: str) -> PageCursor | None:
    if not token:
        return None
    bad = InvalidArgument([FieldViolation("page_token", "is not a token this query issued")])
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor = PageCursor(
            created_at=datetime.fromtimestamp(body["t"] / 1_000_000, tz=UTC),
            id=uuid.UUID(hex=body["i"]),
        )
    except (ValueError, KeyError, TypeError):
        raise bad from None
    if body.get("f") != filters:
        raise bad
    return cursor
