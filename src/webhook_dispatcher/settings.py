"""The one settings object of webhook-dispatcher; the only reader of the environment.

| variable | default | meaning |
| --- | --- | --- |
| PAYMENTS_ENV | development | `production`: https only, no loopback, no development token |
| PAYMENT_SVC_TARGET | 127.0.0.1:50051 | payment-svc's gRPC address |
| WEBHOOK_DISPATCHER_TOKEN | dev-dispatcher-token | bearer token for WebhookDispatchService |
| WEBHOOK_DISPATCHER_ID | host-pid | names this replica in the leases |
| WEBHOOK_DISPATCHER_METRICS_LISTEN | 127.0.0.1:9104 | /metrics, /healthz, /readyz |
| WEBHOOK_RETRY_SCHEDULE | SPEC's 5 s .. 24 h | seconds before each retry, comma separated |
| WEBHOOK_RETRY_JITTER | 0.1 | each delay varies by up to this fraction either way |
| WEBHOOK_ATTEMPT_TIMEOUT_SECONDS | 10 | one attempt, all of it (connect, send, answer) |
| WEBHOOK_DISABLE_AFTER_FAILING_SECONDS | 432000 | failing this long disables (5 days) |
| WEBHOOK_LEASE_SECONDS | 30 | an endpoint's lease; renewed every third of it |
| WEBHOOK_MAX_ENDPOINTS | 200 | endpoints one replica serves at most |
| WEBHOOK_CONCURRENCY | 8 | attempts in flight per endpoint (one per payment at most) |
| WEBHOOK_POLL_SECONDS | 0.5 | how often an idle endpoint looks for new updates |
| WEBHOOK_DRAIN_SECONDS | 12 | SIGTERM: how long attempts in flight may finish |
| LOG_LEVEL | INFO | |
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from payments_kit.environment import ConfigError as ConfigError
from payments_kit.environment import (
    check_payment_svc_client,
    is_production,
    number,
    split_address,
)

DEV_TOKEN = "dev-dispatcher-token"
SPEC_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
MAX_RESPONSE_BYTES = 64 * 1024


def default_dispatcher_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _schedule(raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise ConfigError("WEBHOOK_RETRY_SCHEDULE must be seconds, comma separated") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError("WEBHOOK_RETRY_SCHEDULE must be positive seconds, comma separated")
    return values


@dataclass(frozen=True)
class Settings:
    production: bool = False
    payment_svc_target: str = "127.0.0.1:50051"
    token: str = DEV_TOKEN
    dispatcher_id: str = field(default_factory=default_dispatcher_id)
    metrics_listen: str = "127.0.0.1:9104"
    retry_schedule: tuple[float, ...] = SPEC_SCHEDULE
    retry_jitter: float = 0.1
    attempt_timeout: float = 10.0
    disable_after_failing: float = 5 * 86400.0
    lease_seconds: float = 30.0
    max_endpoints: int = 200
    concurrency: int = 8
    poll_seconds: float = 0.5
    drain_seconds: float = 12.0
    rpc_timeout: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        split_address("WEBHOOK_DISPATCHER_METRICS_LISTEN", self.metrics_listen)
        check_payment_svc_client(self.payment_svc_target, "WEBHOOK_DISPATCHER_TOKEN", self.token)
        if self.production and self.token == DEV_TOKEN:
            raise ConfigError("PAYMENTS_ENV=production refuses the development token")
        if not self.dispatcher_id.isprintable() or not self.dispatcher_id:
            raise ConfigError("WEBHOOK_DISPATCHER_ID must be a non-empty printable name")
        if not 0 <= self.retry_jitter < 1:
            raise ConfigError("WEBHOOK_RETRY_JITTER must be in [0, 1)")
        for name, value in (
            ("WEBHOOK_ATTEMPT_TIMEOUT_SECONDS", self.attempt_timeout),
            ("WEBHOOK_DISABLE_AFTER_FAILING_SECONDS", self.disable_after_failing),
            ("WEBHOOK_LEASE_SECONDS", self.lease_seconds),
            ("WEBHOOK_POLL_SECONDS", self.poll_seconds),
            ("WEBHOOK_DRAIN_SECONDS", self.drain_seconds),
            ("WEBHOOK_MAX_ENDPOINTS", self.max_endpoints),
            ("WEBHOOK_CONCURRENCY", self.concurrency),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.lease_seconds <= self.attempt_timeout:
            raise ConfigError(
                "WEBHOOK_LEASE_SECONDS must be longer than WEBHOOK_ATTEMPT_TIMEOUT_SECONDS"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            raw = env.get(name, "")
            return default if raw == "" else number(float, name, raw)

        def whole(name: str, default: int) -> int:
            raw = env.get(name, "")
            return default if raw == "" else number(int, name, raw)

        return cls(
            production=is_production(env),
            payment_svc_target=env.get("PAYMENT_SVC_TARGET", cls.payment_svc_target),
            token=env.get("WEBHOOK_DISPATCHER_TOKEN", DEV_TOKEN),
            dispatcher_id=env.get("WEBHOOK_DISPATCHER_ID") or default_dispatcher_id(),
            metrics_listen=env.get("WEBHOOK_DISPATCHER_METRICS_LISTEN", cls.metrics_listen),
            retry_schedule=_schedule(env["WEBHOOK_RETRY_SCHEDULE"])
            if env.get("WEBHOOK_RETRY_SCHEDULE")
            else SPEC_SCHEDULE,
            retry_jitter=num("WEBHOOK_RETRY_JITTER", cls.retry_jitter),
            attempt_timeout=num("WEBHOOK_ATTEMPT_TIMEOUT_SECONDS", cls.attempt_timeout),
            disable_after_failing=num(
                "WEBHOOK_DISABLE_AFTER_FAILING_SECONDS", cls.disable_after_failing
            ),
            lease_seconds=num("WEBHOOK_LEASE_SECONDS", cls.lease_seconds),
            max_endpoints=whole("WEBHOOK_MAX_ENDPOINTS", cls.max_endpoints),
            concurrency=whole("WEBHOOK_CONCURRENCY", cls.concurrency),
            poll_seconds=num("WEBHOOK_POLL_SECONDS", cls.poll_seconds),
            drain_seconds=num("WEBHOOK_DRAIN_SECONDS", cls.drain_seconds),
            log_level=env.get("LOG_LEVEL", "INFO"),
        )
