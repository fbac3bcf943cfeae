"""The alert rules: valid for promtool (every lint fatal), unit-tested with
`promtool test rules` (firing, pending and resolved: deploy/tools/alert_tests.py
checks each alert has them), each with a runbook that exists, together
covering what issue 5 lists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from deploy_testkit import ALERT_TESTS, ALERTS, DEPLOY, RUNBOOKS, alert_rules, rendered, run, tool

# What must be alerted on (issue 5) -> the alert that does.
REQUIRED = {
    "open irreconcilable discrepancies": "PaymentsDiscrepanciesOpen",
    "a reconciler job's last success too old": "ReconcilerJobStale",
    "payments non-final past their deadline": "PaymentsNonFinalPastDeadline",
    "refunds non-final past their deadline (issue 13)": "RefundsNonFinalPastDeadline",
    "a spike of webhook verification failures": "WebhookVerificationFailuresSpike",
    "gRPC error ratio": "PaymentSvcGrpcErrorRatio",
    "webhook 5xx ratio": "WebhookGateway5xxRatio",
    "database unavailable": "PaymentsDatabaseUnavailable",
    "a webhook endpoint's oldest undelivered update over 15 minutes (issue 21)": (
        "WebhookDeliveryLagging"
    ),
    "webhook endpoints disabled by the platform (issue 21)": "WebhookEndpointDisabled",
}


def rules_file(directory: Path) -> Path:
    target = directory / "payments-alerts.rules.yaml"
    run(sys.executable, str(DEPLOY / "tools" / "prometheus_rules.py"), str(ALERTS), str(target))
    return target


def test_deploy_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rules = str(rules_file(tmp_path))
    output = run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", rules)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output
    shutil.copy(ALERT_TESTS, tmp_path)
    output = run(tool("promtool"), "test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in output


def test_deploy_every_alert_of_the_issue_exists() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert set(REQUIRED.values()) <= names


def test_deploy_every_alert_is_unit_tested() -> None:
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_deploy_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations/runbooks.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_deploy_stuck_payment_alert_uses_the_reconcilers_deadline() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "PaymentsNonFinalPastDeadline"]
    threshold = float(rule["expr"].rsplit(">", 1)[1])
    (reconciler_config,) = [
        o for o in rendered("prod")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("reconciler-")
    ]  # fmt: skip
    assert threshold == float(reconciler_config["data"]["RECONCILER_STUCK_AFTER_SECONDS"])


def alert_tests(rules: Path, tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "alert_tests.py"), str(rules), str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_every_alert_has_a_runbook_and_a_firing_pending_and_resolved_test() -> None:
    proc = alert_tests(ALERTS, ALERT_TESTS)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(alert_rules())} alerts" in proc.stdout


def test_deploy_alert_tests_check_refuses_what_is_missing(tmp_path: Path) -> None:
    manifest = yaml.safe_load(ALERTS.read_text())
    rules = [r for group in manifest["spec"]["groups"] for r in group["rules"]]
    (discrepancies,) = [r for r in rules if r["alert"] == "PaymentsDiscrepanciesOpen"]
    del discrepancies["annotations"]["runbook_url"]
    manifest["spec"]["groups"][0]["rules"].append(
        {"alert": "Untested", "expr": "vector(1)", "for": "5m", "labels": {"severity": "warning"}}
    )
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    for test in tests["tests"]:
        test["promql_expr_test"] = [
            c for c in test.get("promql_expr_test", []) if "ReconcilerJobStale" not in c["expr"]
        ]
        test["alert_rule_test"] = [
            c
            for c in test.get("alert_rule_test", [])
            if c["alertname"] != "PaymentsDatabaseUnavailable" or c["exp_alerts"]
        ]
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(tests))
    proc = alert_tests(tmp_path / "alerts.yaml", tmp_path / "alerts.test.yaml")
    assert proc.returncode == 1
    for problem in (
        "PaymentsDiscrepanciesOpen: no runbook_url annotation",
        "Untested: no runbook_url annotation",
        "Untested: no firing case",
        "Untested: no pending case",
        "Untested: no resolved case",
        "ReconcilerJobStale: no pending case",
        "PaymentsDatabaseUnavailable: no resolved case",
    ):
        assert problem in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 7, proc.stderr
