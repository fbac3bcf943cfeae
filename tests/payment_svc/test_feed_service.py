"""The change feed's use cases on the in-memory feed (tests/payment_svc/
fakes.py): cursors, pages, streams woken by the bell, expiry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from payment_svc.domain.errors import CursorExpired, InvalidArgument, InvalidCursor
from payment_svc.domain.feed import PaymentUpdate
from payment_svc.domain.model import Payment, PaymentEvent
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.feed import FeedBell, FeedService, Sequencer
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.ports import Sequenced
from tests.payment_svc.fakes import FakeFeed

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def update(status: PaymentStatus, *, at: datetime = NOW) -> object:
    pid = uuid.uuid4()
    payment = Payment(
        pid, "a", "k", 100, "EUR", status, "pm_card_visa", "", {}, None, None, None, 0, 1, at, at
    )
    event = PaymentEvent(1, pid, None, status, Source.API, True, None, None, None, None, None, at)

    def build(position: int | None) -> PaymentUpdate:
        return PaymentUpdate(uuid.uuid4(), position or 0, "payment.x", payment, event, None, at)

    return build


def service(fake: FakeFeed, bell: FeedBell | None = None) -> FeedService:
    return FeedService(
        fake, FeedCursors(b"k" * 16), bell or FeedBell(), idle_check=5, stream_page=2
    )


async def test_pages_follow_cursors_and_an_empty_page_keeps_the_cursor() -> None:
    fake = FakeFeed()
    for _ in range(3):
        fake.write("a", update(PaymentStatus.PENDING))
    fake.write("b", update(PaymentStatus.PENDING))
    await Sequencer(fake).run_once()
    feed = service(fake)
    first = await feed.page("a", "", 2)
    assert [u.position for u in first.updates] == [1, 2]
    second = await feed.page("a", first.next_cursor, 2)
    assert [u.position for u in second.updates] == [3]
    empty = await feed.page("a", second.next_cursor, 2)
    assert (empty.updates, empty.next_cursor) == ([], second.next_cursor)


async def test_a_cursor_is_bound_to_its_client_and_signed() -> None:
    fake = FakeFeed()
    fake.write("a", update(PaymentStatus.PENDING))
    await Sequencer(fake).run_once()
    feed = service(fake)
    cursor = (await feed.page("a", "", 1)).next_cursor
    with pytest.raises(InvalidCursor):
        await feed.page("b", cursor, 1)
    with pytest.raises(InvalidCursor):
        await feed.page("a", cursor[:-2] + "AA", 1)
    with pytest.raises(InvalidArgument):
        await feed.page("a", "", -1)


async def test_an_expired_cursor_is_refused_and_no_cursor_starts_at_the_oldest_kept() -> None:
    fake = FakeFeed()
    for age in (3, 2, 1):
        fake.write("a", update(PaymentStatus.PENDING, at=NOW - timedelta(days=age)))
    await Sequencer(fake).run_once()
    feed = service(fake)
    old = await feed.page("a", "", 1)
    assert await fake.expire(NOW - timedelta(days=1, hours=12), 10) == 2
    with pytest.raises(CursorExpired):
        await feed.page("a", old.next_cursor, 10)
    assert [u.position for u in (await feed.page("a", "", 10)).updates] == [3]


async def test_a_stream_reads_a_page_only_when_woken_or_when_the_last_was_full() -> None:
    fake = FakeFeed()
    bell = FeedBell()
    feed = service(fake, bell)
    for _ in range(3):
        fake.write("a", update(PaymentStatus.PENDING))
    await Sequencer(fake).run_once()
    stream = feed.watch("a", "")
    assert [u.position for u in await anext(stream)] == [1, 2]
    assert [u.position for u in await anext(stream)] == [3]
    nxt = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    reads = fake.page_reads
    assert not nxt.done()
    bell.ring({"b"})  # another client's news: not woken
    await asyncio.sleep(0.05)
    assert fake.page_reads == reads
    fake.write("a", update(PaymentStatus.SUCCEEDED))
    sequencer = Sequencer(fake, on_sequenced=lambda s: bell.ring(s.client_ids))
    assert await sequencer.run_once() == 1
    assert [u.position for u in await asyncio.wait_for(nxt, 1)] == [4]
    await stream.aclose()


async def test_the_sequencer_coalesces_kicks_and_runs_on_its_safety_net() -> None:
    fake = FakeFeed()
    runs: list[Sequenced] = []
    sequencer = Sequencer(fake, on_sequenced=runs.append)
    task = asyncio.create_task(sequencer.run_forever(safety_every=0.2))
    fake.write("a", update(PaymentStatus.PENDING))
    for _ in range(5):
        sequencer.kick()
    await asyncio.sleep(0.05)
    assert [r.count for r in runs] == [1]
    fake.write("a", update(PaymentStatus.PENDING))  # nobody kicks: the safety net
    await asyncio.sleep(0.3)
    assert [r.count for r in runs] == [1, 1]
    task.cancel()


async def test_the_commits_of_the_sequencers_gap_are_numbered_in_one_run() -> None:
    fake = FakeFeed()
    runs: list[Sequenced] = []
    sequencer = Sequencer(fake, on_sequenced=runs.append, gap=0.2)
    task = asyncio.create_task(sequencer.run_forever(safety_every=10))
    fake.write("a", update(PaymentStatus.PENDING))
    sequencer.kick()
    await asyncio.sleep(0.05)
    assert [r.count for r in runs] == [1]
    for _ in range(3):  # three commits within the gap, each kicking
        fake.write("a", update(PaymentStatus.PENDING))
        sequencer.kick()
        await asyncio.sleep(0.02)
    assert [r.count for r in runs] == [1]
    await asyncio.sleep(0.25)
    assert [r.count for r in runs] == [1, 3]
    task.cancel()


async def test_streams_of_one_client_woken_together_share_one_read() -> None:
    fake = FakeFeed()
    bell = FeedBell()
    feed = service(fake, bell)
    streams = [feed.watch("a", "") for _ in range(20)]
    waiting = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(0.05)
    assert fake.page_reads == 1  # the first reads, caught up: all waiting on the bell
    fake.write("a", update(PaymentStatus.PENDING))
    await Sequencer(fake, on_sequenced=lambda s: bell.ring(s.client_ids)).run_once()
    pages = await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert [[u.position for u in p] for p in pages] == [[1]] * 20
    assert fake.page_reads == 2
    for s in streams:
        await s.aclose()
