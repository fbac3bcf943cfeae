"""The use cases of ProviderSyncService that exist so far: applying a
provider event (webhook or catch-up), and the upkeep of the inbox (matching
events that arrived before their payment could be found, reporting the ones
that never match).

A verified event that can never be understood or stored (UnprocessableEvent)
is kept in the quarantine (redacted) and reported as an
UNPROCESSABLE_PROVIDER_EVENT discrepancy before the error goes back, carrying
the quarantine id: its callers acknowledge it (a redelivery could not help,
and the provider would retry it for days). Once the code is fixed, `replay`
applies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from payment_svc.domain.binding import Binding, bind, duplicate_note
from payment_svc.domain.errors import FieldViolation, InvalidArgument, UnprocessableEvent
from payment_svc.domain.inbox import (
    EventOutcome,
    EventTarget,
    EventWrite,
    InboxEvent,
    StoredEvent,
    event_findings,
    plan_inbox_write,
    refund_event_write,
)
from payment_svc.domain.model import format_payment_id
from payment_svc.domain.provider_events import EventPlan
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.records import NewQuarantined, Quarantined, quarantine_dedup_key
from payment_svc.domain.refund_events import refunded_total_note
from payment_svc.domain.refunds import RefundStatus
from payment_svc.domain.status import Source
from payment_svc.service_layer.ports import (
    DiscrepancyRepository,
    EventInbox,
    EventParser,
    QuarantineRepository,
)
from payment_svc.service_layer.refund_sync import apply_refund_event
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork
from payments_kit.cards import redact_card_numbers

log = structlog.get_logger("payment_svc.provider_sync")


@dataclass(frozen=True)
class ApplyProviderEvent:
    provider_event_id: str
    event_type: str
    payload: bytes
    source: Source
    # The caller could not read it as an event (the gateway says why): it
    # goes to the quarantine as it is.
    unreadable_reason: str = ""


class ProviderSyncService:
    def __init__(
        self,
        events: EventInbox,
        discrepancies: DiscrepancyRepository,
        *,
        unmatched_deadline_seconds: float,
        quarantine: QuarantineRepository,
        parse: EventParser,
        uow: Callable[[], AbstractUnitOfWork],
        on_undone: Callable[[Source], None] = lambda source: None,
    ) -> None:
        """`on_undone`: told each time a refund counted as given back
        fails (main wires it to the metric the alert reads)."""
        self._on_undone = on_undone
        self._uow = uow
        self._parse = parse
        self._quarantine = quarantine
        self._events = events
        self._discrepancies = discrepancies
        self._unmatched_deadline = unmatched_deadline_seconds

    async def apply_event(self, cmd: ApplyProviderEvent) -> EventOutcome:
        """What became of the event: applied, recorded, kept unmatched, a
        duplicate, or quarantined (an event that can never be understood or
        stored is a result too: its callers acknowledge it)."""
        try:
            return await self._apply(cmd)
        except UnprocessableEvent as exc:
            quarantine_id = str(await self._quarantine_event(cmd, exc))
            return EventOutcome(False, None, False, quarantine_id=quarantine_id)

    async def _apply(self, cmd: ApplyProviderEvent) -> EventOutcome:
        if cmd.unreadable_reason:
            raise UnprocessableEvent(
                [FieldViolation("payload", f"not an event: {cmd.unreadable_reason}")]
            )
        parsed = self._parse(cmd.payload)
        mismatch = [
            FieldViolation(name, "does not match the payload")
            for name, given, actual in (
                ("provider_event_id", cmd.provider_event_id, parsed.id),
                ("event_type", cmd.event_type, parsed.type),
            )
            # the payload's values are redacted: so is what is compared with them
            if given and redact_card_numbers(given) != actual
        ]
        if mismatch:
            raise InvalidArgument(mismatch)
        structlog.contextvars.bind_contextvars(provider_event_id=parsed.id)
        outcome = await apply_to_inbox(
            self._uow,
            InboxEvent(
                provider_event_id=parsed.id,
                event_type=parsed.type,
                created=parsed.created,
                stored_json=parsed.stored_json,
                observation=parsed.observation,
                source=cmd.source,
            ),
        )
        if outcome.undone:
            self._on_undone(cmd.source)
        if outcome.discrepancy is not None:
            log.error(
                "discrepancy",
                kind=outcome.discrepancy.value,
                payment_id=format_payment_id(outcome.payment_id) if outcome.payment_id else None,
                provider_payment_id=parsed.observation.provider_payment_id,
                event_type=parsed.type,
            )
        # DEBUG: the inbox is the record of every event; at INFO this line
        # cost more than the rest of the call.
        log.debug(
            "provider_event_received",
            event_type=parsed.type,
            duplicate=outcome.duplicate,
            applied=outcome.applied,
            matched=outcome.payment_id is not None,
        )
        return outcome

    async def _quarantine_event(
        self, cmd: ApplyProviderEvent, exc: UnprocessableEvent
    ) -> uuid.UUID:
        # Redacted as text; bytes that are not UTF-8 survive as they were.
        raw = cmd.payload.decode("utf-8", "surrogateescape")
        payload = redact_card_numbers(raw).encode("utf-8", "surrogateescape")
        reason = redact_card_numbers(str(exc))
        entry = NewQuarantined(
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload=payload,
            provider_event_id=_readable(cmd.provider_event_id),
            event_type=_readable(cmd.event_type),
            reason=reason,
            source=cmd.source.value,
        )
        # The entry and the discrepancy that reports it, in one transaction.
        async with self._uow() as uow:
            quarantine_id, deliveries = await uow.quarantine.keep(entry)
            await uow.discrepancies.report(
                DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT,
                None,
                None,
                {
                    "quarantine_id": str(quarantine_id),
                    "provider_event_id": entry.provider_event_id or "",
                    "event_type": entry.event_type or "",
                    "reason": entry.reason,
                },
                dedup=quarantine_dedup_key(quarantine_id),
            )
            await uow.commit()
        log.error(
            "provider_event_quarantined",
            kind=DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT.value,
            quarantine_id=str(quarantine_id),
            provider_event_id=_readable(cmd.provider_event_id),
            reason=reason,
            deliveries=deliveries,
        )
        return quarantine_id

    async def quarantined(self, *, include_replayed: bool, limit: int) -> list[Quarantined]:
        return await self._quarantine.list(include_replayed=include_replayed, limit=limit)

    async def replay(
        self, quarantine_id: uuid.UUID, by: str
    ) -> tuple[EventOutcome | None, Quarantined]:
        """Applies a quarantined event again. When it now goes through, the
        entry is marked replayed and its discrepancy resolved; when it still
        cannot, the outcome is None and the entry carries the new reason."""
        entry = await self._quarantine.get(quarantine_id)
        outcome = await self.apply_event(
            ApplyProviderEvent("", "", entry.payload, Source(entry.source))
        )
        if outcome.quarantine_id is not None:
            return None, await self._quarantine.get(uuid.UUID(outcome.quarantine_id))
        async with self._uow() as uow:
            entry = await uow.quarantine.replayed(quarantine_id)
            await uow.discrepancies.resolve_open(
                quarantine_dedup_key(quarantine_id), by, "replayed from the quarantine"
            )
            await uow.commit()
        log.info("quarantined_event_replayed", quarantine_id=str(quarantine_id), by=by)
        return outcome, entry

    async def rematch(self, limit: int = 100) -> int:
        """Tries again to match inbox events that matched no payment yet, the
        longest untried first, each in a unit of work of its own: one slow or
        broken row costs one database call, never the round (a round in one
        transaction could outlast the call's deadline and be rolled back
        every time, retrying the same rows for ever). A row that no longer
        parses goes to the back of the queue and is logged; past the
        deadline it is reported like any unmatched event."""
        matched = 0
        for event_id in await self._events.unmatched_ids(limit):
            done = await self._rematch_one(event_id)
            if done:
                matched += 1
            elif done is None:
                log.error("inbox_event_unreadable", provider_event_id=event_id)
        return matched

    async def _rematch_one(self, event_id: str) -> bool | None:
        """True: matched; False: still unmatched (or taken); None: unreadable."""
        async with self._uow() as uow:
            row = await uow.inbox.claim_unmatched(event_id)
            if row is None:
                return False  # matched meanwhile, or another replica has it
            try:
                event: InboxEvent | None = self._inbox_event(row)
            except UnprocessableEvent:
                event = None
            if event is not None:
                target = await uow.inbox.find_payment(event.observation)
                if target is not None:
                    plan, write = await _plan(uow, target, event, authoritative=False)
                    await uow.inbox.record_match(event, write)
                    if event.observation.refund_event and not plan.duplicate:
                        _, _, undone = await apply_refund_event(uow, target, event)
                        if undone:
                            self._on_undone(event.source)
                    for kind, details in event_findings(target, event, plan):
                        await uow.discrepancies.report(
                            kind, write.payment_id, event.observation.provider_payment_id, details
                        )
                    await uow.commit()
                    return True
            await uow.inbox.mark_attempted(event_id)
            await uow.commit()
            return None if event is None else False

    async def report_overdue(self) -> int:
        """Unmatched events past the deadline become UNMATCHED_PROVIDER_EVENT
        discrepancies, logged at ERROR once each."""
        rows = await self._events.overdue_unmatched(self._unmatched_deadline)
        for row in rows:
            log.error(
                "provider_event_unmatched",
                kind=DiscrepancyKind.UNMATCHED_PROVIDER_EVENT.value,
                provider_event_id=row.provider_event_id,
                event_type=row.event_type,
                provider_object_id=row.provider_object_id,
                received_at=row.received_at.isoformat(),
            )
            await self._discrepancies.report(
                DiscrepancyKind.UNMATCHED_PROVIDER_EVENT,
                None,
                row.provider_object_id or row.provider_event_id,
                {
                    "provider_event_id": row.provider_event_id,
                    "event_type": row.event_type,
                    "metadata_payment_id": row.metadata_payment_id or "",
                },
            )
        return len(rows)

    async def count_unmatched(self) -> int:
        return await self._events.count_unmatched()

    def _inbox_event(self, row: StoredEvent) -> InboxEvent:
        parsed = self._parse(row.payload.encode())
        return InboxEvent(
            provider_event_id=parsed.id,
            event_type=parsed.type,
            created=row.provider_created_at,
            stored_json=parsed.stored_json,
            observation=parsed.observation,
            source=Source(row.source),
        )


async def apply_to_inbox(
    uow_factory: Callable[[], AbstractUnitOfWork],
    event: InboxEvent,
    *,
    authoritative: bool = False,
) -> EventOutcome:
    """One event, in one unit of work: find and lock its payment, plan with
    the domain rules, write it (the inbox row, the payment, its history: one
    statement), report what it reveals, commit. A redelivery writes nothing;
    with no payment the event is kept in the inbox unmatched. (Also what
    `payments bench` measures as the raw-SQL limit: payments_dev/loadgen.py.)"""
    async with uow_factory() as uow:
        target = await uow.inbox.find_payment(event.observation)
        if target is None:
            earlier = await uow.inbox.insert_unmatched(event)
            await uow.commit()
            return earlier or EventOutcome(False, None, False)
        plan, write = await _plan(uow, target, event, authoritative=authoritative)
        earlier = await uow.inbox.insert_matched(event, write)
        if earlier is not None:
            await uow.commit()
            return earlier
        if event.observation.refund_event and not plan.duplicate:
            # The refunds it shows (the inbox row above makes it once).
            applied, found, undone = await apply_refund_event(uow, target, event)
            await uow.commit()
            return EventOutcome(False, write.payment_id, applied, found, undone)
        found = None
        for kind, details in event_findings(target, event, plan):
            found = kind
            await uow.discrepancies.report(
                kind, write.payment_id, event.observation.provider_payment_id, details
            )
        await uow.commit()
        return EventOutcome(False, write.payment_id, plan.applied, found)


async def _plan(
    uow: AbstractUnitOfWork, target: EventTarget, event: InboxEvent, *, authoritative: bool
) -> tuple[EventPlan, EventWrite]:
    """The payment's plan for an event. An event about refunds writes only
    its inbox row here (apply_refund_event does the rest); a charge.refunded
    that does not list its refunds moves nothing (its total is evidence:
    domain/reversals.py); a dispute derives amount_reversed from the
    payment's succeeded refunds and disputes."""
    obs = event.observation
    payment = target.payment
    if obs.refund_event:
        if bind(payment.provider_payment_id, obs.provider_payment_id) is Binding.DUPLICATE:
            # Refunds of another provider payment carrying our payment id:
            # DUPLICATE_PROVIDER_PAYMENT, as any event of it (domain/binding.py).
            note = duplicate_note(payment.provider_payment_id, obs.provider_payment_id)
            write = refund_event_write(target, note)
            return EventPlan(applied=False, touch=False, duplicate=True, note=note), write
        return EventPlan(applied=False, touch=False), refund_event_write(target)
    if not obs.reversal:
        return plan_inbox_write(target, event, authoritative=authoritative)
    refunds = await uow.refunds.of_payment(payment.id)
    succeeded = sum(r.amount for r in refunds if r.status is RefundStatus.SUCCEEDED)
    plan, write = plan_inbox_write(
        target, event, authoritative=authoritative, succeeded_refunds=succeeded
    )
    if obs.amount_reversed is not None and not obs.reversal_added and plan.touch:
        # A refunded total: evidence, said in the history against our refunds.
        write = dataclasses.replace(
            write, note=refunded_total_note(obs.amount_reversed, refunds, payment)
        )
    return plan, write


def _readable(value: str) -> str | None:
    """The caller's id or type for the quarantine's listing, when it is text
    Postgres can keep; never a card number."""
    if not value or "\x00" in value:
        return None
    return redact_card_numbers(value[:255])
