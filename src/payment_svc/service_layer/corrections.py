"""An operator's correction of one payment (CorrectPayment, `payments
correct`): the provider's books read first (no network call inside a
transaction), then, under the payment's lock, its refunds read, the domain's
plan (domain/corrections.py), and one write with its history entry (source
operator, the reason)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from payment_svc.domain.corrections import ProviderReversal, plan_correction
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.model import Payment
from payment_svc.domain.refunds import RefundStatus
from payment_svc.service_layer.payments import payment_uuid
from payment_svc.service_layer.ports import ProviderBooks, SnapshotRepository
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger("payment_svc.corrections")

MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Corrected:
    payment: Payment
    changed: bool


class CorrectionService:
    def __init__(
        self,
        payments: SnapshotRepository,
        books: ProviderBooks,
        *,
        uow: Callable[[], AbstractUnitOfWork],
    ) -> None:
        self._payments = payments
        self._books = books
        self._uow = uow

    async def correct(self, payment_id: str, reason: str) -> Corrected:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                [FieldViolation("reason", f"say why, in 1 to {MAX_REASON_CHARS} characters")]
            )
        pid = payment_uuid(payment_id)
        seen = await self._payments.get_any(pid)
        books = (
            await self._books.reversal_of(seen.provider_payment_id)
            if seen.provider_payment_id is not None
            else ProviderReversal(refunded=0, disputed=False)  # the plan refuses it
        )
        async with self._uow() as uow:
            payment = await uow.payments.get_for_update(pid)
            refunds = await uow.refunds.of_payment(pid)
            succeeded = sum(r.amount for r in refunds if r.status is RefundStatus.SUCCEEDED)
            plan = plan_correction(payment, succeeded, books, reason)
            if not plan.changes:
                return Corrected(payment, False)
            corrected = await uow.payments.correct(payment, plan)
            await uow.commit()
        log.warning(
            "payment_corrected",
            payment_id=payment.public_id,
            status=f"{payment.status.value} -> {corrected.status.value}",
            amount_reversed=f"{payment.amount_reversed} -> {corrected.amount_reversed}",
            reason=reason,
        )
        return Corrected(corrected, True)
