"""Why the books refuse a request: each refusal is its own type, so each API maps
it to its own error shape (errors.py). Retrying the same request never helps.
"""

from __future__ import annotations

from provider_sim.intents import IntentStatus, PaymentIntent
from provider_sim.refunds import Refund


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


class ChargeNotFound(LedgerError):
    def __init__(self, charge_id: str) -> None:
        super().__init__(f"No such charge: '{charge_id}'")
        self.charge_id = charge_id


class RefundNotFound(LedgerError):
    def __init__(self, refund_id: str) -> None:
        super().__init__(f"No such refund: '{refund_id}'")
        self.refund_id = refund_id


class ChargeMismatch(LedgerError):
    def __init__(self, charge_id: str, intent_id: str) -> None:
        super().__init__(f"Charge {charge_id} does not belong to PaymentIntent {intent_id}.")


class NotSucceeded(LedgerError):
    """Only the charge of a succeeded intent can be refunded or disputed."""

    def __init__(self, intent: PaymentIntent, action: str) -> None:
        super().__init__(
            f"This PaymentIntent does not have a successful charge to {action} "
            f"(its status is {intent.status.value})."
        )
        self.status = intent.status


class AlreadyRefunded(LedgerError):
    def __init__(self, charge_id: str) -> None:
        super().__init__(f"Charge {charge_id} has already been refunded.")


class ChargeDisputed(LedgerError):
    def __init__(self, charge_id: str) -> None:
        super().__init__(f"Charge {charge_id} has been charged back; cannot issue a refund.")


class AlreadyDisputed(LedgerError):
    def __init__(self, charge_id: str) -> None:
        super().__init__(f"Charge {charge_id} already has a dispute.")


class AmountTooLarge(LedgerError):
    def __init__(self, amount: int, remaining: int) -> None:
        super().__init__(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."
        )
        self.amount = amount
        self.remaining = remaining


class InvalidTransition(LedgerError):
    def __init__(self, intent: PaymentIntent, target: IntentStatus, action: str) -> None:
        super().__init__(
            f"You cannot {action} this PaymentIntent because it has a status of "
            f"{intent.status.value}."
        )
        self.current = intent.status
        self.target = target


class RefundNotSucceeded(LedgerError):
    """Only a succeeded refund can fail later."""

    def __init__(self, refund: Refund) -> None:
        super().__init__(
            f"Refund {refund.id} cannot fail later: its status is {refund.status.value}."
        )
        self.status = refund.status


class RefundNotPending(LedgerError):
    """Only a pending refund can be settled."""

    def __init__(self, refund: Refund) -> None:
        super().__init__(
            f"Refund {refund.id} cannot be settled: its status is {refund.status.value}."
        )
        self.status = refund.status
