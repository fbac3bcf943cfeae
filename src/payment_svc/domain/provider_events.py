"""What a provider event says about a payment, and the rule that orders events.

Events arrive late, twice and out of order. Each carries the provider's time
(`created`, whole seconds at Stripe) and the state it reports, which has a
rank: still in progress (1) < settled (2) < reversal (3). A refund or a
dispute ranks as a reversal whether or not it covers the whole amount
(domain/reversals.py decides what it does to the payment). An event is stale
when it happened before the newest provider state already applied, or in the
same second with a lower rank: it is kept in the history but does not move
the payment. An event of a higher rank than the state applied is never stale
for its time alone: a refund or a dispute created within the same second as
the success it reverses (the provider's times are whole seconds, and clocks
differ) must not be dropped. Going backwards is what the transition table
forbids, not the clock. Only the provider's times are compared: a snapshot
(the reconciler's fetch) carries none and records none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from payment_svc.domain import reversals
from payment_svc.domain.binding import Binding, bind, duplicate_note
from payment_svc.domain.status import PaymentStatus

if TYPE_CHECKING:
    from payment_svc.domain.refund_events import ProviderRefundFact


class StateRank(enum.IntEnum):
    IN_PROGRESS = 1
    SETTLED = 2
    REVERSED = 3


def rank_of(status: PaymentStatus, *, amount_reversed: int = 0) -> StateRank:
    """The rank of a state; a succeeded payment partly reversed already ranks
    as a reversal (so an older event of a lower rank stays stale)."""
    if status is PaymentStatus.REVERSED or (
        status is PaymentStatus.SUCCEEDED and amount_reversed > 0
    ):
        return StateRank.REVERSED
    if status.is_final:
        return StateRank.SETTLED
    return StateRank.IN_PROGRESS


@dataclass(frozen=True)
class ProviderObservation:
    """One event, in our terms (the adapter maps the provider's shapes)."""

    provider_payment_id: str | None
    metadata_payment_id: str | None
    # None: an event type we do not act on. A refund or a dispute says
    # SUCCEEDED (only a succeeded charge has them), with `reversal` set: how
    # much it reverses decides whether the payment becomes REVERSED.
    status: PaymentStatus | None
    rank: StateRank
    occurred_at: datetime | None
    provider_status: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    # A charge.refunded that does not list its refunds reports the charge's
    # cumulative refunded amount (evidence only: domain/reversals.py); a
    # dispute reports its own amount, added once (the inbox applies each
    # event once), capped at the payment's amount.
    amount_reversed: int | None = None
    reversal_added: int | None = None
    reversal: bool = False
    # What the provider says was charged (payment-intent events), to compare.
    amount: int | None = None
    currency: str | None = None
    # An event about refunds (refund.*, or a charge.refunded listing its
    # refunds): the refunds it shows move our refunds, and through them the
    # payment (domain/refund_events.py), instead of the fields above.
    refund_event: bool = False
    refunds: tuple[ProviderRefundFact, ...] = ()
    # The event lists a charge's refunds (charge.refunded): a refund it shows
    # as we have it already adds no history entry of its own.
    refund_listing: bool = False


def is_stale(
    occurred_at: datetime | None,
    rank: StateRank,
    state_at: datetime | None,
    state_rank: int | None,
) -> bool:
    if state_rank is not None and rank > state_rank:
        return False
    if occurred_at is None or state_at is None:
        return False
    if occurred_at < state_at:
        return True
    return occurred_at == state_at and state_rank is not None and rank < state_rank


def advance(
    state_at: datetime | None,
    state_rank: int | None,
    occurred_at: datetime | None,
    rank: StateRank,
) -> tuple[datetime | None, int | None]:
    """The newest provider state applied, once an event touched it: its time
    never goes back; its rank is the event's when the event is newer (or
    nothing was applied before), else the higher of the two."""
    if state_at is None or (occurred_at is not None and occurred_at > state_at):
        new_rank = int(rank)
    else:
        new_rank = max(state_rank or 0, int(rank))
    if occurred_at is None:
        return state_at, new_rank
    return (occurred_at if state_at is None else max(state_at, occurred_at)), new_rank


@dataclass(frozen=True)
class EventPlan:
    """What one event does to one payment. `touch` moves the recorded
    provider state forward (and the status, when `applied`)."""

    applied: bool
    touch: bool
    note: str | None = None
    # The provider's amount or currency differs from ours: recorded as a
    # discrepancy, never applied.
    mismatch: bool = False
    # The event is about another provider payment than the one the payment is
    # bound to (domain/binding.py): DUPLICATE_PROVIDER_PAYMENT, never applied.
    duplicate: bool = False
    # What the payment becomes when `applied` (None: the event's status), and
    # its new amount_reversed when a reversal changed it (None: unchanged).
    status: PaymentStatus | None = None
    amount_reversed: int | None = None
    # A dispute's own amount, added to amount_disputed (whatever the status:
    # a dispute of a payment not known to have succeeded yet counts once it
    # does).
    disputed_added: int | None = None


def plan_event(
    current: PaymentStatus,
    state_at: datetime | None,
    state_rank: int | None,
    obs: ProviderObservation,
    *,
    amount: int,
    currency: str,
    authoritative: bool = False,
    bound_provider_id: str | None = None,
    amount_reversed: int = 0,
    succeeded_refunds: int = 0,
    amount_disputed: int = 0,
) -> EventPlan:
    """`amount_reversed`, `succeeded_refunds`, `amount_disputed`: the
    payment's, read under its lock (a dispute's plan derives amount_reversed
    from them: domain/reversals.py)."""
    from payment_svc.domain.status import Move, decide

    if obs.status is None:
        return EventPlan(applied=False, touch=False, note="event type not acted on")
    if bind(bound_provider_id, obs.provider_payment_id) is Binding.DUPLICATE:
        return EventPlan(
            applied=False,
            touch=False,
            duplicate=True,
            note=duplicate_note(bound_provider_id, obs.provider_payment_id),
        )
    if obs.amount is not None and (
        obs.amount != amount or (obs.currency or "").upper() != currency
    ):
        return EventPlan(
            applied=False,
            touch=False,
            mismatch=True,
            note=f"provider has {obs.amount} {(obs.currency or '').upper()}: not applied",
        )
    if is_stale(obs.occurred_at, obs.rank, state_at, state_rank):
        return EventPlan(
            applied=False, touch=False, note="older than the provider state already applied"
        )
    if obs.reversal:
        return _plan_reversal(
            current,
            amount,
            amount_reversed,
            obs,
            succeeded_refunds=succeeded_refunds,
            amount_disputed=amount_disputed,
        )
    move = decide(current, obs.status, authoritative=authoritative)
    if move is Move.APPLY:
        # A success of a payment whose refunds or disputes already cover it
        # (recorded before it was known to have succeeded) is REVERSED.
        return EventPlan(
            applied=True,
            touch=True,
            status=reversals.status_for(obs.status, amount, amount_reversed),
        )
    if move is Move.NOOP:
        return EventPlan(applied=False, touch=True, note=f"already {current.value}")
    return EventPlan(
        applied=False,
        touch=False,
        note=f"{current.value} -> {obs.status.value} not allowed from this source",
    )


def _plan_reversal(
    current: PaymentStatus,
    amount: int,
    amount_reversed: int,
    obs: ProviderObservation,
    *,
    succeeded_refunds: int,
    amount_disputed: int,
) -> EventPlan:
    """A dispute or a charge's refunded total: only of a succeeded payment
    (one not known to have succeeded yet is left to the success's event or
    the reconciler). A dispute's amount joins amount_disputed, and
    amount_reversed is derived again (domain/reversals.py): REVERSED when
    whole, else SUCCEEDED with the new amount_reversed (a history entry all
    the same). A refunded total moves nothing: it is evidence (the refunds
    it counts move the payment one by one)."""
    settled = current in (PaymentStatus.SUCCEEDED, PaymentStatus.REVERSED)
    if not settled and not obs.reversal_added:
        return EventPlan(
            applied=False,
            touch=False,
            note=f"{current.value}: a refund or a dispute reverses only a SUCCEEDED payment",
        )
    if not settled:
        # Money the provider took back all the same: counted now, it makes
        # the payment REVERSED when it succeeds (status_for on that path).
        disputed = min(amount, amount_disputed + (obs.reversal_added or 0))
        counted = reversals.reversed_by(
            amount, succeeded_refunds=succeeded_refunds, disputed=disputed
        )
        return EventPlan(
            applied=False,
            touch=False,
            note=(
                f"{current.value}: dispute recorded, "
                + reversals.note(amount_reversed, counted, amount)
            ),
            amount_reversed=counted,
            disputed_added=obs.reversal_added,
        )
    if not obs.reversal_added:
        return EventPlan(
            applied=False,
            touch=True,
            note=f"provider counts {obs.amount_reversed or 0} refunded: evidence only",
            status=current,
        )
    after = reversals.reversal(
        current,
        amount,
        succeeded_refunds=succeeded_refunds,
        disputed=min(amount, amount_disputed + obs.reversal_added),
    )
    if after.amount_reversed == amount_reversed:
        return EventPlan(
            applied=False,
            touch=True,
            note=f"already {current.value}, amount_reversed {amount_reversed} of {amount}",
            status=current,
            disputed_added=obs.reversal_added,
        )
    return EventPlan(
        applied=True,
        touch=True,
        note=reversals.note(amount_reversed, after.amount_reversed, amount),
        # REVERSED is final: more reversed of it (a dispute after refunds) is recorded
        status=current if current is PaymentStatus.REVERSED else after.status,
        amount_reversed=after.amount_reversed,
        disputed_added=obs.reversal_added,
    )
