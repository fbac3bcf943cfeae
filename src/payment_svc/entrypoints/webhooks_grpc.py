"""PaymentService's webhook endpoint methods (SPEC §3d): translation only.
The secret crosses this boundary in two replies (create, rotate) and
nowhere else."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from payment_svc.domain import webhooks as w
from payment_svc.domain.model import format_payment_id
from payment_svc.entrypoints.convert import timestamp
from payment_svc.entrypoints.interceptors import PRINCIPAL
from payment_svc.service_layer.webhooks import WebhookEndpointsService
from payments.v1 import webhooks_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

STATUS_TO_PB: dict[w.EndpointStatus, pb.WebhookEndpointStatus.ValueType] = {
    w.EndpointStatus.ENABLED: pb.WEBHOOK_ENDPOINT_STATUS_ENABLED,
    w.EndpointStatus.DISABLED: pb.WEBHOOK_ENDPOINT_STATUS_DISABLED,
    w.EndpointStatus.DISABLED_GONE: pb.WEBHOOK_ENDPOINT_STATUS_DISABLED_GONE,
    w.EndpointStatus.DISABLED_FAILING: pb.WEBHOOK_ENDPOINT_STATUS_DISABLED_FAILING,
}


def endpoint_to_pb(e: w.WebhookEndpoint) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=w.format_endpoint_id(e.id),
        url=e.url,
        description=e.description,
        status=STATUS_TO_PB[e.status],
        secret=w.format_secret(e.secret) if e.secret is not None else "",
        created_at=timestamp(e.created_at),
        updated_at=timestamp(e.updated_at),
        previous_secret_expires_at=timestamp(e.previous_secret_expires_at),
    )


def changes(request: pb.UpdateWebhookEndpointRequest) -> w.EndpointChanges:
    return w.EndpointChanges(
        url=request.url if request.HasField("url") else None,
        description=request.description if request.HasField("description") else None,
        enabled=request.enabled if request.HasField("enabled") else None,
    )


class WebhookEndpointMethods:
    """Mixed into PaymentServicer (grpc_server.py)."""

    _webhooks: WebhookEndpointsService

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Context
    ) -> pb.CreateWebhookEndpointResponse:
        endpoint = await self._webhooks.create(
            PRINCIPAL.get().client_id, request.url, request.description
        )
        return pb.CreateWebhookEndpointResponse(endpoint=endpoint_to_pb(endpoint))

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Context
    ) -> pb.ListWebhookEndpointsResponse:
        endpoints = await self._webhooks.list(PRINCIPAL.get().client_id)
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint_to_pb(e) for e in endpoints])

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Context
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint = await self._webhooks.update(
            PRINCIPAL.get().client_id, request.endpoint_id, changes(request)
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=endpoint_to_pb(endpoint))

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Context
    ) -> pb.DeleteWebhookEndpointResponse:
        await self._webhooks.delete(PRINCIPAL.get().client_id, request.endpoint_id)
        return pb.DeleteWebhookEndpointResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        endpoint = await self._webhooks.rotate(PRINCIPAL.get().client_id, request.endpoint_id)
        return pb.RotateWebhookSecretResponse(endpoint=endpoint_to_pb(endpoint))

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        client_id = PRINCIPAL.get().client_id
        page = await self._webhooks.deliveries(
            client_id, request.endpoint_id, request.page_size, request.page_token
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[
                pb.WebhookDelivery(
                    update_id=str(a.update_id),
                    cursor=self._webhooks.cursor(client_id, a.position),
                    payment_id=format_payment_id(a.payment_id),
                    attempted_at=timestamp(a.attempted_at),
                    http_status=a.http_status,
                    error=a.error,
                    duration=Duration(
                        seconds=a.duration_ms // 1000, nanos=(a.duration_ms % 1000) * 1_000_000
                    ),
                    attempt=a.attempt,
                    delivered=a.delivered,
                )
                for a in page.attempts
            ],
            next_page_token=page.next_page_token,
        )

    async def RedeliverWebhooks(
        self, request: pb.RedeliverWebhooksRequest, context: Context
    ) -> pb.RedeliverWebhooksResponse:
        await self._webhooks.redeliver(
            PRINCIPAL.get().client_id, request.endpoint_id, request.after_cursor
        )
        return pb.RedeliverWebhooksResponse()
