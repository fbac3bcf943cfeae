"""The ports of the service layer: what the use cases need from the outside,
as Protocols. The adapters implement them (adapters/payment_store.py, event_store.py,
reconciliation_store.py, discrepancy_store.py, run_store.py,
quarantine_store.py, stripe_provider.py, stripe_observations.py); main.py
wires them in; tests/payment_svc/fakes.py keeps
them in memory. Each repository method is one bounded database call and one
transaction at most, never a network call.

    PaymentRepository        payments and their history (the provider's answer
                             is written as planned, only on the version read:
                             service_layer/payment_results.py)
    RefundRepository         refunds; RefundPayment's writes, each only on the
                             payment as read (service_layer/refunds.py);
                             the writes of webhooks and the reconciler:
                             unit_of_work.LockedRefunds, under the
                             payment's lock
    EventInbox               the provider-event inbox's upkeep (an event is
                             applied in a unit of work)
    SnapshotRepository       the sweep's work list and its leases, look-ups
                             (a snapshot is applied in a unit of work:
                             unit_of_work.py)
    DiscrepancyRepository    discrepancies, deduplicated while open
    RunRepository            reconciliation runs and the status figures
    CheckpointRepository     the reconciler's checkpoints
    QuarantineRepository     provider events that cannot be understood
    FeedRepository           the change feed's outbox: pages, the sequencer,
                             retention
    WebhookEndpointRepository  a client's webhook endpoints, their attempts
                             and their cursor (RedeliverWebhooks)
    Resolver                 a webhook URL's host name -> its addresses
    WebhookDispatchRepository  the dispatcher's leases, queue and attempts
    PaymentProvider          the provider's create call
    RefundProvider           the provider's refund call
    EventParser              provider bytes -> a ParsedEvent
    SnapshotReader           the provider's facts about a payment -> a Snapshot
    RefundReader             the provider's words about a refund -> a ProviderRefundFact
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from payment_svc.domain.commands import PageCursor
from payment_svc.domain.corrections import ProviderReversal
from payment_svc.domain.feed import FeedPage
from payment_svc.domain.inbox import UnmatchedEvent
from payment_svc.domain.model import (
    NewPayment,
    Payment,
    PaymentEvent,
    ProviderCharge,
    ProviderResult,
)
from payment_svc.domain.payment_results import ExistingPayment, ResultPlan
from payment_svc.domain.provider_events import ProviderObservation
from payment_svc.domain.reconciliation import DiscrepancyKind, ProviderFacts, Snapshot
from payment_svc.domain.records import (
    Discrepancy,
    Quarantined,
    Reported,
    Run,
    Status,
)
from payment_svc.domain.refund_events import ProviderRefundFact, ProviderRefundWords
from payment_svc.domain.refunds import (
    NewRefund,
    PaymentRefunds,
    ProviderRefundRequest,
    Refund,
    RefundOutcome,
    RefundPlan,
)
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.domain.webhook_dispatch import (
    AttemptRecord,
    DueMessages,
    EndpointState,
    LeasedEndpoint,
)
from payment_svc.domain.webhooks import DeliveryAttempt, EndpointChanges, WebhookEndpoint


class PaymentRepository(Protocol):
    async def insert_new(self, new: NewPayment) -> Payment | ExistingPayment:
        """Commits the payment as PENDING with its first history entry; or,
        when its client's key is taken, returns the payment holding it
        (service_layer/payments.record_new decides what that means)."""
        ...

    async def write_result(
        self, payment: Payment, result: ProviderResult, *, source: Source, plan: ResultPlan
    ) -> Payment | None:
        """Writes what `plan` (domain/payment_results.py) decided on `payment`: the
        move, one statement, only if the payment is still at `payment`'s
        version (None when it moved since: service_layer/payment_results.py reads
        and plans again), or the history entry only (and
        DUPLICATE_PROVIDER_PAYMENT)."""
        ...

    async def get(self, client_id: str, payment_id: uuid.UUID) -> Payment: ...

    async def search(
        self,
        client_id: str | None,
        *,
        limit: int,
        statuses: frozenset[PaymentStatus],
        created_after: datetime | None,
        created_before: datetime | None,
        after: PageCursor | None,
    ) -> list[Payment]: ...

    async def events(self, client_id: str, payment_id: uuid.UUID) -> list[PaymentEvent]: ...


class RefundRepository(Protocol):
    async def for_payment(self, client_id: str, payment_id: uuid.UUID) -> list[Refund]:
        """The payment's refunds, oldest first; NotFound when the payment is
        not the client's."""
        ...

    async def get(self, client_id: str, refund_id: uuid.UUID) -> Refund:
        """NotFound when the refund is not the client's."""
        ...

    async def read(
        self, payment_id: uuid.UUID, key: tuple[str, str] | None = None
    ) -> PaymentRefunds:
        """One statement: the payment (NotFound), its refunds oldest first,
        and with `key` (client id, idempotency key) the client's refund that
        holds it."""
        ...

    async def insert_unless_moved(self, new: NewRefund, seen: Payment) -> Refund | None:
        """The refund and its payment's history entry, one statement, only
        if the payment is as `seen` (any refund's change moves it) and the
        key is free; None otherwise: read again, decide again."""
        ...

    async def record_unless_moved(
        self,
        seen: Payment,
        refund: Refund,
        outcome: RefundOutcome,
        plan: RefundPlan,
        *,
        source: Source,
    ) -> Refund | None:
        """What `plan` writes (the refund, its payment's reversal, one
        history entry), one statement, only if the payment is as `seen`;
        the refund after, or None: read again, plan again."""
        ...


class RefundSyncRepository(Protocol):
    """The reconciler's reads of refunds (adapters/refund_sync_store.py)."""

    async def to_reconcile(
        self,
        *,
        older_than_seconds: float,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        owner: str,
        lease_seconds: float | None,
    ) -> list[tuple[Refund, str | None]]:
        """Non-final refunds, oldest first, with their payment's provider id."""
        ...

    async def get_any(self, refund_id: uuid.UUID) -> Refund: ...

    async def lookup(
        self, ids: list[uuid.UUID], provider_ids: list[str], payment_ids: list[uuid.UUID]
    ) -> list[Refund]: ...


class EventInbox(Protocol):
    """The inbox's upkeep; applying an event is a unit of work's
    (unit_of_work.InboxWriter)."""

    async def unmatched_ids(self, limit: int) -> list[str]: ...

    async def overdue_unmatched(self, older_than_seconds: float) -> list[UnmatchedEvent]: ...

    async def count_unmatched(self) -> int: ...


class SnapshotRepository(Protocol):
    async def to_reconcile(
        self,
        *,
        older_than_seconds: float,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        owner: str,
        lease_seconds: float | None,
    ) -> list[Payment]: ...

    async def get_any(self, payment_id: uuid.UUID) -> Payment: ...

    async def lookup(self, ids: list[uuid.UUID], provider_ids: list[str]) -> list[Payment]: ...


class DiscrepancyRepository(Protocol):
    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: uuid.UUID | None,
        provider_payment_id: str | None,
        details: Mapping[str, str],
        *,
        refund_id: uuid.UUID | None = None,
    ) -> Reported: ...

    async def discrepancies(
        self,
        *,
        kinds: frozenset[DiscrepancyKind],
        include_resolved: bool,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[Discrepancy]: ...

    async def resolve(self, discrepancy_id: uuid.UUID, by: str, note: str) -> Discrepancy: ...


class RunRepository(Protocol):
    async def record_run(self, run: Run) -> Run: ...

    async def status(self) -> Status: ...


class CheckpointRepository(Protocol):
    async def checkpoint(self, name: str) -> tuple[str, datetime] | None: ...

    async def save_checkpoint(self, name: str, value: str) -> None: ...


class ReconciliationRepositories(
    SnapshotRepository, DiscrepancyRepository, RunRepository, CheckpointRepository, Protocol
):
    """The four above, as one Postgres adapter provides them today."""


class QuarantineRepository(Protocol):
    """The quarantine's reads (its writes: unit_of_work.LockedQuarantine,
    with the discrepancy that reports an entry, in one transaction)."""

    async def list(self, *, include_replayed: bool, limit: int) -> list[Quarantined]: ...

    async def get(self, quarantine_id: uuid.UUID) -> Quarantined: ...


@dataclass(frozen=True)
class Sequenced:
    """One sequencer run: how many updates got a position, and whose."""

    count: int
    client_ids: frozenset[str]


class FeedRepository(Protocol):
    async def page(self, client_id: str, after: int, limit: int) -> FeedPage:
        """The client's numbered updates after `after`, by position, and the
        retention horizon read after them."""
        ...

    async def sequence(self, limit: int) -> Sequenced:
        """Numbers committed updates that have no position yet, in insert
        order, one run at a time across processes, and tells every process
        whose updates were numbered."""
        ...

    async def expire(self, before: datetime, limit: int) -> int:
        """Deletes up to `limit` of the oldest updates recorded before
        `before`, raising the horizon; returns how many."""
        ...


class ProviderBooks(Protocol):
    """What the provider took back of one payment (an operator's correction
    compares it with what the payment's refunds and disputes say)."""

    async def reversal_of(self, provider_payment_id: str) -> ProviderReversal: ...


class PaymentProvider(Protocol):
    async def create_payment(
        self, charge: ProviderCharge, *, timeout: float | None = None
    ) -> ProviderResult: ...


class RefundProvider(Protocol):
    async def create_refund(
        self, ask: ProviderRefundRequest, *, timeout: float | None = None
    ) -> RefundOutcome:
        """Never raises for the provider's answers: a refusal is FAILED, no
        answer (timeout, 5xx, a cut connection) is UNKNOWN."""
        ...


class ParsedEvent(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def created(self) -> datetime | None: ...
    @property
    def stored_json(self) -> str: ...
    @property
    def observation(self) -> ProviderObservation: ...


EventParser = Callable[[bytes], ParsedEvent]
SnapshotReader = Callable[[ProviderFacts], Snapshot]
RefundReader = Callable[[ProviderRefundWords], ProviderRefundFact]


class WebhookEndpointRepository(Protocol):
    """A client's webhook endpoints (SPEC §3d). Every method is scoped to
    the client: another client's endpoint is None/False, as a missing one."""

    async def insert(self, endpoint: WebhookEndpoint, secret: bytes, *, limit: int) -> None:
        """Stores the endpoint, starting at the feed's end, unless the client
        has `limit` already (TooManyEndpoints; checked under a per-client
        lock, so concurrent creates never pass it)."""
        ...

    async def of_client(self, client_id: str) -> list[WebhookEndpoint]: ...

    async def get(self, client_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint | None: ...

    async def update(
        self, client_id: str, endpoint_id: uuid.UUID, changes: EndpointChanges
    ) -> WebhookEndpoint | None: ...

    async def delete(self, client_id: str, endpoint_id: uuid.UUID) -> bool: ...

    async def rotate(
        self, client_id: str, endpoint_id: uuid.UUID, secret: bytes, overlap: timedelta
    ) -> WebhookEndpoint | None:
        """The new secret; the current one becomes the previous one, kept
        for `overlap`."""
        ...

    async def attempts(
        self, client_id: str, endpoint_id: uuid.UUID, after: PageCursor | None, limit: int
    ) -> list[DeliveryAttempt] | None:
        """Newest first, after the cursor; None when there is no such endpoint."""
        ...

    async def rewind(
        self, client_id: str, endpoint_id: uuid.UUID, after_position: int
    ) -> int | None:
        """Queues again every update of the client after the position (0:
        the oldest kept): the endpoint's cursor goes back to it. Returns the
        feed's horizon (a position below it has expired: nothing is done),
        None when there is no such endpoint."""
        ...


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses a name resolves to; raises OSError when it does not."""
        ...


class WebhookDispatchRepository(Protocol):
    """The dispatcher's side of the webhook tables (adapters/webhook_dispatch_store.py)."""

    async def lease(
        self, dispatcher_id: str, lease_seconds: float, max_endpoints: int
    ) -> list[LeasedEndpoint]: ...

    async def fetch(
        self, dispatcher_id: str, endpoint_id: uuid.UUID, limit: int, busy: list[uuid.UUID]
    ) -> DueMessages:
        """Raises LeaseLost when the dispatcher does not hold the endpoint."""
        ...

    async def record(self, record: AttemptRecord) -> EndpointState: ...

    async def expire_attempts(self, before: datetime, limit: int) -> int:
        """Deletes up to `limit` attempts made before `before`; returns how many."""
        ...
