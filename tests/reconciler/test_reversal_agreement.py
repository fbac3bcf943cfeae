"""The reconciler and payment-svc agree on reversals: the REVERSED rule has one
text (payments_kit/reversal.py) applied on both sides, and this checks the
sides end to end, without I/O. An intent the reconciler finds in agreement
with our payment (so the settlement diff skips it) is one that payment-svc,
handed the same intent as a snapshot over the real conversions, would leave
as it is; and both read the same status off every intent."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from payment_svc.adapters.stripe_observations import snapshot as read_snapshot
from payment_svc.domain.reconciliation import plan_snapshot
from payment_svc.domain.reversals import status_for
from payment_svc.domain.status import PaymentStatus
from payment_svc.entrypoints.provider_sync_grpc import snapshot as facts_of
from payments_stripe.objects import our_view, parse_intent
from payments_stripe.status import Status
from reconciler.convert import snapshot as wire_snapshot
from reconciler.rules import Ours, agrees

AMOUNT = 1000
INTENT_STATES: list[dict[str, Any]] = [
    {"status": "succeeded"},
    {"status": "processing"},
    {"status": "canceled", "cancellation_reason": "abandoned"},
    {"status": "requires_payment_method", "last_payment_error": {"code": "card_declined"}},
]
REVERSED_AMOUNTS = (0, 1, 300, 999, AMOUNT)


def _intent(state: dict[str, Any], refunded: int, disputed: bool) -> Any:
    return parse_intent(
        {
            "id": "pi_1",
            "object": "payment_intent",
            "amount": AMOUNT,
            "currency": "usd",
            "created": 1_790_000_000,
            "metadata": {"payment_id": "pay_1"},
            "latest_charge": {"amount_refunded": refunded, "disputed": disputed},
            **state,
        }
    )


def _held_by_payment_svc(status: Status, amount_reversed: int) -> bool:
    """The states payment-svc stores: only a success is reversed, and it is
    REVERSED exactly when the whole amount is (spelled out here, not taken
    from the rule under test)."""
    if status in (Status.SUCCEEDED, Status.REVERSED):
        return (status is Status.REVERSED) == (amount_reversed == AMOUNT)
    return amount_reversed == 0


def _payment_svc_leaves_it(ours: Ours, intent: Any, amount_disputed: int = 0) -> bool:
    """What RecordProviderSnapshot would make of the intent: nothing to
    write and nothing to report (a reversed amount that differs from the
    provider's is reported: issue 25). `amount_disputed`: the dispute ours
    recorded (its own amount, which the charge does not carry)."""
    snap = read_snapshot(facts_of(wire_snapshot(intent, datetime.now(UTC))))
    plan = plan_snapshot(
        PaymentStatus[ours.status.name],
        ours.amount,
        ours.currency,
        snap,
        bound_provider_id=ours.provider_payment_id,
        amount_reversed=ours.amount_reversed,
        amount_disputed=amount_disputed,
    )
    return not (
        plan.apply or plan.mismatch or plan.contradiction or plan.duplicate or plan.reversal_differs
    )


# Only a succeeded charge can be refunded or disputed at Stripe.
INTENTS = [
    (state, refunded, disputed)
    for state, refunded, disputed in itertools.product(
        INTENT_STATES, REVERSED_AMOUNTS, (False, True)
    )
    if state["status"] == "succeeded" or (refunded, disputed) == (0, False)
]


@pytest.mark.parametrize(("state", "refunded", "disputed"), INTENTS)
def test_an_intent_the_reconciler_skips_is_one_payment_svc_leaves_alone(
    state: dict[str, Any], refunded: int, disputed: bool
) -> None:
    intent = _intent(state, refunded, disputed)
    snap = read_snapshot(facts_of(wire_snapshot(intent, datetime.now(UTC))))
    assert snap.status is not None
    # The snapshot's status is the intent's own; REVERSED is derived by the one rule.
    derived = status_for(snap.status, AMOUNT, snap.amount_reversed)
    assert our_view(intent).name == derived.name
    skipped = 0
    for status, amount_reversed in itertools.product(Status, REVERSED_AMOUNTS):
        if not _held_by_payment_svc(status, amount_reversed):
            continue
        ours = Ours("pay_1", status, AMOUNT, "USD", "pi_1", amount_reversed)
        if agrees(ours, intent):
            skipped += 1
            # A dispute takes what the refunds left (provider-sim's and Stripe's);
            # of a charge refunded whole, some amount all the same.
            disputed_amount = max(AMOUNT - refunded, 1) if disputed else 0
            assert _payment_svc_leaves_it(ours, intent, disputed_amount), (
                status,
                amount_reversed,
            )
    # Exactly one state of ours agrees with each intent: the one payment-svc
    # would make of it (so the check above is never vacuous).
    assert skipped == 1


def test_partly_and_wholly_reversed_on_both_sides() -> None:
    partly = _intent({"status": "succeeded"}, 300, False)
    whole = _intent({"status": "succeeded"}, AMOUNT, False)
    assert our_view(partly) is Status.SUCCEEDED and our_view(whole) is Status.REVERSED
    assert agrees(Ours("pay_1", Status.SUCCEEDED, AMOUNT, "USD", "pi_1", 300), partly)
    assert not agrees(Ours("pay_1", Status.SUCCEEDED, AMOUNT, "USD", "pi_1", 300), whole)
    stale = Ours("pay_1", Status.SUCCEEDED, AMOUNT, "USD", "pi_1", 300)
    assert not _payment_svc_leaves_it(stale, whole)
