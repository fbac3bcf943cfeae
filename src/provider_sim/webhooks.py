"""The webhook endpoint's configuration, its retry schedule, and what was delivered.

Pure: no I/O (the deliverer in `deliverer.py` does the sending). The configuration
starts from the settings (`PROVIDER_SIM_WEBHOOK_*`) and is changed at run time
through `POST /_sim/webhooks`; both paths validate here.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

DEFAULT_SECRET: Final = "whsec_dev"
MAX_MS: Final = 24 * 3600 * 1000
MAX_ATTEMPTS: Final = 1000
MAX_CONCURRENCY: Final = 1024
# The n-th retry waits between this fraction and all of initial * 2**(n-1) (capped
# at the maximum): jittered so that retries of many events spread out, and still
# growing, because the shortest n+1-th wait is longer than the longest n-th one.
JITTER_FLOOR: Final = 0.75
# Fields fixed when the process starts: the worker pool is sized once.
_START_UP_ONLY: Final = frozenset({"concurrency"})


class WebhookConfigError(ValueError):
    """A webhook setting that cannot be used; `field` names it (as in the JSON API).
    Sending the same setting again never helps."""

    def __init__(self, field: str, message: str, reason: str = "invalid_value") -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # None: events are recorded but not delivered.
    url: str | None = None
    secret: str = DEFAULT_SECRET
    retry_initial_ms: int = 1000
    retry_max_ms: int = 60_000
    max_attempts: int = 25
    timeout_ms: int = 10_000
    concurrency: int = 16

    def __post_init__(self) -> None:
        if self.url is not None:
            _check_url(self.url)
        if not self.secret.strip() or not self.secret.isprintable():
            raise WebhookConfigError("secret", "must be a non-empty printable string")
        _check_int("retry_initial_ms", self.retry_initial_ms, 1, MAX_MS)
        _check_int("retry_max_ms", self.retry_max_ms, 1, MAX_MS)
        if self.retry_max_ms < self.retry_initial_ms:
            raise WebhookConfigError(
                "retry_max_ms",
                f"must not be below the first retry wait ({self.retry_initial_ms} ms)",
            )
        _check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)
        _check_int("timeout_ms", self.timeout_ms, 1, MAX_MS)
        _check_int("concurrency", self.concurrency, 1, MAX_CONCURRENCY)

    def merged(self, update: object) -> WebhookConfig:
        """A copy with `update` (a JSON object, possibly partial) applied."""
        if not isinstance(update, Mapping):
            raise WebhookConfigError(
                "body", "must be a JSON object of webhook settings", "invalid_body"
            )
        known = {f.name for f in dataclasses.fields(self)}
        for name in update:
            if name not in known:
                raise WebhookConfigError(
                    str(name), f"is unknown; known: {', '.join(sorted(known))}", "unknown_setting"
                )
            if name in _START_UP_ONLY:
                raise WebhookConfigError(
                    name, "is fixed at start-up (PROVIDER_SIM_WEBHOOK_CONCURRENCY)", "start_up_only"
                )
        if "secret" in update and not isinstance(update["secret"], str):
            raise WebhookConfigError("secret", "must be a string")
        if "url" in update and not isinstance(update["url"], str | None):
            raise WebhookConfigError("url", "must be a string, or null to stop delivering")
        return dataclasses.replace(self, **update)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def retry_delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        """How long to wait after the `failed_attempts`-th failed attempt (1 = the first)."""
        exponent = min(max(failed_attempts - 1, 0), 40)
        ceiling = min(self.retry_max_ms, self.retry_initial_ms << exponent)
        return ceiling * rng.uniform(JITTER_FLOOR, 1.0) / 1000


def _check_url(url: object) -> None:
    if not isinstance(url, str):
        raise WebhookConfigError("url", "must be a string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise WebhookConfigError("url", f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError("url", f"must be an absolute http(s) URL, got {url!r}")


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WebhookConfigError(field, f"must be an integer from {low} to {high}")


class DeliveryState(enum.StrEnum):
    NO_ENDPOINT = "no_endpoint"  # no URL was configured when the event happened
    PENDING = "pending"  # a copy is waiting, in flight, or scheduled for a retry
    DELIVERED = "delivered"  # every copy was answered 2xx
    FAILED = "failed"  # a copy ran out of attempts


@dataclass(slots=True, eq=False)
class DeliveryRecord:
    """What happened to the deliveries of one event (duplicates included)."""

    copies: int = 0
    delivered_copies: int = 0
    failed_copies: int = 0
    attempts: int = 0
    dropped: bool = False  # an attempt was lost in transit (webhook_drop_rate)
    last_status: int | None = None
    last_error: str | None = None

    @property
    def state(self) -> DeliveryState:
        if self.copies == 0:
            return DeliveryState.NO_ENDPOINT
        if self.delivered_copies + self.failed_copies < self.copies:
            return DeliveryState.PENDING
        return DeliveryState.FAILED if self.failed_copies else DeliveryState.DELIVERED

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered_copies > 0,
            "attempts": self.attempts,
            "dropped": self.dropped,
            "copies": self.copies,
            "delivery_state": self.state.value,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class DeliveryStats:
    """Counters since start or the last reset; a delivery is one copy of one event."""

    delivered: int = 0
    failed_attempts: int = 0
    pending: int = 0
    dropped: int = 0
    duplicated: int = 0
    gave_up: int = 0
    attempts: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)
