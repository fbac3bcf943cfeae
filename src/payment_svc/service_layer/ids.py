"""New ids for our rows, made where the clock and randomness may be read
(the service layer; the domain reads neither: STYLE habit 1)."""

from __future__ import annotations

import os
import time
import uuid


def new_payment_uuid() -> uuid.UUID:
    """A UUIDv7: time-ordered, so new rows land at the end of the index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


# Time-ordered like payment ids (UUIDv7): new rows land at the end of the index.
new_refund_uuid = new_payment_uuid
