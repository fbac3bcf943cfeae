"""Read-only access to the provider: Stripe's API through the official SDK, async.

    retrieve_intent(id)      GET /v1/payment_intents/{id}?expand[]=latest_charge
    find_intents(payment_id) GET /v1/payment_intents/search?query=metadata['payment_id']:'..'
    events_page(...)        GET /v1/events?created[gte]=&types[]=&ending_before|starting_after=
    intents_page(...)       GET /v1/payment_intents?created[gte]=&created[lte]=&starting_after=
    retrieve_refund(id)      GET /v1/refunds/{id}
    refunds_of(intent)       GET /v1/refunds?payment_intent=  (every page)

What can go wrong (client.py's one table, as the reader raises it):

    ProviderError                    the provider gave no usable answer
     ├── NotFoundAtProvider          404 resource_missing of an object asked for by its
     │                               id: an answer ("does not know this id"); never
     │                               for the search, whose answer is a list
     ├── ProviderUnavailable         timeout, connection refused/reset, 5xx, 429,
     │                               a body that is not the object asked for: retry may help
     └── ProviderRefused             401/403, other 4xx, the search's own 404: our request,
                                     key or base URL is wrong,
                                     retrying the same request will not help

Nothing here ever turns into FAILED: a payment is only what the provider says it is.
The SDK is set up by client.py (raw requests, no StripeObjects, no SDK
retries: the next run is the retry).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import stripe

from payments_stripe.client import Failure, StripeApi, classify, describe
from payments_stripe.objects import (
    EVENT_TYPES,
    MalformedAnswer,
    ProviderEvent,
    ProviderIntent,
    ProviderRefund,
    parse_event,
    parse_intent,
    parse_refund,
)

T = TypeVar("T")


class ProviderError(Exception):
    retryable = False


class NotFoundAtProvider(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderRefused(ProviderError):
    pass


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]  # in the provider's order: newest first
    has_more: bool


class StripeReader:
    def __init__(self, *, api_key: str, base_url: str, timeout: float) -> None:
        self._timeout = timeout
        self._api = StripeApi.open(api_key=api_key, base_url=base_url, timeout=timeout)

    async def close(self) -> None:
        await self._api.close()

    async def retrieve_intent(self, intent_id: str) -> ProviderIntent:
        body = await self._get(f"/v1/payment_intents/{intent_id}", expand=["latest_charge"])
        return _intent(body)

    async def find_intents(self, payment_id: str) -> list[ProviderIntent]:
        """The intents carrying our payment id in metadata['payment_id'],
        newest first. Only a search that answered with a list says "none"
        (an empty list): any failure of the search, its own 404 included (a
        wrong STRIPE_API_BASE, another API), is a ProviderError."""
        quoted = payment_id.replace("\\", "\\\\").replace("'", "\\'")
        body = await self._get(
            "/v1/payment_intents/search",
            query=f"metadata['payment_id']:'{quoted}'",
            limit=10,
            expand=["data.latest_charge"],
            not_found_is_an_answer=False,
        )
        intents = [_intent(obj) for obj in _data(body)]
        return [i for i in intents if i.payment_id == payment_id]

    async def events_page(
        self,
        *,
        created_gte: int | None = None,
        ending_before: str | None = None,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> Page[ProviderEvent]:
        """Newest first. `ending_before=id`: the `limit` events right after that
        one (the page closest to it); `starting_after=id`: the ones right before."""
        params: dict[str, Any] = {"limit": limit, "types": list(EVENT_TYPES)}
        if created_gte is not None:
            params["created"] = {"gte": created_gte}
        if ending_before is not None:
            params["ending_before"] = ending_before
        if starting_after is not None:
            params["starting_after"] = starting_after
        body = await self._get("/v1/events", **params)
        return Page([_event(obj) for obj in _data(body)], body.get("has_more") is True)

    async def intents_page(
        self,
        *,
        created_gte: int,
        created_lte: int,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> Page[ProviderIntent]:
        """Intents created in [created_gte, created_lte] (whole seconds), newest first."""
        params: dict[str, Any] = {
            "limit": limit,
            "created": {"gte": created_gte, "lte": created_lte},
            "expand": ["data.latest_charge"],
        }
        if starting_after is not None:
            params["starting_after"] = starting_after
        body = await self._get("/v1/payment_intents", **params)
        return Page([_intent(obj) for obj in _data(body)], body.get("has_more") is True)

    async def retrieve_refund(self, refund_id: str) -> ProviderRefund:
        return _refund(await self._get(f"/v1/refunds/{refund_id}"))

    async def refunds_of(self, intent_id: str, *, limit: int = 100) -> list[ProviderRefund]:
        """Every refund of the intent, newest first. Only a list that was
        answered says "not there": any failure is a ProviderError (the
        intent's own 404 included: NotFoundAtProvider)."""
        refunds: list[ProviderRefund] = []
        params: dict[str, Any] = {"payment_intent": intent_id, "limit": limit}
        while True:
            body = await self._get("/v1/refunds", **params)
            page = [_refund(obj) for obj in _data(body)]
            refunds.extend(page)
            if body.get("has_more") is not True or not page:
                return refunds
            params["starting_after"] = page[-1].id

    async def _get(
        self, path: str, *, not_found_is_an_answer: bool = True, **params: Any
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._api.request("get", path, **params)
        except TimeoutError:
            raise ProviderUnavailable(f"no answer within {self._timeout:g}s") from None
        except stripe.StripeError as exc:
            failure = classify(exc)
            if failure is Failure.NOT_FOUND and not_found_is_an_answer:
                raise NotFoundAtProvider(exc.user_message or str(exc)) from None
            if failure.retryable:  # connection, 5xx, rate limits
                raise ProviderUnavailable(describe(exc)) from None
            raise ProviderRefused(describe(exc)) from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{path}: the answer is not a JSON object")
        return body


def _data(body: dict[str, Any]) -> list[Any]:
    data = body.get("data")
    if not isinstance(data, list):
        raise ProviderUnavailable("a list answer without data")
    return data


def _intent(obj: Any) -> ProviderIntent:
    try:
        return parse_intent(obj)
    except MalformedAnswer as exc:
        raise ProviderUnavailable(str(exc)) from None


def _refund(obj: Any) -> ProviderRefund:
    try:
        return parse_refund(obj)
    except MalformedAnswer as exc:
        raise ProviderUnavailable(str(exc)) from None


def _event(obj: Any) -> ProviderEvent:
    try:
        return parse_event(obj)
    except MalformedAnswer as exc:
        raise ProviderUnavailable(str(exc)) from None
