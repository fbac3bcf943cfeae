"""The gRPC surface: servicers that only translate, and the server factory.

Each method turns the request into one typed command, calls one use case,
and builds the reply; errors are raised as domain errors and mapped once in
CallInterceptor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from payment_svc.domain.feed import PaymentUpdate
from payment_svc.entrypoints import convert, metrics
from payment_svc.entrypoints.interceptors import PRINCIPAL, CallPipeline, call_deadline
from payment_svc.entrypoints.provider_sync_grpc import ProviderSyncServicer
from payment_svc.entrypoints.validation import RequestFloor
from payment_svc.entrypoints.webhook_dispatch_grpc import WebhookDispatchServicer
from payment_svc.entrypoints.webhooks_grpc import WebhookEndpointMethods
from payment_svc.service_layer.corrections import CorrectionService
from payment_svc.service_layer.feed import FeedService
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.payments import PaymentsService
from payment_svc.service_layer.provider_sync import ProviderSyncService
from payment_svc.service_layer.reconciliation import ReconciliationService
from payment_svc.service_layer.refund_sync import RefundSyncService
from payment_svc.service_layer.refunds import RefundsService
from payment_svc.service_layer.webhook_dispatch import WebhookDispatch
from payment_svc.service_layer.webhooks import WebhookEndpointsService
from payment_svc.settings import Settings
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments.v1 import webhook_dispatch_service_pb2 as dispatch_pb
from payments.v1 import webhook_dispatch_service_pb2_grpc as dispatch_grpc

Context = grpc.aio.ServicerContext[Any, Any]

PAYMENT_SERVICE = svc.DESCRIPTOR.services_by_name["PaymentService"].full_name
PROVIDER_SYNC_SERVICE = sync.DESCRIPTOR.services_by_name["ProviderSyncService"].full_name
WEBHOOK_DISPATCH_SERVICE = dispatch_pb.DESCRIPTOR.services_by_name[
    "WebhookDispatchService"
].full_name


class PaymentServicer(WebhookEndpointMethods, svc_grpc.PaymentServiceServicer):
    def __init__(
        self,
        payments: PaymentsService,
        refunds: RefundsService,
        feed: FeedService,
        webhooks: WebhookEndpointsService,
    ) -> None:
        self._payments = payments
        self._webhooks = webhooks
        self._refunds = refunds
        self._feed = feed
        # The streams of one client send the same pages (read once:
        # FeedService.watch): each is translated, its cursors signed and the
        # reply serialized once, not once a stream (Preserialized).
        self._replies: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    async def CreatePayment(
        self, request: svc.CreatePaymentRequest, context: Context
    ) -> svc.CreatePaymentResponse:
        try:
            payment = await self._payments.create(
                PRINCIPAL.get().client_id,
                convert.create_command(request),
                deadline=call_deadline(context),
            )
        except Exception as exc:
            metrics.PAYMENTS_CREATED.labels(getattr(exc, "reason", "error").lower()).inc()
            raise
        metrics.PAYMENTS_CREATED.labels(payment.status.value.lower()).inc()
        return svc.CreatePaymentResponse(payment=convert.payment_to_pb(payment))

    async def GetPayment(
        self, request: svc.GetPaymentRequest, context: Context
    ) -> svc.GetPaymentResponse:
        payment = await self._payments.get(PRINCIPAL.get().client_id, request.payment_id)
        return svc.GetPaymentResponse(payment=convert.payment_to_pb(payment))

    async def ListPayments(
        self, request: svc.ListPaymentsRequest, context: Context
    ) -> svc.ListPaymentsResponse:
        page = await self._payments.list(PRINCIPAL.get().client_id, convert.list_query(request))
        return svc.ListPaymentsResponse(
            payments=[convert.payment_to_pb(p) for p in page.payments],
            next_page_token=page.next_page_token,
        )

    async def ListPaymentEvents(
        self, request: svc.ListPaymentEventsRequest, context: Context
    ) -> svc.ListPaymentEventsResponse:
        events = await self._payments.events(PRINCIPAL.get().client_id, request.payment_id)
        return svc.ListPaymentEventsResponse(events=[convert.event_to_pb(e) for e in events])

    async def RefundPayment(
        self, request: svc.RefundPaymentRequest, context: Context
    ) -> svc.RefundPaymentResponse:
        try:
            refund = await self._refunds.refund(
                PRINCIPAL.get().client_id,
                convert.refund_command(request),
                deadline=call_deadline(context),
            )
        except Exception as exc:
            metrics.REFUNDS.labels(getattr(exc, "reason", "error").lower()).inc()
            raise
        metrics.REFUNDS.labels(refund.status.value.lower()).inc()
        return svc.RefundPaymentResponse(refund=convert.refund_to_pb(refund))

    async def ListRefunds(
        self, request: svc.ListRefundsRequest, context: Context
    ) -> svc.ListRefundsResponse:
        refunds = await self._refunds.list(
            PRINCIPAL.get().client_id, convert.list_refunds_query(request)
        )
        return svc.ListRefundsResponse(refunds=[convert.refund_to_pb(r) for r in refunds])

    async def ListPaymentUpdates(
        self, request: svc.ListPaymentUpdatesRequest, context: Context
    ) -> svc.ListPaymentUpdatesResponse:
        client_id = PRINCIPAL.get().client_id
        page = await self._feed.page(client_id, request.after_cursor, request.page_size)
        cursor = self._feed.cursor
        return svc.ListPaymentUpdatesResponse(
            updates=[convert.update_to_pb(u, cursor(client_id, u)) for u in page.updates],
            next_cursor=page.next_cursor,
        )

    async def WatchPaymentUpdates(  # type: ignore[override]  # replies as bytes: Preserialized
        self, request: svc.WatchPaymentUpdatesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """A page of updates a message: each is yielded when the previous one
        was written to the stream (grpc.aio awaits HTTP/2 flow control between
        them), and the next page is read only then: a slow reader holds one
        page. One message a page, not one an update: a message's cost in
        grpc is most of a delivery's."""
        client_id = PRINCIPAL.get().client_id
        # Headers now: the caller knows the stream is open before any update.
        await context.send_initial_metadata(())
        metrics.FEED_STREAMS_OPEN.inc()
        try:
            async for page in self._feed.watch(client_id, request.after_cursor):
                reply = self._reply(client_id, page)
                # The oldest update's: the worst of the message (one
                # observation a message, not one an update a stream).
                metrics.FEED_DELIVERY_LAG.observe(
                    max(0.0, (datetime.now(UTC) - page[0].recorded_at).total_seconds())
                )
                yield reply
        finally:
            metrics.FEED_STREAMS_OPEN.dec()

    def _reply(self, client_id: str, page: list[PaymentUpdate]) -> bytes:
        key = (client_id, page[0].position, page[-1].position)
        reply = self._replies.get(key)
        if reply is None:
            cursor = self._feed.cursor
            reply = svc.WatchPaymentUpdatesResponse(
                updates=[convert.update_to_pb(u, cursor(client_id, u)) for u in page]
            ).SerializeToString()
            self._replies[key] = reply
            if len(self._replies) > _REPLIES_KEPT:
                self._replies.popitem(last=False)
        return reply


# Enough for the latest pages of every client streaming at once.
_REPLIES_KEPT = 2_000


class Preserialized(grpc.aio.ServerInterceptor):
    """Lets the servicer of these server-streaming methods yield bytes it
    serialized itself, as well as messages: a page that many streams send is
    serialized once (PaymentServicer._reply), where the method's own
    serializer would do it once a stream. Innermost, so the other
    interceptors wrap the handler it returns."""

    def __init__(self, methods: frozenset[str]) -> None:
        self._methods = methods

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        assert handler.unary_stream is not None, "a server-streaming method"
        serialize = handler.response_serializer
        assert serialize is not None

        def passthrough(message: Any) -> bytes:
            return message if isinstance(message, bytes) else serialize(message)

        built: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(
            handler.unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=passthrough,
        )
        return built


# "" says the process lives (liveness: a database outage must not restart
# pods); the service names say whether calls can be served (readiness).
SERVICE_NAMES = [PAYMENT_SERVICE, PROVIDER_SYNC_SERVICE, WEBHOOK_DISPATCH_SERVICE]


async def set_serving(servicer: health.aio.HealthServicer, serving: bool) -> None:
    state = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in SERVICE_NAMES:
        await servicer.set(name, state)


def create_server(
    settings: Settings,
    payments: PaymentsService,
    sync_service: ProviderSyncService,
    reconciliation: ReconciliationService,
    health_servicer: health.aio.HealthServicer,
    *,
    refunds: RefundsService,
    feed: FeedService,
    refund_sync: RefundSyncService,
    webhooks: WebhookEndpointsService,
    webhook_dispatch: WebhookDispatch,
    corrections: CorrectionService,
) -> tuple[grpc.aio.Server, int]:
    """Builds the server bound to settings.listen; returns it and its port
    (tests bind port 0)."""
    server = grpc.aio.server(
        interceptors=[
            CallPipeline(settings.principals, settings.max_call_seconds),
            # Inside the pipeline: after authentication, before any servicer.
            RequestFloor(
                frozenset({PAYMENT_SERVICE, PROVIDER_SYNC_SERVICE, WEBHOOK_DISPATCH_SERVICE})
            ),
            Preserialized(frozenset({f"/{PAYMENT_SERVICE}/WatchPaymentUpdates"})),
        ],
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # Clients reconnect now and then, so that new replicas (autoscaling,
            # rollouts) get their share of long-lived channels. This cuts
            # WatchPaymentUpdates streams too (after the grace): the client's
            # watcher resumes from its last cursor (payments.client).
            ("grpc.max_connection_age_ms", 5 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 30 * 1000),
        ],
    )
    svc_grpc.add_PaymentServiceServicer_to_server(
        PaymentServicer(payments, refunds, feed, webhooks), server
    )
    sync_grpc.add_ProviderSyncServiceServicer_to_server(
        ProviderSyncServicer(sync_service, reconciliation, refund_sync, corrections), server
    )
    dispatch_grpc.add_WebhookDispatchServiceServicer_to_server(
        WebhookDispatchServicer(webhook_dispatch, FeedCursors(settings.page_token_key.encode())),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if not settings.production:
        reflection.enable_server_reflection(
            [
                PAYMENT_SERVICE,
                PROVIDER_SYNC_SERVICE,
                WEBHOOK_DISPATCH_SERVICE,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    return server, port
