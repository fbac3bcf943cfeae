"""Postgres down, Postgres paused, provider unreachable: the service answers
within its bounds, says so in its health, and recovers by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.devdb import LocalPostgres
from payments.stack import Stack, wait_serving
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from tests.support import auth, create_request, embedded_postgres, stub

Spawn = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def own_postgres() -> AsyncIterator[LocalPostgres]:
    pg = embedded_postgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


async def health(target: str, service: str = "payments.v1.PaymentService") -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return reply.status


async def test_postgres_stopped_then_started_mid_run(
    own_postgres: LocalPostgres, spawn_payment_svc: Spawn
) -> None:
    svc_stack = await spawn_payment_svc(database_url=own_postgres.dsn, DB_TIMEOUT_SECONDS="1")
    acked: dict[str, int] = {}
    codes: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def caller(channel: grpc.aio.Channel) -> None:
        while not stop.is_set():
            try:
                reply = await stub(channel).CreatePayment(
                    create_request(), metadata=auth(), timeout=5
                )
                acked[reply.payment.id] = reply.payment.status
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
                await asyncio.sleep(0.05)

    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        workers = [asyncio.create_task(caller(channel)) for _ in range(4)]
        await asyncio.sleep(1.0)
        before_outage = len(acked)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < 3
        assert await health(svc_stack.grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING
        # ...while the process itself is alive: liveness must not restart it.
        assert await health(svc_stack.grpc_target, "") == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_postgres.start)
        await wait_serving(svc_stack.grpc_target, timeout=20)
        after_recovery = len(acked)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers)

        assert before_outage > 0
        assert len(acked) > after_recovery, "payments flow again without a restart"
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, codes
        assert grpc.StatusCode.UNAVAILABLE in codes
        # Nothing acknowledged is lost: every acknowledged payment is there, as acknowledged.
        for payment_id, status in acked.items():
            got = await stub(channel).GetPayment(
                svc.GetPaymentRequest(payment_id=payment_id), metadata=auth(), timeout=5
            )
            assert got.payment.status == status


async def test_postgres_paused_calls_end_within_their_deadline(
    own_postgres: LocalPostgres, spawn_payment_svc: Spawn
) -> None:
    svc_stack = await spawn_payment_svc(database_url=own_postgres.dsn, DB_TIMEOUT_SECONDS="1")
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        own_postgres.pause()
        try:
            for deadline in (0.5, 3.0):
                t0 = time.monotonic()
                calls = [
                    stub(channel).CreatePayment(
                        create_request(), metadata=auth(), timeout=deadline
                    ),
                    stub(channel).ListPayments(
                        svc.ListPaymentsRequest(), metadata=auth(), timeout=deadline
                    ),
                ]
                results = await asyncio.gather(*calls, return_exceptions=True)
                elapsed = time.monotonic() - t0
                assert elapsed < deadline + 0.5, elapsed
                for r in results:
                    assert isinstance(r, grpc.aio.AioRpcError)
                    assert r.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    )
            # Without a deadline, the database bound (1 s) still ends the call.
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub(channel).GetPayment(
                    svc.GetPaymentRequest(payment_id="pay_" + "1" * 32), metadata=auth()
                )
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - t0 < 2.5
        finally:
            own_postgres.resume()
        await wait_serving(svc_stack.grpc_target, timeout=20)
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_provider_unreachable_is_unknown_and_the_service_stays_up(
    spawn_payment_svc: Spawn,
) -> None:
    from payments.devdb import free_port

    svc_stack = await spawn_payment_svc(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        for _ in range(3):
            reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
            assert reply.payment.status == pb.PAYMENT_STATUS_UNKNOWN
        assert await health(svc_stack.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert svc_stack.processes["payment-svc"].running
