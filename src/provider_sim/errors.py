"""The two error shapes the simulator answers with, one per API.

    Exception
      ├─ StripeApiError   /v1: {"error": {"type", "code", "message", "param", ...}}
      │                   402 card_error, 400/404 invalid_request_error,
      │                   400 idempotency_error, 401 authentication, 500 api_error
      └─ ControlError     /_sim: {"error": {"reason", "message"}}

`should_retry` says whether sending the same request again can help; it becomes
Stripe's `Stripe-Should-Retry` header.
"""

from __future__ import annotations

from typing import Any

from provider_sim.intents import JsonObject, PaymentIntent


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

    def to_json(self) -> JsonObject:
        return {"error": {"reason": self.reason, "message": self.message}}
