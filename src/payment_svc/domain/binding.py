"""The one rule that binds a payment to its provider payment (SPEC §7).

A payment is sent to the provider once, with its own id as the idempotency
key and in `metadata.payment_id`; the provider's id that comes back (or that
the first webhook, search or snapshot shows) is the payment's for good:

    bound  seen
    none   none     NOTHING    nothing to bind (an event that names no intent)
    none   pi_A     BIND       pi_A becomes the payment's
    pi_A   none     SAME       about the payment as bound
    pi_A   pi_A     SAME
    pi_A   pi_B     DUPLICATE  another provider payment carries our payment id:
                               a possible double charge. Never applied, never
                               rebinding: recorded as DUPLICATE_PROVIDER_PAYMENT.

The same rule is why a payment with a provider id is never re-driven: the
provider has heard of it, whatever a later lookup says.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta


class Binding(enum.Enum):
    NOTHING = "nothing"
    BIND = "bind"
    SAME = "same"
    DUPLICATE = "duplicate"

    @property
    def may_apply(self) -> bool:
        """Whether what the provider says about `seen` may move the payment."""
        return self is not Binding.DUPLICATE


def bind(bound: str | None, seen: str | None) -> Binding:
    if not bound:
        return Binding.BIND if seen else Binding.NOTHING
    if not seen or seen == bound:
        return Binding.SAME
    return Binding.DUPLICATE


def may_redrive(bound: str | None) -> bool:
    """A payment the provider gave an id for has reached it: sending it again
    is never the answer to not finding it (another account's key, a wrong
    STRIPE_API_BASE, a provider that lost it), a person decides."""
    return not bound


def within_redrive_window(created_at: datetime, now: datetime, window_seconds: float) -> bool:
    """Whether a re-drive may still send the same provider idempotency key:
    the provider remembers a key only so long (Stripe: 24 hours), and one it
    forgot would charge, or refund, anew. `now` is the caller's (the domain
    reads no clock)."""
    return now - created_at < timedelta(seconds=window_seconds)


def duplicate_note(bound: str | None, seen: str | None) -> str:
    return (
        f"provider payment {seen} carries this payment's id but the payment is {bound}'s: "
        "possible double charge, not applied"
    )
