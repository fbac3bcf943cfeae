"""payment-svc's WebhookDispatchService, as the dispatcher uses it: typed
calls with the dispatcher's token and a deadline each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from payments.v1 import webhook_dispatch_service_pb2 as pb
from payments.v1 import webhook_dispatch_service_pb2_grpc as pb_grpc
from webhook_dispatcher.retry import Outcome

OUTCOMES = {
    Outcome.DELIVERED: pb.WEBHOOK_ATTEMPT_OUTCOME_DELIVERED,
    Outcome.RETRY: pb.WEBHOOK_ATTEMPT_OUTCOME_RETRY,
    Outcome.GIVEN_UP: pb.WEBHOOK_ATTEMPT_OUTCOME_GIVEN_UP,
    Outcome.GONE: pb.WEBHOOK_ATTEMPT_OUTCOME_GONE,
}


class LeaseLost(Exception):
    """payment-svc says this replica no longer holds the endpoint."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    secrets: tuple[bytes, ...]


@dataclass(frozen=True)
class Attempt:
    endpoint_id: str
    message: pb.WebhookMessage
    attempted_at: datetime
    status: int
    error: str
    duration: float
    outcome: Outcome
    retry_in: float


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


class DispatchRpc:
    def __init__(
        self, channel: grpc.aio.Channel, token: str, dispatcher_id: str, timeout: float
    ) -> None:
        self._stub = pb_grpc.WebhookDispatchServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.dispatcher_id = dispatcher_id
        self._timeout = timeout

    async def lease(self, lease_seconds: float, max_endpoints: int) -> list[Endpoint]:
        reply = await self._stub.LeaseWebhookEndpoints(
            pb.LeaseWebhookEndpointsRequest(
                dispatcher_id=self.dispatcher_id,
                lease=_duration(lease_seconds),
                max_endpoints=max_endpoints,
            ),
            metadata=self._metadata,
            timeout=self._timeout,
        )
        return [Endpoint(e.endpoint_id, e.url, tuple(e.secrets)) for e in reply.endpoints]

    async def release(self) -> None:
        await self.lease(0, 0)

    async def fetch(
        self, endpoint_id: str, limit: int, busy: list[str]
    ) -> pb.FetchWebhookMessagesResponse:
        try:
            reply: pb.FetchWebhookMessagesResponse = await self._stub.FetchWebhookMessages(
                pb.FetchWebhookMessagesRequest(
                    dispatcher_id=self.dispatcher_id,
                    endpoint_id=endpoint_id,
                    max_messages=limit,
                    busy_payment_ids=busy,
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise LeaseLost(endpoint_id) from None
            raise
        return reply

    async def record(
        self, attempt: Attempt, disable_after_failing: float
    ) -> pb.RecordWebhookAttemptResponse:
        m = attempt.message
        stamp = Timestamp()
        stamp.FromDatetime(attempt.attempted_at.astimezone(UTC))
        reply: pb.RecordWebhookAttemptResponse = await self._stub.RecordWebhookAttempt(
            pb.RecordWebhookAttemptRequest(
                dispatcher_id=self.dispatcher_id,
                endpoint_id=attempt.endpoint_id,
                position=m.position,
                update_id=m.update_id,
                payment_id=m.payment_id,
                attempt=m.attempt,
                attempted_at=stamp,
                http_status=attempt.status,
                error=attempt.error,
                duration=_duration(attempt.duration),
                outcome=OUTCOMES[attempt.outcome],
                retry_in=_duration(attempt.retry_in),
                disable_after_failing=_duration(disable_after_failing),
            ),
            metadata=self._metadata,
            timeout=self._timeout,
        )
        return reply
