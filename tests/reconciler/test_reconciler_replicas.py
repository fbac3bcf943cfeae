"""Several reconcilers at once: the sweep's leases give each its own payments,
catch-up replays apply once, findings are deduplicated; no payment is fixed twice."""

from __future__ import annotations

import asyncio

import grpc
from reconciler_testkit import (
    assert_completed,
    create,
    get,
    history,
    new_reconciler_id,
    reconciler_fixes,
    run_once,
)

from payments.v1 import payment_pb2 as pb
from payments_dev.stack import Stack
from tests.support import SimControl

STALE = 500


async def test_two_reconcilers_over_500_stale_payments_fix_each_once(
    stack: Stack, channel: grpc.aio.Channel, sim: SimControl
) -> None:
    await sim.faults(webhook_drop_rate=1.0)
    gate = asyncio.Semaphore(32)

    async def stale(n: int) -> pb.Payment:
        async with gate:
            p = await create(channel, payment_method="pm_card_processing", amount=100 + n)
            await sim.settle(p.provider_payment_id, "succeeded" if n % 5 else "failed")
            return p

    payments = await asyncio.gather(*(stale(n) for n in range(STALE)))

    a, b = await asyncio.gather(
        run_once(stack, RECONCILER_ID=new_reconciler_id("a"), RECONCILER_LEASE_SECONDS="60"),
        run_once(stack, RECONCILER_ID=new_reconciler_id("b"), RECONCILER_LEASE_SECONDS="60"),
    )

    for result in (a, b):
        assert_completed(result)
        assert all(run["errors"] == 0 for run in result.runs.values()), (
            result.runs,
            [line for line in result.output.splitlines() if "warn" in line or "error" in line][:20],
        )
    # Each took a share of the sweep (leases), together all of it at least.
    swept = a.runs["sweep"]["scanned"] + b.runs["sweep"]["scanned"]
    assert swept >= STALE
    assert a.runs["sweep"]["scanned"] > 0 and b.runs["sweep"]["scanned"] > 0

    async def check(n: int, p: pb.Payment) -> None:
        async with gate:
            want = pb.PAYMENT_STATUS_SUCCEEDED if n % 5 else pb.PAYMENT_STATUS_FAILED
            assert (await get(channel, p.id)).status == want
            fixes = reconciler_fixes(await history(channel, p.id))
            assert [(f.from_status, f.to_status) for f in fixes] == [
                (pb.PAYMENT_STATUS_PENDING, want)
            ], p.id

    await asyncio.gather(*(check(n, p) for n, p in enumerate(payments)))
