"""The unit of work: one database transaction around one use case.

    async with uow_factory() as uow:
        payment = await uow.payments.get_for_update(payment_id)
        ...decide with the domain rules...
        await uow.discrepancies.report(...)
        await uow.commit()

Locks are taken in one order: a payment, then its refunds (a refund's
change takes its payment's lock first: it may move the payment).

Nothing is kept unless commit() is called: leaving the block without it (an
error, a return) rolls back. No network call is made inside the block.
Adapters: adapters/postgres_uow.py; in memory: tests/payment_svc/fakes.py.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, Self

from payment_svc.domain.corrections import Correction
from payment_svc.domain.inbox import EventOutcome, EventTarget, EventWrite, InboxEvent, StoredEvent
from payment_svc.domain.model import Payment, PaymentRow
from payment_svc.domain.provider_events import ProviderObservation
from payment_svc.domain.reconciliation import DiscrepancyKind, SnapshotPlan
from payment_svc.domain.records import NewQuarantined, Quarantined, Reported
from payment_svc.domain.refund_events import RefundState
from payment_svc.domain.refunds import NewRefund, Refund, RefundOutcome, RefundPlan
from payment_svc.domain.status import Source


class LockedPayments(Protocol):
    """Payments inside the unit of work's transaction."""

    async def get_for_update(self, payment_id: uuid.UUID) -> Payment:
        """The payment, locked until the end of the transaction (NotFound)."""
        ...

    async def get_target_for_update(self, payment_id: uuid.UUID) -> EventTarget:
        """The payment, locked, with the newest provider state applied to it."""
        ...

    async def apply_snapshot(
        self, payment: Payment, row: PaymentRow, plan: SnapshotPlan
    ) -> Payment:
        """The payment's row as planned (domain/reconciliation.snapshot_row)
        and its history entry, one statement."""
        ...

    async def release_lease(self, payment_id: uuid.UUID) -> None: ...

    async def correct(self, payment: Payment, plan: Correction) -> Payment:
        """An operator's correction as planned (domain/corrections.py): the
        status and amount_reversed, and a history entry (source operator)."""
        ...


class LockedRefunds(Protocol):
    """Refunds inside the unit of work's transaction, their payment locked
    first (LockedPayments.get_for_update)."""

    async def of_payment(self, payment_id: uuid.UUID) -> list[Refund]:
        """The payment's refunds, oldest first."""
        ...

    async def get_for_update(self, refund_id: uuid.UUID) -> Refund:
        """The refund, locked (NotFound)."""
        ...

    async def by_provider_id(self, provider_refund_id: str) -> Refund | None:
        """The refund the provider knows by this id, locked, or None."""
        ...

    async def record(
        self,
        payment: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> tuple[Refund, Payment]:
        """What `plan` (domain/refunds.plan_outcome) decides: the refund's
        move, the payment's reversal, one history entry of the payment
        (refund_id, refund_status); or the entry only (RECORD)."""
        ...


class LockedRefundSync(Protocol):
    """What recording the provider's refunds needs beyond LockedRefunds
    (provider events and fetches), under the payment's lock."""

    async def provider_state(self, refund_id: uuid.UUID) -> RefundState:
        """The newest provider state applied to the refund."""
        ...

    async def touch(self, refund_id: uuid.UUID, state: RefundState) -> None:
        """Moves the refund's newest provider state forward (never back)."""
        ...

    async def insert_observed(
        self, payment: Payment, new: NewRefund, plan: RefundPlan, outcome: RefundOutcome
    ) -> tuple[Refund, Payment] | None:
        """A refund first seen at the provider, its payment's reversal and
        one history entry; None when its provider refund id is recorded
        already (the unique key decides)."""
        ...

    async def record_entry(
        self, payment: Payment, outcome: RefundOutcome, note: str, *, source: Source
    ) -> None:
        """A history entry of the payment that moved nothing (no refund of
        ours to attach it to)."""
        ...

    async def release_lease(self, refund_id: uuid.UUID) -> None: ...


class InboxWriter(Protocol):
    """The provider-event inbox inside the unit of work's transaction. An
    event Postgres refuses to store raises UnprocessableEvent."""

    async def find_payment(self, obs: ProviderObservation) -> EventTarget | None:
        """The payment an event is about, locked: by provider id, else by
        the payment id in the object's metadata."""
        ...

    async def insert_matched(self, event: InboxEvent, write: EventWrite) -> EventOutcome | None:
        """One statement: the inbox row, already matched, and what `write`
        says of the payment and its history, only if the event is new. None
        when it was; else (a redelivery, nothing written) what became of the
        event the first time."""
        ...

    async def insert_unmatched(self, event: InboxEvent) -> EventOutcome | None:
        """The event kept unmatched; None, or the first delivery's outcome."""
        ...

    async def claim_unmatched(self, provider_event_id: str) -> StoredEvent | None:
        """An inbox row still unmatched, locked (None: matched meanwhile, or
        another replica has it)."""
        ...

    async def record_match(self, event: InboxEvent, write: EventWrite) -> None:
        """An inbox event matched later: the payment's writes and the match."""
        ...

    async def mark_attempted(self, provider_event_id: str) -> None: ...


class DiscrepancyWriter(Protocol):
    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: uuid.UUID | None,
        provider_payment_id: str | None,
        details: Mapping[str, str],
        *,
        refund_id: uuid.UUID | None = None,
        dedup: str | None = None,
    ) -> Reported:
        """One discrepancy, counted again while open (by `dedup`, or the
        kind and ids: domain/reconciliation.dedup_key)."""
        ...

    async def resolve_open(self, dedup: str, by: str, note: str) -> None:
        """Resolves the open discrepancy of that dedup key, if any."""
        ...


class LockedQuarantine(Protocol):
    """The quarantine's writes, in the unit of work's transaction."""

    async def keep(self, entry: NewQuarantined) -> tuple[uuid.UUID, int]:
        """Inserts the entry, or counts a redelivery of the same bytes; its id
        and how many deliveries it has had."""
        ...

    async def replayed(self, quarantine_id: uuid.UUID) -> Quarantined:
        """Marks the entry applied (NotFound)."""
        ...


class AbstractUnitOfWork(abc.ABC):
    payments: LockedPayments
    refunds: LockedRefunds
    refund_sync: LockedRefundSync
    inbox: InboxWriter
    discrepancies: DiscrepancyWriter
    quarantine: LockedQuarantine

    async def __aenter__(self) -> Self:
        self._committed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            await self.rollback()

    async def commit(self) -> None:
        await self._commit()
        self._committed = True

    @abc.abstractmethod
    async def _commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...
