"""The rule that binds a payment to its provider payment, without I/O: once
bound, never rebound; another provider payment carrying our id is a possible
double charge, never applied."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payment_svc.domain.binding import Binding, bind, may_redrive
from payment_svc.domain.provider_events import ProviderObservation, StateRank, plan_event
from payment_svc.domain.reconciliation import Snapshot, plan_snapshot
from payment_svc.domain.status import PaymentStatus

P, U, S = PaymentStatus.PENDING, PaymentStatus.UNKNOWN, PaymentStatus.SUCCEEDED
AT = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("bound", "seen", "expected"),
    [
        (None, None, Binding.NOTHING),
        (None, "pi_A", Binding.BIND),
        ("pi_A", None, Binding.SAME),
        ("pi_A", "pi_A", Binding.SAME),
        ("pi_A", "pi_B", Binding.DUPLICATE),
        ("", "pi_B", Binding.BIND),  # the wire's "none"
    ],
)
def test_the_binding_table(bound: str | None, seen: str | None, expected: Binding) -> None:
    assert bind(bound, seen) is expected
    assert bind(bound, seen).may_apply is (expected is not Binding.DUPLICATE)


def test_only_a_payment_without_a_provider_id_may_be_redriven() -> None:
    assert may_redrive(None)
    assert may_redrive("")
    assert not may_redrive("pi_A")


def observation(provider_id: str | None, status: PaymentStatus | None = S) -> ProviderObservation:
    return ProviderObservation(
        provider_payment_id=provider_id,
        metadata_payment_id="pay_" + "0" * 32,
        status=status,
        rank=StateRank.SETTLED,
        occurred_at=AT,
        provider_status="succeeded",
        amount=1999,
        currency="usd",
    )


def event(bound: str | None, obs: ProviderObservation) -> tuple[bool, bool, bool, str | None]:
    plan = plan_event(P, None, None, obs, amount=1999, currency="USD", bound_provider_id=bound)
    return plan.applied, plan.touch, plan.duplicate, plan.note


def test_an_event_of_another_provider_payment_is_a_duplicate_never_applied() -> None:
    applied, touch, duplicate, note = event("pi_A", observation("pi_B"))
    assert (applied, touch, duplicate) == (False, False, True)
    assert note is not None
    assert "pi_B" in note
    assert "double charge" in note


def test_an_event_of_the_bound_or_of_a_first_provider_payment_applies() -> None:
    assert event("pi_A", observation("pi_A"))[:3] == (True, True, False)
    assert event(None, observation("pi_A"))[:3] == (True, True, False)
    # An event naming no intent (matched by metadata only) is about the bound one.
    assert event("pi_A", observation(None))[:3] == (True, True, False)


def test_an_event_type_not_acted_on_is_never_a_duplicate() -> None:
    # Unknown types carry other objects' ids (refunds, customers).
    assert event("pi_A", observation("re_1", status=None))[:3] == (False, False, False)


def snapshot(provider_id: str) -> Snapshot:
    return Snapshot(
        found=True,
        status=S,
        provider_payment_id=provider_id,
        amount=1999,
        currency="usd",
        amount_reversed=0,
        failure_code=None,
        failure_message=None,
        provider_status="succeeded",
    )


def test_a_snapshot_of_another_provider_payment_is_a_duplicate_never_applied() -> None:
    plan = plan_snapshot(U, 1999, "USD", snapshot("pi_B"), bound_provider_id="pi_A")
    assert (plan.apply, plan.duplicate, plan.contradiction, plan.mismatch) == (
        False,
        True,
        False,
        False,
    )
    # Even the authoritative source, even against a final state.
    plan = plan_snapshot(S, 1999, "USD", snapshot("pi_B"), bound_provider_id="pi_A")
    assert (plan.apply, plan.duplicate) == (False, True)


def test_a_snapshot_of_the_bound_or_of_a_first_provider_payment_applies() -> None:
    assert plan_snapshot(U, 1999, "USD", snapshot("pi_A"), bound_provider_id="pi_A").apply
    assert plan_snapshot(U, 1999, "USD", snapshot("pi_A"), bound_provider_id=None).apply
