"""A payment the provider has heard of is never charged again, and a second
provider payment carrying one of our ids is recognised: real processes (own
Postgres database, payment-svc, webhook-gateway, provider-sim) and
`reconciler --once`.

The module runs its own stack: `POST /_sim/reset` makes its provider forget
everything, which would disturb the session stack the other modules share.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from reconciler_testkit import (
    Pass,
    assert_completed,
    create,
    discrepancies,
    get,
    history,
    run_once,
    sim_stripe_post,
    sync_stub,
    until,
)

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.stack import Stack, wait_serving
from tests.conftest import _with_database, stack_config
from tests.support import SimControl, auth, new_key, rich_error

# One owner for every pass, so that a page leased by the previous pass is ours again.
ONE_OWNER = {"RECONCILER_ID": "redrive-tests"}


@pytest.fixture(scope="module")
async def own(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    name = f"payments_redrive_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    s = Stack(stack_config(_with_database(pg_server, name), tmp_path_factory.mktemp("own")))
    try:
        s.start_database()
        s.start_payment_svc()
        s.start_webhook_gateway()
        s.start_provider_sim()
        await wait_serving(s.grpc_target)
        yield s
    finally:
        s.stop()
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def ch(own: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(own.grpc_target) as channel:
        yield channel


@pytest.fixture
async def psim(own: Stack) -> AsyncIterator[SimControl]:
    async with aiohttp.ClientSession(own.sim_url) as http:
        control = SimControl(http)
        yield control
        await control.clear_faults()


async def sweep(own: Stack, **env: str) -> Pass:
    return await run_once(own, "--jobs", "sweep", **(ONE_OWNER | env))


def redriven(result: Pass, payment_id: str) -> list[dict[str, Any]]:
    return [e for e in result.events("payment_redriven") if e["payment_id"] == payment_id]


async def found(
    ch: grpc.aio.Channel, kind: sync.DiscrepancyKind.ValueType, payment_id: str
) -> list[sync.Discrepancy]:
    return [d for d in await discrepancies(ch, kind) if d.payment_id == payment_id]


async def elsewhere(sim: SimControl, payment_id: str, **form: str) -> dict[str, Any]:
    """An intent carrying our payment id made at the provider by another system
    (its own idempotency key): a second charge for one of our payments."""
    fields = {
        "amount": "1999",
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "metadata[payment_id]": payment_id,
    }
    return await sim_stripe_post(
        sim, "/v1/payment_intents", fields | form, idempotency_key=f"other-system-{new_key()}"
    )


async def test_a_payment_the_provider_forgot_is_missing_never_charged_again(
    own: Stack, ch: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await create(ch, payment_method="pm_card_processing")
    assert p.status == pb.PAYMENT_STATUS_PENDING
    assert p.provider_payment_id.startswith("pi_")
    # The provider forgets (as another account's key or a wrong STRIPE_API_BASE looks).
    await psim.post("/_sim/reset")
    assert await psim.ledger() == []

    result = await sweep(own)
    assert_completed(result)

    assert not redriven(result, p.id)
    assert await psim.ledger() == []  # no second intent, no charge
    now = await get(ch, p.id)
    assert (now.status, now.provider_payment_id) == (p.status, p.provider_payment_id)
    [missing] = await found(ch, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER, p.id)
    assert missing.provider_payment_id == p.provider_payment_id
    assert missing.details["status"] == "PENDING"
    assert (missing.details["amount"], missing.details["currency"]) == ("1999", "USD")
    assert "does not know" in missing.details["reason"]
    logged = [e for e in result.events("discrepancy") if e["payment_id"] == p.id]
    assert [(e["level"], e["kind"]) for e in logged] == [("error", "MISSING_AT_PROVIDER")]

    # payment-svc refuses the re-drive too, whoever asks.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await sync_stub(ch).RedrivePayment(
            sync.RedrivePaymentRequest(payment_id=p.id), metadata=auth("reconciler"), timeout=10
        )
    error = rich_error(refused.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "PAYMENT_ALREADY_AT_PROVIDER"
    assert await psim.ledger() == []
    assert (await get(ch, p.id)).provider_payment_id == p.provider_payment_id

    # Seen again: still one finding, still no charge.
    assert_completed(await sweep(own))
    [again] = await found(ch, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER, p.id)
    assert again.occurrences == 2
    assert await psim.ledger() == []


async def test_a_search_that_fails_is_an_error_of_the_run_never_a_redrive(
    own: Stack, ch: grpc.aio.Channel, psim: SimControl
) -> None:
    await psim.faults(error_rate=1.0)
    p = await create(ch, payment_method="pm_card_visa")
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    assert not p.provider_payment_id
    await psim.clear_faults()

    # The search endpoint's own 404 (a wrong STRIPE_API_BASE): not "never reached".
    wrong_base = await sweep(own, STRIPE_API_BASE=f"{own.sim_url}/elsewhere")
    # ...and a provider answering 500 to everything.
    await psim.faults(error_rate=1.0)
    failing = await sweep(own)
    await psim.clear_faults()

    for result in (wrong_base, failing):
        assert not redriven(result, p.id), result.output[-2000:]
        assert [e for e in result.events("provider_fetch_failed") if e["payment_id"] == p.id]
        assert result.runs["sweep"]["errors"] >= 1
    assert await psim.ledger(payment_id=p.id) == []
    assert (await get(ch, p.id)).status == pb.PAYMENT_STATUS_UNKNOWN
    assert not await found(ch, sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER, p.id)

    # A search that answers "none of ours" is what re-drives it, once.
    answered = await sweep(own)
    assert_completed(answered)
    [event] = redriven(answered, p.id)
    assert event["status"] == "SUCCEEDED"
    [intent] = await psim.ledger(payment_id=p.id)
    assert intent["charges"] == 1


async def test_a_second_provider_payment_seen_by_webhook_is_a_duplicate_never_applied(
    ch: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await create(ch, payment_method="pm_card_visa")
    assert p.status == pb.PAYMENT_STATUS_SUCCEEDED
    other = await elsewhere(psim, p.id)
    assert other["id"] != p.provider_payment_id
    # Its charge refunded at the provider: an event about our payment id too.
    await psim.post(f"/_sim/payment_intents/{other['id']}/refund")

    async def reported() -> bool:
        rows = await found(ch, sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT, p.id)
        return any(d.occurrences >= 2 for d in rows)  # the succeeded and the refunded events

    await until(reported)
    [duplicate] = await found(ch, sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT, p.id)
    assert duplicate.provider_payment_id == other["id"]
    assert duplicate.details["bound_provider_payment_id"] == p.provider_payment_id
    now = await get(ch, p.id)
    assert (now.status, now.provider_payment_id, now.amount_reversed) == (
        pb.PAYMENT_STATUS_SUCCEEDED,
        p.provider_payment_id,
        0,
    )
    notes = [e for e in await history(ch, p.id) if e.provider_event_id]
    webhooks_of_other = [e for e in notes if other["id"] in e.note]
    assert len(webhooks_of_other) == 2
    assert not any(e.applied for e in webhooks_of_other)
    assert not await found(ch, sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT, p.id)


async def test_a_second_provider_payment_seen_by_the_reconciler_is_a_duplicate(
    own: Stack, ch: grpc.aio.Channel, psim: SimControl
) -> None:
    await psim.faults(webhook_drop_rate=1.0)
    p = await create(ch, payment_method="pm_card_visa")
    other = await elsewhere(psim, p.id, amount="2500")

    result = await run_once(own, "--jobs", "settlement_diff,catch_up", **ONE_OWNER)
    assert_completed(result)

    [duplicate] = await found(ch, sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT, p.id)
    assert duplicate.provider_payment_id == other["id"]
    assert duplicate.occurrences >= 2  # the settlement diff, then the catch-up's replay
    assert result.runs["settlement_diff"]["discrepancies"] >= 1
    assert result.runs["catch_up"]["discrepancies"] >= 1
    logged = [e for e in result.events("discrepancy") if e["payment_id"] == p.id]
    assert {e["kind"] for e in logged} == {"DUPLICATE_PROVIDER_PAYMENT"}
    unrecorded = await discrepancies(ch, sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT)
    assert other["id"] not in [d.provider_payment_id for d in unrecorded]
    now = await get(ch, p.id)
    assert (now.status, now.provider_payment_id, now.amount) == (
        pb.PAYMENT_STATUS_SUCCEEDED,
        p.provider_payment_id,
        1999,
    )


async def test_a_sweep_search_finding_two_intents_binds_one_and_reports_the_other(
    own: Stack, ch: grpc.aio.Channel, psim: SimControl
) -> None:
    await psim.faults(error_rate=1.0)
    p = await create(ch, payment_method="pm_card_visa")
    assert p.status == pb.PAYMENT_STATUS_UNKNOWN
    await psim.clear_faults()
    await psim.faults(webhook_drop_rate=1.0)
    charged = await elsewhere(psim, p.id)
    unconfirmed = await elsewhere(psim, p.id, confirm="false")

    result = await sweep(own)
    assert_completed(result)

    assert not redriven(result, p.id)
    now = await get(ch, p.id)
    assert (now.status, now.provider_payment_id) == (pb.PAYMENT_STATUS_SUCCEEDED, charged["id"])
    [duplicate] = await found(ch, sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT, p.id)
    assert duplicate.provider_payment_id == unconfirmed["id"]
    assert len(await psim.ledger(payment_id=p.id)) == 2


async def test_catch_up_counts_as_fixed_only_what_this_run_changed(
    own: Stack, ch: grpc.aio.Channel, psim: SimControl
) -> None:
    assert_completed(await run_once(own, "--jobs", "catch_up", **ONE_OWNER))  # up to now
    payments = [await create(ch, payment_method="pm_card_processing") for _ in range(10)]
    for p in payments:
        await psim.settle(p.provider_payment_id, "succeeded")

    async def all_delivered() -> bool:
        for p in payments:
            if (await get(ch, p.id)).status != pb.PAYMENT_STATUS_SUCCEEDED:
                return False
            events = await psim.events(payment_id=p.id)
            if len(events) < 2 or not all(e["delivery_state"] == "delivered" for e in events):
                return False
        return True

    await until(all_delivered, timeout=30)
    result = await run_once(own, "--jobs", "catch_up", **ONE_OWNER)
    assert_completed(result)
    run = result.runs["catch_up"]
    assert run["scanned"] >= 20
    assert run["fixed"] == 0, run
