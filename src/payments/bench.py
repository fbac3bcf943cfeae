"""`payments bench`: payments per second through the whole stack, against what
the same SQL alone allows on the same Postgres.

    environment   --target: a running stack; otherwise a Stack of our own in a
                  temp dir on free ports, logs to files, on a fresh database
                  (payments_bench_<random> on DATABASE_URL's server, dropped
                  afterwards; or an embedded Postgres)
    phases        closed loop -> open loop -> raw SQL (loadgen.py), each with
                  a warm-up, on one uvloop event loop of their own
    report        a table, or JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import uvloop
from rich.table import Table

from payment_svc.adapters import migrate
from payment_svc.adapters.db import Database
from payment_svc.adapters.store import PaymentStore
from payment_svc.settings import Settings
from payments import loadgen
from payments.devdb import free_port
from payments.loadgen import PhaseResult, Window
from payments.stack import DEV_TOKENS, Stack, StackConfig, wait_serving
from payments.supervisor import describe_failure, redact_dsn

Progress = Callable[[str], None]


class BenchError(Exception):
    """The benchmark could not run (the stack did not start, no database)."""


@dataclass(frozen=True)
class BenchOptions:
    target: str | None = None  # None: start a stack of our own
    token: str = DEV_TOKENS["merchant"]
    database_url: str | None = None  # the server for fresh databases; None: embedded
    duration: float = 10.0
    warmup: float = 2.0
    concurrency: int = 64
    rate: float = 400.0
    channels: int = 4
    timeout: float = 10.0
    # Connections of payment-svc's pool (own stack) and of the raw phase's.
    db_pool_max: int = Settings.db_pool_max
    logs_dir: Path | None = None  # own stack: keep its logs here (default: deleted)
    amount: int = 1999
    currency: str = "USD"
    payment_method: str = "pm_card_visa"


@dataclass(frozen=True)
class Environment:
    grpc_target: str
    raw_dsn: str | None  # where the raw SQL phase runs; None: it is skipped
    description: str


@dataclass
class BenchReport:
    options: BenchOptions
    environment: Environment
    cpu_count: int | None
    postgres: dict[str, Any] | None
    closed_loop: PhaseResult
    open_loop: PhaseResult
    raw_sql: PhaseResult | None

    @property
    def full_flow_to_raw(self) -> float | None:
        if self.raw_sql is None or self.raw_sql.per_second == 0:
            return None
        return self.closed_loop.per_second / self.raw_sql.per_second

    def to_json(self) -> dict[str, Any]:
        ratio = self.full_flow_to_raw
        options = asdict(self.options)
        options.pop("token")
        options["logs_dir"] = str(self.options.logs_dir) if self.options.logs_dir else None
        if self.options.database_url:
            options["database_url"] = redact_dsn(self.options.database_url)
        return {
            "environment": self.environment.description,
            "target": self.environment.grpc_target,
            "cpu_count": self.cpu_count,
            "postgres": self.postgres,
            "options": options,
            "closed_loop": {"concurrency": self.options.concurrency, **self.closed_loop.to_json()},
            "open_loop": {
                "target_rate": self.options.rate,
                "sent": self.open_loop.sent,
                **self.open_loop.to_json(),
            },
            "raw_sql": (
                {"concurrency": self.options.concurrency, **self.raw_sql.to_json()}
                if self.raw_sql is not None
                else None
            ),
            "full_flow_to_raw": round(ratio, 3) if ratio is not None else None,
        }


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _create_database(server_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop_database(server_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _log_tails(log_dir: Path, lines: int = 20) -> str:
    parts = []
    for path in sorted(log_dir.glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts)


@contextlib.contextmanager
def _fresh_database(
    runner: asyncio.Runner, server_dsn: str, progress: Progress, *, migrated: bool
) -> Iterator[str]:
    name = f"payments_bench_{secrets.token_hex(4)}"
    progress(f"creating database {name}")
    runner.run(_create_database(server_dsn, name))
    dsn = _with_database(server_dsn, name)
    try:
        if migrated:
            runner.run(migrate.migrate(dsn))
        yield dsn
    finally:
        runner.run(_drop_database(server_dsn, name))
        progress(f"dropped database {name}")


@contextlib.contextmanager
def _own_stack(
    options: BenchOptions, runner: asyncio.Runner, progress: Progress
) -> Iterator[Environment]:
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="payments-bench-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        database_url = None
        if options.database_url:
            # The stack migrates it (payment-svc migrate reads DATABASE_URL).
            fresh = _fresh_database(runner, options.database_url, progress, migrated=False)
            database_url = cleanup.enter_context(fresh)
        logs = options.logs_dir or tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stack = Stack(
            StackConfig(
                database_url=database_url,
                data_dir=tmp,
                sim_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                gateway_port=free_port(),
                log_dir=logs,
                extra_env={"DB_POOL_MAX": str(options.db_pool_max)},
            )
        )
        progress("starting the stack" + ("" if database_url else " on an embedded Postgres"))
        cleanup.callback(stack.stop)
        try:
            stack.start()
            runner.run(wait_serving(stack.grpc_target, 60))
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            tails = _log_tails(logs)
            raise BenchError(f"the stack did not start: {describe_failure(exc)}\n{tails}") from exc
        where = "given Postgres server" if database_url else "embedded Postgres"
        yield Environment(stack.grpc_target, stack.database_url, f"own stack ({where})")


@contextlib.contextmanager
def environment(
    options: BenchOptions, runner: asyncio.Runner, progress: Progress
) -> Iterator[Environment]:
    if options.target is None:
        with _own_stack(options, runner, progress) as env:
            yield env
    elif options.database_url:
        with _fresh_database(runner, options.database_url, progress, migrated=True) as dsn:
            yield Environment(options.target, dsn, "running stack")
    else:
        yield Environment(options.target, None, "running stack (no DATABASE_URL: raw SQL skipped)")


async def postgres_settings(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        fsync = await conn.fetchval("SHOW fsync")
        synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "version": version,
        "fsync": fsync,
        "synchronous_commit": synchronous_commit,
        "durable_commits": fsync == "on" and synchronous_commit != "off",
    }


async def _open_channels(target: str, count: int, timeout: float) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: each gets its own connection
    # (channels with equal arguments would otherwise share one).
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, count))
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), timeout)
    except TimeoutError:
        await asyncio.gather(*(c.close() for c in channels))
        raise BenchError(f"cannot connect to payment-svc at {target} in {timeout:g}s") from None
    return channels


async def _grpc_phases(
    options: BenchOptions, target: str, progress: Progress
) -> tuple[PhaseResult, PhaseResult]:
    channels = await _open_channels(target, options.channels, options.timeout)
    try:
        callers = loadgen.create_callers(channels, options.token, options.timeout)
        fields = (options.amount, options.currency, options.payment_method)
        progress(f"closed loop: {options.concurrency} callers, {_phase_time(options)}")
        closed = await loadgen.closed_loop(
            callers,
            loadgen.CreateRequests("closed", *fields),
            options.concurrency,
            Window.after_warmup(options.warmup, options.duration),
        )
        progress(f"open loop: {options.rate:g} payments/s, {_phase_time(options)}")
        opened = await loadgen.open_loop(
            callers,
            loadgen.CreateRequests("open", *fields),
            options.rate,
            Window.after_warmup(options.warmup, options.duration),
            max_in_flight=max(options.concurrency, int(options.rate * options.timeout)),
        )
        return closed, opened
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def _raw_phase(options: BenchOptions, dsn: str, progress: Progress) -> PhaseResult:
    progress(f"raw SQL: {options.concurrency} callers, {_phase_time(options)}")
    # The service's pool size, so the raw limit is measured with as many connections.
    db = Database(dsn, timeout=options.timeout, max_size=options.db_pool_max)
    await db.open()
    try:
        return await loadgen.raw_sql(
            PaymentStore(db),
            options.concurrency,
            Window.after_warmup(options.warmup, options.duration),
            amount=options.amount,
            currency=options.currency,
            payment_method=options.payment_method,
        )
    finally:
        await db.close()


def _phase_time(options: BenchOptions) -> str:
    return f"warm-up {options.warmup:g}s, measuring {options.duration:g}s"


async def _phases(options: BenchOptions, env: Environment, progress: Progress) -> BenchReport:
    postgres = await postgres_settings(env.raw_dsn) if env.raw_dsn else None
    closed, opened = await _grpc_phases(options, env.grpc_target, progress)
    raw = await _raw_phase(options, env.raw_dsn, progress) if env.raw_dsn else None
    return BenchReport(options, env, os.cpu_count(), postgres, closed, opened, raw)


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_bench(options: BenchOptions, progress: Progress) -> BenchReport:
    """Runs every phase; whatever it started is stopped and removed after."""
    # SIGTERM unwinds like Ctrl-C, so the stack and the database are cleaned up.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            environment(options, runner, progress) as env,
        ):
            return runner.run(_phases(options, env, progress))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ms(micros: float) -> str:
    return f"{micros / 1000:.2f}"


def _errors(result: PhaseResult) -> str:
    return ", ".join(f"{code}={n}" for code, n in result.errors.most_common()) or "0"


def report_table(report: BenchReport) -> Table:
    o = report.options
    table = Table(title=f"payments bench: {report.environment.description}")
    for name in ("phase", "load", "payments/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        table.add_column(name, justify="left" if name in ("phase", "load", "errors") else "right")
    rows: list[tuple[str, str, PhaseResult | None]] = [
        ("closed loop, full flow", f"{o.concurrency} callers", report.closed_loop),
        ("open loop, full flow", f"{o.rate:g}/s offered", report.open_loop),
        ("raw SQL (asyncpg)", f"{o.concurrency} callers", report.raw_sql),
    ]
    for phase, load, result in rows:
        if result is None:
            table.add_row(phase, load, "skipped", "", "", "", "", "")
            continue
        lat = result.latency_us()
        table.add_row(
            phase,
            load,
            f"{result.per_second:.1f}",
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            _errors(result),
        )
    return table


def summary_lines(report: BenchReport) -> list[str]:
    ratio = report.full_flow_to_raw
    pg = report.postgres
    durable = (
        f"Postgres {pg['version']}: fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']} ({'durable' if pg['durable_commits'] else 'NOT durable'}"
        " commits)"
        if pg
        else "Postgres settings unknown (no database to ask)"
    )
    lines = [
        *(
            f"first {code} error, {phase}: {message}"
            for phase, result in (
                ("closed loop", report.closed_loop),
                ("open loop", report.open_loop),
                ("raw SQL", report.raw_sql),
            )
            if result is not None
            for code, message in result.error_samples.items()
        ),
        f"full flow / raw SQL: {ratio:.2f} (closed loop payments/s over raw payments/s)"
        if ratio is not None
        else "full flow / raw SQL: n/a",
        f"open loop: {report.open_loop.sent} sent in the window at {report.options.rate:g}/s, "
        f"{report.open_loop.per_second:.1f}/s completed",
        f"CPU cores: {report.cpu_count} (client, services and Postgres share them)",
        durable,
        f"target: {report.environment.grpc_target}; statuses: "
        + ", ".join(f"{k}={v}" for k, v in report.closed_loop.statuses.most_common()),
    ]
    return lines
