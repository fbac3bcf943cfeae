"""One attempt path for creation and re-drive: the caller's deadline is
honoured (UNKNOWN, recorded, before it), a caller that gives up does not lose
the provider's answer, SIGTERM waits for it, and a database that blinks after
the provider answered does not lose it either."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from payment_svc.domain.deadlines import AttemptBudget
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.devdb import LocalPostgres
from payments_dev.stack import Stack
from tests.cli.conftest import run_cli
from tests.reconciler.reconciler_testkit import assert_completed, run_once
from tests.support import SimControl, auth, create_request, embedded_postgres, rich_error, stub

Spawn = Callable[..., Awaitable[Stack]]

# payment-svc as deployed: the provider may take 10 s.
SLOW_PROVIDER_SVC = {"PROVIDER_TIMEOUT_SECONDS": "10"}


def test_the_provider_gets_what_the_caller_can_wait_for_less_the_write() -> None:
    budget = AttemptBudget(provider_timeout=10, write_reserve=2)
    assert budget.provider_seconds(None) == 10  # no deadline: the whole timeout
    assert budget.provider_seconds(60) == 10  # never more than the timeout
    assert budget.provider_seconds(15) == 10
    assert budget.provider_seconds(5) == pytest.approx(5 - 0.1 - 2)
    # A short deadline keeps at most half of what is left for the write.
    assert budget.provider_seconds(3) == pytest.approx((3 - 0.1) / 2)
    assert budget.provider_seconds(1.1) == pytest.approx(0.5)
    assert budget.provider_seconds(0.05) == 0  # nothing left: UNKNOWN at once
    assert budget.write_seconds(3) == pytest.approx(2.9)
    assert budget.write_seconds(None) == 2


async def _get(channel: grpc.aio.Channel, payment_id: str) -> pb.Payment:
    reply = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return reply.payment


@pytest.mark.parametrize(
    "fault",
    [
        {"timeout_after_charge_rate": 1.0},  # charges, then holds the answer
        {"latency_ms": 6000},  # holds before charging
    ],
    ids=["holds-after-charge", "holds-before-charge"],
)
async def test_a_3s_caller_gets_unknown_before_its_deadline(
    spawn_payment_svc: Spawn, sim: SimControl, fault: dict[str, object]
) -> None:
    extra = await spawn_payment_svc(**SLOW_PROVIDER_SVC)
    await sim.faults(webhook_drop_rate=1.0, **fault)
    async with grpc.aio.insecure_channel(extra.grpc_target) as channel:
        t0 = time.monotonic()
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=3)
        elapsed = time.monotonic() - t0
        assert reply.payment.status == pb.PAYMENT_STATUS_UNKNOWN
        assert elapsed < 3, elapsed
        # Recorded as answered, with the reason in its history.
        assert (await _get(channel, reply.payment.id)).status == pb.PAYMENT_STATUS_UNKNOWN
        events = await stub(channel).ListPaymentEvents(
            svc.ListPaymentEventsRequest(payment_id=reply.payment.id), metadata=auth(), timeout=5
        )
        assert "caller's deadline" in events.events[-1].note


async def test_payments_pay_has_a_timeout(spawn_payment_svc: Spawn, sim: SimControl) -> None:
    extra = await spawn_payment_svc(**SLOW_PROVIDER_SVC)
    await sim.faults(timeout_after_charge_rate=1.0, webhook_drop_rate=1.0)
    args = ("--amount", "1999", "--currency", "USD", "--payment-method", "pm_card_visa")
    done = await asyncio.to_thread(
        run_cli,
        "pay",
        *args,
        "--timeout",
        "2",
        "--target",
        extra.grpc_target,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert '"PAYMENT_STATUS_UNKNOWN"' in done.stdout
    usage = await asyncio.to_thread(run_cli, "pay", "--help")
    assert "--timeout" in usage.stdout
    assert "15" in usage.stdout  # the default outlasts the provider timeout (10 s)


async def test_a_redrive_whose_caller_gave_up_is_recorded_even_through_sigterm(
    spawn_payment_svc: Spawn, sim: SimControl, channel: grpc.aio.Channel
) -> None:
    extra = await spawn_payment_svc(**SLOW_PROVIDER_SVC, PAYMENT_SVC_DRAIN_SECONDS="10")
    await sim.faults(error_rate=1.0)
    created = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    assert created.payment.status == pb.PAYMENT_STATUS_UNKNOWN
    p = created.payment
    # Only the re-drive's own answer can settle it: no webhook arrives.
    await sim.faults(error_rate=0, latency_ms=1500, webhook_drop_rate=1.0)
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        call = sync_grpc.ProviderSyncServiceStub(ch).RedrivePayment(
            sync.RedrivePaymentRequest(payment_id=p.id), metadata=auth("reconciler"), timeout=10
        )
        await asyncio.sleep(0.5)
        call.cancel()  # the reconciler gives up (a crash, its own deadline)
        with pytest.raises(asyncio.CancelledError):
            await call
    extra.processes["payment-svc"].signal(signal.SIGTERM)
    popen = extra.processes["payment-svc"].popen
    assert popen is not None
    assert await asyncio.to_thread(popen.wait, 15) == 0
    # The drain waited for the attempt: the answer is recorded.
    after = await _get(channel, p.id)
    assert after.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert after.provider_payment_id
    assert [i["charges"] for i in await sim.ledger(payment_id=p.id)] == [1]


@pytest.fixture
async def own_postgres() -> AsyncIterator[LocalPostgres]:
    pg = embedded_postgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


async def test_the_providers_answer_survives_a_database_outage(
    own_postgres: LocalPostgres, spawn_payment_svc: Spawn, sim: SimControl
) -> None:
    extra = await spawn_payment_svc(
        database_url=own_postgres.dsn, DB_TIMEOUT_SECONDS="1", **SLOW_PROVIDER_SVC
    )
    await sim.faults(latency_ms=1500, webhook_drop_rate=1.0)
    async with grpc.aio.insecure_channel(extra.grpc_target) as channel:
        # The database goes away while the provider works, and stays away:
        # the caller learns which payment, within its deadline.
        call = stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=4)
        t0 = time.monotonic()
        await asyncio.sleep(0.5)
        own_postgres.pause()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            elapsed = time.monotonic() - t0
        finally:
            own_postgres.resume()
        error = rich_error(exc.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert elapsed < 4, elapsed
        lost = error.metadata["payment_id"]
        assert lost.startswith("pay_")
        [intent] = await sim.ledger(payment_id=lost)
        assert (intent["status"], intent["charges"]) == ("succeeded", 1)

        # A blink shorter than the deadline: the write is retried, the caller
        # gets the answer.
        call = stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=8)
        await asyncio.sleep(0.5)
        own_postgres.pause()
        await asyncio.sleep(2.5)
        own_postgres.resume()
        reply = await call
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert (await _get(channel, reply.payment.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

        # The first converges: the reconciler finds the provider's answer.
        await sim.clear_faults()
        result = await run_once(extra, "--jobs", "sweep")
        assert_completed(result)
        converged = await _get(channel, lost)
        assert converged.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert converged.provider_payment_id == intent["id"]
