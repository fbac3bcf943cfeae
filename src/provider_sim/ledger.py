"""The provider's books: every payment intent, the charges made, the events emitted.

Pure and synchronous (no I/O, no awaits), so one call is atomic on the event loop.

    Ledger
      ├─ intents by id, by idempotency key, by metadata['payment_id']  (dict indexes)
      ├─ events: append-only Stripe event objects, one per status change (+ index by id)
      └─ subscribers: callbacks told of each event as it is appended

The webhook deliverer subscribes with `ledger.subscribe(deliverer.enqueue)`.
Callbacks run synchronously inside the state change and must not raise.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from provider_sim.events import EventListQuery, EventType, event_object, page_newest_first
from provider_sim.intents import (
    GENERIC_DECLINE,
    TEST_PAYMENT_METHODS,
    TRANSITIONS,
    CardBehaviour,
    IntentStatus,
    JsonObject,
    PaymentIntent,
)

EventCallback = Callable[[JsonObject], None]

# The event an intent emits when it enters a status (statuses not listed emit none).
_EVENT_TYPES: Final[dict[IntentStatus, EventType]] = {
    IntentStatus.PROCESSING: EventType.PAYMENT_INTENT_PROCESSING,
    IntentStatus.SUCCEEDED: EventType.PAYMENT_INTENT_SUCCEEDED,
    IntentStatus.REQUIRES_PAYMENT_METHOD: EventType.PAYMENT_INTENT_PAYMENT_FAILED,
    IntentStatus.CANCELED: EventType.PAYMENT_INTENT_CANCELED,
}


class LedgerError(Exception):
    """A request the books refuse; retrying the same request never helps."""


class IntentNotFound(LedgerError):
    def __init__(self, intent_id: str) -> None:
        super().__init__(f"No such payment_intent: '{intent_id}'")
        self.intent_id = intent_id


class UnknownPaymentMethod(LedgerError):
    def __init__(self, payment_method: str) -> None:
        super().__init__(f"No such PaymentMethod: '{payment_method}'")
        self.payment_method = payment_method


class EventNotFound(LedgerError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"No such event: '{event_id}'")
        self.event_id = event_id


class InvalidTransition(LedgerError):
    def __init__(self, intent: PaymentIntent, target: IntentStatus, action: str) -> None:
        super().__init__(
            f"You cannot {action} this PaymentIntent because it has a status of "
            f"{intent.status.value}."
        )
        self.current = intent.status
        self.target = target


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


_ids = random.Random()


def random_id(prefix: str) -> str:
    # Unique, not secret: the OS's randomness (secrets) costs a syscall per
    # id, and the simulator makes several per request.
    return f"{prefix}_{_ids.getrandbits(96):024x}"


class Ledger:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = random_id,
    ) -> None:
        self._clock = clock
        self._new_id = new_id
        self._subscribers: list[EventCallback] = []
        self._seq = 0
        self.clear()

    def clear(self) -> None:
        """Forget intents and events; subscribers stay subscribed."""
        self._intents: dict[str, PaymentIntent] = {}
        self._by_idempotency_key: dict[str, list[PaymentIntent]] = {}
        self._by_payment_id: dict[str, list[PaymentIntent]] = {}
        self.events: list[JsonObject] = []
        self._event_index: dict[str, int] = {}

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for every event appended from now on; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # -- commands -----------------------------------------------------------------

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

    # -- queries ------------------------------------------------------------------

    def get(self, intent_id: str) -> PaymentIntent:
        intent = self._intents.get(intent_id)
        if intent is None:
            raise IntentNotFound(intent_id)
        return intent

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
        return page_newest_first(self.events, query, before=before, after=after)

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

    # -- internals ----------------------------------------------------------------

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
        self._intents[intent.id] = intent
        if idempotency_key is not None:
            self._by_idempotency_key.setdefault(idempotency_key, []).append(intent)
        payment_id = metadata.get("payment_id")
        if payment_id is not None:
            self._by_payment_id.setdefault(payment_id, []).append(intent)
        return intent

    def _charge(self, intent: PaymentIntent) -> None:
        intent.latest_charge = self._new_id("ch")
        intent.charges += 1

    def _move(
        self, intent: PaymentIntent, target: IntentStatus, action: str, request_key: str | None
    ) -> None:
        if target not in TRANSITIONS[intent.status]:
            raise InvalidTransition(intent, target, action)
        intent.status = target
        event_type = _EVENT_TYPES.get(target)
        if event_type is not None:
            self._emit(event_type, intent.to_json(), request_key)

    def _emit(self, event_type: EventType, obj: JsonObject, request_key: str | None) -> None:
        event = event_object(self._new_id("evt"), event_type, int(self._clock()), obj, request_key)
        self._event_index[event["id"]] = len(self.events)
        self.events.append(event)
        for callback in self._subscribers:
            callback(event)

    def _event_position(self, event_id: str) -> int:
        index = self._event_index.get(event_id)
        if index is None:
            raise EventNotFound(event_id)
        return index
