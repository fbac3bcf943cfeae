"""The binding rule where the writes happen, on real Postgres: a provider
answer naming another provider payment never overwrites the one a payment is
bound to; it is kept in the history, not applied, and recorded as
DUPLICATE_PROVIDER_PAYMENT."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.domain.model import NewPayment, ProviderResult
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ids import new_payment_uuid
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.payments import record_new


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PaymentStore]:
    db = Database(database_url, timeout=5)
    await db.open()
    try:
        yield PaymentStore(db)
    finally:
        await db.close()


async def test_a_result_naming_another_provider_payment_is_recorded_not_applied(
    store: PaymentStore, db: asyncpg.Pool
) -> None:
    payment = await record_new(
        store,
        NewPayment(
            id=new_payment_uuid(),
            client_id="merchant-1",
            idempotency_key=f"binding-{uuid.uuid4()}",
            fingerprint=b"f",
            amount=1999,
            currency="USD",
            payment_method="pm_card_processing",
            description="",
            metadata={},
        ),
    )
    bound = await record_result(
        store,
        payment,
        ProviderResult(status=PaymentStatus.PENDING, provider_payment_id="pi_A"),
        source=Source.API,
    )
    assert bound.provider_payment_id == "pi_A"

    # A later answer about another provider payment, from a stale read of the
    # payment (no provider id yet) and from a fresh one.
    for seen in (payment, bound):
        after = await record_result(
            store,
            seen,
            ProviderResult(
                status=PaymentStatus.SUCCEEDED,
                provider_payment_id="pi_B",
                provider_status="succeeded",
            ),
            source=Source.RECONCILER,
        )
        assert (after.status, after.provider_payment_id) == (PaymentStatus.PENDING, "pi_A")

    row = await db.fetchrow(
        "SELECT status, provider_payment_id FROM payments WHERE id = $1", payment.id
    )
    assert row is not None
    assert (row["status"], row["provider_payment_id"]) == ("PENDING", "pi_A")
    [finding] = await db.fetch(
        "SELECT kind, provider_payment_id, details, occurrences FROM discrepancies"
        " WHERE payment_id = $1",
        payment.id,
    )
    assert (finding["kind"], finding["provider_payment_id"]) == (
        "DUPLICATE_PROVIDER_PAYMENT",
        "pi_B",
    )
    assert json.loads(finding["details"])["bound_provider_payment_id"] == "pi_A"
    assert finding["occurrences"] == 2
    refused = await db.fetch(
        "SELECT applied, note FROM payment_events WHERE payment_id = $1 AND to_status = $2",
        payment.id,
        "SUCCEEDED",
    )
    assert len(refused) == 2
    assert not any(r["applied"] for r in refused)
    assert all("pi_B" in r["note"] and "double charge" in r["note"] for r in refused)
