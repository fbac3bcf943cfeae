"""What the simulator's HTTP test files share: a simulator on a free port,
and the real Stripe SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import stripe
from aiohttp import web

from provider_sim import SimSettings, init_app


@contextlib.asynccontextmanager
async def running_sim(settings: SimSettings) -> AsyncIterator[str]:
    """Serves the simulator on 127.0.0.1, a free port; yields its base URL."""
    runner = web.AppRunner(init_app(settings), access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sdk_client(url: str, api_key: str) -> AsyncIterator[stripe.StripeClient]:
    """The official SDK, async, as payment-svc and the reconciler use it."""
    http_client = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(
            api_key, base_addresses={"api": url}, http_client=http_client, max_network_retries=0
        )
    finally:
        await http_client.close_async()
