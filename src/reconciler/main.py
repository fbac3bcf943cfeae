"""reconciler: wiring and lifecycle, in one place.

    reconciler                    the scheduled jobs, /metrics and /healthz
    reconciler --once [--jobs]    each job once, exit 0 when all completed, 1 otherwise

Start: settings (flags override the environment) -> logs -> provider reader and
payment-svc channel -> metrics listener -> scheduler. SIGTERM/SIGINT: no new
runs, running ones finish (up to RECONCILER_DRAIN_SECONDS), then the listener
and the connections close; exit 0. Exit 2: bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import structlog
import uvloop
from aiohttp import web

from payments_kit import logs, runtime
from reconciler.context import open_context
from reconciler.metrics import Metrics
from reconciler.runner import Runner, run_pass
from reconciler.runs import JOBS, parse_jobs
from reconciler.scheduler import Schedule
from reconciler.server import init_app
from reconciler.settings import ConfigError, Settings, split_address

log = structlog.get_logger("reconciler")


class CannotListen(Exception):
    """The address is taken or not ours: the process exits 1 with this message."""


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    async with open_context(settings, metrics) as ctx:
        schedule = Schedule(settings, Runner(ctx))
        web_runner = web.AppRunner(
            init_app(metrics, lambda: schedule.healthy), access_log=None, handle_signals=False
        )
        runtime.freeze_startup_heap()  # before listening: the pause delays nobody
        await web_runner.setup()
        try:
            host, port = split_address("RECONCILER_METRICS_LISTEN", settings.metrics_listen)
            try:
                await web.TCPSite(web_runner, host, port).start()
            except OSError as exc:
                raise CannotListen(f"cannot listen on {settings.metrics_listen}: {exc}") from None
            bound = web_runner.addresses[0]
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            schedule.start()
            log.info(
                "reconciler_started",
                reconciler_id=settings.reconciler_id,
                metrics=f"{bound[0]}:{bound[1]}",
                payment_svc=settings.payment_svc_target,
                provider=settings.stripe_api_base,
            )
            await stop.wait()
            log.info("reconciler_stopping", drain_seconds=settings.drain_seconds)
            await schedule.stop()
        finally:
            await web_runner.cleanup()
    log.info("reconciler_stopped")


async def once(settings: Settings, jobs: tuple[str, ...]) -> int:
    reports = await run_pass(settings, jobs)
    succeeded = all(r.succeeded for r in reports)
    log.info(
        "reconciliation_pass_finished",
        succeeded=succeeded,
        runs=[r.to_json() for r in reports],
    )
    return 0 if succeeded else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Asks the provider for the truth and has payment-svc fix the drift.",
    )
    parser.add_argument("--once", action="store_true", help="run each job once and exit")
    parser.add_argument(
        "--jobs",
        default=",".join(JOBS),
        help=f"with --once: comma separated, in order (default {','.join(JOBS)})",
    )
    parser.add_argument(
        "--payment-svc-target", help="payment-svc gRPC host:port (overrides PAYMENT_SVC_TARGET)"
    )
    parser.add_argument(
        "--metrics-listen", help="host:port of /metrics (overrides RECONCILER_METRICS_LISTEN)"
    )
    args = parser.parse_args(argv)
    try:
        jobs = parse_jobs(args.jobs)
    except ValueError as exc:
        parser.error(str(exc))
    env = dict(os.environ)
    if args.payment_svc_target:
        env["PAYMENT_SVC_TARGET"] = args.payment_svc_target
    if args.metrics_listen:
        env["RECONCILER_METRICS_LISTEN"] = args.metrics_listen
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"reconciler: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure("reconciler", settings.log_level)
    # APScheduler logs each run in its own words; ours (JSON) say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if args.once:
        raise SystemExit(uvloop.run(once(settings, jobs)))
    try:
        uvloop.run(serve(settings))
    except CannotListen as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
