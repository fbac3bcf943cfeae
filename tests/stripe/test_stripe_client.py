"""The one provider-error table (payments_stripe.client): what each SDK error
means for a caller that creates (FAILED or UNKNOWN) and one that reads."""

from __future__ import annotations

import pytest
import stripe

from payments_stripe.client import Failure, classify


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (stripe.CardError("declined", None, "card_declined", http_status=402), Failure.DECLINED),
        (stripe.InvalidRequestError("bad", "amount", http_status=400), Failure.INVALID_REQUEST),
        (stripe.InvalidRequestError("gone", None, http_status=404), Failure.NOT_FOUND),
        (
            stripe.InvalidRequestError("gone", None, code="resource_missing", http_status=400),
            Failure.NOT_FOUND,
        ),
        (stripe.IdempotencyError("reused key", http_status=400), Failure.CONFLICT),
        (stripe.AuthenticationError("bad key", http_status=401), Failure.REFUSED),
        (stripe.PermissionError("no", http_status=403), Failure.REFUSED),
        (stripe.RateLimitError("slow down", http_status=429), Failure.UNAVAILABLE),
        (stripe.APIConnectionError("refused"), Failure.UNAVAILABLE),
        (stripe.APIError("boom", http_status=500), Failure.UNAVAILABLE),
        (TimeoutError(), Failure.UNAVAILABLE),
    ],
)
def test_every_provider_error_has_one_meaning(error: BaseException, failure: Failure) -> None:
    assert classify(error) is failure


def test_only_an_unavailable_provider_is_worth_a_retry_and_only_a_refusal_charged_nothing() -> None:
    assert {f for f in Failure if f.retryable} == {Failure.UNAVAILABLE}
    # A timeout, a conflict or a refused key may have charged: never FAILED.
    assert {f for f in Failure if f.charged_nothing} == {
        Failure.DECLINED,
        Failure.INVALID_REQUEST,
        Failure.NOT_FOUND,
    }
