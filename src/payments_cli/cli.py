"""The operator CLI.

    payments up                          run the whole stack in the foreground
    payments pay / get / events / list   call a running payment-svc
    payments refund / refunds            refund a payment (all or part); list its refunds
    payments watch [--from CURSOR]       the change feed: updates as they commit
    payments reconcile                   one reconciliation pass now (as `reconciler --once`)
    payments discrepancies [resolve]     what reconciliation could not fix; resolve with a note
    payments quarantine [replay ID]      provider events that could not be processed; replay one
    payments correct ID --reason TEXT    recompute a payment from its refunds and disputes
    payments bench                       measure a stack (payments, webhooks) against raw SQL
    payments soak                        payments under injected faults, then the money checked

Exit codes: 0 done, 1 the call or the stack failed (error on stderr), 2 usage.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import structlog
import typer
from rich.text import Text

from payments.client import DEFAULT_TARGET, PaymentsClient, ProviderSyncClient
from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import webhooks_pb2 as wh
from payments_cli import render

T = TypeVar("T")

app = typer.Typer(
    help="Operate the payments platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Target = Annotated[
    str,
    typer.Option("--target", envvar="PAYMENTS_TARGET", help="payment-svc gRPC address"),
]
Token = Annotated[
    str,
    typer.Option("--token", envvar="PAYMENTS_TOKEN", help="bearer token of a merchant"),
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
# payments_dev.stack.DEV_TOKENS["merchant"], not imported from there: the stack
# module loads pgserver, too slow and noisy for a one-call command.
DEFAULT_TOKEN = "dev-merchant-token"


# Longer than payment-svc's PROVIDER_TIMEOUT_SECONDS (10) and the database
# time around the provider call, so that a slow provider's outcome (UNKNOWN,
# recorded) comes back rather than DEADLINE_EXCEEDED.
PAY_TIMEOUT_SECONDS = 15.0


def _call(
    target: str,
    token: str,
    as_json: bool,
    fn: Callable[[PaymentsClient], Awaitable[T]],
    timeout: float = 10.0,
) -> T:
    async def go() -> T:
        async with PaymentsClient(target, token, timeout=timeout) as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except PaymentsClientError as exc:
        render.error(exc, as_json=as_json)
        raise typer.Exit(1) from None


def _metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--metadata")
        metadata[key] = value
    return metadata


_STATUSES = {
    name.removeprefix("PAYMENT_STATUS_"): value
    for name, value in pb.PaymentStatus.items()
    if value != pb.PAYMENT_STATUS_UNSPECIFIED
}


def _status(name: str) -> pb.PaymentStatus.ValueType:
    """SUCCEEDED, succeeded or PAYMENT_STATUS_SUCCEEDED."""
    value = _STATUSES.get(name.upper().removeprefix("PAYMENT_STATUS_"))
    if value is None:
        choices = ", ".join(_STATUSES)
        raise typer.BadParameter(f"{name!r} is not one of {choices}", param_hint="--status")
    return value


def _instant(text: str | None, option: str) -> datetime | None:
    """ISO 8601; without an offset the time is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=option) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# What `up`, `bench` and `soak` need beyond a production install (the image has
# none of them): the embedded Postgres, process inspection, latency histograms.
DEV_INSTALL = "pip install 'payments-platform[dev]'"
_DEV_MODULES = ("psutil", "pgserver", "hdrh")


def require_dev_tools(command: str) -> None:
    """Exit 2 with one line saying what to install when a development-only
    command runs from a production install (no traceback)."""
    missing = []
    for name in _DEV_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        message = (
            f"payments {command}: needs the development tools "
            f"({', '.join(missing)} missing): {DEV_INSTALL}"
        )
        render.stderr.print(Text(message, style="red"), soft_wrap=True)
        raise typer.Exit(2)


def _quiet_imports() -> None:
    # pgserver (through payments_dev.devdb) asks platformdirs for a runtime dir at
    # import, which warns on every run where XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


@app.command()
def pay(
    amount: Annotated[
        int,
        # int64 on the wire; the service checks the business range (1..99,999,999).
        typer.Option(min=-(2**63), max=2**63 - 1, help="minor units (cents for USD)"),
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, upper case")],
    payment_method: Annotated[str, typer.Option(help="provider token, e.g. pm_card_visa")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="default: a fresh UUID (a retry must reuse it)")
    ] = None,
    description: str = "",
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="key=value, repeatable")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds to wait (the call's deadline); payment-svc answers within it, "
            "UNKNOWN when the provider could not answer in time",
        ),
    ] = PAY_TIMEOUT_SECONDS,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Create a payment: recorded first, then attempted with the provider."""
    key = idempotency_key or str(uuid.uuid4())
    extra = _metadata(metadata or [])
    payment = _call(
        target,
        token,
        as_json,
        lambda c: c.create_payment(key, amount, currency, payment_method, description, extra),
        timeout=timeout,
    )
    if as_json:
        render.print_json(render.to_dict(payment))
    else:
        render.payment(payment)


@app.command()
def get(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Show one payment."""
    payment = _call(target, token, as_json, lambda c: c.get_payment(payment_id))
    if as_json:
        render.print_json(render.to_dict(payment))
    else:
        render.payment(payment)


@app.command()
def events(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Show a payment's history, oldest first."""
    history = _call(target, token, as_json, lambda c: c.list_payment_events(payment_id))
    if as_json:
        render.print_json({"events": [render.to_dict(e) for e in history]})
    else:
        render.events(history)


@app.command()
def refund(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    amount: Annotated[
        int,
        # int64 on the wire; the service checks the business range (0..99,999,999).
        typer.Option(min=-(2**63), max=2**63 - 1, help="minor units; 0: all that remains"),
    ] = 0,
    reason: Annotated[
        str, typer.Option(help="duplicate, fraudulent, requested_by_customer, or empty")
    ] = "",
    idempotency_key: Annotated[
        str | None, typer.Option(help="default: a fresh UUID (a retry must reuse it)")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds to wait (the call's deadline); UNKNOWN when the provider could "
            "not answer in time",
        ),
    ] = PAY_TIMEOUT_SECONDS,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Refund a succeeded payment, in whole or in part: recorded first, then
    sent to the provider."""
    key = idempotency_key or str(uuid.uuid4())
    made = _call(
        target,
        token,
        as_json,
        lambda c: c.refund_payment(payment_id, key, amount, reason),
        timeout=timeout,
    )
    if as_json:
        render.print_json(render.to_dict(made))
    else:
        render.refund(made)


@app.command()
def refunds(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Show a payment's refunds, oldest first."""
    listed = _call(target, token, as_json, lambda c: c.list_refunds(payment_id))
    if as_json:
        render.print_json({"refunds": [render.to_dict(r) for r in listed]})
    else:
        render.refunds(listed)


@app.command()
def watch(
    from_cursor: Annotated[
        str, typer.Option("--from", help="resume after this cursor (default: the oldest kept)")
    ] = "",
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Print the change feed's updates as they commit (one JSON object a line
    with --json), until interrupted; a cut stream is resumed from the last
    cursor printed."""

    async def go() -> None:
        async with PaymentsClient(target, token) as client:
            async for update in client.watch_updates(from_cursor):
                if as_json:
                    render.print_json_line(render.to_dict(update))
                else:
                    render.update(update)

    try:
        asyncio.run(go())
    except PaymentsClientError as exc:
        render.error(exc, as_json=as_json)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("list")
def list_(
    status: Annotated[
        list[str] | None, typer.Option("--status", help="e.g. SUCCEEDED; repeatable")
    ] = None,
    created_after: Annotated[
        str | None, typer.Option(help="ISO 8601, inclusive (UTC without offset)")
    ] = None,
    created_before: Annotated[str | None, typer.Option(help="ISO 8601, exclusive")] = None,
    page_size: Annotated[
        int, typer.Option(min=0, max=2**31 - 1, help="1..100; 0: the server's default")
    ] = 0,
    page_token: Annotated[str, typer.Option(help="from the previous page")] = "",
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """List payments, newest first, one page at a time."""
    statuses = [_status(s) for s in status or []]
    after = _instant(created_after, "--created-after")
    before = _instant(created_before, "--created-before")
    items, next_token = _call(
        target,
        token,
        as_json,
        lambda c: c.list_payments(statuses, after, before, page_size, page_token),
    )
    if as_json:
        render.print_json(
            {"payments": [render.to_dict(p) for p in items], "next_page_token": next_token}
        )
    else:
        render.payments(items, next_token)


@app.command()
def up(
    data_dir: Annotated[
        Path,
        typer.Option(
            help="provider-sim's books live here, and the embedded Postgres when "
            "DATABASE_URL is unset"
        ),
    ] = Path(".payments"),
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="use this Postgres instead")
    ] = None,
    grpc_port: Annotated[int, typer.Option(help="payment-svc gRPC")] = 50051,
    sim_port: Annotated[int, typer.Option(help="provider-sim HTTP")] = 12111,
    metrics_port: Annotated[int, typer.Option(help="payment-svc /metrics")] = 9101,
    gateway_port: Annotated[int, typer.Option(help="webhook-gateway HTTP")] = 8080,
    reconciler_port: Annotated[int, typer.Option(help="reconciler /metrics")] = 9102,
    dispatcher_port: Annotated[int, typer.Option(help="webhook-dispatcher /metrics")] = 9104,
    pg_port: Annotated[
        int | None, typer.Option(help="embedded Postgres port (default: a free one)")
    ] = None,
    crash_limit: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PAYMENTS_UP_CRASH_LIMIT",
            help="a child crashing more often than this within --crash-window stops the stack",
        ),
    ] = 5,
    crash_window: Annotated[
        float,
        typer.Option(min=1.0, envvar="PAYMENTS_UP_CRASH_WINDOW", help="seconds"),
    ] = 60.0,
    log_format: Annotated[
        str,
        typer.Option(
            help="the children's logs: console (aligned, coloured, for a person), json (as "
            "they write them), or auto (console on a terminal, else json)",
        ),
    ] = "auto",
) -> None:
    """Run every process of the stack in the foreground, restarting a child that
    dies (with backoff); Ctrl-C stops them all, callers first."""
    if log_format not in ("auto", "console", "json"):
        raise typer.BadParameter("choose auto, console or json", param_hint="--log-format")
    if log_format == "auto":
        log_format = "console" if sys.stdout.isatty() else "json"
    _quiet_imports()
    require_dev_tools("up")
    from payments_dev import supervisor
    from payments_dev.stack import SIM_STATE_FILE, StackConfig

    config = StackConfig(
        database_url=database_url or None,
        data_dir=data_dir,
        embedded_pg_port=pg_port,
        sim_port=sim_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        gateway_port=gateway_port,
        reconciler_port=reconciler_port,
        dispatcher_port=dispatcher_port,
        log_dir=None,
        sim_state=data_dir / SIM_STATE_FILE,
        log_format=log_format,
    )
    policy = supervisor.RestartPolicy(max_crashes=crash_limit, window_seconds=crash_window)
    code = supervisor.run(config, render.stdout, dict(os.environ), policy=policy)
    raise typer.Exit(code)


_BENCH_PHASES = ("payments", "webhooks", "refunds", "raw", "feed")


def _phases(text: str) -> tuple[str, ...]:
    """Comma separated, in any order; run in the benchmark's own order."""
    chosen = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = chosen - set(_BENCH_PHASES)
    if unknown:
        raise typer.BadParameter(
            f"unknown phase {', '.join(sorted(unknown))}; choose from {', '.join(_BENCH_PHASES)}",
            param_hint="--phases",
        )
    if not chosen - {"raw"}:
        raise typer.BadParameter(
            "name payments, webhooks, refunds or feed (raw is the raw SQL limit of the flows "
            "chosen)",
            param_hint="--phases",
        )
    return tuple(name for name in _BENCH_PHASES if name in chosen)


@app.command()
def bench(
    target: Annotated[
        str | None,
        typer.Option(help="benchmark this running stack (default: start one in a temp dir)"),
    ] = None,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="with --target: its webhook-gateway [default: http://127.0.0.1:8080]"),
    ] = None,
    token: Token = DEFAULT_TOKEN,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="DATABASE_URL",
            help="Postgres server for a fresh payments_bench_* database (default: embedded)",
        ),
    ] = None,
    phases: Annotated[
        str,
        typer.Option(
            help="comma separated: payments (gRPC), webhooks (gateway), refunds (gRPC), "
            "raw (raw SQL of each), feed (payments at --rate without and with --watchers "
            "streams)"
        ),
    ] = "payments,webhooks,refunds,raw",
    duration: Annotated[float, typer.Option(min=0.1, help="seconds measured per phase")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="seconds before each phase")] = 2.0,
    concurrency: Annotated[
        int, typer.Option(min=1, help="closed-loop callers and senders, raw callers")
    ] = 64,
    rate: Annotated[float, typer.Option(min=0.1, help="open-loop payments per second")] = 400.0,
    webhook_rate: Annotated[
        float, typer.Option(min=0.1, help="open-loop webhook events per second")
    ] = 500.0,
    webhook_secret: Annotated[
        str,
        typer.Option(
            envvar="PAYMENTS_WEBHOOK_SECRET",
            help="the secret the gateway verifies with (one of its WEBHOOK_SECRETS)",
        ),
    ] = "whsec_dev",
    webhook_payments: Annotated[
        int, typer.Option(min=1, help="payments the events of one webhook phase are about")
    ] = 500,
    payment_webhooks: Annotated[
        bool,
        typer.Option(
            help="own stack: provider-sim delivers the payments phase's webhooks too "
            "(default: off; the webhooks phase measures that flow)"
        ),
    ] = False,
    refund_rate: Annotated[
        float, typer.Option(min=0.1, help="open-loop refunds per second")
    ] = 200.0,
    refund_payments: Annotated[
        int, typer.Option(min=1, help="succeeded payments the refunds of one phase refund")
    ] = 500,
    channels: Annotated[int, typer.Option(min=1, help="gRPC connections")] = 4,
    watchers: Annotated[
        int, typer.Option(min=1, help="feed phase: WatchPaymentUpdates streams")
    ] = 50,
    logs_dir: Annotated[
        Path | None, typer.Option(help="keep the own stack's logs here (default: deleted)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Payments, webhook events and refunds per second and latency: closed
    loop, open loop, and the raw SQL limit."""
    chosen = _phases(phases)
    if gateway_url is not None and target is None:
        raise typer.BadParameter(
            "only with --target (an own stack has its own gateway)", param_hint="--gateway-url"
        )
    if not webhook_secret:
        raise typer.BadParameter("must not be empty", param_hint="--webhook-secret")
    # Heavy imports (asyncpg, the service's store) only for this command.
    _quiet_imports()
    require_dev_tools("bench")
    from payments_dev.bench import (
        DEFAULT_GATEWAY_URL,
        BenchError,
        BenchOptions,
        report_table,
        run_bench,
        summary_lines,
    )

    # The raw phases run the service's stores in this process: their structlog
    # lines go to stderr, errors only, so that stdout stays the report.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )

    options = BenchOptions(
        target=target,
        token=token,
        database_url=database_url or None,
        phases=chosen,
        duration=duration,
        warmup=warmup,
        concurrency=concurrency,
        rate=rate,
        channels=channels,
        logs_dir=logs_dir,
        gateway_url=gateway_url or DEFAULT_GATEWAY_URL,
        webhook_rate=webhook_rate,
        webhook_secret=webhook_secret,
        webhook_payments=webhook_payments,
        payment_webhooks=payment_webhooks,
        refund_rate=refund_rate,
        refund_payments=refund_payments,
        watchers=watchers,
    )

    def progress(line: str) -> None:
        render.stderr.print(Text(f"bench: {line}", style="dim"), soft_wrap=True)

    try:
        report = run_bench(options, progress)
    except BenchError as exc:
        render.stderr.print(Text(f"bench: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        render.print_json(report.to_json())
    else:
        render.stdout.print(report_table(report))
        for line in summary_lines(report):
            render.stdout.print(Text(line), soft_wrap=True)
    flows = [f for f in (report.payments, report.webhooks, report.refunds) if f is not None]
    if any(f.closed_loop.finished_ok == 0 or f.open_loop.finished_ok == 0 for f in flows):
        render.stderr.print(Text("bench: nothing completed in a phase", style="red"))
        raise typer.Exit(1)
    check = report.webhooks.check if report.webhooks else None
    if check is not None and check.missing:
        message = f"bench: {check.missing} acknowledged webhook events are not in the inbox"
        render.stderr.print(Text(message, style="red"))
        raise typer.Exit(1)


@app.command()
def soak(
    payments: Annotated[int, typer.Option(min=10, help="payments to make")] = 200,
    seed: Annotated[int, typer.Option(help="seeds every choice; a failing seed reproduces")] = 1,
    rate: Annotated[float, typer.Option(min=0.1, help="payments started per second")] = 20.0,
    concurrency: Annotated[int, typer.Option(min=1, help="callers in flight at most")] = 32,
    partial_refunds: Annotated[
        bool,
        typer.Option(help="refund some succeeded payments in part at the provider"),
    ] = True,
    refunds: Annotated[
        bool,
        typer.Option(
            help="refund other succeeded payments through our API, provider-sim restarted "
            "meanwhile, some refunds failing at the provider"
        ),
    ] = True,
    keep: Annotated[
        Path | None,
        typer.Option(help="keep the stack's logs and data here (a failed run keeps them anyway)"),
    ] = None,
) -> None:
    """Payments under faults (webhooks lost, duplicated, reordered; provider
    timeouts; payment-svc SIGKILLed twice; Postgres crash-restarted), one
    reconciliation pass, then the money checked against the provider. Exit 1
    when an invariant fails."""
    _quiet_imports()
    require_dev_tools("soak")
    from payments_dev.soak import SoakError, SoakOptions, run_soak

    if keep is not None and keep.exists():
        raise typer.BadParameter(f"{keep} exists already", param_hint="--keep")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )
    options = SoakOptions(
        payments=payments,
        seed=seed,
        rate=rate,
        concurrency=concurrency,
        keep_dir=keep,
        partial_refunds=partial_refunds,
        refunds=refunds,
    )

    def progress(line: str) -> None:
        render.stderr.print(Text(f"soak: {line}", style="dim"), soft_wrap=True)

    try:
        report = run_soak(options, progress)
    except SoakError as exc:
        render.stderr.print(Text(f"soak: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    for line in report.lines():
        render.stdout.print(Text(line), soft_wrap=True, highlight=False)
    if not report.passed:
        raise typer.Exit(1)


@app.command("bench-sweep")
def bench_sweep(
    payments: Annotated[int, typer.Option(help="stale payments to sweep")] = 10_000,
    target: Annotated[
        str | None, typer.Option(help="a running payment-svc (default: an own stack)")
    ] = None,
    sim_url: Annotated[str | None, typer.Option(help="with --target: its provider-sim URL")] = None,
    concurrency: Annotated[int, typer.Option(help="provider fetches in flight")] = 16,
    page_size: Annotated[int, typer.Option(help="payments per page (1..100)")] = 100,
    setup_concurrency: Annotated[int, typer.Option()] = 64,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="DATABASE_URL", help="Postgres server for a fresh database (default: embedded)"
        ),
    ] = None,
    logs_dir: Annotated[Path | None, typer.Option(help="keep the own stack's logs here")] = None,
    as_json: Json = False,
) -> None:
    """The reconciler's sweep rate: stale payments reconciled against
    provider-sim, per second."""
    _quiet_imports()
    require_dev_tools("bench-sweep")
    import argparse

    from payments_dev import sweep_bench

    args = argparse.Namespace(
        payments=payments,
        target=target,
        sim_url=sim_url,
        concurrency=concurrency,
        page_size=page_size,
        setup_concurrency=setup_concurrency,
        database_url=database_url or None,
        logs_dir=logs_dir,
        json=as_json,
    )
    code = sweep_bench.main(args)
    if code:
        raise typer.Exit(code)


# -- reconciliation ------------------------------------------------------------

ReconcilerToken = Annotated[
    str,
    typer.Option(
        "--token", envvar="PAYMENTS_RECONCILER_TOKEN", help="bearer token of the reconciler"
    ),
]
# payments_dev.stack.DEV_TOKENS["reconciler"] (not imported, as DEFAULT_TOKEN).
DEFAULT_RECONCILER_TOKEN = "dev-reconciler-token"
_KINDS = {
    name.removeprefix("DISCREPANCY_KIND_"): value
    for name, value in sync.DiscrepancyKind.items()
    if value != sync.DISCREPANCY_KIND_UNSPECIFIED
}


def _kind(name: str) -> sync.DiscrepancyKind.ValueType:
    """STUCK_PAYMENT, stuck_payment or DISCREPANCY_KIND_STUCK_PAYMENT."""
    value = _KINDS.get(name.upper().removeprefix("DISCREPANCY_KIND_"))
    if value is None:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(_KINDS)}", param_hint="--kind")
    return value


def _sync_call(
    target: str, token: str, as_json: bool, fn: Callable[[ProviderSyncClient], Awaitable[T]]
) -> T:
    async def go() -> T:
        async with ProviderSyncClient(target, token) as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except PaymentsClientError as exc:
        render.error(exc, as_json=as_json)
        raise typer.Exit(1) from None


@app.command()
def reconcile(
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    stripe_api_base: Annotated[
        str, typer.Option(envvar="STRIPE_API_BASE", help="the provider (provider-sim or Stripe)")
    ] = "http://127.0.0.1:12111",
    jobs: Annotated[
        str, typer.Option(help="comma separated, run in this order")
    ] = "sweep,catch_up,settlement_diff",
    as_json: Json = False,
) -> None:
    """Run one reconciliation pass now, in this process: each job once, as
    `reconciler --once` does (its other settings come from RECONCILER_* variables).
    Exit 1 when a job could not complete."""
    from reconciler.runner import run_pass
    from reconciler.runs import parse_jobs
    from reconciler.settings import ConfigError, Settings

    try:
        chosen = parse_jobs(jobs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--jobs") from None
    env = {
        **os.environ,
        "PAYMENT_SVC_TARGET": target,
        "RECONCILER_TOKEN": token,
        "STRIPE_API_BASE": stripe_api_base,
    }
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        render.stderr.print(Text(f"error: configuration: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from None
    # The jobs log JSON lines (each discrepancy at ERROR): to stderr, warnings
    # and up, so that stdout stays the summary.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    reports = [r.to_json() for r in asyncio.run(run_pass(settings, chosen))]
    if as_json:
        render.print_json({"runs": reports})
    else:
        render.reconciliation_runs(reports)
    if not all(r["succeeded"] for r in reports):
        raise typer.Exit(1)


discrepancies_app = typer.Typer(
    help="What reconciliation found and could not fix: list (default), or resolve one.",
    invoke_without_command=True,
)
app.add_typer(discrepancies_app, name="discrepancies")


@discrepancies_app.callback()
def discrepancies(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="e.g. UNRECORDED_PROVIDER_PAYMENT; repeatable"),
    ] = None,
    include_resolved: Annotated[bool, typer.Option("--all", help="also the resolved ones")] = False,
    page_size: Annotated[
        int, typer.Option(min=0, max=2**31 - 1, help="0: the server's default")
    ] = 0,
    page_token: Annotated[str, typer.Option(help="from the previous page")] = "",
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    as_json: Json = False,
) -> None:
    """List discrepancies, newest first (open ones unless --all)."""
    if ctx.invoked_subcommand is not None:
        return
    kinds = [_kind(k) for k in kind or []]
    items, next_token = _sync_call(
        target,
        token,
        as_json,
        lambda c: c.list_discrepancies(
            kinds, include_resolved=include_resolved, page_size=page_size, page_token=page_token
        ),
    )
    if as_json:
        render.print_json(
            {"discrepancies": [render.to_dict(d) for d in items], "next_page_token": next_token}
        )
    else:
        render.discrepancies(items, next_token)


@discrepancies_app.command("resolve")
def resolve_discrepancy(
    discrepancy_id: Annotated[str, typer.Argument(help="the id `payments discrepancies` shows")],
    note: Annotated[str, typer.Option(help="what was done about it (required)")],
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    as_json: Json = False,
) -> None:
    """Mark a discrepancy resolved, saying what was done about it."""
    if not note.strip():
        raise typer.BadParameter("say what was done about it", param_hint="--note")
    resolved = _sync_call(
        target, token, as_json, lambda c: c.resolve_discrepancy(discrepancy_id, note)
    )
    if as_json:
        render.print_json(render.to_dict(resolved))
    else:
        render.discrepancy(resolved)


@app.command()
def correct(
    payment_id: Annotated[str, typer.Argument(help="the payment to recompute")],
    reason: Annotated[str, typer.Option(help="why (required; kept in its history)")],
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    as_json: Json = False,
) -> None:
    """Recompute a payment's status and amount_reversed from its refunds and
    disputes (books older code left wrong), if the provider's books agree;
    recorded in its history with source operator and the reason. Exit 1 when
    refused (PROVIDER_BOOKS_DISAGREE: list its refunds first, `payments
    reconcile`)."""
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    payment, changed = _sync_call(
        target, token, as_json, lambda c: c.correct_payment(payment_id, reason)
    )
    if as_json:
        render.print_json({"payment": render.to_dict(payment), "changed": changed})
        return
    render.payment(payment)
    render.stdout.print("corrected" if changed else "already right: nothing changed")


quarantine_app = typer.Typer(
    help="Verified provider events payment-svc could not process (UNPROCESSABLE_PROVIDER_EVENT):"
    " list (default), or replay one once the code is fixed.",
    invoke_without_command=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.callback()
def quarantine(
    ctx: typer.Context,
    include_replayed: Annotated[
        bool, typer.Option("--all", help="also the ones already replayed")
    ] = False,
    page_size: Annotated[int, typer.Option(min=0, max=500, help="0: the server's default")] = 0,
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    as_json: Json = False,
) -> None:
    """List quarantined provider events, newest first (not yet replayed unless --all)."""
    if ctx.invoked_subcommand is not None:
        return
    items = _sync_call(
        target,
        token,
        as_json,
        lambda c: c.list_quarantined_events(include_replayed=include_replayed, page_size=page_size),
    )
    if as_json:
        render.print_json({"events": [render.to_dict(q) for q in items]})
    else:
        render.quarantined(items)


@quarantine_app.command("replay")
def replay_quarantined(
    quarantine_id: Annotated[str, typer.Argument(help="the id `payments quarantine` shows")],
    target: Target = DEFAULT_TARGET,
    token: ReconcilerToken = DEFAULT_RECONCILER_TOKEN,
    as_json: Json = False,
) -> None:
    """Apply a quarantined event again; exit 1 when it is still unprocessable."""
    reply = _sync_call(target, token, as_json, lambda c: c.replay_quarantined_event(quarantine_id))
    if as_json:
        render.print_json(render.to_dict(reply))
    else:
        render.replayed(reply)
    if reply.still_quarantined:
        raise typer.Exit(1)


endpoints_app = typer.Typer(
    help="Your webhook endpoints (signed pushes of your payment updates): list (default),"
    " add, enable, disable, rotate, delete.",
    invoke_without_command=True,
)
app.add_typer(endpoints_app, name="endpoints")
EndpointId = Annotated[str, typer.Argument(help="we_...")]


def _show_endpoint(e: wh.WebhookEndpoint, as_json: bool) -> None:
    if as_json:
        render.print_json(render.to_dict(e))
    else:
        render.endpoint(e)


@endpoints_app.callback()
def endpoints(
    ctx: typer.Context,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """List your webhook endpoints, oldest first (secrets are never shown again)."""
    if ctx.invoked_subcommand is not None:
        return
    items = _call(target, token, as_json, lambda c: c.list_webhook_endpoints())
    if as_json:
        render.print_json({"endpoints": [render.to_dict(e) for e in items]})
    else:
        render.endpoints(items)


@endpoints_app.command("add")
def endpoints_add(
    url: Annotated[str, typer.Argument(help="https://... (development: http to loopback too)")],
    description: Annotated[str, typer.Option(help="at most 500 characters")] = "",
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Register an endpoint; prints its secret, once."""
    created = _call(target, token, as_json, lambda c: c.create_webhook_endpoint(url, description))
    _show_endpoint(created, as_json)


@endpoints_app.command("enable")
def endpoints_enable(
    endpoint_id: EndpointId,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Enable an endpoint (also one the platform disabled); delivery resumes where it stopped."""
    e = _call(
        target, token, as_json, lambda c: c.update_webhook_endpoint(endpoint_id, enabled=True)
    )
    _show_endpoint(e, as_json)


@endpoints_app.command("disable")
def endpoints_disable(
    endpoint_id: EndpointId,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Stop posting to an endpoint (its updates wait for it to be enabled)."""
    e = _call(
        target, token, as_json, lambda c: c.update_webhook_endpoint(endpoint_id, enabled=False)
    )
    _show_endpoint(e, as_json)


@endpoints_app.command("rotate")
def endpoints_rotate(
    endpoint_id: EndpointId,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """A new secret, printed once; the previous one still signs for 24 hours."""
    e = _call(target, token, as_json, lambda c: c.rotate_webhook_secret(endpoint_id))
    _show_endpoint(e, as_json)


@endpoints_app.command("delete")
def endpoints_delete(
    endpoint_id: EndpointId,
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Delete an endpoint, its pending deliveries and its attempts."""
    _call(target, token, as_json, lambda c: c.delete_webhook_endpoint(endpoint_id))
    if as_json:
        render.print_json({"deleted": endpoint_id})
    else:
        render.stdout.print(f"deleted {endpoint_id}")


@app.command()
def deliveries(
    endpoint_id: EndpointId,
    page_size: Annotated[int, typer.Option(min=0, max=100, help="0: the server's default")] = 0,
    page_token: Annotated[str, typer.Option(help="from the previous page")] = "",
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """An endpoint's delivery attempts, newest first."""
    items, next_token = _call(
        target,
        token,
        as_json,
        lambda c: c.list_webhook_deliveries(endpoint_id, page_size, page_token),
    )
    if as_json:
        render.print_json(
            {"deliveries": [render.to_dict(d) for d in items], "next_page_token": next_token}
        )
    else:
        render.deliveries(items, next_token)


@app.command()
def redeliver(
    endpoint_id: EndpointId,
    after: Annotated[
        str, typer.Option("--after", help="a feed cursor (a delivery's or `watch`'s)")
    ],
    target: Target = DEFAULT_TARGET,
    token: Token = DEFAULT_TOKEN,
    as_json: Json = False,
) -> None:
    """Send again every update after a feed cursor to an endpoint."""
    _call(target, token, as_json, lambda c: c.redeliver_webhooks(endpoint_id, after))
    if as_json:
        render.print_json({"redelivering": endpoint_id, "after": after})
    else:
        render.stdout.print(f"{endpoint_id}: every update after the cursor is sent again")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
