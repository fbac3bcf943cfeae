"""Views for the Stripe API subset (/v1): authenticate, translate, call one use case."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Final

from aiohttp import web

from provider_sim import forms
from provider_sim.appkeys import SIMULATOR
from provider_sim.errors import StripeApiError
from provider_sim.gate import Reply
from provider_sim.intents import JsonObject
from provider_sim.ledger import random_id
from provider_sim.simulator import encode

MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
JSON: Final = "application/json"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/payment_intents", create_payment_intent)
    app.router.add_get("/v1/payment_intents", list_payment_intents)
    # Registered before /{intent} so that "search" is not taken for an id.
    app.router.add_get("/v1/payment_intents/search", search_payment_intents)
    app.router.add_get("/v1/payment_intents/{intent}", retrieve_payment_intent)
    app.router.add_post("/v1/payment_intents/{intent}/cancel", cancel_payment_intent)
    app.router.add_get("/v1/charges/{charge}", retrieve_charge)
    app.router.add_post("/v1/refunds", create_refund)
    app.router.add_get("/v1/refunds", list_refunds)
    app.router.add_get("/v1/refunds/{refund}", retrieve_refund)
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/events/{event}", retrieve_event)


async def create_payment_intent(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    api_key = authenticate(request, simulator.settings.api_key)
    key = _idempotency_key(request)
    pairs = forms.parse_form(await request.read())
    return _reply(await simulator.create_intent(api_key, key, pairs), key)


async def cancel_payment_intent(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    api_key = authenticate(request, simulator.settings.api_key)
    key = _idempotency_key(request)
    pairs = forms.parse_form(await request.read())
    intent_id = request.match_info["intent"]
    return _reply(await simulator.cancel_intent(api_key, key, intent_id, pairs), key)


async def create_refund(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    api_key = authenticate(request, simulator.settings.api_key)
    key = _idempotency_key(request)
    pairs = forms.parse_form(await request.read())
    return _reply(await simulator.create_refund(api_key, key, pairs), key)


async def retrieve_payment_intent(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    expand_charge = forms.expands_charge(request.query, forms.EXPAND_INTENT)
    intent = await simulator.retrieve_intent(
        request.match_info["intent"], expand_charge=expand_charge
    )
    return _json(intent)


async def list_payment_intents(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.list_intents(forms.intent_list_params(request.query)))


async def retrieve_charge(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.retrieve_charge(request.match_info["charge"]))


async def retrieve_refund(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.retrieve_refund(request.match_info["refund"]))


async def list_refunds(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.list_refunds(forms.refund_list_params(request.query)))


async def search_payment_intents(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.search_intents(forms.search_params(request.query)))


async def list_events(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.list_events(forms.event_list_params(request.query)))


async def retrieve_event(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    authenticate(request, simulator.settings.api_key)
    return _json(await simulator.retrieve_event(request.match_info["event"]))


def error_response(error: StripeApiError) -> web.Response:
    headers = _request_id()
    headers["Stripe-Should-Retry"] = "true" if error.should_retry else "false"
    return web.Response(
        body=encode(error.to_json()), status=error.status, content_type=JSON, headers=headers
    )


def authenticate(request: web.Request, required_key: str | None) -> str:
    """The secret key of the request, as Stripe reads it (Bearer, or Basic with the key as user)."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if not header:
        raise StripeApiError.unauthorized(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth "
            "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
        )
    if scheme == "bearer":
        key = credentials.strip()
    elif scheme == "basic":
        key = _basic_user(credentials)
    else:
        raise StripeApiError.unauthorized("Invalid Authorization header: use Bearer auth.")
    if required_key is None:
        valid = key.startswith("sk_test_")
    else:
        valid = hmac.compare_digest(key.encode(), required_key.encode())
    if not valid:
        raise StripeApiError.unauthorized(f"Invalid API Key provided: {_redact(key)}")
    return key


def _basic_user(credentials: str) -> str:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise StripeApiError.unauthorized("Invalid Basic Authorization header.") from None
    return decoded.partition(":")[0]


def _redact(key: str) -> str:
    return f"{key[:8]}{'*' * 4}{key[-4:]}" if len(key) > 12 else "****"


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise StripeApiError.invalid(
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            param="Idempotency-Key",
        )
    return key


def _request_id() -> dict[str, str]:
    return {"Request-Id": random_id("req")}


def _json(body: JsonObject) -> web.Response:
    return web.Response(body=encode(body), content_type=JSON, headers=_request_id())


def _reply(reply: Reply, key: str | None) -> web.Response:
    headers = _request_id()
    if key is not None:
        headers["Idempotency-Key"] = key
    if reply.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(
        body=reply.response.body,
        status=reply.response.status,
        content_type=JSON,
        headers=headers,
    )
