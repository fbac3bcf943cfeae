"""The server around the use cases: metrics, health, reflection, the
deadline cap, graceful drain, production settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Stack
from tests.support import (
    SimControl,
    auth,
    create_request,
    eventually,
    promised,
    rich_error,
    stub,
)

Spawn = Callable[..., Awaitable[Stack]]


async def scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(stack.metrics_url) as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def counted(stack: Stack, name: str, at_least: float, **labels: str) -> None:
    """Polls the process's metrics until the sample reaches at_least."""

    async def reached() -> bool:
        return sample(await scrape(stack), name, **labels) >= at_least

    await eventually(reached, f"{name} {labels} >= {at_least}")


CREATE = {
    "grpc_service": "payments.v1.PaymentService",
    "grpc_method": "CreatePayment",
    "grpc_type": "unary",
}


async def test_grpc_metrics_count_every_outcome(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl, db: asyncpg.Pool
) -> None:
    before = await scrape(stack)
    await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub(channel).CreatePayment(create_request(amount=0), metadata=auth(), timeout=5)
    await sim.faults(latency_ms=1500)
    # A slow provider no longer exceeds a caller's deadline (the answer is
    # UNKNOWN, within it); a payment that cannot even be recorded in time
    # (writers held off by a lock) still does.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE payments IN EXCLUSIVE MODE")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=0.3)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    call = stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    # Cancelled once the server has started it (it waits on the slow provider).
    started = sample(before, "grpc_server_started_total", **CREATE)
    await counted(stack, "grpc_server_started_total", started + 4, **CREATE)
    call.cancel()
    handled = sample(before, "grpc_server_handling_seconds_count", **CREATE)
    await counted(stack, "grpc_server_handling_seconds_count", handled + 4, **CREATE)

    after = await scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("grpc_server_started_total", **CREATE) == 4
    assert delta("grpc_server_handled_total", **CREATE, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **CREATE, grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_handled_total", **CREATE, grpc_code="DEADLINE_EXCEEDED") == 1
    assert delta("grpc_server_handled_total", **CREATE, grpc_code="CANCELLED") == 1
    assert delta("grpc_server_handling_seconds_count", **CREATE) == 4
    assert delta("payments_created_total", outcome="succeeded") >= 1
    assert delta("payments_created_total", outcome="invalid_argument") == 1
    assert sample(after, "payments_database_up") == 1


async def test_a_caller_that_goes_away_does_not_lose_the_providers_answer(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(latency_ms=800)
    req = create_request()
    started = sample(await scrape(stack), "grpc_server_started_total", **CREATE)
    call = stub(channel).CreatePayment(req, metadata=auth(), timeout=5)
    await counted(stack, "grpc_server_started_total", started + 1, **CREATE)
    call.cancel()  # the caller goes away while the provider works
    with pytest.raises(asyncio.CancelledError):
        await call

    async def settled() -> bool:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(req, metadata=auth(), timeout=5)
        return bool(rich_error(exc.value).metadata["status"] != "PAYMENT_STATUS_PENDING")

    await eventually(settled, "the payment left PENDING")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(req, metadata=auth(), timeout=5)
    err = rich_error(exc.value)
    assert err.metadata["status"] == "PAYMENT_STATUS_SUCCEEDED"
    # By the provider's answer to our call, not by its webhook afterwards.
    history = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=err.metadata["payment_id"]),
        metadata=auth(),
        timeout=5,
    )
    answers = [(e.source, e.to_status) for e in history.events]
    assert (pb.PAYMENT_EVENT_SOURCE_API, pb.PAYMENT_STATUS_SUCCEEDED) in answers, answers


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for name in ("", "payments.v1.PaymentService", "payments.v1.ProviderSyncService"):
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=2
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = await _reflected_services(channel)
    assert "grpc.health.v1.Health" in services
    assert {"payments.v1.PaymentService", "payments.v1.ProviderSyncService"} <= services


async def _reflected_services(channel: grpc.aio.Channel) -> set[str]:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
    )
    async for reply in call:
        return {s.name for s in reply.list_services_response.service}
    return set()


async def test_calls_without_a_deadline_get_the_server_cap(
    spawn_payment_svc: Spawn, sim: SimControl
) -> None:
    extra = await spawn_payment_svc(PAYMENT_SVC_MAX_CALL_SECONDS="1", PROVIDER_TIMEOUT_SECONDS="10")
    await sim.faults(latency_ms=3000)
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(ch).CreatePayment(create_request(), metadata=auth())
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < promised(1.0, 0.75)  # PAYMENT_SVC_MAX_CALL_SECONDS


async def test_sigterm_drains_in_flight_calls(spawn_payment_svc: Spawn, sim: SimControl) -> None:
    extra = await spawn_payment_svc(PAYMENT_SVC_DRAIN_SECONDS="10")
    await sim.faults(latency_ms=1000)
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        call = asyncio.ensure_future(
            stub(ch).CreatePayment(create_request(), metadata=auth(), timeout=10)
        )
        await counted(extra, "grpc_server_started_total", 1, **CREATE)  # in flight
        extra.processes["payment-svc"].signal(signal.SIGTERM)
        reply = await call
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    popen = extra.processes["payment-svc"].popen
    assert popen is not None
    assert await asyncio.to_thread(popen.wait, 15) == 0


def _payment_svc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "payment-svc")
    # Settings fail before anything listens: these runs end at once.
    return subprocess.run(
        [exe, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )


def test_production_refuses_development_defaults(database_url: str) -> None:
    result = _payment_svc({"PAYMENTS_ENV": "production", "DATABASE_URL": database_url})
    assert result.returncode == 2
    assert "refuses the development tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrations_need_only_the_database(database_url: str) -> None:
    # Production settings without any token: the migration Job's situation.
    result = _payment_svc({"PAYMENTS_ENV": "production", "DATABASE_URL": database_url}, "migrate")
    assert result.returncode == 0, result.stderr


def test_bad_configuration_fails_at_start_with_a_clear_message() -> None:
    for args in ((), ("migrate",)):
        result = _payment_svc({"DATABASE_URL": "", "PAYMENTS_ENV": "development"}, *args)
        assert result.returncode == 2
        assert "DATABASE_URL is required" in result.stderr
    result = _payment_svc({"DATABASE_URL": "postgresql://x/y", "DB_TIMEOUT_SECONDS": "soon"})
    assert result.returncode == 2
    assert "DB_TIMEOUT_SECONDS" in result.stderr


async def test_production_turns_reflection_off(spawn_payment_svc: Spawn) -> None:
    extra = await spawn_payment_svc(
        PAYMENTS_ENV="production",
        PAYMENT_SVC_MERCHANT_TOKENS="prod-token=merchant-9",
        PAYMENT_SVC_GATEWAY_TOKEN="prod-gw",
        PAYMENT_SVC_RECONCILER_TOKEN="prod-rec",
        STRIPE_API_KEY="sk_test_prod_like",
        PAYMENT_SVC_PAGE_TOKEN_KEY="prod-page-token-key-0123456789",
    )
    async with grpc.aio.insecure_channel(extra.grpc_target) as ch:
        # The method is not served at all. (A unary call: with the streaming
        # call, the server's early UNIMPLEMENTED raced the client's first
        # message and sometimes surfaced as INTERNAL.)
        unregistered = ch.unary_unary(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await unregistered(reflection_pb2.ServerReflectionRequest(list_services=""), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        reply = await stub(ch).CreatePayment(
            create_request(), metadata=(("authorization", "Bearer prod-token"),), timeout=5
        )
        assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
