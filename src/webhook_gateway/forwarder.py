"""The gateway's one connection to payment-svc: ApplyProviderEvent, and readiness.

One long-lived grpc.aio channel, opened in the running loop (the application's
cleanup context) and closed after in-flight requests finished. A call's outcome
maps to the HTTP answer through `FAILURES`, one table over every gRPC code:

    OK                                        200 (payment-svc recorded the event)
    OK, quarantined                           200 {"quarantined": true}: payment-svc kept
                                                  an event it can never process in its
                                                  quarantine; a redelivery cannot help
    INVALID_ARGUMENT                          400 event_rejected
    UNAVAILABLE, CANCELLED (and no connection)  503 payment_service_unavailable
    DEADLINE_EXCEEDED                         503 payment_service_timeout
    RESOURCE_EXHAUSTED, ABORTED               503 payment_service_busy
    UNAUTHENTICATED, PERMISSION_DENIED        503 payment_service_misconfigured
    anything else (INTERNAL, UNKNOWN, ...)    503 payment_service_error

Every failure but INVALID_ARGUMENT is a 503: the provider retries, so an event
payment-svc did not confirm is never lost. Our own bad token is a 503 too: the
deliveries must succeed once the configuration is fixed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_kit.cards import redact_card_numbers
from webhook_gateway.errors import EventRefused, ForwardFailed, Reason, WebhookError
from webhook_gateway.events import ProviderEvent
from webhook_gateway.metrics import Metrics

log = structlog.get_logger("webhook_gateway")

SERVICE = sync.DESCRIPTOR.services_by_name["ProviderSyncService"].full_name

Code = grpc.StatusCode
FAILURES: Mapping[grpc.StatusCode, tuple[type[WebhookError], Reason]] = {
    Code.INVALID_ARGUMENT: (EventRefused, Reason.EVENT_REJECTED),
    Code.UNAVAILABLE: (ForwardFailed, Reason.PAYMENT_SERVICE_UNAVAILABLE),
    Code.CANCELLED: (ForwardFailed, Reason.PAYMENT_SERVICE_UNAVAILABLE),
    Code.DEADLINE_EXCEEDED: (ForwardFailed, Reason.PAYMENT_SERVICE_TIMEOUT),
    Code.RESOURCE_EXHAUSTED: (ForwardFailed, Reason.PAYMENT_SERVICE_BUSY),
    Code.ABORTED: (ForwardFailed, Reason.PAYMENT_SERVICE_BUSY),
    Code.UNAUTHENTICATED: (ForwardFailed, Reason.PAYMENT_SERVICE_MISCONFIGURED),
    Code.PERMISSION_DENIED: (ForwardFailed, Reason.PAYMENT_SERVICE_MISCONFIGURED),
    Code.INTERNAL: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.UNKNOWN: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.DATA_LOSS: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.UNIMPLEMENTED: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.NOT_FOUND: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.ALREADY_EXISTS: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.FAILED_PRECONDITION: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
    Code.OUT_OF_RANGE: (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR),
}

# Reconnect quickly once payment-svc is back (gRPC's default backoff grows to
# 120 s, during which every delivery would get a 503). Not min_reconnect_backoff_ms:
# it is also the connect timeout, which must stay generous. Talk to payment-svc
# directly, never through an HTTP proxy from the environment.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_http_proxy", 0),
)


def failure(error: grpc.aio.AioRpcError) -> WebhookError:
    """The error to answer with. Its message is stable: payment-svc's words
    are echoed only for a refusal (its own field violations, redacted), never
    for a failure, whose details may be an exception's text."""
    kind, reason = FAILURES.get(error.code(), (ForwardFailed, Reason.PAYMENT_SERVICE_ERROR))
    if kind is EventRefused:
        detail = redact_card_numbers(error.details() or "")
        return kind(reason, f"payment-svc refused the event: {detail}".rstrip(": "))
    return kind(reason, f"payment-svc answered {error.code().name}; the event was not recorded")


@dataclass(frozen=True, slots=True)
class Forwarded:
    duplicate: bool
    applied: bool
    payment_id: str
    # payment-svc kept it in its quarantine (UNPROCESSABLE_PROVIDER_EVENT):
    # acknowledged, as a redelivery cannot help.
    quarantined: bool = False

    @property
    def outcome(self) -> str:
        if self.quarantined:
            return "quarantined"
        if self.duplicate:
            return "duplicate"
        return "applied" if self.applied else "recorded"


class Forwarder:
    def __init__(
        self,
        target: str,
        token: str,
        timeout: float,
        metrics: Metrics,
        ready_timeout: float = 1.0,
        ready_ttl: float = 1.0,
    ) -> None:
        self._target = target
        self._auth = ("authorization", f"Bearer {token}")
        self._timeout = timeout
        self._metrics = metrics
        self._ok_seconds = metrics.forward_seconds.labels("ok")
        self._ready_timeout = min(ready_timeout, timeout)
        self._ready_ttl = ready_ttl
        self._channel: grpc.aio.Channel | None = None
        self._stub: sync_grpc.ProviderSyncServiceAsyncStub | None = None
        self._health: health_pb2_grpc.HealthStub | None = None
        self._ready = False
        self._ready_until = 0.0
        self._probe: asyncio.Task[bool] | None = None

    async def open(self) -> None:
        """In the running loop: grpc.aio binds the channel to it."""
        self._channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        self._stub = sync_grpc.ProviderSyncServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def forward(self, event: ProviderEvent, request_id: str) -> Forwarded:
        """Returns once payment-svc recorded the event; raises EventRefused or ForwardFailed."""
        assert self._stub is not None, "Forwarder.open() first"
        request = sync.ApplyProviderEventRequest(
            provider_event_id=event.id,
            event_type=event.type,
            provider_created_at=Timestamp(seconds=event.created),
            payload=event.payload,
            unreadable_reason=event.unreadable,
        )
        started = time.perf_counter()
        try:
            reply = await self._stub.ApplyProviderEvent(
                request,
                metadata=(self._auth, ("x-request-id", request_id)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            elapsed = time.perf_counter() - started
            self._metrics.forward_seconds.labels(error.code().name.lower()).observe(elapsed)
            raise failure(error) from None
        self._ok_seconds.observe(time.perf_counter() - started)
        return Forwarded(reply.duplicate, reply.applied, reply.payment_id, reply.quarantined)

    async def ready(self) -> bool:
        """payment-svc's health for ProviderSyncService, cached for ready_ttl; concurrent
        probes share one call."""
        if time.monotonic() < self._ready_until:
            return self._ready
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._check())
        # Shielded: a probe request that goes away does not cancel the shared call.
        return await asyncio.shield(self._probe)

    async def _check(self) -> bool:
        assert self._health is not None, "Forwarder.open() first"
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=self._ready_timeout
            )
            self._ready = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError as error:
            self._ready = False
            log.info("payment_svc_not_ready", code=error.code().name)
        finally:
            self._ready_until = time.monotonic() + self._ready_ttl
            self._probe = None
        return self._ready
