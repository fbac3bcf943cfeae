"""What a Stripe intent event says of a payment (adapters/stripe_observations.py),
without I/O: a cancellation is a failure that always carries a code."""

from __future__ import annotations

from datetime import UTC, datetime

from payment_svc.adapters.stripe_observations import observe
from payment_svc.domain.status import PaymentStatus

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _intent(status: str, **extra: object) -> dict[str, object]:
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "status": status,
        "amount": 1000,
        "currency": "usd",
        "metadata": {"payment_id": "pay_1"},
        **extra,
    }


def test_a_canceled_intent_fails_with_the_code_canceled() -> None:
    obs = observe("payment_intent.canceled", _intent("canceled"), AT)
    assert (obs.status, obs.failure_code) == (PaymentStatus.FAILED, "canceled")


def test_a_declined_intent_fails_with_the_providers_code() -> None:
    error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "no"}
    failed = _intent("requires_payment_method", last_payment_error=error)
    obs = observe("payment_intent.payment_failed", failed, AT)
    assert (obs.status, obs.failure_code) == (PaymentStatus.FAILED, "insufficient_funds")
    processing = observe("payment_intent.processing", _intent("processing"), AT)
    assert (processing.status, processing.failure_code) == (PaymentStatus.PENDING, None)


def test_the_reconcilers_refund_words_are_read_by_the_stripe_mapping() -> None:
    """ReconcileRefund's snapshot in Stripe's words, read by the adapter (the
    servicer only translates: issue 22)."""
    from payment_svc.adapters.stripe_observations import refund_snapshot
    from payment_svc.domain.refund_events import ProviderRefundWords
    from payment_svc.domain.refunds import RefundStatus

    words = ProviderRefundWords("re_1", "failed", 300, "usd", failure_reason="declined")
    failed = refund_snapshot(words)
    assert (failed.status, failed.currency, failed.failure_code) == (
        RefundStatus.FAILED,
        "USD",
        "declined",
    )
    assert failed.failure_message == "refund failed at the provider: declined"
    ok = refund_snapshot(ProviderRefundWords("re_2", "succeeded", 300, "usd"))
    assert (ok.status, ok.failure_code, ok.failure_message) == (RefundStatus.SUCCEEDED, None, None)
    pending = refund_snapshot(ProviderRefundWords("re_3", "pending", 300, "usd"))
    assert pending.status is RefundStatus.PENDING
