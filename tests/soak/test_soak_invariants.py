"""The soak's invariants on hand-made books: each one passes on consistent
data and fails, naming the payment, on the violation it exists to catch."""

from __future__ import annotations

from dataclasses import replace

from payments_dev.soak import SoakOptions, plan
from payments_dev.soak_invariants import (
    CrashRecord,
    Intent,
    OurRefund,
    Ours,
    Told,
    at_most_one_charge,
    check_all,
    matches_provider,
    money_matches,
    no_final_regressed,
    nothing_lost,
    reversals_match,
    survived_crash,
)

PAID = Intent("pi_1", "succeeded", 1999, "USD", 1, "pay_1")
DECLINED = Intent("pi_2", "requires_payment_method", 500, "EUR", 0, "pay_2")
PROCESSING = Intent("pi_3", "processing", 700, "GBP", 1, "pay_3")
INTENTS = [PAID, DECLINED, PROCESSING]
OURS = [
    Ours("pay_1", "k1", "SUCCEEDED", 1999, "USD", "pi_1"),
    Ours("pay_2", "k2", "FAILED", 500, "EUR", "pi_2"),
    Ours("pay_3", "k3", "PENDING", 700, "GBP", "pi_3"),
]
TOLD = [
    Told("k1", "pay_1", "PENDING", 0),
    Told("k1", "pay_1", "SUCCEEDED", 1),
    Told("k2", "pay_2", "FAILED", 2),
    Told("k3", "pay_3", "PENDING", 3),
]


def crash(**changes: object) -> CrashRecord:
    record = CrashRecord(
        acknowledged={"pay_1": "SUCCEEDED", "pay_2": "FAILED"},
        delivered_events={"evt_1"},
        found={"pay_1": "SUCCEEDED", "pay_2": "FAILED"},
        found_events={"evt_1"},
        happened=True,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def refunded_at_provider(intent: Intent, amount: int, status: str, re_id: str = "re_1") -> Intent:
    counted = amount if status in ("succeeded", "pending") else 0
    return replace(
        intent,
        amount_refunded=intent.amount_refunded + counted,
        refunds={**intent.refunds, re_id: (status, amount)},
    )


def test_consistent_books_pass_all_seven() -> None:
    verdicts = check_all(INTENTS, OURS, TOLD, crash(), pass_exit=0)
    assert [v.code for v in verdicts] == ["I1", "I2", "I3", "I4", "I5", "I6", "I7"]
    assert all(v.passed for v in verdicts), [v.line() for v in verdicts]
    assert verdicts[0].line().startswith("I1 PASS at most one charge per payment: ")


def test_i1_a_second_charge_fails() -> None:
    twice = Intent("pi_9", "succeeded", 1999, "USD", 1, "pay_1")
    verdict = at_most_one_charge([*INTENTS, twice])
    assert not verdict.passed
    assert verdict.failures == ("pay_1 charged 2 times",)
    assert "FAIL" in verdict.line()


def test_i2_lost_either_way() -> None:
    foreign = Intent("pi_x", "succeeded", 100, "USD", 1, None)
    assert "pi_x" in nothing_lost([*INTENTS, foreign], OURS, TOLD).failures[0]
    verdict = nothing_lost(INTENTS, OURS[1:], TOLD)
    assert not verdict.passed
    lost = "pay_1 (key k1) was told to a caller and does not exist"
    assert any(lost in failure for failure in verdict.failures)
    wrong_key = [Told("k9", "pay_2", "FAILED", 9)]
    assert not nothing_lost(INTENTS, OURS, wrong_key).passed


def test_i3_money_per_currency() -> None:
    assert money_matches(INTENTS, OURS).detail == "USD 1999 (kept 1999)"
    extra = Ours("pay_4", "k4", "SUCCEEDED", 100, "USD", "pi_4")
    verdict = money_matches(INTENTS, [*OURS, extra])
    assert verdict.failures == (
        "USD succeeded ours 2099 != provider 1999",
        "USD kept ours 2099 != provider 1999",
    )
    # A refund at the provider that we never heard of.
    refunded = [refunded_at_provider(PAID, 500, "succeeded"), DECLINED, PROCESSING]
    verdict = money_matches(refunded, OURS)
    assert verdict.failures == ("USD kept ours 1999 != provider 1499",)
    reversed_ours = [replace(OURS[0], amount_reversed=500), *OURS[1:]]
    assert money_matches(refunded, reversed_ours).passed
    # A pending one counts in amount_refunded, not in what was given back.
    pending = [refunded_at_provider(PAID, 500, "pending"), DECLINED, PROCESSING]
    assert money_matches(pending, OURS).passed
    assert not money_matches(pending, reversed_ours).passed


def test_i4_each_payment_against_its_intent() -> None:
    stale = [replace(OURS[0], status="UNKNOWN"), *OURS[1:]]
    assert not matches_provider(INTENTS, stale, 0).passed
    never_learned = [replace(OURS[2], provider_payment_id=None), *OURS[:2]]
    assert not matches_provider(INTENTS, never_learned, 0).passed
    other_amount = [replace(OURS[1], amount=501), OURS[0], OURS[2]]
    assert not matches_provider(INTENTS, other_amount, 0).passed
    disputed = [replace(PAID, disputed=True), DECLINED, PROCESSING]
    verdict = matches_provider(disputed, OURS, 0)
    assert not verdict.passed and "reversed 0" in verdict.failures[0]
    whole = [replace(OURS[0], status="REVERSED", amount_reversed=1999), *OURS[1:]]
    assert matches_provider(disputed, whole, 0).passed
    verdict = matches_provider(INTENTS, OURS, 1)
    assert verdict.failures == ("the reconciliation pass exited 1",)


def test_i5_told_final_states_stay() -> None:
    regressed = [replace(OURS[0], status="FAILED"), *OURS[1:]]
    verdict = no_final_regressed(TOLD, regressed)
    assert verdict.failures == ("pay_1 told SUCCEEDED, now FAILED",)
    # A call sent after SUCCEEDED was received, answered PENDING: a regression.
    later = [*TOLD, Told("k1", "pay_1", "PENDING", order=6, sent=5)]
    assert no_final_regressed(later, OURS).failures == ("pay_1 told SUCCEEDED, later told PENDING",)
    # A twin caller's call sent before it, answered PENDING after: concurrent, not one.
    concurrent = [*TOLD, Told("k1", "pay_1", "PENDING", order=6, sent=0)]
    assert no_final_regressed(concurrent, OURS).passed
    # Two callers told two different final states: one of them was wrong.
    both = [*TOLD, Told("k1", "pay_1", "FAILED", order=6, sent=0)]
    assert no_final_regressed(both, OURS).failures == ("pay_1 told FAILED, now SUCCEEDED",)
    two_payments = [*TOLD, Told("k1", "pay_7", "SUCCEEDED", 6)]
    assert not no_final_regressed(two_payments, OURS).passed
    # REVERSED, then a refund that made it whole failed at the provider:
    # SUCCEEDED again is allowed for that payment (SPEC §4), no other.
    reversed_told = [*TOLD, Told("k1", "pay_1", "REVERSED", 6)]
    assert not no_final_regressed(reversed_told, OURS).passed
    assert no_final_regressed(reversed_told, OURS, undone=["pay_1"]).passed
    assert not no_final_regressed(reversed_told, OURS, undone=["pay_2"]).passed
    # Told PENDING, now anything: not a regression.
    assert no_final_regressed(TOLD, [*OURS[:2], replace(OURS[2], status="FAILED")]).passed


def test_i7_money_given_back_is_the_providers() -> None:
    # The issue-25 story: ours REVERSED on a refund the provider failed.
    failed = [refunded_at_provider(PAID, 1999, "failed"), DECLINED, PROCESSING]
    counted = [replace(OURS[0], status="REVERSED", amount_reversed=1999), *OURS[1:]]
    ours_failed = [OurRefund("rfd_1", "pay_1", "re_1", "FAILED", 1999)]
    verdict = reversals_match(failed, counted, ours_failed)
    assert not verdict.passed and "pay_1 is REVERSED reversed 1999 of 1999" in verdict.failures[0]
    assert reversals_match(failed, OURS, ours_failed).passed
    # Our refund SUCCEEDED where the provider's failed.
    ours_succeeded = [OurRefund("rfd_1", "pay_1", "re_1", "SUCCEEDED", 1999)]
    verdict = reversals_match(failed, OURS, ours_succeeded)
    assert verdict.failures == ("rfd_1 (pay_1) is SUCCEEDED, the provider's re_1 is failed",)
    # Partly refunded: SUCCEEDED with what succeeded, pending aside.
    partly = refunded_at_provider(
        refunded_at_provider(PAID, 500, "succeeded"), 300, "pending", "re_2"
    )
    ours_partly = [replace(OURS[0], amount_reversed=500), *OURS[1:]]
    refunds = [
        OurRefund("rfd_1", "pay_1", "re_1", "SUCCEEDED", 500),
        OurRefund("rfd_2", "pay_1", "re_2", "PENDING", 300),
    ]
    assert reversals_match([partly, DECLINED, PROCESSING], ours_partly, refunds).passed
    wrongly_whole = [replace(OURS[0], status="REVERSED", amount_reversed=500), *OURS[1:]]
    assert not reversals_match([partly, DECLINED, PROCESSING], wrongly_whole, refunds).passed
    # One that never reached the provider must not count as succeeded.
    lost = [OurRefund("rfd_3", "pay_1", None, "SUCCEEDED", 100)]
    assert not reversals_match(INTENTS, OURS, lost).passed
    assert reversals_match(INTENTS, OURS, [replace(lost[0], status="FAILED")]).passed


def test_i6_acknowledged_before_the_crash() -> None:
    assert not survived_crash(crash(found={"pay_2": "FAILED"})).passed
    assert not survived_crash(crash(found={"pay_1": "PENDING", "pay_2": "FAILED"})).passed
    assert not survived_crash(crash(found_events=set())).passed
    assert not survived_crash(crash(happened=False)).passed


def test_the_plan_comes_from_the_seed() -> None:
    options = SoakOptions(payments=300, seed=7)
    assert plan(options) == plan(options)
    other = plan(replace(options, seed=8))
    assert other[0] != plan(options)[0]
    payments, faults = plan(options)
    assert len({p.key for p in payments}) == 300
    assert 0 < faults.kill_first_at < faults.crash_at < faults.kill_second_at < 300
    assert {p.card for p in payments} >= {"pm_card_visa", "pm_card_processing"}
