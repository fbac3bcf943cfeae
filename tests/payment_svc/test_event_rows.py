"""The payment row an event leaves, decided in the domain (domain/inbox.py
row_after, domain/provider_events.py advance) and only assigned by the
store: the ordering of provider states, the binding, the failure, the
dispute's cap live here once (issue 22, part 1)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from payment_svc.domain.inbox import EventTarget, row_after
from payment_svc.domain.provider_events import (
    EventPlan,
    ProviderObservation,
    StateRank,
    advance,
)
from payment_svc.domain.reconciliation import Snapshot, plan_snapshot, snapshot_row
from payment_svc.domain.status import PaymentStatus
from tests.payment_svc.test_refund_events import payment

T = datetime(2026, 1, 1, tzinfo=UTC)
S, F, P = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.PENDING


def test_the_provider_state_moves_forward_never_back() -> None:
    assert advance(None, None, T, StateRank.SETTLED) == (T, 2)
    later = T + timedelta(seconds=1)
    assert advance(T, 2, later, StateRank.IN_PROGRESS) == (later, 1)  # newer: its rank
    assert advance(later, 1, T, StateRank.SETTLED) == (later, 2)  # older: the higher rank
    assert advance(T, 3, T, StateRank.SETTLED) == (T, 3)  # same second: the higher
    assert advance(T, 2, None, StateRank.REVERSED) == (T, 3)  # no time: the time stays
    assert advance(None, None, None, StateRank.SETTLED) == (None, 2)


def obs(**fields: object) -> ProviderObservation:
    base = ProviderObservation(
        provider_payment_id="pi_new",
        metadata_payment_id=None,
        status=F,
        rank=StateRank.SETTLED,
        occurred_at=T,
        failure_code="card_declined",
        failure_message="declined",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def target(status: PaymentStatus = P, bound: str | None = None) -> EventTarget:
    p = replace(payment(status=status), provider_payment_id=bound)
    return EventTarget(p, T - timedelta(seconds=5), 1)


def test_an_applied_failure_binds_records_its_code_and_moves_the_state() -> None:
    row = row_after(target(), obs(), EventPlan(applied=True, touch=True))
    assert row is not None
    assert (row.status, row.provider_payment_id, row.failure_code) == (F, "pi_new", "card_declined")
    assert (row.provider_state_at, row.provider_state_rank) == (T, 2)


def test_a_touch_that_does_not_apply_keeps_the_status_and_the_failure() -> None:
    t = target(S, bound="pi_old")
    row = row_after(t, obs(), EventPlan(applied=False, touch=True))
    assert row is not None
    assert (row.status, row.failure_code, row.provider_payment_id) == (S, None, "pi_old")


def test_nothing_touched_nothing_written() -> None:
    assert row_after(target(), obs(), EventPlan(applied=False, touch=False)) is None


def test_a_dispute_of_a_payment_not_known_to_succeed_writes_its_amounts_only() -> None:
    t = target(P)
    plan = EventPlan(applied=False, touch=False, amount_reversed=400, disputed_added=400)
    row = row_after(t, obs(status=S, rank=StateRank.REVERSED), plan)
    assert row is not None
    assert (row.status, row.amount_reversed, row.amount_disputed) == (P, 400, 400)
    # untouched: no binding, the provider state as it was
    assert (row.provider_payment_id, row.provider_state_at, row.provider_state_rank) == (
        None,
        t.provider_state_at,
        1,
    )
    # capped at the payment's amount
    huge = replace(plan, disputed_added=5000)
    capped = row_after(t, obs(status=S), huge)
    assert capped is not None and capped.amount_disputed == t.payment.amount


def test_a_snapshots_row_keeps_the_providers_time_grows_the_rank_and_binds_once() -> None:
    p = replace(payment(status=PaymentStatus.UNKNOWN), provider_payment_id=None)
    snap = Snapshot(
        found=True,
        status=F,
        provider_payment_id="pi_snap",
        amount=p.amount,
        currency=p.currency,
        amount_reversed=0,
        failure_code="card_declined",
        failure_message="declined",
        provider_status="requires_payment_method",
    )
    plan = plan_snapshot(p.status, p.amount, p.currency, snap)
    row = snapshot_row(p, T, 1, snap, plan)
    assert (row.status, row.provider_payment_id, row.failure_code) == (
        F,
        "pi_snap",
        "card_declined",
    )
    # a snapshot carries no provider time: the newest event's stays
    assert (row.provider_state_at, row.provider_state_rank) == (T, 2)
    # the rank never goes down (an event of a higher rank was applied before)
    assert snapshot_row(p, T, 3, snap, plan).provider_state_rank == 3
    bound = replace(p, provider_payment_id="pi_first")
    assert snapshot_row(bound, None, None, snap, plan).provider_payment_id == "pi_first"
