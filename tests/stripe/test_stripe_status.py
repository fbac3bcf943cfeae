"""The Stripe package's one status mapping (moved from tests/payment_svc/test_domain.py)."""

from __future__ import annotations

from payments_stripe.status import Status as PaymentStatus
from payments_stripe.status import StripeIntentStatus, to_payment_status

S, F = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED


def test_unknown_is_never_failed_by_mapping() -> None:
    # Every provider status maps somewhere; only an explicit decline is FAILED.
    for status in StripeIntentStatus:
        ours = to_payment_status(status, has_payment_error=False)
        assert ours is not PaymentStatus.UNKNOWN
        if status is not StripeIntentStatus.CANCELED:
            assert ours is not PaymentStatus.FAILED
    assert (
        to_payment_status(StripeIntentStatus.REQUIRES_PAYMENT_METHOD, has_payment_error=True) is F
    )
    assert to_payment_status(StripeIntentStatus.SUCCEEDED, has_payment_error=False) is S
    assert StripeIntentStatus.parse("something_new") is StripeIntentStatus.UNKNOWN


def test_the_snapshot_rule_is_the_domains_rule() -> None:
    # payments_stripe cannot import payment_svc: if the two REVERSED rules
    # diverged, the reconciler would skip payments that payment-svc would fix.
    from payment_svc.domain import reversals
    from payment_svc.domain.status import PaymentStatus as Ours
    from payments_stripe.status import reversed_status

    for status in PaymentStatus:
        for amount in (1, 1000):
            for amount_reversed in (0, 1, 500, 999, 1000, 1500):
                theirs = reversed_status(status, amount, amount_reversed)
                domain = reversals.status_for(Ours[status.name], amount, amount_reversed)
                assert theirs.name == domain.name, (status, amount, amount_reversed)
