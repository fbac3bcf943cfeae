"""The one settings object of the provider-sim process; only it reads the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

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

    def __post_init__(self) -> None:
        if not self.host:
            raise SettingsError("PROVIDER_SIM_HOST must not be empty")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PROVIDER_SIM_PORT must be 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.startswith("sk_"):
            raise SettingsError("PROVIDER_SIM_API_KEY must be a secret key starting with 'sk_'")
        if not math.isfinite(self.idempotency_retention_s) or self.idempotency_retention_s <= 0:
            raise SettingsError("PROVIDER_SIM_IDEMPOTENCY_RETENTION_S must be a positive number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimSettings:
        env = os.environ if environ is None else environ
        return cls(
            host=env.get("PROVIDER_SIM_HOST", DEFAULT_HOST).strip(),
            port=_number(env, "PROVIDER_SIM_PORT", int, DEFAULT_PORT),
            api_key=env.get("PROVIDER_SIM_API_KEY", "").strip() or None,
            idempotency_retention_s=_number(
                env, "PROVIDER_SIM_IDEMPOTENCY_RETENTION_S", float, DEFAULT_IDEMPOTENCY_RETENTION_S
            ),
        )


_N = TypeVar("_N", int, float)


def _number(env: Mapping[str, str], name: str, kind: type[_N], default: _N) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
