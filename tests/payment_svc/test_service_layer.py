"""The use cases against in-memory fakes of their ports: no Postgres, no
provider-sim. The same behaviour on real parts is covered by
test_create_payment.py, test_outages.py, test_provider_events.py and
test_reconciliation_rpcs.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payment_svc.domain.commands import CreatePayment, ListPayments
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import (
    DuplicatePayment,
    FieldViolation,
    InvalidArgument,
    ResultNotRecorded,
    UnprocessableEvent,
)
from payment_svc.domain.inbox import EventOutcome, InboxEvent, StoredEvent, UnmatchedEvent
from payment_svc.domain.model import NewPayment, ProviderResult
from payment_svc.domain.payment_results import plan_result
from payment_svc.domain.provider_events import ProviderObservation, StateRank
from payment_svc.domain.reconciliation import DiscrepancyKind, Snapshot
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.discrepancies import DiscrepancyService
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.payments import PaymentsService
from payment_svc.service_layer.provider_sync import (
    ApplyProviderEvent,
    ProviderSyncService,
    apply_to_inbox,
)
from payment_svc.service_layer.reconciliation import ReconciliationService
from payment_svc.service_layer.runs import RunService
from tests.payment_svc.fakes import (
    FakeDiscrepancies,
    FakeInbox,
    FakePaymentRepository,
    FakeProvider,
    FakeQuarantine,
    FakeSnapshotRepository,
    FakeUnitOfWork,
)

TOKENS = PageTokens(b"k" * 32)


def _service(
    repo: FakePaymentRepository, provider: FakeProvider, *, write_reserve: float = 1.0
) -> PaymentsService:
    return PaymentsService(
        repo,
        provider,
        AttemptBudget(provider_timeout=5.0, write_reserve=write_reserve),
        page_tokens=TOKENS,
    )


def _cmd(key: str = "k-1", amount: int = 1000) -> CreatePayment:
    return CreatePayment(key, amount, "EUR", "pm_card_visa")


async def test_create_records_the_payment_before_asking_the_provider() -> None:
    repo = FakePaymentRepository()
    provider = FakeProvider(repository=repo)
    payment = await _service(repo, provider).create("c1", _cmd())
    assert provider.seen_recorded == [True]
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.provider_payment_id == "pi_fake"
    assert provider.charges[0].idempotency_key == payment.public_id
    assert [h[2] for h in repo.history] == [PaymentStatus.PENDING, PaymentStatus.SUCCEEDED]


async def test_a_duplicate_key_never_reaches_the_provider() -> None:
    repo = FakePaymentRepository()
    provider = FakeProvider()
    service = _service(repo, provider)
    first = await service.create("c1", _cmd())
    with pytest.raises(DuplicatePayment) as same:
        await service.create("c1", _cmd())
    with pytest.raises(DuplicatePayment) as other:
        await service.create("c1", _cmd(amount=999))
    assert len(provider.charges) == 1
    assert same.value.payment_id == first.public_id and same.value.same_parameters
    assert not other.value.same_parameters


async def test_a_provider_that_times_out_leaves_the_payment_unknown() -> None:
    repo = FakePaymentRepository()
    # What the provider adapter answers when its call is cut short.
    provider = FakeProvider(answer=ProviderResult(PaymentStatus.UNKNOWN, note="timeout"))
    loop = asyncio.get_running_loop()
    payment = await _service(repo, provider).create("c1", _cmd(), deadline=loop.time() + 2.0)
    assert payment.status is PaymentStatus.UNKNOWN
    # the provider call was bounded so that the answer can still be written
    (timeout,) = provider.timeouts
    assert timeout is not None and 0 < timeout < 2.0


async def test_the_answer_write_is_retried_while_the_store_is_away() -> None:
    repo = FakePaymentRepository(record_failures=2)
    payment = await _service(repo, FakeProvider()).create(
        "c1", _cmd(), deadline=asyncio.get_running_loop().time() + 3.0
    )
    assert payment.status is PaymentStatus.SUCCEEDED
    assert repo.record_calls == 3


def _webhook(status: PaymentStatus) -> Callable[[FakePaymentRepository], None]:
    """Another writer (the provider's webhook) moves the payment in between:
    bound to pi_fake, at `status`, one version on."""

    def change(repo: FakePaymentRepository) -> None:
        (p,) = repo.payments.values()
        repo.payments[p.id] = replace(
            p, status=status, provider_payment_id="pi_fake", version=p.version + 1
        )
        repo.history.append((p.id, p.status, status, Source.WEBHOOK, True))

    return change


async def test_an_answer_is_planned_again_on_a_payment_moved_meanwhile() -> None:
    # Read (PENDING, version 1), plan MOVE, and before the write a webhook
    # binds the payment (still PENDING, version 2): the conditional write
    # refuses once; the payment is read again, planned again, written once.
    repo = FakePaymentRepository(concurrent_write=_webhook(PaymentStatus.PENDING))
    payment = await _service(repo, FakeProvider()).create("c1", _cmd())
    assert (payment.status, payment.provider_payment_id) == (PaymentStatus.SUCCEEDED, "pi_fake")
    assert payment.version == 3  # created 1, the webhook 2, our move 3
    assert repo.conflicts == 1 and repo.record_calls == 2
    moves = [(h[1], h[2], h[3]) for h in repo.history if h[4] and h[1] is not None]
    assert moves == [
        (PaymentStatus.PENDING, PaymentStatus.PENDING, Source.WEBHOOK),
        (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, Source.API),
    ]


async def test_an_answer_the_payment_reached_meanwhile_writes_nothing() -> None:
    # The webhook got there first with the same news: planned again on it,
    # the answer is NOTHING to write (no second history entry).
    repo = FakePaymentRepository(concurrent_write=_webhook(PaymentStatus.SUCCEEDED))
    payment = await _service(repo, FakeProvider()).create("c1", _cmd())
    assert payment.status is PaymentStatus.SUCCEEDED and payment.version == 2
    assert repo.conflicts == 1 and repo.record_calls == 1
    assert [h[3] for h in repo.history if h[2] is PaymentStatus.SUCCEEDED] == [Source.WEBHOOK]


async def test_an_answer_never_written_is_result_not_recorded() -> None:
    repo = FakePaymentRepository(record_failures=10_000)
    with pytest.raises(ResultNotRecorded):
        await _service(repo, FakeProvider(), write_reserve=0.3).create(
            "c1", _cmd(), deadline=asyncio.get_running_loop().time() + 0.8
        )
    assert repo.record_calls > 1
    (stored,) = repo.payments.values()
    assert stored.status is PaymentStatus.PENDING


async def test_list_pages_on_the_sort_key() -> None:
    repo = FakePaymentRepository()
    service = _service(repo, FakeProvider())
    for i in range(5):
        await service.create("c1", _cmd(key=f"k-{i}"))
    seen: list[uuid.UUID] = []
    token = ""
    while True:
        page = await service.list("c1", ListPayments(page_size=2, page_token=token))
        seen += [p.id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5


class _Unparseable:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload: bytes) -> Any:
        self.calls += 1
        raise UnprocessableEvent([FieldViolation("payload", "not JSON")])


def _sync(
    inbox: FakeInbox,
    quarantine: FakeQuarantine,
    discrepancies: FakeDiscrepancies,
    parse: Any,
    repo: FakePaymentRepository | None = None,
) -> ProviderSyncService:
    return ProviderSyncService(
        inbox,
        discrepancies,
        unmatched_deadline_seconds=60,
        quarantine=quarantine,
        parse=parse,
        uow=lambda: FakeUnitOfWork(
            repo or FakePaymentRepository(), discrepancies, inbox, quarantine=quarantine
        ),
    )


async def test_an_unprocessable_event_is_quarantined_once_per_payload() -> None:
    inbox, quarantine, discrepancies = FakeInbox(), FakeQuarantine(), FakeDiscrepancies()
    sync = _sync(inbox, quarantine, discrepancies, _Unparseable())
    cmd = ApplyProviderEvent("evt_1", "payment_intent.succeeded", b"{nope", Source.WEBHOOK)
    ids = []
    for _ in range(2):
        outcome = await sync.apply_event(cmd)  # a result: acknowledged by its callers
        assert not (outcome.applied or outcome.duplicate or outcome.payment_id)
        ids.append(outcome.quarantine_id)
    assert ids[0] == ids[1]
    (entry,) = quarantine.entries.values()
    assert entry.deliveries == 2 and entry.provider_event_id == "evt_1"
    assert inbox.applied == []
    # Reported by the service layer, in the entry's unit of work, once while open.
    (found,) = discrepancies.open.values()
    assert found.kind is DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT
    assert (found.details["quarantine_id"], found.occurrences) == (ids[0], 2)


async def test_overdue_unmatched_events_become_deduplicated_discrepancies() -> None:
    inbox, discrepancies = FakeInbox(), FakeDiscrepancies()
    sync = _sync(inbox, FakeQuarantine(), discrepancies, _Unparseable())
    row = UnmatchedEvent("evt_9", "charge.refunded", "pi_9", None, datetime.now(UTC))
    inbox.overdue = [row]
    assert await sync.report_overdue() == 1
    inbox.overdue = [row]
    assert await sync.report_overdue() == 1
    (found,) = discrepancies.open.values()
    assert found.kind is DiscrepancyKind.UNMATCHED_PROVIDER_EVENT
    assert found.provider_payment_id == "pi_9"
    assert found.occurrences == 2


async def test_rematch_parses_stored_rows_with_the_injected_parser() -> None:
    inbox = FakeInbox(stored={"evt_x": StoredEvent("{}", None, "webhook")})
    parse = _Unparseable()
    sync = _sync(inbox, FakeQuarantine(), FakeDiscrepancies(), parse)
    assert await sync.rematch() == 0
    assert parse.calls == 1


async def test_a_lease_needs_an_owner_and_the_store_is_not_asked() -> None:
    never: Any = object()  # no repository is reached
    service = ReconciliationService(
        never,
        _service(FakePaymentRepository(), FakeProvider()),
        uow=never,
        discrepancies=DiscrepancyService(never, page_tokens=TOKENS),
        runs=RunService(never, never),
        redrive_window=3600,
        page_tokens=TOKENS,
        read_snapshot=_read_snapshot,
    )
    with pytest.raises(InvalidArgument):
        await service.work_list(
            older_than_seconds=10, page_size=10, page_token="", owner="", lease_seconds=30
        )


async def test_two_reconcilers_never_claim_one_payment_while_its_lease_holds() -> None:
    repo = FakePaymentRepository()
    for n in range(4):
        await repo.insert_new(
            NewPayment(uuid.uuid4(), "c1", f"k-{n}", b"f", 1000, "EUR", "pm_card_visa", "", {})
        )
    snapshots = FakeSnapshotRepository(repo, now=datetime.now(UTC) + timedelta(minutes=1))
    never: Any = object()
    service = ReconciliationService(
        snapshots,
        _service(repo, FakeProvider()),
        uow=never,
        discrepancies=DiscrepancyService(never, page_tokens=TOKENS),
        runs=RunService(never, never),
        redrive_window=3600,
        page_tokens=TOKENS,
        read_snapshot=_read_snapshot,
    )

    async def claim(owner: str, page_size: int = 10) -> set[uuid.UUID]:
        page = await service.work_list(
            older_than_seconds=10,
            page_size=page_size,
            page_token="",
            owner=owner,
            lease_seconds=30,
        )
        return {p.id for p in page.payments}

    a = await claim("reconciler-a", page_size=2)
    b = await claim("reconciler-b")
    assert len(a) == 2 and len(b) == 2 and not a & b
    # While the leases hold, each asks again and gets its own back, never the other's.
    assert await claim("reconciler-b") == b
    assert await claim("reconciler-a") == a
    # Past the lease, what A claimed is free again: B takes every payment.
    snapshots.now += timedelta(seconds=31)
    assert await claim("reconciler-b") == a | b
    assert await claim("reconciler-a") == set()


async def test_reported_discrepancies_count_up_while_open() -> None:
    discrepancies = FakeDiscrepancies()
    service = DiscrepancyService(discrepancies, page_tokens=TOKENS)  # type: ignore[arg-type]
    first = await service.report(DiscrepancyKind.STUCK_PAYMENT, "", "pi_1", {"a": "1"})
    again = await service.report(DiscrepancyKind.STUCK_PAYMENT, "", "pi_1", {"a": "2"})
    assert first.id == again.id and again.occurrences == 2


def _read_snapshot(facts: Any) -> Snapshot:
    """The fake provider adapter: these tests hand in the Snapshot itself."""
    assert isinstance(facts, Snapshot)
    return facts


def _snapshot(status: PaymentStatus, amount: int = 1000, **kw: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "found": True,
        "status": status,
        "provider_payment_id": "pi_fake",
        "amount": amount,
        "currency": "eur",
        "amount_reversed": 0,
        "failure_code": None,
        "failure_message": None,
        "provider_status": "succeeded",
    }
    fields.update(kw)
    return Snapshot(**fields)


async def _reconciliation(
    answer: PaymentStatus,
) -> tuple[ReconciliationService, FakeUnitOfWork, FakePaymentRepository, str]:
    repo = FakePaymentRepository()
    payments = _service(repo, FakeProvider(answer=ProviderResult(answer, note="timeout")))
    created = await payments.create("c1", _cmd())
    uow = FakeUnitOfWork(repo, FakeDiscrepancies())
    never: Any = object()
    service = ReconciliationService(
        never,
        payments,
        uow=lambda: uow,
        discrepancies=DiscrepancyService(never, page_tokens=TOKENS),
        runs=RunService(never, never),
        redrive_window=3600,
        page_tokens=TOKENS,
        read_snapshot=_read_snapshot,
    )
    return service, uow, repo, created.public_id


async def test_a_snapshot_is_applied_in_one_unit_of_work_and_frees_the_lease() -> None:
    service, uow, repo, payment_id = await _reconciliation(PaymentStatus.UNKNOWN)
    result = await service.reconcile(payment_id, _snapshot(PaymentStatus.SUCCEEDED))
    assert result.changed and result.payment.status is PaymentStatus.SUCCEEDED
    assert uow.commits == 1
    (stored,) = repo.payments.values()
    assert stored.status is PaymentStatus.SUCCEEDED
    assert uow.payments.leases_released == [stored.id]  # type: ignore[attr-defined]


async def test_a_snapshot_of_another_amount_is_a_discrepancy_not_a_change() -> None:
    service, uow, repo, payment_id = await _reconciliation(PaymentStatus.UNKNOWN)
    result = await service.reconcile(payment_id, _snapshot(PaymentStatus.SUCCEEDED, amount=999))
    assert not result.changed
    assert result.discrepancies == [DiscrepancyKind.AMOUNT_MISMATCH]
    (found,) = uow.committed_discrepancies.open.values()
    assert found.details["provider_amount"] == "999"
    assert next(iter(repo.payments.values())).status is PaymentStatus.UNKNOWN


# Applying a provider event (apply_to_inbox), on the fakes. The same on
# Postgres, with the one inbox statement: test_provider_events.py.

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(
    event_id: str,
    status: PaymentStatus | None,
    *,
    provider_id: str | None = "pi_1",
    metadata_id: str | None = None,
    at: int = 0,
    rank: StateRank = StateRank.SETTLED,
    refunded: int | None = None,
) -> InboxEvent:
    obs = ProviderObservation(
        provider_payment_id=provider_id,
        metadata_payment_id=metadata_id,
        status=status,
        rank=rank,
        occurred_at=T0 + timedelta(seconds=at),
        provider_status="succeeded",
        amount_reversed=refunded,
        reversal=refunded is not None,
    )
    return InboxEvent(event_id, "payment_intent.succeeded", T0, "{}", obs, Source.WEBHOOK)


async def _inbox_with_payment(
    bound: str | None = None,
) -> tuple[FakeUnitOfWork, FakePaymentRepository, FakeInbox, FakeDiscrepancies, uuid.UUID]:
    repo, inbox, discrepancies = FakePaymentRepository(), FakeInbox(), FakeDiscrepancies()
    payment = await _service(repo, FakeProvider()).create("c1", _cmd()) if bound else None
    if payment is None:
        payment = await repo.insert_new(
            NewPayment(uuid.uuid4(), "c1", "k-1", b"f", 1000, "EUR", "pm_card_visa", "", {})
        )
    return FakeUnitOfWork(repo, discrepancies, inbox), repo, inbox, discrepancies, payment.id


async def test_an_event_is_applied_and_binds_the_payment() -> None:
    uow, repo, inbox, _, pid = await _inbox_with_payment()
    meta = repo.payments[pid].public_id
    out = await apply_to_inbox(
        lambda: uow, _event("evt_1", PaymentStatus.SUCCEEDED, metadata_id=meta)
    )
    assert out == EventOutcome(False, pid, True)
    assert repo.payments[pid].status is PaymentStatus.SUCCEEDED
    assert repo.payments[pid].provider_payment_id == "pi_1"
    assert inbox.rows["evt_1"] == (pid, True) and uow.commits == 1


async def test_a_redelivery_writes_nothing_and_says_what_the_first_did() -> None:
    uow, repo, inbox, _, pid = await _inbox_with_payment()
    meta = repo.payments[pid].public_id
    event = _event("evt_1", PaymentStatus.SUCCEEDED, metadata_id=meta)
    await apply_to_inbox(lambda: uow, event)
    history = list(repo.history)
    again = await apply_to_inbox(lambda: uow, event)
    assert again == EventOutcome(True, pid, True)
    assert repo.history == history and len(inbox.applied) == 1


async def test_a_stale_event_is_recorded_but_does_not_move_the_payment() -> None:
    uow, repo, _, _, pid = await _inbox_with_payment()
    meta = repo.payments[pid].public_id
    await apply_to_inbox(
        lambda: uow, _event("evt_ok", PaymentStatus.SUCCEEDED, metadata_id=meta, at=10)
    )
    old = await apply_to_inbox(lambda: uow, _event("evt_old", PaymentStatus.FAILED, at=5))
    assert old == EventOutcome(False, pid, False)
    assert repo.payments[pid].status is PaymentStatus.SUCCEEDED


async def test_an_event_for_no_known_payment_is_kept_and_matched_later() -> None:
    uow, repo, inbox, discrepancies, pid = await _inbox_with_payment()
    out = await apply_to_inbox(
        lambda: uow, _event("evt_early", PaymentStatus.SUCCEEDED, provider_id="pi_9")
    )
    assert out == EventOutcome(False, None, False)
    assert "evt_early" in inbox.stored
    assert repo.payments[pid].status is PaymentStatus.PENDING
    # the payment turns out to be pi_9's: the upkeep matches the kept event
    repo.payments[pid] = replace(repo.payments[pid], provider_payment_id="pi_9")
    stored = _event("evt_early", PaymentStatus.SUCCEEDED, provider_id="pi_9")
    sync = _sync(inbox, FakeQuarantine(), discrepancies, lambda _b: _Parsed(stored), repo)
    assert await sync.rematch() == 1
    assert repo.payments[pid].status is PaymentStatus.SUCCEEDED
    assert inbox.rows["evt_early"] == (pid, True) and "evt_early" not in inbox.stored


async def test_an_event_of_another_provider_payment_is_a_duplicate_never_applied() -> None:
    uow, repo, _, discrepancies, pid = await _inbox_with_payment(bound="pi_fake")
    meta = repo.payments[pid].public_id
    out = await apply_to_inbox(
        lambda: uow, _event("evt_2", PaymentStatus.FAILED, provider_id="pi_other", metadata_id=meta)
    )
    assert out == EventOutcome(False, pid, False, DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT)
    assert repo.payments[pid].provider_payment_id == "pi_fake"
    assert repo.payments[pid].status is PaymentStatus.SUCCEEDED
    (found,) = discrepancies.open.values()
    assert found.kind is DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT
    assert found.details["bound_provider_payment_id"] == "pi_fake"


async def test_a_refunded_total_moves_nothing_a_dispute_of_part_keeps_it_succeeded() -> None:
    uow, repo, _, _, pid = await _inbox_with_payment(bound="pi_fake")
    # charge.refunded's total counts pending refunds too: evidence only
    # (issue 25); the refunds themselves move the payment.
    refund = _event(
        "evt_r",
        PaymentStatus.SUCCEEDED,
        provider_id="pi_fake",
        rank=StateRank.REVERSED,
        refunded=300,
    )
    out = await apply_to_inbox(lambda: uow, refund)
    assert not out.applied
    assert (repo.payments[pid].status, repo.payments[pid].amount_reversed) == (
        PaymentStatus.SUCCEEDED,
        0,
    )
    dispute = replace(
        refund,
        provider_event_id="evt_d",
        observation=replace(refund.observation, amount_reversed=None, reversal_added=400),
    )
    out = await apply_to_inbox(lambda: uow, dispute)
    assert out.applied
    now = repo.payments[pid]
    assert (now.status, now.amount_reversed, now.amount_disputed) == (
        PaymentStatus.SUCCEEDED,
        400,
        400,
    )


@dataclass(frozen=True)
class _Parsed:
    event: InboxEvent

    @property
    def id(self) -> str:
        return self.event.provider_event_id

    @property
    def type(self) -> str:
        return self.event.event_type

    @property
    def created(self) -> datetime | None:
        return self.event.created

    @property
    def stored_json(self) -> str:
        return self.event.stored_json

    @property
    def observation(self) -> ProviderObservation:
        return self.event.observation


async def test_an_answer_about_another_provider_payment_never_rebinds() -> None:
    repo = FakePaymentRepository()
    service = _service(repo, FakeProvider(answer=ProviderResult(PaymentStatus.UNKNOWN, "pi_a")))
    payment = await service.create("c1", _cmd())
    assert payment.provider_payment_id == "pi_a"
    after = await record_result(
        repo,
        payment,
        ProviderResult(PaymentStatus.SUCCEEDED, "pi_b", provider_status="succeeded"),
        source=Source.RECONCILER,
        plan=plan_result,
    )
    assert after.provider_payment_id == "pi_a" and after.status is PaymentStatus.UNKNOWN
    assert repo.history[-1][4] is False
    (details,) = repo.duplicates
    assert details["bound_provider_payment_id"] == "pi_a"
