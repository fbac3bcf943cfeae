"""The one mapping of domain errors to gRPC statuses with rich details
(google.rpc ErrorInfo, BadRequest, RetryInfo), and of anything else (a bug)
to INTERNAL with the request id and no exception text."""

from __future__ import annotations

import traceback

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from payment_svc.domain import errors as e
from payment_svc.domain.webhooks import TooManyEndpoints
from payment_svc.entrypoints import metrics
from payment_svc.entrypoints.convert import refund_status_name, status_name
from payments_kit.cards import redact_card_numbers

DOMAIN = "payments.v1"

log = structlog.get_logger("payment_svc.grpc")

_CODES: list[tuple[type[e.PaymentsError], int]] = [
    (e.InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (e.DuplicatePayment, code_pb2.ALREADY_EXISTS),
    (e.DuplicateRefund, code_pb2.ALREADY_EXISTS),
    (e.NotFound, code_pb2.NOT_FOUND),
    (e.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (e.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (e.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (e.StoreUnavailable, code_pb2.UNAVAILABLE),
    (e.ProviderUnavailable, code_pb2.UNAVAILABLE),
    (e.CursorExpired, code_pb2.OUT_OF_RANGE),
    (TooManyEndpoints, code_pb2.RESOURCE_EXHAUSTED),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_grpc_status(exc: e.PaymentsError) -> grpc.Status:
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), code_pb2.INTERNAL)
    metadata: dict[str, str] = {}
    details = []
    if isinstance(exc, e.DuplicatePayment):
        metadata = {"payment_id": exc.payment_id, "status": status_name(exc.status)}
    if isinstance(exc, e.ResultNotRecorded):
        metadata = {"payment_id": exc.payment_id}
    if isinstance(exc, e.DuplicateRefund):
        metadata = {"refund_id": exc.refund_id, "status": refund_status_name(exc.status)}
    if isinstance(exc, e.PaymentNotRefundable):
        metadata = {"payment_id": exc.payment_id, "status": status_name(exc.status)}
    if isinstance(exc, e.RefundExceedsRemaining):
        metadata = {"payment_id": exc.payment_id, "remaining": str(exc.remaining)}
    if isinstance(exc, e.ProviderBooksDisagree):
        metadata = {
            "payment_id": exc.payment_id,
            "our_amount_reversed": str(exc.ours),
            "provider_refunded": str(exc.provider_refunded),
            "provider_disputed": "true" if exc.disputed else "false",
        }
    if isinstance(exc, e.RefundNotRecorded):
        metadata = {"refund_id": exc.refund_id, "payment_id": exc.payment_id}

    if isinstance(exc, e.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=exc.reason
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    details.insert(
        0, _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata))
    )
    if exc.retryable:
        details.append(
            _pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)))
        )
    # Our messages never quote input; the redaction is the rule for every
    # error body all the same.
    message = redact_card_numbers(str(exc)) if code != code_pb2.INTERNAL else "internal error"
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code, message=message, details=details)
    )
    return status


def unexpected(exc: Exception, request_id: str, method: str) -> str:
    """Logs an exception no rule maps (redacted: its text may quote the
    input) and returns the caller's message, which quotes nothing of it."""
    metrics.UNEXPECTED_ERRORS.labels(method).inc()
    log.error(
        "unexpected_error",
        error_type=type(exc).__name__,
        error=redact_card_numbers(str(exc)),
        traceback=redact_card_numbers("".join(traceback.format_exception(exc))),
    )
    return f"internal error (request id {request_id})"
