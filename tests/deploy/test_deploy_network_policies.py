"""Who may reach what, worked out from the rendered NetworkPolicies the way a
cluster enforces them: a pod selected by some policy accepts only what one of
those policies allows. Only the gateway is reachable from outside the
namespace (Prometheus excepted, on metrics ports); Postgres only from
payment-svc and the migration Job (and, in prod, its own instances)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from deploy_testkit import OVERLAYS, of_kind, pod_templates, rendered

NAMESPACES = {"dev": "payments-dev", "prod": "payments"}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # name -> number


def pods(overlay: str) -> list[Pod]:
    objects = rendered(overlay)
    found = [
        Pod(
            name,
            NAMESPACES[overlay],
            template["metadata"]["labels"],
            {
                p.get("name", str(p["containerPort"])): p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            },
        )
        for name, template in pod_templates(objects)
    ]
    for cluster in of_kind(objects, "Cluster"):
        # The instance pods CloudNativePG makes, with its labels and ports.
        found.append(
            Pod(
                f"Cluster/{cluster}",
                NAMESPACES[overlay],
                {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"},
                {"postgresql": 5432, "metrics": 9187, "status": 8000},
            )
        )
    return found


def outsiders() -> list[Pod]:
    return [
        Pod("elsewhere", "elsewhere", {"app": "anything"}),
        Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        Pod("cnpg-operator", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
    ]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_allows(peer: dict[str, Any], source: Pod, namespace: str) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled here"
    namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != namespace:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], source.labels)


def allowed_ports(policies: list[dict[str, Any]], source: Pod, target: Pod) -> set[int]:
    """The target's ports the source may connect to (all ports: every one it has)."""
    selecting = [
        p for p in policies if p["metadata"]["namespace"] == target.namespace
        and matches(p["spec"]["podSelector"], target.labels)
        and "Ingress" in p["spec"]["policyTypes"]
    ]  # fmt: skip
    if not selecting:
        return set(target.ports.values())
    ports: set[int] = set()
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers and not any(peer_allows(p, source, target.namespace) for p in peers):
                continue
            if not rule.get("ports"):
                ports.update(target.ports.values())
            for port in rule.get("ports", []):
                number = port["port"]
                ports.add(number if isinstance(number, int) else target.ports[number])
    return ports & set(target.ports.values())


def reachability(overlay: str) -> dict[tuple[str, str], set[int]]:
    policies = list(of_kind(rendered(overlay), "NetworkPolicy").values())
    inside = pods(overlay)
    return {
        (source.name, target.name): allowed_ports(policies, source, target)
        for source in [*inside, *outsiders()]
        for target in inside
        # A Cluster stands for all of its instances, which talk to each other.
        if source is not target or source.name.startswith("Cluster/")
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_only_the_gateway_is_reachable_from_other_namespaces(overlay: str) -> None:
    reach = reachability(overlay)
    reachable = {
        target for (source, target), ports in reach.items() if source == "elsewhere" and ports
    }
    assert reachable == {"Deployment/webhook-gateway"}
    # Prometheus reaches the metrics ports only.
    for target in pods(overlay):
        metrics = {target.ports[n] for n in ("metrics", "http") if n in target.ports}
        assert reach[("prometheus", target.name)] <= metrics, target.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_postgres_is_reachable_only_from_payment_svc_and_migrations(overlay: str) -> None:
    reach = reachability(overlay)
    (database,) = [
        p for p in pods(overlay)
        if p.labels.get("app.kubernetes.io/name") == "payments-db" or "cnpg.io/cluster" in p.labels
    ]  # fmt: skip
    sources = {
        source for (source, target), ports in reach.items()
        if target == database.name and 5432 in ports
    }  # fmt: skip
    expected = {"Deployment/payment-svc", "Job/payments-migrate"}
    if overlay == "prod":
        expected.add(database.name)  # replication between the instances
    assert sources == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_every_pod_has_an_ingress_policy(overlay: str) -> None:
    policies = list(of_kind(rendered(overlay), "NetworkPolicy").values())
    for pod in pods(overlay):
        if not pod.ports:
            continue  # the migration Job: nothing connects to it
        named = [
            p["metadata"]["name"] for p in policies
            if p["spec"]["podSelector"] and matches(p["spec"]["podSelector"], pod.labels)
        ]  # fmt: skip
        assert named, f"{pod.name} is covered only by the default deny"
    assert "default-deny-ingress" in {p["metadata"]["name"] for p in policies}
