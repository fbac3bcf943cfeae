"""Refunds as the provider reports them, in the service layer:

observe_refund      one provider refund (an event's, or the reconciler's
                    fetch) against ours, in the caller's unit of work,
                    under the payment's lock: found by provider id or
                    metadata.refund_id, else recorded as ours; moved by
                    domain/refund_events.decide_refund; reported
apply_refund_event  every refund an event shows (ApplyProviderEvent and
                    the inbox's rematch call it after the inbox row)
RefundSyncService   ProviderSyncService's refund RPCs: the sweep's work
                    list with leases, an authoritative snapshot of one
                    refund (or of one the provider has that we may not),
                    the re-drive, look-ups
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from payment_svc.domain.binding import within_redrive_window
from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    RefundAlreadyAtProvider,
    RefundNotRedrivable,
)
from payment_svc.domain.inbox import EventTarget, InboxEvent
from payment_svc.domain.model import Payment
from payment_svc.domain.provider_events import ProviderObservation, StateRank
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.refund_events import (
    ProviderRefundFact,
    ProviderRefundWords,
    RefundAction,
    RefundState,
    decide_refund,
    refund_rank,
)
from payment_svc.domain.refunds import (
    ProviderRefundRequest,
    Refund,
    RefundOutcome,
    RefundStatus,
    RefundWrite,
    parse_refund_id,
)
from payment_svc.domain.status import Source
from payment_svc.service_layer.discrepancies import refund_uuid
from payment_svc.service_layer.ids import new_refund_uuid
from payment_svc.service_layer.pagination import (
    LeasedPageQuery,
    PageTokens,
    leased_page,
)
from payment_svc.service_layer.payments import payment_uuid
from payment_svc.service_layer.ports import RefundReader, RefundSyncRepository
from payment_svc.service_layer.refunds import RefundsService
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger("payment_svc.refund_sync")


@dataclass
class Observed:
    payment: Payment
    refund: Refund | None
    # the refund moved, or was recorded (a history entry that applied)
    moved: bool = False
    recorded: bool = False
    wrote: bool = False
    findings: list[DiscrepancyKind] = field(default_factory=list)
    # a refund counted as given back failed (domain/reversals.undone): alerted
    undone: bool = False


async def _find(uow: AbstractUnitOfWork, fact: ProviderRefundFact) -> Refund | None:
    """Ours, locked: by the provider's id, else by our id in its metadata."""
    refund = await uow.refunds.by_provider_id(fact.provider_refund_id)
    if refund is None and fact.metadata_refund_id:
        ours = parse_refund_id(fact.metadata_refund_id)
        if ours is not None:
            try:
                refund = await uow.refunds.get_for_update(ours)
            except NotFound:
                refund = None
    return refund


async def observe_refund(
    uow: AbstractUnitOfWork,
    payment: Payment,
    fact: ProviderRefundFact,
    *,
    source: Source,
    refund: Refund | None = None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    event_type: str | None = None,
    authoritative: bool = False,
    record_unchanged: bool = True,
) -> Observed:
    """One provider refund, `payment` locked by the caller."""
    if refund is None:
        refund = await _find(uow, fact)
    refunds = await uow.refunds.of_payment(payment.id)
    state = await uow.refund_sync.provider_state(refund.id) if refund else RefundState()
    decision = decide_refund(
        payment,
        refunds,
        refund,
        fact,
        new_id=new_refund_uuid(),
        source=source,
        state=state,
        occurred_at=occurred_at,
        event_id=event_id,
        event_type=event_type,
        authoritative=authoritative,
    )
    seen = Observed(payment, refund)
    unchanged = (
        decision.action is RefundAction.EXISTING
        and refund is not None
        and refund.status is fact.status
        and decision.plan.write is RefundWrite.RECORD
    )
    if unchanged and not record_unchanged:
        return seen  # a charge.refunded listing a refund we have as it is
    if decision.action is RefundAction.INSERT:
        assert decision.new is not None
        inserted = await uow.refund_sync.insert_observed(
            payment, decision.new, decision.plan, decision.outcome
        )
        if inserted is None:
            # Recorded meanwhile (the unique provider id): decide on it as it is.
            return await observe_refund(
                uow,
                payment,
                fact,
                source=source,
                occurred_at=occurred_at,
                event_id=event_id,
                event_type=event_type,
                authoritative=authoritative,
                record_unchanged=record_unchanged,
            )
        seen.refund, seen.payment = inserted
        seen.moved = seen.recorded = seen.wrote = True
        log.info(
            "provider_refund_recorded",
            refund_id=seen.refund.public_id,
            provider_refund_id=fact.provider_refund_id,
            payment_id=payment.public_id,
            amount=fact.amount,
            status=fact.status.value,
        )
    elif refund is not None and decision.plan.write is not RefundWrite.NOTHING:
        seen.refund, seen.payment = await uow.refunds.record(
            payment, refund, decision.outcome, decision.plan, source=source
        )
        seen.moved = decision.plan.write is RefundWrite.MOVE
        seen.wrote = True
        if decision.touch and occurred_at is not None:
            await uow.refund_sync.touch(
                refund.id, RefundState(occurred_at, int(refund_rank(fact.status)))
            )
    elif refund is None and decision.plan.write is RefundWrite.RECORD:
        await uow.refund_sync.record_entry(
            payment, decision.outcome, decision.plan.note or "", source=source
        )
        seen.wrote = True
    if seen.moved and decision.plan.undone:
        seen.undone = True
        log.error(
            "reversal_undone",
            payment_id=payment.public_id,
            refund_id=seen.refund.public_id if seen.refund else None,
            provider_refund_id=fact.provider_refund_id,
            refund_status=fact.status.value,
            amount_reversed_before=payment.amount_reversed,
            amount_reversed=decision.plan.amount_reversed,
            status=decision.plan.payment_to.value,
            source=source.value,
        )
    if decision.finding is not None:
        kind, details = decision.finding
        await uow.discrepancies.report(
            kind,
            payment.id,
            payment.provider_payment_id,
            details,
            refund_id=seen.refund.id if seen.refund else None,
        )
        seen.findings.append(kind)
    return seen


async def apply_refund_event(
    uow: AbstractUnitOfWork, target: EventTarget, event: InboxEvent
) -> tuple[bool, DiscrepancyKind | None, bool]:
    """Every refund the event shows, after its inbox row (a redelivery never
    gets here). Whether anything moved, a discrepancy it revealed, and
    whether money counted as given back no longer is (alerted)."""
    payment = target.payment
    listing = event.observation.refund_listing
    moved, wrote, found, undone = False, False, None, False
    for fact in event.observation.refunds:
        seen = await observe_refund(
            uow,
            payment,
            fact,
            source=event.source,
            occurred_at=event.created,
            event_id=event.provider_event_id,
            event_type=event.event_type,
            record_unchanged=not listing,
        )
        payment = seen.payment
        moved, wrote = moved or seen.moved, wrote or seen.wrote
        undone = undone or seen.undone
        found = found or (seen.findings[0] if seen.findings else None)
    if not wrote:
        # A charge.refunded whose refunds we have as they are: in the
        # history all the same, moving nothing.
        await uow.refund_sync.record_entry(
            payment,
            RefundOutcome(
                RefundStatus.SUCCEEDED,
                provider_event_id=event.provider_event_id,
                provider_event_type=event.event_type,
                provider_created_at=event.created,
            ),
            f"refunds already recorded, amount_reversed {payment.amount_reversed} "
            f"of {payment.amount}",
            source=event.source,
        )
    return moved, found, undone


@dataclass(frozen=True)
class RefundWork:
    refunds: list[tuple[Refund, str | None]]
    next_page_token: str


@dataclass(frozen=True)
class RefundReconciled:
    refund: Refund | None
    payment: Payment | None
    changed: bool
    recorded: bool
    discrepancies: list[DiscrepancyKind]
    # a refund counted as given back failed (alerted)
    undone: bool = False


class RefundSyncService:
    def __init__(
        self,
        store: RefundSyncRepository,
        refunds: RefundsService,
        *,
        uow: Callable[[], AbstractUnitOfWork],
        redrive_window: float,
        page_tokens: PageTokens,
        read_refund: RefundReader,
        on_undone: Callable[[Source], None] = lambda source: None,
    ) -> None:
        self._read_refund = read_refund
        self._on_undone = on_undone
        self._store = store
        self._refunds = refunds
        self._uow = uow
        self._redrive_window = redrive_window
        self._tokens = page_tokens

    async def work_list(
        self,
        *,
        older_than_seconds: float,
        page_size: int,
        page_token: str,
        owner: str,
        lease_seconds: float | None,
    ) -> RefundWork:
        query = LeasedPageQuery(older_than_seconds, page_size, page_token, owner, lease_seconds)
        found, token = await leased_page(
            self._tokens,
            "refunds_to_reconcile",
            query,
            lambda limit, after: self._store.to_reconcile(
                older_than_seconds=older_than_seconds,
                limit=limit,
                after=after,
                owner=owner,
                lease_seconds=lease_seconds,
            ),
            lambda item: PageCursor(sort_key=item[0].updated_at, id=item[0].id),
        )
        return RefundWork(found, token)

    async def reconcile(
        self, refund_id: str, provider_payment_id: str, words: ProviderRefundWords | None
    ) -> RefundReconciled:
        """The provider's authoritative answer about one refund, in its words
        (read by the provider adapter). `words` None: the provider does not
        know it (nothing moves: the reconciler decides between a re-drive and
        a discrepancy)."""
        fact = None if words is None else self._read_refund(words)
        if refund_id:
            return await self._reconcile_ours(refund_uuid(refund_id), fact)
        if fact is None:
            raise InvalidArgument(
                [FieldViolation("snapshot.found", "a refund the provider has, or our refund_id")]
            )
        if not provider_payment_id:
            raise InvalidArgument(
                [FieldViolation("provider_payment_id", "is needed without refund_id")]
            )
        return await self._reconcile_theirs(provider_payment_id, fact)

    async def _reconcile_ours(
        self, refund_id: uuid.UUID, fact: ProviderRefundFact | None
    ) -> RefundReconciled:
        ours = await self._store.get_any(refund_id)
        async with self._uow() as uow:
            payment = await uow.payments.get_for_update(ours.payment_id)
            refund = await uow.refunds.get_for_update(refund_id)
            if fact is None:
                await uow.refund_sync.release_lease(refund_id)
                await uow.commit()
                return RefundReconciled(refund, payment, False, False, [])
            seen = await observe_refund(
                uow, payment, fact, source=Source.RECONCILER, refund=refund, authoritative=True
            )
            await uow.refund_sync.release_lease(refund_id)
            await uow.commit()
        if seen.undone:
            self._on_undone(Source.RECONCILER)
        if seen.moved:
            log.info(
                "refund_reconciled",
                refund_id=refund.public_id,
                status=seen.refund.status.value if seen.refund else None,
            )
        return RefundReconciled(
            seen.refund, seen.payment, seen.moved, False, seen.findings, seen.undone
        )

    async def _reconcile_theirs(
        self, provider_payment_id: str, fact: ProviderRefundFact
    ) -> RefundReconciled:
        async with self._uow() as uow:
            target = await uow.inbox.find_payment(
                ProviderObservation(
                    provider_payment_id=provider_payment_id,
                    metadata_payment_id=None,
                    status=None,
                    rank=StateRank.REVERSED,
                    occurred_at=None,
                )
            )
            if target is None:
                await uow.discrepancies.report(
                    DiscrepancyKind.UNRECORDED_PROVIDER_REFUND,
                    None,
                    provider_payment_id,
                    {
                        "provider_refund_id": fact.provider_refund_id,
                        "amount": str(fact.amount),
                        "currency": fact.currency.upper(),
                        "provider_status": fact.provider_status,
                        "metadata_refund_id": fact.metadata_refund_id or "",
                    },
                )
                await uow.commit()
                return RefundReconciled(
                    None, None, False, False, [DiscrepancyKind.UNRECORDED_PROVIDER_REFUND]
                )
            seen = await observe_refund(
                uow, target.payment, fact, source=Source.RECONCILER, authoritative=True
            )
            if seen.refund is not None:
                await uow.refund_sync.release_lease(seen.refund.id)
            await uow.commit()
        if seen.undone:
            self._on_undone(Source.RECONCILER)
        return RefundReconciled(
            seen.refund, seen.payment, seen.moved, seen.recorded, seen.findings, seen.undone
        )

    async def redrive(self, refund_id: str, *, deadline: float | None = None) -> Refund:
        """Asks the provider again with the same idempotency key (our refund
        id) on RefundPayment's attempt path: only a refund the provider never
        gave an id for, not final, within the re-drive window."""
        refund = await self._store.get_any(refund_uuid(refund_id))
        if refund.provider_refund_id is not None:
            raise RefundAlreadyAtProvider(
                f"refund has provider refund {refund.provider_refund_id}: the provider has it, "
                "re-driving could refund twice"
            )
        if refund.status.is_final:
            raise RefundNotRedrivable(f"refund is {refund.status.value}: nothing to re-drive")
        if not within_redrive_window(refund.created_at, datetime.now(UTC), self._redrive_window):
            raise RefundNotRedrivable(
                "past the re-drive window: the provider may have forgotten the key"
            )
        payment = await self._payment_of(refund)
        if payment.provider_payment_id is None:
            raise RefundNotRedrivable("its payment has no provider payment")
        ask = ProviderRefundRequest(
            refund_id=refund.public_id,
            payment_id=payment.public_id,
            provider_payment_id=payment.provider_payment_id,
            amount=refund.amount,
            currency=refund.currency,
            reason=refund.reason,
        )
        log.info("refund_redrive", refund_id=refund.public_id, payment_id=payment.public_id)
        return await self._refunds.attempt_again(refund, ask, deadline, source=Source.RECONCILER)

    async def _payment_of(self, refund: Refund) -> Payment:
        async with self._uow() as uow:
            # a read: the lock ends with the block (no write follows)
            return await uow.payments.get_for_update(refund.payment_id)

    async def lookup(
        self, refund_ids: list[str], provider_ids: list[str], payment_ids: list[str]
    ) -> list[Refund]:
        if len(refund_ids) + len(provider_ids) + len(payment_ids) > 1000:
            raise InvalidArgument([FieldViolation("refund_ids", "at most 1000 ids at once")])
        return await self._store.lookup(
            [refund_uuid(r, "refund_ids") for r in refund_ids],
            provider_ids,
            [payment_uuid(p) for p in payment_ids],
        )
