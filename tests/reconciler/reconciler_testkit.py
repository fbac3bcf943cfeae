"""What the reconciler tests share: `reconciler --once` as a real process against
the session stack, the reconciler's view of payment-svc, payments in given states."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.stack import DEV_TOKENS, Stack
from payments_stripe.reader import StripeReader
from tests.support import SimControl, auth, create_request, stub

RECONCILER = str(Path(sys.executable).parent / "reconciler")
FINAL = {pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_FAILED, pb.PAYMENT_STATUS_REVERSED}


def reconciler_env(stack: Stack, **env: str) -> dict[str, str]:
    """The session stack's addresses, a short grace, no lease left behind for the
    next run: payments just made are swept at once. The settlement diff looks
    back 2 minutes, not a day: a test's provider objects are seconds old,
    and the session's older ones only make each diff slower."""
    return {
        **os.environ,
        "PAYMENT_SVC_TARGET": stack.grpc_target,
        "STRIPE_API_BASE": stack.sim_url,
        "RECONCILER_METRICS_LISTEN": "127.0.0.1:0",
        "RECONCILER_GRACE_SECONDS": "0",
        "RECONCILER_LEASE_SECONDS": "2",
        "RECONCILER_PROVIDER_TIMEOUT_SECONDS": "3",
        "RECONCILER_SETTLEMENT_WINDOW_SECONDS": "120",
        "LOG_LEVEL": "INFO",
        **env,
    }


@dataclass
class Pass:
    """One `reconciler --once`: its exit code, its log lines and its runs."""

    returncode: int
    lines: list[dict[str, Any]]
    output: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def parse_pass(returncode: int, output: str) -> Pass:
    lines = []
    for raw in output.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    result = Pass(returncode, lines, output)
    for finished in result.events("reconciliation_pass_finished"):
        result.runs = {run["job"]: run for run in finished["runs"]}
    return result


async def run_once(stack: Stack, *args: str, timeout: float = 90, **env: str) -> Pass:
    proc = await asyncio.create_subprocess_exec(
        RECONCILER,
        "--once",
        *args,
        env=reconciler_env(stack, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return parse_pass(proc.returncode, out.decode(errors="replace"))


def assert_completed(result: Pass) -> None:
    assert result.returncode == 0, result.output[-4000:]
    assert result.runs, "no reconciliation_pass_finished line"
    for run in result.runs.values():
        assert run["succeeded"], run


def sync_stub(channel: grpc.aio.Channel) -> sync_grpc.ProviderSyncServiceStub:
    return sync_grpc.ProviderSyncServiceStub(channel)


async def get(channel: grpc.aio.Channel, payment_id: str) -> pb.Payment:
    reply = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return reply.payment


async def history(channel: grpc.aio.Channel, payment_id: str) -> list[pb.PaymentEvent]:
    reply = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=payment_id), metadata=auth(), timeout=5
    )
    return list(reply.events)


def reconciler_fixes(events: list[pb.PaymentEvent]) -> list[pb.PaymentEvent]:
    """History entries where the reconciler moved the payment."""
    return [
        e
        for e in events
        if e.source == pb.PAYMENT_EVENT_SOURCE_RECONCILER
        and e.applied
        and e.from_status != e.to_status
    ]


async def create(channel: grpc.aio.Channel, **fields: Any) -> pb.Payment:
    reply = await stub(channel).CreatePayment(create_request(**fields), metadata=auth(), timeout=10)
    return reply.payment


async def discrepancies(
    channel: grpc.aio.Channel, kind: sync.DiscrepancyKind.ValueType, include_resolved: bool = True
) -> list[sync.Discrepancy]:
    found: list[sync.Discrepancy] = []
    token = ""
    while True:
        reply = await sync_stub(channel).ListDiscrepancies(
            sync.ListDiscrepanciesRequest(
                kinds=[kind], include_resolved=include_resolved, page_size=500, page_token=token
            ),
            metadata=auth("reconciler"),
            timeout=10,
        )
        found += reply.discrepancies
        token = reply.next_page_token
        if not token:
            return found


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s")


async def sim_stripe_post(
    sim: SimControl, path: str, form: dict[str, str], idempotency_key: str | None = None
) -> dict[str, Any]:
    """A call to the simulator's Stripe API, as another system holding our key would make."""
    headers = {"Authorization": "Bearer sk_test_dev"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    async with sim.http.post(path, data=form, headers=headers) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        return await r.text()


async def http_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if "{" in series:
            metric, _, rest = series.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            metric, got = series, ""
        if metric == name and got == want:
            return float(value)
    return None


def new_reconciler_id(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


__all__ = ["DEV_TOKENS", "FINAL"]


async def catch_up_asks_for_types() -> list[str]:
    """The types[] of the events page catch-up asks for, as the provider
    receives them (the SDK's encoding of the request included)."""
    asked: list[str] = []

    async def events(request: web.Request) -> web.Response:
        asked.extend(v for k, v in request.query.items() if k.startswith("types["))
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = web.Application()
    app.router.add_get("/v1/events", events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    reader = StripeReader(
        api_key="sk_test_x", base_url=f"http://127.0.0.1:{runner.addresses[0][1]}", timeout=5
    )
    try:
        page = await reader.events_page(created_gte=1_700_000_000)
    finally:
        await reader.close()
        await runner.cleanup()
    assert page.items == []
    return asked
