"""Refunds and disputes in the domain, without I/O (SPEC §3a, §4; issue 25):
amount_reversed is what the refunds and disputes we know one by one took
back, never a floor; only reversals covering the whole amount make a payment
REVERSED; partly reversed it stays SUCCEEDED. A provider's total (a charge's
amount_refunded, a snapshot's refunded or disputed) is evidence, never moves
it. Events go through the adapter's parser (the provider's JSON in) and the
domain's plan; `Held` folds the plans as the event store writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from payment_svc.adapters.stripe_observations import ours, parse_event
from payment_svc.adapters.stripe_observations import snapshot as stripe_snapshot
from payment_svc.domain import reversals
from payment_svc.domain.provider_events import EventPlan, plan_event, rank_of
from payment_svc.domain.reconciliation import ProviderFacts, Snapshot, plan_snapshot
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
    """A payment as the event store keeps it: status, amount_reversed,
    amount_disputed, the newest provider state applied (time and rank), and
    what its refunds that succeeded add up to (another table's, read under
    the payment's lock)."""

    status: PaymentStatus = S
    amount_reversed: int = 0
    amount_disputed: int = 0
    succeeded_refunds: int = 0
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
            succeeded_refunds=self.succeeded_refunds,
            amount_disputed=self.amount_disputed,
        )
        moved = self
        if not plan.touch and plan.disputed_added is not None:
            # As event_store.py: the amounts of a dispute recorded untouched.
            moved = replace(
                self,
                amount_reversed=plan.amount_reversed or self.amount_reversed,
                amount_disputed=min(AMOUNT, self.amount_disputed + plan.disputed_added),
            )
        if plan.touch:
            assert obs.occurred_at is not None and self.state_at is not None
            newer = obs.occurred_at > self.state_at
            # As event_store.py's statement: the planned figure, or unchanged.
            moved = replace(
                self,
                status=(plan.status or obs.status or self.status) if plan.applied else self.status,
                amount_reversed=(
                    self.amount_reversed if plan.amount_reversed is None else plan.amount_reversed
                ),
                amount_disputed=min(AMOUNT, self.amount_disputed + (obs.reversal_added or 0)),
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


@pytest.mark.parametrize("cumulative", [300, 1000])
def test_a_charges_refunded_total_is_evidence_and_moves_nothing(cumulative: int) -> None:
    # Stripe's amount_refunded counts pending refunds too: the refunds
    # themselves (refund.*, the reconciler's listing) move the payment.
    held, plan = Held().apply(refunded(cumulative))
    assert (held.status, held.amount_reversed) == (S, 0)
    assert not plan.applied and plan.amount_reversed is None
    assert plan.note is not None and "evidence" in plan.note


def test_a_refunded_total_never_lowers_what_the_refunds_took_either() -> None:
    held, plan = Held(amount_reversed=600, succeeded_refunds=600, state_rank=3).apply(refunded(300))
    assert (held.status, held.amount_reversed) == (S, 600)
    assert not plan.applied


def test_a_dispute_of_part_leaves_it_succeeded() -> None:
    held = Held().then(disputed(400))
    assert (held.status, held.amount_reversed, held.amount_disputed) == (S, 400, 400)


def test_refunds_that_succeeded_and_a_dispute_covering_all_reverse_it() -> None:
    held = Held(amount_reversed=300, succeeded_refunds=300, state_rank=3).then(disputed(700))
    assert (held.status, held.amount_reversed) == (R, 1000)
    assert [(a, b, applied) for a, b, applied, _ in held.history] == [(S, R, True)]


def test_a_dispute_never_reverses_more_than_the_amount() -> None:
    held = Held(amount_reversed=800, succeeded_refunds=800, state_rank=3).then(disputed(AMOUNT))
    assert (held.status, held.amount_reversed) == (R, AMOUNT)


def test_a_reversal_of_a_payment_not_known_to_have_succeeded_moves_no_status() -> None:
    pending = Held(status=PaymentStatus.PENDING, state_rank=1)
    held, plan = pending.apply(refunded(300))
    assert (held.status, held.amount_reversed) == (PaymentStatus.PENDING, 0)
    assert not plan.applied and not plan.touch
    # A dispute is money taken back all the same: counted, the status and
    # the provider state untouched, until the payment is known to succeed.
    held, plan = pending.apply(disputed(300))
    assert (held.status, held.amount_reversed, held.amount_disputed) == (
        PaymentStatus.PENDING,
        300,
        300,
    )
    assert not plan.applied and not plan.touch
    assert held.state_rank == 1


def test_a_success_whose_disputes_already_cover_it_is_reversed() -> None:
    held = Held(status=PaymentStatus.UNKNOWN, state_rank=1).then(disputed(AMOUNT))
    assert (held.status, held.amount_reversed) == (PaymentStatus.UNKNOWN, AMOUNT)
    after, plan = held.apply(succeeded_event(T0 + 30))
    assert plan.applied and (after.status, after.amount_reversed) == (R, AMOUNT)
    part = Held(status=PaymentStatus.UNKNOWN, state_rank=1).then(disputed(400))
    assert part.apply(succeeded_event(T0 + 30))[0].status is S


def succeeded_event(created: int) -> bytes:
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": AMOUNT,
        "currency": "usd",
        "metadata": {},
    }
    return _event("payment_intent.succeeded", intent, created, f"evt_s_{created}")


def test_more_disputed_of_a_reversed_payment_is_recorded_and_it_stays_reversed() -> None:
    held = Held(status=R, amount_reversed=1000, succeeded_refunds=1000, state_rank=3)
    again = held.then(disputed(700))
    assert (again.status, again.amount_reversed) == (R, 1000)


def test_a_partly_refunded_payment_ranks_as_a_reversal() -> None:
    assert rank_of(S, amount_reversed=300) == rank_of(R)
    assert rank_of(S) < rank_of(R)


def test_the_rule_itself() -> None:
    by = reversals.reversed_by
    assert by(AMOUNT, succeeded_refunds=300, disputed=0) == 300
    assert by(AMOUNT, succeeded_refunds=300, disputed=900) == AMOUNT  # capped
    assert reversals.status_for(S, AMOUNT, 1000) is R
    assert reversals.status_for(S, AMOUNT, 999) is S
    # REVERSED that no longer covers the whole amount (a refund failed after
    # it succeeded) is SUCCEEDED again: the rule's move, no source's word.
    assert reversals.status_for(R, AMOUNT, 0) is S
    assert reversals.status_for(PaymentStatus.FAILED, AMOUNT, AMOUNT) is PaymentStatus.FAILED
    whole = reversals.reversal(S, AMOUNT, succeeded_refunds=1000, disputed=0)
    assert whole.whole
    undone = reversals.reversal(R, AMOUNT, succeeded_refunds=0, disputed=0)
    assert (undone.status, undone.amount_reversed) == (S, 0)
    assert reversals.undone(R, undone, 1000)
    assert reversals.undone(S, reversals.reversal(S, AMOUNT, succeeded_refunds=0, disputed=0), 300)
    assert not reversals.undone(S, whole, 300)


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


def test_a_snapshots_reversed_amount_is_evidence_a_disagreement_a_finding() -> None:
    # The provider says 300 of a payment we know nothing refunded of: the
    # refunds are listed one by one (the reconciler), the total moves nothing.
    partly = plan_snapshot(S, AMOUNT, "USD", _snapshot(300), bound_provider_id="pi_1")
    assert (partly.apply, partly.reversal_differs) == (False, True)
    whole = plan_snapshot(
        S, AMOUNT, "USD", _snapshot(1000), bound_provider_id="pi_1", amount_reversed=300
    )
    assert (whole.apply, whole.reversal_differs) == (False, True)
    # Ours counted a refund the provider then failed: 0 at the provider.
    undone = plan_snapshot(
        R, AMOUNT, "USD", _snapshot(0), bound_provider_id="pi_1", amount_reversed=AMOUNT
    )
    assert (undone.apply, undone.reversal_differs) == (False, True)
    disputed = plan_snapshot(S, AMOUNT, "USD", _snapshot(disputed=True), bound_provider_id="pi_1")
    assert (disputed.apply, disputed.reversal_differs) == (False, True)
    # The same figure: nothing to do, nothing to report.
    same = plan_snapshot(
        S, AMOUNT, "USD", _snapshot(300), bound_provider_id="pi_1", amount_reversed=300
    )
    assert (same.apply, same.reversal_differs) == (False, False)
    reversed_ = plan_snapshot(
        R, AMOUNT, "USD", _snapshot(1000), bound_provider_id="pi_1", amount_reversed=AMOUNT
    )
    assert (reversed_.apply, reversed_.reversal_differs) == (False, False)


def test_a_pending_payment_the_snapshot_shows_partly_refunded_succeeds_with_nothing_reversed() -> (
    None
):
    # Its refunds become ours one by one (the settlement diff lists them).
    plan = plan_snapshot(PaymentStatus.PENDING, AMOUNT, "USD", _snapshot(300))
    assert (plan.apply, plan.status, plan.amount_reversed) == (True, S, 0)
    assert not plan.reversal_differs  # not settled before: nothing to compare yet


def test_an_unknown_payment_whose_refunds_already_cover_it_succeeds_reversed() -> None:
    # Refunds made at the provider while ours was UNKNOWN were recorded and
    # counted; the snapshot's success makes it REVERSED by the rule.
    plan = plan_snapshot(
        PaymentStatus.UNKNOWN, AMOUNT, "USD", _snapshot(AMOUNT), amount_reversed=AMOUNT
    )
    assert (plan.apply, plan.status, plan.contradiction) == (True, R, False)
    failed = plan_snapshot(
        PaymentStatus.FAILED, AMOUNT, "USD", _snapshot(AMOUNT), amount_reversed=AMOUNT
    )
    assert (failed.apply, failed.status, failed.contradiction) == (True, R, True)


@pytest.mark.parametrize(
    ("amount_refunded", "disputed"),
    [(0, False), (300, False), (999, False), (1000, False), (300, True)],
)
def test_the_reconciler_sees_what_payment_svc_makes_of_the_same_reversed_amount(
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
    snap = _snapshot(amount_refunded, disputed)
    assert snap.status is S  # the intent's own status; REVERSED is ours to derive
    # The reconciler's view is in the Stripe package's words; payment-svc
    # reads them by name, and derives REVERSED by the same rule.
    assert ours(our_view(intent)) is reversals.status_for(S, AMOUNT, snap.amount_reversed)
    expected = R if disputed or amount_refunded == AMOUNT else S
    assert ours(our_view(intent)) is expected
