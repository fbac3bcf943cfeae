"""Postgres down, Postgres paused, provider unreachable: the service answers
within its bounds, says so in its health, and recovers by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.devdb import LocalPostgres
from payments_dev.stack import Stack, wait_serving
from tests.support import (
    SimControl,
    auth,
    create_request,
    embedded_postgres,
    eventually,
    promised,
    rich_error,
    stub,
)

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


async def creates_started(stack: Stack) -> float:
    """CreatePayment calls the process has started (its metrics answer
    while the database is frozen)."""
    async with aiohttp.ClientSession() as http, http.get(stack.metrics_url) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_started_total"
        and sample.labels.get("grpc_method") == "CreatePayment"
    )


async def test_postgres_stopped_then_started_mid_run(
    own_postgres: LocalPostgres, spawn_payment_svc: Spawn
) -> None:
    svc_stack = await spawn_payment_svc(database_url=own_postgres.dsn, DB_TIMEOUT_SECONDS="1")
    acked: dict[str, int] = {}
    codes: list[grpc.StatusCode] = []
    # The workers whose call, started after Postgres stopped, failed.
    saw_outage: set[int] = set()
    outage = asyncio.Event()
    stop = asyncio.Event()

    async def caller(channel: grpc.aio.Channel, worker: int) -> None:
        while not stop.is_set():
            in_outage = outage.is_set()
            try:
                # Shorter than the outage: a call caught inside it (its result
                # write retried until the deadline) ends UNAVAILABLE before
                # Postgres is back, so every worker sees the outage.
                reply = await stub(channel).CreatePayment(
                    create_request(), metadata=auth(), timeout=2
                )
                acked[reply.payment.id] = reply.payment.status
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
                if in_outage:
                    saw_outage.add(worker)
                await asyncio.sleep(0.05)

    async def flowing(more_than: int) -> None:
        async def enough() -> bool:
            return len(acked) > more_than

        await eventually(enough, f"more than {more_than} payments acknowledged")

    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        workers = [asyncio.create_task(caller(channel, n)) for n in range(4)]
        await flowing(8)
        before_outage = len(acked)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        outage.set()
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < promised(1.0, 1.0)  # DB_TIMEOUT_SECONDS

        async def not_serving() -> bool:
            status = await health(svc_stack.grpc_target)
            return status == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving, "health NOT_SERVING while Postgres is down")
        # ...while the process itself is alive: liveness must not restart it.
        assert await health(svc_stack.grpc_target, "") == health_pb2.HealthCheckResponse.SERVING

        # Every call caught by the outage ends in it: each worker has seen it.
        async def every_worker_saw_it() -> bool:
            return len(saw_outage) == len(workers)

        await eventually(every_worker_saw_it, "every worker's call failed in the outage")
        await asyncio.to_thread(own_postgres.start)
        await wait_serving(svc_stack.grpc_target, timeout=20)
        after_recovery = len(acked)
        await flowing(after_recovery + 4)  # payments flow again without a restart
        stop.set()
        await asyncio.gather(*workers)

        assert before_outage > 0
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
                assert elapsed < promised(deadline, 0.5), elapsed
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
            assert time.monotonic() - t0 < promised(1.0, 0.75)  # DB_TIMEOUT_SECONDS
        finally:
            own_postgres.resume()
        await wait_serving(svc_stack.grpc_target, timeout=20)
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED


async def test_postgres_frozen_answers_unavailable_within_the_bound_and_recovers(
    own_postgres: LocalPostgres, spawn_payment_svc: Spawn, sim: SimControl
) -> None:
    """SIGSTOP of the whole cluster: no call waits past DB_TIMEOUT_SECONDS + 1 s,
    health says NOT_SERVING within it, and after SIGCONT the same process
    serves again. The write that timed out on our side was already on its
    way and commits once Postgres runs again: the caller's retry with the
    same key finds it, and it is charged once."""
    timeout = 1.0
    bound = promised(timeout, 1.0)
    svc_stack = await spawn_payment_svc(
        database_url=own_postgres.dsn,
        DB_TIMEOUT_SECONDS=str(timeout),
        # Only this test's calls use the pool (the upkeep runs once, at start).
        PAYMENT_SVC_INBOX_UPKEEP_SECONDS="3600",
    )
    process = svc_stack.processes["payment-svc"]
    popen = process.popen
    target = svc_stack.grpc_target
    async with grpc.aio.insecure_channel(target) as channel:
        # A pooled connection with the insert already prepared: the next
        # insert is written to the frozen server's socket at once.
        warm = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        key_in_flight = create_request()
        own_postgres.pause()
        try:
            paused_at = time.monotonic()

            async def insert_started() -> None:
                async def started() -> bool:
                    return await creates_started(svc_stack) >= 2  # the warm one, and it

                await eventually(started, "the insert in flight started", timeout=bound)

            async def timed(
                call: Callable[[], Awaitable[object]],
                after: Callable[[], Awaitable[None]] | None = None,
            ) -> tuple[float, grpc.StatusCode | None]:
                if after is not None:
                    await after()
                t0 = time.monotonic()
                try:
                    await call()  # an RPC starts when it is made
                except grpc.aio.AioRpcError as err:
                    return time.monotonic() - t0, err.code()
                return time.monotonic() - t0, None

            async def not_serving() -> float:
                while await health(target) != health_pb2.HealthCheckResponse.NOT_SERVING:
                    assert time.monotonic() - paused_at < bound + 1, "still SERVING"
                    await asyncio.sleep(0.05)
                return time.monotonic() - paused_at

            payments = stub(channel)
            # No deadline on the calls: the service's own bound must end them.
            # The insert first (it takes the warm connection), then calls
            # that need a new connection to a frozen server.
            create, get, list_, turned = await asyncio.gather(
                timed(lambda: payments.CreatePayment(key_in_flight, metadata=auth())),
                timed(
                    lambda: payments.GetPayment(
                        svc.GetPaymentRequest(payment_id=warm.payment.id), metadata=auth()
                    ),
                    after=insert_started,
                ),
                timed(
                    lambda: payments.ListPayments(svc.ListPaymentsRequest(), metadata=auth()),
                    after=insert_started,
                ),
                not_serving(),
            )
            for elapsed, code in (create, get, list_):
                assert code == grpc.StatusCode.UNAVAILABLE
                assert elapsed < bound, elapsed
            assert turned < bound, turned
        finally:
            own_postgres.resume()

        await wait_serving(target, timeout=10)
        assert process.running and process.popen is popen, "recovered without a restart"
        fresh = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
        assert fresh.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        got = await stub(channel).GetPayment(
            svc.GetPaymentRequest(payment_id=warm.payment.id), metadata=auth(), timeout=5
        )
        assert got.payment.status == pb.PAYMENT_STATUS_SUCCEEDED

        # The caller retries the timed-out CreatePayment with the same key.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(key_in_flight, metadata=auth(), timeout=5)
        err = rich_error(exc.value)
        assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_PAYMENT")
        late = err.metadata["payment_id"]
        # One payment for the key, not yet at the provider; the reconciler's
        # re-drive charges it once, with our payment id as the provider's key.
        assert await sim.ledger(payment_id=late) == []
        rec = sync_grpc.ProviderSyncServiceStub(channel)
        redriven = await rec.RedrivePayment(
            sync.RedrivePaymentRequest(payment_id=late), metadata=auth("reconciler"), timeout=5
        )
        assert redriven.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        [intent] = await sim.ledger(payment_id=late)
        assert (intent["charges"], intent["idempotency_key"]) == (1, late)


async def test_a_lock_held_outside_the_service_ends_its_calls_on_both_sides(
    spawn_payment_svc: Spawn, database_url: str
) -> None:
    """A session outside the service (an operator's psql, a migration) holds
    the payments table. Calls answer UNAVAILABLE within the bound, and their
    statements do not wait on in Postgres, each holding a connection slot,
    to commit when the lock is gone: the caller was told UNAVAILABLE, and
    its retry creates the payment."""
    svc_stack = await spawn_payment_svc(DB_TIMEOUT_SECONDS="1")
    holder = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    requests = [create_request() for _ in range(4)]
    try:
        async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
            await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
            async with holder.transaction():
                await holder.execute("LOCK TABLE payments IN SHARE MODE")  # no inserts
                t0 = time.monotonic()
                results = await asyncio.gather(
                    *(stub(channel).CreatePayment(r, metadata=auth()) for r in requests),
                    return_exceptions=True,
                )
                assert time.monotonic() - t0 < promised(1.0, 0.5)  # DB_TIMEOUT_SECONDS
                for r in results:
                    assert isinstance(r, grpc.aio.AioRpcError)
                    assert r.code() == grpc.StatusCode.UNAVAILABLE
                # Their statements ended with them, while the lock is still held.
                deadline = time.monotonic() + promised(0.0, 1.0)
                while await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO payments%'"
                ):
                    assert time.monotonic() < deadline, "the service's inserts wait on"
                    await asyncio.sleep(0.05)
            await wait_serving(svc_stack.grpc_target, timeout=20)
            for r in requests:
                reply = await stub(channel).CreatePayment(r, metadata=auth(), timeout=5)
                assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    finally:
        await holder.close()
        await admin.close()


async def test_provider_unreachable_is_unknown_and_the_service_stays_up(
    spawn_payment_svc: Spawn,
) -> None:
    from payments_dev.devdb import free_port

    svc_stack = await spawn_payment_svc(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as channel:
        for _ in range(3):
            reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
            assert reply.payment.status == pb.PAYMENT_STATUS_UNKNOWN
        assert await health(svc_stack.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert svc_stack.processes["payment-svc"].running
