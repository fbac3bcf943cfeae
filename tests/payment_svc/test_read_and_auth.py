"""GetPayment, ListPayments, ListPaymentEvents, and who may see what."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from tests.support import auth, create_request, rich_error, stub


async def _create(channel: grpc.aio.Channel, who: str = "merchant", **kw: object) -> pb.Payment:
    reply = await stub(channel).CreatePayment(create_request(**kw), metadata=auth(who), timeout=10)
    return reply.payment


async def test_get_returns_what_create_returned(channel: grpc.aio.Channel) -> None:
    created = await _create(channel)
    got = await stub(channel).GetPayment(
        svc.GetPaymentRequest(payment_id=created.id), metadata=auth(), timeout=5
    )
    assert got.payment == created


async def test_history_lists_every_change_with_its_source(channel: grpc.aio.Channel) -> None:
    created = await _create(channel, payment_method="pm_card_chargeDeclined")
    reply = await stub(channel).ListPaymentEvents(
        svc.ListPaymentEventsRequest(payment_id=created.id), metadata=auth(), timeout=5
    )
    events = list(reply.events)
    first = events[0]
    assert (first.from_status, first.to_status, first.source, first.applied) == (
        pb.PAYMENT_STATUS_UNSPECIFIED,
        pb.PAYMENT_STATUS_PENDING,
        pb.PAYMENT_EVENT_SOURCE_API,
        True,
    )
    # The decline is applied once: by the API's answer or by the provider's
    # webhook, whichever came first; the other is recorded, not applied.
    applied = [e for e in events[1:] if e.applied]
    assert [(e.from_status, e.to_status) for e in applied] == [
        (pb.PAYMENT_STATUS_PENDING, pb.PAYMENT_STATUS_FAILED)
    ]
    assert applied[0].source in (pb.PAYMENT_EVENT_SOURCE_API, pb.PAYMENT_EVENT_SOURCE_WEBHOOK)
    assert applied[0].failure_code == "generic_decline"
    assert all(e.source == pb.PAYMENT_EVENT_SOURCE_WEBHOOK for e in events[1:] if not e.applied)
    assert all(e.recorded_at.seconds > 0 for e in events)


async def test_list_filters_by_status_and_time_and_pages_without_gaps(
    channel: grpc.aio.Channel,
) -> None:
    # merchant-2 gets a fresh set so the assertions see only these payments
    start = datetime.now(UTC) - timedelta(seconds=1)
    made = [await _create(channel, "merchant-2") for _ in range(7)]
    made += [
        await _create(channel, "merchant-2", payment_method="pm_card_chargeDeclined")
        for _ in range(3)
    ]
    after = Timestamp()
    after.FromDatetime(start)

    seen: list[pb.Payment] = []
    token = ""
    while True:
        page = await stub(channel).ListPayments(
            svc.ListPaymentsRequest(page_size=3, page_token=token, created_after=after),
            metadata=auth("merchant-2"),
            timeout=5,
        )
        assert len(page.payments) <= 3
        seen.extend(page.payments)
        token = page.next_page_token
        if not token:
            break
    assert [p.id for p in seen] == [p.id for p in reversed(made)]  # newest first, no gaps

    failed = await stub(channel).ListPayments(
        svc.ListPaymentsRequest(statuses=[pb.PAYMENT_STATUS_FAILED], created_after=after),
        metadata=auth("merchant-2"),
        timeout=5,
    )
    assert {p.id for p in failed.payments} == {p.id for p in made[7:]}

    before = Timestamp()
    before.FromDatetime(start)
    none = await stub(channel).ListPayments(
        svc.ListPaymentsRequest(
            created_after=after,
            created_before=_ts(datetime.now(UTC) + timedelta(days=1)),
            statuses=[pb.PAYMENT_STATUS_REVERSED],
        ),
        metadata=auth("merchant-2"),
        timeout=5,
    )
    assert list(none.payments) == []


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


async def test_a_page_token_is_bound_to_its_filters(channel: grpc.aio.Channel) -> None:
    for _ in range(3):
        await _create(channel)
    page = await stub(channel).ListPayments(
        svc.ListPaymentsRequest(page_size=1), metadata=auth(), timeout=5
    )
    assert page.next_page_token
    for bad in (
        svc.ListPaymentsRequest(
            page_size=1, page_token=page.next_page_token, statuses=[pb.PAYMENT_STATUS_FAILED]
        ),
        svc.ListPaymentsRequest(page_token="garbage!"),
        svc.ListPaymentsRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).ListPayments(bad, metadata=auth(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_token_or_a_wrong_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    for metadata in (
        (),
        (("authorization", "Bearer nope"),),
        (("authorization", "dev-merchant-token"),),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(create_request(), metadata=metadata, timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).ListPayments(
                svc.ListPaymentsRequest(), metadata=metadata, timeout=5
            )
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_client_cannot_see_another_clients_payments(channel: grpc.aio.Channel) -> None:
    mine = await _create(channel, "merchant")
    for call in (
        stub(channel).GetPayment(
            svc.GetPaymentRequest(payment_id=mine.id), metadata=auth("merchant-2"), timeout=5
        ),
        stub(channel).ListPaymentEvents(
            svc.ListPaymentEventsRequest(payment_id=mine.id), metadata=auth("merchant-2"), timeout=5
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub(channel).ListPayments(
        svc.ListPaymentsRequest(page_size=100), metadata=auth("merchant-2"), timeout=5
    )
    assert mine.id not in {p.id for p in listed.payments}


async def test_unknown_and_malformed_ids(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).GetPayment(
            svc.GetPaymentRequest(payment_id="pay_" + "0" * 32), metadata=auth(), timeout=5
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).GetPayment(
            svc.GetPaymentRequest(payment_id="42"), metadata=auth(), timeout=5
        )
    assert rich_error(exc.value).violations.keys() == {"payment_id"}


async def test_services_are_only_for_their_callers(channel: grpc.aio.Channel) -> None:
    sync_stub = sync_grpc.ProviderSyncServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await sync_stub.ListPaymentsToReconcile(
            sync.ListPaymentsToReconcileRequest(), metadata=auth("merchant"), timeout=5
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(create_request(), metadata=auth("gateway"), timeout=5)
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_concurrent_reads_while_writing(channel: grpc.aio.Channel) -> None:
    created = await asyncio.gather(*(_create(channel) for _ in range(20)))
    got = await asyncio.gather(
        *(
            stub(channel).GetPayment(
                svc.GetPaymentRequest(payment_id=p.id), metadata=auth(), timeout=5
            )
            for p in created
        )
    )
    assert [g.payment.id for g in got] == [p.id for p in created]
