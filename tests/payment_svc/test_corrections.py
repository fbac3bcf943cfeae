"""An operator's correction, decided in the domain (domain/corrections.py):
the payment recomputed from its refunds and disputes, only when the
provider's books agree with the result."""

from __future__ import annotations

from dataclasses import replace

import pytest

from payment_svc.domain.corrections import ProviderReversal, plan_correction
from payment_svc.domain.errors import FailedPrecondition, ProviderBooksDisagree
from payment_svc.domain.status import PaymentStatus
from tests.payment_svc.test_refund_events import payment

S, R = PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED
NOTHING = ProviderReversal(refunded=0, disputed=False)


def test_a_payment_left_reversed_on_a_failed_refund_is_succeeded_again() -> None:
    wrong = payment(status=R, reversed_=1000)  # the floor of issue 25
    plan = plan_correction(wrong, 0, NOTHING, "refund re_1 failed at the provider")
    assert (plan.status, plan.amount_reversed, plan.changes) == (S, 0, True)
    assert "refund re_1 failed at the provider" in plan.note
    assert "amount_reversed 1000 -> 0 of 1000" in plan.note


def test_a_partial_one_keeps_what_its_succeeded_refunds_and_disputes_took() -> None:
    wrong = replace(payment(status=R, reversed_=1000), amount_disputed=200)
    plan = plan_correction(wrong, 300, ProviderReversal(300, disputed=True), "ticket 42")
    assert (plan.status, plan.amount_reversed) == (S, 500)


def test_books_already_right_change_nothing() -> None:
    right = payment(status=S, reversed_=300)
    plan = plan_correction(right, 300, ProviderReversal(300, False), "check")
    assert not plan.changes


@pytest.mark.parametrize(
    "provider",
    [
        ProviderReversal(refunded=1000, disputed=False),  # a refund we do not know
        ProviderReversal(refunded=0, disputed=True),  # a dispute we do not know
    ],
)
def test_the_providers_books_disagreeing_refuse_it(provider: ProviderReversal) -> None:
    wrong = payment(status=R, reversed_=1000)
    with pytest.raises(ProviderBooksDisagree) as exc:
        plan_correction(wrong, 0, provider, "fix")
    assert exc.value.reason == "PROVIDER_BOOKS_DISAGREE"
    assert (exc.value.ours, exc.value.provider_refunded) == (0, provider.refunded)


def test_a_payment_never_charged_through_us_has_nothing_to_compare() -> None:
    with pytest.raises(FailedPrecondition):
        plan_correction(replace(payment(), provider_payment_id=None), 0, NOTHING, "fix")
