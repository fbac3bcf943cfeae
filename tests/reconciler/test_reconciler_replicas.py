"""Several reconcilers at once: the sweep's leases give each its own payments,
catch-up replays apply once, findings are deduplicated; no payment is fixed twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
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
from tests.conftest import stack_config
from tests.reconciler.test_reconciler_after_restart import own_database, started
from tests.support import SimControl

__all__ = ["own_database"]  # a fixture, used by own_stack

STALE = 500


@pytest.fixture
async def own_stack(own_database: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack on a database and a simulator of its own: the session's hold
    other tests' payments and refunds (some in states other tests left on
    purpose, or with a simulator reset under them), which a whole pass over
    the session's data would count as this test's errors."""
    stack = await started(stack_config(own_database, tmp_path))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def own(own_stack: Stack) -> AsyncIterator[tuple[grpc.aio.Channel, SimControl]]:
    async with (
        grpc.aio.insecure_channel(own_stack.grpc_target) as channel,
        aiohttp.ClientSession(own_stack.sim_url) as http,
    ):
        yield channel, SimControl(http)


async def test_two_reconcilers_over_500_stale_payments_fix_each_once(
    own_stack: Stack, own: tuple[grpc.aio.Channel, SimControl]
) -> None:
    stack, (channel, sim) = own_stack, own
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
