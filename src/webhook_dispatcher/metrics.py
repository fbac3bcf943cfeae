"""Prometheus metrics of webhook-dispatcher (names fixed: deploy/ alerts and
dashboards use them).

    webhook_attempts_total{outcome,status_class}   outcome: delivered | retry |
                                                   given_up | gone; status_class:
                                                   2xx..5xx, none (no answer)
    webhook_attempt_duration_seconds               histogram, every attempt
    webhook_oldest_undelivered_age_seconds{endpoint}  age of the endpoint's oldest
                                                   update not delivered yet (0: none)
    webhook_endpoints_served                       endpoints this replica holds
    webhook_endpoints_disabled_total{reason}       DISABLED_GONE | DISABLED_FAILING,
                                                   disabled by this replica's attempts

A registry per Metrics object, so that several dispatchers in one test
process keep their numbers apart.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "webhook_attempts",
            "Webhook attempts by outcome and HTTP status class",
            ["outcome", "status_class"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "webhook_attempt_duration_seconds",
            "Duration of one webhook attempt",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
            registry=self.registry,
        )
        self.oldest_undelivered = Gauge(
            "webhook_oldest_undelivered_age_seconds",
            "Age of the endpoint's oldest update not delivered yet",
            ["endpoint"],
            registry=self.registry,
        )
        self.endpoints_served = Gauge(
            "webhook_endpoints_served", "Endpoints this replica holds", registry=self.registry
        )
        self.endpoints_disabled = Counter(
            "webhook_endpoints_disabled",
            "Endpoints disabled by this replica's attempts",
            ["reason"],
            registry=self.registry,
        )

        # Every series exists from the start (at 0), so that rates and
        # alerts see the first increase.
        for outcome in ("delivered", "retry", "given_up", "gone"):
            for status_class in ("2xx", "3xx", "4xx", "5xx", "none"):
                self.attempts.labels(outcome, status_class)
        for reason in ("DISABLED_GONE", "DISABLED_FAILING"):
            self.endpoints_disabled.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
