"""Concurrent refunds with every process running (issue 13): one key used at
once by many callers makes one refund and one provider call; many refunds at
once never together exceed the payment. The payment's row lock orders them;
the unique key is the last line for one key on several payments."""

from __future__ import annotations

import asyncio

import grpc

from payments.v1 import payment_pb2 as pb
from tests.e2e.refund_testkit import RS, intent, paid, provider_refunds, refund, refunds
from tests.e2e.test_webhook_flow import get
from tests.support import RichError, SimControl, new_key, rich_error


async def _outcomes(
    calls: list[asyncio.Future[pb.Refund]],
) -> tuple[list[pb.Refund], list[RichError]]:
    done = await asyncio.gather(*calls, return_exceptions=True)
    made = [r for r in done if isinstance(r, pb.Refund)]
    errors = [rich_error(e) for e in done if isinstance(e, grpc.aio.AioRpcError)]
    assert len(made) + len(errors) == len(done), [e for e in done if isinstance(e, Exception)]
    return made, errors


async def test_fifty_callers_with_one_key_make_one_refund_and_one_provider_call(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel)
    key = new_key()
    made, errors = await _outcomes(
        [asyncio.ensure_future(refund(channel, p.id, 100, key=key)) for _ in range(50)]
    )
    assert len(made) == 1
    assert made[0].status == RS
    assert len(errors) == 49
    for err in errors:
        assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_REFUND")
        assert err.metadata["refund_id"] == made[0].id
    assert [r.id for r in await refunds(channel, p.id)] == [made[0].id]
    assert (await intent(sim, p.id))["amount_refunded"] == 100
    assert len(await provider_refunds(sim, p.id)) == 1


async def test_twenty_refunds_of_a_tenth_at_once_exactly_ten_succeed(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    p = await paid(channel, amount=1000)
    made, errors = await _outcomes(
        [asyncio.ensure_future(refund(channel, p.id, 100)) for _ in range(20)]
    )
    assert [r.status for r in made] == [RS] * 10
    assert len(errors) == 10
    for err in errors:
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        # Refused while the payment was still SUCCEEDED with nothing left, or
        # once the tenth success made it REVERSED (SPEC §3a).
        assert err.reason in ("REFUND_EXCEEDS_REMAINING", "PAYMENT_NOT_REFUNDABLE")
        if err.reason == "REFUND_EXCEEDS_REMAINING":
            assert err.metadata["remaining"] == "0"
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (pb.PAYMENT_STATUS_REVERSED, 1000)
    assert len(await refunds(channel, p.id)) == 10
    assert (await intent(sim, p.id))["amount_refunded"] == 1000
    assert len(await provider_refunds(sim, p.id)) == 10


async def test_one_key_on_several_payments_at_once_makes_one_refund(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    payments = [await paid(channel) for _ in range(5)]
    key = new_key()
    made, errors = await _outcomes(
        [asyncio.ensure_future(refund(channel, p.id, 100, key=key)) for p in payments]
    )
    assert len(made) == 1
    for err in errors:
        assert (err.code, err.reason) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert err.metadata["refund_id"] == made[0].id
    refunded = [(await intent(sim, p.id))["amount_refunded"] for p in payments]
    assert sorted(refunded) == [0, 0, 0, 0, 100]
