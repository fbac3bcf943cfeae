"""`payments bench`: payments and webhook events per second through the whole
stack, against what the same SQL alone allows on the same Postgres.

    environment   --target (and --gateway-url): a running stack; otherwise a
                  Stack of our own in a temp dir on free ports, logs to files,
                  on a fresh database (payments_bench_<random> on DATABASE_URL's
                  server, dropped afterwards; or an embedded Postgres)
    phases        --phases payments,webhooks,refunds,raw (the default), feed, in order:
                    payments  closed loop -> open loop (gRPC CreatePayment)
                    webhooks  pool -> closed loop, pool -> open loop (signed
                              events POSTed to webhook-gateway)
                    refunds   pool -> closed loop, pool -> open loop (gRPC
                              RefundPayment of 1 minor unit of a pool of
                              succeeded payments; refund_load.py)
                    raw       the raw SQL limit of each flow above
                    feed      payments at --rate without, then with --watchers
                              WatchPaymentUpdates streams (bench_feed.py)
                  each with a warm-up, on one uvloop event loop of their own
                  (loadgen.py); with its own stack, a phase starts once
                  provider-sim has no webhook delivery pending, and after a
                  VACUUM ANALYZE of the database the bench created
    report        a table, or JSON; with its own stack, a check that every
                  acknowledged event is in the inbox
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
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import uvloop
from rich.table import Table

from payment_svc.adapters import migrate
from payment_svc.adapters.db import Database
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.adapters.postgres_uow import PostgresUnitOfWork
from payment_svc.domain.model import parse_payment_id
from payment_svc.settings import Settings
from payments_dev import bench_feed, loadgen, refund_load
from payments_dev.loadgen import PhaseResult, Pool, StripeEvents, Window
from payments_dev.stack import DEV_TOKENS, Stack, StackConfig, redact_dsn, wait_serving
from payments_dev.supervisor import describe_failure
from payments_kit import runtime
from webhook_gateway.app import WEBHOOK_PATH
from webhook_gateway.settings import DEV_SECRET

Progress = Callable[[str], None]

PHASES = ("payments", "webhooks", "refunds", "raw", "feed")
DEFAULT_PHASES = ("payments", "webhooks", "refunds", "raw")
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
# Longest wait for provider-sim's pending deliveries before a phase; past it
# the phase runs anyway (and says so).
SETTLE_TIMEOUT_S = 120.0
MAX_WEBHOOK_CONNECTIONS = 256
# The reconciler of our own stack runs its jobs once at start (on an empty
# database) and not again during the phases: background work on a schedule of
# its own, which would land in some phase's window and not in others.
_QUIET_RECONCILER = {
    f"RECONCILER_{job}_SECONDS": str(24 * 3600) for job in ("SWEEP", "CATCH_UP", "SETTLEMENT")
}


class BenchError(Exception):
    """The benchmark could not run (the stack did not start, no database)."""


@dataclass(frozen=True)
class BenchOptions:
    target: str | None = None  # None: start a stack of our own
    token: str = DEV_TOKENS["merchant"]
    database_url: str | None = None  # the server for fresh databases; None: embedded
    phases: tuple[str, ...] = DEFAULT_PHASES
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
    gateway_url: str = DEFAULT_GATEWAY_URL  # with target; an own stack has its own
    webhook_rate: float = 500.0
    webhook_secret: str = DEV_SECRET
    webhook_payments: int = 500  # the pool of each webhook phase
    # Own stack: provider-sim goes on delivering the webhooks of the payments
    # phase's payments (flow 2 on top of flow 1). Off by default: the payments
    # phase measures the payment flow, the webhooks phase the webhook flow.
    payment_webhooks: bool = False
    refund_rate: float = 200.0
    refund_payments: int = 500  # the pool of each refunds phase
    watchers: int = 50  # the feed phase's streams

    def runs(self, phase: str) -> bool:
        return phase in self.phases


@dataclass(frozen=True)
class Environment:
    grpc_target: str
    gateway_url: str
    raw_dsn: str | None  # where the raw SQL phases run; None: they are skipped
    description: str
    sim_url: str | None = None  # own stack: its deliveries are let finish before a phase
    stack_dsn: str | None = None  # own stack: its database, for the webhook check
    processes: dict[str, int] = field(default_factory=dict)  # own stack: pid by name
    # Whose CPU use is reported per phase: this process (the client), the stack's
    # processes, Postgres when it is local.
    cpu_groups: loadgen.ProcessGroups = field(default_factory=dict)


@dataclass
class FlowResult:
    closed_loop: PhaseResult
    open_loop: PhaseResult
    raw: PhaseResult | None = None

    @property
    def to_raw(self) -> float | None:
        if self.raw is None or self.raw.per_second == 0:
            return None
        return self.closed_loop.per_second / self.raw.per_second


@dataclass(frozen=True)
class InboxCheck:
    """What the stack's database holds of the events of the HTTP phases."""

    acknowledged: int  # 2xx answers, warm-up included
    missing: int  # acknowledged, yet not in the inbox: must be 0
    in_inbox: int  # timed-out requests may be in it too
    matched: int
    applied: int
    pool: int
    pool_statuses: dict[str, int]


@dataclass
class WebhookResult(FlowResult):
    pools: dict[str, Pool] = field(default_factory=dict)  # closed_loop, open_loop, raw_sql
    streams: list[StripeEvents] = field(default_factory=list)  # of the HTTP phases
    acknowledged: list[str] = field(default_factory=list)  # event ids answered 2xx
    check: InboxCheck | None = None


@dataclass
class RefundResult(FlowResult):
    pools: dict[str, Pool] = field(default_factory=dict)  # closed_loop, open_loop, raw_sql


def _ratio(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _pool_json(pool: Pool | None) -> dict[str, Any]:
    return {"pool": pool.to_json()} if pool is not None else {}


def _refund_pool_json(options: BenchOptions, pool: Pool | None) -> dict[str, Any]:
    if pool is None:
        return {}
    return {"pool": pool.to_json() | {"payment_method": options.payment_method}}


@dataclass
class BenchReport:
    options: BenchOptions
    environment: Environment
    cpu_count: int | None
    postgres: dict[str, Any] | None
    payments: FlowResult | None
    webhooks: WebhookResult | None
    refunds: RefundResult | None = None
    feed: bench_feed.FeedResult | None = None

    # The payments figures, under their names from before the webhook phases.
    @property
    def closed_loop(self) -> PhaseResult | None:
        return self.payments.closed_loop if self.payments else None

    @property
    def open_loop(self) -> PhaseResult | None:
        return self.payments.open_loop if self.payments else None

    @property
    def raw_sql(self) -> PhaseResult | None:
        return self.payments.raw if self.payments else None

    @property
    def full_flow_to_raw(self) -> float | None:
        return self.payments.to_raw if self.payments else None

    def to_json(self) -> dict[str, Any]:
        options = asdict(self.options)
        options.pop("token")
        options.pop("webhook_secret")
        options["phases"] = list(self.options.phases)
        options["logs_dir"] = str(self.options.logs_dir) if self.options.logs_dir else None
        if self.options.target is None:
            options["gateway_url"] = None  # our own stack's is in gateway_url
        if self.options.database_url:
            options["database_url"] = redact_dsn(self.options.database_url)
        o = self.options
        return {
            "environment": self.environment.description,
            "target": self.environment.grpc_target,
            "gateway_url": self.environment.gateway_url,
            "cpu_count": self.cpu_count,
            "postgres": self.postgres,
            "options": options,
            "phases": list(o.phases),
            "closed_loop": _closed_json(self.closed_loop, o.concurrency),
            "open_loop": _open_json(self.open_loop, o.rate),
            "raw_sql": _closed_json(self.raw_sql, o.concurrency),
            "full_flow_to_raw": _ratio(self.full_flow_to_raw),
            "webhooks": self._webhooks_json(),
            "refunds": self._refunds_json(),
            "feed": self.feed.to_json() if self.feed is not None else None,
        }

    def _refunds_json(self) -> dict[str, Any] | None:
        r, o = self.refunds, self.options
        if r is None:
            return None
        return {
            "refund_amount": refund_load.REFUND_AMOUNT,
            "closed_loop": {
                **_refund_pool_json(o, r.pools.get("closed_loop")),
                **(_closed_json(r.closed_loop, o.concurrency) or {}),
            },
            "open_loop": {
                **_refund_pool_json(o, r.pools.get("open_loop")),
                **(_open_json(r.open_loop, o.refund_rate) or {}),
            },
            "raw_sql": (
                {
                    **_refund_pool_json(o, r.pools.get("raw_sql")),
                    **(_closed_json(r.raw, o.concurrency) or {}),
                }
                if r.raw is not None
                else None
            ),
            "full_flow_to_raw": _ratio(r.to_raw),
            "to_payments": refunds_to_payments(self),
        }

    def _webhooks_json(self) -> dict[str, Any] | None:
        w, o = self.webhooks, self.options
        if w is None:
            return None
        check = w.check
        return {
            "gateway_url": self.environment.gateway_url,
            "events": event_description(o),
            "closed_loop": {
                **_pool_json(w.pools.get("closed_loop")),
                **(_closed_json(w.closed_loop, o.concurrency) or {}),
            },
            "open_loop": {
                **_pool_json(w.pools.get("open_loop")),
                **(_open_json(w.open_loop, o.webhook_rate) or {}),
            },
            "raw_sql": (
                {**_pool_json(w.pools.get("raw_sql")), **(_closed_json(w.raw, o.concurrency) or {})}
                if w.raw is not None
                else None
            ),
            "full_flow_to_raw": _ratio(w.to_raw),
            "check": asdict(check) if check is not None else None,
        }


def _closed_json(result: PhaseResult | None, concurrency: int) -> dict[str, Any] | None:
    return {"concurrency": concurrency, **result.to_json()} if result is not None else None


def _open_json(result: PhaseResult | None, rate: float) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"target_rate": rate, "sent": result.sent, **result.to_json()}


def event_description(o: BenchOptions) -> str:
    return (
        f"{loadgen.EVENT_TYPE} events, each with a fresh evt_ id and signed at send time "
        f"with the given secret, about a pool of {o.webhook_payments} "
        f"{loadgen.POOL_PAYMENT_METHOD} payments per phase (PENDING, created through gRPC "
        "before the phase; through the store for raw SQL): event n is about payment "
        "n mod pool, so the first round settles each payment (PENDING -> SUCCEEDED) and "
        "later rounds are recorded as confirmations (same statements, status unchanged)"
    )


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
            StackConfig.on_free_ports(
                database_url=database_url,
                data_dir=tmp,
                log_dir=logs,
                extra_env={"DB_POOL_MAX": str(options.db_pool_max), **_QUIET_RECONCILER},
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
        yield Environment(
            stack.grpc_target,
            stack.gateway_url,
            stack.database_url,
            f"own stack ({where})",
            sim_url=stack.sim_url,
            stack_dsn=stack.database_url,
            processes={
                name: proc.popen.pid for name, proc in stack.processes.items() if proc.popen
            },
        )


def _needs_raw_database(options: BenchOptions) -> bool:
    return options.runs("raw") and any(options.runs(p) for p in ("payments", "webhooks", "refunds"))


@contextlib.contextmanager
def environment(
    options: BenchOptions, runner: asyncio.Runner, progress: Progress
) -> Iterator[Environment]:
    gateway = options.gateway_url.rstrip("/")
    if options.target is None:
        with _own_stack(options, runner, progress) as env:
            yield env
    elif options.database_url and _needs_raw_database(options):
        with _fresh_database(runner, options.database_url, progress, migrated=True) as dsn:
            yield Environment(options.target, gateway, dsn, "running stack")
    else:
        skipped = " (no DATABASE_URL: raw SQL skipped)" if _needs_raw_database(options) else ""
        yield Environment(options.target, gateway, None, "running stack" + skipped)


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


async def _quiesce(env: Environment, progress: Progress) -> None:
    """Before a phase: the previous phase's webhooks delivered, then, as
    pgbench does before a run, VACUUM ANALYZE of the database we created, so
    that autovacuum does not start inside one phase's window and not another's."""
    await _settle_deliveries(env, progress)
    if env.raw_dsn is None:
        return
    conn = await asyncpg.connect(env.raw_dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def _settle_deliveries(env: Environment, progress: Progress) -> None:
    """Every payment makes provider-sim deliver webhooks to the gateway; a
    phase waits until the previous phase's (or pool's) are delivered, so that
    it does not compete with them. Only with our own stack: we know its sim."""
    if env.sim_url is None:
        return
    started = time.monotonic()
    reported = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(f"{env.sim_url}/_sim/webhooks") as response:
                    pending = int((await response.json())["stats"]["pending"])
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                progress(f"cannot ask provider-sim for pending deliveries: {exc!r}")
                return
            waited = time.monotonic() - started
            if pending == 0:
                if reported:
                    progress(f"provider-sim's deliveries done after {waited:.1f}s")
                return
            if waited > SETTLE_TIMEOUT_S:
                progress(f"{pending} provider-sim deliveries still pending: starting anyway")
                return
            if not reported:
                progress(f"waiting for {pending} pending provider-sim webhook deliveries")
                reported = True
            await asyncio.sleep(0.25)


async def _gateway_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, 30.0)
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
                    last = f"/readyz answered {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.2)
    raise BenchError(f"webhook-gateway at {url} is not ready: {last}")


async def _cpu_groups(env: Environment) -> loadgen.ProcessGroups:
    groups: loadgen.ProcessGroups = {"client (this process)": (os.getpid(), False)}
    groups |= {name: (pid, False) for name, pid in env.processes.items()}
    dsn = env.stack_dsn or env.raw_dsn
    if dsn:
        conn = await asyncpg.connect(dsn)
        try:
            postmaster = loadgen.local_postmaster(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()
        if postmaster is not None:
            groups["postgres"] = (postmaster, True)
    return groups


async def _measured(
    env: Environment, window: Window, phase: Coroutine[Any, Any, PhaseResult]
) -> PhaseResult:
    """Runs the phase, and notes the CPU each process used in its window."""
    meter = asyncio.create_task(loadgen.cpu_use(window, env.cpu_groups))
    try:
        result = await phase
    except BaseException:
        meter.cancel()
        raise
    result.cpu = await meter
    return result


def _phase_time(options: BenchOptions) -> str:
    return f"warm-up {options.warmup:g}s, measuring {options.duration:g}s"


def _window(options: BenchOptions) -> Window:
    return Window.after_warmup(options.warmup, options.duration)


def _max_in_flight(options: BenchOptions, rate: float) -> int:
    return max(options.concurrency, int(rate * options.timeout))


async def _payment_phases(
    options: BenchOptions, env: Environment, progress: Progress
) -> FlowResult:
    channels = await _open_channels(env.grpc_target, options.channels, options.timeout)
    try:
        callers = loadgen.create_callers(channels, options.token, options.timeout)
        fields = (options.amount, options.currency, options.payment_method)
        await _quiesce(env, progress)
        webhooks = (
            contextlib.nullcontext() if options.payment_webhooks else _webhooks_off(env, progress)
        )
        async with webhooks:
            return await _payment_loops(options, env, callers, fields, progress)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


@contextlib.asynccontextmanager
async def _webhooks_off(env: Environment, progress: Progress) -> AsyncIterator[None]:
    """provider-sim records the events of the payments meanwhile, and
    delivers none (its webhook URL is null); the URL is put back after."""
    if env.sim_url is None:
        yield
        return
    config = f"{env.sim_url}/_sim/webhooks"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def set_url(url: str | None) -> None:
            try:
                async with session.post(config, json={"url": url}) as response:
                    response.raise_for_status()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BenchError(f"cannot set provider-sim's webhook URL: {exc!r}") from None

        try:
            async with session.get(config) as response:
                response.raise_for_status()
                url = (await response.json())["url"]
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            raise BenchError(f"cannot read provider-sim's webhook settings: {exc!r}") from None
        progress("payments: provider-sim's webhook delivery off (flow 2 is the webhooks phase)")
        await set_url(None)
        try:
            yield
        finally:
            await set_url(url)


async def _payment_loops(
    options: BenchOptions,
    env: Environment,
    callers: list[loadgen.Create],
    fields: tuple[int, str, str],
    progress: Progress,
) -> FlowResult:
    progress(f"payments, closed loop: {options.concurrency} callers, {_phase_time(options)}")
    window = _window(options)
    send = loadgen.payment_sender(callers, loadgen.CreateRequests("closed", *fields))
    closed = await _measured(env, window, loadgen.closed_loop(send, options.concurrency, window))
    await _quiesce(env, progress)
    progress(f"payments, open loop: {options.rate:g} payments/s, {_phase_time(options)}")
    window = _window(options)
    send = loadgen.payment_sender(callers, loadgen.CreateRequests("open", *fields))
    limit = _max_in_flight(options, options.rate)
    opened = await _measured(
        env, window, loadgen.open_loop(send, options.rate, window, max_in_flight=limit)
    )
    return FlowResult(closed, opened)


def _session(limit: int, timeout: float) -> aiohttp.ClientSession:
    # Keep-alive connections (aiohttp's default), as many as requests in flight.
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )


async def _feed_phase(options: BenchOptions, env: Environment, progress: Progress) -> Any:
    channels = await _open_channels(env.grpc_target, options.channels, options.timeout)
    try:
        callers = loadgen.create_callers(channels, options.token, options.timeout)
        fields = (options.amount, options.currency, options.payment_method)
        limit = _max_in_flight(options, options.rate)

        async def open_loop(window: Window) -> PhaseResult:
            send = loadgen.payment_sender(callers, loadgen.CreateRequests("feed", *fields))
            return await _measured(
                env, window, loadgen.open_loop(send, options.rate, window, max_in_flight=limit)
            )

        async def quiesce() -> None:
            await _quiesce(env, progress)

        await quiesce()
        webhooks = (
            contextlib.nullcontext() if options.payment_webhooks else _webhooks_off(env, progress)
        )
        async with webhooks:
            return await bench_feed.run(
                env.grpc_target,
                options.token,
                options.watchers,
                lambda: _window(options),
                open_loop,
                quiesce,
                progress,
            )
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def _webhook_pool(
    options: BenchOptions, callers: list[loadgen.Create], phase: str, progress: Progress
) -> Pool:
    progress(f"webhooks, {phase} loop: creating {options.webhook_payments} payments")
    requests = loadgen.CreateRequests(
        f"pool-{phase}", options.amount, options.currency, loadgen.POOL_PAYMENT_METHOD
    )
    pool = await loadgen.grpc_pool(callers, requests, options.webhook_payments, options.concurrency)
    if not pool.payments:
        raise BenchError(f"no payment of the webhook pool was created: {dict(pool.errors)}")
    return pool


async def _post_events(
    options: BenchOptions,
    env: Environment,
    events: StripeEvents,
    rate: float | None,
    acknowledged: list[int],
) -> PhaseResult:
    """The closed loop (rate None), or the open loop at rate."""
    limit = options.concurrency if rate is None else _max_in_flight(options, rate)
    # A provider sends over a bounded number of connections: past it, an
    # open-loop event waits in the client, its latency still counted from
    # when it was due.
    connections = min(limit, max(options.concurrency, MAX_WEBHOOK_CONNECTIONS))
    async with _session(connections, options.timeout) as session:
        url = env.gateway_url + WEBHOOK_PATH
        send = loadgen.webhook_sender(session, url, events, acknowledged)
        window = _window(options)
        run = (
            loadgen.closed_loop(send, options.concurrency, window, unit="events")
            if rate is None
            else loadgen.open_loop(send, rate, window, limit, unit="events")
        )
        return await _measured(env, window, run)


async def _webhook_phases(
    options: BenchOptions, env: Environment, progress: Progress
) -> WebhookResult:
    await _gateway_ready(env.gateway_url, options.timeout)
    channels = await _open_channels(env.grpc_target, options.channels, options.timeout)
    closed_acks: list[int] = []
    open_acks: list[int] = []
    try:
        callers = loadgen.create_callers(channels, options.token, options.timeout)
        closed_pool = await _webhook_pool(options, callers, "closed", progress)
        closed_events = StripeEvents("closed", closed_pool.payments, options.webhook_secret)
        await _quiesce(env, progress)
        progress(f"webhooks, closed loop: {options.concurrency} senders, {_phase_time(options)}")
        closed = await _post_events(options, env, closed_events, None, closed_acks)

        open_pool = await _webhook_pool(options, callers, "open", progress)
        open_events = StripeEvents("open", open_pool.payments, options.webhook_secret)
        await _quiesce(env, progress)
        rate = options.webhook_rate
        progress(f"webhooks, open loop: {rate:g} events/s, {_phase_time(options)}")
        opened = await _post_events(options, env, open_events, rate, open_acks)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return WebhookResult(
        closed,
        opened,
        pools={"closed_loop": closed_pool, "open_loop": open_pool},
        streams=[closed_events, open_events],
        acknowledged=[closed_events.event_id(n) for n in closed_acks]
        + [open_events.event_id(n) for n in open_acks],
    )


async def _refund_pool(
    options: BenchOptions, callers: list[loadgen.Create], phase: str, progress: Progress
) -> Pool:
    progress(f"refunds, {phase} loop: creating {options.refund_payments} succeeded payments")
    requests = loadgen.CreateRequests(
        f"refundpool-{phase}", options.amount, options.currency, options.payment_method
    )
    pool = await loadgen.grpc_pool(callers, requests, options.refund_payments, options.concurrency)
    if not pool.payments:
        raise BenchError(f"no payment of the refund pool was created: {dict(pool.errors)}")
    return pool


async def _refund_phases(
    options: BenchOptions, env: Environment, progress: Progress
) -> RefundResult:
    channels = await _open_channels(env.grpc_target, options.channels, options.timeout)
    try:
        creators = loadgen.create_callers(channels, options.token, options.timeout)
        refunders = refund_load.refund_callers(channels, options.token, options.timeout)
        webhooks = (
            contextlib.nullcontext() if options.payment_webhooks else _webhooks_off(env, progress)
        )
        async with webhooks:
            pools: dict[str, Pool] = {}
            loops: list[PhaseResult] = []
            for phase, rate in (("closed", None), ("open", options.refund_rate)):
                pool = pools[f"{phase}_loop"] = await _refund_pool(
                    options, creators, phase, progress
                )
                await _quiesce(env, progress)
                send = refund_load.refund_sender(
                    refunders, refund_load.RefundRequests(phase, pool.payments)
                )
                window = _window(options)
                if rate is None:
                    progress(
                        f"refunds, closed loop: {options.concurrency} callers, "
                        f"{_phase_time(options)}"
                    )
                    run = loadgen.closed_loop(send, options.concurrency, window, unit="refunds")
                else:
                    progress(f"refunds, open loop: {rate:g} refunds/s, {_phase_time(options)}")
                    limit = _max_in_flight(options, rate)
                    run = loadgen.open_loop(send, rate, window, limit, unit="refunds")
                loops.append(await _measured(env, window, run))
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return RefundResult(loops[0], loops[1], pools=pools)


async def _raw_refunds(
    options: BenchOptions, env: Environment, db: Database, progress: Progress
) -> tuple[Pool, PhaseResult]:
    progress(f"refunds, raw SQL: writing {options.refund_payments} succeeded payments")
    pool = await refund_load.raw_pool(
        db,
        options.refund_payments,
        options.concurrency,
        amount=options.amount,
        currency=options.currency,
    )
    if not pool.payments:
        raise BenchError(f"no payment of the raw refund pool was written: {pool.errors}")
    await _quiesce(env, progress)
    progress(f"refunds, raw SQL: {options.concurrency} callers, {_phase_time(options)}")
    window = _window(options)
    raw = refund_load.raw_refunds(db, pool.payments, options.concurrency, window)
    return pool, await _measured(env, window, raw)


async def _raw_payments(
    options: BenchOptions, env: Environment, db: Database, progress: Progress
) -> PhaseResult:
    progress(f"payments, raw SQL: {options.concurrency} callers, {_phase_time(options)}")
    window = _window(options)
    raw = loadgen.raw_sql(
        PaymentStore(db),
        options.concurrency,
        window,
        amount=options.amount,
        currency=options.currency,
        payment_method=options.payment_method,
    )
    return await _measured(env, window, raw)


async def _raw_events(
    options: BenchOptions, env: Environment, db: Database, progress: Progress
) -> tuple[Pool, PhaseResult]:
    progress(f"webhooks, raw SQL: writing {options.webhook_payments} payments")
    pool = await loadgen.store_pool(
        PaymentStore(db),
        options.webhook_payments,
        options.concurrency,
        amount=options.amount,
        currency=options.currency,
    )
    if not pool.payments:
        raise BenchError(f"no payment of the raw webhook pool was written: {pool.errors}")
    events = StripeEvents("raw", pool.payments, options.webhook_secret)
    progress(f"webhooks, raw SQL: {options.concurrency} callers, {_phase_time(options)}")
    window = _window(options)
    raw = loadgen.raw_events(lambda: PostgresUnitOfWork(db), events, options.concurrency, window)
    return pool, await _measured(env, window, raw)


async def _raw_phases(
    options: BenchOptions,
    env: Environment,
    dsn: str,
    payments: FlowResult | None,
    webhooks: WebhookResult | None,
    refunds: RefundResult | None,
    progress: Progress,
) -> None:
    # The service's pool size, so the raw limit is measured with as many connections.
    db = Database(dsn, timeout=options.timeout, max_size=options.db_pool_max)
    await db.open()
    try:
        if payments is not None:
            await _quiesce(env, progress)
            payments.raw = await _raw_payments(options, env, db, progress)
        if webhooks is not None:
            await _quiesce(env, progress)
            webhooks.pools["raw_sql"], webhooks.raw = await _raw_events(options, env, db, progress)
        if refunds is not None:
            await _quiesce(env, progress)
            refunds.pools["raw_sql"], refunds.raw = await _raw_refunds(options, env, db, progress)
    finally:
        await db.close()


async def inbox_check(dsn: str, webhooks: WebhookResult) -> InboxCheck:
    """Reads the stack's database once the HTTP phases are over: the gateway
    answered 2xx only after payment-svc committed, so every acknowledged
    event must be there."""
    patterns = [e.prefix.replace("_", "\\_") + "%" for e in webhooks.streams]
    ids = [
        payment_id
        for name in ("closed_loop", "open_loop")
        if name in webhooks.pools
        for p in webhooks.pools[name].payments
        if (payment_id := parse_payment_id(p.payment_id)) is not None
    ]
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM provider_events WHERE provider_event_id = ANY($1::text[])",
            webhooks.acknowledged,
        )
        events = await conn.fetchrow(
            """SELECT count(*) AS in_inbox, count(payment_id) AS matched,
                      count(*) FILTER (WHERE applied) AS applied
               FROM provider_events WHERE provider_event_id LIKE ANY($1::text[])""",
            patterns,
        )
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM payments WHERE id = ANY($1::uuid[]) GROUP BY status",
            ids,
        )
    finally:
        await conn.close()
    assert events is not None
    return InboxCheck(
        acknowledged=len(webhooks.acknowledged),
        missing=len(webhooks.acknowledged) - found,
        in_inbox=events["in_inbox"],
        matched=events["matched"],
        applied=events["applied"],
        pool=len(ids),
        pool_statuses={row["status"]: row["n"] for row in statuses},
    )


async def _phases(options: BenchOptions, env: Environment, progress: Progress) -> BenchReport:
    postgres = await postgres_settings(env.raw_dsn) if env.raw_dsn else None
    env = replace(env, cpu_groups=await _cpu_groups(env))
    payments = webhooks = refunds = None
    if options.runs("payments"):
        payments = await _payment_phases(options, env, progress)
    if options.runs("webhooks"):
        webhooks = await _webhook_phases(options, env, progress)
    if options.runs("refunds"):
        refunds = await _refund_phases(options, env, progress)
    if options.runs("raw") and env.raw_dsn:
        await _raw_phases(options, env, env.raw_dsn, payments, webhooks, refunds, progress)
    if webhooks is not None and env.stack_dsn:
        webhooks.check = await inbox_check(env.stack_dsn, webhooks)
    feed = await _feed_phase(options, env, progress) if options.runs("feed") else None
    return BenchReport(options, env, os.cpu_count(), postgres, payments, webhooks, refunds, feed)


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_bench(options: BenchOptions, progress: Progress) -> BenchReport:
    """Runs the chosen phases; whatever it started is stopped and removed after."""
    # SIGTERM unwinds like Ctrl-C, so the stack and the database are cleaned up.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            environment(options, runner, progress) as env,
        ):
            # The client's own garbage collections would pause its senders
            # and count as latency (see payments_kit/runtime.py).
            runtime.freeze_startup_heap()
            return runner.run(_phases(options, env, progress))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ms(micros: float) -> str:
    return f"{micros / 1000:.2f}"


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{key}={n}" for key, n in sorted(counter.items(), key=lambda kv: -kv[1]))


def _errors(result: PhaseResult) -> str:
    return _counts(result.errors) or "0"


def _rows(report: BenchReport) -> list[tuple[str, str, PhaseResult | None]]:
    o = report.options
    rows: list[tuple[str, str, PhaseResult | None]] = []
    if report.payments is not None:
        p = report.payments
        rows += [
            ("payments: closed loop, full flow", f"{o.concurrency} callers", p.closed_loop),
            ("payments: open loop, full flow", f"{o.rate:g}/s offered", p.open_loop),
        ]
        if o.runs("raw"):
            rows.append(("payments: raw SQL (asyncpg)", f"{o.concurrency} callers", p.raw))
    if report.webhooks is not None:
        w = report.webhooks
        rows += [
            ("webhooks: closed loop, gateway", f"{o.concurrency} senders", w.closed_loop),
            ("webhooks: open loop, gateway", f"{o.webhook_rate:g}/s offered", w.open_loop),
        ]
        if o.runs("raw"):
            rows.append(
                ("webhooks: raw SQL (inbox unit of work)", f"{o.concurrency} callers", w.raw)
            )
    if report.refunds is not None:
        r = report.refunds
        rows += [
            ("refunds: closed loop, full flow", f"{o.concurrency} callers", r.closed_loop),
            ("refunds: open loop, full flow", f"{o.refund_rate:g}/s offered", r.open_loop),
        ]
        if o.runs("raw"):
            raw = "refunds: raw SQL (service on Postgres)"
            rows.append((raw, f"{o.concurrency} callers", r.raw))
    if report.feed is not None:
        f = report.feed
        rows += [
            ("feed: payments, no watcher", f"{o.rate:g}/s offered", f.without),
            ("feed: payments, watchers", f"{o.rate:g}/s, {f.watchers} streams", f.with_watchers),
        ]
    return rows


def report_table(report: BenchReport) -> Table:
    table = Table(title=f"payments bench: {report.environment.description}")
    for name in ("phase", "load", "done/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        table.add_column(name, justify="left" if name in ("phase", "load", "errors") else "right")
    for phase, load, result in _rows(report):
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


def _statuses(result: PhaseResult) -> str:
    return _counts(result.statuses) or "none"


def _ratio_line(name: str, flow: FlowResult | None, unit: str) -> list[str]:
    if flow is None:
        return []
    ratio = flow.to_raw
    if ratio is None:
        return [f"{name} / raw SQL: n/a"]
    return [f"{name} / raw SQL: {ratio:.2f} (closed loop {unit}/s over raw {unit}/s)"]


def _webhook_lines(report: BenchReport) -> list[str]:
    w, o = report.webhooks, report.options
    if w is None:
        return []
    pools = "; ".join(
        f"{name}: {len(pool.payments)} in {pool.seconds:.1f}s ({_counts(pool.statuses)})"
        + (f", failed: {_counts(pool.errors)}" if pool.errors else "")
        for name, pool in w.pools.items()
    )
    lines = [
        f"webhook events: {event_description(o)}",
        f"webhook pools: {pools}",
        f"webhooks open loop: {w.open_loop.sent} sent in the window at {o.webhook_rate:g}/s, "
        f"{w.open_loop.per_second:.1f}/s completed",
        f"webhook answers: closed loop {_statuses(w.closed_loop)}; "
        f"open loop {_statuses(w.open_loop)}"
        + (f"; raw SQL outcomes {_statuses(w.raw)}" if w.raw is not None else ""),
    ]
    c = w.check
    if c is None:
        lines.append("webhook check: skipped (the stack's database is not ours to read)")
    else:
        statuses = _counts(c.pool_statuses)
        lines.append(
            f"webhook check: {c.acknowledged} events acknowledged (warm-up included), "
            f"{c.missing} of them missing from the inbox; the inbox holds {c.in_inbox} of "
            f"the phases' events, {c.matched} matched to a payment, {c.applied} applied; "
            f"pool payments now: {statuses}"
        )
    return lines


def _refund_lines(report: BenchReport) -> list[str]:
    r, o = report.refunds, report.options
    if r is None:
        return []
    pools = "; ".join(
        f"{name}: {len(pool.payments)} in {pool.seconds:.1f}s ({_counts(pool.statuses)})"
        + (f", failed: {_counts(pool.errors)}" if pool.errors else "")
        for name, pool in r.pools.items()
    )
    return [
        *_ratio_line("refunds full flow", r, "refunds"),
        f"refunds: {refund_load.REFUND_AMOUNT} minor unit each, refund n of pool payment "
        f"n mod {o.refund_payments}; pools: {pools}",
        f"refunds open loop: {r.open_loop.sent} sent in the window at {o.refund_rate:g}/s, "
        f"{r.open_loop.per_second:.1f}/s completed",
        f"refund statuses: closed loop {_statuses(r.closed_loop)}; "
        f"open loop {_statuses(r.open_loop)}",
    ]


def _cpu_lines(report: BenchReport) -> list[str]:
    lines = []
    for phase, _, result in _rows(report):
        if result is None or not result.cpu:
            continue
        cpu = dict(result.cpu)
        machine = cpu.pop("machine", None)
        total = f"{machine:.2f} of {report.cpu_count} cores busy: " if machine is not None else ""
        parts = ", ".join(f"{name} {cores:.2f}" for name, cores in cpu.items())
        lines.append(f"CPU, {phase}: {total}{parts}")
        per_op = result.cpu_ms_per_op()
        if per_op:
            spent = ", ".join(f"{name} {ms:.2f}" for name, ms in per_op.items())
            lines.append(f"CPU ms per operation, {phase}: {spent} (all {sum(per_op.values()):.2f})")
    return lines


def refunds_to_payments(report: BenchReport) -> dict[str, float | None] | None:
    """Refunds per second over payments per second, closed loop and raw SQL,
    in one run (a target: the closed loop's at least 1)."""
    p, r = report.payments, report.refunds
    if p is None or r is None:
        return None

    def over(a: PhaseResult | None, b: PhaseResult | None) -> float | None:
        if a is None or b is None or b.per_second <= 0:
            return None
        return round(a.per_second / b.per_second, 3)

    return {"closed_loop": over(r.closed_loop, p.closed_loop), "raw_sql": over(r.raw, p.raw)}


def _refunds_to_payments_line(report: BenchReport) -> list[str]:
    ratios = refunds_to_payments(report)
    if ratios is None:
        return []
    shown = ", ".join(
        f"{phase.replace('_', ' ')} {value:.2f}"
        for phase, value in ratios.items()
        if value is not None
    )
    return [f"refunds / payments: {shown} (refunds/s over payments/s, this run)"]


def _payment_webhooks_line(report: BenchReport) -> str:
    if report.environment.sim_url is None:
        return "payments phase: webhooks delivered as the running stack does"
    if report.options.payment_webhooks:
        return (
            "payments phase: provider-sim delivered each payment's webhook through the "
            "gateway meanwhile (--payment-webhooks)"
        )
    return (
        "payments phase: provider-sim's webhook delivery was off (the webhooks phase "
        "measures that flow; --payment-webhooks keeps it on)"
    )


def summary_lines(report: BenchReport) -> list[str]:
    pg = report.postgres
    durable = (
        f"Postgres {pg['version']}: fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']} ({'durable' if pg['durable_commits'] else 'NOT durable'}"
        " commits)"
        if pg
        else "Postgres settings unknown (no database to ask)"
    )
    lines = [
        f"first {code} error, {phase}: {message}"
        for phase, _, result in _rows(report)
        if result is not None
        for code, message in result.error_samples.items()
    ]
    lines += _ratio_line("payments full flow", report.payments, "payments")
    lines += _ratio_line("webhooks through the gateway", report.webhooks, "events")
    if report.payments is not None:
        p = report.payments
        lines.append(
            f"payments open loop: {p.open_loop.sent} sent in the window at "
            f"{report.options.rate:g}/s, {p.open_loop.per_second:.1f}/s completed"
        )
        lines.append(_payment_webhooks_line(report))
    lines += _webhook_lines(report)
    lines += _refund_lines(report)
    lines += _refunds_to_payments_line(report)
    if report.feed is not None:
        lines += bench_feed.lines(report.feed)
    lines += _cpu_lines(report)
    lines += [
        f"CPU cores: {report.cpu_count} (client, services and Postgres share them)",
        durable,
        f"target: {report.environment.grpc_target}, gateway {report.environment.gateway_url}",
    ]
    if report.payments is not None:
        lines.append(f"payment statuses (closed loop): {_statuses(report.payments.closed_loop)}")
    return lines
