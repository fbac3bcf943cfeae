"""The aiohttp application: `init_app(settings)` wires verification and forwarding.

    POST /webhooks/stripe   read (bounded) -> verify -> parse -> forward -> answer
    GET  /healthz           the process is alive
    GET  /readyz            payment-svc answers its health check (cached ~1 s)
    GET  /metrics           Prometheus text

Every answer is JSON (errors: {"error": {"reason", "message", "request_id"}}) and
carries X-Request-Id. Nothing about a request yields a 5xx; a 503 only ever means
that payment-svc did not confirm a verified event, so that the provider retries.

A verified body that is not an event we can read is the provider's all the
same, and a redelivery would bring the same bytes: it is forwarded as it is
with why it is not one, payment-svc quarantines it (UNPROCESSABLE_PROVIDER_EVENT),
and the answer is 200 `{"received": true, "quarantined": true}`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from payments_stripe import signature
from payments_stripe.signature import Verifier
from webhook_gateway.errors import (
    BodyTooLarge,
    EventError,
    Reason,
    RequestRejected,
    SignatureError,
    WebhookError,
)
from webhook_gateway.events import ProviderEvent, parse_event
from webhook_gateway.forwarder import Forwarder
from webhook_gateway.metrics import CONTENT_TYPE, Metrics
from webhook_gateway.settings import Settings

log = structlog.get_logger("webhook_gateway")

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
VERIFIER = web.AppKey("verifier", Verifier)
FORWARDER = web.AppKey("forwarder", Forwarder)
REQUEST_ID = web.RequestKey("request_id", str)

WEBHOOK_PATH = "/webhooks/stripe"
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The two possible acknowledgements, serialised once.
_ACK = {
    duplicate: json.dumps({"received": True, "duplicate": duplicate}).encode()
    for duplicate in (False, True)
}
_QUARANTINED = json.dumps({"received": True, "duplicate": False, "quarantined": True}).encode()


def init_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_observe])
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[VERIFIER] = Verifier(settings.secrets, settings.tolerance_seconds)
    app[FORWARDER] = Forwarder(
        settings.payment_svc_target, settings.token, settings.forward_timeout, metrics
    )
    app.cleanup_ctx.append(_payment_svc_channel)
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


async def _payment_svc_channel(app: web.Application) -> AsyncIterator[None]:
    # Runs after in-flight requests finished (runner cleanup), so none loses its channel.
    forwarder = app[FORWARDER]
    await forwarder.open()
    yield
    await forwarder.close()


def _verify(verifier: Verifier, header: str | None, body: bytes) -> signature.Verified:
    try:
        return verifier.verify(header, body, time.time())
    except signature.InvalidSignature as exc:
        raise SignatureError(Reason(exc.reason.value), exc.message) from None


async def receive_webhook(request: web.Request) -> web.Response:
    app = request.app
    try:
        body = await _read_body(request, app[SETTINGS].max_body_bytes)
        verified = _verify(app[VERIFIER], request.headers.get(signature.HEADER), body)
    except RequestRejected as error:
        app[METRICS].rejected(error)
        log.info("webhook_rejected", reason=error.reason.value, detail=error.message)
        return error_response(error.status, error.reason, error.message, request)
    app[METRICS].verified(verified.secret_index)
    try:
        event = parse_event(body)
    except EventError as error:
        log.warning("webhook_not_an_event", reason=error.reason.value, detail=error.message)
        event = ProviderEvent("", "", 0, body, unreadable=error.message)
    try:
        result = await app[FORWARDER].forward(event, request[REQUEST_ID])
    except WebhookError as error:
        app[METRICS].event(event.kind, "rejected" if error.status < 500 else "failed")
        log.warning(
            "webhook_not_forwarded",
            event_id=event.id,
            event_type=event.type,
            reason=error.reason.value,
            detail=error.message,
        )
        return error_response(error.status, error.reason, error.message, request)
    app[METRICS].event(event.kind, result.outcome)
    # DEBUG: payment-svc's inbox is the record of every acknowledged event (its
    # log lines carry the same request id); at INFO this line would cost more
    # than the rest of the request's work in the gateway.
    log.debug(
        "webhook_forwarded",
        event_id=event.id,
        event_type=event.type,
        outcome=result.outcome,
        payment_id=result.payment_id,
    )
    answer = _QUARANTINED if result.quarantined else _ACK[result.duplicate]
    return web.Response(body=answer, content_type="application/json")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """At most limit + 1 bytes are read: a larger body is refused without reading it all."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[FORWARDER].ready():
        return web.json_response({"status": "ready"})
    body = {"status": "not_ready", "reason": "payment_svc_not_serving"}
    return web.json_response(body, status=503)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def error_response(status: int, reason: str, message: str, request: web.Request) -> web.Response:
    error = {"reason": str(reason), "message": message, "request_id": request.get(REQUEST_ID, "")}
    return web.json_response({"error": error}, status=status)


def _request_id(given: str | None) -> str:
    # The caller's id when it is safe to pass on (gRPC metadata, logs); ours otherwise.
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, the requests counter, and a JSON answer for whatever went wrong."""
    request_id = _request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            reason = exc.reason.lower().replace(" ", "_")
            response = error_response(exc.status, reason, exc.reason, request)
            if "Allow" in exc.headers:  # 405 says which methods would do
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled_error", method=request.method, path=request.path)
            response = error_response(500, "internal_error", "internal error", request)
    response.headers[REQUEST_ID_HEADER] = request_id
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].request(route, response.status)
    return response
