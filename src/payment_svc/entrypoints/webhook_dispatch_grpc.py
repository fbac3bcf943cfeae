"""WebhookDispatchService: translation only. The message body is built
here, once per fetch, from the update in protobuf's JSON mapping:

    {"type": "payment.updated" | "refund.updated",
     "timestamp": the update's commit time (RFC 3339),
     "data": PaymentUpdate (with its feed cursor)}
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.feed import PaymentUpdate
from payment_svc.domain.model import format_payment_id, parse_payment_id
from payment_svc.domain.webhook_dispatch import AttemptOutcome, AttemptRecord
from payment_svc.domain.webhooks import format_endpoint_id
from payment_svc.entrypoints.convert import timestamp, update_to_pb
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.webhook_dispatch import WebhookDispatch, endpoint_id
from payments.v1 import webhook_dispatch_service_pb2 as pb
from payments.v1 import webhook_dispatch_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

OUTCOMES = {
    pb.WEBHOOK_ATTEMPT_OUTCOME_DELIVERED: AttemptOutcome.DELIVERED,
    pb.WEBHOOK_ATTEMPT_OUTCOME_RETRY: AttemptOutcome.RETRY,
    pb.WEBHOOK_ATTEMPT_OUTCOME_GIVEN_UP: AttemptOutcome.GIVEN_UP,
    pb.WEBHOOK_ATTEMPT_OUTCOME_GONE: AttemptOutcome.GONE,
}


def message_body(update: PaymentUpdate, cursor: str) -> bytes:
    data = json_format.MessageToDict(update_to_pb(update, cursor))
    kind = "refund.updated" if update.refund is not None else "payment.updated"
    stamp = update.recorded_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": kind, "timestamp": stamp, "data": data}, separators=(",", ":")
    ).encode()


def _duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


MAX_RETRY_IN = timedelta(days=7)
MAX_DISABLE_AFTER = timedelta(days=365)


def _bounded(field: str, value: timedelta, most: timedelta) -> timedelta:
    if not timedelta(0) <= value <= most:
        raise InvalidArgument([FieldViolation(field, f"must be 0 .. {most.days} days")])
    return value


def _uuid(field: str, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a UUID")]) from None


class WebhookDispatchServicer(pb_grpc.WebhookDispatchServiceServicer):
    def __init__(self, dispatch: WebhookDispatch, cursors: FeedCursors) -> None:
        self._dispatch = dispatch
        self._cursors = cursors

    async def LeaseWebhookEndpoints(
        self, request: pb.LeaseWebhookEndpointsRequest, context: Context
    ) -> pb.LeaseWebhookEndpointsResponse:
        leased = await self._dispatch.lease(
            request.dispatcher_id,
            request.lease.ToTimedelta().total_seconds(),
            request.max_endpoints,
        )
        return pb.LeaseWebhookEndpointsResponse(
            endpoints=[
                pb.DispatchEndpoint(
                    endpoint_id=format_endpoint_id(e.id), url=e.url, secrets=list(e.secrets)
                )
                for e in leased
            ]
        )

    async def FetchWebhookMessages(
        self, request: pb.FetchWebhookMessagesRequest, context: Context
    ) -> pb.FetchWebhookMessagesResponse:
        due = await self._dispatch.fetch(
            request.dispatcher_id,
            request.endpoint_id,
            request.max_messages,
            list(request.busy_payment_ids),
        )
        reply = pb.FetchWebhookMessagesResponse(
            messages=[
                pb.WebhookMessage(
                    update_id=str(m.update.id),
                    position=m.update.position,
                    payment_id=format_payment_id(m.update.payment.id),
                    attempt=m.attempt,
                    body=message_body(
                        m.update, self._cursors.encode(due.client_id, m.update.position)
                    ),
                    recorded_at=timestamp(m.update.recorded_at),
                )
                for m in due.messages
            ]
        )
        if due.next_due_in is not None:
            reply.next_due_in.CopyFrom(_duration(max(due.next_due_in, timedelta(0))))
        if due.oldest_undelivered_at is not None:
            reply.oldest_undelivered_at.FromDatetime(due.oldest_undelivered_at)
        return reply

    async def RecordWebhookAttempt(
        self, request: pb.RecordWebhookAttemptRequest, context: Context
    ) -> pb.RecordWebhookAttemptResponse:
        outcome = OUTCOMES.get(request.outcome)
        if outcome is None:
            raise InvalidArgument([FieldViolation("outcome", "must be set")])
        payment_id = parse_payment_id(request.payment_id)
        if payment_id is None:
            raise InvalidArgument([FieldViolation("payment_id", "is not a payment id")])
        state = await self._dispatch.record(
            AttemptRecord(
                dispatcher_id=request.dispatcher_id,
                endpoint_id=endpoint_id(request.endpoint_id),
                position=request.position,
                update_id=_uuid("update_id", request.update_id),
                payment_id=payment_id,
                attempt=max(1, request.attempt),
                attempted_at=request.attempted_at.ToDatetime(tzinfo=UTC),
                http_status=request.http_status,
                error=request.error[:200],
                duration_ms=max(0, min(request.duration.ToMilliseconds(), 2**31 - 1)),
                outcome=outcome,
                retry_in=_bounded("retry_in", request.retry_in.ToTimedelta(), MAX_RETRY_IN),
                disable_after_failing=(
                    _bounded(
                        "disable_after_failing",
                        request.disable_after_failing.ToTimedelta(),
                        MAX_DISABLE_AFTER,
                    )
                    if request.HasField("disable_after_failing")
                    else None
                ),
            )
        )
        return pb.RecordWebhookAttemptResponse(
            endpoint_enabled=state.enabled, disabled_reason=state.disabled_reason
        )
