"""In-memory implementations of the service layer's ports
(payment_svc/service_layer/ports.py), for unit tests of the use cases that
run without Postgres. They keep what the Postgres adapters keep, in dicts,
and follow the same domain rules (status.decide); what only SQL can prove
(locks, constraints, concurrency) stays in the Postgres tests."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import NotFound, StoreUnavailable
from payment_svc.domain.inbox import (
    EventOutcome,
    EventTarget,
    EventWrite,
    InboxEvent,
    StoredEvent,
    UnmatchedEvent,
)
from payment_svc.domain.model import (
    NewPayment,
    Payment,
    PaymentEvent,
    PaymentRow,
    ProviderCharge,
    ProviderResult,
    format_payment_id,
)
from payment_svc.domain.payment_results import (
    ExistingPayment,
    ResultPlan,
    ResultWrite,
)
from payment_svc.domain.provider_events import ProviderObservation
from payment_svc.domain.reconciliation import DiscrepancyKind, dedup_key
from payment_svc.domain.records import (
    Discrepancy,
    NewQuarantined,
    Quarantined,
    Reported,
)
from payment_svc.domain.refund_events import RefundState
from payment_svc.domain.refunds import (
    ExistingRefund,
    NewRefund,
    PaymentRefunds,
    ProviderRefundRequest,
    Refund,
    RefundOutcome,
    RefundPlan,
    RefundStatus,
    RefundWrite,
    format_refund_id,
)
from payment_svc.domain.refunds import (
    duplicate_of as duplicate_refund,
)
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.domain.webhooks import (
    DeliveryAttempt,
    EndpointChanges,
    EndpointStatus,
    TooManyEndpoints,
    WebhookEndpoint,
)
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakePaymentRepository:
    payments: dict[uuid.UUID, Payment] = field(default_factory=dict)
    fingerprints: dict[uuid.UUID, bytes] = field(default_factory=dict)
    history: list[tuple[uuid.UUID, PaymentStatus | None, PaymentStatus, Source, bool]] = field(
        default_factory=list
    )
    # write_result fails this many times with StoreUnavailable first (an outage)
    record_failures: int = 0
    record_calls: int = 0
    # Run once at the next write_result, before it writes: another writer's
    # change committed between the use case's read and its write.
    concurrent_write: Callable[[FakePaymentRepository], None] | None = None
    # writes refused because the payment moved since it was read
    conflicts: int = 0
    # DUPLICATE_PROVIDER_PAYMENT details write_result reported
    duplicates: list[dict[str, str]] = field(default_factory=list)

    async def insert_new(self, new: NewPayment) -> Payment | ExistingPayment:
        for p in self.payments.values():
            if (p.client_id, p.idempotency_key) == (new.client_id, new.idempotency_key):
                return ExistingPayment(p.id, p.status, self.fingerprints[p.id])
        now = _now()
        payment = Payment(
            id=new.id,
            client_id=new.client_id,
            idempotency_key=new.idempotency_key,
            amount=new.amount,
            currency=new.currency,
            status=PaymentStatus.PENDING,
            payment_method=new.payment_method,
            description=new.description,
            metadata=dict(new.metadata),
            provider_payment_id=None,
            failure_code=None,
            failure_message=None,
            amount_reversed=0,
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.payments[payment.id] = payment
        self.fingerprints[payment.id] = new.fingerprint
        self.history.append((payment.id, None, PaymentStatus.PENDING, Source.API, True))
        return payment

    async def write_result(
        self, payment: Payment, result: ProviderResult, *, source: Source, plan: ResultPlan
    ) -> Payment | None:
        self.record_calls += 1
        if self.record_failures > 0:
            self.record_failures -= 1
            raise StoreUnavailable("fake outage")
        if self.concurrent_write is not None:
            # Another writer commits between our read and our write.
            change, self.concurrent_write = self.concurrent_write, None
            change(self)
        if plan.write is ResultWrite.NOTHING:
            return payment
        if plan.write is ResultWrite.RECORD:
            self.history.append((payment.id, payment.status, result.status, source, False))
            if plan.duplicate is not None:
                self.duplicates.append(dict(plan.duplicate))
            return payment
        current = self.payments[payment.id]
        if current.version != payment.version:
            self.conflicts += 1
            return None  # the SQL's `WHERE version = $2` matched no row
        moved = replace(
            current,
            status=result.status,
            provider_payment_id=current.provider_payment_id or result.provider_payment_id,
            failure_code=result.failure_code,
            failure_message=result.failure_message,
            version=current.version + 1,
            updated_at=_now(),
        )
        self.payments[moved.id] = moved
        self.history.append((moved.id, current.status, result.status, source, True))
        return moved

    async def get(self, client_id: str, payment_id: uuid.UUID) -> Payment:
        p = self.payments.get(payment_id)
        if p is None or p.client_id != client_id:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return p

    async def search(
        self,
        client_id: str | None,
        *,
        limit: int,
        statuses: frozenset[PaymentStatus],
        created_after: datetime | None,
        created_before: datetime | None,
        after: PageCursor | None,
    ) -> list[Payment]:
        rows = sorted(self.payments.values(), key=lambda p: (p.created_at, p.id), reverse=True)
        return [
            p
            for p in rows
            if (client_id is None or p.client_id == client_id)
            and (not statuses or p.status in statuses)
            and (created_after is None or p.created_at >= created_after)
            and (created_before is None or p.created_at < created_before)
            and (after is None or (p.created_at, p.id) < (after.sort_key, after.id))
        ][:limit]

    async def events(self, client_id: str, payment_id: uuid.UUID) -> list[PaymentEvent]:
        raise NotImplementedError


@dataclass
class FakeSnapshotRepository:
    """The sweep's work list and its leases (SnapshotRepository) over a
    FakePaymentRepository's payments, as SnapshotStore.to_reconcile's SQL
    does it: non-final payments untouched for `older_than`, oldest first;
    with a lease, those returned are claimed, and others' live claims are
    skipped. `now` is the database's clock: tests move it."""

    repo: FakePaymentRepository
    now: datetime = field(default_factory=_now)
    leases: dict[uuid.UUID, tuple[str, datetime]] = field(default_factory=dict)

    async def to_reconcile(
        self,
        *,
        older_than_seconds: float,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        owner: str,
        lease_seconds: float | None,
    ) -> list[Payment]:
        def free(p: Payment) -> bool:
            held = self.leases.get(p.id)
            return held is None or held[1] < self.now or held[0] == owner

        found = sorted(
            (
                p
                for p in self.repo.payments.values()
                if p.status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
                and p.updated_at < self.now - timedelta(seconds=older_than_seconds)
                and (after is None or (p.updated_at, p.id) > after)
                and (lease_seconds is None or free(p))
            ),
            key=lambda p: (p.updated_at, p.id),
        )[:limit]
        if lease_seconds is not None:
            for p in found:
                self.leases[p.id] = (owner, self.now + timedelta(seconds=lease_seconds))
        return found

    async def get_any(self, payment_id: uuid.UUID) -> Payment:
        p = self.repo.payments.get(payment_id)
        if p is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return p

    async def lookup(self, ids: list[uuid.UUID], provider_ids: list[str]) -> list[Payment]:
        return [
            p
            for p in self.repo.payments.values()
            if p.id in ids
            or (p.provider_payment_id is not None and p.provider_payment_id in provider_ids)
        ]


@dataclass
class FakeProvider:
    """Answers as told; checks, when asked, that the payment was recorded
    before the call (CreatePayment's rule: record first, then ask)."""

    answer: ProviderResult = field(
        default_factory=lambda: ProviderResult(PaymentStatus.SUCCEEDED, "pi_fake")
    )
    repository: FakePaymentRepository | None = None
    charges: list[ProviderCharge] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    seen_recorded: list[bool] = field(default_factory=list)

    async def create_payment(
        self, charge: ProviderCharge, *, timeout: float | None = None
    ) -> ProviderResult:
        self.charges.append(charge)
        self.timeouts.append(timeout)
        if self.repository is not None:
            self.seen_recorded.append(
                any(p.public_id == charge.payment_id for p in self.repository.payments.values())
            )
        return self.answer


@dataclass
class FakeDiscrepancies:
    open: dict[str, Discrepancy] = field(default_factory=dict)
    resolved: list[Discrepancy] = field(default_factory=list)

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
        key = dedup or dedup_key(
            kind,
            format_payment_id(payment_id) if payment_id else None,
            provider_payment_id,
            str(refund_id) if refund_id else None,
        )
        old = self.open.get(key)
        now = _now()
        new = Discrepancy(
            id=old.id if old else uuid.uuid4(),
            kind=kind,
            payment_id=payment_id,
            provider_payment_id=provider_payment_id,
            details=dict(details),
            first_seen_at=old.first_seen_at if old else now,
            last_seen_at=now,
            occurrences=old.occurrences + 1 if old else 1,
            resolved_at=None,
            resolved_by=None,
            note=None,
            refund_id=refund_id,
        )
        self.open[key] = new
        return Reported(new.id, new.occurrences)

    async def resolve_open(self, dedup: str, by: str, note: str) -> None:
        found = self.open.pop(dedup, None)
        if found is not None:
            self.resolved.append(replace(found, resolved_at=_now(), resolved_by=by, note=note))


@dataclass
class FakeInbox:
    """The provider-event inbox: `rows` (event id -> the payment it matched
    and whether it applied), `stored` (unmatched rows, for the rematch),
    `provider_state` (each payment's newest provider state applied); written
    through a FakeUnitOfWork's FakeInboxWriter, read by the upkeep."""

    rows: dict[str, tuple[uuid.UUID | None, bool]] = field(default_factory=dict)
    stored: dict[str, StoredEvent] = field(default_factory=dict)
    provider_state: dict[uuid.UUID, tuple[datetime | None, int]] = field(default_factory=dict)
    overdue: list[UnmatchedEvent] = field(default_factory=list)
    applied: list[InboxEvent] = field(default_factory=list)
    attempted: list[str] = field(default_factory=list)

    async def unmatched_ids(self, limit: int) -> list[str]:
        return [e for e in self.stored if self.rows.get(e, (None, False))[0] is None][:limit]

    async def overdue_unmatched(self, older_than_seconds: float) -> list[UnmatchedEvent]:
        rows, self.overdue = self.overdue, []
        return rows

    async def count_unmatched(self) -> int:
        return len(self.stored)


class FakeInboxWriter:
    """What PgInbox's statements do, in memory (the SQL's own guards
    included: nothing of the payment is written unless `touch`; never a
    rebinding)."""

    def __init__(self, inbox: FakeInbox, repo: FakePaymentRepository) -> None:
        self.inbox = inbox
        self.repo = repo

    async def find_payment(self, obs: ProviderObservation) -> EventTarget | None:
        found = [
            p
            for p in self.repo.payments.values()
            if obs.provider_payment_id and p.provider_payment_id == obs.provider_payment_id
        ]
        if not found and obs.metadata_payment_id:
            found = [
                p for p in self.repo.payments.values() if p.public_id == obs.metadata_payment_id
            ]
        if not found:
            return None
        state_at, rank = self.inbox.provider_state.get(found[0].id, (None, 0))
        return EventTarget(found[0], state_at, rank or None)

    async def insert_matched(self, event: InboxEvent, write: EventWrite) -> EventOutcome | None:
        if event.provider_event_id in self.inbox.rows:
            return EventOutcome(True, *self.inbox.rows[event.provider_event_id])
        self.inbox.applied.append(event)
        self._write(event, write)
        return None

    async def insert_unmatched(self, event: InboxEvent) -> EventOutcome | None:
        if event.provider_event_id in self.inbox.rows:
            return EventOutcome(True, *self.inbox.rows[event.provider_event_id])
        self.inbox.applied.append(event)
        self.inbox.rows[event.provider_event_id] = (None, False)
        self.inbox.stored[event.provider_event_id] = StoredEvent(
            event.stored_json, event.created, event.source.value
        )
        return None

    async def claim_unmatched(self, provider_event_id: str) -> StoredEvent | None:
        if self.inbox.rows.get(provider_event_id, (None, False))[0] is not None:
            return None
        return self.inbox.stored.get(provider_event_id)

    async def record_match(self, event: InboxEvent, write: EventWrite) -> None:
        self.inbox.applied.append(event)
        self.inbox.stored.pop(event.provider_event_id, None)
        self._write(event, write)

    async def mark_attempted(self, provider_event_id: str) -> None:
        self.inbox.attempted.append(provider_event_id)

    def _write(self, event: InboxEvent, write: EventWrite) -> None:
        """As event_store.py's statement: the planned row assigned (the
        domain's values, no rule here), and the history entry."""
        self.inbox.rows[event.provider_event_id] = (write.payment_id, write.applied)
        payment = self.repo.payments[write.payment_id]
        row = write.row
        if row is not None:
            self.repo.payments[payment.id] = replace(
                payment,
                status=row.status,
                provider_payment_id=row.provider_payment_id,
                failure_code=row.failure_code,
                failure_message=row.failure_message,
                amount_reversed=row.amount_reversed,
                amount_disputed=row.amount_disputed,
                version=payment.version + (1 if write.applied else 0),
            )
            self.inbox.provider_state[payment.id] = (
                row.provider_state_at,
                row.provider_state_rank or 0,
            )
            self.repo.history.append(
                (payment.id, write.from_status, write.to_status, event.source, write.applied)
            )


@dataclass
class FakeQuarantine:
    entries: dict[str, Quarantined] = field(default_factory=dict)

    async def keep(self, entry: NewQuarantined) -> tuple[uuid.UUID, int]:
        old = self.entries.get(entry.payload_sha256)
        now = _now()
        new = Quarantined(
            id=old.id if old else uuid.uuid4(),
            payload=entry.payload,
            provider_event_id=entry.provider_event_id,
            event_type=entry.event_type,
            reason=entry.reason,
            source=entry.source,
            received_at=old.received_at if old else now,
            last_received_at=now,
            deliveries=old.deliveries + 1 if old else 1,
            replayed_at=None,
        )
        self.entries[entry.payload_sha256] = new
        return new.id, new.deliveries

    async def list(self, *, include_replayed: bool, limit: int) -> list[Quarantined]:
        return list(self.entries.values())[:limit]

    async def get(self, quarantine_id: uuid.UUID) -> Quarantined:
        for q in self.entries.values():
            if q.id == quarantine_id:
                return q
        raise NotFound(f"quarantined event {quarantine_id} not found")

    async def replayed(self, quarantine_id: uuid.UUID) -> Quarantined:
        q = await self.get(quarantine_id)
        done = replace(q, replayed_at=_now())
        self.entries[next(k for k, v in self.entries.items() if v.id == quarantine_id)] = done
        return done


class FakeLockedPayments:
    def __init__(self, repo: FakePaymentRepository, inbox: FakeInbox | None = None) -> None:
        self.repo = repo
        # each payment's newest provider state applied (shared with the inbox's writer)
        self.inbox = inbox if inbox is not None else FakeInbox()
        self.leases_released: list[uuid.UUID] = []

    async def get_for_update(self, payment_id: uuid.UUID) -> Payment:
        p = self.repo.payments.get(payment_id)
        if p is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        return p

    async def get_target_for_update(self, payment_id: uuid.UUID) -> EventTarget:
        state_at, rank = self.inbox.provider_state.get(payment_id, (None, 0))
        return EventTarget(await self.get_for_update(payment_id), state_at, rank or None)

    async def apply_snapshot(self, payment: Payment, row: PaymentRow, plan: Any) -> Payment:
        """As reconciliation_store.py: the planned row assigned (no rule here)."""
        moved = replace(
            payment,
            status=row.status,
            provider_payment_id=row.provider_payment_id,
            failure_code=row.failure_code,
            failure_message=row.failure_message,
            amount_reversed=row.amount_reversed,
            amount_disputed=row.amount_disputed,
            version=payment.version + 1,
        )
        self.inbox.provider_state[payment.id] = (
            row.provider_state_at,
            row.provider_state_rank or 0,
        )
        self.repo.payments[moved.id] = moved
        self.repo.history.append((moved.id, payment.status, plan.status, Source.RECONCILER, True))
        return moved

    async def release_lease(self, payment_id: uuid.UUID) -> None:
        self.leases_released.append(payment_id)

    async def correct(self, payment: Payment, plan: Any) -> Payment:
        moved = replace(
            payment,
            status=plan.status,
            amount_reversed=plan.amount_reversed,
            version=payment.version + 1,
        )
        self.repo.payments[moved.id] = moved
        self.repo.history.append((moved.id, payment.status, plan.status, Source.OPERATOR, True))
        return moved


@dataclass
class FakeRefundRepository:
    """Refunds in memory: RefundRepository's reads; the writes go through a
    FakeUnitOfWork's FakeLockedRefunds (on copies, kept on commit).
    `history`: (refund id, refund status, source, applied) per entry."""

    payments: FakePaymentRepository
    refunds: dict[uuid.UUID, Refund] = field(default_factory=dict)
    fingerprints: dict[uuid.UUID, bytes | None] = field(default_factory=dict)
    history: list[tuple[uuid.UUID, RefundStatus, Source, bool]] = field(default_factory=list)
    # issue 13: each refund's newest provider state applied
    provider_state: dict[uuid.UUID, RefundState] = field(default_factory=dict)
    leases: set[uuid.UUID] = field(default_factory=set)

    async def for_payment(self, client_id: str, payment_id: uuid.UUID) -> list[Refund]:
        await self.payments.get(client_id, payment_id)  # NotFound for another client's
        return sorted(
            (r for r in self.refunds.values() if r.payment_id == payment_id),
            key=lambda r: (r.created_at, r.id),
        )

    async def get(self, client_id: str, refund_id: uuid.UUID) -> Refund:
        r = self.refunds.get(refund_id)
        if r is None or r.client_id != client_id:
            raise NotFound(f"refund {format_refund_id(refund_id)} not found")
        return r

    # RefundPayment's path: each write only on the payment as read, as the
    # statements of adapters/refund_store.py. `failures`: the next writes
    # that fail with StoreUnavailable.
    failures: int = 0

    reads: int = 0

    async def read(
        self, payment_id: uuid.UUID, key: tuple[str, str] | None = None
    ) -> PaymentRefunds:
        self.reads += 1
        payment = self.payments.payments.get(payment_id)
        if payment is None:
            raise NotFound(f"payment {format_payment_id(payment_id)} not found")
        locked = FakeLockedRefunds(self, self.payments)
        return PaymentRefunds(
            payment,
            await locked.of_payment(payment_id),
            await locked.by_key(*key) if key is not None else None,
        )

    def _unmoved(self, seen: Payment) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("fake outage")
        now = self.payments.payments[seen.id]
        return (now.version, now.amount_reversed, now.amount_disputed) == (
            seen.version,
            seen.amount_reversed,
            seen.amount_disputed,
        )

    async def insert_unless_moved(self, new: NewRefund, seen: Payment) -> Refund | None:
        if not self._unmoved(seen):
            return None
        locked = FakeLockedRefunds(self, self.payments)
        assert new.idempotency_key is not None
        if await locked.by_key(new.client_id, new.idempotency_key) is not None:
            return None
        return await locked.insert(new)

    async def record_unless_moved(
        self,
        seen: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> Refund | None:
        if not self._unmoved(seen):
            return None
        locked = FakeLockedRefunds(self, self.payments)
        moved, _ = await locked.record(seen, refund, outcome, plan, source=source)
        return moved


def moves_its_payment(payments: FakePaymentRepository, payment_id: uuid.UUID) -> None:
    """Migration 0013's trigger: a refund's change moves its payment's version."""
    p = payments.payments[payment_id]
    payments.payments[payment_id] = replace(p, version=p.version + 1)


class FakeLockedRefunds:
    """What PgLockedRefunds' statements do, in memory (the unique key
    included); locks are Postgres's to prove."""

    def __init__(self, repo: FakeRefundRepository, payments: FakePaymentRepository) -> None:
        self.repo = repo
        self.payments = payments

    async def by_key(self, client_id: str, idempotency_key: str) -> ExistingRefund | None:
        for r in self.repo.refunds.values():
            if (r.client_id, r.idempotency_key) == (client_id, idempotency_key):
                return ExistingRefund(r.id, r.status, self.repo.fingerprints[r.id])
        return None

    async def of_payment(self, payment_id: uuid.UUID) -> list[Refund]:
        return sorted(
            (r for r in self.repo.refunds.values() if r.payment_id == payment_id),
            key=lambda r: (r.created_at, r.id),
        )

    async def get_for_update(self, refund_id: uuid.UUID) -> Refund:
        r = self.repo.refunds.get(refund_id)
        if r is None:
            raise NotFound(f"refund {format_refund_id(refund_id)} not found")
        return r

    async def by_provider_id(self, provider_refund_id: str) -> Refund | None:
        found = [
            r for r in self.repo.refunds.values() if r.provider_refund_id == provider_refund_id
        ]
        return found[0] if found else None

    async def insert(self, new: NewRefund) -> Refund:
        if new.idempotency_key is not None:
            existing = await self.by_key(new.client_id, new.idempotency_key)
            if existing is not None:
                raise duplicate_refund(existing, new.fingerprint)
        now = _now()
        refund = Refund(
            id=new.id,
            payment_id=new.payment_id,
            client_id=new.client_id,
            idempotency_key=new.idempotency_key,
            amount=new.amount,
            currency=new.currency,
            status=new.status,
            reason=new.reason,
            source=new.source,
            provider_refund_id=new.provider_refund_id,
            failure_code=None,
            failure_message=None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.repo.refunds[refund.id] = refund
        moves_its_payment(self.payments, refund.payment_id)
        self.repo.fingerprints[refund.id] = new.fingerprint
        self.repo.history.append((refund.id, refund.status, new.source, True))
        self.payments.history.append(
            (new.payment_id, new.payment_status, new.payment_status, new.source, True)
        )
        return refund

    async def record(
        self,
        payment: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> tuple[Refund, Payment]:
        if plan.write is RefundWrite.NOTHING:
            return refund, payment
        applied = plan.write is RefundWrite.MOVE
        self.repo.history.append((refund.id, plan.refund_status, source, applied))
        self.payments.history.append(
            (payment.id, plan.payment_from, plan.payment_to, source, applied)
        )
        if not applied:
            return refund, payment
        failed = plan.refund_status is RefundStatus.FAILED
        moved = replace(
            refund,
            status=plan.refund_status,
            provider_refund_id=refund.provider_refund_id or outcome.provider_refund_id,
            failure_code=outcome.failure_code if failed else None,
            failure_message=outcome.failure_message if failed else None,
            version=refund.version + 1,
            updated_at=_now(),
        )
        self.repo.refunds[moved.id] = moved
        if plan.payment_changes:
            self.payments.payments[payment.id] = replace(
                self.payments.payments[payment.id],
                status=plan.payment_to,
                amount_reversed=plan.amount_reversed,
                updated_at=_now(),
            )
        moves_its_payment(self.payments, payment.id)
        return moved, self.payments.payments[payment.id]


class FakeLockedRefundSync:
    """What PgLockedRefundSync's statements do, in memory (the unique
    provider refund id included)."""

    def __init__(self, repo: FakeRefundRepository, payments: FakePaymentRepository) -> None:
        self.repo = repo
        self.payments = payments

    async def provider_state(self, refund_id: uuid.UUID) -> RefundState:
        return self.repo.provider_state.get(refund_id, RefundState())

    async def touch(self, refund_id: uuid.UUID, state: RefundState) -> None:
        old = self.repo.provider_state.get(refund_id, RefundState())
        if old.at is None or (state.at is not None and state.at > old.at):
            self.repo.provider_state[refund_id] = state
        else:
            self.repo.provider_state[refund_id] = RefundState(
                old.at, max(old.rank or 0, state.rank or 0)
            )

    async def insert_observed(
        self, payment: Payment, new: NewRefund, plan: RefundPlan, outcome: RefundOutcome
    ) -> tuple[Refund, Payment] | None:
        if any(r.provider_refund_id == new.provider_refund_id for r in self.repo.refunds.values()):
            return None
        now = _now()
        failed = new.status is RefundStatus.FAILED
        refund = Refund(
            id=new.id,
            payment_id=new.payment_id,
            client_id=new.client_id,
            idempotency_key=None,
            amount=new.amount,
            currency=new.currency,
            status=new.status,
            reason=new.reason,
            source=new.source,
            provider_refund_id=new.provider_refund_id,
            failure_code=outcome.failure_code if failed else None,
            failure_message=outcome.failure_message if failed else None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.repo.refunds[refund.id] = refund
        self.repo.fingerprints[refund.id] = None
        self.repo.history.append((refund.id, refund.status, new.source, True))
        self.payments.history.append(
            (payment.id, plan.payment_from, plan.payment_to, new.source, True)
        )
        if plan.payment_changes:
            payment = replace(
                payment,
                status=plan.payment_to,
                amount_reversed=plan.amount_reversed,
                version=payment.version + 1,
            )
            self.payments.payments[payment.id] = payment
        return refund, payment

    async def record_entry(
        self, payment: Payment, outcome: RefundOutcome, note: str, *, source: Source
    ) -> None:
        self.payments.history.append((payment.id, payment.status, payment.status, source, False))

    async def release_lease(self, refund_id: uuid.UUID) -> None:
        self.repo.leases.discard(refund_id)


@dataclass
class FakeRefundProvider:
    """Answers refunds as told (`answers` in turn, then `answer`); checks,
    when asked, that the refund was recorded before the call."""

    answer: RefundOutcome = field(
        default_factory=lambda: RefundOutcome(RefundStatus.SUCCEEDED, "re_fake", "succeeded")
    )
    answers: list[RefundOutcome] = field(default_factory=list)
    repository: FakeRefundRepository | None = None
    asked: list[ProviderRefundRequest] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    seen_recorded: list[bool] = field(default_factory=list)
    # awaited before answering (a slow provider, an outage meanwhile)
    on_call: Callable[[], Awaitable[None]] | None = None

    async def create_refund(
        self, ask: ProviderRefundRequest, *, timeout: float | None = None
    ) -> RefundOutcome:
        if self.on_call is not None:
            await self.on_call()
        self.asked.append(ask)
        self.timeouts.append(timeout)
        if self.repository is not None:
            self.seen_recorded.append(
                any(r.public_id == ask.refund_id for r in self.repository.refunds.values())
            )
        return self.answers.pop(0) if self.answers else self.answer


class FakeUnitOfWork(AbstractUnitOfWork):
    """Writes go to copies; commit() makes them the truth, anything else
    throws them away (rollback by default)."""

    def __init__(
        self,
        repo: FakePaymentRepository,
        discrepancies: FakeDiscrepancies,
        inbox: FakeInbox | None = None,
        refunds: FakeRefundRepository | None = None,
        quarantine: FakeQuarantine | None = None,
    ) -> None:
        self.committed_quarantine = quarantine if quarantine is not None else FakeQuarantine()
        self.committed_repo = repo
        self.committed_discrepancies = discrepancies
        self.committed_inbox = inbox if inbox is not None else FakeInbox()
        self.committed_refunds = refunds if refunds is not None else FakeRefundRepository(repo)
        self.commits = 0
        # record (refund writes) fails this many times with StoreUnavailable first
        self.failures = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("fake outage")
        await super().__aenter__()
        self._repo = copy.deepcopy(self.committed_repo)
        self._disc = copy.deepcopy(self.committed_discrepancies)
        self._inbox = copy.deepcopy(self.committed_inbox)
        self._refunds = copy.copy(self.committed_refunds)
        self._refunds.payments = self._repo
        self._refunds.refunds = dict(self.committed_refunds.refunds)
        self._refunds.fingerprints = dict(self.committed_refunds.fingerprints)
        self._refunds.history = list(self.committed_refunds.history)
        self._refunds.provider_state = dict(self.committed_refunds.provider_state)
        self.payments = FakeLockedPayments(self._repo, self._inbox)
        self.refunds = FakeLockedRefunds(self._refunds, self._repo)
        self.refund_sync = FakeLockedRefundSync(self._refunds, self._repo)
        self.inbox = FakeInboxWriter(self._inbox, self._repo)
        self.discrepancies = self._disc
        self.quarantine = copy.deepcopy(self.committed_quarantine)
        return self

    async def _commit(self) -> None:
        self.committed_repo.payments = self._repo.payments
        self.committed_repo.history = self._repo.history
        self.committed_refunds.refunds = self._refunds.refunds
        self.committed_refunds.fingerprints = self._refunds.fingerprints
        self.committed_refunds.history = self._refunds.history
        self.committed_refunds.provider_state = self._refunds.provider_state
        self.committed_discrepancies.open = self._disc.open
        self.committed_discrepancies.resolved = self._disc.resolved
        self.committed_quarantine.entries = self.quarantine.entries
        for name in ("rows", "stored", "provider_state", "applied", "attempted"):
            setattr(self.committed_inbox, name, getattr(self._inbox, name))
        self.commits += 1

    async def rollback(self) -> None:
        pass


@dataclass
class FakeFeed:
    """The change feed's outbox in memory: `write` adds an update without a
    position (as the trigger does at commit); `sequence` numbers them in
    insert order; `expire` deletes a prefix and raises the horizon."""

    rows: list[tuple[int | None, str, Any]] = field(default_factory=list)
    last_position: int = 0
    horizon: int = 0
    page_reads: int = 0

    def write(self, client_id: str, update_for: Any) -> None:
        """`update_for(position)` builds the PaymentUpdate once numbered."""
        self.rows.append((None, client_id, update_for))

    async def page(self, client_id: str, after: int, limit: int) -> Any:
        from payment_svc.domain.feed import FeedPage

        self.page_reads += 1
        mine = [
            build(pos)
            for pos, c, build in self.rows
            if pos is not None and c == client_id and pos > after
        ]
        return FeedPage(sorted(mine, key=lambda u: u.position)[:limit], self.horizon)

    async def sequence(self, limit: int) -> Any:
        from payment_svc.service_layer.ports import Sequenced

        clients: set[str] = set()
        count = 0
        for i, (pos, client_id, build) in enumerate(self.rows):
            if pos is None and count < limit:
                self.last_position += 1
                self.rows[i] = (self.last_position, client_id, build)
                clients.add(client_id)
                count += 1
        return Sequenced(count, frozenset(clients))

    async def expire(self, before: datetime, limit: int) -> int:
        numbered = sorted((r for r in self.rows if r[0] is not None), key=lambda r: r[0] or 0)
        gone = [r for r in numbered if r[2](r[0]).recorded_at < before][:limit]
        for r in gone:
            self.rows.remove(r)
            self.horizon = max(self.horizon, r[0] or 0)
        return len(gone)


class FakeWebhookEndpoints:
    """WebhookEndpointRepository in a dict (the per-client limit, scoping)."""

    def __init__(self) -> None:
        self.endpoints: dict[uuid.UUID, WebhookEndpoint] = {}
        self.secrets: dict[uuid.UUID, bytes] = {}
        self.positions: dict[uuid.UUID, int] = {}
        self.horizon = 0

    def _mine(self, client_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        found = self.endpoints.get(endpoint_id)
        return found if found is not None and found.client_id == client_id else None

    async def insert(self, endpoint: WebhookEndpoint, secret: bytes, *, limit: int) -> None:
        if sum(e.client_id == endpoint.client_id for e in self.endpoints.values()) >= limit:
            raise TooManyEndpoints()
        self.endpoints[endpoint.id] = endpoint
        self.secrets[endpoint.id] = secret
        self.positions[endpoint.id] = 0

    async def of_client(self, client_id: str) -> list[WebhookEndpoint]:
        return [e for e in self.endpoints.values() if e.client_id == client_id]

    async def get(self, client_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return self._mine(client_id, endpoint_id)

    async def update(
        self, client_id: str, endpoint_id: uuid.UUID, changes: EndpointChanges
    ) -> WebhookEndpoint | None:
        found = self._mine(client_id, endpoint_id)
        if found is None:
            return None
        status = found.status
        if changes.enabled is not None:
            status = EndpointStatus.ENABLED if changes.enabled else EndpointStatus.DISABLED
        updated = replace(
            found,
            url=found.url if changes.url is None else changes.url,
            description=found.description if changes.description is None else changes.description,
            status=status,
        )
        self.endpoints[endpoint_id] = updated
        return updated

    async def delete(self, client_id: str, endpoint_id: uuid.UUID) -> bool:
        if self._mine(client_id, endpoint_id) is None:
            return False
        del self.endpoints[endpoint_id]
        return True

    async def rotate(
        self, client_id: str, endpoint_id: uuid.UUID, secret: bytes, overlap: timedelta
    ) -> WebhookEndpoint | None:
        found = self._mine(client_id, endpoint_id)
        if found is None:
            return None
        self.secrets[endpoint_id] = secret
        updated = replace(found, previous_secret_expires_at=datetime.now(UTC) + overlap)
        self.endpoints[endpoint_id] = updated
        return updated

    async def attempts(
        self, client_id: str, endpoint_id: uuid.UUID, after: PageCursor | None, limit: int
    ) -> list[DeliveryAttempt] | None:
        return None if self._mine(client_id, endpoint_id) is None else []

    async def rewind(
        self, client_id: str, endpoint_id: uuid.UUID, after_position: int
    ) -> int | None:
        if self._mine(client_id, endpoint_id) is None:
            return None
        if after_position == 0 or after_position >= self.horizon:
            self.positions[endpoint_id] = min(
                self.positions[endpoint_id], max(after_position, self.horizon)
            )
        return self.horizon


class StubResolver:
    """Answers every name with the given addresses (no DNS, no traffic)."""

    def __init__(self, *addresses: str, fails: bool = False) -> None:
        self.addresses = list(addresses)
        self.fails = fails
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if self.fails:
            raise OSError("name does not resolve")
        return list(self.addresses)
