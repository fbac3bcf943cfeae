"""The two error shapes the simulator answers with, one per API.

    Exception
      ├─ StripeApiError   /v1: {"error": {"type", "code", "message", "param", ...}}
      │                   402 card_error, 400/404 invalid_request_error,
      │                   400 idempotency_error, 401 authentication, 500 api_error
      └─ ControlError     /_sim: {"error": {"reason", "message"}}

`should_retry` says whether sending the same request again can help; it becomes
Stripe's `Stripe-Should-Retry` header.

A refund or dispute the ledger refuses (a LedgerError) maps to each shape through
one table per API, below: `StripeApiError.refused` and `ControlError.refused`.
"""

from __future__ import annotations

from typing import Any, Final

from provider_sim.intents import JsonObject, PaymentIntent
from provider_sim.refusals import (
    AlreadyDisputed,
    AlreadyRefunded,
    AmountTooLarge,
    ChargeDisputed,
    ChargeMismatch,
    ChargeNotFound,
    IntentNotFound,
    LedgerError,
    NotSucceeded,
    RefundNotFound,
    RefundNotPending,
    RefundNotSucceeded,
)

# Refusals of POST /v1/refunds: (HTTP status, code, param). `None` as param: the
# parameter that named the intent (`payment_intent` or `charge`). More than is left
# has no code on Stripe (only its message and param `amount`); a charge with nothing
# left is `charge_already_refunded`.
_STRIPE_REFUSALS: Final[dict[type[LedgerError], tuple[int, str | None, str | None]]] = {
    IntentNotFound: (400, "resource_missing", "payment_intent"),
    ChargeNotFound: (400, "resource_missing", "charge"),
    ChargeMismatch: (400, "parameter_invalid", "charge"),
    NotSucceeded: (400, "payment_intent_unexpected_state", None),
    AlreadyRefunded: (400, "charge_already_refunded", None),
    ChargeDisputed: (400, "charge_disputed", None),
    AmountTooLarge: (400, None, "amount"),
}

# Refusals of the control API's refund and dispute moves: (HTTP status, reason).
_CONTROL_REFUSALS: Final[dict[type[LedgerError], tuple[int, str]]] = {
    IntentNotFound: (404, "not_found"),
    NotSucceeded: (409, "not_succeeded"),
    AlreadyRefunded: (409, "already_refunded"),
    ChargeDisputed: (409, "disputed"),
    AlreadyDisputed: (409, "already_disputed"),
    AmountTooLarge: (400, "amount_too_large"),
    RefundNotFound: (404, "not_found"),
    RefundNotPending: (409, "not_pending"),
    RefundNotSucceeded: (409, "not_succeeded"),
}


class StripeApiError(Exception):
    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        payment_intent: JsonObject | None = None,
        should_retry: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.payment_intent = payment_intent
        self.should_retry = should_retry

    @classmethod
    def invalid(
        cls, message: str, *, param: str | None = None, code: str | None = None
    ) -> StripeApiError:
        return cls(400, "invalid_request_error", message, param=param, code=code)

    @classmethod
    def missing(cls, message: str, *, param: str | None, status: int = 404) -> StripeApiError:
        return cls(status, "invalid_request_error", message, param=param, code="resource_missing")

    @classmethod
    def unauthorized(cls, message: str) -> StripeApiError:
        return cls(401, "invalid_request_error", message)

    @classmethod
    def idempotency_mismatch(cls, key: str) -> StripeApiError:
        return cls(
            400,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
        )

    @classmethod
    def injected(cls) -> StripeApiError:
        return cls(
            500,
            "api_error",
            "An unknown error occurred (injected by provider-sim before any charge was made).",
            should_retry=True,
        )

    @classmethod
    def card_declined(cls, intent: PaymentIntent) -> StripeApiError:
        error = intent.last_payment_error
        assert error is not None
        return cls(
            402,
            error.type,
            error.message,
            code=error.code,
            decline_code=error.decline_code,
            payment_intent=intent.to_json(),
        )

    @classmethod
    def refused(cls, error: LedgerError, *, named_by: str) -> StripeApiError:
        """A refusal of the ledger; `named_by`: the parameter that named the intent."""
        status, code, param = _STRIPE_REFUSALS[type(error)]
        return cls(status, "invalid_request_error", str(error), code=code, param=param or named_by)

    def to_json(self) -> JsonObject:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        if self.payment_intent is not None:
            error["payment_intent"] = self.payment_intent
        return {"error": error}


class ControlError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def refused(cls, error: LedgerError) -> ControlError:
        status, reason = _CONTROL_REFUSALS[type(error)]
        return cls(status, reason, str(error))

    def to_json(self) -> JsonObject:
        return {"error": {"reason": self.reason, "message": self.message}}
