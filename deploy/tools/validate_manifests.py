"""Validates rendered Kubernetes manifests offline, every object, strictly.

    built-in kinds     kubernetes-validate's strict schemas for one Kubernetes version
                       (an unknown field is an error, as with server-side validation)
    custom resources   the schemas in deploy/schemas/ (ServiceMonitor, PodMonitor,
                       PrometheusRule, CloudNativePG Cluster), strict too, with their
                       references into the same Kubernetes definitions
    anything else      an error: an object nothing validates does not pass

Usage: validate_manifests.py [--kubernetes-version 1.37.0] FILE... ('-' reads stdin).
Prints one line per object; exits 1 when any object fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
DEFAULT_VERSION = "1.37.0"


def gvk(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("apiVersion", "")), str(obj.get("kind", ""))


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


class Validator:
    def __init__(self, version: str) -> None:
        self.version = version
        # The strict definitions of the newest schema set not newer than `version`,
        # as kubernetes-validate itself picks it.
        wanted = kv.major_minor(version)
        chosen = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted][-1]
        definitions = kv.schema_contents(
            f"kubernetes-json-schema/v{chosen}-local-strict/_definitions.json", version
        )
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            definitions["$id"], referencing.Resource.from_contents(definitions)
        )
        self.custom: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(SCHEMAS.glob("*.json")):
            schema = json.loads(path.read_text())
            for kind in schema["x-kubernetes-group-version-kind"]:
                key = (f"{kind['group']}/{kind['version']}", kind["kind"])
                self.custom[key] = schema

    def errors(self, obj: dict[str, Any]) -> list[str]:
        schema = self.custom.get(gvk(obj))
        if schema is not None:
            validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
            return [
                f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
                for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            ]
        try:
            kubernetes_validate.validate(obj, self.version, strict=True)
        except kv.ValidationError as e:
            return [f"{'.'.join(str(p) for p in e.path) or '(top)'}: {e.message}"]
        except kv.SchemaNotFoundError as e:
            return [f"no schema: {e.message}"]
        return []


def objects(path: str) -> Iterator[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    for doc in yaml.safe_load_all(text):
        if doc:
            yield doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", "--kubernetes-version", default=DEFAULT_VERSION)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    validator = Validator(args.kubernetes_version)
    failed = checked = 0
    for path in args.files:
        for obj in objects(path):
            checked += 1
            problems = validator.errors(obj)
            status = "FAIL" if problems else "ok"
            print(f"{status:4} {path}: {name_of(obj)} ({obj.get('apiVersion')})")
            for problem in problems:
                print(f"       {problem}")
            failed += bool(problems)
    print(f"{checked - failed} valid, {failed} invalid (Kubernetes {args.kubernetes_version})")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
