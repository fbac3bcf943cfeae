"""The REVERSED rule (SPEC §3a), written once: a succeeded payment is REVERSED
when its refunds and disputes cover its whole amount; partly refunded or
disputed it stays SUCCEEDED (with the amount reversed recorded).

Two sides must apply it alike: payment-svc's domain, which decides what a
refund, a dispute or a snapshot does to a payment (payment_svc/domain/
reversals.py status_for), and the reconciler's view of a provider intent
(payments_stripe.status.reversed_status), which decides which payments agree
and are skipped. Were they to differ, the reconciler would skip payments that
payment-svc would fix. Neither may import the other, so the rule lives here,
below both; like cards.py it is plain Python on plain values (the domain may
import it: pyproject.toml's contracts).
"""

from __future__ import annotations


def reverses_whole(*, succeeded: bool, amount: int, amount_reversed: int) -> bool:
    """Whether a payment is REVERSED: it succeeded, and what refunds and
    disputes took back (something, at least) covers its whole amount."""
    return succeeded and amount_reversed > 0 and amount_reversed >= amount
