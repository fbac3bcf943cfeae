"""The real Prometheus (Debian's binary, unpacked by scripts/check-deploy)
scraping a running local stack: every alert expression and every dashboard
panel query is sent to its HTTP API after payments, webhooks, refunds and
reconciler passes. Each must parse, every metric it names must be in the
scraped data, and Prometheus must evaluate every alert rule without error.

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest
import yaml
from deploy_testkit import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    alert_rules,
    dashboard_exprs,
    promql_metric_names,
    run,
    tool,
)

from payment_svc.adapters.migrate import migrate
from payments.client import AlreadyExists, PaymentNotRefundable, PaymentsClient
from payments.v1 import payment_pb2 as pb
from payments_dev.devdb import free_port
from payments_dev.stack import DEV_TOKENS, Stack, StackConfig, wait_serving
from tests.support import SimControl
from tests.webhook_dispatcher import dispatch_testkit

# Grafana's variables, as Grafana would substitute them for a 1 s scrape.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# The jobs Prometheus names after the ServiceMonitors (deploy/base/monitoring).
JOBS = ("payment-svc", "webhook-gateway", "reconciler", "webhook-dispatcher")


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@pytest.fixture
async def live_stack(pg_server: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Every process on free ports, on a database of its own (its reconciler
    runs every job every 2 s with no grace, which the session's shared
    database must not see)."""
    name = f"payments_prom_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(pg_server, name)
    await migrate(dsn)
    config = StackConfig.on_free_ports(
        database_url=dsn,
        log_dir=tmp_path / "logs",
        extra_env={
            "PROVIDER_TIMEOUT_SECONDS": "1.5",
            "RECONCILER_SWEEP_SECONDS": "2",
            "RECONCILER_CATCH_UP_SECONDS": "2",
            "RECONCILER_SETTLEMENT_SECONDS": "2",
            "RECONCILER_GRACE_SECONDS": "0",
            # the webhook dispatcher polls its endpoints often, retries fast
            "WEBHOOK_POLL_SECONDS": "0.1",
            "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2",
            "WEBHOOK_RETRY_JITTER": "0",
        },
    )
    (tmp_path / "logs").mkdir()
    stack = Stack(config)
    try:
        stack.start()
        await wait_serving(stack.grpc_target)
        yield stack
    finally:
        stack.stop()
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def rules_file(directory: Path) -> Path:
    target = directory / "payments-alerts.rules.yaml"
    run(sys.executable, str(DEPLOY / "tools" / "prometheus_rules.py"), str(ALERTS), str(target))
    return target


@contextlib.contextmanager
def prometheus(stack: Stack, directory: Path) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping the stack every second
    and evaluating the alert rules every second; yields its URL."""
    ports = {
        "payment-svc": stack.config.metrics_port,
        "webhook-gateway": stack.config.gateway_port,
        "reconciler": stack.config.reconciler_port,
        "webhook-dispatcher": stack.config.dispatcher_port,
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file(directory))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in ports.items()
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def wait_until(what: str, check: Any, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last!r})")


async def api(http: aiohttp.ClientSession, base: str, path: str, **params: str) -> Any:
    async with http.get(f"{base}/api/v1/{path}", params=params) as response:
        body: dict[str, Any] = await response.json()
        return body


async def drive_traffic(stack: Stack) -> None:
    """Payments (succeeded, declined, a duplicate), refunds (and a refusal),
    webhooks (settlements through the gateway, a forged one refused), a
    payment whose webhook is lost until the reconciler finds it, and a
    charge we never made, while a change-feed stream is open and the feed
    is pushed to a receiver on 127.0.0.1 (the webhook dispatcher)."""
    async with (
        PaymentsClient(stack.grpc_target, DEV_TOKENS["merchant"]) as client,
        aiohttp.ClientSession(base_url=stack.sim_url) as sim_http,
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as hooks,
    ):
        sim = SimControl(sim_http)
        updates: list[pb.PaymentUpdate] = []
        receiver = await hooks.enter_async_context(
            contextlib.asynccontextmanager(dispatch_testkit.receiver)()
        )
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            await dispatch_testkit.create_endpoint(channel, receiver.url)

        async def watch() -> None:
            async for update in client.watch_updates():
                updates.append(update)

        watcher = asyncio.create_task(watch())
        try:
            succeeded = [
                await client.create_payment(f"prom-{uuid.uuid4()}", 1000 + i, "USD", "pm_card_visa")
                for i in range(10)
            ]
            declined = await client.create_payment(
                f"prom-{uuid.uuid4()}", 700, "EUR", "pm_card_chargeDeclined"
            )
            assert declined.status == pb.PAYMENT_STATUS_FAILED
            key = f"prom-{uuid.uuid4()}"
            await client.create_payment(key, 500, "USD", "pm_card_visa")
            with pytest.raises(AlreadyExists):
                await client.create_payment(key, 500, "USD", "pm_card_visa")
            for payment in succeeded[:5]:
                refund = await client.refund_payment(payment.id, f"prom-r-{uuid.uuid4()}", 300)
                assert refund.status == pb.REFUND_STATUS_SUCCEEDED
            with pytest.raises(PaymentNotRefundable):
                await client.refund_payment(declined.id, f"prom-r-{uuid.uuid4()}")

            # Settled at the provider: its webhook goes through the gateway.
            processing = await client.create_payment(
                f"prom-{uuid.uuid4()}", 4200, "USD", "pm_card_processing"
            )
            await sim.settle(processing.provider_payment_id, "succeeded")
            # Settled with every webhook lost: the reconciler's pass finds it.
            await sim.faults(webhook_drop_rate=1.0)
            lost = await client.create_payment(
                f"prom-{uuid.uuid4()}", 4300, "USD", "pm_card_processing"
            )
            await sim.settle(lost.provider_payment_id, "succeeded")
            await sim.post("/_sim/unrecorded_charges", {"amount": 999, "currency": "USD"})
            for payment in (processing, lost):

                async def settled(payment_id: str = payment.id) -> bool:
                    status = (await client.get_payment(payment_id)).status
                    return status == pb.PAYMENT_STATUS_SUCCEEDED

                await wait_until(f"{payment.id} SUCCEEDED", settled)
            await sim.clear_faults()

            # A forged webhook: refused, counted by reason.
            async with http.post(
                f"{stack.gateway_url}/webhooks/stripe",
                data=b'{"id": "evt_forged", "type": "payment_intent.succeeded"}',
                headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
            ) as response:
                assert response.status == 400
            await wait_until("the feed's updates reach the watcher", _async(lambda: updates))
            await wait_until("the feed pushed to the receiver", _async(lambda: receiver.got))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _async(predicate: Any) -> Any:
    async def check() -> Any:
        return predicate()

    return check


def queries() -> dict[str, str]:
    """Every alert expression and dashboard panel query, by where it is."""
    found = {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    for panel in panels:
        for i, target in enumerate(t for t in panel.get("targets", []) if "expr" in t):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
            found[f"panel {panel.get('title', '?')!r} query {i}"] = expr
    # The same panels and queries as the offline tests see.
    assert len(found) == len(alert_rules()) + len(dashboard_exprs(dashboard))
    return found


@pytest.mark.timeout(300)
async def test_deploy_every_alert_and_panel_query_runs_on_live_metrics(
    live_stack: Stack, tmp_path: Path
) -> None:
    with prometheus(live_stack, tmp_path) as base:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/-/ready") as response:
                        return response.status == 200
                return False

            await wait_until("Prometheus ready", ready)
            await drive_traffic(live_stack)
            traffic_done = time.time()

            async def every_target_up() -> bool:
                reply = await api(http, base, "query", query="up == 1")
                return {r["metric"]["job"] for r in reply["data"]["result"]} == set(JOBS)

            await wait_until("every process scraped and up", every_target_up)

            async def reconciled_after_traffic() -> bool:
                # Every job of the reconciler succeeded after the traffic,
                # and Prometheus scraped it.
                reply = await api(
                    http, base, "query", query="reconciler_last_success_timestamp_seconds"
                )
                done = {
                    r["metric"]["reconciler_job"]
                    for r in reply["data"]["result"]
                    if float(r["value"][1]) > traffic_done
                }
                return done == {"sweep", "catch_up", "settlement_diff"}

            await wait_until("a reconciler pass after the traffic", reconciled_after_traffic)
            await asyncio.sleep(2)  # one more scrape and rule evaluation

            scraped = set((await api(http, base, "label/__name__/values"))["data"])
            problems: dict[str, Any] = {}
            for where, expr in queries().items():
                reply = await api(http, base, "query", query=expr)
                if reply["status"] != "success":
                    problems[where] = f"{reply.get('errorType')}: {reply.get('error')}"
                    continue
                missing = promql_metric_names(expr) - scraped
                if missing:
                    problems[where] = f"names no scraped metric: {sorted(missing)}"
            assert not problems, json.dumps(problems, indent=2)

            rules = await api(http, base, "rules", type="alert")
            evaluated = {
                rule["name"]: (rule["health"], rule.get("lastError", ""))
                for group in rules["data"]["groups"]
                for rule in group["rules"]
            }
            assert set(evaluated) == {rule["alert"] for rule in alert_rules()}
            assert all(health == "ok" for health, _ in evaluated.values()), evaluated
