"""The change feed (SPEC §3b) with every process running: provider-sim,
webhook-gateway, payment-svc (two of them where it matters)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest

from payment_svc.adapters.feed_store import CHANNEL
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Stack
from tests.support import SimControl, auth, create_request, rich_error, stub


async def latest_cursor(channel: grpc.aio.Channel, who: str = "merchant") -> str:
    """The cursor after everything the client has so far."""
    cursor = ""
    while True:
        reply = await stub(channel).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(after_cursor=cursor, page_size=500),
            metadata=auth(who),
            timeout=10,
        )
        if not reply.updates:
            return reply.next_cursor
        cursor = reply.next_cursor


async def watch_until(
    channel: grpc.aio.Channel,
    cursor: str,
    done: Callable[[list[pb.PaymentUpdate]], bool],
    *,
    who: str = "merchant",
    timeout: float = 20,
) -> list[pb.PaymentUpdate]:
    got: list[pb.PaymentUpdate] = []
    call = stub(channel).WatchPaymentUpdates(
        svc.WatchPaymentUpdatesRequest(after_cursor=cursor), metadata=auth(who)
    )
    try:
        async with asyncio.timeout(timeout):
            async for reply in call:
                assert reply.updates  # a message carries at least one
                got.extend(reply.updates)
                if done(got):
                    return got
    finally:
        call.cancel()
    raise AssertionError("the stream ended")


async def streams_open(stack: Stack, at_least: int, timeout: float = 20) -> None:
    """Polls the process's payments_feed_streams_open gauge."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            async with http.get(stack.metrics_url) as response:
                text = await response.text()
            gauge = [
                float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("payments_feed_streams_open ")
            ]
            if gauge and gauge[0] >= at_least:
                return
            await asyncio.sleep(0.05)


def of(updates: list[pb.PaymentUpdate], payment_id: str) -> list[pb.PaymentUpdate]:
    return [u for u in updates if u.payment.id == payment_id]


async def create(channel: grpc.aio.Channel, who: str = "merchant", **fields: str) -> pb.Payment:
    reply = await stub(channel).CreatePayment(
        create_request(**fields), metadata=auth(who), timeout=10
    )
    return reply.payment


async def test_a_settled_processing_payment_streams_pending_then_succeeded(
    channel: grpc.aio.Channel, sim: SimControl
) -> None:
    cursor = await latest_cursor(channel)
    p = await create(channel, payment_method="pm_card_processing")
    assert p.status == pb.PAYMENT_STATUS_PENDING
    await sim.settle(p.provider_payment_id, "succeeded")
    got = await watch_until(
        channel,
        cursor,
        lambda us: any(u.payment.status == pb.PAYMENT_STATUS_SUCCEEDED for u in of(us, p.id)),
    )
    mine = of(got, p.id)
    assert [u.payment.status for u in mine] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]
    created, settled = mine
    assert created.event.source == pb.PAYMENT_EVENT_SOURCE_API
    assert settled.event.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK
    assert settled.event.provider_event_type == "payment_intent.succeeded"
    assert settled.event.to_status == pb.PAYMENT_STATUS_SUCCEEDED
    assert settled.event.applied
    assert settled.payment.provider_payment_id == p.provider_payment_id
    assert settled.refund.id == ""
    # The history entry is the payment's own, as ListPaymentEvents has it.
    history = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=p.id), metadata=auth(), timeout=5
    )
    assert settled.event in list(history.events)
    assert created.id != settled.id and created.cursor != settled.cursor


async def test_many_writers_and_a_watcher_that_reconnects_at_random_moments(
    channel: grpc.aio.Channel, stack: Stack
) -> None:
    """8 writers, 1,000 payments that each succeed (2,000 changes: PENDING,
    then SUCCEEDED), while the watcher drops its stream at random moments and
    resumes from the last cursor it processed: every change arrives, each
    payment's in order, none twice."""
    cursor = await latest_cursor(channel)
    writers, per_writer = 8, 125
    created: set[str] = set()

    async def writer() -> None:
        async with grpc.aio.insecure_channel(stack.grpc_target) as ch:
            for _ in range(per_writer):
                created.add((await create(ch)).id)

    received: list[pb.PaymentUpdate] = []
    reconnects = 0

    def complete() -> bool:
        done = {u.payment.id for u in received if u.payment.status == pb.PAYMENT_STATUS_SUCCEEDED}
        return len(created) == writers * per_writer and created <= done

    async def watcher() -> None:
        nonlocal cursor, reconnects
        rng = random.Random(14)
        async with asyncio.timeout(120):
            while not complete():
                call = stub(channel).WatchPaymentUpdates(
                    svc.WatchPaymentUpdatesRequest(after_cursor=cursor), metadata=auth()
                )
                budget = rng.randint(1, 400)  # updates before this connection is dropped
                dropped = False
                async for reply in call:
                    for update in reply.updates:
                        received.append(update)
                        cursor = update.cursor
                        budget -= 1
                        # Dropped within a message too: the rest of it
                        # comes again after the cursor.
                        if budget == 0 or complete():
                            dropped = True
                            break
                    if dropped:
                        break
                call.cancel()
                reconnects += 1

    watch = asyncio.create_task(watcher())
    await asyncio.gather(*(writer() for _ in range(writers)))
    # The last updates can reach the watcher before their writer's call
    # returns and adds the payment to `created`: it then waits on a stream
    # with nothing more to send. Every payment is in `created` now: if the
    # watcher has them all, it is done; if not, an update still to come
    # ends it.
    if complete() and not watch.done():
        watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    assert complete()
    assert reconnects > 3
    ids = [u.id for u in received]
    assert len(ids) == len(set(ids)), "an update came twice"
    mine = [u for u in received if u.payment.id in created]
    assert len(mine) == 2 * len(created)
    order: dict[str, list[int]] = {}
    for u in mine:
        order.setdefault(u.payment.id, []).append(u.payment.status)
    assert all(
        s == [pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_SUCCEEDED] for s in order.values()
    )
    # The stream and the pages agree, in the same order.
    listed: list[str] = []
    after = ""
    first = received[0].cursor
    reply = await stub(channel).ListPaymentUpdates(
        svc.ListPaymentUpdatesRequest(after_cursor=first, page_size=500),
        metadata=auth(),
        timeout=10,
    )
    while reply.updates:
        listed.extend(u.id for u in reply.updates)
        after = reply.next_cursor
        reply = await stub(channel).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(after_cursor=after, page_size=500),
            metadata=auth(),
            timeout=10,
        )
    assert listed[: len(ids) - 1] == ids[1:]


async def test_a_change_through_one_process_arrives_on_a_stream_of_another(
    channel: grpc.aio.Channel, spawn_payment_svc: Callable[..., Awaitable[Stack]]
) -> None:
    other = await spawn_payment_svc()
    async with grpc.aio.insecure_channel(other.grpc_target) as there:
        cursor = await latest_cursor(there)
        watching = asyncio.create_task(
            watch_until(there, cursor, lambda us: len(us) >= 2, timeout=15)
        )
        await streams_open(other, 1)  # the payment is news to an open stream
        p = await create(channel)
        got = await watching
    # (That it is woken by the other process's NOTIFY, not by its own
    # recheck: test_streams_wake_on_commit_not_on_a_timer.)
    assert [u.payment.id for u in got] == [p.id, p.id]
    assert [u.payment.status for u in got] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]


async def test_a_stream_resumes_after_a_restart_of_its_process(
    channel: grpc.aio.Channel, spawn_payment_svc: Callable[..., Awaitable[Stack]]
) -> None:
    other = await spawn_payment_svc()
    async with grpc.aio.insecure_channel(other.grpc_target) as there:
        cursor = await latest_cursor(there)
        p = await create(channel)
        got = await watch_until(there, cursor, lambda us: len(of(us, p.id)) == 2)
        cursor = got[-1].cursor
    other.stop()
    q = await create(channel)  # while no stream is open
    other.start_payment_svc()
    from payments_dev.stack import wait_serving

    await wait_serving(other.grpc_target)
    async with grpc.aio.insecure_channel(other.grpc_target) as there:
        got = await watch_until(there, cursor, lambda us: len(of(us, q.id)) == 2)
    assert of(got, p.id) == []
    assert [u.payment.status for u in of(got, q.id)] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]


async def test_a_client_never_sees_another_clients_updates(channel: grpc.aio.Channel) -> None:
    cursor_b = await latest_cursor(channel, "merchant-2")
    a = [await create(channel, "merchant") for _ in range(3)]
    b = await create(channel, "merchant-2")
    got = await watch_until(channel, cursor_b, lambda us: len(of(us, b.id)) == 2, who="merchant-2")
    assert {u.payment.id for u in got} == {b.id}
    # From the oldest kept, too.
    everything = await stub(channel).ListPaymentUpdates(
        svc.ListPaymentUpdatesRequest(page_size=500), metadata=auth("merchant-2"), timeout=10
    )
    assert not {p.id for p in a} & {u.payment.id for u in everything.updates}
    # A's cursor is not B's: refused, not read.
    cursor_a = await latest_cursor(channel, "merchant")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(channel).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(after_cursor=cursor_a),
            metadata=auth("merchant-2"),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(err.value).reason == "INVALID_CURSOR"


@pytest.mark.parametrize("cursor", ["junk", "c1.AAAAAAAAAAE.AAAA", "x" * 1000, "c1..", "é"])
async def test_a_malformed_cursor_is_invalid_argument(
    channel: grpc.aio.Channel, cursor: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(channel).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(after_cursor=cursor), metadata=auth(), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(err.value).reason == "INVALID_CURSOR"
    call = stub(channel).WatchPaymentUpdates(
        svc.WatchPaymentUpdatesRequest(after_cursor=cursor), metadata=auth(), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(err.value).reason == "INVALID_CURSOR"


@pytest.fixture
async def own_database(pg_server: str) -> AsyncIterator[str]:
    """A database of its own: retention here deletes everything."""
    name = f"payments_feed_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(pg_server)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_a_cursor_older_than_what_is_kept_is_cursor_expired(
    own_database: str, spawn_payment_svc: Callable[..., Awaitable[Stack]]
) -> None:
    svc_stack = await spawn_payment_svc(
        database_url=own_database,
        PAYMENT_SVC_UPDATES_RETENTION_SECONDS="1",
        PAYMENT_SVC_UPDATES_EXPIRE_EVERY_SECONDS="0.2",
    )
    async with grpc.aio.insecure_channel(svc_stack.grpc_target) as ch:
        p = await create(ch)
        first = await watch_until(ch, "", lambda us: len(of(us, p.id)) == 2)
        old = first[0].cursor

        async def expired() -> grpc.aio.AioRpcError | None:
            try:
                await stub(ch).ListPaymentUpdates(
                    svc.ListPaymentUpdatesRequest(after_cursor=old), metadata=auth(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc
            return None

        err = None
        async with asyncio.timeout(15):
            for _ in iter(int, 1):  # until retention has deleted past the cursor
                err = await expired()
                if err is not None:
                    break
                await asyncio.sleep(0.2)
        assert err is not None
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE
        assert rich_error(err).reason == "CURSOR_EXPIRED"
        call = stub(ch).WatchPaymentUpdates(
            svc.WatchPaymentUpdatesRequest(after_cursor=old), metadata=auth(), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as watch_err:
            async for _ in call:
                pass
        assert watch_err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert rich_error(watch_err.value).reason == "CURSOR_EXPIRED"
        # Without a cursor: from the oldest kept (nothing now), no error.
        reply = await stub(ch).ListPaymentUpdates(
            svc.ListPaymentUpdatesRequest(), metadata=auth(), timeout=5
        )
        assert list(reply.updates) == []


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05ab"])
async def test_a_stream_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, body: bytes
) -> None:
    watch = channel.unary_stream(
        "/payments.v1.PaymentService/WatchPaymentUpdates",
        request_serializer=lambda b: b,
        response_deserializer=svc.WatchPaymentUpdatesResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in watch(body, metadata=auth(), timeout=5):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(err.value).violations == {"request": "is not a valid message of this method"}


# A stream rechecks on its own this long after it went idle (FeedService's
# idle_check): what reaches an idle stream sooner came by a NOTIFY.
STREAM_RECHECK_SECONDS = 5.0


async def test_streams_wake_on_commit_not_on_a_timer(
    own_database: str, spawn_payment_svc: Callable[..., Awaitable[Stack]]
) -> None:
    """Both processes' periodic sequencer runs are an hour apart, so only the
    writer's commit (its sequencer's kick) numbers an update, and only its
    NOTIFY can wake the other process's stream before that stream's own
    recheck, 5 s after its last message. Each update must arrive sooner than
    that after the message before it (0.5 s kept for the way back to us), and
    after the NOTIFY a listener of our own heard. A database of their own: the
    session's payment-svc would number the update on its own timer."""
    quiet = {"database_url": own_database, "PAYMENT_SVC_UPDATES_SAFETY_SECONDS": "3600"}
    writer, reader = await spawn_payment_svc(**quiet), await spawn_payment_svc(**quiet)
    heard: list[float] = []
    listener = await asyncpg.connect(own_database)
    await listener.add_listener(CHANNEL, lambda *_: heard.append(time.monotonic()))
    arrivals: list[tuple[float, pb.PaymentUpdate]] = []
    try:
        async with (
            grpc.aio.insecure_channel(writer.grpc_target) as w,
            grpc.aio.insecure_channel(reader.grpc_target) as r,
        ):
            cursor = await latest_cursor(r)
            # A first payment, so that the stream has said something: from
            # its last message on, it is idle and its recheck is 5 s away.
            first = await create(w)
            call = stub(r).WatchPaymentUpdates(
                svc.WatchPaymentUpdatesRequest(after_cursor=cursor), metadata=auth()
            )
            replies = aiter(call)

            async def receive_until(payment_id: str) -> None:
                while len(of([u for _, u in arrivals], payment_id)) < 2:
                    reply = await anext(replies)
                    arrivals.extend((time.monotonic(), u) for u in reply.updates)

            try:
                async with asyncio.timeout(30):
                    await receive_until(first.id)
                    idle_since = arrivals[-1][0]
                    heard.clear()
                    p = await create(w)
                    await receive_until(p.id)
            finally:
                call.cancel()
    finally:
        await listener.close()
    mine = [(at, u) for at, u in arrivals if u.payment.id == p.id]
    assert [u.payment.status for _, u in mine] == [
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]
    before = idle_since
    for at, update in mine:
        assert at - before < STREAM_RECHECK_SECONDS - 0.5, (update.payment.status, at - before)
        before = at
    assert heard and heard[0] <= mine[0][0], "no NOTIFY before the stream's first update"
