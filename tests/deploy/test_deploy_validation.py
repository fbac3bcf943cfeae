"""Every rendered object validates strictly (deploy/tools/validate_manifests.py:
kubernetes-validate for the built-in kinds, deploy/schemas/ for the custom
resources), and the validator does refuse what it should."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_testkit import OVERLAYS, rendered_text, validator


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_every_rendered_object_validates(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    code, output = validator(str(manifest))
    assert code == 0, output
    assert " 0 invalid" in output


@pytest.mark.parametrize(
    ("typo", "where"),
    [
        ("readinessProbe:", "readynessProbe:"),  # a built-in kind
        ("podMetricsEndpoints:", "podMetricEndpoints:"),  # PodMonitor
        ("enablePodAntiAffinity:", "enablePodAntiAfinity:"),  # CloudNativePG Cluster
        ("for: 5m", "for: five minutes"),  # PrometheusRule
    ],
)
def test_deploy_validator_refuses_unknown_fields(typo: str, where: str, tmp_path: Path) -> None:
    text = rendered_text("prod")
    assert typo in text
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(text.replace(typo, where, 1))
    code, output = validator(str(manifest))
    assert code == 1, output
    assert "1 invalid" in output


def test_deploy_validator_refuses_a_kind_it_has_no_schema_for(tmp_path: Path) -> None:
    manifest = tmp_path / "widget.yaml"
    manifest.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    code, output = validator(str(manifest))
    assert code == 1
    assert "no schema" in output
