"""Sweep: every non-final payment untouched for the grace period, against the provider.

    ListPaymentsToReconcile(older_than=grace, lease)  -- pages, claimed for us
      └─ queue ─> workers, one payment each (RECONCILER_CONCURRENCY provider
         fetches in flight; WORKERS_PER_FETCH times as many workers, so that
         payment-svc's answers do not hold the provider's slots):
           provider id known?  retrieve it : search metadata['payment_id']
           found, agrees with ours -> nothing to do
           found, differs  -> ReconcilePayment(snapshot)   (payment-svc decides, records)
           provider id unknown to the provider -> MISSING_AT_PROVIDER, never a re-drive
           search answered, no intent with our id -> RedrivePayment within
                          RECONCILER_REDRIVE_WINDOW_SECONDS, else MISSING_AT_PROVIDER
           search found more than one -> ours reconciled, the others
                          DUPLICATE_PROVIDER_PAYMENT
           no answer (the search's own 404 included) -> an error for this
                          payment (never a guess, never a re-drive)
           still non-final past RECONCILER_STUCK_AFTER_SECONDS -> STUCK_PAYMENT
    then the non-final refunds, by the same rules (refund_sweep.py)

The lease gives each replica its own payments while it works on them. The
provider being down ends the run early (failed) instead of timing out once per
payment: RECONCILER_CONCURRENCY failures in a row, or not one answer in the run.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_stripe.objects import ProviderIntent
from payments_stripe.reader import NotFoundAtProvider, ProviderError
from payments_stripe.status import Status
from reconciler import convert, rules
from reconciler.context import JobContext
from reconciler.refund_sweep import sweep_refunds
from reconciler.retry import redrive, retrying
from reconciler.runs import JobFailed, Tally

log = structlog.get_logger("reconciler")

WORKERS_PER_FETCH = 4


class ProviderHealth:
    """Tells a provider outage from a few bad answers."""

    def __init__(self, outage_after: int) -> None:
        self._outage_after = outage_after
        self._in_a_row = 0
        self.answers = 0
        self.last_error = ""

    def answered(self) -> None:
        self._in_a_row = 0
        self.answers += 1

    def failed(self, exc: ProviderError) -> None:
        self.last_error = str(exc)
        if exc.retryable:
            self._in_a_row += 1
        if self._in_a_row >= self._outage_after:
            raise JobFailed(f"provider unreachable: {exc}")

    def check_end(self, errors: int) -> None:
        if errors and not self.answers:
            raise JobFailed(f"provider unreachable: {self.last_error}")


async def sweep(ctx: JobContext, tally: Tally) -> None:
    settings = ctx.settings
    item = _Item(ctx, tally)
    workers = settings.concurrency * WORKERS_PER_FETCH
    queue: asyncio.Queue[pb.Payment | None] = asyncio.Queue(maxsize=settings.page_size)

    async def page(token: str) -> tuple[list[pb.Payment], str]:
        try:
            return await retrying(
                lambda: ctx.client.list_payments_to_reconcile(
                    settings.grace_seconds,
                    page_size=settings.page_size,
                    page_token=token,
                    reconciler_id=settings.reconciler_id,
                    lease=settings.lease_seconds,
                )
            )
        except PaymentsClientError as exc:
            raise JobFailed(f"ListPaymentsToReconcile: {exc}") from None

    async def produce() -> None:
        payments, token = await page("")
        while True:
            for payment in payments:
                await queue.put(payment)
            if not token:
                break
            payments, token = await page(token)
        for _ in range(workers):
            await queue.put(None)

    async def work() -> None:
        while (payment := await queue.get()) is not None:
            tally.scanned += 1
            await item.reconcile(payment)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(workers):
                group.create_task(work())
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    try:
        await sweep_refunds(ctx, tally, item.health)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    item.health.check_end(tally.errors)


class _Item:
    """One payment of the sweep: fetch, compare, fix or report."""

    def __init__(self, ctx: JobContext, tally: Tally) -> None:
        self.ctx = ctx
        self.tally = tally
        self.health = ProviderHealth(outage_after=max(ctx.settings.concurrency, 3))
        self._fetches = asyncio.Semaphore(ctx.settings.concurrency)

    async def fetch(self, payment: pb.Payment) -> list[ProviderIntent]:
        """The intents the provider holds for the payment: [] when it does not
        know them (NotFoundAtProvider is only raised for a known provider id)."""
        async with self._fetches:
            if payment.provider_payment_id:
                return [await self.ctx.provider.retrieve_intent(payment.provider_payment_id)]
            return await self.ctx.provider.find_intents(payment.id)

    async def reconcile(self, payment: pb.Payment) -> None:
        ctx, tally = self.ctx, self.tally
        now = ctx.now()
        created = convert.created_at(payment)
        status = convert.status_of(payment)
        intents: list[ProviderIntent] | None = None
        try:
            intents = await self.fetch(payment)
        except NotFoundAtProvider:
            intents = []
        except ProviderError as exc:
            # The run records it; a search that failed is never "not there".
            tally.errors += 1
            log.warning("provider_fetch_failed", payment_id=payment.id, error=str(exc))
            self.health.failed(exc)
        if intents is not None:
            self.health.answered()
        if intents == []:
            missing = rules.when_missing(
                created, now, ctx.settings.redrive_window_seconds, payment.provider_payment_id
            )
            if missing is rules.Missing.REPORT:
                await _report(ctx, tally, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER, payment)
                return
            status = await _redrive(ctx, tally, payment) or status
        elif intents:
            intent, others = rules.ours_among(intents)
            if not rules.agrees(convert.ours(payment), intent):
                status = await self._apply(payment, intent, now) or status
            for other in others:
                await _report_duplicate(ctx, tally, payment, intent, other)
        if rules.is_stuck(status, created, now, ctx.settings.stuck_after_seconds):
            await _report(ctx, tally, sync.DISCREPANCY_KIND_STUCK_PAYMENT, payment)

    async def _apply(
        self, payment: pb.Payment, intent: ProviderIntent, now: datetime
    ) -> Status | None:
        """Our status after ReconcilePayment, None when it could not be done."""
        try:
            reply = await retrying(
                lambda: self.ctx.client.reconcile_payment(payment.id, convert.snapshot(intent, now))
            )
        except PaymentsClientError as exc:
            self.tally.errors += 1
            log.warning("reconcile_payment_failed", payment_id=payment.id, error=str(exc))
            return None
        self.tally.fixed += reply.changed
        self.ctx.findings.recorded_by_payment_svc(
            self.tally, reply.discrepancies, payment.id, intent.id
        )
        return convert.status_of(reply.payment)


async def _redrive(ctx: JobContext, tally: Tally, payment: pb.Payment) -> Status | None:
    """Our status after the re-drive, None when it could not be done."""
    reply = await redrive(
        lambda: ctx.client.redrive_payment(payment.id), tally, payment_id=payment.id
    )
    if reply is None:
        return None
    after = convert.status_of(reply.payment)
    tally.fixed += after is not convert.status_of(payment)
    log.info(
        "payment_redriven",
        payment_id=payment.id,
        status=after.value,
        provider_status=reply.provider_status,
    )
    return after


async def _report_duplicate(
    ctx: JobContext, tally: Tally, payment: pb.Payment, ours: ProviderIntent, other: ProviderIntent
) -> None:
    details = {
        "bound_provider_payment_id": payment.provider_payment_id or ours.id,
        "provider_status": other.status,
        "provider_amount": str(other.amount),
        "provider_currency": other.currency.upper(),
        "our_status": convert.status_of(payment).value,
        "our_amount": str(payment.amount),
        "our_currency": payment.currency,
    }
    await _send(
        ctx, tally, sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT, payment, other.id, details
    )


async def _report(
    ctx: JobContext, tally: Tally, kind: sync.DiscrepancyKind.ValueType, payment: pb.Payment
) -> None:
    details = {
        "status": convert.status_of(payment).value,
        "amount": str(payment.amount),
        "currency": payment.currency,
        "created_at": convert.created_at(payment).isoformat(),
    }
    if kind == sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER and payment.provider_payment_id:
        # What we know: the provider gave this id, and now says it does not
        # know it (another account's key, a wrong STRIPE_API_BASE, lost data).
        details["reason"] = "the provider does not know the provider payment id it gave us"
    await _send(ctx, tally, kind, payment, payment.provider_payment_id, details)


async def _send(
    ctx: JobContext,
    tally: Tally,
    kind: sync.DiscrepancyKind.ValueType,
    payment: pb.Payment,
    provider_payment_id: str,
    details: dict[str, str],
) -> None:
    await ctx.findings.report(
        tally, kind, payment_id=payment.id, provider_payment_id=provider_payment_id, details=details
    )
