"""A short `payments bench` run end to end: its own stack, every phase, JSON.
Speed is what the benchmark measures; it is never asserted here."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from payments_dev.bench import Environment, _webhooks_off
from provider_sim import SimSettings
from tests.cli.conftest import run_cli
from tests.provider_sim.sim_testkit import running_sim

_PHASE_KEYS = {"completed", "latency_us", "errors", "statuses"}
_LATENCY_KEYS = {"p50", "p90", "p99", "max"}


def _check_phase(name: str, phase: dict[str, Any], unit: str) -> None:
    assert set(phase) >= _PHASE_KEYS | {f"{unit}_per_s"}, name
    assert set(phase["latency_us"]) >= _LATENCY_KEYS, name
    assert phase["completed"] > 0, name


def check_cpu_per_op(phase: dict[str, Any], unit: str) -> None:
    """CPU per operation is each process's cores over the phase's rate, and
    the stack's processes that did the work are among them (never an empty
    table that any loop over it would pass)."""
    cores, per_op = phase["cpu_cores"], phase["cpu_ms_per_op"]
    assert cores is not None, "no CPU measured (Linux's /proc is there)"
    assert {"client (this process)", "payment-svc", "provider-sim"} <= set(cores), cores
    assert {"client (this process)", "payment-svc"} <= set(per_op), per_op
    for name, ms in per_op.items():
        assert ms == pytest.approx(
            cores[name] * 1000 / phase[f"{unit}_per_s"], rel=0.05, abs=0.01
        ), name


# Budgets: the subprocess's timeout is under the test's own, so that a slow
# run fails with the bench's output rather than pytest-timeout's stack dump.
@pytest.mark.timeout(300)
def test_bench_smoke_json() -> None:
    args = ("bench", "--duration", "0.5", "--warmup", "0.2", "--concurrency", "4", "--rate", "50")
    webhook_args = ("--webhook-rate", "50", "--webhook-payments", "20")
    refund_args = ("--refund-rate", "50", "--refund-payments", "20")
    result = run_cli(*args, *webhook_args, *refund_args, "--json", timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    expected = {"environment", "target", "cpu_count", "postgres", "options", "phases"}
    expected |= {"closed_loop", "open_loop", "raw_sql", "full_flow_to_raw", "webhooks"}
    expected |= {"refunds"}
    assert expected <= set(report)
    assert report["phases"] == ["payments", "webhooks", "refunds", "raw"]
    assert report["cpu_count"] >= 1
    assert {"fsync", "synchronous_commit", "durable_commits"} <= set(report["postgres"])
    assert "webhook_secret" not in report["options"]
    for phase in ("closed_loop", "open_loop", "raw_sql"):
        _check_phase(phase, report[phase], "payments")
        assert report[phase]["statuses"].get("PAYMENT_STATUS_SUCCEEDED", 0) > 0, phase
    assert report["open_loop"]["target_rate"] == 50
    assert report["full_flow_to_raw"] is not None

    webhooks = report["webhooks"]
    assert {"gateway_url", "events", "check", "full_flow_to_raw"} <= set(webhooks)
    for phase in ("closed_loop", "open_loop", "raw_sql"):
        _check_phase(f"webhooks {phase}", webhooks[phase], "events")
        assert webhooks[phase]["pool"]["payments"] == 20, phase
        assert webhooks[phase]["errors"] == {}, phase
    for phase in ("closed_loop", "open_loop"):
        assert webhooks[phase]["statuses"].get("acknowledged", 0) > 0, phase
    assert webhooks["open_loop"]["target_rate"] == 50
    assert webhooks["full_flow_to_raw"] is not None
    # Every acknowledged event is in the inbox, matched to a pool payment;
    # the first event about each of the 2 x 20 payments settled it.
    check = webhooks["check"]
    assert check["acknowledged"] > 0
    assert check["missing"] == 0
    assert check["in_inbox"] == check["matched"] >= check["acknowledged"]
    assert check["applied"] == check["pool"] == 40
    assert check["pool_statuses"] == {"SUCCEEDED": 40}

    refunds = report["refunds"]
    for phase in ("closed_loop", "open_loop", "raw_sql"):
        _check_phase(f"refunds {phase}", refunds[phase], "refunds")
        assert refunds[phase]["pool"]["payments"] == 20, phase
        assert refunds[phase]["errors"] == {}, phase
        assert refunds[phase]["statuses"].get("REFUND_STATUS_SUCCEEDED", 0) > 0, phase
    assert refunds["open_loop"]["target_rate"] == 50
    assert refunds["full_flow_to_raw"] is not None
    # The ratio the refunds target is stated in, from this run's own rates.
    to_payments = refunds["to_payments"]
    assert to_payments["closed_loop"] == pytest.approx(
        refunds["closed_loop"]["refunds_per_s"] / report["closed_loop"]["payments_per_s"], rel=0.01
    )
    assert to_payments["raw_sql"] == pytest.approx(
        refunds["raw_sql"]["refunds_per_s"] / report["raw_sql"]["payments_per_s"], rel=0.01
    )
    check_cpu_per_op(refunds["closed_loop"], "refunds")
    check_cpu_per_op(report["closed_loop"], "payments")


@pytest.mark.timeout(180)
def test_bench_one_flow_without_raw() -> None:
    args = ("bench", "--phases", "webhooks", "--duration", "0.5", "--warmup", "0")
    args += ("--concurrency", "2", "--webhook-rate", "20", "--webhook-payments", "5")
    result = run_cli(*args, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["phases"] == ["webhooks"]
    assert report["closed_loop"] is None
    assert report["webhooks"]["raw_sql"] is None
    _check_phase("webhooks closed loop", report["webhooks"]["closed_loop"], "events")


def test_bench_refuses_unknown_phases() -> None:
    result = run_cli("bench", "--phases", "payments,disputes")
    assert result.returncode == 2
    assert "disputes" in result.stderr
    result = run_cli("bench", "--phases", "raw")
    assert result.returncode == 2
    assert "--phases" in result.stderr


async def test_payments_phase_turns_the_simulators_webhooks_off_and_back_on() -> None:
    """Flow 1 is measured without provider-sim delivering the payments'
    webhooks: their events are recorded, none is sent, and the webhook URL
    the stack had is back afterwards, also when the phase fails."""
    hook = "http://127.0.0.1:9/webhooks/stripe"  # never reached: nothing is sent
    async with (
        running_sim(SimSettings(port=0, webhook_url=hook)) as url,
        aiohttp.ClientSession() as http,
    ):
        env = Environment("unused:1", "http://unused", None, "test", sim_url=url)

        async def failing_phase() -> None:
            async with _webhooks_off(env, lambda _: None):
                async with http.get(f"{url}/_sim/webhooks") as response:
                    assert (await response.json())["url"] is None
                async with http.post(
                    f"{url}/v1/payment_intents",
                    data={
                        "amount": "100",
                        "currency": "usd",
                        "confirm": "true",
                        "payment_method": "pm_card_visa",
                    },
                    headers={"Authorization": "Bearer sk_test_bench"},
                ) as response:
                    assert response.status == 200, await response.text()
                raise RuntimeError("phase failed")

        with pytest.raises(RuntimeError, match="phase failed"):
            await failing_phase()
        async with http.get(f"{url}/_sim/webhooks") as response:
            config = await response.json()
        assert config["url"] == hook
        assert config["stats"]["attempts"] == 0
        async with http.get(f"{url}/_sim/events") as response:
            events = (await response.json())["events"]
        assert [e["type"] for e in events] == ["payment_intent.succeeded"]
        assert events[0]["delivery_state"] == "no_endpoint"
