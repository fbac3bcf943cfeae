"""The one settings object of webhook-gateway; the only reader of the environment.
(docs/reference/configuration.md has the full table, checked against this code
by scripts/gen-docs.)

| variable | default | meaning |
| --- | --- | --- |
| PAYMENTS_ENV | development | `production` refuses `whsec_dev` and `dev-gateway-token` |
| WEBHOOK_GATEWAY_LISTEN | 127.0.0.1:8080 | HTTP address (`host:port`, port 0: any) |
| PAYMENT_SVC_TARGET | 127.0.0.1:50051 | payment-svc's gRPC address |
| WEBHOOK_GATEWAY_TOKEN | dev-gateway-token | the gateway's bearer token for payment-svc |
| WEBHOOK_SECRETS | whsec_dev | active signing secrets, comma separated, newest first |
| WEBHOOK_TOLERANCE_SECONDS | 300 | accepted distance between the signature's time and ours |
| WEBHOOK_MAX_BODY_BYTES | 65536 | larger bodies get 413 |
| WEBHOOK_FORWARD_TIMEOUT_SECONDS | 5 | deadline of the ApplyProviderEvent call |
| WEBHOOK_GATEWAY_DRAIN_SECONDS | 10 | grace for in-flight requests on SIGTERM |
| LOG_LEVEL | INFO | |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from payments_kit.environment import ConfigError as ConfigError
from payments_kit.environment import check_payment_svc_client, is_production
from payments_kit.environment import number as _number
from payments_kit.environment import split_address as split_address

DEV_SECRET = "whsec_dev"
DEV_TOKEN = "dev-gateway-token"


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:8080"
    payment_svc_target: str = "127.0.0.1:50051"
    token: str = DEV_TOKEN
    secrets: tuple[str, ...] = (DEV_SECRET,)
    tolerance_seconds: int = 300
    max_body_bytes: int = 65536
    forward_timeout: float = 5.0
    drain_seconds: float = 10.0
    log_level: str = "INFO"
    production: bool = False

    def __post_init__(self) -> None:
        # Also guards settings built in code (tests, flags), not only from the environment.
        split_address("WEBHOOK_GATEWAY_LISTEN", self.listen)
        check_payment_svc_client(self.payment_svc_target, "WEBHOOK_GATEWAY_TOKEN", self.token)
        if not self.secrets or not all(self.secrets):
            raise ConfigError("WEBHOOK_SECRETS must name at least one secret")
        if self.tolerance_seconds <= 0:
            raise ConfigError("WEBHOOK_TOLERANCE_SECONDS must be positive")
        if self.max_body_bytes <= 0:
            raise ConfigError("WEBHOOK_MAX_BODY_BYTES must be positive")
        if self.forward_timeout <= 0:
            raise ConfigError("WEBHOOK_FORWARD_TIMEOUT_SECONDS must be positive")
        if self.drain_seconds < 0:
            raise ConfigError("WEBHOOK_GATEWAY_DRAIN_SECONDS must not be negative")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ConfigError(f"LOG_LEVEL {self.log_level!r} is not a logging level")
        development = [
            name
            for name, is_default in (
                ("WEBHOOK_SECRETS", DEV_SECRET in self.secrets),
                ("WEBHOOK_GATEWAY_TOKEN", self.token == DEV_TOKEN),
            )
            if is_default
        ]
        if self.production and development:
            raise ConfigError(
                "PAYMENTS_ENV=production refuses the development defaults: set "
                + " and ".join(development)
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: object) -> str:
            raw = env.get(name, "").strip()
            return raw if raw else str(default)

        return cls(
            listen=get("WEBHOOK_GATEWAY_LISTEN", cls.listen),
            payment_svc_target=get("PAYMENT_SVC_TARGET", cls.payment_svc_target),
            token=get("WEBHOOK_GATEWAY_TOKEN", cls.token),
            secrets=parse_secrets(get("WEBHOOK_SECRETS", DEV_SECRET)),
            tolerance_seconds=_number(
                int, "WEBHOOK_TOLERANCE_SECONDS", get("WEBHOOK_TOLERANCE_SECONDS", 300)
            ),
            max_body_bytes=_number(
                int, "WEBHOOK_MAX_BODY_BYTES", get("WEBHOOK_MAX_BODY_BYTES", 65536)
            ),
            forward_timeout=_number(
                float,
                "WEBHOOK_FORWARD_TIMEOUT_SECONDS",
                get("WEBHOOK_FORWARD_TIMEOUT_SECONDS", 5.0),
            ),
            drain_seconds=_number(
                float, "WEBHOOK_GATEWAY_DRAIN_SECONDS", get("WEBHOOK_GATEWAY_DRAIN_SECONDS", 10.0)
            ),
            log_level=get("LOG_LEVEL", "INFO"),
            production=is_production(env),
        )


def parse_secrets(raw: str) -> tuple[str, ...]:
    """Comma separated, newest first; blanks and repeats are dropped."""
    secrets = [s.strip() for s in raw.split(",")]
    return tuple(dict.fromkeys(s for s in secrets if s))
