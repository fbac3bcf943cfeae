"""Settlement diff: the provider's payment intents created in
[now - RECONCILER_SETTLEMENT_WINDOW_SECONDS, now - RECONCILER_GRACE_SECONDS]
against ours, one page at a time:

    GET /v1/payment_intents?created[gte]&created[lte]&expand[]=data.latest_charge
      └─ LookupPayments(metadata payment ids, provider ids)   one call per page
           ours and the intent agree        -> nothing
           they differ                      -> ReconcilePayment(snapshot): payment-svc
                                               follows the provider, and records
                                               AMOUNT_MISMATCH (amount untouched) or
                                               FINAL_STATE_CONTRADICTED itself
           carries the id of one of ours
           bound to another intent          -> ReconcilePayment(snapshot): payment-svc
                                               records DUPLICATE_PROVIDER_PAYMENT and
                                               leaves the payment as it is
           not ours, money moved            -> UNRECORDED_PROVIDER_PAYMENT
           not ours, nothing moved          -> ignored
      └─ refunds, before the payments' verdicts, of every intent of ours with
         some refunded (theirs or ours): GET /v1/refunds?payment_intent=, and
         LookupRefunds(the page's payments)                      one call per page
           theirs, ours agrees               -> nothing
           theirs, ours differs or is absent -> ReconcileRefund: payment-svc moves
                                                ours, records it as ours (made at
                                                the provider directly), or reports
                                                REFUND_AMOUNT_MISMATCH
           ours succeeded, not theirs        -> REFUND_MISSING_AT_PROVIDER
           refunded totals still differ      -> REFUND_AMOUNT_MISMATCH (the payment)
         the intent's refunded amount is then what its succeeded refunds took
         (Stripe's amount_refunded counts pending ones too); an intent whose
         refunds could not be listed is an error of the run and gets no
         verdict (its total is no evidence: the next run lists them again)
      └─ a settled payment whose amount_reversed differs from the provider's
         succeeded refunds plus disputes -> ReconcilePayment: payment-svc
         records REFUND_AMOUNT_MISMATCH and moves nothing (a total is
         evidence, never a floor)
    ListPaymentsCreated(same window, SUCCEEDED or REVERSED)      the other way round
      └─ ours whose provider id was not in the provider's list
           retrieve it: unknown to the provider -> MISSING_AT_PROVIDER
                        there after all          -> nothing (listing edges)

This is also what brings final payments to the truth (a refund, a dispute, a
SUCCEEDED the provider says FAILED): the sweep only lists non-final ones.
Findings are deduplicated by payment-svc, so replicas may repeat them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_stripe.objects import ProviderIntent
from payments_stripe.reader import NotFoundAtProvider, ProviderError
from reconciler import convert, rules
from reconciler.context import JobContext
from reconciler.refund_settlement import check_refunds
from reconciler.retry import retrying
from reconciler.runs import JobFailed, Tally

log = structlog.get_logger("reconciler")


async def settlement_diff(ctx: JobContext, tally: Tally) -> None:
    now = ctx.now()
    since = int((now - timedelta(seconds=ctx.settings.settlement_window_seconds)).timestamp())
    until = int((now - timedelta(seconds=ctx.settings.grace_seconds)).timestamp())
    starting_after: str | None = None
    seen: set[str] = set()
    while True:
        try:
            page = await ctx.provider.intents_page(
                created_gte=since,
                created_lte=until,
                starting_after=starting_after,
                limit=ctx.settings.page_size,
            )
        except ProviderError as exc:
            raise JobFailed(f"provider payment intents: {exc}") from None
        if not page.items:
            break
        seen.update(i.id for i in page.items)
        await _check_page(ctx, tally, page.items)
        if not page.has_more:
            break
        starting_after = page.items[-1].id
    await _ours_missing_at_provider(
        ctx,
        tally,
        datetime.fromtimestamp(since, UTC),
        datetime.fromtimestamp(until + 1, UTC),
        seen,
    )


async def _ours_missing_at_provider(
    ctx: JobContext, tally: Tally, after: datetime, before: datetime, seen: set[str]
) -> None:
    """Our settled payments the provider's list did not show: asked one by one
    (the truth), reported when the provider has never heard of them."""
    token = ""
    while True:
        page_token = token
        try:
            payments, token = await retrying(
                lambda: ctx.client.list_payments_created(
                    created_after=after,
                    created_before=before,
                    statuses=[pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_REVERSED],
                    page_size=ctx.settings.page_size,
                    page_token=page_token,  # noqa: B023 - awaited before the next round
                )
            )
        except PaymentsClientError as exc:
            raise JobFailed(f"ListPaymentsCreated: {exc}") from None
        for payment in payments:
            if not payment.provider_payment_id or payment.provider_payment_id in seen:
                continue
            tally.scanned += 1
            try:
                await ctx.provider.retrieve_intent(payment.provider_payment_id)
            except NotFoundAtProvider:
                await _missing(ctx, tally, payment)
            except ProviderError as exc:
                tally.errors += 1
                log.warning("provider_fetch_failed", payment_id=payment.id, error=str(exc))
        if not token:
            return


async def _missing(ctx: JobContext, tally: Tally, payment: pb.Payment) -> None:
    await ctx.findings.report(
        tally,
        sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER,
        payment_id=payment.id,
        provider_payment_id=payment.provider_payment_id,
        details={
            "our_status": pb.PaymentStatus.Name(payment.status),
            "amount": str(payment.amount),
            "currency": payment.currency,
        },
    )


async def _check_page(ctx: JobContext, tally: Tally, intents: list[ProviderIntent]) -> None:
    tally.scanned += len(intents)
    try:
        found = await retrying(
            lambda: ctx.client.lookup_payments(
                payment_ids={i.payment_id for i in intents if i.payment_id},
                provider_payment_ids={i.id for i in intents},
            )
        )
    except PaymentsClientError as exc:
        raise JobFailed(f"LookupPayments: {exc}") from None
    ours = [convert.ours(p) for p in found]
    by_provider_id = {o.provider_payment_id: o for o in ours if o.provider_payment_id}
    by_id = {o.id: o for o in ours}
    limit = asyncio.Semaphore(ctx.settings.concurrency)
    intents = await check_refunds(ctx, tally, intents, by_provider_id, limit, by_id)

    async def check(intent: ProviderIntent) -> None:
        verdict, mine = rules.settlement_verdict(intent, by_provider_id, by_id)
        async with limit:
            if verdict in (rules.Verdict.RECONCILE, rules.Verdict.DUPLICATE) and mine is not None:
                await _reconcile(ctx, tally, mine.id, intent)
            elif verdict is rules.Verdict.UNRECORDED:
                await _unrecorded(ctx, tally, intent)

    async with asyncio.TaskGroup() as group:
        for intent in intents:
            group.create_task(check(intent))


async def _reconcile(
    ctx: JobContext, tally: Tally, payment_id: str, intent: ProviderIntent
) -> None:
    try:
        reply = await retrying(
            lambda: ctx.client.reconcile_payment(payment_id, convert.snapshot(intent, ctx.now()))
        )
    except PaymentsClientError as exc:
        tally.errors += 1
        log.warning("reconcile_payment_failed", payment_id=payment_id, error=str(exc))
        return
    tally.fixed += reply.changed
    ctx.findings.recorded_by_payment_svc(tally, reply.discrepancies, payment_id, intent.id)


async def _unrecorded(ctx: JobContext, tally: Tally, intent: ProviderIntent) -> None:
    details = {
        "amount": str(intent.amount),
        "currency": intent.currency,
        "provider_status": intent.status,
        "provider_created_at": datetime.fromtimestamp(intent.created, UTC).isoformat(),
    }
    if intent.payment_id:
        details["metadata_payment_id"] = intent.payment_id
    await ctx.findings.report(
        tally,
        sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT,
        provider_payment_id=intent.id,
        details=details,
    )
