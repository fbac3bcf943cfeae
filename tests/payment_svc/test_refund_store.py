"""The refunds' SQL (adapters/refund_store.py) on real Postgres: the insert
with its history entry, the key's uniqueness, what recording an outcome
writes to the refund, the payment and its history."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.adapters.postgres_uow import PostgresUnitOfWork
from payment_svc.adapters.refund_store import RefundStore
from payment_svc.domain.errors import DuplicateRefund, NotFound
from payment_svc.domain.model import NewPayment, Payment, ProviderResult
from payment_svc.domain.refunds import (
    NewRefund,
    Refund,
    RefundOutcome,
    RefundStatus,
    duplicate_of,
    plan_outcome,
    refund_fingerprint,
)
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ids import new_payment_uuid, new_refund_uuid
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.payments import record_new

CLIENT = "refund-store-test"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, timeout=5, max_size=2)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def succeeded(db: Database, amount: int = 1000) -> Payment:
    store = PaymentStore(db)
    new = NewPayment(
        id=new_payment_uuid(),
        client_id=CLIENT,
        idempotency_key=f"k-{uuid.uuid4()}",
        fingerprint=b"f",
        amount=amount,
        currency="USD",
        payment_method="pm_card_visa",
        description="",
        metadata={},
    )
    answer = ProviderResult(PaymentStatus.SUCCEEDED, f"pi_{uuid.uuid4().hex[:12]}", "succeeded")
    return await record_result(store, await record_new(store, new), answer, source=Source.API)


def new_refund(p: Payment, amount: int, key: str | None) -> NewRefund:
    return NewRefund(
        id=new_refund_uuid(),
        payment_id=p.id,
        client_id=CLIENT,
        idempotency_key=key,
        fingerprint=refund_fingerprint(p.public_id, amount, "") if key else None,
        amount=amount,
        currency=p.currency,
        reason="",
        source=Source.API,
    )


async def insert(db: Database, p: Payment, amount: int, key: str | None) -> Refund:
    """As RefundPayment writes one: the read (with the key's refund), then
    the insert on the payment as read."""
    store = RefundStore(db)
    new = new_refund(p, amount, key)
    seen = await store.read(p.id, key=(CLIENT, key) if key is not None else None)
    if seen.by_key is not None:
        raise duplicate_of(seen.by_key, new.fingerprint)
    refund = await store.insert_unless_moved(new, seen.payment)
    assert refund is not None, "nobody else writes this payment"
    return refund


async def record(
    db: Database, refund: Refund, outcome: RefundOutcome, *, authoritative: bool = False
) -> tuple[Refund, Payment]:
    async with PostgresUnitOfWork(db) as uow:
        payment = await uow.payments.get_for_update(refund.payment_id)
        current = await uow.refunds.get_for_update(refund.id)
        others = [
            r
            for r in await uow.refunds.of_payment(payment.id)
            if r.id != current.id and r.status is RefundStatus.SUCCEEDED
        ]
        plan = plan_outcome(
            payment, current, sum(r.amount for r in others), outcome, authoritative=authoritative
        )
        written = await uow.refunds.record(payment, current, outcome, plan, source=Source.WEBHOOK)
        await uow.commit()
    return written


async def history(db: asyncpg.Pool, p: Payment) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT from_status, to_status, applied, refund_id, refund_status, note "
            "FROM payment_events WHERE payment_id = $1 AND refund_id IS NOT NULL ORDER BY id",
            p.id,
        )
    )


async def test_insert_keeps_the_refund_and_its_history_entry_and_refuses_the_key_again(
    database: Database, db: asyncpg.Pool
) -> None:
    p = await succeeded(database)
    key = f"rk-{uuid.uuid4()}"
    r = await insert(database, p, 300, key)
    assert (r.status, r.amount, r.source, r.idempotency_key) == (
        RefundStatus.PENDING,
        300,
        Source.API,
        key,
    )
    [entry] = await history(db, p)
    assert (entry["from_status"], entry["to_status"], entry["refund_status"]) == (
        "SUCCEEDED",
        "SUCCEEDED",
        "PENDING",
    )
    with pytest.raises(DuplicateRefund) as same:
        await insert(database, p, 300, key)
    assert (same.value.reason, same.value.refund_id) == ("DUPLICATE_REFUND", r.public_id)
    other = await succeeded(database)
    with pytest.raises(DuplicateRefund) as reused:
        await insert(database, other, 300, key)  # the unique key, across payments
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # A refund made at the provider directly has no key; several may exist.
    await insert(database, p, 10, None)
    await insert(database, p, 10, None)
    assert [x.amount for x in await RefundStore(database).for_payment(CLIENT, p.id)] == [
        300,
        10,
        10,
    ]


async def test_recording_moves_the_refund_and_the_payment_in_its_history(
    database: Database, db: asyncpg.Pool
) -> None:
    p = await succeeded(database)
    first = await insert(database, p, 600, f"rk-{uuid.uuid4()}")
    rest = await insert(database, p, 400, f"rk-{uuid.uuid4()}")
    moved, payment = await record(database, first, RefundOutcome(RefundStatus.SUCCEEDED, "re_a"))
    assert (moved.status, moved.provider_refund_id, moved.version) == (
        RefundStatus.SUCCEEDED,
        "re_a",
        2,
    )
    assert (payment.status, payment.amount_reversed) == (PaymentStatus.SUCCEEDED, 600)
    _, payment = await record(database, rest, RefundOutcome(RefundStatus.SUCCEEDED, "re_b"))
    assert (payment.status, payment.amount_reversed) == (PaymentStatus.REVERSED, 1000)
    assert (await PaymentStore(database).get(CLIENT, p.id)).status is PaymentStatus.REVERSED
    found = await _by_provider_id(database, "re_b")
    assert found is not None and found.id == rest.id

    # A final refund contradicted by a non-authoritative source: recorded only.
    still, _ = await record(
        database, rest, RefundOutcome(RefundStatus.FAILED, failure_code="expired_or_canceled_card")
    )
    assert still.status is RefundStatus.SUCCEEDED
    rows = await history(db, p)
    assert [(r["from_status"], r["to_status"], r["refund_status"], r["applied"]) for r in rows] == [
        ("SUCCEEDED", "SUCCEEDED", "PENDING", True),
        ("SUCCEEDED", "SUCCEEDED", "PENDING", True),
        ("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", True),
        ("SUCCEEDED", "REVERSED", "SUCCEEDED", True),
        ("REVERSED", "REVERSED", "FAILED", False),
    ]
    assert "amount_reversed 600 -> 1000 of 1000" in rows[3]["note"]


async def test_every_refund_change_moves_its_payment_whoever_writes_it(
    database: Database,
) -> None:
    """Migration 0013's trigger: the writes under the lock (webhooks, the
    reconciler) move the payment's version as RefundPayment's do."""
    p = await succeeded(database)
    store = RefundStore(database)
    before = (await store.read(p.id)).payment.version
    r = await insert(database, p, 100, f"rk-{uuid.uuid4()}")
    after_insert = (await store.read(p.id)).payment.version
    await record(database, r, RefundOutcome(RefundStatus.SUCCEEDED, "re_v"))
    after_move = (await store.read(p.id)).payment.version
    assert before < after_insert < after_move


async def test_a_conditional_write_moves_the_payment_by_one_as_the_guess_expects(
    database: Database,
) -> None:
    """RefundPayment writes its answer first on the read it decided on plus
    its refund, the version one higher (PaymentRefunds.with_new): right when
    nobody wrote in between, so the read is saved (the trigger leaves a row
    the statement already moved alone)."""
    store = RefundStore(database)
    p = await succeeded(database)
    seen = await store.read(p.id)
    mine = await store.insert_unless_moved(new_refund(p, 100, f"rk-{uuid.uuid4()}"), seen.payment)
    assert mine is not None
    guess = seen.with_new(mine)
    assert (await store.read(p.id)).payment.version == guess.payment.version
    outcome = RefundOutcome(RefundStatus.SUCCEEDED, "re_g")
    plan = plan_outcome(guess.payment, mine, 0, outcome)
    moved = await store.record_unless_moved(guess.payment, mine, outcome, plan, source=Source.API)
    assert moved is not None and moved.status is RefundStatus.SUCCEEDED
    assert (await store.read(p.id)).payment.version == guess.payment.version + 1


async def test_the_read_holds_the_payment_its_refunds_and_the_keys_refund(
    database: Database,
) -> None:
    p = await succeeded(database)
    key = f"rk-{uuid.uuid4()}"
    store = RefundStore(database)
    empty = await store.read(p.id, key=(CLIENT, key))
    assert (empty.payment.id, empty.refunds, empty.by_key) == (p.id, [], None)
    a = await insert(database, p, 100, key)
    b = await insert(database, p, 200, None)
    seen = await store.read(p.id, key=(CLIENT, key))
    assert [r.id for r in seen.refunds] == [a.id, b.id]
    assert seen.by_key is not None and seen.by_key.id == a.id
    other = await succeeded(database)  # the key's refund, whichever payment it refunds
    assert (await store.read(other.id, key=(CLIENT, key))).by_key == seen.by_key
    with pytest.raises(NotFound):
        await store.read(uuid.uuid4())


async def test_a_write_planned_on_a_payment_that_moved_since_writes_nothing(
    database: Database, db: asyncpg.Pool
) -> None:
    p = await succeeded(database)
    store = RefundStore(database)
    seen = (await store.read(p.id)).payment
    # Another refund committed after the read (a webhook's, under the lock).
    other = await insert(database, p, 900, None)
    assert (
        await store.insert_unless_moved(new_refund(seen, 200, f"rk-{uuid.uuid4()}"), seen) is None
    )
    assert [r.id for r in await store.for_payment(CLIENT, p.id)] == [other.id]

    now = (await store.read(p.id)).payment
    mine = await store.insert_unless_moved(new_refund(now, 100, f"rk-{uuid.uuid4()}"), now)
    assert mine is not None and mine.status is RefundStatus.PENDING
    # Its answer, planned on the payment as it was before the insert: refused.
    stale = plan_outcome(now, mine, 0, RefundOutcome(RefundStatus.SUCCEEDED, "re_x"))
    assert (
        await store.record_unless_moved(
            now, mine, RefundOutcome(RefundStatus.SUCCEEDED, "re_x"), stale, source=Source.API
        )
        is None
    )
    # Planned on the payment as it is: written, with the payment's reversal.
    fresh = await store.read(p.id)
    current = fresh.refund(mine.id)
    assert current is not None
    outcome = RefundOutcome(RefundStatus.SUCCEEDED, "re_x")
    plan = plan_outcome(fresh.payment, current, 0, outcome)
    moved = await store.record_unless_moved(
        fresh.payment, current, outcome, plan, source=Source.API
    )
    assert moved is not None and (moved.status, moved.provider_refund_id) == (
        RefundStatus.SUCCEEDED,
        "re_x",
    )
    payment = (await store.read(p.id)).payment
    assert (payment.amount_reversed, payment.version > fresh.payment.version) == (100, True)
    applied = await db.fetchval(
        "SELECT count(*) FROM payment_events WHERE refund_id = $1 AND refund_status = 'SUCCEEDED'",
        mine.id,
    )
    assert applied == 1


async def test_another_clients_payment_has_no_refunds_to_list(database: Database) -> None:
    p = await succeeded(database)
    with pytest.raises(NotFound):
        await RefundStore(database).for_payment("someone-else", p.id)


async def _by_provider_id(db: Database, provider_refund_id: str) -> Refund | None:
    async with PostgresUnitOfWork(db) as uow:
        return await uow.refunds.by_provider_id(provider_refund_id)
