"""The provider adapter: Stripe's API through the official SDK, async
(payments_stripe.client sets the SDK up and holds the one error table).

What can go wrong, in our words (SPEC §3, issue #2):

    stripe.CardError               declined            -> FAILED, provider's code
    stripe.InvalidRequestError     refused, not charged -> FAILED, provider's code
      (but idempotency_error)      a key conflict       -> UNKNOWN
    everything else: timeout, connection error, 5xx, 401/403/429, rate
    limits, an answer we cannot parse             -> UNKNOWN (never FAILED)

Refunds (create_refund) read the same table: a refusal before anything was
refunded (a 4xx: more than the charge has left, an unknown intent) is
FAILED with the provider's code; no answer (timeout, 5xx, a cut
connection, a key conflict) is UNKNOWN, never FAILED.

The same code runs against Stripe's test mode by changing the base URL and key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import stripe
import structlog

from payment_svc.domain.model import ProviderCharge, ProviderResult
from payment_svc.domain.refunds import ProviderRefundRequest, RefundOutcome, RefundStatus
from payment_svc.domain.status import PaymentStatus
from payments_stripe.client import Failure, StripeApi, classify
from payments_stripe.status import (
    field,
    intent_failure,
    intent_status,
    refund_failure,
    refund_status,
)

log = structlog.get_logger("payment_svc.provider")


class StripeProvider:
    def __init__(self, *, api_key: str, base_url: str, timeout: float) -> None:
        self._timeout = timeout
        self._api = StripeApi.open(api_key=api_key, base_url=base_url, timeout=timeout)

    async def close(self) -> None:
        await self._api.close()

    async def create_payment(
        self, charge: ProviderCharge, *, timeout: float | None = None
    ) -> ProviderResult:
        """`timeout`: what the caller's deadline leaves for this call; never
        more than PROVIDER_TIMEOUT_SECONDS."""
        bound = self._timeout if timeout is None else min(timeout, self._timeout)
        params: dict[str, Any] = {
            "amount": charge.amount,
            "currency": charge.currency.lower(),
            "payment_method": charge.payment_method,
            "confirm": True,
            # Server-side confirmation without redirects: no return_url needed.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"payment_id": charge.payment_id},
        }
        if charge.description:
            params["description"] = charge.description
        try:
            async with asyncio.timeout(bound):
                # raw_request: the SDK's request path (auth, encoding, the
                # Idempotency-Key, error classes), without building a typed
                # StripeObject from the answer, which cost more CPU than the
                # rest of the call; the adapter reads plain JSON.
                intent = await self._api.request(
                    "post",
                    "/v1/payment_intents",
                    idempotency_key=charge.idempotency_key or charge.payment_id,
                    **params,
                )
        except TimeoutError:
            if bound < self._timeout:
                return _unknown(f"provider call timed out at the caller's deadline ({bound:.2f} s)")
            return _unknown("provider call timed out")
        except stripe.StripeError as exc:
            failure = classify(exc)
            if failure.charged_nothing:
                return _declined(exc)
            if failure is Failure.CONFLICT:
                return _unknown(f"idempotency conflict: {exc.user_message or exc.code}")
            return _unknown(f"{type(exc).__name__} (http {exc.http_status})")
        except Exception as exc:  # an answer we cannot make sense of
            log.exception("provider_unexpected_error")
            return _unknown(f"unexpected {type(exc).__name__}")
        return result_of_intent(intent)

    async def create_refund(
        self, ask: ProviderRefundRequest, *, timeout: float | None = None
    ) -> RefundOutcome:
        """POST /v1/refunds with our refund id as the Idempotency-Key and in
        metadata[refund_id]; never more than PROVIDER_TIMEOUT_SECONDS."""
        bound = self._timeout if timeout is None else min(timeout, self._timeout)
        params: dict[str, Any] = {
            "payment_intent": ask.provider_payment_id,
            "amount": ask.amount,
            "metadata": {"refund_id": ask.refund_id, "payment_id": ask.payment_id},
        }
        if ask.reason:
            params["reason"] = ask.reason
        try:
            async with asyncio.timeout(bound):
                refund = await self._api.request(
                    "post", "/v1/refunds", idempotency_key=ask.refund_id, **params
                )
        except TimeoutError:
            if bound < self._timeout:
                return _refund_unknown(
                    f"provider call timed out at the caller's deadline ({bound:.2f} s)"
                )
            return _refund_unknown("provider call timed out")
        except stripe.StripeError as exc:
            failure = classify(exc)
            if failure.charged_nothing:
                return RefundOutcome(
                    status=RefundStatus.FAILED,
                    failure_code=exc.code or failure.value,
                    failure_message=exc.user_message or "refused by the provider",
                    note=f"provider refused: {type(exc).__name__} (http {exc.http_status})",
                )
            if failure is Failure.CONFLICT:
                return _refund_unknown(f"idempotency conflict: {exc.user_message or exc.code}")
            return _refund_unknown(f"{type(exc).__name__} (http {exc.http_status})")
        except Exception as exc:  # an answer we cannot make sense of
            log.exception("provider_unexpected_error")
            return _refund_unknown(f"unexpected {type(exc).__name__}")
        return outcome_of_refund(refund)


def outcome_of_refund(refund: Any) -> RefundOutcome:
    """A Stripe Refund (SDK object or dict) in our terms."""
    provider_status, mapped = refund_status(refund)
    ours = RefundStatus[mapped.name]
    code, message = refund_failure(refund) if ours is RefundStatus.FAILED else (None, None)
    provider_id = field(refund, "id")
    return RefundOutcome(
        status=ours,
        provider_refund_id=provider_id if isinstance(provider_id, str) and provider_id else None,
        provider_status=provider_status.value,
        failure_code=code or ("refund_failed" if ours is RefundStatus.FAILED else None),
        failure_message=message,
        note=f"provider status {provider_status.value}",
    )


def _refund_unknown(why: str) -> RefundOutcome:
    log.warning("provider_refund_outcome_unknown", reason=why)
    return RefundOutcome(status=RefundStatus.UNKNOWN, note=why)


def result_of_intent(intent: Any) -> ProviderResult:
    provider_status, mapped = intent_status(intent)
    ours = PaymentStatus[mapped.name]
    code, message = intent_failure(intent) if ours is PaymentStatus.FAILED else (None, None)
    return ProviderResult(
        status=ours,
        provider_payment_id=field(intent, "id"),
        provider_status=provider_status.value,
        failure_code=code,
        failure_message=message,
        note=f"provider status {provider_status.value}",
    )


def _declined(exc: stripe.StripeError) -> ProviderResult:
    intent = field(exc.error, "payment_intent")
    code = field(exc.error, "decline_code") or field(exc.error, "code")
    return ProviderResult(
        status=PaymentStatus.FAILED,
        provider_payment_id=field(intent, "id"),
        provider_status=field(intent, "status"),
        failure_code=code or exc.code or "provider_declined",
        failure_message=exc.user_message or "declined by the provider",
        note=f"provider refused: {type(exc).__name__}",
    )


def _unknown(why: str) -> ProviderResult:
    log.warning("provider_outcome_unknown", reason=why)
    return ProviderResult(status=PaymentStatus.UNKNOWN, note=why)
