"""Writes the rule groups of PrometheusRule objects as a plain Prometheus rules
file, the form promtool reads:

    prometheus_rules.py deploy/base/monitoring/alerts.yaml OUT.rules.yaml

The PrometheusRule stays the only source of the rules; promtool's unit tests
(deploy/base/monitoring/alerts.test.yaml) load the file written here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def rule_groups(manifest: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(manifest):
        if doc and doc.get("kind") == "PrometheusRule":
            groups.extend(doc["spec"]["groups"])
    return groups


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    groups = rule_groups(Path(argv[0]).read_text())
    if not groups:
        print(f"no PrometheusRule in {argv[0]}", file=sys.stderr)
        return 1
    Path(argv[1]).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
