"""`provider-sim` console entry: settings, uvloop, serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import uvloop
from aiohttp import web

from payments_kit import runtime
from provider_sim.app import init_app
from provider_sim.settings import SettingsError, SimSettings
from provider_sim.state import StateError

log = structlog.get_logger("provider_sim")

# Open requests (a held `timeout_after_charge` response is released at shutdown)
# get this long to finish.
SHUTDOWN_TIMEOUT_S = 5.0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = SimSettings.from_env()
        overrides: dict[str, Any] = {}
        if args.host is not None:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        if args.webhook_url is not None:
            overrides["webhook_url"] = args.webhook_url or None
        if args.state is not None:
            overrides["state_path"] = Path(args.state) if args.state else None
        settings = dataclasses.replace(settings, **overrides)
    except SettingsError as exc:
        raise SystemExit(f"provider-sim: invalid configuration: {exc}") from None
    _configure_logging()
    try:
        uvloop.run(serve(settings))
    except StateError as exc:
        raise SystemExit(f"provider-sim: {exc}") from None
    except OSError as exc:
        raise SystemExit(
            f"provider-sim: cannot listen on {settings.host}:{settings.port}: {exc}"
        ) from None


async def serve(settings: SimSettings) -> None:
    runner = web.AppRunner(init_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    # Its books (every intent, event and delivery) only grow until reset; frozen
    # before listening, so the first pause delays nobody.
    runtime.freeze_after_full_collections()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        log.info(
            "provider_sim.started",
            address=_url(host, port),
            api_key="configured" if settings.api_key else "any sk_test_ key",
            webhook_url=settings.webhook_url,
            state=str(settings.state_path) if settings.state_path else "in memory",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provider-sim",
        description="A local payment provider speaking a subset of Stripe's API, with faults.",
    )
    parser.add_argument("--host", help="address to bind (env PROVIDER_SIM_HOST, 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, help="port to bind, 0 for any (env PROVIDER_SIM_PORT, 12111)"
    )
    parser.add_argument(
        "--webhook-url",
        help="where events are POSTed, '' for nowhere (env PROVIDER_SIM_WEBHOOK_URL, unset)",
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        help="keep the books in this file across restarts, '' for in memory "
        "(env PROVIDER_SIM_STATE, unset: in memory)",
    )
    return parser


def _configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
