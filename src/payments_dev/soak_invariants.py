"""The soak's six invariants, checked on what was gathered: plain data in,
one verdict per invariant out (no I/O, so each rule is testable on its own).

    provider  GET /_sim/ledger      -> Intent (charges made, status, amount)
    ours      payments table (SQL) -> Ours
    callers   what each was told   -> Told (key, payment id, status, order)
    crash     CrashRecord: acknowledged before the Postgres crash, and what
              the database held of it right after the restart

    I1 at most one charge per payment
    I2 nothing lost either way
    I3 money per currency equals the provider's
    I4 every payment matches the provider after one reconciliation pass
    I5 no final state a caller was told has regressed
    I6 everything acknowledged survived the Postgres crash
    I7 money given back is the provider's: each settled payment's
       amount_reversed is its intent's succeeded refunds plus disputes,
       REVERSED exactly when they cover the amount, and each of our refunds
       has the provider's status
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"SUCCEEDED", "FAILED", "REVERSED"})
# Forward moves of a final state that are not regressions (SPEC §4).
_MAY_FOLLOW = {
    "SUCCEEDED": {"SUCCEEDED", "REVERSED"},
    "FAILED": {"FAILED"},
    "REVERSED": {"REVERSED"},
}
# How many offending ids a verdict names (all are counted).
SHOWN = 5


@dataclass(frozen=True)
class Intent:
    """One row of the provider's ledger."""

    id: str
    status: str
    amount: int
    currency: str  # upper case
    charges: int
    payment_id: str | None  # metadata.payment_id: ours when set
    amount_refunded: int = 0  # Stripe's: pending refunds count too
    disputed: bool = False
    # The intent's refunds: provider refund id -> (status, amount); the
    # status is the provider's word (succeeded, pending, failed)
    refunds: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_ledger(cls, row: Mapping[str, Any]) -> Intent:
        metadata = row.get("metadata") or {}
        return cls(
            id=str(row["id"]),
            status=str(row["status"]),
            amount=int(row["amount"]),
            currency=str(row["currency"]).upper(),
            charges=int(row["charges"]),
            payment_id=metadata.get("payment_id"),
            amount_refunded=int(row.get("amount_refunded") or 0),
            disputed=bool(row.get("disputed")),
            refunds={
                str(r["id"]): (str(r["status"]), int(r["amount"])) for r in row.get("refunds") or []
            },
        )

    def expected_status(self) -> str:
        """Our status for this intent (payments_stripe.status): every
        soak intent is confirmed with a payment method, so requires_payment_method
        means the attempt failed."""
        if self.status == "succeeded":
            return "REVERSED" if self.reversed >= self.amount else "SUCCEEDED"
        if self.status in ("requires_payment_method", "canceled"):
            return "FAILED"
        return "PENDING"

    @property
    def refunded(self) -> int:
        """What the succeeded refunds took back (amount_refunded counts the
        pending ones too: no evidence of money given back)."""
        return sum(amount for status, amount in self.refunds.values() if status == "succeeded")

    @property
    def reversed(self) -> int:
        """What refunds and disputes took back (the soak disputes only
        unrefunded charges: a dispute takes the whole amount)."""
        return self.amount if self.disputed else min(self.amount, self.refunded)


@dataclass(frozen=True)
class Ours:
    """One row of our payments table."""

    payment_id: str  # pay_...
    idempotency_key: str
    status: str
    amount: int
    currency: str
    provider_payment_id: str | None
    amount_reversed: int = 0


@dataclass(frozen=True)
class OurRefund:
    """One row of our refunds table."""

    refund_id: str
    payment_id: str  # pay_...
    provider_refund_id: str | None
    status: str  # PENDING, UNKNOWN, SUCCEEDED, FAILED
    amount: int


@dataclass(frozen=True)
class Told:
    """One answer a caller got: a reply, or ALREADY_EXISTS naming the payment.
    `sent` and `order` are ticks of one clock of the run's calls and answers:
    an answer can only contradict one received before its call was sent
    (concurrent callers of a key may be answered out of order)."""

    key: str
    payment_id: str
    status: str  # SUCCEEDED, PENDING, ... ("" when the answer did not say)
    order: int  # when it was received
    sent: int = -1  # when the call it answers was sent


@dataclass
class CrashRecord:
    """I6: taken just before the immediate stop, and checked just after the start."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # payment id -> status told
    delivered_events: set[str] = field(default_factory=set)  # webhooks answered 2xx
    found: dict[str, str] = field(default_factory=dict)  # payment id -> status after restart
    found_events: set[str] = field(default_factory=set)
    happened: bool = False


@dataclass(frozen=True)
class Verdict:
    code: str
    title: str
    passed: bool
    detail: str
    failures: tuple[str, ...] = ()

    def line(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return f"{self.code} {word} {self.title}: {self.detail}"


def _verdict(code: str, title: str, detail: str, failures: Sequence[str]) -> Verdict:
    if failures:
        named = "; ".join(failures[:SHOWN])
        more = f" (+{len(failures) - SHOWN} more)" if len(failures) > SHOWN else ""
        detail = f"{detail}; {len(failures)} violations: {named}{more}"
    return Verdict(code, title, not failures, detail, tuple(failures))


def _by_payment(intents: Iterable[Intent]) -> dict[str, list[Intent]]:
    found: dict[str, list[Intent]] = defaultdict(list)
    for intent in intents:
        if intent.payment_id is not None:
            found[intent.payment_id].append(intent)
    return found


def at_most_one_charge(intents: Sequence[Intent]) -> Verdict:
    charges = Counter[str]()
    for pid, mine in _by_payment(intents).items():
        charges[pid] = sum(i.charges for i in mine)
    twice = [f"{pid} charged {n} times" for pid, n in sorted(charges.items()) if n > 1]
    detail = f"{sum(charges.values())} charges for {len(charges)} payments at the provider"
    return _verdict("I1", "at most one charge per payment", detail, twice)


def nothing_lost(intents: Sequence[Intent], ours: Sequence[Ours], told: Sequence[Told]) -> Verdict:
    by_id = {p.payment_id: p for p in ours}
    failures = [
        f"intent {i.id} ({i.status}, {i.charges} charges) is not one of our payments"
        + ("" if i.payment_id is None else f" ({i.payment_id})")
        for i in intents
        if i.payment_id is None or i.payment_id not in by_id
    ]
    told_ids: dict[str, str] = {}
    for t in told:
        told_ids.setdefault(t.payment_id, t.key)
    for pid, key in sorted(told_ids.items()):
        payment = by_id.get(pid)
        if payment is None:
            failures.append(f"{pid} (key {key}) was told to a caller and does not exist")
        elif payment.idempotency_key != key:
            failures.append(f"{pid} was told for key {key} but holds {payment.idempotency_key}")
    detail = (
        f"{len(intents)} provider intents, {len(ours)} payments of ours, "
        f"{len(told_ids)} told to callers"
    )
    return _verdict("I2", "nothing lost either way", detail, failures)


def money_matches(intents: Sequence[Intent], ours: Sequence[Ours]) -> Verdict:
    """Per currency: what succeeded, and what was kept of it after reversals."""
    theirs, mine = Counter[str](), Counter[str]()
    theirs_kept, mine_kept = Counter[str](), Counter[str]()
    for i in intents:
        if i.status == "succeeded":
            theirs[i.currency] += i.amount
            theirs_kept[i.currency] += i.amount - i.reversed
    for p in ours:
        if p.status in ("SUCCEEDED", "REVERSED"):
            mine[p.currency] += p.amount
            mine_kept[p.currency] += p.amount - p.amount_reversed
    currencies = sorted(set(theirs) | set(mine))
    failures = [
        f"{c} {what} ours {a[c]} != provider {b[c]}"
        for c in currencies
        for what, a, b in (("succeeded", mine, theirs), ("kept", mine_kept, theirs_kept))
        if a[c] != b[c]
    ]
    detail = ", ".join(f"{c} {mine[c]} (kept {mine_kept[c]})" for c in currencies)
    return _verdict("I3", "money per currency equals the provider's", detail or "none", failures)


def matches_provider(
    intents: Sequence[Intent], ours: Sequence[Ours], pass_exit: int | None
) -> Verdict:
    by_payment = _by_payment(intents)
    failures = []
    if pass_exit != 0:
        failures.append(f"the reconciliation pass exited {pass_exit}")
    matched = 0
    for p in ours:
        mine = by_payment.get(p.payment_id, [])
        intent = next((i for i in mine if i.id == p.provider_payment_id), None)
        if intent is None:
            seen = ", ".join(f"{i.id} {i.status}" for i in mine) or "none"
            failures.append(
                f"{p.payment_id} {p.status} provider id {p.provider_payment_id}: intents {seen}"
            )
            continue
        theirs = (intent.expected_status(), intent.amount, intent.currency, intent.reversed)
        if (p.status, p.amount, p.currency, p.amount_reversed) != theirs:
            failures.append(
                f"{p.payment_id} is {p.status} {p.amount} {p.currency} reversed "
                f"{p.amount_reversed}, should be {' '.join(map(str, theirs[:3]))} reversed "
                f"{intent.reversed} (provider {intent.id} {intent.status})"
            )
            continue
        matched += 1
    detail = f"{matched} of {len(ours)} payments match after one pass"
    return _verdict("I4", "every payment matches the provider after one pass", detail, failures)


def no_final_regressed(
    told: Sequence[Told], ours: Sequence[Ours], undone: Iterable[str] = ()
) -> Verdict:
    """`undone`: payments a refund of which the provider failed after it had
    succeeded: REVERSED may go back to SUCCEEDED (SPEC §4), nothing else."""
    undone = frozenset(undone)
    by_id = {p.payment_id: p for p in ours}

    def may_follow(payment_id: str, status: str) -> set[str]:
        allowed = _MAY_FOLLOW[status]
        if payment_id in undone and status == "REVERSED":
            return {*allowed, "SUCCEEDED"}
        return allowed

    by_key: dict[str, list[Told]] = defaultdict(list)
    for t in sorted(told, key=lambda t: t.order):
        by_key[t.key].append(t)
    failures: list[str] = []
    final_told = 0
    for key, answers in sorted(by_key.items()):
        ids = {t.payment_id for t in answers}
        if len(ids) > 1:
            failures.append(f"key {key} was told of {len(ids)} payments: {sorted(ids)}")
            continue
        finals = [t for t in answers if t.status in FINAL]
        if not finals:
            continue
        final_told += 1
        first = finals[0]
        for t in answers:
            # Only an answer to a call sent after the final one was received.
            if (
                t.sent > first.order
                and t.status
                and t.status not in may_follow(t.payment_id, first.status)
            ):
                failures.append(f"{t.payment_id} told {first.status}, later told {t.status}")
                break
        now = by_id.get(first.payment_id)
        for t in finals:
            if now is not None and now.status not in may_follow(t.payment_id, t.status):
                failures.append(f"{t.payment_id} told {t.status}, now {now.status}")
                break
    detail = f"{final_told} payments told a final state, {len(told)} answers"
    return _verdict("I5", "no final state a caller was told has regressed", detail, failures)


def survived_crash(crash: CrashRecord) -> Verdict:
    title = "everything acknowledged survived the Postgres crash"
    if not crash.happened:
        return _verdict("I6", title, "no crash", ["Postgres was not crash-restarted"])
    failures = []
    for pid, status in sorted(crash.acknowledged.items()):
        now = crash.found.get(pid)
        if now is None:
            failures.append(f"{pid} (told {status}) missing after the restart")
        elif status in FINAL and now not in _MAY_FOLLOW[status]:
            failures.append(f"{pid} told {status}, {now} after the restart")
    failures += [
        f"webhook event {e} acknowledged, not in the inbox after the restart"
        for e in sorted(crash.delivered_events - crash.found_events)
    ]
    detail = (
        f"{len(crash.acknowledged)} payments and {len(crash.delivered_events)} webhook events "
        "acknowledged before the crash"
    )
    return _verdict("I6", title, detail, failures)


_PROVIDER_REFUND_STATUS = {"succeeded": "SUCCEEDED", "pending": "PENDING", "failed": "FAILED"}


def reversals_match(
    intents: Sequence[Intent], ours: Sequence[Ours], refunds: Sequence[OurRefund]
) -> Verdict:
    """I7: amount_reversed and REVERSED follow the provider's refunds that
    succeeded, and disputes; each of our refunds has the provider's status
    (one it never got has none: it must not have counted)."""
    intents_by_id = {i.id: i for i in intents}
    failures = []
    settled = 0
    for p in ours:
        intent = intents_by_id.get(p.provider_payment_id or "")
        if intent is None or p.status not in ("SUCCEEDED", "REVERSED"):
            continue
        settled += 1
        whole = intent.reversed >= p.amount
        if p.amount_reversed != intent.reversed or (p.status == "REVERSED") != whole:
            failures.append(
                f"{p.payment_id} is {p.status} reversed {p.amount_reversed} of {p.amount}; the "
                f"provider's succeeded refunds and disputes took {intent.reversed} "
                f"({intent.id}: refunds {dict(intent.refunds)}, disputed {intent.disputed})"
            )
    by_provider_refund = {rid: status for i in intents for rid, (status, _) in i.refunds.items()}
    checked = 0
    for r in refunds:
        if r.provider_refund_id is None:
            if r.status == "SUCCEEDED":
                failures.append(f"{r.refund_id} SUCCEEDED with no provider refund")
            continue
        theirs = by_provider_refund.get(r.provider_refund_id)
        checked += 1
        if theirs is None:
            failures.append(f"{r.refund_id}: provider refund {r.provider_refund_id} unknown")
        elif _PROVIDER_REFUND_STATUS.get(theirs, theirs) != r.status:
            failures.append(
                f"{r.refund_id} ({r.payment_id}) is {r.status}, the provider's "
                f"{r.provider_refund_id} is {theirs}"
            )
    detail = f"{settled} settled payments, {checked} refunds checked against the provider"
    return _verdict("I7", "money given back is the provider's", detail, failures)


def check_all(
    intents: Sequence[Intent],
    ours: Sequence[Ours],
    told: Sequence[Told],
    crash: CrashRecord,
    pass_exit: int | None,
    refunds: Sequence[OurRefund] = (),
    undone: Iterable[str] = (),
) -> list[Verdict]:
    return [
        at_most_one_charge(intents),
        nothing_lost(intents, ours, told),
        money_matches(intents, ours),
        matches_provider(intents, ours, pass_exit),
        no_final_regressed(told, ours, undone),
        survived_crash(crash),
        reversals_match(intents, ours, refunds),
    ]
