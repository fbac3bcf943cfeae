"""webhook-gateway: wiring and lifecycle, in one place.

Start: settings (flags override the environment) -> logs -> application -> listen.
SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
WEBHOOK_GATEWAY_DRAIN_SECONDS), then close the channel to payment-svc; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import structlog
import uvloop
from aiohttp import web

from payments_kit import logs, runtime
from webhook_gateway.app import init_app
from webhook_gateway.settings import ConfigError, Settings, split_address

log = structlog.get_logger("webhook_gateway")


class CannotListen(Exception):
    """The address is taken or not ours: the process exits 1 with this message."""


async def serve(settings: Settings) -> None:
    host, port = split_address("WEBHOOK_GATEWAY_LISTEN", settings.listen)
    runner = web.AppRunner(
        init_app(settings),
        access_log=None,  # one structured line per webhook is ours to write
        handle_signals=False,
        shutdown_timeout=settings.drain_seconds,
    )
    await runner.setup()
    try:
        runtime.freeze_startup_heap()  # before listening: the pause delays nobody
        site = web.TCPSite(runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise CannotListen(f"cannot listen on {settings.listen}: {exc}") from None
        bound = runner.addresses[0]
        log.info(
            "webhook_gateway_started",
            listen=f"{bound[0]}:{bound[1]}",
            payment_svc=settings.payment_svc_target,
            active_secrets=len(settings.secrets),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("webhook_gateway_draining", grace_seconds=settings.drain_seconds)
    finally:
        # Closes the listener, waits for in-flight requests, then runs the
        # cleanup context (the gRPC channel).
        await runner.cleanup()
    log.info("webhook_gateway_stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="webhook-gateway",
        description="Verifies provider webhooks and forwards each one to payment-svc.",
    )
    parser.add_argument("--listen", help="HTTP host:port (overrides WEBHOOK_GATEWAY_LISTEN)")
    parser.add_argument(
        "--payment-svc-target", help="payment-svc gRPC host:port (overrides PAYMENT_SVC_TARGET)"
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.listen:
        env["WEBHOOK_GATEWAY_LISTEN"] = args.listen
    if args.payment_svc_target:
        env["PAYMENT_SVC_TARGET"] = args.payment_svc_target
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"webhook-gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure("webhook-gateway", settings.log_level)
    try:
        uvloop.run(serve(settings))
    except CannotListen as exc:
        print(f"webhook-gateway: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
