"""The running processes and what deploy/ expects of them: every /metrics page
passes `promtool check metrics`, every process exports the names that are its
contract, and every metric the dashboard or an alert names is really exported."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from deploy_testkit import (
    DASHBOARD,
    alert_rules,
    dashboard_exprs,
    exported_names,
    promql_metric_names,
    run,
    tool,
)

from payments_dev.stack import Stack
from tests.webhook_dispatcher.dispatch_testkit import (
    create_endpoint,
    delete_endpoint,
    start_dispatcher,
)

# The names each process promises (deploy/ alerts and dashboards use them).
CONTRACT = {
    "payment-svc": {
        "grpc_server_started_total", "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket", "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total", "payments_created_total", "payments_database_up",
        "payments_unmatched_provider_events", "payments_provider_events_total",
        "payments_refunds_total",
        "payments_feed_updates_total", "payments_feed_streams_open",
        "payments_feed_delivery_lag_seconds_bucket", "payments_feed_listener_up",
    },
    "webhook-gateway": {
        "webhook_gateway_requests_total", "webhook_gateway_verification_failures_total",
        "webhook_gateway_forward_seconds_bucket", "webhook_gateway_events_total",
        "webhook_gateway_signature_matches_total",
    },
    "reconciler": {
        "reconciler_discrepancies_total", "reconciler_open_discrepancies",
        "reconciler_oldest_non_final_payment_age_seconds", "reconciler_non_final_payments",
        "reconciler_last_success_timestamp_seconds", "reconciler_runs_total",
        "reconciler_fixes_total", "reconciler_errors_total",
        "reconciler_job_duration_seconds_bucket",
    },
    "webhook-dispatcher": {
        "webhook_attempts_total", "webhook_attempt_duration_seconds_bucket",
        "webhook_oldest_undelivered_age_seconds", "webhook_endpoints_served",
        "webhook_endpoints_disabled_total",
    },
}  # fmt: skip
# Made by Prometheus itself, not by a process.
SYNTHETIC = {"up"}


# The session's stack runs no dispatcher (tests start their own): this
# module does, with an endpoint to serve (a closed port on loopback), so that
# its per-endpoint series exist.
DISPATCHER: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
async def dispatcher(
    stack: Stack, channel: grpc.aio.Channel, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[None]:
    endpoint = await create_endpoint(channel, "http://127.0.0.1:9/metrics-test")
    proc = start_dispatcher(stack, Path(tmp_path_factory.mktemp("dispatcher")), "metrics")
    DISPATCHER["url"] = f"http://127.0.0.1:{proc.metrics_port}/metrics"  # type: ignore[attr-defined]
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # until it serves the endpoint
                async with http.get(DISPATCHER["url"]) as response:
                    if endpoint.id in await response.text():
                        break
                await asyncio.sleep(0.1)
        yield
    finally:
        proc.stop()
        await delete_endpoint(channel, endpoint.id)


def metrics_urls(stack: Stack) -> dict[str, str]:
    return {
        "payment-svc": stack.metrics_url,
        "webhook-gateway": f"{stack.gateway_url}/metrics",
        "reconciler": f"http://127.0.0.1:{stack.config.reconciler_port}/metrics",
        "webhook-dispatcher": DISPATCHER["url"],
    }


async def scrape(stack: Stack) -> dict[str, str]:
    pages: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for process, url in metrics_urls(stack).items():
            async with http.get(url) as response:
                assert response.status == 200, (process, url)
                pages[process] = await response.text()
    return pages


@pytest.mark.parametrize("process", sorted(CONTRACT))
async def test_deploy_live_metrics_pass_promtool_check_metrics(stack: Stack, process: str) -> None:
    page = (await scrape(stack))[process]
    run(tool("promtool"), "check", "metrics", stdin=page.encode())


@pytest.mark.parametrize("process", sorted(CONTRACT))
async def test_deploy_each_process_exports_its_contract(stack: Stack, process: str) -> None:
    exported = exported_names((await scrape(stack))[process])
    assert CONTRACT[process] <= exported, sorted(CONTRACT[process] - exported)


async def test_deploy_every_metric_in_the_dashboard_and_alerts_is_exported(stack: Stack) -> None:
    exported = set().union(*(exported_names(page) for page in (await scrape(stack)).values()))
    wanted: dict[str, set[str]] = {}
    for rule in alert_rules():
        wanted[f"alert {rule['alert']}"] = promql_metric_names(rule["expr"])
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        wanted.setdefault("dashboard", set()).update(promql_metric_names(expr))
    assert all(wanted.values()), wanted
    missing = {where: names - exported - SYNTHETIC for where, names in wanted.items()}
    assert not any(missing.values()), {k: sorted(v) for k, v in missing.items() if v}


def test_deploy_promql_metric_names_sees_names_not_functions_labels_or_keywords() -> None:
    expr = (
        'sum by (grpc_service) (rate(grpc_server_handled_total{grpc_code=~"Internal|up"}[5m]))'
        " / on (job) group_left sum without (instance) (rate(other_total[$__rate_interval]))"
        " > 0.05 and time() - max(last_seconds offset 5m) > 300 or absent(up{job='x'})"
    )
    assert promql_metric_names(expr) == {
        "grpc_server_handled_total", "other_total", "last_seconds", "up",
    }  # fmt: skip
