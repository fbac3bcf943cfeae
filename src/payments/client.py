"""A small typed async client for `payments.v1.PaymentService`.

    async with PaymentsClient("127.0.0.1:50051", "dev-merchant-token") as client:
        payment = await client.create_payment("order-42", 1999, "USD", "pm_card_visa")

Every call carries `authorization: Bearer <token>`, a fresh `x-request-id`
and a deadline; a failed call raises from the error tree drawn in
payments.errors (re-exported here), so callers can tell `RetryableError`
(retry with the same idempotency key) from `PermanentError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from payments.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PaymentsError,
    PermanentError,
    PermissionDenied,
    ResourceExhausted,
    RetryableError,
    ServerError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc

__all__ = [
    "DEFAULT_TARGET",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "PaymentsClient",
    "PaymentsError",
    "PermanentError",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryableError",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
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


class PaymentsClient:
    def __init__(self, target: str, token: str, *, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = timeout
        self._authorization = ("authorization", f"Bearer {token}")
        self._channel: grpc.aio.Channel | None = None
        self._stub: svc_grpc.PaymentServiceAsyncStub | None = None

    async def __aenter__(self) -> PaymentsClient:
        # The channel belongs to the running loop, so it is made here.
        self._channel = grpc.aio.insecure_channel(self.target)
        self._stub = svc_grpc.PaymentServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None

    @property
    def stub(self) -> svc_grpc.PaymentServiceAsyncStub:
        if self._stub is None:
            raise RuntimeError("PaymentsClient is used outside `async with`")
        return self._stub

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
