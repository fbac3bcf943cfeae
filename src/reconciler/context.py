"""What the jobs work with, opened in the running loop and closed in order:
the provider reader, the channel to payment-svc, metrics and findings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from payments.client import ProviderSyncClient
from payments_stripe.reader import StripeReader
from reconciler.findings import Findings
from reconciler.metrics import Metrics
from reconciler.settings import Settings

# Reconnect quickly once payment-svc is back (gRPC's default backoff grows to
# 120 s); talk to it directly, never through an HTTP proxy from the environment.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_http_proxy", 0),
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class JobContext:
    settings: Settings
    provider: StripeReader
    client: ProviderSyncClient
    metrics: Metrics
    findings: Findings
    clock: Callable[[], datetime] = field(default=utc_now)

    def now(self) -> datetime:
        return self.clock()


@contextlib.asynccontextmanager
async def open_context(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[JobContext]:
    metrics = metrics or Metrics()
    provider = StripeReader(
        api_key=settings.stripe_api_key,
        base_url=settings.stripe_api_base,
        timeout=settings.provider_timeout,
    )
    try:
        async with ProviderSyncClient(
            settings.payment_svc_target,
            settings.token,
            timeout=settings.rpc_timeout,
            options=CHANNEL_OPTIONS,
        ) as client:
            yield JobContext(settings, provider, client, metrics, Findings(client, metrics))
    finally:
        await provider.close()
