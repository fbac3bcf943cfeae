"""The use cases of refunds asked for by callers (SPEC §3a).

RefundPayment, as CreatePayment records first and asks second:

    read     one statement: the payment, its refunds and the key's refund
    decide   the key first (DUPLICATE_REFUND, IDEMPOTENCY_KEY_REUSED), then
             the payment's state and what remains (domain/refunds.admit)
    insert   the refund PENDING with its payment's history entry, in one
             statement, only if the payment is still as read (its version
             moves with any refund's change: migration 0013); otherwise
             read and decide again: each retry means another writer
             committed, and a payment has only so much to refund
    ask      the provider, with no transaction open (our refund id as its
             idempotency key), on the one attempt path: shielded from the
             caller, tracked, drained on SIGTERM, spending the caller's
             deadline as domain/deadlines.py says
    record   its answer, the same way (read, domain/refunds.plan_outcome,
             a write only on the payment as read), retried until the
             deadline; RefundNotRecorded if the database stays away: the
             refund stays PENDING and converges through the webhook or the
             reconciler

Two concurrent refunds can never both take the same remaining amount: the
second insert finds the payment moved, and decides again on it. The writes
of webhooks and the reconciler (service_layer/refund_sync.py) hold the
payment's row lock instead, and move its version the same way.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog

from payment_svc.domain.commands import ListRefunds, RefundPayment
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import (
    NotFound,
    RefundNotRecorded,
)
from payment_svc.domain.model import parse_payment_id
from payment_svc.domain.refunds import (
    NewRefund,
    PaymentRefunds,
    ProviderRefundRequest,
    Refund,
    RefundOutcome,
    admit,
    duplicate_of,
    plan_outcome,
    refund_fingerprint,
    succeeded,
)
from payment_svc.domain.status import Source
from payment_svc.service_layer.attempts import Attempts, left, write_until
from payment_svc.service_layer.ids import new_refund_uuid
from payment_svc.service_layer.ports import RefundProvider, RefundRepository

log = structlog.get_logger("payment_svc.refunds")


class RefundsService:
    def __init__(
        self,
        refunds: RefundRepository,
        provider: RefundProvider,
        budget: AttemptBudget,
    ) -> None:
        self._refunds = refunds
        self._provider = provider
        self._budget = budget
        self._attempts = Attempts()

    async def refund(
        self, client_id: str, cmd: RefundPayment, *, deadline: float | None = None
    ) -> Refund:
        """`deadline`: the caller's, on the running loop's clock (None: none)."""
        cmd.validate()
        refund, seen = await self._record_new(client_id, cmd)
        payment = seen.payment
        structlog.contextvars.bind_contextvars(
            payment_id=payment.public_id, refund_id=refund.public_id
        )
        assert payment.provider_payment_id is not None  # _record_new's rule
        ask = ProviderRefundRequest(
            refund_id=refund.public_id,
            payment_id=payment.public_id,
            provider_payment_id=payment.provider_payment_id,
            amount=refund.amount,
            currency=refund.currency,
            reason=refund.reason,
        )
        return await self._attempts.run(
            self._ask_and_record(refund, ask, deadline, guess=seen.with_new(refund))
        )

    async def _record_new(
        self, client_id: str, cmd: RefundPayment
    ) -> tuple[Refund, PaymentRefunds]:
        """The refund PENDING, and the read its insert was decided on."""
        payment_id = parse_payment_id(cmd.payment_id)
        assert payment_id is not None  # validated
        fingerprint = refund_fingerprint(cmd.payment_id, cmd.amount, cmd.reason)
        while True:
            seen = await self._refunds.read(payment_id, key=(client_id, cmd.idempotency_key))
            payment = seen.payment
            if payment.client_id != client_id:
                raise NotFound(f"payment {cmd.payment_id} not found")
            # A retry learns its refund's outcome whatever became of the
            # payment since: the key is looked at first.
            if seen.by_key is not None:
                raise duplicate_of(seen.by_key, fingerprint)
            amount = admit(payment, seen.refunds, cmd.amount)
            refund = await self._refunds.insert_unless_moved(
                NewRefund(
                    id=new_refund_uuid(),
                    payment_id=payment.id,
                    client_id=client_id,
                    idempotency_key=cmd.idempotency_key,
                    fingerprint=fingerprint,
                    amount=amount,
                    currency=payment.currency,
                    reason=cmd.reason,
                    source=Source.API,
                    payment_status=payment.status,
                ),
                payment,
            )
            if refund is not None:
                return refund, seen
            # Another refund, or a change of the payment, committed since the
            # read (or the key was taken meanwhile): decide again on it.

    async def _ask_and_record(
        self,
        refund: Refund,
        ask: ProviderRefundRequest,
        deadline: float | None,
        *,
        guess: PaymentRefunds,
    ) -> Refund:
        """Run on the payments' attempt path (service_layer/attempts.py):
        tracked, shielded. `guess`: the payment as the insert left it."""
        loop = asyncio.get_running_loop()
        outcome = await self._provider.create_refund(
            ask, timeout=self._budget.provider_seconds(left(loop, deadline))
        )
        recorded = await self._record(refund, outcome, deadline, guess)
        log.info(
            "refund_attempted",
            refund_id=refund.public_id,
            payment_id=refund.public_payment_id,
            amount=refund.amount,
            status=recorded.status.value,
            provider_refund_id=recorded.provider_refund_id,
            failure_code=recorded.failure_code,
        )
        return recorded

    async def _record(
        self,
        refund: Refund,
        outcome: RefundOutcome,
        deadline: float | None,
        guess: PaymentRefunds,
    ) -> Refund:
        """Records the answer, retrying while the database is unavailable,
        until the caller's deadline (always one try, even past it)."""

        def give_up(exc: BaseException) -> Exception:
            log.error(
                "provider_refund_answer_not_recorded",
                refund_id=refund.public_id,
                status=outcome.status.value,
                provider_refund_id=outcome.provider_refund_id,
                error=str(exc) or type(exc).__name__,
            )
            return RefundNotRecorded(refund.public_id, refund.public_payment_id)

        loop = asyncio.get_running_loop()
        return await write_until(
            lambda: self.record_outcome(refund, outcome, source=Source.API, guess=guess),
            self._budget.write_seconds(left(loop, deadline)),
            give_up,
        )

    async def record_outcome(
        self,
        refund: Refund,
        outcome: RefundOutcome,
        *,
        source: Source,
        authoritative: bool = False,
        guess: PaymentRefunds | None = None,
    ) -> Refund:
        """What a source says of a refund, decided by the domain on one read
        of the payment and its refunds, and written (the refund, the
        payment's reversal, one history entry) only if the payment is still
        as read; otherwise read and decided again. `guess`: the payment and
        its refunds as the caller expects them, tried before any read."""
        while True:
            seen = guess or await self._refunds.read(refund.payment_id)
            guess = None
            current = seen.refund(refund.id)
            if current is None:
                raise NotFound(f"refund {refund.public_id} not found")
            plan = plan_outcome(
                seen.payment,
                current,
                succeeded(seen.others(current.id)),
                outcome,
                authoritative=authoritative,
            )
            moved = await self._refunds.record_unless_moved(
                seen.payment, current, outcome, plan, source=source
            )
            if moved is not None:
                return moved

    async def attempt_again(
        self,
        refund: Refund,
        ask: ProviderRefundRequest,
        deadline: float | None,
        *,
        source: Source,
    ) -> Refund:
        """A re-drive (the reconciler's RedriveRefund): the provider
        asked again with the same key, tracked and shielded like an attempt,
        its answer recorded with `source`."""

        async def again() -> Refund:
            loop = asyncio.get_running_loop()
            outcome = await self._provider.create_refund(
                ask, timeout=self._budget.provider_seconds(left(loop, deadline))
            )
            return await self.record_outcome(refund, outcome, source=source)

        return await self._attempts.run(again())

    async def drain(self, timeout: float) -> None:
        """Waits for refund attempts still running (their callers may be gone)."""
        await self._attempts.drain(timeout)

    async def list(self, client_id: str, query: ListRefunds) -> list[Refund]:
        """The payment's refunds, oldest first."""
        query.validate()
        payment_id = parse_payment_id(query.payment_id)
        assert payment_id is not None  # validated
        return await self._refunds.for_payment(client_id, payment_id)

    async def get(self, client_id: str, refund_id: uuid.UUID) -> Refund:
        return await self._refunds.get(client_id, refund_id)


__all__ = ["RefundsService"]
