"""What one job run did: the tally while it runs, the report once it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

JOBS: Final = ("sweep", "catch_up", "settlement_diff")


def parse_jobs(text: str) -> tuple[str, ...]:
    """Comma separated names, run in the order given; ValueError names the unknown ones."""
    chosen = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in JOBS]
    if unknown or not chosen:
        raise ValueError(
            f"unknown job {', '.join(unknown) or '(none)'}; choose from {', '.join(JOBS)}"
        )
    return chosen


class JobFailed(Exception):
    """The run could not complete (provider or payment-svc unreachable, ...);
    what it did so far stands, the next run carries on."""


@dataclass
class Tally:
    scanned: int = 0
    fixed: int = 0
    discrepancies: int = 0
    errors: int = 0


@dataclass(frozen=True)
class RunReport:
    job: str
    reconciler_id: str
    started_at: datetime
    finished_at: datetime
    scanned: int
    fixed: int
    discrepancies: int
    errors: int
    succeeded: bool
    error_message: str = ""
    run_id: str = ""  # payment-svc's id of the recorded run, "" if it was not recorded

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "run_id": self.run_id,
            "reconciler_id": self.reconciler_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "scanned": self.scanned,
            "fixed": self.fixed,
            "discrepancies": self.discrepancies,
            "errors": self.errors,
            "succeeded": self.succeeded,
            "error_message": self.error_message,
        }
