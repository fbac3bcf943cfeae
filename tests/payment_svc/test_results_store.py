"""Recording the provider's answer on real Postgres (service_layer/payment_results.py
over PaymentStore): the answer's move is written only on the version it was
planned on; when the payment moved meanwhile, it is read again and planned
again on what it is now, and written once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.domain.model import NewPayment, ProviderResult
from payment_svc.domain.payment_results import plan_result
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ids import new_payment_uuid
from payment_svc.service_layer.payment_results import record_result


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PaymentStore]:
    db = Database(database_url, timeout=5)
    await db.open()
    try:
        yield PaymentStore(db)
    finally:
        await db.close()


async def test_an_answer_planned_on_a_stale_read_is_planned_again_and_written_once(
    store: PaymentStore, db: asyncpg.Pool
) -> None:
    read = await store.insert_new(
        NewPayment(
            id=new_payment_uuid(),
            client_id="merchant-1",
            idempotency_key=f"results-{uuid.uuid4()}",
            fingerprint=b"f",
            amount=1999,
            currency="USD",
            payment_method="pm_card_visa",
            description="",
            metadata={},
        )
    )
    pi = f"pi_{uuid.uuid4().hex}"  # unique in the session's database
    # Another writer moves it after our read: UNKNOWN, bound to pi (version 2).
    moved = await record_result(
        store, read, ProviderResult(PaymentStatus.UNKNOWN, pi), source=Source.RECONCILER
    )
    assert (moved.status, moved.version) == (PaymentStatus.UNKNOWN, 2)
    # Our answer, planned on the PENDING read at version 1: the conditional
    # write finds version 2, so it is planned again from UNKNOWN.
    answer = ProviderResult(PaymentStatus.SUCCEEDED, pi, provider_status="succeeded")
    stale_plan = plan_result(read, answer, Source.API)
    assert await store.write_result(read, answer, source=Source.API, plan=stale_plan) is None
    after = await record_result(store, read, answer, source=Source.API)
    assert (after.status, after.provider_payment_id, after.version) == (
        PaymentStatus.SUCCEEDED,
        pi,
        3,
    )
    rows = await db.fetch(
        "SELECT from_status, to_status, source, applied FROM payment_events"
        " WHERE payment_id = $1 ORDER BY id",
        read.id,
    )
    assert [(r["from_status"], r["to_status"], r["source"], r["applied"]) for r in rows] == [
        (None, "PENDING", "api", True),
        ("PENDING", "UNKNOWN", "reconciler", True),
        ("UNKNOWN", "SUCCEEDED", "api", True),
    ]
