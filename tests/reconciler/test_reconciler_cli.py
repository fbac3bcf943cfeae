"""`payments reconcile` and `payments discrepancies [resolve]` as operators run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import grpc
from reconciler_testkit import create, get

from payments.v1 import payment_pb2 as pb
from payments_dev.stack import Stack
from tests.support import SimControl


def payments(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payments_cli.cli", *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PAYMENTS_TARGET": stack.grpc_target,
            "STRIPE_API_BASE": stack.sim_url,
            "RECONCILER_GRACE_SECONDS": "0",
            "RECONCILER_LEASE_SECONDS": "2",
            # as reconciler_testkit.reconciler_env: the test's objects only
            "RECONCILER_SETTLEMENT_WINDOW_SECONDS": "120",
            **env,
        },
        timeout=90,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


async def test_reconcile_runs_one_pass_and_prints_a_summary(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(webhook_drop_rate=1.0)
    p = await create(channel, payment_method="pm_card_processing")
    await sim.settle(p.provider_payment_id, "succeeded")

    runs = ok_json(payments(stack, "reconcile", "--json"))["runs"]

    assert [r["job"] for r in runs] == ["sweep", "catch_up", "settlement_diff"]
    assert all(r["succeeded"] and r["run_id"] for r in runs)
    assert runs[0]["fixed"] >= 1
    assert (await get(channel, p.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

    table = payments(stack, "reconcile", "--jobs", "sweep")
    assert table.returncode == 0, table.stderr
    assert "sweep" in table.stdout and "scanned" in table.stdout and "ok" in table.stdout
    assert "catch_up" not in table.stdout


def test_reconcile_exits_1_when_a_job_fails(stack: Stack) -> None:
    result = payments(stack, "reconcile", "--json", "--stripe-api-base", "http://127.0.0.1:9")
    assert result.returncode == 1
    runs = {r["job"]: r for r in json.loads(result.stdout)["runs"]}
    # (The sweep may have had nothing to ask the provider.)
    assert not runs["catch_up"]["succeeded"]
    assert not runs["settlement_diff"]["succeeded"]
    assert "Traceback" not in result.stderr


def test_reconcile_refuses_unknown_jobs_and_bad_settings(stack: Stack) -> None:
    assert payments(stack, "reconcile", "--jobs", "nope").returncode == 2
    bad = payments(stack, "reconcile", RECONCILER_PAGE_SIZE="0")
    assert bad.returncode == 2
    assert "RECONCILER_PAGE_SIZE" in bad.stderr


async def test_discrepancies_are_listed_by_kind_and_resolved_with_a_note(
    stack: Stack, sim: SimControl
) -> None:
    intent = await sim.post("/_sim/unrecorded_charges", {"amount": 3131, "currency": "gbp"})
    assert payments(stack, "reconcile", "--jobs", "settlement_diff").returncode == 0

    listed = ok_json(
        payments(stack, "discrepancies", "--kind", "unrecorded_provider_payment", "--json")
    )["discrepancies"]
    [mine] = [d for d in listed if d["provider_payment_id"] == intent["id"]]
    assert mine["kind"] == "DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT"
    assert mine["details"]["amount"] == "3131"
    others = ok_json(payments(stack, "discrepancies", "--kind", "STUCK_PAYMENT", "--json"))
    assert intent["id"] not in {d["provider_payment_id"] for d in others["discrepancies"]}

    table = payments(stack, "discrepancies", "--kind", "UNRECORDED_PROVIDER_PAYMENT")
    assert table.returncode == 0
    assert intent["id"] in table.stdout

    resolved = ok_json(
        payments(
            stack, "discrepancies", "resolve", mine["id"], "--note", "refunded by hand", "--json"
        )
    )
    assert resolved["note"] == "refunded by hand"
    assert resolved["resolved_by"]
    assert resolved["resolved_at"]

    open_now = ok_json(payments(stack, "discrepancies", "--json"))["discrepancies"]
    assert mine["id"] not in {d["id"] for d in open_now}
    everything = ok_json(payments(stack, "discrepancies", "--all", "--page-size", "500", "--json"))
    assert mine["id"] in {d["id"] for d in everything["discrepancies"]}


def test_discrepancy_usage_errors(stack: Stack) -> None:
    bad_kind = payments(stack, "discrepancies", "--kind", "LATE")
    assert bad_kind.returncode == 2
    assert "STUCK_PAYMENT" in bad_kind.stderr
    no_note = payments(stack, "discrepancies", "resolve", "x", "--note", " ")
    assert no_note.returncode == 2
    merchant = payments(stack, "discrepancies", "--token", "dev-merchant-token")
    assert merchant.returncode == 1
    assert "PERMISSION_DENIED" in merchant.stderr
