"""The gateway never echoes payment-svc's words on a failure: they may be an
exception's text (with whatever input it quoted). A 503 says a stable reason;
a refusal quotes payment-svc's field violations, redacted."""

from __future__ import annotations

import grpc
import pytest

from webhook_gateway.errors import EventRefused, ForwardFailed, Reason
from webhook_gateway.forwarder import failure

EXCEPTION_TEXT = (
    "Unexpected <class 'asyncpg.exceptions.DataError'>: "
    "invalid input for query argument $5: 4000056655665556 (value out of int64 range)"
)


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_a_failure_answers_a_stable_reason_without_the_exception_text(
    code: grpc.StatusCode,
) -> None:
    error = failure(_error(code, EXCEPTION_TEXT))
    assert isinstance(error, ForwardFailed)
    assert error.status == 503
    assert "4000056655665556" not in error.message
    assert "DataError" not in error.message and "invalid input" not in error.message
    assert error.message == f"payment-svc answered {code.name}; the event was not recorded"


def test_a_refusal_quotes_payment_svc_redacted() -> None:
    error = failure(
        _error(grpc.StatusCode.INVALID_ARGUMENT, "payload: id 4242 4242 4242 4242 is not ours")
    )
    assert isinstance(error, EventRefused)
    assert error.reason is Reason.EVENT_REJECTED
    assert error.message == "payment-svc refused the event: payload: id [REDACTED-PAN] is not ours"
