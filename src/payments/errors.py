"""The client's one error tree, mapped back from gRPC statuses in one table.

    PaymentsClientError            any failed call: .code .message .reason .metadata
     │                             .field_violations .retry_delay .request_id
     ├── RetryableError            a retry (with the same idempotency key) may help
     │    ├── Unavailable          UNAVAILABLE: service or its database down
     │    ├── DeadlineExceeded     DEADLINE_EXCEEDED: no answer in time, outcome unknown
     │    ├── ResourceExhausted    RESOURCE_EXHAUSTED (but see TooManyWebhookEndpoints)
     │    └── Aborted              ABORTED
     └── PermanentError            the same request will never succeed
          ├── InvalidArgument      INVALID_ARGUMENT, with field_violations
          ├── AlreadyExists        ALREADY_EXISTS: idempotency key used before;
          │                        metadata payment_id (or refund_id) and status name
          │                        the first payment (or refund)
          ├── FailedPrecondition   FAILED_PRECONDITION: not in a state for this
          │    ├── PaymentNotRefundable    reason PAYMENT_NOT_REFUNDABLE: not SUCCEEDED
          │    ├── RefundExceedsRemaining  reason REFUND_EXCEEDS_REMAINING; .remaining
          │    └── ProviderBooksDisagree   reason PROVIDER_BOOKS_DISAGREE: a correction
          │                                refused; metadata our_amount_reversed,
          │                                provider_refunded, provider_disputed
          ├── NotFound             NOT_FOUND (also another client's payment)
          ├── Unauthenticated      UNAUTHENTICATED: missing or unknown token
          ├── PermissionDenied     PERMISSION_DENIED: wrong service for this caller
          ├── CursorExpired        OUT_OF_RANGE, reason CURSOR_EXPIRED: the change
          │                        feed no longer keeps what follows the cursor
          ├── TooManyWebhookEndpoints  RESOURCE_EXHAUSTED, reason
          │                        TOO_MANY_WEBHOOK_ENDPOINTS: 16 a client; delete one
          └── ServerError          any other code (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)

The server puts `google.rpc.Status` in the `grpc-status-details-bin`
trailer: ErrorInfo (reason, metadata), BadRequest (field violations),
RetryInfo (delay).
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class PaymentsClientError(Exception):
    retryable = False

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.retry_delay = retry_delay
        self.request_id = ""  # the x-request-id of the call, set by the client


class RetryableError(PaymentsClientError):
    retryable = True


class PermanentError(PaymentsClientError):
    pass


class Unavailable(RetryableError):
    pass


class DeadlineExceeded(RetryableError):
    pass


class ResourceExhausted(RetryableError):
    pass


class Aborted(RetryableError):
    pass


class InvalidArgument(PermanentError):
    pass


class AlreadyExists(PermanentError):
    @property
    def payment_id(self) -> str:
        """The payment that holds the idempotency key."""
        return self.metadata.get("payment_id", "")

    @property
    def refund_id(self) -> str:
        """The refund that holds the idempotency key (RefundPayment)."""
        return self.metadata.get("refund_id", "")

    @property
    def status(self) -> str:
        """The status name of the payment or refund holding the key."""
        return self.metadata.get("status", "")


class FailedPrecondition(PermanentError):
    pass


class PaymentNotRefundable(FailedPrecondition):
    """Only a SUCCEEDED payment can be refunded (a REVERSED one has nothing left)."""


class RefundExceedsRemaining(FailedPrecondition):
    @property
    def remaining(self) -> int:
        """How much of the payment can still be refunded."""
        return int(self.metadata.get("remaining", "0") or 0)


class ProviderBooksDisagree(FailedPrecondition):
    """CorrectPayment refused: the provider's books do not say what the
    payment's refunds and disputes say (list its refunds first)."""


class NotFound(PermanentError):
    pass


class Unauthenticated(PermanentError):
    pass


class PermissionDenied(PermanentError):
    pass


class CursorExpired(PermanentError):
    """The change feed's updates after this cursor were deleted (retention):
    start again without a cursor and catch up with GetPayment/ListPayments."""


class TooManyWebhookEndpoints(PermanentError):
    """The client has the most webhook endpoints allowed (16): a retry never
    helps; delete one first."""


class ServerError(PermanentError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[PaymentsClientError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.OUT_OF_RANGE: CursorExpired,
}


# Finer classes for a code, chosen by ErrorInfo.reason.
_BY_REASON: dict[tuple[grpc.StatusCode, str], type[PaymentsClientError]] = {
    (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_NOT_REFUNDABLE"): PaymentNotRefundable,
    (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_REMAINING"): RefundExceedsRemaining,
    (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_BOOKS_DISAGREE"): ProviderBooksDisagree,
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WEBHOOK_ENDPOINTS"): TooManyWebhookEndpoints,
}


def _rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    # An AioRpcError is a snapshot: its code(), details() and
    # trailing_metadata() are plain methods, so the synchronous from_call
    # reads it (rpc_status.aio.from_call awaits them and is for live calls).
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except (ValueError, DecodeError):
        # Details inconsistent with the status or unreadable: keep code and message.
        return None
    return status


def from_rpc_error(err: grpc.aio.AioRpcError) -> PaymentsClientError:
    """The one mapping of a failed call to the client's error tree."""
    code = err.code()
    reason, metadata, violations, delay = "", {}, [], None
    status = _rich_status(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    cls = _BY_REASON.get((code, reason)) or _BY_CODE.get(code, ServerError)
    return cls(
        code,
        err.details() or "",
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_delay=delay,
    )
