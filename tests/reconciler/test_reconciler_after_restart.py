"""A whole stack restarted as `payments up` restarts it (every process, the same data
directory, provider-sim's books in it): one reconciliation pass then finds nothing
to report and re-drives nothing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest
from reconciler_testkit import assert_completed, create, get, run_once, sync_stub, until

from payment_svc.adapters.migrate import migrate
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments_dev.stack import SIM_STATE_FILE, Stack, StackConfig, wait_serving
from tests.support import SimControl, auth


@pytest.fixture
async def own_database(pg_server: str) -> AsyncIterator[str]:
    """A database of its own: the session's holds other tests' payments, which this
    test's provider never saw."""
    name = f"payments_restart_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(pg_server)._replace(path="/" + name))
    await migrate(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def started(config: StackConfig) -> Stack:
    stack = Stack(config)
    try:
        stack.start()
        await wait_serving(stack.grpc_target)
    except BaseException:
        stack.stop()
        raise
    return stack


async def open_discrepancies(channel: grpc.aio.Channel) -> list[sync.Discrepancy]:
    reply = await sync_stub(channel).ListDiscrepancies(
        sync.ListDiscrepanciesRequest(include_resolved=True, page_size=500),
        metadata=auth("reconciler"),
        timeout=10,
    )
    return list(reply.discrepancies)


async def test_a_restarted_stack_reconciles_with_nothing_to_report(
    own_database: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    config = StackConfig.on_free_ports(
        database_url=own_database,
        data_dir=data_dir,
        sim_state=data_dir / SIM_STATE_FILE,
        log_dir=tmp_path,
        extra_env={
            "PROVIDER_TIMEOUT_SECONDS": "3",
            # The stack's own reconciler stays idle; the test runs the pass.
            "RECONCILER_SWEEP_SECONDS": "86400",
            "RECONCILER_CATCH_UP_SECONDS": "86400",
            "RECONCILER_SETTLEMENT_SECONDS": "86400",
        },
    )
    stack = await started(config)
    try:
        async with (
            grpc.aio.insecure_channel(stack.grpc_target) as channel,
            aiohttp.ClientSession(stack.sim_url) as http,
        ):
            succeeded = await create(channel, payment_method="pm_card_visa")
            pending = await create(channel, payment_method="pm_card_processing")
            failed = await create(channel, payment_method="pm_card_chargeDeclined")
            settled = await create(channel, payment_method="pm_card_processing")
            await SimControl(http).settle(settled.provider_payment_id, "succeeded")

            async def settled_by_webhook() -> bool:
                return (await get(channel, settled.id)).status == pb.PAYMENT_STATUS_SUCCEEDED

            await until(settled_by_webhook)
            before = {}
            for payment in (succeeded, pending, failed, settled):
                now = await get(channel, payment.id)
                before[payment.id] = (now.status, now.provider_payment_id)
        assert before[succeeded.id][0] == pb.PAYMENT_STATUS_SUCCEEDED
        assert before[pending.id][0] == pb.PAYMENT_STATUS_PENDING
        assert before[failed.id][0] == pb.PAYMENT_STATUS_FAILED
    finally:
        stack.stop()

    stack = await started(config)
    try:
        result = await run_once(stack)

        assert_completed(result)
        async with (
            grpc.aio.insecure_channel(stack.grpc_target) as channel,
            aiohttp.ClientSession(stack.sim_url) as http,
        ):
            assert await open_discrepancies(channel) == []
            for payment_id, (status, provider_id) in before.items():
                now = await get(channel, payment_id)
                assert (now.status, now.provider_payment_id) == (status, provider_id)
                rows = await SimControl(http).ledger(payment_id=payment_id)
                assert [row["id"] for row in rows] == [provider_id], "re-driven"
        assert all(run["discrepancies"] == 0 for run in result.runs.values()), result.runs
    finally:
        stack.stop()
