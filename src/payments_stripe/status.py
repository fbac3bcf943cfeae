"""Stripe's payment-intent shapes and the one mapping of their statuses to ours.

Ours is `Status`: the platform's payment states (the names of
payments.v1.PaymentStatus and of payment_svc's domain PaymentStatus, which
converts by name). The mapping reports the intent's own status and, apart,
how much of it refunds and disputes took back (`snapshot_reversed`); whether
that makes it REVERSED is the one rule of payments_kit/reversal.py, which
payment-svc's domain applies to what it records and `reversed_status` to the
reconciler's view of an intent.

Stripe statuses (https://docs.stripe.com/payments/paymentintents/lifecycle):
every one is listed in an exhaustive match; a status Stripe adds later falls
into `Unknown` and maps to PENDING (not final), so the reconciler keeps
asking instead of anyone guessing.
"""

from __future__ import annotations

import enum
from typing import Any

from payments_kit.reversal import reverses_whole


class Status(enum.Enum):
    """The platform's payment states, as this package reports them."""

    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERSED = "REVERSED"

    @property
    def is_final(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.REVERSED)


class StripeIntentStatus(enum.Enum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"
    UNKNOWN = "unknown"  # anything Stripe may add later

    @classmethod
    def parse(cls, value: object) -> StripeIntentStatus:
        if not isinstance(value, str):
            return cls.UNKNOWN
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


def to_payment_status(status: StripeIntentStatus, *, has_payment_error: bool) -> Status:
    S = StripeIntentStatus
    match status:
        case S.SUCCEEDED:
            return Status.SUCCEEDED
        case S.CANCELED:
            return Status.FAILED
        case S.REQUIRES_PAYMENT_METHOD:
            # After a confirmation attempt it means the attempt failed; before
            # one, nothing was tried yet.
            return Status.FAILED if has_payment_error else Status.PENDING
        case S.PROCESSING | S.REQUIRES_CAPTURE | S.REQUIRES_CONFIRMATION | S.REQUIRES_ACTION:
            return Status.PENDING
        case S.UNKNOWN:
            return Status.PENDING


def field(obj: Any, key: str) -> Any:
    """obj[key] or None, for SDK objects (which are not dicts) and dicts alike;
    None for anything else an event may hold there (a number, a string)."""
    if obj is None or isinstance(obj, str | bytes | int | float | list):
        return None
    try:
        return obj[key] if key in obj else None  # noqa: SIM401 - SDK objects: no .get
    except (TypeError, KeyError):
        return None


def intent_status(intent: Any) -> tuple[StripeIntentStatus, Status]:
    """The provider's and our status of a PaymentIntent (SDK object or dict)."""
    provider = StripeIntentStatus.parse(field(intent, "status"))
    error = field(intent, "last_payment_error")
    return provider, to_payment_status(provider, has_payment_error=bool(error))


def intent_failure(intent: Any) -> tuple[str | None, str | None]:
    error = field(intent, "last_payment_error")
    if not error:
        return None, None
    code = _text(field(error, "decline_code")) or _text(field(error, "code"))
    return code, _text(field(error, "message"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def snapshot_reversed(amount: int, *, amount_refunded: int, disputed: bool) -> int:
    """How much of a charge is reversed: a dispute covers what refunds left,
    so a disputed charge is reversed whole (the charge does not carry the
    dispute's amount)."""
    return amount if disputed else amount_refunded


def reversed_status(status: Status, amount: int, amount_reversed: int) -> Status:
    """What an intent of `status` stands for once `amount_reversed` of it is
    taken back: REVERSED by the one rule (payments_kit/reversal.py, which
    payment-svc's domain applies too), SUCCEEDED when it no longer covers
    the whole; any other status is what it is."""
    if status not in (Status.SUCCEEDED, Status.REVERSED):
        return status
    whole = reverses_whole(succeeded=True, amount=amount, amount_reversed=amount_reversed)
    return Status.REVERSED if whole else Status.SUCCEEDED


class RefundState(enum.Enum):
    """The platform's refund states this package reports (the names of
    payments.v1.RefundStatus and of payment_svc's domain RefundStatus,
    which converts by name). UNKNOWN is never the provider's word: it is
    what a caller records when it got no answer."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class StripeRefundStatus(enum.Enum):
    """https://docs.stripe.com/api/refunds/object#refund_object-status"""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"  # anything Stripe may add later

    @classmethod
    def parse(cls, value: object) -> StripeRefundStatus:
        if not isinstance(value, str):
            return cls.UNKNOWN
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


def to_refund_state(status: StripeRefundStatus) -> RefundState:
    S = StripeRefundStatus
    match status:
        case S.SUCCEEDED:
            return RefundState.SUCCEEDED
        case S.FAILED | S.CANCELED:
            return RefundState.FAILED
        case S.PENDING | S.REQUIRES_ACTION | S.UNKNOWN:
            # not final: the reconciler keeps asking rather than guessing
            return RefundState.PENDING


def refund_status(refund: Any) -> tuple[StripeRefundStatus, RefundState]:
    """The provider's and our state of a Refund (SDK object or dict)."""
    provider = StripeRefundStatus.parse(field(refund, "status"))
    return provider, to_refund_state(provider)


def refund_failure(refund: Any) -> tuple[str | None, str | None]:
    """A failed refund's code (Stripe's `failure_reason`) and a message."""
    code = _text(field(refund, "failure_reason"))
    if (
        code is None
        and StripeRefundStatus.parse(field(refund, "status")) is StripeRefundStatus.CANCELED
    ):
        code = "canceled"
    return code, (f"refund failed at the provider: {code}" if code else None)
