"""The rendered overlays (kubectl kustomize) say what issue 5 and SPEC §8 ask:
the processes, their probes and drains, locked-down pods, no committed
production secret, and references that resolve."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_testkit import (
    DASHBOARD,
    OVERLAYS,
    env_of,
    of_kind,
    one,
    pod_templates,
    rendered,
)

NAMESPACES = {"dev": "payments-dev", "prod": "payments"}
APP_IMAGE = {"dev": "payments-platform:dev", "prod": "/payments-platform:"}
# The Secrets production needs, with their keys (docs/deployment.md).
PROD_SECRETS = {
    "payments-tokens": {
        "merchant-tokens",
        "gateway-token",
        "reconciler-token",
        "dispatcher-token",
        "page-token-key",
    },
    "payments-provider": {"stripe-api-key", "webhook-secrets"},
    "payments-db-app": {"uri"},  # made by CloudNativePG
}


def container(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    containers = one(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config(objects: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps and literal values."""
    maps = of_kind(objects, "ConfigMap")
    values: dict[str, str] = {}
    for source in c.get("envFrom", []):
        values.update(maps[source["configMapRef"]["name"]]["data"])
    values.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return values


def pre_stop_seconds(c: dict[str, Any]) -> int:
    return int(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_overlay_renders_into_its_namespace(overlay: str) -> None:
    objects = rendered(overlay)
    assert one(objects, "Namespace", NAMESPACES[overlay])
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACES[overlay], o["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_payment_svc_probes_grpc_health_and_outlasts_its_drain(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = one(objects, "Deployment", "payment-svc")
    c = container(objects, "Deployment", "payment-svc")
    env = config(objects, c)
    assert deployment["spec"]["replicas"] == 3
    assert c["args"] == ["payment-svc"]
    assert c["readinessProbe"]["grpc"] == {"port": 50051, "service": "payments.v1.PaymentService"}
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    assert c["livenessProbe"]["grpc"].get("service", "") == ""
    assert env["PAYMENT_SVC_LISTEN"] == "0.0.0.0:50051"
    assert env["PAYMENT_SVC_METRICS_LISTEN"] == "0.0.0.0:9101"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop_seconds(c) + float(env["PAYMENT_SVC_DRAIN_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_gateway_has_http_probes_and_outlasts_its_drain(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = one(objects, "Deployment", "webhook-gateway")
    c = container(objects, "Deployment", "webhook-gateway")
    env = config(objects, c)
    assert deployment["spec"]["replicas"] == 2
    assert c["args"] == ["webhook-gateway"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env["WEBHOOK_GATEWAY_LISTEN"] == "0.0.0.0:8080"
    assert env["PAYMENT_SVC_TARGET"] == "payment-svc:50051"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop_seconds(c) + float(env["WEBHOOK_GATEWAY_DRAIN_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_reconciler_runs_replicated_with_its_own_identity(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = one(objects, "Deployment", "reconciler")
    c = container(objects, "Deployment", "reconciler")
    env = config(objects, c)
    # Safe with several replicas: payment-svc leases each payment to one.
    assert deployment["spec"]["replicas"] >= 2
    assert c["args"] == ["reconciler"]
    assert env_of(c)["RECONCILER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RECONCILER_METRICS_LISTEN"] == "0.0.0.0:9102"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["RECONCILER_DRAIN_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_webhook_dispatcher_runs_replicated_with_its_own_identity(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = one(objects, "Deployment", "webhook-dispatcher")
    c = container(objects, "Deployment", "webhook-dispatcher")
    env = config(objects, c)
    # Safe with several replicas: payment-svc leases each endpoint to one.
    assert deployment["spec"]["replicas"] >= 2
    assert c["args"] == ["webhook-dispatcher"]
    ident = env_of(c)["WEBHOOK_DISPATCHER_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert ident == "metadata.name"
    token = env_of(c)["WEBHOOK_DISPATCHER_TOKEN"]["valueFrom"]["secretKeyRef"]
    # dev: a generated Secret, its name with a content hash
    assert token["name"].startswith("payments-tokens") and token["key"] == "dispatcher-token"
    svc_env = env_of(container(objects, "Deployment", "payment-svc"))
    assert svc_env["PAYMENT_SVC_DISPATCHER_TOKEN"]["valueFrom"]["secretKeyRef"] == token
    assert env["WEBHOOK_DISPATCHER_METRICS_LISTEN"] == "0.0.0.0:9104"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The drain, then the leases' release: within the grace.
    assert grace > float(env["WEBHOOK_DRAIN_SECONDS"]) + 5
    # The lease outlasts an attempt: a live replica's attempt ends before
    # another may take its endpoint.
    assert float(env["WEBHOOK_LEASE_SECONDS"]) > float(env["WEBHOOK_ATTEMPT_TIMEOUT_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_migrations_run_as_a_job(overlay: str) -> None:
    job = one(rendered(overlay), "Job", "payments-migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["args"] == ["payment-svc", "migrate"]


def test_deploy_provider_sim_runs_only_in_dev() -> None:
    assert "provider-sim" in of_kind(rendered("dev"), "Deployment")
    assert "provider-sim" not in of_kind(rendered("prod"), "Deployment")
    dev = config(rendered("dev"), container(rendered("dev"), "Deployment", "payment-svc"))
    prod = config(rendered("prod"), container(rendered("prod"), "Deployment", "payment-svc"))
    assert dev["STRIPE_API_BASE"] == "http://provider-sim:12111"
    assert prod["STRIPE_API_BASE"] == "https://api.stripe.com"
    assert (dev["PAYMENTS_ENV"], prod["PAYMENTS_ENV"]) == ("development", "production")


def test_deploy_prod_postgres_is_a_three_instance_cnpg_cluster_with_a_pod_monitor() -> None:
    objects = rendered("prod")
    cluster = one(objects, "Cluster", "payments-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 3
    monitor = one(objects, "PodMonitor", "payments-db")
    assert monitor["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "payments-db"}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "StatefulSet" not in {o["kind"] for o in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_every_pod_is_locked_down_and_bounded(overlay: str) -> None:
    for name, template in pod_templates(rendered(overlay)):
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert isinstance(spec["securityContext"]["runAsUser"], int), name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) >= {"cpu", "memory"}, (name, bound)
            if c["name"] != "postgres":
                assert APP_IMAGE[overlay] in c["image"], (name, c["image"])


def test_deploy_prod_commits_no_secret_and_references_only_the_documented_ones() -> None:
    objects = rendered("prod")
    assert "Secret" not in {o["kind"] for o in objects}
    used: dict[str, set[str]] = {}
    for _, template in pod_templates(objects):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.setdefault(ref["name"], set()).add(ref["key"])
            assert not any("secretRef" in s for s in c.get("envFrom", []))
    assert used == PROD_SECRETS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_references_resolve(overlay: str) -> None:
    """Every ConfigMap a pod reads is rendered; in dev every Secret key too."""
    objects = rendered(overlay)
    maps = of_kind(objects, "ConfigMap")
    secrets = of_kind(objects, "Secret")
    for name, template in pod_templates(objects):
        for c in template["spec"]["containers"]:
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in maps, name
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and overlay == "dev":
                    assert ref["key"] in secrets[ref["name"]]["data"], (name, ref)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_services_pdbs_hpas_and_monitors_find_their_pods(overlay: str) -> None:
    objects = rendered(overlay)
    pods = [t for _, t in pod_templates(objects)]

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        found = [t for t in pods if selector.items() <= t["metadata"]["labels"].items()]
        assert found, f"nothing matches {selector}"
        return found

    services = of_kind(objects, "Service")
    for name, service in services.items():
        for template in selected(service["spec"]["selector"]):
            ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    for pdb in of_kind(objects, "PodDisruptionBudget").values():
        selected(pdb["spec"]["selector"]["matchLabels"])
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"payment-svc", "webhook-gateway"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["minReplicas"] == deployments[name]["spec"]["replicas"]
    monitors = of_kind(objects, "ServiceMonitor")
    assert set(monitors) == {"payment-svc", "webhook-gateway", "reconciler", "webhook-dispatcher"}
    for name, monitor in monitors.items():
        matching = [
            s
            for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert [s["metadata"]["name"] for s in matching] == [name]
        ports = {p["name"] for p in matching[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_dashboard_ships_in_a_sidecar_config_map(overlay: str) -> None:
    maps = of_kind(rendered(overlay), "ConfigMap")
    dashboards = [m for m in maps.values() if m["metadata"]["labels"].get("grafana_dashboard")]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboards[0]["data"].values()
    assert json.loads(content) == json.loads(DASHBOARD.read_text())
