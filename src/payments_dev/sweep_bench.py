"""The sweep rate: stale payments reconciled against provider-sim, per second.

    setup (not timed)   webhooks dropped at the simulator; N payments created
                        through payment-svc with pm_card_processing (PENDING,
                        provider intent processing); each settled `succeeded`
                        in the simulator (its webhook dropped): N stale payments
    measured            one sweep (grace 0): list + lease, retrieve each intent,
                        ReconcilePayment -> SUCCEEDED; payments/s = scanned / time

Against a running stack (`--target` and `--sim-url`; its other stale payments
are swept too) or, by default, a stack of our own in a temp dir on free ports
(embedded Postgres unless DATABASE_URL names a server: then a fresh database).
No reconciler runs in our own stack, so nothing else sweeps meanwhile.

    run_sweep_bench(options, progress) -> SweepBenchReport   (for `payments bench`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import structlog
import uvloop

from payments.client import PaymentsClient
from payments.errors import PaymentsClientError
from payments_dev.stack import DEV_TOKENS, Stack, StackConfig, wait_serving
from reconciler.context import open_context
from reconciler.runner import Runner
from reconciler.settings import Settings

Progress = Callable[[str], None]
T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not run (the stack did not start, setup failed)."""


@dataclass(frozen=True)
class SweepBenchOptions:
    payments: int = 10_000
    target: str | None = None  # a running payment-svc; None: our own stack
    sim_url: str | None = None  # its provider-sim
    merchant_token: str = DEV_TOKENS["merchant"]
    reconciler_token: str = DEV_TOKENS["reconciler"]
    concurrency: int = 16  # the sweep's RECONCILER_CONCURRENCY
    page_size: int = 100
    setup_concurrency: int = 64
    database_url: str | None = None
    logs_dir: Path | None = None


@dataclass(frozen=True)
class SweepBenchReport:
    environment: str
    payments: int
    setup_seconds: float
    seconds: float
    scanned: int
    fixed: int
    errors: int
    succeeded: bool

    @property
    def rate(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "payments": self.payments,
            "setup_seconds": round(self.setup_seconds, 2),
            "sweep_seconds": round(self.seconds, 3),
            "scanned": self.scanned,
            "fixed": self.fixed,
            "errors": self.errors,
            "succeeded": self.succeeded,
            "payments_per_second": round(self.rate, 1),
        }


async def _bounded(items: Iterable[T], limit: int, fn: Callable[[T], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> None:
        async with gate:
            await fn(item)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _sim_post(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> None:
    async with http.post(path, json=body) as reply:
        if reply.status != 200:
            raise BenchError(f"provider-sim {path}: {reply.status} {await reply.text()}")


async def _stale_payments(
    options: SweepBenchOptions, target: str, http: aiohttp.ClientSession, progress: Progress
) -> None:
    intents: list[str] = []
    progress(f"creating {options.payments} PENDING payments (pm_card_processing)")
    # Letters only: a run of digits in a key could look like a card number.
    run = "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))
    async with PaymentsClient(target, options.merchant_token, timeout=30) as client:

        async def create(n: int) -> None:
            p = await client.create_payment(
                f"sweep-bench-{run}-{n}", 1000, "USD", "pm_card_processing"
            )
            intents.append(p.provider_payment_id)

        await _bounded(range(options.payments), options.setup_concurrency, create)
    progress(f"settling {len(intents)} intents in the simulator (webhooks dropped)")

    async def settle(intent: str) -> None:
        await _sim_post(http, f"/_sim/payment_intents/{intent}/settle", {"outcome": "succeeded"})

    await _bounded(intents, options.setup_concurrency, settle)


async def sweep_bench(
    options: SweepBenchOptions, target: str, sim_url: str, environment: str, progress: Progress
) -> SweepBenchReport:
    settings = Settings(
        payment_svc_target=target,
        token=options.reconciler_token,
        stripe_api_base=sim_url,
        reconciler_id=f"sweep-bench-{os.getpid()}",
        metrics_listen="127.0.0.1:0",
        grace_seconds=0,
        lease_seconds=600,
        page_size=options.page_size,
        concurrency=options.concurrency,
    )
    async with aiohttp.ClientSession(sim_url) as http:
        # Webhooks stay dropped until the sweep is over: a settlement event
        # delivered meanwhile would do the sweep's work.
        await _sim_post(http, "/_sim/faults", {"webhook_drop_rate": 1.0})
        try:
            started = time.perf_counter()
            try:
                await _stale_payments(options, target, http, progress)
            except (PaymentsClientError, aiohttp.ClientError) as exc:
                raise BenchError(f"setup failed: {exc}") from exc
            setup = time.perf_counter() - started
            progress(f"sweeping (concurrency {options.concurrency}, pages of {options.page_size})")
            async with open_context(settings) as ctx:
                report = await Runner(ctx).run("sweep")
        finally:
            await _sim_post(http, "/_sim/faults", {"webhook_drop_rate": 0.0})
    return SweepBenchReport(
        environment=environment,
        payments=options.payments,
        setup_seconds=setup,
        seconds=report.seconds,
        scanned=report.scanned,
        fixed=report.fixed,
        errors=report.errors,
        succeeded=report.succeeded,
    )


@contextlib.asynccontextmanager
async def _fresh_database(server_dsn: str, progress: Progress) -> AsyncIterator[str]:
    name = f"payments_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    progress(f"created database {name}")
    try:
        yield urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def _own_stack(options: SweepBenchOptions, progress: Progress) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        database_url = None
        if options.database_url:
            database_url = await cleanup.enter_async_context(
                _fresh_database(options.database_url, progress)
            )
        logs = options.logs_dir or tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            StackConfig.on_free_ports(
                database_url=database_url,
                data_dir=tmp,
                log_dir=logs,
                extra_env={"LOG_LEVEL": "WARNING"},
            )
        )
        progress("starting payment-svc, webhook-gateway and provider-sim")
        cleanup.callback(stack.stop)
        try:
            # Not stack.start(): no scheduled reconciler beside the measured sweep.
            await asyncio.to_thread(stack.start_database)
            await asyncio.to_thread(stack.start_payment_svc)
            await asyncio.to_thread(stack.start_webhook_gateway)
            await asyncio.to_thread(stack.start_provider_sim)
            await wait_serving(stack.grpc_target, 60)
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise BenchError(f"the stack did not start: {exc} (logs in {logs})") from exc
        yield stack


async def run(options: SweepBenchOptions, progress: Progress) -> SweepBenchReport:
    if options.target is not None:
        if options.sim_url is None:
            raise BenchError("--target needs --sim-url (the stack's provider-sim)")
        return await sweep_bench(
            options, options.target, options.sim_url, f"stack at {options.target}", progress
        )
    async with _own_stack(options, progress) as stack:
        where = "given Postgres server" if options.database_url else "embedded Postgres"
        return await sweep_bench(
            options, stack.grpc_target, stack.sim_url, f"own stack ({where})", progress
        )


def run_sweep_bench(options: SweepBenchOptions, progress: Progress) -> SweepBenchReport:
    """Synchronous entry point (its own event loop: uvloop, as the reconciler's),
    for `payments bench`."""
    return uvloop.run(run(options, progress))


def main(args: argparse.Namespace) -> int:
    # The measured sweep runs in this process: its logs go to stderr, warnings up.
    import logging

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    if args.payments < 1:
        print("payments bench-sweep: --payments must be at least 1", file=sys.stderr)
        return 2
    options = SweepBenchOptions(
        payments=args.payments,
        target=args.target,
        sim_url=args.sim_url,
        concurrency=args.concurrency,
        page_size=args.page_size,
        setup_concurrency=args.setup_concurrency,
        database_url=args.database_url,
        logs_dir=args.logs_dir,
    )

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    try:
        report = run_sweep_bench(options, progress)
    except (BenchError, ValueError) as exc:
        print(f"payments bench-sweep: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(
            f"sweep: {report.scanned} payments in {report.seconds:.2f}s = "
            f"{report.rate:.0f} payments/s (fixed {report.fixed}, errors {report.errors}; "
            f"{report.environment}; setup {report.setup_seconds:.1f}s)"
        )
    return 0 if report.succeeded and report.errors == 0 else 1
