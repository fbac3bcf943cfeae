"""The one settings object of payment-svc; the only reader of the environment.
(docs/reference/configuration.md has the full table, checked against this code
by scripts/gen-docs.)

| variable | default | meaning |
| --- | --- | --- |
| PAYMENTS_ENV | development | `production` refuses development defaults and turns reflection off |
| DATABASE_URL | (required) | Postgres DSN |
| PAYMENT_SVC_LISTEN | 127.0.0.1:50051 | gRPC address |
| PAYMENT_SVC_METRICS_LISTEN | 127.0.0.1:9101 | Prometheus /metrics address (port 0: off) |
| PAYMENT_SVC_MERCHANT_TOKENS | dev tokens | `token=client_id` pairs, comma separated |
| PAYMENT_SVC_GATEWAY_TOKEN | dev-gateway-token | the webhook gateway's token |
| PAYMENT_SVC_RECONCILER_TOKEN | dev-reconciler-token | the reconciler's token |
| PAYMENT_SVC_DISPATCHER_TOKEN | dev-dispatcher-token | webhook-dispatcher's token (optional) |
| STRIPE_API_BASE | http://127.0.0.1:12111 | provider base URL (provider-sim or Stripe) |
| STRIPE_API_KEY | sk_test_dev | provider secret key |
| PROVIDER_TIMEOUT_SECONDS | 10 | bound of one provider call; past it the payment is UNKNOWN |
| DB_TIMEOUT_SECONDS | 2 | bound of every database call |
| DB_POOL_MAX | 20 | connections |
| PAYMENT_SVC_MAX_CALL_SECONDS | 30 | server-side cap for calls without a deadline |
| PAYMENT_SVC_DRAIN_SECONDS | 20 | grace for in-flight calls on SIGTERM |
| PAYMENT_SVC_UNMATCHED_EVENT_DEADLINE_SECONDS | 3600 | unmatched events are reported after |
| PAYMENT_SVC_INBOX_UPKEEP_SECONDS | 1 | how often unmatched provider events are matched again |
| PAYMENT_SVC_REDRIVE_WINDOW_SECONDS | 82800 | no re-drive past this age (key retention) |
| PAYMENT_SVC_UPDATES_RETENTION_SECONDS | 2592000 | change-feed updates kept (30 days) |
| PAYMENT_SVC_UPDATES_EXPIRE_EVERY_SECONDS | 60 | how often expired updates are deleted |
| PAYMENT_SVC_UPDATES_SAFETY_SECONDS | 1 | the feed sequencer's periodic run |
| PAYMENT_SVC_UPDATES_GAP_SECONDS | 0.02 | the feed sequencer's shortest pause between runs |
| MIGRATE_LOCK_TIMEOUT_SECONDS | 2 | `migrate`: longest wait for one lock before a retry |
| PAYMENT_SVC_PAGE_TOKEN_KEY | dev key | HMAC key that signs page tokens (16+ characters) |
| LOG_LEVEL | INFO | |
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from payments_kit.environment import ConfigError as ConfigError
from payments_kit.environment import is_production, number


class Role(enum.Enum):
    MERCHANT = "merchant"
    GATEWAY = "gateway"
    RECONCILER = "reconciler"
    DISPATCHER = "dispatcher"


@dataclass(frozen=True)
class Principal:
    client_id: str
    role: Role


DEV_MERCHANT_TOKENS = "dev-merchant-token=merchant-1,dev-merchant-2-token=merchant-2"
DEV_GATEWAY_TOKEN = "dev-gateway-token"
DEV_RECONCILER_TOKEN = "dev-reconciler-token"
DEV_DISPATCHER_TOKEN = "dev-dispatcher-token"
DEV_STRIPE_KEY = "sk_test_dev"
DEV_PAGE_TOKEN_KEY = "dev-page-token-key-not-secret"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = number(float, name, raw)
    except ConfigError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return number(int, name, raw)


def parse_tokens(raw: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        token, sep, client = pair.partition("=")
        if not sep or not token or not client:
            raise ConfigError("PAYMENT_SVC_MERCHANT_TOKENS must be token=client_id pairs")
        tokens[token] = client
    return tokens


def _database_url(env: Mapping[str, str]) -> str:
    dsn = env.get("DATABASE_URL", "")
    if not dsn:
        raise ConfigError("DATABASE_URL is required (postgresql://user@host:port/db)")
    return dsn


@dataclass(frozen=True)
class MigrationSettings:
    """What `payment-svc migrate` needs: the database, nothing else."""

    database_url: str
    log_level: str = "INFO"
    lock_timeout: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MigrationSettings:
        env = os.environ if env is None else env
        return cls(
            _database_url(env),
            env.get("LOG_LEVEL", "INFO"),
            _float(env, "MIGRATE_LOCK_TIMEOUT_SECONDS", cls.lock_timeout),
        )


@dataclass(frozen=True)
class Settings:
    database_url: str
    production: bool = False
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9101"
    principals: Mapping[str, Principal] = field(default_factory=dict)
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_api_key: str = DEV_STRIPE_KEY
    provider_timeout: float = 10.0
    db_timeout: float = 2.0
    db_pool_max: int = 20
    max_call_seconds: float = 30.0
    drain_seconds: float = 20.0
    unmatched_event_deadline: float = 3600.0
    inbox_upkeep_seconds: float = 1.0
    redrive_window: float = 23 * 3600.0
    updates_retention: float = 30 * 24 * 3600.0
    updates_expire_every: float = 60.0
    updates_safety_every: float = 1.0
    updates_gap: float = 0.02
    page_token_key: str = DEV_PAGE_TOKEN_KEY
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        production = is_production(env)
        dsn = _database_url(env)
        merchants = env.get("PAYMENT_SVC_MERCHANT_TOKENS", DEV_MERCHANT_TOKENS)
        gateway = env.get("PAYMENT_SVC_GATEWAY_TOKEN", DEV_GATEWAY_TOKEN)
        reconciler = env.get("PAYMENT_SVC_RECONCILER_TOKEN", DEV_RECONCILER_TOKEN)
        # Optional in production: unset, nobody may call WebhookDispatchService.
        dispatcher = env.get("PAYMENT_SVC_DISPATCHER_TOKEN") or (
            "" if production else DEV_DISPATCHER_TOKEN
        )
        stripe_key = env.get("STRIPE_API_KEY", DEV_STRIPE_KEY)
        page_token_key = env.get("PAYMENT_SVC_PAGE_TOKEN_KEY") or DEV_PAGE_TOKEN_KEY
        if len(page_token_key) < 16:
            raise ConfigError("PAYMENT_SVC_PAGE_TOKEN_KEY must be at least 16 characters")
        principals = {t: Principal(c, Role.MERCHANT) for t, c in parse_tokens(merchants).items()}
        principals[gateway] = Principal("webhook-gateway", Role.GATEWAY)
        principals[reconciler] = Principal("reconciler", Role.RECONCILER)
        if dispatcher:
            principals[dispatcher] = Principal("webhook-dispatcher", Role.DISPATCHER)
        if production:
            dev = set(parse_tokens(DEV_MERCHANT_TOKENS)) | {
                DEV_GATEWAY_TOKEN,
                DEV_RECONCILER_TOKEN,
                DEV_DISPATCHER_TOKEN,
            }
            if (
                dev & set(principals)
                or stripe_key == DEV_STRIPE_KEY
                or page_token_key == DEV_PAGE_TOKEN_KEY
            ):
                raise ConfigError(
                    "PAYMENTS_ENV=production refuses the development tokens and keys: set "
                    "PAYMENT_SVC_MERCHANT_TOKENS, PAYMENT_SVC_GATEWAY_TOKEN, "
                    "PAYMENT_SVC_RECONCILER_TOKEN, PAYMENT_SVC_DISPATCHER_TOKEN (if set), "
                    "STRIPE_API_KEY and PAYMENT_SVC_PAGE_TOKEN_KEY"
                )
        if len(principals) != len(parse_tokens(merchants)) + 2 + bool(dispatcher):
            raise ConfigError("every token must be distinct")
        return cls(
            database_url=dsn,
            production=production,
            listen=env.get("PAYMENT_SVC_LISTEN", cls.listen),
            metrics_listen=env.get("PAYMENT_SVC_METRICS_LISTEN", cls.metrics_listen),
            principals=principals,
            stripe_api_base=env.get("STRIPE_API_BASE", cls.stripe_api_base),
            stripe_api_key=stripe_key,
            provider_timeout=_float(env, "PROVIDER_TIMEOUT_SECONDS", cls.provider_timeout),
            db_timeout=_float(env, "DB_TIMEOUT_SECONDS", cls.db_timeout),
            db_pool_max=_int(env, "DB_POOL_MAX", cls.db_pool_max),
            max_call_seconds=_float(env, "PAYMENT_SVC_MAX_CALL_SECONDS", cls.max_call_seconds),
            drain_seconds=_float(env, "PAYMENT_SVC_DRAIN_SECONDS", cls.drain_seconds),
            unmatched_event_deadline=_float(
                env, "PAYMENT_SVC_UNMATCHED_EVENT_DEADLINE_SECONDS", cls.unmatched_event_deadline
            ),
            inbox_upkeep_seconds=_float(
                env, "PAYMENT_SVC_INBOX_UPKEEP_SECONDS", cls.inbox_upkeep_seconds
            ),
            redrive_window=_float(env, "PAYMENT_SVC_REDRIVE_WINDOW_SECONDS", cls.redrive_window),
            updates_retention=_float(
                env, "PAYMENT_SVC_UPDATES_RETENTION_SECONDS", cls.updates_retention
            ),
            updates_expire_every=_float(
                env, "PAYMENT_SVC_UPDATES_EXPIRE_EVERY_SECONDS", cls.updates_expire_every
            ),
            updates_safety_every=_float(
                env, "PAYMENT_SVC_UPDATES_SAFETY_SECONDS", cls.updates_safety_every
            ),
            updates_gap=_float(env, "PAYMENT_SVC_UPDATES_GAP_SECONDS", cls.updates_gap),
            page_token_key=page_token_key,
            log_level=env.get("LOG_LEVEL", "INFO"),
        )
