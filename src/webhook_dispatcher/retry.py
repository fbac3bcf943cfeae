"""What an attempt's answer means (SPEC §3d), without I/O.

2xx                        delivered
410                        gone: the endpoint is disabled
429 / 503 + Retry-After    retried after what the endpoint asked (at most
                           the schedule's longest delay)
anything else, no answer   retried after the schedule's next delay, with
                           jitter; after the last one, given up
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 86400.0


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVEN_UP = "given_up"
    GONE = "gone"


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status (0: none) or an error word."""

    status: int = 0
    error: str = ""
    retry_after: float | None = None


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "none"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def decide(
    answer: Answer,
    attempt: int,
    schedule: tuple[float, ...],
    jitter: float,
    rand: Callable[[float, float], float] = random.uniform,
) -> tuple[Outcome, float]:
    """The outcome of attempt number `attempt` (from 1), and the wait
    before the next one (RETRY only)."""
    if 200 <= answer.status <= 299:
        return Outcome.DELIVERED, 0.0
    if answer.status == 410:
        return Outcome.GONE, 0.0
    if attempt > len(schedule):
        return Outcome.GIVEN_UP, 0.0
    if answer.status in (429, 503) and answer.retry_after is not None:
        return Outcome.RETRY, min(answer.retry_after, MAX_RETRY_AFTER)
    delay = schedule[attempt - 1]
    return Outcome.RETRY, max(0.0, delay * (1 + rand(-jitter, jitter)))
