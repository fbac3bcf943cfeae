"""The client library's refund methods and their errors, against the
session's stack: each refusal arrives as its own class of the error tree."""

from __future__ import annotations

import uuid

import pytest

from payments.client import (
    AlreadyExists,
    NotFound,
    PaymentNotRefundable,
    PaymentsClient,
    RefundExceedsRemaining,
)
from payments.v1 import payment_pb2 as pb
from payments_dev.stack import DEV_TOKENS, Stack


async def test_refund_payment_and_list_refunds_with_typed_errors(stack: Stack) -> None:
    async with PaymentsClient(stack.grpc_target, DEV_TOKENS["merchant"]) as client:
        p = await client.create_payment(f"c-{uuid.uuid4()}", 1000, "USD", "pm_card_visa")
        key = f"r-{uuid.uuid4()}"
        r = await client.refund_payment(p.id, key, 900, "fraudulent")
        assert (r.status, r.amount, r.reason) == (pb.REFUND_STATUS_SUCCEEDED, 900, "fraudulent")

        with pytest.raises(AlreadyExists) as dup:
            await client.refund_payment(p.id, key, 900, "fraudulent")
        assert (dup.value.reason, dup.value.refund_id, dup.value.status) == (
            "DUPLICATE_REFUND",
            r.id,
            "REFUND_STATUS_SUCCEEDED",
        )
        with pytest.raises(RefundExceedsRemaining) as more:
            await client.refund_payment(p.id, f"r-{uuid.uuid4()}", 101)
        assert more.value.remaining == 100
        assert not more.value.retryable

        declined = await client.create_payment(
            f"c-{uuid.uuid4()}", 1000, "USD", "pm_card_chargeDeclined"
        )
        with pytest.raises(PaymentNotRefundable):
            await client.refund_payment(declined.id, f"r-{uuid.uuid4()}")

        assert [x.id for x in await client.list_refunds(p.id)] == [r.id]

    async with PaymentsClient(stack.grpc_target, DEV_TOKENS["merchant-2"]) as other:
        with pytest.raises(NotFound):
            await other.list_refunds(p.id)
