"""`payments endpoints|deliveries|redeliver` against the session's stack
(SPEC §3d), as the second merchant, in JSON and as tables."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from payments_dev.stack import DEV_TOKENS
from tests.cli.conftest import Cli

AS_2 = {"PAYMENTS_TOKEN": DEV_TOKENS["merchant-2"]}


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_endpoint_lifecycle(cli: Cli) -> None:
    created = _ok(
        cli(
            "endpoints", "add", "http://127.0.0.1:9/hooks", "--description", "cli", "--json", **AS_2
        )
    )
    endpoint_id = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "WEBHOOK_ENDPOINT_STATUS_ENABLED"

    listed = _ok(cli("endpoints", "--json", **AS_2))["endpoints"]
    mine = next(e for e in listed if e["id"] == endpoint_id)
    assert mine["secret"] == "" and mine["description"] == "cli"
    table = cli("endpoints", **AS_2)
    assert table.returncode == 0 and endpoint_id in table.stdout
    assert created["secret"] not in table.stdout

    disabled = _ok(cli("endpoints", "disable", endpoint_id, "--json", **AS_2))
    assert disabled["status"] == "WEBHOOK_ENDPOINT_STATUS_DISABLED"
    enabled = _ok(cli("endpoints", "enable", endpoint_id, "--json", **AS_2))
    assert enabled["status"] == "WEBHOOK_ENDPOINT_STATUS_ENABLED"

    rotated = _ok(cli("endpoints", "rotate", endpoint_id, "--json", **AS_2))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"]

    assert _ok(cli("deliveries", endpoint_id, "--json", **AS_2))["deliveries"] == []
    assert cli("deliveries", endpoint_id, **AS_2).returncode == 0
    assert _ok(cli("redeliver", endpoint_id, "--after", "", "--json", **AS_2))["after"] == ""
    bad = cli("redeliver", endpoint_id, "--after", "not-a-cursor", **AS_2)
    assert bad.returncode == 1 and "INVALID_CURSOR" in bad.stderr

    # Another client's endpoint is not found.
    theirs = cli("endpoints", "delete", endpoint_id)
    assert theirs.returncode == 1 and "NOT_FOUND" in theirs.stderr

    assert _ok(cli("endpoints", "delete", endpoint_id, "--json", **AS_2)) == {
        "deleted": endpoint_id
    }
    assert endpoint_id not in {
        e["id"] for e in _ok(cli("endpoints", "--json", **AS_2))["endpoints"]
    }


def test_a_refused_url_says_why(cli: Cli) -> None:
    refused = cli("endpoints", "add", "https://169.254.169.254/latest/meta-data", **AS_2)
    assert refused.returncode == 1
    assert "WEBHOOK_URL_NOT_ALLOWED" in refused.stderr
