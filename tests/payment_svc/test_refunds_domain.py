"""Refunds in the domain, without I/O (SPEC §3a, §4): the transition table,
what remains of a payment, and what recording a provider answer writes."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from payment_svc.domain.binding import within_redrive_window
from payment_svc.domain.commands import RefundPayment
from payment_svc.domain.errors import (
    InvalidArgument,
    PaymentNotRefundable,
    RefundExceedsRemaining,
)
from payment_svc.domain.model import Payment, format_payment_id
from payment_svc.domain.refunds import (
    Refund,
    RefundOutcome,
    RefundStatus,
    RefundWrite,
    admit,
    decide,
    format_refund_id,
    parse_refund_id,
    plan_outcome,
    remaining,
)
from payment_svc.domain.status import Move, PaymentStatus, Source

P, U, S, F = RefundStatus.PENDING, RefundStatus.UNKNOWN, RefundStatus.SUCCEEDED, RefundStatus.FAILED
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def payment(
    amount: int = 1000, status: PaymentStatus = PaymentStatus.SUCCEEDED, **kw: object
) -> Payment:
    base = Payment(
        id=uuid.uuid4(),
        client_id="c1",
        idempotency_key="k",
        amount=amount,
        currency="USD",
        status=status,
        payment_method="pm_card_visa",
        description="",
        metadata={},
        provider_payment_id="pi_1",
        failure_code=None,
        failure_message=None,
        amount_reversed=0,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def refund(amount: int, status: RefundStatus = P, p: Payment | None = None) -> Refund:
    return Refund(
        id=uuid.uuid4(),
        payment_id=p.id if p else uuid.uuid4(),
        client_id="c1",
        idempotency_key="rk",
        amount=amount,
        currency="USD",
        status=status,
        reason="",
        source=Source.API,
        provider_refund_id=None,
        failure_code=None,
        failure_message=None,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("current", "target", "authoritative", "move"),
    [
        (P, U, False, Move.APPLY),
        (P, S, False, Move.APPLY),
        (P, F, False, Move.APPLY),
        (P, P, False, Move.NOOP),  # still processing: no move (issue 22)
        (P, P, True, Move.NOOP),
        (U, P, False, Move.APPLY),
        (U, S, False, Move.APPLY),
        (U, F, False, Move.APPLY),
        (U, U, False, Move.NOOP),
        (S, F, False, Move.REJECT),
        (F, S, False, Move.REJECT),
        (S, F, True, Move.APPLY),
        (F, S, True, Move.APPLY),
        (S, P, True, Move.REJECT),
        (S, U, False, Move.REJECT),
        (F, F, False, Move.NOOP),
        (S, S, True, Move.NOOP),
    ],
)
def test_the_transition_table(
    current: RefundStatus, target: RefundStatus, authoritative: bool, move: Move
) -> None:
    assert decide(current, target, authoritative=authoritative) is move


def test_remaining_counts_succeeded_pending_and_unknown_refunds_and_disputes() -> None:
    p = payment(amount_disputed=50)
    refunds = [refund(100, S), refund(200, P), refund(300, U), refund(400, F)]
    assert remaining(p, refunds) == 1000 - 600 - 50


def test_a_reversal_recorded_before_refunds_were_rows_still_counts() -> None:
    assert remaining(payment(amount_reversed=700), [refund(100, S)]) == 300


def test_admit_zero_is_all_that_remains_and_more_is_refused_with_what_remains() -> None:
    p = payment()
    assert admit(p, [refund(300, S), refund(300, P)], 0) == 400
    assert admit(p, [refund(300, S)], 700) == 700
    with pytest.raises(RefundExceedsRemaining) as exc:
        admit(p, [refund(300, S), refund(300, U)], 401)
    assert exc.value.remaining == 400
    assert exc.value.reason == "REFUND_EXCEEDS_REMAINING"
    with pytest.raises(RefundExceedsRemaining) as nothing_left:
        admit(p, [refund(1000, P)], 0)
    assert nothing_left.value.remaining == 0


@pytest.mark.parametrize(
    "status",
    [PaymentStatus.PENDING, PaymentStatus.UNKNOWN, PaymentStatus.FAILED, PaymentStatus.REVERSED],
)
def test_only_a_succeeded_payment_is_refundable(status: PaymentStatus) -> None:
    with pytest.raises(PaymentNotRefundable) as exc:
        admit(payment(status=status), [], 100)
    assert exc.value.reason == "PAYMENT_NOT_REFUNDABLE"


def test_a_payment_never_charged_through_us_is_not_refundable() -> None:
    # SUCCEEDED without a provider payment id: nothing at the provider to
    # refund (the admission rule's, not the service layer's: issue 22).
    with pytest.raises(PaymentNotRefundable):
        admit(payment(provider_payment_id=None), [], 100)
    assert admit(payment(), [], 100) == 100


def test_the_redrive_window_is_a_function_of_now() -> None:
    window = 3600.0
    assert within_redrive_window(NOW, NOW + timedelta(seconds=3599), window)
    assert not within_redrive_window(NOW, NOW + timedelta(seconds=3600), window)
    assert not within_redrive_window(NOW, NOW + timedelta(days=2), window)


def test_a_partial_success_moves_amount_reversed_and_keeps_the_payment_succeeded() -> None:
    p = payment()
    r = refund(300, P, p)
    plan = plan_outcome(p, r, 300, RefundOutcome(S, "re_1", "succeeded"))
    assert plan.write is RefundWrite.MOVE
    assert (plan.refund_status, plan.payment_to, plan.amount_reversed) == (
        S,
        PaymentStatus.SUCCEEDED,
        600,
    )
    assert plan.payment_changes
    assert plan.note is not None and "amount_reversed 0 -> 600 of 1000" in plan.note


def test_the_success_that_covers_the_whole_amount_makes_it_reversed() -> None:
    p = payment(amount_reversed=600)
    plan = plan_outcome(p, refund(400, P, p), 600, RefundOutcome(S, "re_2"))
    assert (plan.payment_from, plan.payment_to, plan.amount_reversed) == (
        PaymentStatus.SUCCEEDED,
        PaymentStatus.REVERSED,
        1000,
    )


def test_disputes_count_toward_the_whole_amount() -> None:
    p = payment(amount_reversed=200, amount_disputed=200)
    plan = plan_outcome(p, refund(800, P, p), 0, RefundOutcome(S))
    assert (plan.payment_to, plan.amount_reversed) == (PaymentStatus.REVERSED, 1000)


def test_pending_unknown_and_failed_leave_the_payment_alone() -> None:
    p = payment()
    for outcome in (RefundOutcome(P, "re_3"), RefundOutcome(U), RefundOutcome(F, failure_code="x")):
        plan = plan_outcome(p, refund(300, P, p), 0, outcome)
        assert plan.write is RefundWrite.MOVE
        assert plan.refund_status is outcome.status
        assert not plan.payment_changes
        assert plan.amount_reversed == 0


def test_a_final_refund_is_not_moved_by_a_non_authoritative_source() -> None:
    p = payment(amount_reversed=300)
    done = refund(300, S, p)
    plan = plan_outcome(p, done, 0, RefundOutcome(F, failure_code="x"))
    assert plan.write is RefundWrite.RECORD
    assert not plan.payment_changes
    assert plan_outcome(p, done, 0, RefundOutcome(S)).write is RefundWrite.NOTHING


def test_refund_ids_round_trip_and_foreign_ones_are_refused() -> None:
    value = uuid.uuid4()
    assert parse_refund_id(format_refund_id(value)) == value
    assert parse_refund_id("re_123") is None
    assert parse_refund_id(format_payment_id(value)) is None


def test_refund_command_rules() -> None:
    ok = RefundPayment(format_payment_id(uuid.uuid4()), "key-1", 0, "requested_by_customer")
    ok.validate()
    with pytest.raises(InvalidArgument) as exc:
        RefundPayment("nope", "", -1, "because").validate()
    assert [v.field for v in exc.value.violations] == [
        "payment_id",
        "idempotency_key",
        "amount",
        "reason",
    ]
    with pytest.raises(InvalidArgument):
        RefundPayment(ok.payment_id, "k", 100_000_000).validate()
    with pytest.raises(InvalidArgument):
        RefundPayment(ok.payment_id, "4242424242424242").validate()
