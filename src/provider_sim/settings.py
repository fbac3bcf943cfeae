"""The one settings object of the provider-sim process; only it reads the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from provider_sim.webhooks import DEFAULT_SECRET, WebhookConfig, WebhookConfigError

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 12111
DEFAULT_IDEMPOTENCY_RETENTION_S: Final = 24 * 3600.0


class SettingsError(ValueError):
    """Configuration the process cannot start with."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # When set, the only secret key accepted; otherwise any `sk_test_...` key is.
    api_key: str | None = None
    # How long an Idempotency-Key is remembered (Stripe keeps keys for 24 hours).
    idempotency_retention_s: float = DEFAULT_IDEMPOTENCY_RETENTION_S
    # Where events are POSTed; None: they are only recorded (and listed by /v1/events).
    webhook_url: str | None = None
    webhook_secret: str = DEFAULT_SECRET
    webhook_retry_initial_ms: int = 1000
    webhook_retry_max_ms: int = 60_000
    webhook_max_attempts: int = 25
    webhook_timeout_ms: int = 10_000
    # Deliveries in flight at once (and connections kept alive to the endpoint).
    webhook_concurrency: int = 16
    # Seeds every random choice (faults, retry jitter, reorder); None: unpredictable.
    seed: int | None = None
    # Where the books are kept across restarts (a SQLite file); None: in memory only.
    state_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise SettingsError("PROVIDER_SIM_HOST must not be empty")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PROVIDER_SIM_PORT must be 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.startswith("sk_"):
            raise SettingsError("PROVIDER_SIM_API_KEY must be a secret key starting with 'sk_'")
        if not math.isfinite(self.idempotency_retention_s) or self.idempotency_retention_s <= 0:
            raise SettingsError("PROVIDER_SIM_IDEMPOTENCY_RETENTION_S must be a positive number")
        self.webhook_config()
        if self.state_path is not None and self.state_path.is_dir():
            raise SettingsError(
                f"PROVIDER_SIM_STATE must name a file, not a directory: {self.state_path}"
            )

    def webhook_config(self) -> WebhookConfig:
        try:
            return WebhookConfig(
                url=self.webhook_url,
                secret=self.webhook_secret,
                retry_initial_ms=self.webhook_retry_initial_ms,
                retry_max_ms=self.webhook_retry_max_ms,
                max_attempts=self.webhook_max_attempts,
                timeout_ms=self.webhook_timeout_ms,
                concurrency=self.webhook_concurrency,
            )
        except WebhookConfigError as exc:
            name = f"PROVIDER_SIM_WEBHOOK_{exc.field.upper()}"
            raise SettingsError(f"{name} {exc.message}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host=env.get("PROVIDER_SIM_HOST", DEFAULT_HOST).strip(),
            port=_number(env, "PROVIDER_SIM_PORT", int, DEFAULT_PORT),
            api_key=env.get("PROVIDER_SIM_API_KEY", "").strip() or None,
            idempotency_retention_s=_number(
                env, "PROVIDER_SIM_IDEMPOTENCY_RETENTION_S", float, DEFAULT_IDEMPOTENCY_RETENTION_S
            ),
            webhook_url=env.get("PROVIDER_SIM_WEBHOOK_URL", "").strip() or None,
            webhook_secret=env.get("PROVIDER_SIM_WEBHOOK_SECRET", "").strip() or DEFAULT_SECRET,
            webhook_retry_initial_ms=_number(
                env, "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS", int, defaults.webhook_retry_initial_ms
            ),
            webhook_retry_max_ms=_number(
                env, "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS", int, defaults.webhook_retry_max_ms
            ),
            webhook_max_attempts=_number(
                env, "PROVIDER_SIM_WEBHOOK_MAX_ATTEMPTS", int, defaults.webhook_max_attempts
            ),
            webhook_timeout_ms=_number(
                env, "PROVIDER_SIM_WEBHOOK_TIMEOUT_MS", int, defaults.webhook_timeout_ms
            ),
            webhook_concurrency=_number(
                env, "PROVIDER_SIM_WEBHOOK_CONCURRENCY", int, defaults.webhook_concurrency
            ),
            seed=(
                _number(env, "PROVIDER_SIM_SEED", int, 0)
                if env.get("PROVIDER_SIM_SEED", "").strip()
                else None
            ),
            state_path=_path(env, "PROVIDER_SIM_STATE"),
        )


_N = TypeVar("_N", int, float)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def _number(env: Mapping[str, str], name: str, kind: type[_N], default: _N) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
