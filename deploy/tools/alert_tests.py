"""Checks that every alert of a PrometheusRule has a runbook and is unit-tested
in a `promtool test rules` file (scripts/check-deploy runs it):

    alert_tests.py deploy/base/monitoring/alerts.yaml deploy/base/monitoring/alerts.test.yaml

Each alert needs a `runbook_url` annotation and, in the test file (by
alertname):
  - a firing case: an alert_rule_test expecting it;
  - a pending case when the rule has a `for`: a promql_expr_test of
    ALERTS{alertname="NAME", alertstate="pending"} expecting samples
    (alert_rule_test lists firing alerts only);
  - a resolved case: an alert_rule_test expecting nothing, later than a
    firing one in the same test.
Tests that name an alert the rules do not have fail too. Exit 1 with one line
per problem; promtool then checks that the cases hold.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str | int | float) -> float:
    """A Prometheus duration (`5m`, `1h30m`, `90s`; a bare number is seconds)."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def alert_rules(manifest: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(manifest):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def _pending_names(test: dict[str, Any]) -> set[str]:
    names = set()
    for case in test.get("promql_expr_test") or []:
        expr = case.get("expr", "")
        if re.search(r'alertstate\s*=\s*"pending"', expr) and case.get("exp_samples"):
            names.update(re.findall(r'alertname\s*=\s*"(\w+)"', expr))
    return names


def problems(rules: list[dict[str, Any]], tests: dict[str, Any]) -> list[str]:
    found: list[str] = []
    names = {rule["alert"] for rule in rules}
    firing: set[str] = set()
    pending: set[str] = set()
    resolved: set[str] = set()
    for test in tests.get("tests") or []:
        pending |= _pending_names(test)
        fired_at: dict[str, float] = {}
        cases = sorted(test.get("alert_rule_test") or [], key=lambda c: seconds(c["eval_time"]))
        for case in cases:
            name, at = case["alertname"], seconds(case["eval_time"])
            if name not in names:
                found.append(f"a test names {name}, which is not an alert of the rules")
            if case.get("exp_alerts"):
                firing.add(name)
                fired_at.setdefault(name, at)
            elif name in fired_at and at > fired_at[name]:
                resolved.add(name)
    for name in sorted(_pending_names({"promql_expr_test": _all_expr_tests(tests)}) - names):
        found.append(f"a pending test names {name}, which is not an alert of the rules")
    for rule in rules:
        name = rule["alert"]
        if not (rule.get("annotations") or {}).get("runbook_url"):
            found.append(f"{name}: no runbook_url annotation")
        if name not in firing:
            found.append(f"{name}: no firing case (an alert_rule_test expecting it)")
        if seconds(rule.get("for", 0)) > 0 and name not in pending:
            found.append(
                f"{name}: no pending case (a promql_expr_test of "
                f'ALERTS{{alertname="{name}", alertstate="pending"}} inside its `for`)'
            )
        if name not in resolved:
            found.append(f"{name}: no resolved case (nothing expected after it fired)")
    return found


def _all_expr_tests(tests: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for t in tests.get("tests") or [] for c in t.get("promql_expr_test") or []]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rules = alert_rules(Path(argv[0]).read_text())
    tests = yaml.safe_load(Path(argv[1]).read_text())
    if not rules:
        print(f"no alert in {argv[0]}", file=sys.stderr)
        return 1
    found = problems(rules, tests)
    for problem in found:
        print(f"alert tests: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"alert tests: {len(rules)} alerts, each with a runbook and its cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
