"""The one error tree of the payment service.

    PaymentsError
     ├── RetryableError            a retry may help
     │    ├── StoreUnavailable     Postgres unreachable, slow or failing over
     │    │    ├── ResultNotRecorded  the provider answered; the write did not
     │    │    │                      make it in time (payment_id in ErrorInfo)
     │    │    └── RefundNotRecorded  the same for a refund (refund_id)
     │    └── ProviderUnavailable  the provider cannot be asked right now
     └── PermanentError            a retry of the same request never helps
          ├── InvalidArgument      field violations
          │    ├── UnprocessableEvent  a provider event that can never be
          │    │                       understood or stored: quarantined
          │    └── InvalidCursor   a feed cursor this deployment did not issue
          ├── CursorExpired        a feed cursor older than the updates kept
          ├── DuplicatePayment     idempotency key already used (same or other params)
          ├── DuplicateRefund      a refund's idempotency key already used
          ├── NotFound
          ├── FailedPrecondition   not in a state for this (re-drive of a final payment)
          │    ├── AlreadyAtProvider  re-drive of a payment with a provider id
          │    ├── PaymentNotRefundable   refund of a payment not SUCCEEDED
          │    └── RefundExceedsRemaining more than remains (`remaining`)
          ├── Unauthenticated
          ├── PermissionDenied
          └── (domain/webhooks.py) TooManyEndpoints, and UrlNotAllowed
               under InvalidArgument

Each boundary maps this tree in one table: entrypoints/errors.py to gRPC
statuses, adapters/stripe_provider.py from the provider's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from payment_svc.domain.status import PaymentStatus

if TYPE_CHECKING:  # refunds.py raises these: no import cycle at run time
    from payment_svc.domain.refunds import RefundStatus


class PaymentsError(Exception):
    retryable = False
    reason = "INTERNAL"


class RetryableError(PaymentsError):
    retryable = True


class PermanentError(PaymentsError):
    pass


class StoreUnavailable(RetryableError):
    reason = "STORE_UNAVAILABLE"


class ResultNotRecorded(StoreUnavailable):
    """The provider answered but the database did not take the answer within
    the caller's deadline. The payment stays as it was and converges (the
    provider's webhook, the reconciler); the caller learns which payment."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(
            f"payment {payment_id} was sent to the provider, but its answer could not be "
            "recorded yet (database unavailable); it will be reconciled: look it up later"
        )


class RefundNotRecorded(StoreUnavailable):
    """The provider answered a refund but the database did not take the
    answer within the caller's deadline: the refund stays as recorded
    (PENDING) and converges through the webhook or the reconciler."""

    def __init__(self, refund_id: str, payment_id: str) -> None:
        self.refund_id = refund_id
        self.payment_id = payment_id
        super().__init__(
            f"refund {refund_id} was sent to the provider, but its answer could not be "
            "recorded yet (database unavailable); it will be reconciled: look it up later"
        )


class ProviderUnavailable(RetryableError):
    reason = "PROVIDER_UNAVAILABLE"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(PermanentError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class UnprocessableEvent(InvalidArgument):
    """A provider event that can never be understood or stored (hostile or
    broken contents). The provider's redelivery cannot help: it is kept in
    the quarantine and acknowledged, never retried."""

    reason = "UNPROCESSABLE_PROVIDER_EVENT"


class InvalidCursor(InvalidArgument):
    """A change-feed cursor that this deployment did not issue for this client."""

    reason = "INVALID_CURSOR"


class CursorExpired(PermanentError):
    """A change-feed cursor older than the updates kept (retention): the
    updates after it are gone, so resuming from it would skip some. The
    caller must start again from the oldest kept (an empty cursor) and
    reconcile with GetPayment/ListPayments."""

    reason = "CURSOR_EXPIRED"


class DuplicatePayment(PermanentError):
    """The idempotency key was used before. `same_parameters` tells a retry
    (DUPLICATE_PAYMENT) from a reuse of the key for another payment
    (IDEMPOTENCY_KEY_REUSED)."""

    def __init__(self, payment_id: str, status: PaymentStatus, *, same_parameters: bool) -> None:
        self.payment_id = payment_id
        self.status = status
        self.same_parameters = same_parameters
        self.reason = "DUPLICATE_PAYMENT" if same_parameters else "IDEMPOTENCY_KEY_REUSED"
        super().__init__(
            f"idempotency key already used by payment {payment_id} ({status.value})"
            + ("" if same_parameters else " with other parameters")
        )


class DuplicateRefund(PermanentError):
    """A refund's idempotency key was used before (keys are unique per
    client among refunds). `same_parameters` tells a retry
    (DUPLICATE_REFUND) from a reuse of the key (IDEMPOTENCY_KEY_REUSED)."""

    def __init__(self, refund_id: str, status: RefundStatus, *, same_parameters: bool) -> None:
        self.refund_id = refund_id
        self.status = status
        self.same_parameters = same_parameters
        self.reason = "DUPLICATE_REFUND" if same_parameters else "IDEMPOTENCY_KEY_REUSED"
        super().__init__(
            f"idempotency key already used by refund {refund_id} ({status.value})"
            + ("" if same_parameters else " with other parameters")
        )


class NotFound(PermanentError):
    """Nothing with that id for this caller: another client's payment is
    not found either."""

    reason = "NOT_FOUND"


class FailedPrecondition(PermanentError):
    reason = "FAILED_PRECONDITION"


class AlreadyAtProvider(FailedPrecondition):
    """A re-drive of a payment the provider already gave an id for."""

    reason = "PAYMENT_ALREADY_AT_PROVIDER"


class RefundAlreadyAtProvider(FailedPrecondition):
    """A re-drive of a refund the provider already gave an id for."""

    reason = "REFUND_ALREADY_AT_PROVIDER"


class RefundNotRedrivable(FailedPrecondition):
    """A re-drive of a final refund, or past the re-drive window."""

    reason = "REFUND_NOT_REDRIVABLE"


class ProviderBooksDisagree(FailedPrecondition):
    """A correction refused: what the provider took back is not what the
    payment's refunds and disputes say; recomputing would not make our books
    the provider's (list its refunds first: the settlement diff)."""

    reason = "PROVIDER_BOOKS_DISAGREE"

    def __init__(self, payment_id: str, ours: int, provider_refunded: int, disputed: bool) -> None:
        super().__init__(
            f"payment {payment_id}: its refunds and disputes take back {ours}; the provider's "
            f"succeeded refunds {provider_refunded}"
            + (", and the charge is disputed" if disputed else "")
        )
        self.payment_id = payment_id
        self.ours = ours
        self.provider_refunded = provider_refunded
        self.disputed = disputed


class PaymentNotRefundable(FailedPrecondition):
    """Only a SUCCEEDED payment can be refunded (a REVERSED one has nothing left)."""

    reason = "PAYMENT_NOT_REFUNDABLE"

    def __init__(self, payment_id: str, status: PaymentStatus) -> None:
        self.payment_id = payment_id
        self.status = status
        super().__init__(f"payment {payment_id} is {status.value}: it cannot be refunded")


class RefundExceedsRemaining(FailedPrecondition):
    """More than remains of the payment (its amount less refunds succeeded,
    pending or unknown, less disputes); `remaining` says how much does."""

    reason = "REFUND_EXCEEDS_REMAINING"

    def __init__(self, payment_id: str, *, remaining: int) -> None:
        self.payment_id = payment_id
        self.remaining = remaining
        super().__init__(
            f"the refund is more than remains of payment {payment_id} ({remaining} remains)"
        )


class Unauthenticated(PermanentError):
    """A missing or unknown bearer token."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(PermanentError):
    """A known token whose role may not call this method (METHOD_ROLES,
    default deny)."""

    reason = "PERMISSION_DENIED"
