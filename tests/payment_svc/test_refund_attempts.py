"""The refund attempt runs on the payments' path (issue 13): the caller's
deadline is honoured (UNKNOWN, recorded, before it) and a refund whose caller
gave up is recorded even through SIGTERM (the drain waits for it)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Stack
from tests.e2e.refund_testkit import paid, provider_refunds, refunds
from tests.support import SimControl, auth, new_key, stub

Spawn = Callable[..., Awaitable[Stack]]
SLOW_PROVIDER_SVC = {"PROVIDER_TIMEOUT_SECONDS": "10"}


def _request(payment_id: str, amount: int) -> svc.RefundPaymentRequest:
    return svc.RefundPaymentRequest(payment_id=payment_id, idempotency_key=new_key(), amount=amount)


@pytest.mark.parametrize(
    "fault",
    [{"timeout_after_charge_rate": 1.0}, {"latency_ms": 6000}],
    ids=["holds-after-refund", "holds-before-refund"],
)
async def test_a_3s_caller_gets_unknown_before_its_deadline(
    spawn_payment_svc: Spawn, sim: SimControl, fault: dict[str, object]
) -> None:
    extra = await spawn_payment_svc(**SLOW_PROVIDER_SVC)
    async with grpc.aio.insecure_channel(extra.grpc_target) as channel:
        p = await paid(channel)
        await sim.faults(webhook_drop_rate=1.0, **fault)
        t0 = time.monotonic()
        reply = await stub(channel).RefundPayment(_request(p.id, 100), metadata=auth(), timeout=3)
        elapsed = time.monotonic() - t0
        assert reply.refund.status == pb.REFUND_STATUS_UNKNOWN
        assert elapsed < 3, elapsed
        [listed] = await refunds(channel, p.id)
        assert listed.status == pb.REFUND_STATUS_UNKNOWN
        events = await stub(channel).ListPaymentEvents(
            svc.ListPaymentEventsRequest(payment_id=p.id), metadata=auth(), timeout=5
        )
        last = events.events[-1]
        assert (last.refund_id, last.refund_status) == (listed.id, pb.REFUND_STATUS_UNKNOWN)
        assert "caller's deadline" in last.note


async def test_a_refund_whose_caller_gave_up_is_recorded_even_through_sigterm(
    spawn_payment_svc: Spawn, sim: SimControl
) -> None:
    extra = await spawn_payment_svc(**SLOW_PROVIDER_SVC, PAYMENT_SVC_DRAIN_SECONDS="10")
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        p = await paid(ch)
        await sim.faults(latency_ms=1500, webhook_drop_rate=1.0)
        call = stub(ch).RefundPayment(_request(p.id, 250), metadata=auth(), timeout=10)
        await asyncio.sleep(0.5)
        call.cancel()  # the caller gives up
        with pytest.raises(asyncio.CancelledError):
            await call
        extra.processes["payment-svc"].signal(signal.SIGTERM)
        popen = extra.processes["payment-svc"].popen
        assert popen is not None
        assert await asyncio.to_thread(popen.wait, 15) == 0
    await sim.clear_faults()
    # The drain waited for the attempt: the answer is recorded (read through
    # the session's payment-svc, same database).
    restarted = await spawn_payment_svc()
    async with grpc.aio.insecure_channel(restarted.grpc_target) as ch:
        [r] = await refunds(ch, p.id)
        assert (r.status, r.amount) == (pb.REFUND_STATUS_SUCCEEDED, 250)
        assert r.provider_refund_id
    [theirs] = await provider_refunds(sim, p.id)
    assert theirs["id"] == r.provider_refund_id
