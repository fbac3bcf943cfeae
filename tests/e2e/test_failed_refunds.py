"""A refund that fails must never stay counted as money given back (issue 25),
with every process running (payment-svc, webhook-gateway, provider-sim, and
`reconciler --once` against the session stack).

The story it closes: a refund pending at the provider; the settlement diff
lists the intent but cannot list its refunds (the provider restarting); it
used to send the intent's amount_refunded, which counts pending refunds, and
payment-svc took that total as a floor: REVERSED, for good, though the
provider then failed the refund. Now a failed listing is an error of that
run for that intent (no verdict, nothing moves), a total is evidence, never
a floor, and amount_reversed is the refunds we know one by one (succeeded)
plus disputes. The provider's books (provider-sim's ledger) must agree."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest

from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.stack import Stack
from tests.cli.conftest import run_cli
from tests.e2e.refund_testkit import RF, RP, intent, paid, refund, refunds
from tests.e2e.test_webhook_flow import get, history, until
from tests.reconciler.reconciler_testkit import assert_completed, discrepancies, run_once
from tests.support import SimControl

S, R = pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_REVERSED
OPERATOR = pb.PAYMENT_EVENT_SOURCE_OPERATOR
REFUND_LISTING = "GET /v1/refunds"


@pytest.fixture
async def psim(sim: SimControl) -> SimControl:
    """The simulator with refunds left pending (the `sim` fixture clears the faults after)."""
    await sim.faults(refund_pending_rate=1.0)
    return sim


async def diff_without_the_refund_listing(stack: Stack, sim: SimControl) -> dict[str, Any]:
    """One settlement diff while the provider answers everything but the
    listing of refunds: an error of the run, which goes on."""
    await sim.faults(unavailable_routes=[REFUND_LISTING])
    try:
        result = await run_once(stack, "--jobs", "settlement_diff")
    finally:
        await sim.faults(unavailable_routes=[])
    failed = result.events("provider_refunds_failed")
    assert failed, result.output[-4000:]
    run: dict[str, Any] = result.runs["settlement_diff"]
    assert run["errors"] >= 1
    return run


async def failed_at_provider(channel: grpc.aio.Channel, sim: SimControl, r: pb.Refund) -> None:
    await sim.post(f"/_sim/refunds/{r.provider_refund_id}/settle", {"outcome": "failed"})

    async def failed() -> bool:
        return any(x.id == r.id and x.status == RF for x in await refunds(channel, r.payment_id))

    await until(failed, timeout=15)


async def mismatches_of(channel: grpc.aio.Channel, payment_id: str) -> list[sync.Discrepancy]:
    found = await discrepancies(channel, sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH)
    return [d for d in found if d.payment_id == payment_id]


async def test_a_whole_refund_pending_then_failed_is_never_counted(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel, amount=11_439)
    r = await refund(channel, p.id)  # all of it
    assert (r.status, r.amount) == (RP, 11_439)

    await diff_without_the_refund_listing(stack, psim)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 0)  # the total was no evidence

    await failed_at_provider(channel, psim, r)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 0)
    row = await intent(psim, p.id)
    assert row["amount_refunded"] == 0
    assert [x["status"] for x in row["refunds"]] == ["failed"]

    # The next diff lists the refunds, finds the books agreeing: nothing to report.
    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    assert await get(channel, p.id) == now
    assert await mismatches_of(channel, p.id) == []
    # Refundable again: the failed refund holds nothing.
    await psim.faults(refund_pending_rate=0)
    again = await refund(channel, p.id)
    assert again.amount == 11_439


async def test_a_partial_refund_pending_then_failed_beside_a_dispute(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    p = await paid(channel, amount=1000)
    r = await refund(channel, p.id, 300)
    assert r.status == RP
    # The cardholder disputes what the refunds left (provider-sim: 700).
    await psim.post(f"/_sim/payment_intents/{p.provider_payment_id}/dispute")

    async def disputed() -> bool:
        return (await get(channel, p.id)).amount_reversed == 700

    await until(disputed, timeout=15)

    await diff_without_the_refund_listing(stack, psim)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 700)

    await failed_at_provider(channel, psim, r)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 700)  # the dispute alone
    row = await intent(psim, p.id)
    assert row["amount_refunded"] == 0
    assert [x["status"] for x in row["refunds"]] == ["failed"]

    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    assert (await get(channel, p.id)).amount_reversed == 700
    assert await mismatches_of(channel, p.id) == []


async def test_a_refund_that_made_it_whole_then_failed_makes_it_succeeded_again(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl
) -> None:
    """SPEC §3a and §4: REVERSED -> SUCCEEDED when a refund that made it whole
    fails later at the provider, recorded in the history and alerted."""
    p = await paid(channel, amount=1000)
    await psim.faults(refund_pending_rate=0)
    first = await refund(channel, p.id, 600)
    second = await refund(channel, p.id, 400)
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (R, 1000)
    assert second.provider_refund_id

    # Failed at the provider after it succeeded (Stripe does this for a
    # closed card): the reconciler's authoritative fetch brings it.
    await psim.post(f"/_sim/refunds/{second.provider_refund_id}/fail")
    before = await metric(stack, "payments_reversals_undone_total")
    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (S, 600)
    by_id = {x.id: x.status for x in await refunds(channel, p.id)}
    assert by_id == {first.id: pb.REFUND_STATUS_SUCCEEDED, second.id: RF}
    [back] = [e for e in await history(channel, p.id) if e.from_status == R and e.applied]
    assert back.to_status == S and back.refund_id == second.id
    assert "1000 -> 600" in back.note
    assert await metric(stack, "payments_reversals_undone_total") == before + 1
    row = await intent(psim, p.id)
    assert row["amount_refunded"] == 600
    # Refundable again: 400.
    assert (await refund(channel, p.id)).amount == 400


async def metric(stack: Stack, name: str) -> float:
    """The sum of a counter's series on payment-svc's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(stack.metrics_url) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def test_books_written_wrong_before_are_reported_by_the_diff_and_left_alone(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl, db: asyncpg.Pool
) -> None:
    """Point 4 of issue 25: payments already wrong in a database (the floor
    left them REVERSED on a refund that failed) are found by the settlement
    diff and reported for an operator; nothing moves on a total."""
    p = await paid(channel, amount=1000)
    r = await refund(channel, p.id)
    await failed_at_provider(channel, psim, r)
    await db.execute(
        "UPDATE payments SET status = 'REVERSED', amount_reversed = amount WHERE id = $1",
        uuid.UUID(hex=p.id.removeprefix("pay_")),
    )
    assert_completed(await run_once(stack, "--jobs", "settlement_diff"))
    now = await get(channel, p.id)
    assert (now.status, now.amount_reversed) == (R, 1000)  # reported, not moved
    [found] = await mismatches_of(channel, p.id)
    assert (found.details["our_amount_reversed"], found.details["provider_refunded"]) == (
        "1000",
        "0",
    )


async def test_an_operator_corrects_books_left_wrong_and_is_refused_when_the_provider_disagrees(
    stack: Stack, channel: grpc.aio.Channel, psim: SimControl, db: asyncpg.Pool
) -> None:
    """The repair of point 4 (issue 22's correction command): `payments
    correct` recomputes a payment from its refunds and disputes when the
    provider's books agree, in its history with source OPERATOR and the
    reason; refused (PROVIDER_BOOKS_DISAGREE), nothing moves, when they do
    not."""
    p = await paid(channel, amount=1000)
    r = await refund(channel, p.id)
    await failed_at_provider(channel, psim, r)
    await db.execute(
        "UPDATE payments SET status = 'REVERSED', amount_reversed = amount WHERE id = $1",
        uuid.UUID(hex=p.id.removeprefix("pay_")),
    )
    env = {"PAYMENTS_TARGET": stack.grpc_target}
    done = run_cli("correct", p.id, "--reason", "ticket 4711: refund failed", "--json", env=env)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["changed"] is True
    assert (reply["payment"]["status"], reply["payment"]["amount_reversed"]) == (
        "PAYMENT_STATUS_SUCCEEDED",
        0,
    )
    [entry] = [e for e in await history(channel, p.id) if e.source == OPERATOR]
    assert (entry.from_status, entry.to_status, entry.applied) == (R, S, True)
    assert "ticket 4711: refund failed" in entry.note
    again = run_cli("correct", p.id, "--reason", "again", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False

    # A refund made at the provider whose events were all lost: its books
    # say 300 refunded, ours nothing: no correction can make ours right.
    await psim.faults(refund_pending_rate=0, webhook_drop_rate=1.0)
    q = await paid(channel, amount=1000)
    await psim.post(f"/_sim/payment_intents/{q.provider_payment_id}/refund", {"amount": 300})
    refused = run_cli("correct", q.id, "--reason", "try", "--json", env=env)
    assert refused.returncode == 1
    assert "PROVIDER_BOOKS_DISAGREE" in refused.stdout + refused.stderr
    assert (await get(channel, q.id)).amount_reversed == 0
