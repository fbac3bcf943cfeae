"""payment-svc: wiring and lifecycle, in one place.

    payment-svc            serve (gRPC + /metrics)
    payment-svc migrate    apply database migrations and exit

Start: settings -> logs -> pool -> provider client -> server; then the
change feed's tasks (LISTEN connection, sequencer, expiry). The database
may be down at start: the server still comes up, health says NOT_SERVING, and
a probe flips it back when Postgres answers. SIGTERM: health NOT_SERVING,
end the feed's streams, stop accepting, let in-flight calls finish (drain),
stop the feed's tasks after a last sequencer run, then close the
provider client and the pool, in that order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import Callable

import structlog
import uvloop
from grpc_health.v1 import health, health_pb2
from prometheus_client import start_http_server

from payment_svc.adapters import migrate
from payment_svc.adapters.db import Database
from payment_svc.adapters.discrepancy_store import DiscrepancyStore
from payment_svc.adapters.event_store import EventStore
from payment_svc.adapters.feed_listener import FeedListener
from payment_svc.adapters.feed_store import FeedStore
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.adapters.postgres_uow import PostgresUnitOfWork
from payment_svc.adapters.quarantine_store import QuarantineStore
from payment_svc.adapters.reconciliation_store import SnapshotStore
from payment_svc.adapters.refund_store import RefundStore
from payment_svc.adapters.refund_sync_store import RefundSyncStore
from payment_svc.adapters.resolver import SystemResolver
from payment_svc.adapters.run_store import RunStore
from payment_svc.adapters.stripe_books import StripeBooks
from payment_svc.adapters.stripe_observations import parse_event
from payment_svc.adapters.stripe_observations import refund_snapshot as stripe_refund_snapshot
from payment_svc.adapters.stripe_observations import snapshot as stripe_snapshot
from payment_svc.adapters.stripe_provider import StripeProvider
from payment_svc.adapters.webhook_dispatch_store import WebhookDispatchStore
from payment_svc.adapters.webhook_store import WebhookEndpointStore
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import StoreUnavailable
from payment_svc.domain.status import Source
from payment_svc.entrypoints import metrics
from payment_svc.entrypoints.grpc_server import create_server, set_serving
from payment_svc.service_layer.corrections import CorrectionService
from payment_svc.service_layer.discrepancies import DiscrepancyService
from payment_svc.service_layer.feed import FeedBell, FeedService, Sequencer
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.payments import PaymentsService
from payment_svc.service_layer.ports import Sequenced
from payment_svc.service_layer.provider_sync import ProviderSyncService
from payment_svc.service_layer.reconciliation import ReconciliationService
from payment_svc.service_layer.refund_sync import RefundSyncService
from payment_svc.service_layer.refunds import RefundsService
from payment_svc.service_layer.runs import RunService
from payment_svc.service_layer.webhook_dispatch import WebhookDispatch
from payment_svc.service_layer.webhooks import WebhookEndpointsService
from payment_svc.settings import ConfigError, MigrationSettings, Settings
from payments_kit import logs, runtime
from payments_kit.environment import split_address
from payments_stripe.reader import StripeReader

log = structlog.get_logger("payment_svc")


def _split(address: str) -> tuple[str, int]:
    return split_address("PAYMENT_SVC_METRICS_LISTEN", address)


async def _watch_database(db: Database, healthy_every: float, unhealthy_every: float) -> None:
    """The probe behind health: often while the database is down (to come
    back quickly), less often while it is up. A probe is bounded by the
    database timeout, so a frozen database turns health NOT_SERVING within
    that timeout plus `healthy_every` (kept under a second). A failed call
    also flips health at once (Database marks connection errors)."""
    while True:
        await db.ping()
        await asyncio.sleep(healthy_every if db.healthy else unhealthy_every)


async def _inbox_upkeep(sync_service: ProviderSyncService, every: float) -> None:
    """Matches inbox events that arrived before their payment could be found,
    and reports the ones past their deadline."""
    while True:
        try:
            await sync_service.rematch()
            await sync_service.report_overdue()
            metrics.UNMATCHED_EVENTS.set(await sync_service.count_unmatched())
        except StoreUnavailable:
            pass  # the health watcher says so; try again next round
        except Exception:
            log.exception("inbox_upkeep_failed")
        await asyncio.sleep(every)


async def _expire_updates(
    feed: FeedService, webhook_dispatch: WebhookDispatch, retention: float, every: float
) -> None:
    while True:
        try:
            deleted = await feed.expire(retention)
            if deleted:
                log.info("feed_updates_expired", deleted=deleted)
            attempts = await webhook_dispatch.expire_attempts(retention)
            if attempts:
                log.info("webhook_attempts_expired", deleted=attempts)
        except StoreUnavailable:
            pass
        except Exception:
            log.exception("feed_expiry_failed")
        await asyncio.sleep(every)


def _count_undone(source: Source) -> None:
    """A refund counted as given back failed: the alert's counter."""
    metrics.REVERSALS_UNDONE.labels(source.value).inc()


def _sequenced(bell: FeedBell) -> Callable[[Sequenced], None]:
    def done(result: Sequenced) -> None:
        metrics.FEED_UPDATES_SEQUENCED.inc(result.count)
        bell.ring(result.client_ids)

    return done


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    # Before listening, so the pause delays nobody; and before the pool, whose
    # connections are replaced after an outage and must stay collectable.
    runtime.freeze_startup_heap()
    db = Database(settings.database_url, timeout=settings.db_timeout, max_size=settings.db_pool_max)
    await db.open()
    provider = StripeProvider(
        api_key=settings.stripe_api_key,
        base_url=settings.stripe_api_base,
        timeout=settings.provider_timeout,
    )
    page_tokens = PageTokens(settings.page_token_key.encode())
    payments = PaymentsService(
        PaymentStore(db),
        provider,
        AttemptBudget(
            provider_timeout=settings.provider_timeout, write_reserve=settings.db_timeout
        ),
        page_tokens=page_tokens,
    )
    discrepancy_store = DiscrepancyStore(db)
    run_store = RunStore(db)
    sync_service = ProviderSyncService(
        EventStore(db),
        discrepancy_store,
        unmatched_deadline_seconds=settings.unmatched_event_deadline,
        quarantine=QuarantineStore(db),
        parse=parse_event,
        uow=lambda: PostgresUnitOfWork(db),
        on_undone=_count_undone,
    )
    reconciliation = ReconciliationService(
        SnapshotStore(db),
        payments,
        uow=lambda: PostgresUnitOfWork(db),
        discrepancies=DiscrepancyService(discrepancy_store, page_tokens=page_tokens),
        runs=RunService(run_store, run_store),
        redrive_window=settings.redrive_window,
        page_tokens=page_tokens,
        read_snapshot=stripe_snapshot,
    )
    # The change feed: the sequencer is kicked by this process's commits
    # that wrote updates; the listener hears every process's sequencer.
    # The sequencer and retention have connections of their own: background
    # work never takes a pooled connection a call is waiting for.
    feed_db = Database(settings.database_url, timeout=settings.db_timeout, max_size=2)
    await feed_db.open()
    bell = FeedBell()
    tag = secrets.token_hex(6)
    upkeep = FeedStore(feed_db, tag=tag)
    sequencer = Sequencer(upkeep, on_sequenced=_sequenced(bell), gap=settings.updates_gap)
    db.on_updates_written(sequencer.kick)
    feed = FeedService(
        FeedStore(db), FeedCursors(settings.page_token_key.encode()), bell, upkeep=upkeep
    )

    listener = FeedListener(
        settings.database_url,
        tag=tag,
        on_news=bell.ring,
        timeout=db.timeout,
        on_connected=lambda up: metrics.FEED_LISTENER_UP.set(1 if up else 0),
    )
    health_servicer = health.aio.HealthServicer()
    refunds = RefundsService(
        RefundStore(db),
        provider,
        AttemptBudget(
            provider_timeout=settings.provider_timeout, write_reserve=settings.db_timeout
        ),
    )
    refund_sync = RefundSyncService(
        RefundSyncStore(db),
        refunds,
        uow=lambda: PostgresUnitOfWork(db),
        redrive_window=settings.redrive_window,
        page_tokens=page_tokens,
        read_refund=stripe_refund_snapshot,
        on_undone=_count_undone,
    )
    webhooks = WebhookEndpointsService(
        WebhookEndpointStore(db),
        SystemResolver(),
        FeedCursors(settings.page_token_key.encode()),
        page_tokens,
        production=settings.production,
    )
    # Its retention shares the feed's connections (background work).
    webhook_dispatch = WebhookDispatch(WebhookDispatchStore(db))
    webhook_upkeep = WebhookDispatch(WebhookDispatchStore(feed_db))
    # An operator's correction reads the provider's books (read-only).
    books = StripeBooks(
        StripeReader(
            api_key=settings.stripe_api_key,
            base_url=settings.stripe_api_base,
            timeout=settings.provider_timeout,
        )
    )
    corrections = CorrectionService(SnapshotStore(db), books, uow=lambda: PostgresUnitOfWork(db))
    server, port = create_server(
        settings,
        payments,
        sync_service,
        reconciliation,
        health_servicer,
        refunds=refunds,
        feed=feed,
        refund_sync=refund_sync,
        webhooks=webhooks,
        webhook_dispatch=webhook_dispatch,
        corrections=corrections,
    )

    pending: set[asyncio.Task[None]] = set()

    def on_health(healthy: bool) -> None:
        metrics.DATABASE_UP.set(1 if healthy else 0)
        task = loop.create_task(set_serving(health_servicer, healthy))
        pending.add(task)
        task.add_done_callback(pending.discard)

    db.on_health_change(on_health)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await set_serving(health_servicer, False)
    if settings.metrics_listen and _split(settings.metrics_listen)[1]:
        host, mport = _split(settings.metrics_listen)
        start_http_server(mport, addr=host)
    await server.start()
    watcher = loop.create_task(_watch_database(db, 0.5, 0.25))
    inbox = loop.create_task(_inbox_upkeep(sync_service, settings.inbox_upkeep_seconds))
    feed_tasks = [
        loop.create_task(listener.run_forever()),
        loop.create_task(sequencer.run_forever(settings.updates_safety_every)),
        loop.create_task(
            _expire_updates(
                feed, webhook_upkeep, settings.updates_retention, settings.updates_expire_every
            )
        ),
    ]
    log.info("payment_svc_started", grpc_port=port, metrics=settings.metrics_listen)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("payment_svc_draining", grace_seconds=settings.drain_seconds)
    watcher.cancel()
    inbox.cancel()
    await health_servicer.enter_graceful_shutdown()
    # Streams never end by themselves: they are ended now (their callers
    # resume from their last cursor, on another replica or after the restart).
    feed.close()
    await server.stop(settings.drain_seconds)
    await asyncio.gather(
        payments.drain(settings.drain_seconds), refunds.drain(settings.drain_seconds)
    )
    # After the last call: the sequencer numbers what they committed (one
    # last run), then the listener and expiry stop.
    for task in feed_tasks:
        task.cancel()
    await asyncio.wait(feed_tasks, timeout=db.timeout)
    with contextlib.suppress(StoreUnavailable):
        await sequencer.run_once()
    await feed_db.close()
    await provider.close()
    await books.close()
    await db.close()
    log.info("payment_svc_stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="payment-svc", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    parser.add_argument("--listen", help="gRPC address (overrides PAYMENT_SVC_LISTEN)")
    args = parser.parse_args(argv)
    try:
        if args.command == "migrate":
            # Migrations need the database and nothing else (the migration
            # Job carries no tokens or provider keys).
            migration = MigrationSettings.from_env()
            logs.configure("payment-svc", migration.log_level)
            applied = uvloop.run(
                migrate.migrate(migration.database_url, lock_timeout=migration.lock_timeout)
            )
            log.info("migrations_applied", versions=applied)
            return
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"payment-svc: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.listen:
        settings = Settings(**{**settings.__dict__, "listen": args.listen})
    logs.configure("payment-svc", settings.log_level)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
