"""refund, refunds: tables for people, JSON for machines, the refusals on
stderr with exit code 1, never a traceback."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from tests.cli.conftest import Cli

VISA = ("--amount", "1000", "--currency", "USD", "--payment-method", "pm_card_visa")


def _ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_refund_part_then_the_rest_and_list_them(cli: Cli) -> None:
    payment = _ok_json(cli("pay", *VISA, "--json"))
    part = _ok_json(
        cli("refund", payment["id"], "--amount", "300", "--reason", "duplicate", "--json")
    )
    assert (part["status"], part["amount"], part["reason"]) == (
        "REFUND_STATUS_SUCCEEDED",
        300,
        "duplicate",
    )
    assert part["payment_id"] == payment["id"]
    uuid.UUID(part["idempotency_key"])  # a fresh uuid by default

    rest = cli("refund", payment["id"])  # the table; 0: all that remains
    assert rest.returncode == 0, rest.stderr
    assert "SUCCEEDED" in rest.stdout
    assert "700 USD" in rest.stdout

    listed = _ok_json(cli("refunds", payment["id"], "--json"))["refunds"]
    assert [r["amount"] for r in listed] == [300, 700]
    table = cli("refunds", payment["id"])
    assert table.returncode == 0, table.stderr
    assert part["id"] in table.stdout
    assert _ok_json(cli("get", payment["id"], "--json"))["status"] == "PAYMENT_STATUS_REVERSED"


def test_refusals_say_why(cli: Cli) -> None:
    payment = _ok_json(cli("pay", *VISA, "--json"))
    key = f"cli-{uuid.uuid4()}"
    first = _ok_json(
        cli("refund", payment["id"], "--amount", "600", "--idempotency-key", key, "--json")
    )
    stderr = _failed(cli("refund", payment["id"], "--amount", "600", "--idempotency-key", key))
    assert "ALREADY_EXISTS" in stderr
    assert "DUPLICATE_REFUND" in stderr
    assert first["id"] in stderr

    error = json.loads(_failed(cli("refund", payment["id"], "--amount", "401", "--json")))["error"]
    assert (error["code"], error["reason"]) == ("FAILED_PRECONDITION", "REFUND_EXCEEDS_REMAINING")
    assert error["metadata"]["remaining"] == "400"

    bad = _failed(cli("refund", payment["id"], "--reason", "because"))
    assert "INVALID_ARGUMENT" in bad
    assert "reason" in bad
