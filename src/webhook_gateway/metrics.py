"""Prometheus metrics of webhook-gateway, one registry per application.

    webhook_gateway_requests_total{route,status}           every HTTP answer
    webhook_gateway_verification_failures_total{reason}    4xx: signature, body
    webhook_gateway_forward_seconds{outcome}               ApplyProviderEvent latency;
                                                           outcome: ok or the gRPC code
    webhook_gateway_events_total{type,outcome}             verified events; type: known or
                                                           unknown, outcome: applied, recorded,
                                                           duplicate, quarantined, rejected,
                                                           failed
    webhook_gateway_signature_matches_total{secret}        newest or older: rotation progress

A registry per application (process metrics included) keeps the numbers of two
gateways in one test process apart.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from webhook_gateway.errors import Reason, RequestRejected
from webhook_gateway.events import EventType

CONTENT_TYPE = CONTENT_TYPE_LATEST
REJECTION_REASONS = (
    Reason.BODY_TOO_LARGE,
    Reason.MISSING_HEADER,
    Reason.MALFORMED_HEADER,
    Reason.NO_MATCHING_SIGNATURE,
    Reason.TIMESTAMP_OUTSIDE_TOLERANCE,
    Reason.INVALID_JSON,
    Reason.INVALID_EVENT,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "webhook_gateway_requests_total",
            "HTTP requests answered, by route and status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.verification_failures = Counter(
            "webhook_gateway_verification_failures_total",
            "Webhooks refused before forwarding (signature, size, body), by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "webhook_gateway_forward_seconds",
            "Latency of ApplyProviderEvent calls to payment-svc, by outcome (ok or gRPC code).",
            ("outcome",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.events = Counter(
            "webhook_gateway_events_total",
            "Verified events, by type (unknown for types we do not know) and outcome.",
            ("type", "outcome"),
            registry=self.registry,
        )
        self.signature_matches = Counter(
            "webhook_gateway_signature_matches_total",
            "Verified signatures by the secret that matched: newest, or older (rotation).",
            ("secret",),
            registry=self.registry,
        )
        # Present at 0 from the start, so that rate() and alerts see every series.
        for reason in REJECTION_REASONS:
            self.verification_failures.labels(reason.value)
        self._newest = self.signature_matches.labels("newest")
        self._older = self.signature_matches.labels("older")
        self._requests: dict[tuple[str, int], Counter] = {}
        self._events: dict[tuple[EventType, str], Counter] = {}

    def request(self, route: str, status: int) -> None:
        # Children cached by label values (both sets are small and fixed): labels()
        # takes a lock and validates on every call.
        key = (route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, str(status))
        child.inc()

    def rejected(self, error: RequestRejected) -> None:
        self.verification_failures.labels(error.reason.value).inc()

    def verified(self, secret_index: int) -> None:
        (self._newest if secret_index == 0 else self._older).inc()

    def event(self, kind: EventType, outcome: str) -> None:
        key = (kind, outcome)
        child = self._events.get(key)
        if child is None:
            child = self._events[key] = self.events.labels(kind.value, outcome)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
