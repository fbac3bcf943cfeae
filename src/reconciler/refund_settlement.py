"""Settlement diff, refunds (settlement.py's docstring): the provider's
refunds of one page of intents against ours, both ways, before the
payments' own verdicts."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import structlog

from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_stripe.objects import ProviderIntent, ProviderRefund
from payments_stripe.reader import ProviderError
from reconciler import rules
from reconciler.context import JobContext
from reconciler.refund_sweep import apply_refund
from reconciler.retry import retrying
from reconciler.runs import JobFailed, Tally

log = structlog.get_logger("reconciler")


async def check_refunds(
    ctx: JobContext,
    tally: Tally,
    intents: list[ProviderIntent],
    by_provider_id: Mapping[str, rules.Ours],
    limit: asyncio.Semaphore,
    by_id: Mapping[str, rules.Ours] | None = None,
) -> list[ProviderIntent]:
    """Reconciles the refunds of the page's intents that are ours and have
    some refunded (at the provider or by our books); returns the intents
    with amount_refunded as their succeeded refunds took (what payment-svc
    counts), for the payments' verdicts. An intent whose refunds could not
    be listed is an error of the run and is left out of the verdicts: its
    amount_refunded counts pending refunds too, and is no evidence of what
    was given back; the next run lists them again."""
    todo = [
        i
        for i in intents
        if i.id in by_provider_id
        and (i.amount_refunded > 0 or by_provider_id[i.id].amount_reversed > 0)
    ]
    # Refunds of a provider payment we never recorded: payment-svc reports
    # each as UNRECORDED_PROVIDER_REFUND (its payment is UNRECORDED_PROVIDER_PAYMENT).
    strangers = [
        i
        for i in intents
        if i.id not in by_provider_id
        and i.amount_refunded > 0
        and not (i.payment_id and i.payment_id in (by_id or {}))
    ]
    async with asyncio.TaskGroup() as group:
        for intent in strangers:
            group.create_task(_strangers(ctx, tally, intent, limit))
    if not todo:
        return intents
    try:
        ours = await retrying(
            lambda: ctx.client.lookup_refunds(payment_ids=[by_provider_id[i.id].id for i in todo])
        )
    except PaymentsClientError as exc:
        raise JobFailed(f"LookupRefunds: {exc}") from None
    refunded: dict[str, int] = {}
    unlisted: set[str] = set()

    async def one(intent: ProviderIntent) -> None:
        payment = by_provider_id[intent.id]
        mine = [r for r in ours if r.payment_id == payment.id]
        settled = _settled_alike(intent, mine)
        if settled is not None:
            refunded[intent.id] = settled
            return
        try:
            async with limit:
                theirs = await ctx.provider.refunds_of(intent.id)
        except ProviderError as exc:
            tally.errors += 1
            unlisted.add(intent.id)
            log.warning("provider_refunds_failed", payment_id=payment.id, error=str(exc))
            return
        tally.scanned += len(theirs)
        refunded[intent.id] = rules.provider_refunded(theirs)
        await _compare(ctx, tally, payment, intent, theirs, mine)

    async with asyncio.TaskGroup() as group:
        for intent in todo:
            group.create_task(one(intent))
    return [
        dataclasses.replace(i, amount_refunded=refunded[i.id]) if i.id in refunded else i
        for i in intents
        if i.id not in unlisted
    ]


def _settled_alike(intent: ProviderIntent, mine: list[pb.Refund]) -> int | None:
    """What the intent's refunds took, when its total says that our books
    already hold them: every refund of ours final, those that succeeded known
    to the provider by id, and their sum what the provider counts refunded
    (which would include a pending one of its own). Then listing the intent's
    refunds could teach nothing the total does not (one call less per
    refunded intent: a busy window has thousands). None: they must be listed."""
    final = (pb.REFUND_STATUS_SUCCEEDED, pb.REFUND_STATUS_FAILED)
    if not mine or any(r.status not in final for r in mine):
        return None
    succeeded = [r for r in mine if r.status == pb.REFUND_STATUS_SUCCEEDED]
    if any(not r.provider_refund_id for r in succeeded):
        return None
    total = sum(r.amount for r in succeeded)
    return total if total == intent.amount_refunded else None


async def _strangers(
    ctx: JobContext, tally: Tally, intent: ProviderIntent, limit: asyncio.Semaphore
) -> None:
    try:
        async with limit:
            theirs = await ctx.provider.refunds_of(intent.id)
    except ProviderError as exc:
        tally.errors += 1
        log.warning("provider_refunds_failed", provider_payment_id=intent.id, error=str(exc))
        return
    tally.scanned += len(theirs)
    for refund in theirs:
        await apply_refund(ctx, tally, refund, provider_payment_id=intent.id)


async def _compare(
    ctx: JobContext,
    tally: Tally,
    payment: rules.Ours,
    intent: ProviderIntent,
    theirs: list[ProviderRefund],
    mine: list[pb.Refund],
) -> None:
    by_provider = {r.provider_refund_id: r for r in mine if r.provider_refund_id}
    by_id = {r.id: r for r in mine}
    after = {r.id: r.status for r in mine}
    amounts = {r.id: r.amount for r in mine}
    new_succeeded, unsure = 0, False
    for refund in theirs:
        ours = by_provider.get(refund.id) or by_id.get(refund.refund_id)
        if ours is not None and rules.refund_agrees(ours, refund):
            continue
        # Absent (made at the provider, its events lost) or different:
        # payment-svc decides (records it, moves ours, or reports).
        status = await apply_refund(
            ctx,
            tally,
            refund,
            refund_id=ours.id if ours is not None else "",
            provider_payment_id=intent.id,
        )
        if status is None:
            unsure = True  # not done: the totals are not worth comparing
        elif ours is not None:
            after[ours.id] = status
        elif status == pb.REFUND_STATUS_SUCCEEDED:
            new_succeeded += refund.amount
    # The other way: ours that succeeded, unknown to the provider's list.
    listed = {r.id for r in theirs}
    for r in mine:
        if r.status == pb.REFUND_STATUS_SUCCEEDED and r.provider_refund_id not in listed:
            await _report(
                ctx,
                tally,
                sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER,
                payment,
                r.id,
                {"provider_refund_id": r.provider_refund_id, "amount": str(r.amount)},
            )
    if unsure:
        return
    ours_total = new_succeeded + sum(
        amounts[i] for i, s in after.items() if s == pb.REFUND_STATUS_SUCCEEDED
    )
    theirs_total = rules.provider_refunded(theirs)
    if ours_total != theirs_total:
        await _report(
            ctx,
            tally,
            sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH,
            payment,
            "",
            {
                "reason": "refunded totals differ",
                "our_refunded": str(ours_total),
                "provider_refunded": str(theirs_total),
                "currency": payment.currency,
            },
        )


async def _report(
    ctx: JobContext,
    tally: Tally,
    kind: sync.DiscrepancyKind.ValueType,
    payment: rules.Ours,
    refund_id: str,
    details: dict[str, str],
) -> None:
    await ctx.findings.report(
        tally,
        kind,
        payment_id=payment.id,
        provider_payment_id=payment.provider_payment_id,
        refund_id=refund_id,
        details=details,
    )
