"""The change feed's store on real Postgres: the outbox trigger, the
sequencer's commit-order handling, retention and its horizon."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from payment_svc.adapters.db import Database
from payment_svc.adapters.feed_store import FeedStore
from payment_svc.domain.errors import CursorExpired
from payment_svc.domain.feed import check_cursor, is_feed_change, update_type
from payment_svc.domain.model import PaymentEvent
from payment_svc.domain.refunds import RefundStatus
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.entrypoints.convert import update_to_pb
from payments.v1 import payment_pb2 as pb


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[FeedStore]:
    db = Database(database_url, timeout=5, max_size=12)
    await db.open()
    try:
        yield FeedStore(db, tag="test")
    finally:
        await db.close()


def client() -> str:
    return f"feed-{uuid.uuid4().hex[:8]}"


async def new_payment(conn: asyncpg.Connection, client_id: str) -> uuid.UUID:
    pid = uuid.uuid4()
    await conn.execute(
        """INSERT INTO payments (id, client_id, idempotency_key, request_fingerprint, amount,
               currency, status, payment_method)
           VALUES ($1, $2, $3, '\\x00', 500, 'EUR', 'SUCCEEDED', 'pm_card_visa');
        """,
        pid,
        client_id,
        f"k-{pid}",
    )
    await conn.execute(
        """INSERT INTO payment_events (payment_id, from_status, to_status, source, applied)
           VALUES ($1, NULL, 'SUCCEEDED', 'api', true)""",
        pid,
    )
    return pid


async def new_refund(
    conn: asyncpg.Connection, rid: uuid.UUID, pid: uuid.UUID, client_id: str
) -> None:
    """A PENDING refund of 200 asked for through the API (with a key and a
    request fingerprint, as RefundPayment writes it)."""
    await conn.execute(
        """INSERT INTO refunds (id, payment_id, client_id, idempotency_key, amount,
               currency, status, source, request_fingerprint) VALUES ($1, $2, $3, 'r1',
               200, 'EUR', 'PENDING', 'api', '\\x01')""",
        rid,
        pid,
        client_id,
    )


async def refund_entry(
    conn: asyncpg.Connection,
    pid: uuid.UUID,
    rid: uuid.UUID,
    source: str,
    status: str,
    *,
    applied: bool = True,
) -> None:
    """The payment's history entry of a refund's change to `status`."""
    await conn.execute(
        """INSERT INTO payment_events (payment_id, from_status, to_status, source,
               applied, refund_id, refund_status)
           VALUES ($1, 'SUCCEEDED', 'SUCCEEDED', $3, $5, $2, $4)""",
        pid,
        rid,
        source,
        status,
        applied,
    )


async def move(conn: asyncpg.Connection, pid: uuid.UUID, *, applied: bool = True) -> None:
    """A change of amount_reversed (the status stays SUCCEEDED), with its
    history entry: the payment row first, then the entry."""
    if applied:
        await conn.execute(
            "UPDATE payments SET version = version + 1, amount_reversed = amount_reversed + 1 "
            "WHERE id = $1",
            pid,
        )
    await conn.execute(
        """INSERT INTO payment_events (payment_id, from_status, to_status, source, applied)
           VALUES ($1, 'SUCCEEDED', 'SUCCEEDED', 'reconciler', $2)""",
        pid,
        applied,
    )


async def read_all(store: FeedStore, client_id: str, after: int = 0) -> list[tuple[int, int]]:
    """(position, payment version) of everything after `after`."""
    seen = []
    while True:
        page = await store.page(client_id, after, 100)
        if not page.updates:
            return seen
        for u in page.updates:
            seen.append((u.position, u.payment.version))
        after = page.updates[-1].position


async def test_an_entry_that_moved_the_payment_writes_one_update_at_commit(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    c = client()
    async with db.acquire() as conn, conn.transaction():
        pid = await new_payment(conn, c)
        await move(conn, pid)
        await move(conn, pid, applied=False)  # recorded only: no update
    await store.sequence(1000)
    page = await store.page(c, 0, 10)
    assert [u.type for u in page.updates] == ["payment.succeeded", "payment.amount_reversed"]
    # Both carry the payment as the transaction left it (written at commit).
    assert [u.payment.version for u in page.updates] == [2, 2]
    assert [update_type(u.event, None) for u in page.updates] == [u.type for u in page.updates]
    assert page.updates[0].position < page.updates[1].position


async def test_a_rolled_back_change_leaves_no_update(store: FeedStore, db: asyncpg.Pool) -> None:
    c = client()
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await new_payment(conn, c)
        # the outbox row is written now, not at a commit that never comes
        await conn.execute("SET CONSTRAINTS payment_updates_write IMMEDIATE")
        assert await conn.fetchval("SELECT count(*) FROM payment_updates WHERE client_id = $1", c)
        await tx.rollback()
    await store.sequence(1000)
    assert (await store.page(c, 0, 10)).updates == []
    assert await db.fetchval("SELECT count(*) FROM payment_updates WHERE client_id = $1", c) == 0


async def test_a_row_committed_after_a_later_one_is_not_skipped(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    """The commit-order trap: A inserts first and commits last. A reader that
    has read B must still get A afterwards, and must never see A below B's
    position (the naive reader, by insert order, would skip A)."""
    c = client()
    async with db.acquire() as a, db.acquire() as b:
        async with b.transaction():
            pb = await new_payment(b, c)
        ta = a.transaction()
        await ta.start()
        pa = await new_payment(a, c)
        # A's outbox row is written at its commit (deferred): force the
        # insert order A < B among rows, then B commits first.
        await a.execute("SET CONSTRAINTS payment_updates_write IMMEDIATE")
        async with b.transaction():
            await move(b, pb)
        await store.sequence(1000)
        first = await store.page(c, 0, 10)
        assert [u.payment.id for u in first.updates] == [pb, pb]
        cursor = first.updates[-1].position
        await ta.commit()
    a_seq = await db.fetchval("SELECT seq FROM payment_updates WHERE payment_id = $1", pa)
    b_last = await db.fetchval("SELECT max(seq) FROM payment_updates WHERE payment_id = $1", pb)
    assert a_seq < b_last  # A's row was inserted before B's move, committed after it
    await store.sequence(1000)
    rest = await store.page(c, cursor, 10)
    assert [u.payment.id for u in rest.updates] == [pa]
    assert rest.updates[0].position > cursor


async def test_concurrent_writers_committing_out_of_order_a_reader_misses_nothing(
    store: FeedStore, db: asyncpg.Pool, database_url: str
) -> None:
    """8 writers, transactions held open for random times (so commits land
    out of insert order), a sequencer running all along, and a reader
    following cursors: every update exactly once, each payment's in order."""
    c = client()
    writers, per_writer = 8, 40
    done = asyncio.Event()
    pool = await asyncpg.create_pool(database_url, min_size=writers, max_size=writers)

    async def writer() -> None:
        async with pool.acquire() as conn:
            async with conn.transaction():
                pid = await new_payment(conn, c)
            for _ in range(per_writer - 1):
                async with conn.transaction():
                    await conn.execute("SET CONSTRAINTS payment_updates_write IMMEDIATE")
                    await move(conn, pid)
                    await asyncio.sleep(random.random() * 0.01)

    numbered_all = asyncio.Event()

    async def sequencer() -> None:
        while not done.is_set():
            await store.sequence(50)
            await asyncio.sleep(0.001)
        await store.sequence(100000)
        numbered_all.set()

    seen: list[tuple[int, int]] = []
    by_payment: dict[uuid.UUID, list[int]] = {}

    async def reader() -> None:
        after = 0
        while True:
            # Stop only at an empty page read after the last numbering.
            finished = numbered_all.is_set()
            page = await store.page(c, after, 37)
            for u in page.updates:
                seen.append((u.position, u.payment.version))
                by_payment.setdefault(u.payment.id, []).append(u.payment.version)
            if page.updates:
                after = page.updates[-1].position
            elif finished:
                return
            await asyncio.sleep(0.002)

    seq_task = asyncio.create_task(sequencer())
    read_task = asyncio.create_task(reader())
    try:
        await asyncio.gather(*(writer() for _ in range(writers)))
    finally:
        done.set()
        await seq_task
        await pool.close()
    await asyncio.sleep(0.05)
    await read_task
    assert len(seen) == writers * per_writer
    positions = [p for p, _ in seen]
    assert positions == sorted(set(positions))
    assert len(by_payment) == writers
    for versions in by_payment.values():
        assert versions == list(range(1, per_writer + 1))
    assert await read_all(store, c) == seen


async def test_retention_deletes_a_prefix_and_an_older_cursor_expires(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    c = client()
    async with db.acquire() as conn, conn.transaction():
        pid = await new_payment(conn, c)
        await conn.execute("SET CONSTRAINTS payment_updates_write IMMEDIATE")
        for _ in range(4):
            await move(conn, pid)
    await store.sequence(1000)
    before = await read_all(store, c)
    assert len(before) == 5
    # Everything recorded so far is older than "now + 1s".
    future = datetime.now(UTC) + timedelta(seconds=1)
    while await store.expire(future, 2) == 2:
        pass
    page = await store.page(c, 0, 10)
    assert page.updates == []
    assert page.horizon >= before[-1][0]
    with pytest.raises(CursorExpired):
        check_cursor(before[1][0], page.horizon)
    check_cursor(0, page.horizon)  # no cursor: from the oldest kept
    check_cursor(page.horizon, page.horizon)


async def test_a_refund_change_carries_the_refund_as_the_transaction_left_it(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    """The refunds code (on its own branch) writes a history entry with
    refund_id for each refund change: whichever order its statements take,
    the update carries the refund and the payment as they are at commit."""
    c = client()
    rid = uuid.uuid4()
    async with db.acquire() as conn:
        async with conn.transaction():
            pid = await new_payment(conn, c)
        async with conn.transaction():
            await new_refund(conn, rid, pid, c)
            # The entry first, the rows after it: the update still sees them.
            await refund_entry(conn, pid, rid, "webhook", "SUCCEEDED")
            await conn.execute(
                "UPDATE refunds SET status = 'SUCCEEDED', provider_refund_id = $2 WHERE id = $1",
                rid,
                "re_" + rid.hex,
            )
            await conn.execute(
                "UPDATE payments SET amount_reversed = 200, version = version + 1 WHERE id = $1",
                pid,
            )
    await store.sequence(1000)
    created, refunded = (await store.page(c, 0, 10)).updates
    assert (created.type, refunded.type) == ("payment.succeeded", "refund.succeeded")
    assert refunded.refund is not None
    assert (refunded.refund.id, refunded.refund.status) == (rid, RefundStatus.SUCCEEDED)
    assert refunded.refund.provider_refund_id == "re_" + rid.hex
    assert refunded.event.refund_status == RefundStatus.SUCCEEDED
    assert refunded.payment.amount_reversed == 200
    pb_update = update_to_pb(refunded, "cursor")
    assert pb_update.refund.id == "rfd_" + rid.hex
    assert pb_update.refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert pb_update.event.refund_id == pb_update.refund.id
    assert pb_update.event.refund_status == pb.REFUND_STATUS_SUCCEEDED
    assert pb_update.payment.amount_reversed == 200


# Columns of ours that no reader of the feed sees (migration 0014 drops them
# from the payload in one operation each for the payment and the refund).
_INTERNAL = {
    "request_fingerprint",
    "reconcile_lease_owner",
    "reconcile_lease_until",
    "provider_state_at",
    "provider_state_rank",
}


async def test_the_payload_has_every_column_but_the_internal_ones(db: asyncpg.Pool) -> None:
    c = client()
    rid = uuid.uuid4()
    async with db.acquire() as conn:
        pid = await new_payment(conn, c)
        await new_refund(conn, rid, pid, c)
        await refund_entry(conn, pid, rid, "api", "PENDING")
        payload = await conn.fetchval(
            "SELECT payload FROM payment_updates WHERE refund_id = $1", rid
        )
        payments = {r["attname"] for r in await conn.fetch(_COLUMNS, "payments")}
        refunds = {r["attname"] for r in await conn.fetch(_COLUMNS, "refunds")}
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payments >= _INTERNAL and refunds >= _INTERNAL
    assert set(payload["payment"]) == payments - _INTERNAL
    assert set(payload["refund"]) == refunds - _INTERNAL
    assert payload["refund"]["id"] == str(rid) and payload["payment"]["id"] == str(pid)


_COLUMNS = """SELECT attname FROM pg_attribute
    WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"""


async def test_the_trigger_and_the_domain_agree_on_what_is_a_change(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    """Every (from, to, applied) an entry can have: the trigger writes an
    update exactly when domain.feed.is_feed_change says, of the type
    domain.feed.update_type says."""
    statuses = [None, *(s.value for s in PaymentStatus)]
    cases = [(f, t, applied) for f in statuses for t in statuses[1:] for applied in (True, False)]
    c = client()
    async with db.acquire() as conn:
        async with conn.transaction():
            pid = await new_payment(conn, c)
        await store.sequence(1000)
        after = (await store.page(c, 0, 10)).updates[-1].position
        for f, t, applied in cases:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO payment_events (payment_id, from_status, to_status, source,
                           applied) VALUES ($1, $2, $3, 'api', $4)""",
                    pid,
                    f,
                    t,
                    applied,
                )
            await store.sequence(1000)
            page = await store.page(c, after, 10)
            event = PaymentEvent(
                0, pid, PaymentStatus(f) if f else None, PaymentStatus(t), Source.API, applied,
                None, None, None, None, None, datetime.now(UTC),
            )  # fmt: skip
            expected = is_feed_change(event, None)
            assert bool(page.updates) == expected, (f, t, applied)
            if page.updates:
                assert page.updates[0].type == update_type(event, None)
                after = page.updates[-1].position


async def test_a_refund_entry_is_an_update_only_when_applied(
    store: FeedStore, db: asyncpg.Pool
) -> None:
    """A refund's entry recorded without a move (a stale provider event about
    it) changed nothing: no update; the same entry applied is one."""
    c = client()
    rid = uuid.uuid4()
    async with db.acquire() as conn:
        async with conn.transaction():
            pid = await new_payment(conn, c)
            await new_refund(conn, rid, pid, c)
        await store.sequence(1000)
        after = (await store.page(c, 0, 10)).updates[-1].position
        for applied in (False, True):
            async with conn.transaction():
                await refund_entry(conn, pid, rid, "webhook", "PENDING", applied=applied)
            await store.sequence(1000)
            event = PaymentEvent(
                0, pid, PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, Source.WEBHOOK, applied,
                None, None, None, None, None, datetime.now(UTC),
            )  # fmt: skip
            updates = (await store.page(c, after, 10)).updates
            assert bool(updates) == applied == is_feed_change(event, rid)
    assert [u.type for u in updates] == ["refund.pending"]
