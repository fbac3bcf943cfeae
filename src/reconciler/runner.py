"""Runs a job once and accounts for it: the same path for scheduled runs,
`reconciler --once` and `payments reconcile`.

    run(job) -> job(ctx, tally)       JobFailed (or anything unexpected): failed run
             -> RecordReconciliationRun  (not recorded: the run counts as failed)
             -> metrics: runs, fixes, errors, duration, last success
             -> GetReconciliationStatus  -> the open-discrepancy and backlog gauges
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Final

import structlog

from payments.errors import PaymentsClientError
from payments.v1 import provider_sync_service_pb2 as sync
from reconciler import convert
from reconciler.catch_up import catch_up
from reconciler.context import JobContext, open_context
from reconciler.metrics import Metrics
from reconciler.retry import retrying
from reconciler.runs import JOBS, JobFailed, RunReport, Tally
from reconciler.settings import Settings
from reconciler.settlement import settlement_diff
from reconciler.sweep import sweep

log = structlog.get_logger("reconciler")

Job = Callable[[JobContext, Tally], Awaitable[None]]
JOB_FUNCTIONS: Final[Mapping[str, Job]] = {
    "sweep": sweep,
    "catch_up": catch_up,
    "settlement_diff": settlement_diff,
}
assert tuple(JOB_FUNCTIONS) == JOBS


class Runner:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    async def run(self, job: str) -> RunReport:
        ctx = self.ctx
        tally = Tally()
        started = ctx.now()
        error = ""
        log.info("reconciliation_run_started", job=job)
        try:
            await JOB_FUNCTIONS[job](ctx, tally)
        except JobFailed as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "interrupted (shutting down)"
            raise
        except Exception as exc:
            log.exception("reconciliation_job_crashed", job=job)
            error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            report = RunReport(
                job=job,
                reconciler_id=ctx.settings.reconciler_id,
                started_at=started,
                finished_at=ctx.now(),
                scanned=tally.scanned,
                fixed=tally.fixed,
                discrepancies=tally.discrepancies,
                errors=tally.errors,
                succeeded=not error,
                error_message=error,
            )
            # Shielded: a run interrupted by shutdown is still recorded.
            report = await asyncio.shield(self._account(report))
        return report

    async def _account(self, report: RunReport) -> RunReport:
        try:
            recorded = await retrying(lambda: self.ctx.client.record_run(_run_message(report)))
            report = replace(report, run_id=recorded.id)
        except PaymentsClientError as exc:
            report = replace(
                report,
                succeeded=False,
                error_message=report.error_message or f"the run was not recorded: {exc}",
            )
        self.ctx.metrics.run_finished(report)
        fields = report.to_json()
        if report.succeeded:
            log.info("reconciliation_run_finished", **fields)
        else:
            log.error("reconciliation_run_failed", **fields)
        try:
            status = await self.ctx.client.reconciliation_status()
        except PaymentsClientError as exc:
            log.warning("reconciliation_status_unavailable", error=str(exc))
        else:
            self.ctx.metrics.status(status, self.ctx.now())
        return report


async def run_pass(
    settings: Settings, jobs: Sequence[str] = JOBS, metrics: Metrics | None = None
) -> list[RunReport]:
    """Each job once, in the order given (by default sweep, catch-up, settlement
    diff): `reconciler --once` and `payments reconcile`."""
    async with open_context(settings, metrics) as ctx:
        runner = Runner(ctx)
        return [await runner.run(job) for job in jobs]


def _run_message(report: RunReport) -> sync.ReconciliationRun:
    return sync.ReconciliationRun(
        job=report.job,
        reconciler_id=report.reconciler_id,
        started_at=convert.timestamp(report.started_at),
        finished_at=convert.timestamp(report.finished_at),
        scanned=report.scanned,
        fixed=report.fixed,
        discrepancies=report.discrepancies,
        errors=report.errors,
        succeeded=report.succeeded,
        # payment-svc refuses strings past 10,000 characters (and NUL).
        error_message=report.error_message.replace("\x00", "")[:2000],
    )
