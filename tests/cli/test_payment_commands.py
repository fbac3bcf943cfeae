"""pay, get, events, list: tables for people, JSON for machines, errors on
stderr with exit code 1 (2 for usage), never a traceback."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from payments_cli import cli as cli_module
from payments_dev.stack import DEV_TOKENS
from tests.cli.conftest import Cli, run_cli

VISA = ("--amount", "1999", "--currency", "USD", "--payment-method", "pm_card_visa")


def _ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_pay_json_succeeds_with_enum_names(cli: Cli) -> None:
    payment = _ok_json(
        cli("pay", *VISA, "--metadata", "order=42", "--description", "a [b]", "--json")
    )
    assert payment["id"].startswith("pay_")
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert (payment["amount"], payment["currency"]) == (1999, "USD")
    assert payment["metadata"] == {"order": "42"}
    assert payment["description"] == "a [b]"
    uuid.UUID(payment["idempotency_key"])  # a fresh uuid by default


def test_pay_declined_card_is_failed(cli: Cli) -> None:
    args = ("--amount", "500", "--currency", "EUR", "--payment-method", "pm_card_chargeDeclined")
    payment = _ok_json(cli("pay", *args, "--json"))
    assert payment["status"] == "PAYMENT_STATUS_FAILED"
    assert payment["failure_code"]


def test_pay_table_shows_the_payment(cli: Cli) -> None:
    result = cli("pay", *VISA, "--description", "tea [large]")
    assert result.returncode == 0, result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "tea [large]" in result.stdout  # the caller's text, not rich markup


def test_duplicate_key_names_the_existing_payment(cli: Cli) -> None:
    key = f"cli-{uuid.uuid4()}"
    first = _ok_json(cli("pay", *VISA, "--idempotency-key", key, "--json"))

    stderr = _failed(cli("pay", *VISA, "--idempotency-key", key))
    assert "ALREADY_EXISTS" in stderr
    assert "DUPLICATE_PAYMENT" in stderr
    assert first["id"] in stderr

    error = json.loads(_failed(cli("pay", *VISA, "--idempotency-key", key, "--json")))["error"]
    assert error["code"] == "ALREADY_EXISTS"
    assert error["metadata"]["payment_id"] == first["id"]
    assert error["metadata"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert error["retryable"] is False


def test_reused_key_with_other_parameters(cli: Cli) -> None:
    key = f"cli-{uuid.uuid4()}"
    first = _ok_json(cli("pay", *VISA, "--idempotency-key", key, "--json"))
    stderr = _failed(cli("pay", *VISA[:-1], "pm_card_chargeDeclined", "--idempotency-key", key))
    assert "IDEMPOTENCY_KEY_REUSED" in stderr
    assert first["id"] in stderr


def test_invalid_input_prints_field_violations(cli: Cli) -> None:
    stderr = _failed(cli("pay", "--amount", "0", "--currency", "usd", "--payment-method", "pm_x"))
    assert "INVALID_ARGUMENT" in stderr
    assert "amount:" in stderr
    assert "currency:" in stderr

    args = ("--amount", "0", "--currency", "USD", "--payment-method", "pm_card_visa", "--json")
    error = json.loads(_failed(cli("pay", *args)))["error"]
    assert [v["field"] for v in error["field_violations"]] == ["amount"]


def test_card_number_is_refused_and_not_echoed(cli: Cli) -> None:
    card = "4242424242424242"
    stderr = _failed(cli("pay", "--amount", "100", "--currency", "USD", "--payment-method", card))
    assert "payment_method:" in stderr
    assert card not in stderr


def test_get_and_events(cli: Cli) -> None:
    created = _ok_json(cli("pay", *VISA, "--json"))
    assert _ok_json(cli("get", created["id"], "--json")) == created

    table = cli("get", created["id"])
    assert table.returncode == 0, table.stderr
    assert created["id"] in table.stdout

    events = _ok_json(cli("events", created["id"], "--json"))["events"]
    applied = [e for e in events if e.get("applied")]
    assert [e["to_status"] for e in applied] == [
        "PAYMENT_STATUS_PENDING",
        "PAYMENT_STATUS_SUCCEEDED",
    ]
    assert events[0]["source"] == "PAYMENT_EVENT_SOURCE_API"
    assert cli("events", created["id"]).returncode == 0


def test_another_merchants_payment_is_not_found(cli: Cli) -> None:
    created = _ok_json(cli("pay", *VISA, "--json"))
    stderr = _failed(cli("get", created["id"], "--token", DEV_TOKENS["merchant-2"]))
    assert "NOT_FOUND" in stderr


def test_list_filters_by_status_and_time(cli: Cli) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    ok = _ok_json(cli("pay", *VISA, "--json"))
    declined = _ok_json(
        cli("pay", *VISA[:-1], "pm_card_chargeDeclined", "--json"),
    )
    page = _ok_json(
        cli(
            "list",
            "--status",
            "SUCCEEDED",
            "--created-after",
            since,
            "--page-size",
            "100",
            "--json",
        )
    )
    ids = [p["id"] for p in page["payments"]]
    assert ok["id"] in ids
    assert declined["id"] not in ids
    assert {p["status"] for p in page["payments"]} == {"PAYMENT_STATUS_SUCCEEDED"}

    both = _ok_json(
        cli(
            "list",
            "--status",
            "succeeded",
            "--status",
            "FAILED",
            "--created-after",
            since,
            "--json",
        )
    )
    assert {ok["id"], declined["id"]} <= {p["id"] for p in both["payments"]}

    table = cli("list", "--created-after", since)
    assert table.returncode == 0, table.stderr
    assert ok["id"] in table.stdout


def test_list_pages_with_tokens(cli: Cli) -> None:
    since = datetime.now(UTC).isoformat()
    created = {_ok_json(cli("pay", *VISA, "--json"))["id"] for _ in range(3)}
    seen: list[str] = []
    token = ""
    while True:
        args = ["list", "--created-after", since, "--page-size", "2", "--json"]
        page = _ok_json(cli(*args, *(["--page-token", token] if token else [])))
        seen += [p["id"] for p in page["payments"]]
        token = page["next_page_token"]
        if not token:
            break
    assert set(seen) == created
    assert len(seen) == len(created)


def test_usage_errors_exit_2(cli: Cli) -> None:
    _failed(cli("pay", "--currency", "USD", "--payment-method", "pm_card_visa"), code=2)
    _failed(cli("list", "--status", "BOGUS"), code=2)
    _failed(cli("list", "--created-after", "yesterday"), code=2)
    _failed(cli("pay", *VISA, "--metadata", "no-equals-sign"), code=2)


def test_unreachable_service_is_a_retryable_error() -> None:
    result = run_cli("get", "pay_x", "--json", env={"PAYMENTS_TARGET": "127.0.0.1:1"})
    error = json.loads(_failed(result))["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["retryable"] is True


def test_default_token_is_the_development_merchant() -> None:
    assert DEV_TOKENS["merchant"] == cli_module.DEFAULT_TOKEN
