"""Small typed async clients for `payments.v1`: `PaymentService` (merchants) and
`ProviderSyncService` (the reconciler and its operators).

    async with PaymentsClient("127.0.0.1:50051", "dev-merchant-token") as client:
        payment = await client.create_payment("order-42", 1999, "USD", "pm_card_visa")

        async for update in client.watch_updates(after_cursor=saved_cursor):
            handle(update); saved_cursor = update.cursor   # resumes across cuts

    async with ProviderSyncClient("127.0.0.1:50051", "dev-reconciler-token") as sync:
        discrepancies, _ = await sync.list_discrepancies()

    verify_webhook(request.headers, await request.read(), ["whsec_..."])  # SPEC §3d;
    # raises WebhookVerificationError (answer 400): see payments.webhooks

Every call carries `authorization: Bearer <token>`, a fresh `x-request-id`
and a deadline; a failed call raises from the error tree drawn in
payments.errors (re-exported here), so callers can tell `RetryableError`
(retry with the same idempotency key) from `PermanentError`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from payments.errors import (
    Aborted,
    AlreadyExists,
    CursorExpired,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaymentNotRefundable,
    PaymentsClientError,
    PermanentError,
    PermissionDenied,
    ProviderBooksDisagree,
    RefundExceedsRemaining,
    ResourceExhausted,
    RetryableError,
    ServerError,
    TooManyWebhookEndpoints,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments.v1 import webhooks_pb2 as wh
from payments.webhooks import (
    WebhookSignatureError,
    WebhookTimestampError,
    WebhookVerificationError,
    verify_webhook,
)

__all__ = [
    "DEFAULT_TARGET",
    "Aborted",
    "AlreadyExists",
    "CursorExpired",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PaymentNotRefundable",
    "PaymentsClient",
    "PaymentsClientError",
    "PermanentError",
    "PermissionDenied",
    "ProviderBooksDisagree",
    "ProviderSyncClient",
    "RefundExceedsRemaining",
    "ResourceExhausted",
    "RetryableError",
    "ServerError",
    "TooManyWebhookEndpoints",
    "Unauthenticated",
    "Unavailable",
    "UpdateWatcher",
    "WebhookSignatureError",
    "WebhookTimestampError",
    "WebhookVerificationError",
    "verify_webhook",
]

DEFAULT_TARGET = "127.0.0.1:50051"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class _Client:
    """One channel per `async with`; every call authenticated, traced and bounded."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        timeout: float = 10.0,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._authorization = ("authorization", f"Bearer {token}")
        self._options = tuple(options)
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Self:
        # The channel belongs to the running loop, so it is made here.
        self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        self._open(self._channel)
        return self

    def _open(self, channel: grpc.aio.Channel) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._close()

    async def _call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req
    ) -> Resp:
        request_id = uuid.uuid4().hex
        metadata = (self._authorization, ("x-request-id", request_id))
        try:
            return await method(request, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            error = from_rpc_error(err)
            error.request_id = request_id
            raise error from None


class PaymentsClient(_Client):
    _stub: svc_grpc.PaymentServiceAsyncStub | None = None

    def _open(self, channel: grpc.aio.Channel) -> None:
        self._stub = svc_grpc.PaymentServiceStub(channel)

    def _close(self) -> None:
        self._stub = None

    @property
    def stub(self) -> svc_grpc.PaymentServiceAsyncStub:
        if self._stub is None:
            raise RuntimeError("PaymentsClient is used outside `async with`")
        return self._stub

    async def create_payment(
        self,
        idempotency_key: str,
        amount: int,
        currency: str,
        payment_method: str,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> pb.Payment:
        return await self.send_create(
            svc.CreatePaymentRequest(
                idempotency_key=idempotency_key,
                amount=amount,
                currency=currency,
                payment_method=payment_method,
                description=description,
                metadata=dict(metadata or {}),
            )
        )

    async def send_create(self, request: svc.CreatePaymentRequest) -> pb.Payment:
        """Sends a prepared request (a retry sends the same one again)."""
        reply: svc.CreatePaymentResponse = await self._call(self.stub.CreatePayment, request)
        return reply.payment

    async def get_payment(self, id: str) -> pb.Payment:
        request = svc.GetPaymentRequest(payment_id=id)
        reply: svc.GetPaymentResponse = await self._call(self.stub.GetPayment, request)
        return reply.payment

    async def list_payments(
        self,
        statuses: Iterable[pb.PaymentStatus.ValueType] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.Payment], str]:
        """One page, newest first, and the token of the next ("" on the last)."""
        request = svc.ListPaymentsRequest(
            statuses=list(statuses),
            created_after=_timestamp(created_after),
            created_before=_timestamp(created_before),
            page_size=page_size,
            page_token=page_token,
        )
        reply: svc.ListPaymentsResponse = await self._call(self.stub.ListPayments, request)
        return list(reply.payments), reply.next_page_token

    async def list_payment_events(self, id: str) -> list[pb.PaymentEvent]:
        """The payment's history, oldest first."""
        request = svc.ListPaymentEventsRequest(payment_id=id)
        reply: svc.ListPaymentEventsResponse = await self._call(
            self.stub.ListPaymentEvents, request
        )
        return list(reply.events)

    async def refund_payment(
        self, payment_id: str, idempotency_key: str, amount: int = 0, reason: str = ""
    ) -> pb.Refund:
        """Refunds `amount` (0: all that remains) of a succeeded payment. A
        retry with the same key never refunds twice: it raises AlreadyExists
        (DUPLICATE_REFUND) naming the refund and its status."""
        request = svc.RefundPaymentRequest(
            payment_id=payment_id, idempotency_key=idempotency_key, amount=amount, reason=reason
        )
        reply: svc.RefundPaymentResponse = await self._call(self.stub.RefundPayment, request)
        return reply.refund

    async def list_refunds(self, payment_id: str) -> list[pb.Refund]:
        """The payment's refunds, oldest first."""
        request = svc.ListRefundsRequest(payment_id=payment_id)
        reply: svc.ListRefundsResponse = await self._call(self.stub.ListRefunds, request)
        return list(reply.refunds)

    async def list_payment_updates(
        self, after_cursor: str = "", page_size: int = 0
    ) -> tuple[list[pb.PaymentUpdate], str]:
        """One page of the change feed, oldest first, and the cursor to pass
        back (the same one when there is nothing new yet)."""
        request = svc.ListPaymentUpdatesRequest(after_cursor=after_cursor, page_size=page_size)
        reply: svc.ListPaymentUpdatesResponse = await self._call(
            self.stub.ListPaymentUpdates, request
        )
        return list(reply.updates), reply.next_cursor

    # Signed webhooks (SPEC 3d): the calling client's endpoints.

    async def create_webhook_endpoint(self, url: str, description: str = "") -> wh.WebhookEndpoint:
        """The endpoint with its `secret`, shown only here: keep it."""
        request = wh.CreateWebhookEndpointRequest(url=url, description=description)
        reply: wh.CreateWebhookEndpointResponse = await self._call(
            self.stub.CreateWebhookEndpoint, request
        )
        return reply.endpoint

    async def list_webhook_endpoints(self) -> list[wh.WebhookEndpoint]:
        reply: wh.ListWebhookEndpointsResponse = await self._call(
            self.stub.ListWebhookEndpoints, wh.ListWebhookEndpointsRequest()
        )
        return list(reply.endpoints)

    async def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> wh.WebhookEndpoint:
        """Changes what is given; keeps the rest."""
        request = wh.UpdateWebhookEndpointRequest(endpoint_id=endpoint_id)
        if url is not None:
            request.url = url
        if description is not None:
            request.description = description
        if enabled is not None:
            request.enabled = enabled
        reply: wh.UpdateWebhookEndpointResponse = await self._call(
            self.stub.UpdateWebhookEndpoint, request
        )
        return reply.endpoint

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        request = wh.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        await self._call(self.stub.DeleteWebhookEndpoint, request)

    async def rotate_webhook_secret(self, endpoint_id: str) -> wh.WebhookEndpoint:
        """The new `secret`; the previous one still signs for 24 hours."""
        request = wh.RotateWebhookSecretRequest(endpoint_id=endpoint_id)
        reply: wh.RotateWebhookSecretResponse = await self._call(
            self.stub.RotateWebhookSecret, request
        )
        return reply.endpoint

    async def list_webhook_deliveries(
        self, endpoint_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[wh.WebhookDelivery], str]:
        """One page of the endpoint's attempts, newest first, and the next token."""
        request = wh.ListWebhookDeliveriesRequest(
            endpoint_id=endpoint_id, page_size=page_size, page_token=page_token
        )
        reply: wh.ListWebhookDeliveriesResponse = await self._call(
            self.stub.ListWebhookDeliveries, request
        )
        return list(reply.deliveries), reply.next_page_token

    async def redeliver_webhooks(self, endpoint_id: str, after_cursor: str = "") -> None:
        """Sends again every update after a feed cursor ("" : the oldest kept)."""
        request = wh.RedeliverWebhooksRequest(endpoint_id=endpoint_id, after_cursor=after_cursor)
        await self._call(self.stub.RedeliverWebhooks, request)

    def watch_updates(
        self,
        after_cursor: str = "",
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> UpdateWatcher:
        """The change feed as an async iterator that never ends by itself:
        the stream is reopened after a cut (a restart, a rollout, the
        server's connection age) from the last cursor handed out."""
        return UpdateWatcher(self, after_cursor, initial_backoff, max_backoff)


# What ends a stream that reopening can cure: the service or a replica going
# away (UNAVAILABLE), a cut connection (its stream fails as UNKNOWN, INTERNAL
# or CANCELLED, depending on where it broke), a slow answer. Anything else
# (an expired or bad cursor, a token refused) would fail again: raised.
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
    }
)


class UpdateWatcher:
    """`async for update in client.watch_updates(cursor)`. `cursor` is the
    last one handed out: save it after processing an update and start from
    it next time. Reopens with exponential backoff and full jitter (so a
    fleet of watchers does not come back in step after an outage)."""

    def __init__(
        self,
        client: PaymentsClient,
        after_cursor: str,
        initial_backoff: float,
        max_backoff: float,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.cursor = after_cursor
        self.reconnects = 0
        self._client = client
        self._initial = initial_backoff
        self._max = max_backoff
        self._rng = rng

    def __aiter__(self) -> AsyncIterator[pb.PaymentUpdate]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[pb.PaymentUpdate]:
        failures = 0
        while True:
            request_id = uuid.uuid4().hex
            call = self._client.stub.WatchPaymentUpdates(
                svc.WatchPaymentUpdatesRequest(after_cursor=self.cursor),
                metadata=(self._client._authorization, ("x-request-id", request_id)),
            )
            try:
                async for reply in call:
                    failures = 0
                    for update in reply.updates:
                        self.cursor = update.cursor
                        yield update
            except grpc.aio.AioRpcError as err:
                if err.code() not in _RESUMABLE:
                    error = from_rpc_error(err)
                    error.request_id = request_id
                    raise error from None
            finally:
                call.cancel()
            delay = min(self._max, self._initial * 2**failures) * self._rng()
            failures += 1
            self.reconnects += 1
            await asyncio.sleep(delay)


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


class ProviderSyncClient(_Client):
    """`ProviderSyncService` for the reconciler and `payments reconcile/discrepancies`
    (a reconciler token). Every method is one call; retries are the caller's."""

    _stub: sync_grpc.ProviderSyncServiceAsyncStub | None = None

    def _open(self, channel: grpc.aio.Channel) -> None:
        self._stub = sync_grpc.ProviderSyncServiceStub(channel)

    def _close(self) -> None:
        self._stub = None

    @property
    def stub(self) -> sync_grpc.ProviderSyncServiceAsyncStub:
        if self._stub is None:
            raise RuntimeError("ProviderSyncClient is used outside `async with`")
        return self._stub

    async def apply_provider_event(
        self, event_id: str, event_type: str, created: int, payload: bytes
    ) -> sync.ApplyProviderEventResponse:
        request = sync.ApplyProviderEventRequest(
            provider_event_id=event_id,
            event_type=event_type,
            provider_created_at=Timestamp(seconds=created),
            payload=payload,
        )
        reply: sync.ApplyProviderEventResponse = await self._call(
            self.stub.ApplyProviderEvent, request
        )
        return reply

    async def reconcile_payment(
        self, payment_id: str, snapshot: sync.ProviderPaymentSnapshot
    ) -> sync.ReconcilePaymentResponse:
        request = sync.ReconcilePaymentRequest(payment_id=payment_id, snapshot=snapshot)
        reply: sync.ReconcilePaymentResponse = await self._call(self.stub.ReconcilePayment, request)
        return reply

    async def report_discrepancy(
        self,
        kind: sync.DiscrepancyKind.ValueType,
        *,
        payment_id: str = "",
        provider_payment_id: str = "",
        details: Mapping[str, str] | None = None,
        refund_id: str = "",
    ) -> sync.ReportDiscrepancyResponse:
        request = sync.ReportDiscrepancyRequest(
            kind=kind,
            payment_id=payment_id,
            provider_payment_id=provider_payment_id,
            details=dict(details or {}),
            refund_id=refund_id,
        )
        reply: sync.ReportDiscrepancyResponse = await self._call(
            self.stub.ReportDiscrepancy, request
        )
        return reply

    async def list_payments_to_reconcile(
        self,
        older_than: float,
        *,
        page_size: int = 0,
        page_token: str = "",
        reconciler_id: str = "",
        lease: float | None = None,
    ) -> tuple[list[pb.Payment], str]:
        """One page of non-final payments untouched for `older_than` seconds; with a
        `lease` (seconds), claimed for `reconciler_id` meanwhile."""
        request = sync.ListPaymentsToReconcileRequest(
            older_than=_duration(older_than),
            page_size=page_size,
            page_token=page_token,
            reconciler_id=reconciler_id,
            lease=_duration(lease),
        )
        reply: sync.ListPaymentsToReconcileResponse = await self._call(
            self.stub.ListPaymentsToReconcile, request
        )
        return list(reply.payments), reply.next_page_token

    async def list_refunds_to_reconcile(
        self,
        older_than: float,
        *,
        page_size: int = 0,
        page_token: str = "",
        reconciler_id: str = "",
        lease: float | None = None,
    ) -> tuple[list[sync.RefundToReconcile], str]:
        """One page of non-final refunds untouched for `older_than` seconds
        (each with its payment's provider id); with a `lease`, claimed."""
        request = sync.ListRefundsToReconcileRequest(
            older_than=_duration(older_than),
            page_size=page_size,
            page_token=page_token,
            reconciler_id=reconciler_id,
            lease=_duration(lease),
        )
        reply: sync.ListRefundsToReconcileResponse = await self._call(
            self.stub.ListRefundsToReconcile, request
        )
        return list(reply.refunds), reply.next_page_token

    async def reconcile_refund(
        self,
        snapshot: sync.ProviderRefundSnapshot,
        *,
        refund_id: str = "",
        provider_payment_id: str = "",
    ) -> sync.ReconcileRefundResponse:
        request = sync.ReconcileRefundRequest(
            refund_id=refund_id, snapshot=snapshot, provider_payment_id=provider_payment_id
        )
        reply: sync.ReconcileRefundResponse = await self._call(self.stub.ReconcileRefund, request)
        return reply

    async def redrive_refund(self, refund_id: str) -> pb.Refund:
        request = sync.RedriveRefundRequest(refund_id=refund_id)
        reply: sync.RedriveRefundResponse = await self._call(self.stub.RedriveRefund, request)
        return reply.refund

    async def lookup_refunds(
        self,
        refund_ids: Iterable[str] = (),
        provider_refund_ids: Iterable[str] = (),
        payment_ids: Iterable[str] = (),
    ) -> list[pb.Refund]:
        """Our refunds (any client's) among these ids, or of these payments."""
        request = sync.LookupRefundsRequest(
            refund_ids=list(refund_ids),
            provider_refund_ids=list(provider_refund_ids),
            payment_ids=list(payment_ids),
        )
        reply: sync.LookupRefundsResponse = await self._call(self.stub.LookupRefunds, request)
        return list(reply.refunds)

    async def redrive_payment(self, payment_id: str) -> sync.RedrivePaymentResponse:
        request = sync.RedrivePaymentRequest(payment_id=payment_id)
        reply: sync.RedrivePaymentResponse = await self._call(self.stub.RedrivePayment, request)
        return reply

    async def lookup_payments(
        self, payment_ids: Iterable[str] = (), provider_payment_ids: Iterable[str] = ()
    ) -> list[pb.Payment]:
        """The payments we have among these ids (any client's); unknown ids are absent."""
        request = sync.LookupPaymentsRequest(
            payment_ids=list(payment_ids), provider_payment_ids=list(provider_payment_ids)
        )
        reply: sync.LookupPaymentsResponse = await self._call(self.stub.LookupPayments, request)
        return list(reply.payments)

    async def list_payments_created(
        self,
        *,
        created_after: datetime,
        created_before: datetime,
        statuses: Iterable[pb.PaymentStatus.ValueType] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.Payment], str]:
        """Every client's payments created in [after, before), newest first."""
        after, before = Timestamp(), Timestamp()
        after.FromDatetime(created_after)
        before.FromDatetime(created_before)
        request = sync.ListPaymentsCreatedRequest(
            created_after=after,
            created_before=before,
            statuses=list(statuses),
            page_size=page_size,
            page_token=page_token,
        )
        reply: sync.ListPaymentsCreatedResponse = await self._call(
            self.stub.ListPaymentsCreated, request
        )
        return list(reply.payments), reply.next_page_token

    async def list_discrepancies(
        self,
        kinds: Iterable[sync.DiscrepancyKind.ValueType] = (),
        *,
        include_resolved: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[sync.Discrepancy], str]:
        """One page, newest first, and the token of the next ("" on the last)."""
        request = sync.ListDiscrepanciesRequest(
            kinds=list(kinds),
            include_resolved=include_resolved,
            page_size=page_size,
            page_token=page_token,
        )
        reply: sync.ListDiscrepanciesResponse = await self._call(
            self.stub.ListDiscrepancies, request
        )
        return list(reply.discrepancies), reply.next_page_token

    async def resolve_discrepancy(self, discrepancy_id: str, note: str) -> sync.Discrepancy:
        request = sync.ResolveDiscrepancyRequest(discrepancy_id=discrepancy_id, note=note)
        reply: sync.ResolveDiscrepancyResponse = await self._call(
            self.stub.ResolveDiscrepancy, request
        )
        return reply.discrepancy

    async def correct_payment(self, payment_id: str, reason: str) -> tuple[pb.Payment, bool]:
        """An operator's correction (CorrectPayment): the payment as it left
        it, and whether it changed; ProviderBooksDisagree when refused."""
        request = sync.CorrectPaymentRequest(payment_id=payment_id, reason=reason)
        reply: sync.CorrectPaymentResponse = await self._call(self.stub.CorrectPayment, request)
        return reply.payment, reply.changed

    async def record_run(self, run: sync.ReconciliationRun) -> sync.ReconciliationRun:
        request = sync.RecordReconciliationRunRequest(run=run)
        reply: sync.RecordReconciliationRunResponse = await self._call(
            self.stub.RecordReconciliationRun, request
        )
        return reply.run

    async def get_checkpoint(self, name: str) -> str:
        """The saved value, "" when none was saved."""
        request = sync.GetCheckpointRequest(name=name)
        reply: sync.GetCheckpointResponse = await self._call(self.stub.GetCheckpoint, request)
        return reply.value

    async def save_checkpoint(self, name: str, value: str) -> None:
        request = sync.SaveCheckpointRequest(name=name, value=value)
        await self._call(self.stub.SaveCheckpoint, request)

    async def reconciliation_status(self) -> sync.GetReconciliationStatusResponse:
        request = sync.GetReconciliationStatusRequest()
        reply: sync.GetReconciliationStatusResponse = await self._call(
            self.stub.GetReconciliationStatus, request
        )
        return reply

    async def list_quarantined_events(
        self, *, include_replayed: bool = False, page_size: int = 0
    ) -> list[sync.QuarantinedEvent]:
        """Newest first: verified provider events payment-svc could not process."""
        request = sync.ListQuarantinedEventsRequest(
            include_replayed=include_replayed, page_size=page_size
        )
        reply: sync.ListQuarantinedEventsResponse = await self._call(
            self.stub.ListQuarantinedEvents, request
        )
        return list(reply.events)

    async def replay_quarantined_event(
        self, quarantine_id: str
    ) -> sync.ReplayQuarantinedEventResponse:
        request = sync.ReplayQuarantinedEventRequest(quarantine_id=quarantine_id)
        reply: sync.ReplayQuarantinedEventResponse = await self._call(
            self.stub.ReplayQuarantinedEvent, request
        )
        return reply
