"""Stripe's webhook signature: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256>`.

The MAC is over `f"{t}.{payload}"` keyed with the endpoint secret as written
(`whsec_...` included), which is what `stripe.Webhook.construct_event` checks.
Each delivery attempt is signed afresh with the current time, as Stripe does, so
a retry hours later still passes the receiver's timestamp tolerance.
"""

from __future__ import annotations

import hashlib
import hmac


def signature_header(secret: str, payload: bytes, timestamp: int) -> str:
    signed = b"%d." % timestamp + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
