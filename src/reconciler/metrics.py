"""Prometheus metrics of the reconciler (names fixed: deploy/ alerts and dashboards use them).

    reconciler_discrepancies_total{kind}               findings reported by this process (a
                                                       finding seen again counts again)
    reconciler_open_discrepancies{kind}                unresolved, from payment-svc after each run
    reconciler_oldest_non_final_payment_age_seconds    age of the oldest PENDING/UNKNOWN payment
    reconciler_non_final_payments                      PENDING + UNKNOWN payments
    reconciler_oldest_non_final_refund_age_seconds     age of the oldest PENDING/UNKNOWN refund
    reconciler_non_final_refunds                       PENDING + UNKNOWN refunds
    reconciler_last_success_timestamp_seconds{job}     end of the job's last successful run
                                                       (absent until the first one)
    reconciler_runs_total{job,result}                  result: ok | failed
    reconciler_fixes_total{job}                        payments moved by the job
    reconciler_errors_total{job}                       items the job could not check
    reconciler_job_duration_seconds{job}               histogram

    kind: STUCK_PAYMENT, UNRECORDED_PROVIDER_PAYMENT, MISSING_AT_PROVIDER,
          AMOUNT_MISMATCH, FINAL_STATE_CONTRADICTED, UNMATCHED_PROVIDER_EVENT
          (payment-svc itself reports unmatched events: that kind shows in the
          open gauge; its counter stays 0 here)
    job:  sweep, catch_up, settlement_diff

A registry per Metrics object, so that several reconcilers in one test process
(or the CLI's pass) keep their numbers apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from payments.v1 import provider_sync_service_pb2 as sync
from reconciler.convert import KINDS, kind_name
from reconciler.runs import JOBS, RunReport

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.discrepancies = Counter(
            "reconciler_discrepancies_total",
            "Discrepancies found by this reconciler, by kind (a repeated finding counts again).",
            ("kind",),
            registry=r,
        )
        self.open_discrepancies = Gauge(
            "reconciler_open_discrepancies",
            "Unresolved discrepancies recorded by payment-svc, by kind.",
            ("kind",),
            registry=r,
        )
        self.oldest_non_final_age = Gauge(
            "reconciler_oldest_non_final_payment_age_seconds",
            "Age of the oldest PENDING or UNKNOWN payment (0 when there is none).",
            registry=r,
        )
        self.non_final = Gauge(
            "reconciler_non_final_payments", "PENDING and UNKNOWN payments.", registry=r
        )
        self.oldest_non_final_refund_age = Gauge(
            "reconciler_oldest_non_final_refund_age_seconds",
            "Age of the oldest PENDING or UNKNOWN refund (0 when there is none).",
            registry=r,
        )
        self.non_final_refunds = Gauge(
            "reconciler_non_final_refunds", "PENDING and UNKNOWN refunds.", registry=r
        )
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time at which the job's last successful run ended.",
            ("reconciler_job",),
            registry=r,
        )
        self.runs = Counter(
            "reconciler_runs_total",
            "Job runs, by job and result (ok, failed).",
            ("reconciler_job", "result"),
            registry=r,
        )
        self.fixes = Counter(
            "reconciler_fixes_total",
            "Payments the job moved to the provider's truth.",
            ("reconciler_job",),
            registry=r,
        )
        self.errors = Counter(
            "reconciler_errors_total",
            "Items the job could not check (provider or payment-svc errors).",
            ("reconciler_job",),
            registry=r,
        )
        self.duration = Histogram(
            "reconciler_job_duration_seconds",
            "Duration of job runs.",
            ("reconciler_job",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        # Present at 0 from the start, so that rate() and alerts see every series.
        for kind in KINDS:
            self.discrepancies.labels(kind)
            self.open_discrepancies.labels(kind)
        for job in JOBS:
            self.fixes.labels(job)
            self.errors.labels(job)
            for result in ("ok", "failed"):
                self.runs.labels(job, result)

    def finding(self, kind: sync.DiscrepancyKind.ValueType) -> None:
        self.discrepancies.labels(kind_name(kind)).inc()

    def run_finished(self, report: RunReport) -> None:
        job = report.job
        self.runs.labels(job, "ok" if report.succeeded else "failed").inc()
        self.fixes.labels(job).inc(report.fixed)
        self.errors.labels(job).inc(report.errors)
        elapsed = (report.finished_at - report.started_at).total_seconds()
        self.duration.labels(job).observe(max(elapsed, 0.0))
        if report.succeeded:
            self.last_success.labels(job).set(report.finished_at.timestamp())

    def status(self, reply: sync.GetReconciliationStatusResponse, now: datetime) -> None:
        open_by_kind = dict.fromkeys(KINDS, 0)
        for count in reply.open_discrepancies:
            if count.kind != sync.DISCREPANCY_KIND_UNSPECIFIED:
                open_by_kind[kind_name(count.kind)] = count.open
        for kind, value in open_by_kind.items():
            self.open_discrepancies.labels(kind).set(value)
        self.non_final.set(reply.non_final_payments)
        if reply.HasField("oldest_non_final_created_at"):
            oldest = reply.oldest_non_final_created_at.ToDatetime(tzinfo=UTC)
            self.oldest_non_final_age.set(max((now - oldest).total_seconds(), 0.0))
        else:
            self.oldest_non_final_age.set(0)
        self.non_final_refunds.set(reply.non_final_refunds)
        if reply.HasField("oldest_non_final_refund_created_at"):
            oldest = reply.oldest_non_final_refund_created_at.ToDatetime(tzinfo=UTC)
            self.oldest_non_final_refund_age.set(max((now - oldest).total_seconds(), 0.0))
        else:
            self.oldest_non_final_refund_age.set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
