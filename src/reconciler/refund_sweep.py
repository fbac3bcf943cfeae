"""Sweep, refunds: every non-final refund untouched for the grace period,
against the provider (the payments' sweep's rules, sweep.py):

    ListRefundsToReconcile(older_than=grace, lease)   -- pages, claimed for us
      provider refund id known?  GET /v1/refunds/{id}
                         else    GET /v1/refunds?payment_intent=<its payment's>,
                                 the one whose metadata.refund_id is ours
      found, agrees with ours -> nothing to do
      found, differs          -> ReconcileRefund(snapshot)  (payment-svc decides)
      its provider id unknown to the provider -> REFUND_MISSING_AT_PROVIDER
      its payment unknown to the provider (the list's 404), or without a
      provider payment id (nothing to list)   -> REFUND_MISSING_AT_PROVIDER
                                 with the reason, never re-driven, not an error
      the list answered without it -> RedriveRefund within
                                 RECONCILER_REDRIVE_WINDOW_SECONDS (the same key:
                                 our refund id), else REFUND_MISSING_AT_PROVIDER
      no answer              -> an error for this refund (never a guess: an
                                 UNKNOWN refund is never marked FAILED, never
                                 re-driven without a list that lacks it)
      still non-final past RECONCILER_STUCK_AFTER_SECONDS -> STUCK_REFUND
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING

import structlog

from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_stripe.objects import ProviderRefund
from payments_stripe.reader import NotFoundAtProvider, ProviderError
from reconciler import convert, rules
from reconciler.context import JobContext
from reconciler.retry import redrive, retrying
from reconciler.runs import JobFailed, Tally

if TYPE_CHECKING:
    from reconciler.sweep import ProviderHealth

log = structlog.get_logger("reconciler")


async def sweep_refunds(ctx: JobContext, tally: Tally, health: ProviderHealth) -> None:
    settings = ctx.settings
    fetches = asyncio.Semaphore(settings.concurrency)
    token = ""
    while True:
        page_token = token
        try:
            items, token = await retrying(
                lambda: ctx.client.list_refunds_to_reconcile(
                    settings.grace_seconds,
                    page_size=settings.page_size,
                    page_token=page_token,  # noqa: B023 - awaited before the next round
                    reconciler_id=settings.reconciler_id,
                    lease=settings.lease_seconds,
                )
            )
        except PaymentsClientError as exc:
            raise JobFailed(f"ListRefundsToReconcile: {exc}") from None
        async with asyncio.TaskGroup() as group:
            for item in items:
                tally.scanned += 1
                group.create_task(_reconcile(ctx, tally, health, fetches, item))
        if not token:
            return


async def _fetch(
    ctx: JobContext, refund: pb.Refund, provider_payment_id: str
) -> list[ProviderRefund]:
    """The provider's refunds that are ours: [] when it certainly has none
    (its own id unknown to it, or a list that answered without it)."""
    if refund.provider_refund_id:
        try:
            return [await ctx.provider.retrieve_refund(refund.provider_refund_id)]
        except NotFoundAtProvider:
            return []
    if not provider_payment_id:
        # Books the API does not make (RefundPayment refuses a payment never
        # charged through the provider): a refund is sent with its payment's
        # provider id, so this one never was. Nothing to ask, nothing to find.
        raise NoRefundAtProvider("its payment has no provider payment id", asked=False)
    try:
        listed = await ctx.provider.refunds_of(provider_payment_id)
    except NotFoundAtProvider:
        raise NoRefundAtProvider(
            f"its payment {provider_payment_id} is unknown at the provider", asked=True
        ) from None
    return [r for r in listed if r.refund_id == refund.id]


class NoRefundAtProvider(Exception):
    """The provider has no refund of ours and a re-drive could not make one
    (a refund needs its payment at the provider): the provider answered that
    it does not know the refund's payment, or the payment has no provider
    payment id at all. Reported with the reason, never re-driven; not an
    error of the run, as a payment's own 404 is not (MISSING_AT_PROVIDER)."""

    def __init__(self, reason: str, *, asked: bool) -> None:
        super().__init__(reason)
        self.asked = asked  # the provider was asked, and answered


async def _reconcile(
    ctx: JobContext,
    tally: Tally,
    health: ProviderHealth,
    fetches: asyncio.Semaphore,
    item: sync.RefundToReconcile,
) -> None:
    refund = item.refund
    now = ctx.now()
    created = refund.created_at.ToDatetime(tzinfo=UTC)
    status = refund.status
    found: list[ProviderRefund] | None = None
    try:
        async with fetches:
            found = await _fetch(ctx, refund, item.provider_payment_id)
    except NoRefundAtProvider as exc:
        if exc.asked:
            health.answered()
        await _report(
            ctx, tally, sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER, refund, reason=str(exc)
        )
        return
    except ProviderError as exc:
        tally.errors += 1
        log.warning("provider_refund_fetch_failed", refund_id=refund.id, error=str(exc))
        health.failed(exc)
    if found is not None:
        health.answered()
    if found == []:
        missing = rules.when_missing(
            created, now, ctx.settings.redrive_window_seconds, refund.provider_refund_id
        )
        if missing is rules.Missing.REPORT:
            await _report(ctx, tally, sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER, refund)
            return
        status = await _redrive(ctx, tally, refund) or status
    elif found:
        theirs = rules.ours_among_refunds(found)
        if not rules.refund_agrees(refund, theirs):
            status = await apply_refund(ctx, tally, theirs, refund_id=refund.id) or status
    if rules.is_stuck_refund(status, created, now, ctx.settings.stuck_after_seconds):
        await _report(ctx, tally, sync.DISCREPANCY_KIND_STUCK_REFUND, refund)


async def apply_refund(
    ctx: JobContext,
    tally: Tally,
    theirs: ProviderRefund,
    *,
    refund_id: str = "",
    provider_payment_id: str = "",
) -> pb.RefundStatus.ValueType | None:
    """ReconcileRefund: our refund's status after it (None: not done, or no
    refund of ours recorded)."""
    try:
        reply = await retrying(
            lambda: ctx.client.reconcile_refund(
                convert.refund_snapshot(theirs, ctx.now()),
                refund_id=refund_id,
                provider_payment_id=provider_payment_id,
            )
        )
    except PaymentsClientError as exc:
        tally.errors += 1
        log.warning(
            "reconcile_refund_failed",
            refund_id=refund_id,
            provider_refund_id=theirs.id,
            error=str(exc),
        )
        return None
    tally.fixed += reply.changed
    ctx.findings.recorded_by_payment_svc(
        tally, reply.discrepancies, reply.payment.id, provider_payment_id or theirs.payment_intent
    )
    if reply.recorded:
        log.info(
            "provider_refund_recorded",
            refund_id=reply.refund.id,
            provider_refund_id=theirs.id,
            payment_id=reply.refund.payment_id,
        )
    return reply.refund.status if reply.HasField("refund") else None


async def _redrive(
    ctx: JobContext, tally: Tally, refund: pb.Refund
) -> pb.RefundStatus.ValueType | None:
    after = await redrive(lambda: ctx.client.redrive_refund(refund.id), tally, refund_id=refund.id)
    if after is None:
        return None
    tally.fixed += after.status != refund.status
    log.info("refund_redriven", refund_id=refund.id, status=pb.RefundStatus.Name(after.status))
    return after.status


async def _report(
    ctx: JobContext,
    tally: Tally,
    kind: sync.DiscrepancyKind.ValueType,
    refund: pb.Refund,
    *,
    reason: str = "",
) -> None:
    details = {
        "status": pb.RefundStatus.Name(refund.status).removeprefix("REFUND_STATUS_"),
        "amount": str(refund.amount),
        "currency": refund.currency,
        "created_at": refund.created_at.ToDatetime(tzinfo=UTC).isoformat(),
        "provider_refund_id": refund.provider_refund_id,
    }
    if reason:
        details["reason"] = reason
    await ctx.findings.report(
        tally, kind, payment_id=refund.payment_id, refund_id=refund.id, details=details
    )
