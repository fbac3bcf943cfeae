"""The one settings object of the reconciler; the only reader of the environment.
(docs/reference/configuration.md has the full table, checked against this code
by scripts/gen-docs.)

| variable | default | meaning |
| --- | --- | --- |
| PAYMENTS_ENV | development | `production` refuses the development token and provider key |
| PAYMENT_SVC_TARGET | 127.0.0.1:50051 | payment-svc's gRPC address |
| RECONCILER_TOKEN | dev-reconciler-token | the reconciler's bearer token for payment-svc |
| STRIPE_API_BASE | http://127.0.0.1:12111 | provider base URL (provider-sim or Stripe) |
| STRIPE_API_KEY | sk_test_dev | provider secret key (read-only use) |
| RECONCILER_ID | hostname-pid | who holds leases and records runs |
| RECONCILER_METRICS_LISTEN | 127.0.0.1:9102 | /metrics and /healthz (port 0: any free port) |
| RECONCILER_SWEEP_SECONDS | 60 | schedule of the sweep |
| RECONCILER_CATCH_UP_SECONDS | 60 | schedule of the catch-up |
| RECONCILER_SETTLEMENT_SECONDS | 300 | schedule of the settlement diff |
| RECONCILER_GRACE_SECONDS | 60 | only payments untouched (and intents created) this long ago |
| RECONCILER_STUCK_AFTER_SECONDS | 3600 | non-final this long after creation: STUCK_PAYMENT |
| RECONCILER_REDRIVE_WINDOW_SECONDS | 3600 | re-drive only within it (at most 82800, 23 h) |
| RECONCILER_LEASE_SECONDS | 60 | how long a swept page of payments stays ours |
| RECONCILER_SETTLEMENT_WINDOW_SECONDS | 86400 | settlement diff look-back; first catch-up's too |
| RECONCILER_PAGE_SIZE | 100 | payments, events and intents per page |
| RECONCILER_CONCURRENCY | 16 | provider fetches in flight |
| RECONCILER_PROVIDER_TIMEOUT_SECONDS | 10 | bound of one provider call |
| RECONCILER_RPC_TIMEOUT_SECONDS | 15 | one payment-svc call; > PROVIDER_TIMEOUT + 2 DB_TIMEOUT |
| PROVIDER_TIMEOUT_SECONDS | 10 | payment-svc's (same variable): its bound of one provider call |
| DB_TIMEOUT_SECONDS | 2 | payment-svc's (same variable): its bound of one database call |
| RECONCILER_DRAIN_SECONDS | 30 | on SIGTERM, how long running jobs may take to finish |
| LOG_LEVEL | INFO | |
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields

from payments_kit.environment import ConfigError as ConfigError
from payments_kit.environment import check_payment_svc_client, is_production
from payments_kit.environment import number as _number
from payments_kit.environment import split_address as split_address

DEV_TOKEN = "dev-reconciler-token"
DEV_STRIPE_KEY = "sk_test_dev"
# Stripe keeps an idempotency key 24 h; an hour of margin.
MAX_REDRIVE_WINDOW_SECONDS = 23 * 3600.0


def default_reconciler_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    payment_svc_target: str = "127.0.0.1:50051"
    token: str = DEV_TOKEN
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_api_key: str = DEV_STRIPE_KEY
    reconciler_id: str = "reconciler"
    metrics_listen: str = "127.0.0.1:9102"
    sweep_seconds: float = 60.0
    catch_up_seconds: float = 60.0
    settlement_seconds: float = 300.0
    grace_seconds: float = 60.0
    stuck_after_seconds: float = 3600.0
    # Only payments the provider never gave an id for are re-driven, with the
    # same idempotency key. Stripe keeps keys 24 h and payment-svc refuses
    # re-drives past PAYMENT_SVC_REDRIVE_WINDOW_SECONDS (23 h): never wider
    # than that; by default an hour, after which a person decides.
    redrive_window_seconds: float = 3600.0
    lease_seconds: float = 60.0
    settlement_window_seconds: float = 86400.0
    page_size: int = 100
    concurrency: int = 16
    provider_timeout: float = 10.0
    rpc_timeout: float = 15.0
    # payment-svc's own bounds, read from the same variables: a re-drive
    # (RedrivePayment) takes a provider call and a database call either side,
    # and must not be cut short by our deadline.
    payment_svc_provider_timeout: float = 10.0
    payment_svc_db_timeout: float = 2.0
    drain_seconds: float = 30.0
    log_level: str = "INFO"
    production: bool = False

    def __post_init__(self) -> None:
        # Also guards settings built in code (tests, the CLI), not only from the environment.
        split_address("RECONCILER_METRICS_LISTEN", self.metrics_listen)
        check_payment_svc_client(self.payment_svc_target, "RECONCILER_TOKEN", self.token)
        if not self.stripe_api_base.startswith(("http://", "https://")):
            raise ConfigError(
                f"STRIPE_API_BASE must be an http(s) URL, got {self.stripe_api_base!r}"
            )
        if not self.stripe_api_key:
            raise ConfigError("STRIPE_API_KEY must not be empty")
        if not self.reconciler_id or not self.reconciler_id.isprintable():
            raise ConfigError("RECONCILER_ID must be a non-empty printable name")
        for name, value in (
            ("RECONCILER_SWEEP_SECONDS", self.sweep_seconds),
            ("RECONCILER_CATCH_UP_SECONDS", self.catch_up_seconds),
            ("RECONCILER_SETTLEMENT_SECONDS", self.settlement_seconds),
            ("RECONCILER_STUCK_AFTER_SECONDS", self.stuck_after_seconds),
            ("RECONCILER_LEASE_SECONDS", self.lease_seconds),
            ("RECONCILER_SETTLEMENT_WINDOW_SECONDS", self.settlement_window_seconds),
            ("RECONCILER_PROVIDER_TIMEOUT_SECONDS", self.provider_timeout),
            ("RECONCILER_RPC_TIMEOUT_SECONDS", self.rpc_timeout),
            ("PROVIDER_TIMEOUT_SECONDS", self.payment_svc_provider_timeout),
            ("DB_TIMEOUT_SECONDS", self.payment_svc_db_timeout),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
        needed = self.payment_svc_provider_timeout + 2 * self.payment_svc_db_timeout
        if self.rpc_timeout <= needed:
            raise ConfigError(
                f"RECONCILER_RPC_TIMEOUT_SECONDS ({self.rpc_timeout:g}) must be longer than "
                f"payment-svc's PROVIDER_TIMEOUT_SECONDS ({self.payment_svc_provider_timeout:g}) "
                f"plus twice its DB_TIMEOUT_SECONDS ({self.payment_svc_db_timeout:g}: the "
                f"payment's read and the answer's write), {needed:g} s: a re-drive would be "
                "cut short before the provider's answer"
            )
        for name, value in (
            ("RECONCILER_GRACE_SECONDS", self.grace_seconds),
            ("RECONCILER_REDRIVE_WINDOW_SECONDS", self.redrive_window_seconds),
            ("RECONCILER_DRAIN_SECONDS", self.drain_seconds),
        ):
            if value < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.redrive_window_seconds > MAX_REDRIVE_WINDOW_SECONDS:
            raise ConfigError(
                f"RECONCILER_REDRIVE_WINDOW_SECONDS must be at most {MAX_REDRIVE_WINDOW_SECONDS:g}"
                f" (23 h), got {self.redrive_window_seconds:g}: the provider forgets an "
                "idempotency key after 24 h, and a re-drive past that could charge twice"
            )
        if self.grace_seconds >= self.settlement_window_seconds:
            raise ConfigError(
                "RECONCILER_GRACE_SECONDS must be shorter than RECONCILER_SETTLEMENT_WINDOW_SECONDS"
            )
        if not 1 <= self.page_size <= 100:
            # 100 is the most the provider lists at once (Stripe's limit).
            raise ConfigError("RECONCILER_PAGE_SIZE must be from 1 to 100")
        if not 1 <= self.concurrency <= 1000:
            raise ConfigError("RECONCILER_CONCURRENCY must be from 1 to 1000")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ConfigError(f"LOG_LEVEL {self.log_level!r} is not a logging level")
        development = [
            name
            for name, is_default in (
                ("RECONCILER_TOKEN", self.token == DEV_TOKEN),
                ("STRIPE_API_KEY", self.stripe_api_key == DEV_STRIPE_KEY),
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
        defaults = {f.name: f.default for f in fields(cls)}

        def get(name: str, default: object) -> str:
            raw = env.get(name, "").strip()
            return raw if raw else str(default)

        def seconds(name: str, attribute: str) -> float:
            return _number(float, name, get(name, defaults[attribute]))

        return cls(
            payment_svc_target=get("PAYMENT_SVC_TARGET", cls.payment_svc_target),
            token=get("RECONCILER_TOKEN", cls.token),
            stripe_api_base=get("STRIPE_API_BASE", cls.stripe_api_base).rstrip("/"),
            stripe_api_key=get("STRIPE_API_KEY", cls.stripe_api_key),
            reconciler_id=get("RECONCILER_ID", "") or default_reconciler_id(),
            metrics_listen=get("RECONCILER_METRICS_LISTEN", cls.metrics_listen),
            sweep_seconds=seconds("RECONCILER_SWEEP_SECONDS", "sweep_seconds"),
            catch_up_seconds=seconds("RECONCILER_CATCH_UP_SECONDS", "catch_up_seconds"),
            settlement_seconds=seconds("RECONCILER_SETTLEMENT_SECONDS", "settlement_seconds"),
            grace_seconds=seconds("RECONCILER_GRACE_SECONDS", "grace_seconds"),
            stuck_after_seconds=seconds("RECONCILER_STUCK_AFTER_SECONDS", "stuck_after_seconds"),
            redrive_window_seconds=seconds(
                "RECONCILER_REDRIVE_WINDOW_SECONDS", "redrive_window_seconds"
            ),
            lease_seconds=seconds("RECONCILER_LEASE_SECONDS", "lease_seconds"),
            settlement_window_seconds=seconds(
                "RECONCILER_SETTLEMENT_WINDOW_SECONDS", "settlement_window_seconds"
            ),
            page_size=_number(int, "RECONCILER_PAGE_SIZE", get("RECONCILER_PAGE_SIZE", 100)),
            concurrency=_number(int, "RECONCILER_CONCURRENCY", get("RECONCILER_CONCURRENCY", 16)),
            provider_timeout=seconds("RECONCILER_PROVIDER_TIMEOUT_SECONDS", "provider_timeout"),
            rpc_timeout=seconds("RECONCILER_RPC_TIMEOUT_SECONDS", "rpc_timeout"),
            payment_svc_provider_timeout=seconds(
                "PROVIDER_TIMEOUT_SECONDS", "payment_svc_provider_timeout"
            ),
            payment_svc_db_timeout=seconds("DB_TIMEOUT_SECONDS", "payment_svc_db_timeout"),
            drain_seconds=seconds("RECONCILER_DRAIN_SECONDS", "drain_seconds"),
            log_level=get("LOG_LEVEL", "INFO"),
            production=is_production(env),
        )
