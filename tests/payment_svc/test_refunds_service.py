"""RefundsService against in-memory fakes of its ports: no Postgres, no
provider-sim (the same on real parts: tests/e2e/test_refund_payment.py,
test_refund_concurrency.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from payment_svc.domain.commands import ListRefunds, RefundPayment
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import (
    DuplicateRefund,
    InvalidArgument,
    NotFound,
    PaymentNotRefundable,
    RefundExceedsRemaining,
    RefundNotRecorded,
)
from payment_svc.domain.model import Payment
from payment_svc.domain.refunds import ProviderRefundRequest, RefundOutcome, RefundStatus
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.refunds import RefundsService
from tests.payment_svc.fakes import (
    FakePaymentRepository,
    FakeRefundProvider,
    FakeRefundRepository,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    payments: FakePaymentRepository = field(default_factory=FakePaymentRepository)
    provider: FakeRefundProvider = field(default_factory=FakeRefundProvider)

    def __post_init__(self) -> None:
        self.refunds = FakeRefundRepository(self.payments)
        self.provider.repository = self.refunds
        self.service = RefundsService(
            self.refunds,
            self.provider,
            AttemptBudget(provider_timeout=5.0, write_reserve=1.0),
        )

    def pay(
        self,
        amount: int = 1000,
        status: PaymentStatus = PaymentStatus.SUCCEEDED,
        client: str = "c1",
    ) -> Payment:
        p = Payment(
            id=uuid.uuid4(),
            client_id=client,
            idempotency_key=f"k-{uuid.uuid4()}",
            amount=amount,
            currency="EUR",
            status=status,
            payment_method="pm_card_visa",
            description="",
            metadata={},
            provider_payment_id=f"pi_{uuid.uuid4().hex[:8]}",
            failure_code=None,
            failure_message=None,
            amount_reversed=0,
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        self.payments.payments[p.id] = p
        return p

    def payment(self, p: Payment) -> Payment:
        return self.payments.payments[p.id]


def ask(p: Payment, amount: int = 0, key: str = "r-1", reason: str = "") -> RefundPayment:
    return RefundPayment(p.public_id, key, amount, reason)


async def test_the_refund_is_recorded_before_the_provider_is_asked_with_our_id() -> None:
    w = World()
    p = w.pay()
    r = await w.service.refund("c1", ask(p, 300, reason="duplicate"))
    assert w.provider.seen_recorded == [True]
    [sent] = w.provider.asked
    assert sent == ProviderRefundRequest(
        refund_id=r.public_id,
        payment_id=p.public_id,
        provider_payment_id=p.provider_payment_id or "",
        amount=300,
        currency="EUR",
        reason="duplicate",
    )
    assert (r.status, r.provider_refund_id, r.source) == (
        RefundStatus.SUCCEEDED,
        "re_fake",
        Source.API,
    )
    assert (w.payment(p).status, w.payment(p).amount_reversed) == (PaymentStatus.SUCCEEDED, 300)
    assert [h[1] for h in w.refunds.history] == [RefundStatus.PENDING, RefundStatus.SUCCEEDED]


async def test_the_answer_is_written_on_the_payment_as_the_insert_left_it_else_read_again() -> None:
    w = World()
    p = w.pay()
    await w.service.refund("c1", ask(p, 100, key="a"))
    assert w.refunds.reads == 1  # the insert's read; the answer needed none

    # A dispute lands while the provider is asked: the guess is wrong, the
    # answer is planned again on the payment as it is.
    async def dispute() -> None:
        now = w.payment(p)
        w.payments.payments[p.id] = replace(now, amount_disputed=200, amount_reversed=200)

    w.provider.on_call = dispute
    r = await w.service.refund("c1", ask(p, 100, key="b"))
    assert r.status is RefundStatus.SUCCEEDED
    assert w.refunds.reads == 3
    assert w.payment(p).amount_reversed == 400  # 2 x 100 refunded + 200 disputed


async def test_zero_refunds_the_rest_and_the_whole_makes_the_payment_reversed() -> None:
    w = World()
    p = w.pay()
    await w.service.refund("c1", ask(p, 600, key="a"))
    rest = await w.service.refund("c1", ask(p, 0, key="b"))
    assert rest.amount == 400
    assert (w.payment(p).status, w.payment(p).amount_reversed) == (PaymentStatus.REVERSED, 1000)
    history = [h for h in w.payments.history if h[0] == p.id]
    assert history[-1][1:3] == (PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED)


async def test_refusals_never_reach_the_provider() -> None:
    w = World()
    p = w.pay()
    await w.service.refund("c1", ask(p, 700, key="a"))
    with pytest.raises(RefundExceedsRemaining) as more:
        await w.service.refund("c1", ask(p, 301, key="b"))
    assert more.value.remaining == 300
    with pytest.raises(DuplicateRefund) as dup:
        await w.service.refund("c1", ask(p, 700, key="a"))
    assert (dup.value.reason, dup.value.status) == ("DUPLICATE_REFUND", RefundStatus.SUCCEEDED)
    with pytest.raises(DuplicateRefund) as reused:
        await w.service.refund("c1", ask(p, 10, key="a"))
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(NotFound):
        await w.service.refund("c2", ask(p, 10, key="c"))
    for status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN, PaymentStatus.FAILED):
        with pytest.raises(PaymentNotRefundable):
            await w.service.refund("c1", ask(w.pay(status=status), 10, key=f"d-{status}"))
    with pytest.raises(InvalidArgument):
        await w.service.refund("c1", ask(p, -1, key="e"))
    assert len(w.provider.asked) == 1
    assert len(w.refunds.refunds) == 1


async def test_a_pending_answer_keeps_it_pending_and_holds_the_amount() -> None:
    w = World(
        provider=FakeRefundProvider(answer=RefundOutcome(RefundStatus.PENDING, "re_p", "pending"))
    )
    p = w.pay()
    r = await w.service.refund("c1", ask(p, 0))
    assert (r.status, r.provider_refund_id, r.amount) == (RefundStatus.PENDING, "re_p", 1000)
    assert w.payment(p).amount_reversed == 0
    with pytest.raises(RefundExceedsRemaining):
        await w.service.refund("c1", ask(p, 1, key="r-2"))


async def test_no_answer_is_unknown_and_a_refusal_is_failed_and_frees_the_amount() -> None:
    w = World(
        provider=FakeRefundProvider(
            answers=[
                RefundOutcome(RefundStatus.UNKNOWN, note="timed out"),
                RefundOutcome(
                    RefundStatus.FAILED, failure_code="amount_too_large", failure_message="no"
                ),
            ]
        )
    )
    p = w.pay()
    unknown = await w.service.refund("c1", ask(p, 500, key="a"))
    assert unknown.status is RefundStatus.UNKNOWN
    failed = await w.service.refund("c1", ask(p, 500, key="b"))
    assert (failed.status, failed.failure_code) == (RefundStatus.FAILED, "amount_too_large")
    # The unknown one holds its 500; the failed one holds nothing.
    ok = await w.service.refund("c1", ask(p, 0, key="c"))
    assert ok.amount == 500


async def test_the_answer_is_written_again_while_the_database_is_away() -> None:
    w = World()
    p = w.pay()

    async def outage() -> None:
        w.refunds.failures = 2  # the next two writes fail

    w.provider.on_call = outage
    r = await w.service.refund("c1", ask(p, 100))
    assert r.status is RefundStatus.SUCCEEDED
    assert w.refunds.failures == 0


async def test_the_answer_not_recorded_by_the_deadline_is_refund_not_recorded() -> None:
    w = World()
    p = w.pay()

    async def away() -> None:
        w.refunds.failures = 10_000

    w.provider.on_call = away
    loop = asyncio.get_running_loop()
    with pytest.raises(RefundNotRecorded) as exc:
        await w.service.refund("c1", ask(p, 100), deadline=loop.time() + 0.5)
    [r] = w.refunds.refunds.values()
    assert exc.value.refund_id == r.public_id
    assert r.status is RefundStatus.PENDING  # converges later (webhook, reconciler)


async def test_a_caller_that_goes_away_does_not_lose_the_answer() -> None:
    w = World()
    p = w.pay()
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    w.provider.on_call = slow
    call = asyncio.ensure_future(w.service.refund("c1", ask(p, 100)))
    await asyncio.sleep(0.05)
    call.cancel()
    gate.set()
    await w.service.drain(1.0)
    [r] = w.refunds.refunds.values()
    assert r.status is RefundStatus.SUCCEEDED


async def test_list_is_oldest_first_and_only_the_clients() -> None:
    w = World()
    p = w.pay()
    a = await w.service.refund("c1", ask(p, 100, key="a"))
    b = await w.service.refund("c1", ask(p, 100, key="b"))
    assert [r.id for r in await w.service.list("c1", ListRefunds(p.public_id))] == [a.id, b.id]
    with pytest.raises(NotFound):
        await w.service.list("c2", ListRefunds(p.public_id))
