"""The reconciler's decisions about refunds and the provider's refund
shapes, without I/O (issue 13); what catch-up asks the provider for, as a
loopback server receives it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from reconciler_testkit import catch_up_asks_for_types

from payments.v1 import payment_pb2 as pb
from payments_stripe.objects import MalformedAnswer, ProviderIntent, parse_refund
from payments_stripe.status import RefundState, StripeRefundStatus, to_refund_state
from reconciler.rules import (
    is_stuck_refund,
    ours_among_refunds,
    provider_refunded,
    refund_agrees,
)

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def refund_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "re_1",
        "object": "refund",
        "amount": 300,
        "currency": "usd",
        "status": "succeeded",
        "payment_intent": "pi_1",
        "metadata": {"refund_id": "rfd_1"},
        "created": 1_700_000_000,
    }
    return {**body, **overrides}


async def test_catch_up_asks_for_the_refund_events() -> None:
    asked = await catch_up_asks_for_types()
    assert {"refund.created", "refund.updated", "refund.failed", "charge.refunded"} <= set(asked)
    assert "unknown" not in asked
    assert len(asked) <= 20  # Stripe's limit for types[]


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("succeeded", RefundState.SUCCEEDED),
        ("failed", RefundState.FAILED),
        ("canceled", RefundState.FAILED),
        ("pending", RefundState.PENDING),
        ("requires_action", RefundState.PENDING),
        ("something_new", RefundState.PENDING),  # never a guess: asked again later
    ],
)
def test_every_stripe_refund_status_maps_once(word: str, state: RefundState) -> None:
    assert to_refund_state(StripeRefundStatus.parse(word)) is state
    assert parse_refund(refund_json(status=word)).mapped is state


def test_a_refund_is_read_with_our_id_or_none() -> None:
    ours = parse_refund(refund_json(status="failed", failure_reason="declined"))
    assert (ours.refund_id, ours.currency, ours.failure_reason) == ("rfd_1", "USD", "declined")
    theirs = parse_refund(refund_json(metadata={}))
    assert theirs.refund_id == ""
    with pytest.raises(MalformedAnswer):
        parse_refund({"object": "refund", "id": "re_1"})


def test_the_refund_that_moved_money_is_ours_among_several() -> None:
    pending = parse_refund(refund_json(id="re_2", status="pending"))
    done = parse_refund(refund_json(id="re_1"))
    assert ours_among_refunds([pending, done]).id == "re_1"
    assert ours_among_refunds([pending]).id == "re_2"


def test_a_refund_agrees_only_with_the_same_id_amount_and_state() -> None:
    theirs = parse_refund(refund_json())
    mine = pb.Refund(
        id="rfd_1",
        amount=300,
        currency="USD",
        status=pb.REFUND_STATUS_SUCCEEDED,
        provider_refund_id="re_1",
    )
    assert refund_agrees(mine, theirs)
    for change in (
        {"status": pb.REFUND_STATUS_UNKNOWN},
        {"provider_refund_id": ""},
        {"amount": 301},
    ):
        other = pb.Refund()
        other.CopyFrom(mine)
        for name, value in change.items():
            setattr(other, name, value)
        assert not refund_agrees(other, theirs), change


def test_only_succeeded_refunds_count_as_refunded() -> None:
    refunds = [
        parse_refund(refund_json(id="re_1", amount=300)),
        parse_refund(refund_json(id="re_2", amount=200, status="pending")),
        parse_refund(refund_json(id="re_3", amount=100, status="failed")),
    ]
    assert provider_refunded(refunds) == 300


def test_a_non_final_refund_is_stuck_past_the_deadline() -> None:
    created = NOW - timedelta(hours=2)
    assert is_stuck_refund(pb.REFUND_STATUS_UNKNOWN, created, NOW, 3600)
    assert not is_stuck_refund(pb.REFUND_STATUS_PENDING, NOW, NOW, 3600)
    assert not is_stuck_refund(pb.REFUND_STATUS_SUCCEEDED, created, NOW, 3600)


def test_the_settlement_diff_lists_an_intents_refunds_unless_our_books_already_match() -> None:
    from payments_stripe.status import Status
    from reconciler.refund_settlement import _settled_alike

    intent = ProviderIntent(
        id="pi_1", status="succeeded", amount=1000, currency="EUR", created=0, payment_id="pay_1",
        amount_refunded=500, disputed=False, failure_code="", failure_message="",
        mapped=Status.SUCCEEDED,
    )  # fmt: skip

    def refund(amount: int, status: pb.RefundStatus.ValueType, provider_id: str = "re_x") -> Any:
        return pb.Refund(id="rfd_x", amount=amount, status=status, provider_refund_id=provider_id)

    ok, failed = pb.REFUND_STATUS_SUCCEEDED, pb.REFUND_STATUS_FAILED
    assert _settled_alike(intent, [refund(300, ok), refund(200, ok), refund(50, failed)]) == 500
    # Listed: nothing of ours, a total that differs, one not final, one the
    # provider never named.
    assert _settled_alike(intent, []) is None
    assert _settled_alike(intent, [refund(300, ok)]) is None
    assert _settled_alike(intent, [refund(300, ok), refund(200, pb.REFUND_STATUS_UNKNOWN)]) is None
    assert _settled_alike(intent, [refund(300, ok), refund(200, ok, provider_id="")]) is None
