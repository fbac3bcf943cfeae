"""Refunds as the simulated provider keeps them: statuses, Stripe's JSON, the book.

Pure: no I/O.

    created ──► succeeded                      (default: at once)
       └─────► pending ──► succeeded           (refund_pending_rate; settle)
                      └──► failed              (settle "failed"; pm_card_refundFail)

A refund that is pending or succeeded counts in its charge's `amount_refunded`,
as Stripe counts every refund that has not failed; one that fails gives its
amount back to what can be refunded.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from provider_sim.intents import JsonObject
from provider_sim.listing import CreatedRange, page_newest_first

REFUND_REASONS: Final = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
# Stripe's `failure_reason` values of a failed refund.
REFUND_FAILURE_REASONS: Final = frozenset(
    {
        "charge_for_pending_refund_disputed",
        "declined",
        "expired_or_canceled_card",
        "insufficient_funds",
        "lost_or_stolen_card",
        "merchant_request",
        "unknown",
    }
)
# What a refund of pm_card_refundFail fails with (as on Stripe's test card), and
# any other refund settled as failed without a reason.
CARD_REFUND_FAILURE: Final = "expired_or_canceled_card"
DEFAULT_REFUND_FAILURE: Final = "declined"


class RefundStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def counts(self) -> bool:
        """Whether a refund in this status takes from what is left to refund."""
        return self in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


@dataclass(slots=True, eq=False)
class Refund:
    id: str
    amount: int
    charge: str
    payment_intent: str
    currency: str
    created: int
    reason: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    # Books of earlier runs have no status: their refunds all succeeded at once.
    status: RefundStatus = RefundStatus.SUCCEEDED
    failure_reason: str | None = None
    # The Idempotency-Key of the request that made it (None: made by the provider).
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        self.status = RefundStatus(self.status)  # a plain string when loaded from disk

    def to_json(self) -> JsonObject:
        """The refund as Stripe's API returns it (a fresh snapshot); `failure_reason`
        only once it failed, as Stripe shows it."""
        body: JsonObject = {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": None,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": self.status.value,
            "transfer_reversal": None,
        }
        if self.status is RefundStatus.FAILED:
            body["failure_balance_transaction"] = None
            body["failure_reason"] = self.failure_reason
        return body

    def to_ledger_json(self) -> JsonObject:
        """A refund in its intent's row of `GET /_sim/ledger` (a control API contract)."""
        return {
            "id": self.id,
            "amount": self.amount,
            "status": self.status.value,
            "failure_reason": self.failure_reason,
            "reason": self.reason,
            "metadata": dict(self.metadata),
            "idempotency_key": self.idempotency_key,
            "created": self.created,
        }


class RefundBook:
    """Every refund by id, in creation order, and each intent's refunds."""

    def __init__(self) -> None:
        self._by_id: dict[str, Refund] = {}
        self._ordered: list[Refund] = []
        self._positions: dict[str, int] = {}
        self._by_intent: dict[str, list[Refund]] = {}

    def restore(self, refunds: Iterable[Refund]) -> None:
        """Refunds of a previous run, oldest first."""
        for refund in refunds:
            self.add(refund)

    def add(self, refund: Refund) -> None:
        self._by_id[refund.id] = refund
        self._positions[refund.id] = len(self._ordered)
        self._ordered.append(refund)
        self._by_intent.setdefault(refund.payment_intent, []).append(refund)

    def get(self, refund_id: str) -> Refund | None:
        return self._by_id.get(refund_id)

    def all(self) -> list[Refund]:
        """Every refund, in creation order."""
        return list(self._ordered)

    def of_intent(self, intent_id: str) -> list[Refund]:
        """An intent's refunds, oldest first."""
        return list(self._by_intent.get(intent_id, ()))

    def page(
        self,
        window: CreatedRange,
        *,
        limit: int,
        intent_id: str | None = None,
        starting_after: Refund | None = None,
        ending_before: Refund | None = None,
    ) -> tuple[list[Refund], bool]:
        """A page of refunds newest first (of one intent, or all), as Stripe lists them.
        A cursor refund must be among those listed (else ValueError)."""
        if intent_id is None:
            items: list[Refund] = self._ordered
        else:
            items = self._by_intent.get(intent_id, [])
        before = None if starting_after is None else self._position(items, starting_after)
        after = None if ending_before is None else self._position(items, ending_before)
        return page_newest_first(
            items, created=_created, window=window, limit=limit, before=before, after=after
        )

    def _position(self, items: list[Refund], refund: Refund) -> int:
        if items is self._ordered:
            return self._positions[refund.id]
        return items.index(refund)  # one intent's refunds: a handful


def _created(refund: Refund) -> int:
    return refund.created
