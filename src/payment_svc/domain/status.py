"""Payment states and the one table of allowed transitions (SPEC §4)."""

from __future__ import annotations

import enum


class PaymentStatus(enum.Enum):
    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERSED = "REVERSED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


class Source(enum.Enum):
    """Who caused a history entry."""

    API = "api"
    WEBHOOK = "webhook"
    RECONCILER = "reconciler"
    # a person, through `payments correct` (domain/corrections.py)
    OPERATOR = "operator"


FINAL_STATES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REVERSED})

_P, _U, _S, _F, _R = (
    PaymentStatus.PENDING,
    PaymentStatus.UNKNOWN,
    PaymentStatus.SUCCEEDED,
    PaymentStatus.FAILED,
    PaymentStatus.REVERSED,
)

# from -> the states any source may move it to. PENDING -> PENDING is the
# provider saying "still processing": recorded in history, status unchanged.
TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    _P: frozenset({_P, _U, _S, _F}),
    _U: frozenset({_P, _S, _F}),
    _S: frozenset({_R}),
    _F: frozenset(),
    _R: frozenset(),
}

# Contradicting a final state is allowed only on an authoritative provider
# fetch (the reconciler), and is always alerted on.
AUTHORITATIVE_ONLY: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    _S: frozenset({_F}),
    _F: frozenset({_S}),
}


class Move(enum.Enum):
    APPLY = "apply"  # the status changes (or PENDING is confirmed)
    NOOP = "noop"  # already there: record nothing new
    REJECT = "reject"  # not allowed: record in history, do not move


def decide(current: PaymentStatus, target: PaymentStatus, *, authoritative: bool) -> Move:
    """What to do when a source says the payment is now `target`."""
    if target in TRANSITIONS[current]:
        return Move.APPLY
    if authoritative and target in AUTHORITATIVE_ONLY.get(current, frozenset()):
        return Move.APPLY
    if current is target:
        return Move.NOOP
    return Move.REJECT


def contradicts_final(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in AUTHORITATIVE_ONLY.get(current, frozenset())
