"""Opaque change-feed cursors, signed like page tokens (pagination.py).

A cursor is a position in the feed, bound to the client it was issued to
and signed with the deployment's PAYMENT_SVC_PAGE_TOKEN_KEY (under a label
of its own, so a page token is never a cursor): one we did not issue, or
issued to another client, is refused before anything in it is read.

    "c1." base64url(position, 8 bytes big-endian) "." base64url(mac)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from payment_svc.domain.errors import FieldViolation, InvalidCursor

_VERSION = "c1"
_MAC_BYTES = 16
MAX_CURSOR_CHARS = 128


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FeedCursors:
    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a cursor key is needed")
        self._key = key

    def _mac(self, client_id: str, body: bytes) -> bytes:
        message = b"feed-cursor\0" + client_id.encode() + b"\0" + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, client_id: str, position: int) -> str:
        body = position.to_bytes(8, "big")
        return f"{_VERSION}.{_b64(body)}.{_b64(self._mac(client_id, body))}"

    def decode(self, client_id: str, cursor: str) -> int:
        """The position after which to read; 0 for an empty cursor."""
        if not cursor:
            return 0
        bad = InvalidCursor([FieldViolation("after_cursor", "is not a cursor this feed issued")])
        parts = cursor.split(".")
        if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii() or len(parts) != 3:
            raise bad
        version, body_text, mac_text = parts
        if version != _VERSION:
            raise bad
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise bad from None
        if len(body) != 8 or not hmac.compare_digest(mac, self._mac(client_id, body)):
            raise bad
        return int.from_bytes(body, "big")
