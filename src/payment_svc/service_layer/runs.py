"""Reconciliation runs, the reconciler's checkpoints, and the figures
behind the gauges (open discrepancies, the non-final backlog, last runs)."""

from __future__ import annotations

from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.records import Run, Status
from payment_svc.service_layer.ports import CheckpointRepository, RunRepository

# A run's counters (payments scanned, fixed...): a bound no run comes near.
MAX_RUN_COUNT = 1_000_000_000
MAX_JOB_CHARS = 64


class RunService:
    def __init__(self, runs: RunRepository, checkpoints: CheckpointRepository) -> None:
        self._store = runs
        self._checkpoints = checkpoints

    async def record_run(self, run: Run) -> Run:
        if not 1 <= len(run.job) <= MAX_JOB_CHARS:
            raise InvalidArgument(
                [FieldViolation("run.job", f"must name the job in 1..{MAX_JOB_CHARS} characters")]
            )
        counters = {
            "scanned": run.scanned,
            "fixed": run.fixed,
            "discrepancies": run.discrepancies,
            "errors": run.errors,
        }
        bad = [
            FieldViolation(f"run.{name}", f"must be 0..{MAX_RUN_COUNT}")
            for name, value in counters.items()
            if not 0 <= value <= MAX_RUN_COUNT
        ]
        if bad:
            raise InvalidArgument(bad)
        if run.finished_at < run.started_at:
            raise InvalidArgument(
                [FieldViolation("run.finished_at", "must not precede started_at")]
            )
        return await self._store.record_run(run)

    async def checkpoint(self, name: str) -> tuple[str, object] | None:
        if not name:
            raise InvalidArgument([FieldViolation("name", "must not be empty")])
        return await self._checkpoints.checkpoint(name)

    async def save_checkpoint(self, name: str, value: str) -> None:
        if not name:
            raise InvalidArgument([FieldViolation("name", "must not be empty")])
        await self._checkpoints.save_checkpoint(name, value)

    async def status(self) -> Status:
        return await self._store.status()
