"""Translation between protobuf messages and domain types, both ways."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from payment_svc.domain.commands import CreatePayment, ListPayments, ListRefunds, RefundPayment
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.feed import PaymentUpdate
from payment_svc.domain.model import Payment, PaymentEvent, format_payment_id
from payment_svc.domain.refunds import Refund, RefundStatus, format_refund_id
from payment_svc.domain.status import PaymentStatus, Source
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc

STATUS_TO_PB: dict[PaymentStatus, pb.PaymentStatus.ValueType] = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.UNKNOWN: pb.PAYMENT_STATUS_UNKNOWN,
    PaymentStatus.SUCCEEDED: pb.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
    PaymentStatus.REVERSED: pb.PAYMENT_STATUS_REVERSED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}

SOURCE_TO_PB: dict[Source, pb.PaymentEventSource.ValueType] = {
    Source.API: pb.PAYMENT_EVENT_SOURCE_API,
    Source.WEBHOOK: pb.PAYMENT_EVENT_SOURCE_WEBHOOK,
    Source.RECONCILER: pb.PAYMENT_EVENT_SOURCE_RECONCILER,
    Source.OPERATOR: pb.PAYMENT_EVENT_SOURCE_OPERATOR,
}


REFUND_STATUS_TO_PB: dict[RefundStatus, pb.RefundStatus.ValueType] = {
    RefundStatus.PENDING: pb.REFUND_STATUS_PENDING,
    RefundStatus.UNKNOWN: pb.REFUND_STATUS_UNKNOWN,
    RefundStatus.SUCCEEDED: pb.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: pb.REFUND_STATUS_FAILED,
}


def status_name(status: PaymentStatus) -> str:
    return pb.PaymentStatus.Name(STATUS_TO_PB[status])


def refund_status_name(status: RefundStatus) -> str:
    return pb.RefundStatus.Name(REFUND_STATUS_TO_PB[status])


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def payment_to_pb(p: Payment) -> pb.Payment:
    return pb.Payment(
        id=p.public_id,
        idempotency_key=p.idempotency_key,
        amount=p.amount,
        currency=p.currency,
        status=STATUS_TO_PB[p.status],
        payment_method=p.payment_method,
        description=p.description,
        provider_payment_id=p.provider_payment_id or "",
        failure_code=p.failure_code or "",
        failure_message=p.failure_message or "",
        amount_reversed=p.amount_reversed,
        metadata=dict(p.metadata),
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
    )


def event_to_pb(e: PaymentEvent) -> pb.PaymentEvent:
    return pb.PaymentEvent(
        id=str(e.id),
        payment_id=format_payment_id(e.payment_id),
        from_status=STATUS_TO_PB[e.from_status] if e.from_status else pb.PAYMENT_STATUS_UNSPECIFIED,
        to_status=STATUS_TO_PB[e.to_status],
        source=SOURCE_TO_PB[e.source],
        provider_event_id=e.provider_event_id or "",
        provider_event_type=e.provider_event_type or "",
        applied=e.applied,
        failure_code=e.failure_code or "",
        note=e.note or "",
        provider_created_at=timestamp(e.provider_created_at),
        recorded_at=timestamp(e.recorded_at),
        refund_id=format_refund_id(e.refund_id) if e.refund_id else "",
        refund_status=REFUND_STATUS_TO_PB[e.refund_status]
        if e.refund_status
        else pb.REFUND_STATUS_UNSPECIFIED,
    )


def refund_to_pb(r: Refund) -> pb.Refund:
    return pb.Refund(
        id=r.public_id,
        payment_id=r.public_payment_id,
        idempotency_key=r.idempotency_key or "",
        amount=r.amount,
        currency=r.currency,
        status=REFUND_STATUS_TO_PB[r.status],
        provider_refund_id=r.provider_refund_id or "",
        reason=r.reason,
        failure_code=r.failure_code or "",
        failure_message=r.failure_message or "",
        created_at=timestamp(r.created_at),
        updated_at=timestamp(r.updated_at),
        source=SOURCE_TO_PB[r.source],
    )


def refund_command(req: svc.RefundPaymentRequest) -> RefundPayment:
    return RefundPayment(
        payment_id=req.payment_id,
        idempotency_key=req.idempotency_key,
        amount=req.amount,
        reason=req.reason,
    )


def list_refunds_query(req: svc.ListRefundsRequest) -> ListRefunds:
    return ListRefunds(payment_id=req.payment_id)


def update_to_pb(u: PaymentUpdate, cursor: str) -> pb.PaymentUpdate:
    return pb.PaymentUpdate(
        cursor=cursor,
        id=str(u.id),
        payment=payment_to_pb(u.payment),
        event=event_to_pb(u.event),
        refund=refund_to_pb(u.refund) if u.refund is not None else None,
        recorded_at=timestamp(u.recorded_at),
    )


def create_command(req: svc.CreatePaymentRequest) -> CreatePayment:
    return CreatePayment(
        idempotency_key=req.idempotency_key,
        amount=req.amount,
        currency=req.currency,
        payment_method=req.payment_method,
        description=req.description,
        metadata=dict(req.metadata),
    )


def list_query(req: svc.ListPaymentsRequest | Any) -> ListPayments:
    """ListPaymentsRequest, or any request with the same filter fields."""
    statuses = set()
    for s in req.statuses:
        if s not in STATUS_FROM_PB:
            raise InvalidArgument([FieldViolation("statuses", "must be set payment statuses")])
        statuses.add(STATUS_FROM_PB[s])
    return ListPayments(
        page_size=req.page_size,
        page_token=req.page_token,
        statuses=frozenset(statuses),
        created_after=req.created_after.ToDatetime(tzinfo=UTC)
        if req.HasField("created_after")
        else None,
        created_before=req.created_before.ToDatetime(tzinfo=UTC)
        if req.HasField("created_before")
        else None,
    )
