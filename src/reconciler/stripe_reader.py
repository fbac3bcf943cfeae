"""Read-only access to the provider: Stripe's API through the official SDK, async.

    retrieve_intent(id)      GET /v1/payment_intents/{id}?expand[]=latest_charge
    find_intents(payment_id) GET /v1/payment_intents/search?query=metadata['payment_id']:'..'
    events_page(...)        GET /v1/events?created[gte]=&types[]=&ending_before|starting_after=
    intents_page(...)       GET /v1/payment_intents?created[gte]=&created[lte]=&starting_after=

What can go wrong, in one table (provider error -> ours):

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
The SDK is used through `raw_request_async` (its auth, encoding and error
classes), without building StripeObjects from the answers, as payment_svc's
adapter does. No SDK retries: the next run is the retry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import stripe

from reconciler.stripe_objects import (
    EVENT_TYPES,
    MalformedAnswer,
    ProviderEvent,
    ProviderIntent,
    parse_event,
    parse_intent,
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
        # Telemetry would add the previous request's latency and platform
        # details to every call: nothing the provider needs from us.
        stripe.enable_telemetry = False
        self._timeout = timeout
        self._http = stripe.AIOHTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url},
            http_client=self._http,
            max_network_retries=0,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

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

    async def _get(
        self, path: str, *, not_found_is_an_answer: bool = True, **params: Any
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.raw_request_async("get", path, **params)
        except stripe.InvalidRequestError as exc:
            if not_found_is_an_answer and (
                exc.http_status == 404 or exc.code == "resource_missing"
            ):
                raise NotFoundAtProvider(exc.user_message or str(exc)) from None
            raise ProviderRefused(_describe(exc)) from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise ProviderRefused(_describe(exc)) from None
        except TimeoutError:
            raise ProviderUnavailable(f"no answer within {self._timeout:g}s") from None
        except stripe.StripeError as exc:  # connection, 5xx, rate limits
            raise ProviderUnavailable(_describe(exc)) from None
        body = response.data
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{path}: the answer is not a JSON object")
        return body


def _describe(exc: stripe.StripeError) -> str:
    status = f"http {exc.http_status}" if exc.http_status else "no http answer"
    return f"{type(exc).__name__} ({status}): {exc.user_message or exc.code or ''}".rstrip(": ")


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


def _event(obj: Any) -> ProviderEvent:
    try:
        return parse_event(obj)
    except MalformedAnswer as exc:
        raise ProviderUnavailable(str(exc)) from None
