"""The provider's books, part one: payment intents, their charges, the events emitted.

Pure and synchronous (no I/O, no awaits), so one call is atomic on the event loop.
ledger.py builds the whole ledger on this core (refunds and disputes).

    LedgerCore
      ├─ intents in creation order; by id, idempotency key, metadata['payment_id'], charge id
      ├─ refunds (refunds.py's RefundBook) and disputes by id, kept for ledger.py
      ├─ events: append-only Stripe event objects, one per state change (+ index by id)
      └─ subscribers: callbacks told of each event as it is appended

The webhook deliverer subscribes with `ledger.subscribe(deliverer.enqueue)`.
Callbacks run synchronously inside the state change and must not raise.
A journal (state.py, when the books are kept on disk) is told of every object
added or changed, and `restore()` takes back the books of a previous run.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from provider_sim.charges import Dispute
from provider_sim.events import EventListQuery, EventType, event_object
from provider_sim.intents import (
    GENERIC_DECLINE,
    TEST_PAYMENT_METHODS,
    TRANSITIONS,
    CardBehaviour,
    IntentStatus,
    JsonObject,
    PaymentIntent,
)
from provider_sim.listing import CreatedRange, page_newest_first
from provider_sim.refunds import Refund, RefundBook
from provider_sim.refusals import (
    ChargeNotFound,
    EventNotFound,
    IntentNotFound,
    InvalidTransition,
    UnknownPaymentMethod,
)

EventCallback = Callable[[JsonObject], None]


class LedgerJournal(Protocol):
    """Told of each object added or changed, synchronously; must not raise."""

    def intent(self, intent: PaymentIntent) -> None: ...
    def refund(self, refund: Refund) -> None: ...
    def dispute(self, dispute: Dispute) -> None: ...
    def event(self, event: JsonObject) -> None: ...


# The event an intent emits when it enters a status (statuses not listed emit none).
_EVENT_TYPES: Final[dict[IntentStatus, EventType]] = {
    IntentStatus.PROCESSING: EventType.PAYMENT_INTENT_PROCESSING,
    IntentStatus.SUCCEEDED: EventType.PAYMENT_INTENT_SUCCEEDED,
    IntentStatus.REQUIRES_PAYMENT_METHOD: EventType.PAYMENT_INTENT_PAYMENT_FAILED,
    IntentStatus.CANCELED: EventType.PAYMENT_INTENT_CANCELED,
}


class SettleOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CreateIntent:
    amount: int
    currency: str
    payment_method: str | None
    confirm: bool
    description: str | None
    metadata: Mapping[str, str]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CreateRefund:
    """A refund of an intent's charge, named by the intent, the charge, or both."""

    payment_intent: str | None = None
    charge: str | None = None
    # None: whatever is left to refund.
    amount: int | None = None
    reason: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


_ids = random.Random()


def random_id(prefix: str) -> str:
    # Unique, not secret: the OS's randomness (secrets) costs a syscall per
    # id, and the simulator makes several per request.
    return f"{prefix}_{_ids.getrandbits(96):024x}"


class LedgerCore:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = random_id,
        journal: LedgerJournal | None = None,
    ) -> None:
        self._clock = clock
        self._new_id = new_id
        self._journal = journal
        self._subscribers: list[EventCallback] = []
        self._seq = 0
        self.clear()

    def clear(self) -> None:
        """Forget intents and events; subscribers stay subscribed."""
        self._intents: dict[str, PaymentIntent] = {}
        self._ordered: list[PaymentIntent] = []
        self._positions: dict[str, int] = {}
        self._by_charge: dict[str, PaymentIntent] = {}
        self._refunds = RefundBook()
        self._disputes: dict[str, Dispute] = {}
        self._by_idempotency_key: dict[str, list[PaymentIntent]] = {}
        self._by_payment_id: dict[str, list[PaymentIntent]] = {}
        self.events: list[JsonObject] = []
        self._event_index: dict[str, int] = {}

    def restore(
        self,
        intents: Iterable[PaymentIntent],
        refunds: Iterable[Refund],
        disputes: Iterable[Dispute],
        events: Iterable[JsonObject],
    ) -> None:
        """Take back the books of a previous run (intents in creation order, events
        oldest first); subscribers are not told: these events were told before."""
        self.clear()
        for intent in intents:
            self._index(intent)
            if intent.latest_charge is not None:
                self._by_charge[intent.latest_charge] = intent
            self._seq = max(self._seq, intent.seq)
        self._refunds.restore(refunds)
        self._disputes = {dispute.id: dispute for dispute in disputes}
        for event in events:
            self._event_index[event["id"]] = len(self.events)
            self.events.append(event)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for every event appended from now on; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def create(self, command: CreateIntent) -> PaymentIntent:
        card = None
        if command.payment_method is not None:
            card = TEST_PAYMENT_METHODS.get(command.payment_method)
            if card is None:
                raise UnknownPaymentMethod(command.payment_method)
        intent = self._add(
            amount=command.amount,
            currency=command.currency,
            status=(
                IntentStatus.REQUIRES_PAYMENT_METHOD
                if card is None
                else IntentStatus.REQUIRES_CONFIRMATION
            ),
            payment_method=command.payment_method,
            description=command.description,
            metadata=dict(command.metadata),
            idempotency_key=command.idempotency_key,
        )
        if not command.confirm or card is None:
            return intent
        key = command.idempotency_key
        if card.behaviour is CardBehaviour.SUCCEED:
            self._charge(intent)
            intent.amount_received = intent.amount
            self._move(intent, IntentStatus.SUCCEEDED, "confirm", key)
        elif card.behaviour is CardBehaviour.PROCESS:
            self._charge(intent)
            self._move(intent, IntentStatus.PROCESSING, "confirm", key)
        else:
            intent.last_payment_error = card.error or GENERIC_DECLINE
            self._move(intent, IntentStatus.REQUIRES_PAYMENT_METHOD, "confirm", key)
        return intent

    def settle(self, intent_id: str, outcome: SettleOutcome) -> PaymentIntent:
        """Finish a `processing` intent the way the card network eventually would."""
        intent = self.get(intent_id)
        if intent.status is not IntentStatus.PROCESSING:
            raise InvalidTransition(intent, IntentStatus.SUCCEEDED, "settle")
        if outcome is SettleOutcome.SUCCEEDED:
            intent.amount_received = intent.amount
            self._move(intent, IntentStatus.SUCCEEDED, "settle", None)
        else:
            # The pending charge failed: no money moved after all.
            intent.charges = 0
            intent.last_payment_error = GENERIC_DECLINE
            self._move(intent, IntentStatus.REQUIRES_PAYMENT_METHOD, "settle", None)
        return intent

    def cancel(
        self, intent_id: str, reason: str | None, *, by_provider: bool = False
    ) -> PaymentIntent:
        """Cancel through the API, or (`by_provider`) as the provider does on its own,
        which also voids the pending charge of a `processing` intent."""
        intent = self.get(intent_id)
        allowed = IntentStatus.CANCELED in TRANSITIONS[intent.status]
        if not allowed or (intent.status is IntentStatus.PROCESSING and not by_provider):
            raise InvalidTransition(intent, IntentStatus.CANCELED, "cancel")
        if intent.status is IntentStatus.PROCESSING:
            intent.charges = 0
        intent.canceled_at = int(self._clock())
        intent.cancellation_reason = reason
        self._move(intent, IntentStatus.CANCELED, "cancel", None)
        return intent

    def record_unrecorded_charge(self, amount: int, currency: str) -> PaymentIntent:
        """A succeeded charge nobody asked for through the API (for reconciliation tests)."""
        intent = self._add(
            amount=amount,
            currency=currency,
            status=IntentStatus.REQUIRES_CONFIRMATION,
            payment_method="pm_card_visa",
            description=None,
            metadata={},
            idempotency_key=None,
        )
        self._charge(intent)
        intent.amount_received = amount
        self._move(intent, IntentStatus.SUCCEEDED, "confirm", None)
        return intent

    def get(self, intent_id: str) -> PaymentIntent:
        intent = self._intents.get(intent_id)
        if intent is None:
            raise IntentNotFound(intent_id)
        return intent

    def by_charge(self, charge_id: str) -> PaymentIntent:
        intent = self._by_charge.get(charge_id)
        if intent is None:
            raise ChargeNotFound(charge_id)
        return intent

    def intents_page(
        self,
        window: CreatedRange,
        *,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[PaymentIntent], bool]:
        """A page of intents newest first, as `GET /v1/payment_intents` lists them."""
        before = None if starting_after is None else self._intent_position(starting_after)
        after = None if ending_before is None else self._intent_position(ending_before)
        return page_newest_first(
            self._ordered,
            created=_created_of_intent,
            window=window,
            limit=limit,
            before=before,
            after=after,
        )

    def event(self, event_id: str) -> JsonObject:
        return self.events[self._event_position(event_id)]

    def events_page(
        self,
        query: EventListQuery,
        *,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[JsonObject], bool]:
        """A page of events newest first, as `GET /v1/events` lists them, and `has_more`."""
        before = None if starting_after is None else self._event_position(starting_after)
        after = None if ending_before is None else self._event_position(ending_before)
        return page_newest_first(
            self.events,
            created=_created_of_event,
            window=query.created,
            limit=query.limit,
            matches=query.matches_type,
            before=before,
            after=after,
        )

    def intents(
        self, *, idempotency_key: str | None = None, payment_id: str | None = None
    ) -> list[PaymentIntent]:
        """Intents in creation order, optionally narrowed through the indexes."""
        if idempotency_key is not None:
            found = self._by_idempotency_key.get(idempotency_key, [])
            if payment_id is not None:
                return [i for i in found if i.payment_id == payment_id]
            return list(found)
        if payment_id is not None:
            return list(self._by_payment_id.get(payment_id, []))
        return list(self._intents.values())

    def newest_first(self, *, payment_id: str | None = None) -> Iterator[PaymentIntent]:
        if payment_id is not None:
            return reversed(self._by_payment_id.get(payment_id, []))
        return reversed(self._intents.values())

    def _add(
        self,
        *,
        amount: int,
        currency: str,
        status: IntentStatus,
        payment_method: str | None,
        description: str | None,
        metadata: dict[str, str],
        idempotency_key: str | None,
    ) -> PaymentIntent:
        self._seq += 1
        intent = PaymentIntent(
            id=self._new_id("pi"),
            seq=self._seq,
            amount=amount,
            currency=currency,
            status=status,
            payment_method=payment_method,
            description=description,
            metadata=metadata,
            created=int(self._clock()),
            idempotency_key=idempotency_key,
        )
        self._index(intent)
        if self._journal is not None:
            self._journal.intent(intent)
        return intent

    def _index(self, intent: PaymentIntent) -> None:
        self._intents[intent.id] = intent
        self._positions[intent.id] = len(self._ordered)
        self._ordered.append(intent)
        if intent.idempotency_key is not None:
            self._by_idempotency_key.setdefault(intent.idempotency_key, []).append(intent)
        payment_id = intent.metadata.get("payment_id")
        if payment_id is not None:
            self._by_payment_id.setdefault(payment_id, []).append(intent)

    def _charge(self, intent: PaymentIntent) -> None:
        intent.latest_charge = self._new_id("ch")
        intent.charges += 1
        self._by_charge[intent.latest_charge] = intent

    def _move(
        self, intent: PaymentIntent, target: IntentStatus, action: str, request_key: str | None
    ) -> None:
        if target not in TRANSITIONS[intent.status]:
            raise InvalidTransition(intent, target, action)
        intent.status = target
        if self._journal is not None:
            self._journal.intent(intent)
        event_type = _EVENT_TYPES.get(target)
        if event_type is not None:
            self._emit(event_type, intent.to_json(), request_key)

    def _emit(self, event_type: EventType, obj: JsonObject, request_key: str | None) -> None:
        event = event_object(self._new_id("evt"), event_type, int(self._clock()), obj, request_key)
        self._event_index[event["id"]] = len(self.events)
        self.events.append(event)
        if self._journal is not None:
            self._journal.event(event)
        for callback in self._subscribers:
            callback(event)

    def _intent_position(self, intent_id: str) -> int:
        position = self._positions.get(intent_id)
        if position is None:
            raise IntentNotFound(intent_id)
        return position

    def _event_position(self, event_id: str) -> int:
        index = self._event_index.get(event_id)
        if index is None:
            raise EventNotFound(event_id)
        return index


def _created_of_intent(intent: PaymentIntent) -> int:
    return intent.created


def _created_of_event(event: JsonObject) -> int:
    created: int = event["created"]
    return created
