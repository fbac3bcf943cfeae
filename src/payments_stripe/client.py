"""The Stripe SDK, set up once, and the one table of what its errors mean.

    failure          raised as                            retryable  charged?
    DECLINED         stripe.CardError                      no         no
    INVALID_REQUEST  stripe.InvalidRequestError (not 404)  no         no
    NOT_FOUND        InvalidRequestError 404 /             no         no
                     resource_missing
    CONFLICT         stripe.IdempotencyError               no         unknown
    REFUSED          401/403 (Authentication-,             no         unknown
                     PermissionError): our key or account
    UNAVAILABLE      a timeout, a connection error, 5xx,   yes        unknown
                     429, any other StripeError

A caller that creates something reads "charged? no" as FAILED and "unknown" as
UNKNOWN (never FAILED: a timeout may have charged); a reader reads NOT_FOUND
as an answer, UNAVAILABLE as "retry may help", the rest as "our request is
wrong". The SDK is used through `raw_request_async` (its auth, encoding,
Idempotency-Key and error classes) without building StripeObjects, which cost
more CPU than the rest of a call. No SDK retries: retrying is the reconciler's
job, with the same idempotency key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import stripe


class Failure(enum.Enum):
    DECLINED = "declined"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"

    @property
    def retryable(self) -> bool:
        return self is Failure.UNAVAILABLE

    @property
    def charged_nothing(self) -> bool:
        """The provider said no before moving any money."""
        return self in (Failure.DECLINED, Failure.INVALID_REQUEST, Failure.NOT_FOUND)


def classify(exc: BaseException) -> Failure:
    """The one table (module docstring): what a failed call means."""
    if isinstance(exc, stripe.CardError):
        return Failure.DECLINED
    if isinstance(exc, stripe.IdempotencyError):
        return Failure.CONFLICT
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status == 404 or exc.code == "resource_missing":
            return Failure.NOT_FOUND
        return Failure.INVALID_REQUEST
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return Failure.REFUSED
    return Failure.UNAVAILABLE  # TimeoutError, connection errors, 5xx, 429, the rest


def describe(exc: stripe.StripeError) -> str:
    status = f"http {exc.http_status}" if exc.http_status else "no http answer"
    return f"{type(exc).__name__} ({status}): {exc.user_message or exc.code or ''}".rstrip(": ")


@dataclass
class StripeApi:
    """One SDK client for one base URL and key: raw requests, no retries."""

    client: stripe.StripeClient
    http: stripe.AIOHTTPClient
    timeout: float

    @classmethod
    def open(cls, *, api_key: str, base_url: str, timeout: float) -> StripeApi:
        # Telemetry adds the previous request's latency and platform details
        # (platform.platform(), per request) to every call: costly on the hot
        # path, and nothing the provider needs from us.
        stripe.enable_telemetry = False
        http = stripe.AIOHTTPClient(timeout=timeout)
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url},
            http_client=http,
            max_network_retries=0,
        )
        return cls(client, http, timeout)

    async def request(
        self, method: str, path: str, *, idempotency_key: str | None = None, **params: Any
    ) -> Any:
        """The answer's JSON body (a dict, or whatever the provider sent)."""
        if idempotency_key is not None:
            params["idempotency_key"] = idempotency_key
        response = await self.client.raw_request_async(method, path, **params)
        return response.data

    async def close(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]
