"""Stripe's webhook signature scheme, checked in constant time. Pure: no I/O, no clock.

    Stripe-Signature: t=1700000000,v1=<hex>[,v1=<hex>...][,v0=<hex>]
    v1 = hex(HMAC-SHA256(secret, b"<t>." + raw body))

Every active secret is tried against every v1 signature (during a rotation the
provider may sign with the old secret, the new one, or both). The timestamp must be
within the tolerance in both directions: a stale one is a replay, one far in the
future defeats the replay window. Written here rather than taken from the stripe
SDK, whose one exception type for every failure would lose the reason we count.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass


class SignatureFailure(enum.StrEnum):
    """Why a signature is refused (the gateway's reasons carry the same words)."""

    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    NO_MATCHING_SIGNATURE = "no_matching_signature"
    TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance"


class InvalidSignature(ValueError):
    """The Stripe-Signature header is absent, unreadable, stale, or signs something else."""

    def __init__(self, reason: SignatureFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


HEADER = "Stripe-Signature"
SCHEME = "v1"
# Unix seconds stay below 12 digits for millennia; longer is junk, not a time.
_MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True, slots=True)
class SignedHeader:
    timestamp: int
    signatures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verified:
    timestamp: int
    # 0 when the newest secret signed the body; rotation is over when nothing
    # matches only an older one any more.
    secret_index: int


def parse_header(header: str | None) -> SignedHeader:
    if header is None or not header.strip():
        raise InvalidSignature(SignatureFailure.MISSING_HEADER, f"the {HEADER} header is missing")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            continue  # not ours to judge; only t and v1 matter
        key, value = key.strip(), value.strip()
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1:
        raise InvalidSignature(
            SignatureFailure.MALFORMED_HEADER, f"{HEADER} must carry one t=<unix time>"
        )
    raw = timestamps[0]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_TIMESTAMP_DIGITS):
        raise InvalidSignature(SignatureFailure.MALFORMED_HEADER, f"{HEADER} t= is not a unix time")
    if not signatures:
        raise InvalidSignature(
            SignatureFailure.MALFORMED_HEADER, f"{HEADER} carries no {SCHEME} signature"
        )
    # compare_digest takes ASCII strings only; anything else can never match.
    return SignedHeader(int(raw), tuple(s for s in signatures if s.isascii()))


class Verifier:
    """Holds the active secrets (newest first) and the tolerance."""

    def __init__(self, secrets: Sequence[str], tolerance_seconds: int) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        # Keyed once; each request copies the keyed state instead of re-keying.
        self._keyed = tuple(hmac.new(s.encode(), digestmod=hashlib.sha256) for s in secrets)
        self._tolerance = tolerance_seconds

    def verify(self, header: str | None, body: bytes, now: float) -> Verified:
        signed = parse_header(header)
        prefix = b"%d." % signed.timestamp
        matched = -1
        for index, keyed in enumerate(self._keyed):
            mac = keyed.copy()
            mac.update(prefix)
            mac.update(body)
            expected = mac.hexdigest()
            for candidate in signed.signatures:
                if hmac.compare_digest(expected, candidate) and matched < 0:
                    matched = index
        if matched < 0:
            raise InvalidSignature(
                SignatureFailure.NO_MATCHING_SIGNATURE,
                "no signature matches the body with an active secret",
            )
        # Checked after the signature so that the reason tells a stale genuine
        # event (clock skew, replay) from a forgery.
        if abs(now - signed.timestamp) > self._tolerance:
            raise InvalidSignature(
                SignatureFailure.TIMESTAMP_OUTSIDE_TOLERANCE,
                f"the signature's timestamp is more than {self._tolerance} s from now",
            )
        return Verified(signed.timestamp, matched)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """A Stripe-Signature header value for body: what the provider sends."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},{SCHEME}={mac.hexdigest()}"
