"""Signed webhooks, Standard Webhooks v1 (SPEC §3d): signing (the
dispatcher) and verification (a receiver; re-exported by payments.client).

    webhook-id         the update's id, the same on every attempt
    webhook-timestamp  seconds since the epoch, of this attempt
    webhook-signature  "v1," + base64(HMAC-SHA256(key, id "." timestamp "." body)),
                       one per active secret, space separated (a rotation)

A secret is "whsec_" + base64 of the key. The PyPI package `standardwebhooks`
computes the same signatures (tests/webhook_dispatcher/test_signature.py);
this module keeps the client library on the standard library.

    WebhookVerificationError      the message must be refused (answer 400)
     ├── WebhookSignatureError    missing headers, or no signature matches
     └── WebhookTimestampError    the timestamp is older or newer than the tolerance
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


class WebhookVerificationError(Exception):
    """The message is not one the platform signed with these secrets, now."""


class WebhookSignatureError(WebhookVerificationError):
    pass


class WebhookTimestampError(WebhookVerificationError):
    pass


def secret_key(secret: str | bytes) -> bytes:
    """The key of a `whsec_...` secret (or the key itself)."""
    if isinstance(secret, bytes):
        return secret
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def sign(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt, signed with every key given."""
    signatures = " ".join(signature(k, msg_id, timestamp, body) for k in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Iterable[str | bytes],
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> None:
    """Raises WebhookVerificationError unless one of the `secrets` signed
    this body with these headers, within `tolerance` seconds of now. Pass
    the body exactly as received (bytes), and during a rotation both the
    new and the old secret."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    given = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and given):
        raise WebhookSignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not a number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookTimestampError("webhook-timestamp is outside the tolerance")
    offered = [s.encode() for s in given.split(" ") if s.startswith(SIGNATURE_VERSION + ",")]
    for secret in secrets:
        expected = signature(secret_key(secret), msg_id, timestamp, body).encode()
        # Every candidate is compared (constant time each): no early exit
        # on the first byte of any of them.
        if any(hmac.compare_digest(expected, o) for o in offered):
            return
    raise WebhookSignatureError("no signature matches")
