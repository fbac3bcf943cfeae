"""The client library's watcher and `payments watch`: resumes across a
restart of payment-svc from the last cursor handed out; refuses to retry
what cannot succeed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from payments.client import CursorExpired, InvalidArgument, PaymentsClient, Unauthenticated
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments_dev.stack import DEV_TOKENS, Stack, wait_serving
from tests.e2e.test_change_feed import create, latest_cursor


async def test_the_watcher_resumes_across_a_restart_from_its_last_cursor(
    channel: grpc.aio.Channel, spawn_payment_svc: Callable[..., Awaitable[Stack]]
) -> None:
    other = await spawn_payment_svc()
    async with grpc.aio.insecure_channel(other.grpc_target) as there:
        start = await latest_cursor(there)
    seen: list[pb.PaymentUpdate] = []
    async with PaymentsClient(other.grpc_target, DEV_TOKENS["merchant"]) as client:
        watcher = client.watch_updates(start, initial_backoff=0.05, max_backoff=0.5)

        arrived = asyncio.Event()

        async def follow() -> None:
            async for update in watcher:
                seen.append(update)
                arrived.set()

        async def both_of(payment_id: str) -> None:
            while len([u for u in seen if u.payment.id == payment_id]) < 2:
                arrived.clear()
                await arrived.wait()

        following = asyncio.create_task(follow())
        p = await create(channel)
        async with asyncio.timeout(10):
            await both_of(p.id)
        other.stop()  # the stream is cut
        q = await create(channel)  # committed while nobody streams
        other.start_payment_svc()
        await wait_serving(other.grpc_target)
        async with asyncio.timeout(15):
            await both_of(q.id)
        following.cancel()
    assert watcher.reconnects >= 1
    ids = [u.id for u in seen]
    assert len(ids) == len(set(ids))
    assert [u.payment.status for u in seen if u.payment.id == q.id] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]
    assert watcher.cursor == seen[-1].cursor


async def test_the_watcher_does_not_retry_what_cannot_succeed(stack: Stack) -> None:
    async with PaymentsClient(stack.grpc_target, "not-a-token") as client:
        with pytest.raises(Unauthenticated):
            async for _ in client.watch_updates():
                pass
    async with PaymentsClient(stack.grpc_target, DEV_TOKENS["merchant"]) as client:
        with pytest.raises(InvalidArgument) as bad:
            async for _ in client.watch_updates("c1.AAAAAAAAAAE.AAAA"):
                pass
        assert bad.value.reason == "INVALID_CURSOR"
    assert issubclass(CursorExpired, Exception)


def test_payments_watch_prints_updates_as_json_lines(stack: Stack) -> None:
    async def cursor_and_payment() -> tuple[str, str]:
        async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
            cursor = await latest_cursor(ch)
            return cursor, (await create(ch)).id

    cursor, payment_id = asyncio.run(cursor_and_payment())
    env = {
        **os.environ,
        "PAYMENTS_TARGET": stack.grpc_target,
        "PAYMENTS_TOKEN": DEV_TOKENS["merchant"],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "payments_cli.cli", "watch", "--from", cursor, "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert [line["payment"]["id"] for line in lines] == [payment_id, payment_id]
    assert [line["payment"]["status"] for line in lines] == [
        "PAYMENT_STATUS_PENDING",
        "PAYMENT_STATUS_SUCCEEDED",
    ]
    assert all(line["cursor"] for line in lines)


async def test_sigterm_ends_open_streams_instead_of_waiting_out_the_drain(
    spawn_payment_svc: Callable[..., Awaitable[Stack]],
) -> None:
    other = await spawn_payment_svc(PAYMENT_SVC_DRAIN_SECONDS="20")
    async with grpc.aio.insecure_channel(other.grpc_target) as there:
        cursor = await latest_cursor(there)
        call = svc_grpc.PaymentServiceStub(there).WatchPaymentUpdates(
            svc.WatchPaymentUpdatesRequest(after_cursor=cursor),
            metadata=(("authorization", f"Bearer {DEV_TOKENS['merchant']}"),),
        )
        await call.wait_for_connection()
        started = time.monotonic()
        other.processes["payment-svc"].signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            async for _ in call:
                pass
        assert await call.code() == grpc.StatusCode.OK
    popen = other.processes["payment-svc"].popen
    assert popen is not None
    assert await asyncio.to_thread(popen.wait, 10) == 0
    assert time.monotonic() - started < 10  # not the 20 s drain
