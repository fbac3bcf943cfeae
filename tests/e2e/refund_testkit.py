"""What the refund tests share: payments in a given state, RefundPayment and
ListRefunds over the real channel, and the simulator's view of an intent."""

from __future__ import annotations

from typing import Any

import grpc

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from tests.support import SimControl, auth, create_request, new_key, rich_error, stub

RS, RP, RU, RF = (
    pb.REFUND_STATUS_SUCCEEDED,
    pb.REFUND_STATUS_PENDING,
    pb.REFUND_STATUS_UNKNOWN,
    pb.REFUND_STATUS_FAILED,
)


async def paid(
    channel: grpc.aio.Channel,
    amount: int = 1000,
    payment_method: str = "pm_card_visa",
    who: str = "merchant",
    timeout: float = 10,
) -> pb.Payment:
    reply = await stub(channel).CreatePayment(
        create_request(amount=amount, payment_method=payment_method),
        metadata=auth(who),
        timeout=timeout,
    )
    return reply.payment


async def refund(
    channel: grpc.aio.Channel,
    payment_id: str,
    amount: int = 0,
    *,
    key: str | None = None,
    reason: str = "",
    who: str = "merchant",
    timeout: float = 10,
) -> pb.Refund:
    reply = await stub(channel).RefundPayment(
        svc.RefundPaymentRequest(
            payment_id=payment_id,
            idempotency_key=new_key() if key is None else key,
            amount=amount,
            reason=reason,
        ),
        metadata=auth(who),
        timeout=timeout,
    )
    return reply.refund


async def refused(channel: grpc.aio.Channel, payment_id: str, amount: int = 0, **kw: Any) -> Any:
    """The rich error of a RefundPayment that must fail."""
    try:
        got = await refund(channel, payment_id, amount, **kw)
    except grpc.aio.AioRpcError as err:
        return rich_error(err)
    raise AssertionError(f"refund was not refused: {got}")


async def refunds(
    channel: grpc.aio.Channel, payment_id: str, who: str = "merchant"
) -> list[pb.Refund]:
    reply = await stub(channel).ListRefunds(
        svc.ListRefundsRequest(payment_id=payment_id), metadata=auth(who), timeout=5
    )
    return list(reply.refunds)


async def intent(sim: SimControl, payment_id: str) -> dict[str, Any]:
    """The simulator's ledger row of the intent carrying our payment id."""
    [row] = await sim.ledger(payment_id=payment_id)
    return row


async def provider_refunds(sim: SimControl, payment_id: str) -> list[dict[str, Any]]:
    """The refunds the provider made for the payment (its ledger's `refunds`:
    id, amount, status, metadata, idempotency_key)."""
    listed: list[dict[str, Any]] = (await intent(sim, payment_id))["refunds"]
    return listed
