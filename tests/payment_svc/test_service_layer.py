"""The use cases against in-memory fakes of their ports: no Postgres, no
provider-sim. The same behaviour on real parts is covered by
test_create_payment.py, test_outages.py, test_provider_events.py and
test_reconciliation_rpcs.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
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
from payment_svc.domain.inbox import StoredEvent, UnmatchedEvent
from payment_svc.domain.model import ProviderResult
from payment_svc.domain.reconciliation import DiscrepancyKind, Snapshot
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.discrepancies import DiscrepancyService
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.payments import PaymentsService
from payment_svc.service_layer.provider_sync import ApplyProviderEvent, ProviderSyncService
from payment_svc.service_layer.reconciliation import ReconciliationService
from payment_svc.service_layer.runs import RunService
from tests.payment_svc.fakes import (
    FakeDiscrepancies,
    FakeInbox,
    FakePaymentRepository,
    FakeProvider,
    FakeQuarantine,
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
    inbox: FakeInbox, quarantine: FakeQuarantine, discrepancies: FakeDiscrepancies, parse: Any
) -> ProviderSyncService:
    return ProviderSyncService(
        inbox,
        discrepancies,
        unmatched_deadline_seconds=60,
        quarantine=quarantine,
        parse=parse,
    )


async def test_an_unprocessable_event_is_quarantined_once_per_payload() -> None:
    inbox, quarantine = FakeInbox(), FakeQuarantine()
    sync = _sync(inbox, quarantine, FakeDiscrepancies(), _Unparseable())
    cmd = ApplyProviderEvent("evt_1", "payment_intent.succeeded", b"{nope", Source.WEBHOOK)
    ids = []
    for _ in range(2):
        with pytest.raises(UnprocessableEvent) as exc:
            await sync.apply_event(cmd)
        ids.append(exc.value.quarantine_id)
    assert ids[0] == ids[1]
    (entry,) = quarantine.entries.values()
    assert entry.deliveries == 2 and entry.provider_event_id == "evt_1"
    assert inbox.applied == []


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
