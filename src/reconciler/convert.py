"""Translations between payments.v1 messages and the reconciler's own values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_stripe.objects import ProviderIntent, ProviderRefund
from payments_stripe.status import Status
from reconciler.rules import Ours

_STATUS = {
    pb.PAYMENT_STATUS_PENDING: Status.PENDING,
    pb.PAYMENT_STATUS_UNKNOWN: Status.UNKNOWN,
    pb.PAYMENT_STATUS_SUCCEEDED: Status.SUCCEEDED,
    pb.PAYMENT_STATUS_FAILED: Status.FAILED,
    pb.PAYMENT_STATUS_REVERSED: Status.REVERSED,
}


def status_of(payment: pb.Payment) -> Status:
    # UNSPECIFIED is never stored; should it come, it is treated as not final.
    return _STATUS.get(payment.status, Status.UNKNOWN)


def created_at(payment: pb.Payment) -> datetime:
    return payment.created_at.ToDatetime(tzinfo=UTC)


def ours(payment: pb.Payment) -> Ours:
    return Ours(
        id=payment.id,
        status=status_of(payment),
        amount=payment.amount,
        currency=payment.currency,
        provider_payment_id=payment.provider_payment_id,
        amount_reversed=payment.amount_reversed,
    )


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def snapshot(intent: ProviderIntent, observed_at: datetime) -> sync.ProviderPaymentSnapshot:
    return sync.ProviderPaymentSnapshot(
        found=True,
        provider_payment_id=intent.id,
        provider_status=intent.status,
        amount=intent.amount,
        currency=intent.currency,
        amount_refunded=intent.amount_refunded,
        failure_code=intent.failure_code,
        failure_message=intent.failure_message,
        observed_at=timestamp(observed_at),
        disputed=intent.disputed,
    )


def refund_snapshot(refund: ProviderRefund, observed_at: datetime) -> sync.ProviderRefundSnapshot:
    return sync.ProviderRefundSnapshot(
        found=True,
        provider_refund_id=refund.id,
        provider_status=refund.status,
        amount=refund.amount,
        currency=refund.currency,
        failure_reason=refund.failure_reason,
        observed_at=timestamp(observed_at),
        metadata_refund_id=refund.refund_id,
        reason=refund.reason,
    )


def kind_name(kind: sync.DiscrepancyKind.ValueType) -> str:
    """STUCK_PAYMENT for DISCREPANCY_KIND_STUCK_PAYMENT (metric labels, logs)."""
    return sync.DiscrepancyKind.Name(kind).removeprefix("DISCREPANCY_KIND_")


KINDS = tuple(
    kind_name(value)
    for value in sync.DiscrepancyKind.values()
    if value != sync.DISCREPANCY_KIND_UNSPECIFIED
)
