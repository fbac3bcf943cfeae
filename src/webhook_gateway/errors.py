"""The gateway's errors, one tree; each knows its HTTP status and a stable reason.

WebhookError
 ├── RequestRejected            4xx: the request itself is wrong; resending it never helps
 │    ├── BodyTooLarge          413 body_too_large
 │    ├── SignatureError        400 missing_header, malformed_header,
 │    │                             no_matching_signature, timestamp_outside_tolerance
 │    ├── EventError            400 invalid_json, invalid_event
 │    └── EventRefused          400 event_rejected (payment-svc said INVALID_ARGUMENT)
 └── ForwardFailed              503: payment-svc did not record the event; a retry may help
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    BODY_TOO_LARGE = "body_too_large"
    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    NO_MATCHING_SIGNATURE = "no_matching_signature"
    TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance"
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    EVENT_REJECTED = "event_rejected"
    PAYMENT_SERVICE_UNAVAILABLE = "payment_service_unavailable"
    PAYMENT_SERVICE_TIMEOUT = "payment_service_timeout"
    PAYMENT_SERVICE_BUSY = "payment_service_busy"
    PAYMENT_SERVICE_MISCONFIGURED = "payment_service_misconfigured"
    PAYMENT_SERVICE_ERROR = "payment_service_error"


class WebhookError(Exception):
    status: int = 500
    retryable: bool = False

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RequestRejected(WebhookError):
    status = 400


class BodyTooLarge(RequestRejected):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(Reason.BODY_TOO_LARGE, f"the body exceeds {limit} bytes")


class SignatureError(RequestRejected):
    """The Stripe-Signature header is absent, unreadable, stale, or signs something else."""


class EventError(RequestRejected):
    """The verified body is not a provider event."""


class EventRefused(RequestRejected):
    """payment-svc refused the event as malformed (INVALID_ARGUMENT)."""


class ForwardFailed(WebhookError):
    """payment-svc did not confirm the event: answer 503 so that the provider retries."""

    status = 503
    retryable = True
