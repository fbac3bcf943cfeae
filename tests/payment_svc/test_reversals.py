"""Refunds and disputes in the domain, without I/O (SPEC §3a, §4): only
reversals covering the whole amount make a payment REVERSED; partly reversed
it stays SUCCEEDED with amount_reversed recorded. Events go through the
adapter's parser (the provider's JSON in) and the domain's plan; `Held` folds
the plans as the event store writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from payment_svc.adapters.stripe_observations import ours, parse_event
from payment_svc.adapters.stripe_observations import snapshot as stripe_snapshot
from payment_svc.domain.provider_events import EventPlan, plan_event, rank_of
from payment_svc.domain.reconciliation import ProviderFacts, Snapshot, plan_snapshot
from payment_svc.domain.reversals import reverse
from payment_svc.domain.status import PaymentStatus
from payments_stripe.objects import our_view, parse_intent

S, R = PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED
AMOUNT = 1000
T0 = 1_790_000_000  # the success's provider time
AT_T0 = datetime.fromtimestamp(T0, UTC)


def refunded(cumulative: int, created: int = T0 + 10, event_id: str = "") -> bytes:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "amount": AMOUNT,
        "amount_refunded": cumulative,
    }
    return _event("charge.refunded", charge, created, event_id or f"evt_r{cumulative}_{created}")


def disputed(amount: int, created: int = T0 + 20) -> bytes:
    dispute = {"id": "dp_1", "object": "dispute", "payment_intent": "pi_1", "amount": amount}
    return _event("charge.dispute.created", dispute, created, f"evt_d{amount}_{created}")


def _event(event_type: str, obj: dict[str, object], created: int, event_id: str) -> bytes:
    body = {"id": event_id, "type": event_type, "created": created, "data": {"object": obj}}
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Held:
    """A payment as the event store keeps it: status, amount_reversed, and the
    newest provider state applied (time and rank)."""

    status: PaymentStatus = S
    amount_reversed: int = 0
    state_at: datetime | None = AT_T0
    state_rank: int | None = 2
    history: tuple[tuple[PaymentStatus, PaymentStatus, bool, str | None], ...] = ()

    def apply(self, payload: bytes) -> tuple[Held, EventPlan]:
        obs = parse_event(payload).observation
        plan = plan_event(
            self.status,
            self.state_at,
            self.state_rank,
            obs,
            amount=AMOUNT,
            currency="USD",
            bound_provider_id="pi_1",
            amount_reversed=self.amount_reversed,
        )
        moved = self
        if plan.touch:
            assert obs.occurred_at is not None and self.state_at is not None
            newer = obs.occurred_at > self.state_at
            moved = replace(
                self,
                status=(plan.status or obs.status or self.status) if plan.applied else self.status,
                amount_reversed=max(self.amount_reversed, plan.amount_reversed or 0),
                state_at=max(self.state_at, obs.occurred_at),
                state_rank=int(obs.rank) if newer else max(self.state_rank or 0, int(obs.rank)),
            )
        entry = (self.status, plan.status or obs.status or self.status, plan.applied, plan.note)
        return replace(moved, history=(*self.history, entry)), plan

    def then(self, *payloads: bytes) -> Held:
        held = self
        for payload in payloads:
            held, _ = held.apply(payload)
        return held


def test_a_partial_refund_leaves_the_payment_succeeded_with_what_it_reversed() -> None:
    held, plan = Held().apply(refunded(300))
    assert (held.status, held.amount_reversed) == (S, 300)
    # A change all the same: applied, and in the history with what it changed.
    assert plan.applied
    assert held.history == ((S, S, True, "amount_reversed 0 -> 300 of 1000"),)


def test_two_partial_refunds_reaching_the_whole_amount_reverse_it() -> None:
    first = Held().then(refunded(300))
    assert (first.status, first.amount_reversed) == (S, 300)
    held, plan = first.apply(refunded(1000, created=T0 + 30))
    assert (held.status, held.amount_reversed) == (R, 1000)
    assert plan.applied
    assert held.history[-1] == (S, R, True, "amount_reversed 300 -> 1000 of 1000")


def test_the_second_refund_in_the_second_of_the_first_is_not_dropped() -> None:
    # Whole seconds at the provider: both refunds may share one.
    held = Held().then(refunded(300, created=T0 + 10), refunded(1000, created=T0 + 10))
    assert (held.status, held.amount_reversed) == (R, 1000)


def test_a_dispute_of_part_leaves_it_succeeded() -> None:
    held = Held().then(disputed(400))
    assert (held.status, held.amount_reversed) == (S, 400)


def test_a_refund_and_a_dispute_covering_all_reverse_it() -> None:
    held = Held().then(refunded(300), disputed(700))
    assert (held.status, held.amount_reversed) == (R, 1000)
    assert [(a, b, applied) for a, b, applied, _ in held.history] == [
        (S, S, True),
        (S, R, True),
    ]


@pytest.mark.parametrize("late", [T0 + 5, T0 + 10, T0 + 40])
def test_a_stale_or_repeated_cumulative_refund_never_lowers_amount_reversed(late: int) -> None:
    held = Held().then(refunded(300, created=T0 + 10), refunded(600, created=T0 + 30))
    assert (held.status, held.amount_reversed) == (S, 600)
    # An older event, the same second's, or one whose cumulative figure is
    # lower (a delivery of an earlier state, reordered): 600 stays.
    again, plan = held.apply(refunded(300, created=late, event_id=f"evt_again_{late}"))
    assert (again.status, again.amount_reversed) == (S, 600)
    assert not plan.applied
    assert plan.amount_reversed is None


def test_a_dispute_never_reverses_more_than_the_amount() -> None:
    held = Held().then(refunded(800), disputed(AMOUNT))
    assert (held.status, held.amount_reversed) == (R, AMOUNT)


def test_a_reversal_of_a_payment_not_known_to_have_succeeded_moves_nothing() -> None:
    held, plan = Held(status=PaymentStatus.PENDING, state_rank=1).apply(refunded(300))
    assert (held.status, held.amount_reversed) == (PaymentStatus.PENDING, 0)
    assert not plan.applied and not plan.touch


def test_more_reversed_of_a_reversed_payment_is_recorded_and_it_stays_reversed() -> None:
    held = Held(status=R, amount_reversed=300, state_rank=3).then(disputed(700))
    assert (held.status, held.amount_reversed) == (R, 1000)


def test_a_partly_refunded_payment_ranks_as_a_reversal() -> None:
    assert rank_of(S, amount_reversed=300) == rank_of(R)
    assert rank_of(S) < rank_of(R)


def test_the_rule_itself() -> None:
    assert reverse(AMOUNT, 0, refunded=300).status is S
    assert reverse(AMOUNT, 300, refunded=1000).status is R
    assert reverse(AMOUNT, 600, refunded=300).amount_reversed == 600
    assert reverse(AMOUNT, 300, disputed=700).status is R
    assert reverse(AMOUNT, 900, disputed=700).amount_reversed == AMOUNT


def _snapshot(amount_refunded: int = 0, disputed: bool = False) -> Snapshot:
    # As RecordProviderSnapshot builds it (entrypoints/provider_sync_grpc.py).
    return stripe_snapshot(
        ProviderFacts(
            found=True,
            provider_status="succeeded",
            provider_payment_id="pi_1",
            amount=AMOUNT,
            currency="usd",
            amount_refunded=amount_refunded,
            disputed=disputed,
            failure_code=None,
            failure_message=None,
        )
    )


def test_a_snapshot_follows_the_same_rule() -> None:
    partly = plan_snapshot(S, AMOUNT, "USD", _snapshot(300), bound_provider_id="pi_1")
    assert (partly.apply, partly.status, partly.amount_reversed) == (True, S, 300)
    assert partly.note is not None and "amount_reversed 0 -> 300 of 1000" in partly.note
    whole = plan_snapshot(
        S, AMOUNT, "USD", _snapshot(1000), bound_provider_id="pi_1", amount_reversed=300
    )
    assert (whole.apply, whole.status, whole.amount_reversed) == (True, R, 1000)
    disputed = plan_snapshot(S, AMOUNT, "USD", _snapshot(disputed=True), bound_provider_id="pi_1")
    assert (disputed.apply, disputed.status, disputed.amount_reversed) == (True, R, AMOUNT)
    # The same figure again, or a lower one: nothing to do.
    same = plan_snapshot(
        S, AMOUNT, "USD", _snapshot(300), bound_provider_id="pi_1", amount_reversed=300
    )
    assert not same.apply
    lower = plan_snapshot(
        S, AMOUNT, "USD", _snapshot(300), bound_provider_id="pi_1", amount_reversed=600
    )
    assert not lower.apply


def test_a_pending_payment_the_snapshot_shows_partly_refunded_succeeds_with_it() -> None:
    plan = plan_snapshot(PaymentStatus.PENDING, AMOUNT, "USD", _snapshot(300))
    assert (plan.apply, plan.status, plan.amount_reversed) == (True, S, 300)


@pytest.mark.parametrize(
    ("amount_refunded", "disputed"),
    [(0, False), (300, False), (999, False), (1000, False), (300, True)],
)
def test_the_reconciler_sees_what_payment_svc_makes_of_a_snapshot(
    amount_refunded: int, disputed: bool
) -> None:
    intent = parse_intent(
        {
            "id": "pi_1",
            "object": "payment_intent",
            "status": "succeeded",
            "amount": AMOUNT,
            "currency": "usd",
            "metadata": {"payment_id": "pay_1"},
            "latest_charge": {"amount_refunded": amount_refunded, "disputed": disputed},
        }
    )
    # The reconciler's view is in the Stripe package's words; payment-svc reads them by name.
    assert ours(our_view(intent)) is _snapshot(amount_refunded, disputed).status
    expected = R if disputed or amount_refunded == AMOUNT else S
    assert ours(our_view(intent)) is expected
