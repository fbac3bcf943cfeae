"""webhook-dispatcher: wiring and lifecycle, in one place.

    webhook-dispatcher     lease endpoints, post their updates, /metrics and /healthz

Start: settings (flags override the environment) -> logs -> payment-svc
channel -> HTTP sender -> metrics listener -> the dispatcher's loop.
SIGTERM/SIGINT: no new attempts; those in flight finish (up to
WEBHOOK_DRAIN_SECONDS) or stay queued to be sent again; the leases are
released; exit 0. Exit 2: bad configuration; 1: cannot listen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import grpc
import structlog
import uvloop
from aiohttp import web

from payments_kit import logs
from payments_kit.environment import split_address
from webhook_dispatcher.dispatcher import Dispatcher
from webhook_dispatcher.metrics import Metrics
from webhook_dispatcher.rpc import DispatchRpc
from webhook_dispatcher.sender import Sender
from webhook_dispatcher.server import init_app
from webhook_dispatcher.settings import ConfigError, Settings

log = structlog.get_logger("webhook_dispatcher")


class CannotListen(Exception):
    pass


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sender = Sender(production=settings.production, timeout=settings.attempt_timeout)
    await sender.open()
    async with grpc.aio.insecure_channel(settings.payment_svc_target) as channel:
        rpc = DispatchRpc(channel, settings.token, settings.dispatcher_id, settings.rpc_timeout)
        dispatcher = Dispatcher(rpc, sender, settings, metrics)
        runner = web.AppRunner(
            init_app(metrics, lambda: not stop.is_set(), lambda: dispatcher.ready),
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        try:
            host, port = split_address("WEBHOOK_DISPATCHER_METRICS_LISTEN", settings.metrics_listen)
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise CannotListen(f"cannot listen on {settings.metrics_listen}: {exc}") from None
            bound = runner.addresses[0]
            log.info(
                "webhook_dispatcher_started",
                dispatcher_id=settings.dispatcher_id,
                metrics=f"{bound[0]}:{bound[1]}",
                payment_svc=settings.payment_svc_target,
                retry_schedule=list(settings.retry_schedule),
            )
            await dispatcher.run(stop)
        finally:
            await runner.cleanup()
            await sender.close()
    log.info("webhook_dispatcher_stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="webhook-dispatcher",
        description="Posts each client's feed updates, signed, to the endpoints it registered.",
    )
    parser.add_argument(
        "--payment-svc-target", help="payment-svc gRPC host:port (overrides PAYMENT_SVC_TARGET)"
    )
    parser.add_argument(
        "--metrics-listen",
        help="host:port of /metrics (overrides WEBHOOK_DISPATCHER_METRICS_LISTEN)",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.payment_svc_target:
        env["PAYMENT_SVC_TARGET"] = args.payment_svc_target
    if args.metrics_listen:
        env["WEBHOOK_DISPATCHER_METRICS_LISTEN"] = args.metrics_listen
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"webhook-dispatcher: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure("webhook-dispatcher", settings.log_level)
    try:
        uvloop.run(serve(settings))
    except CannotListen as exc:
        print(f"webhook-dispatcher: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
