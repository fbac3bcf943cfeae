"""Recording the provider's answer to an attempt (create or re-drive).

    read      the payment as the caller has it (first), or again (after a conflict)
    plan      domain/payment_results.py plan_result: NOTHING, RECORD or MOVE
    write     PaymentRepository.write_result: the move only if the payment's
              version is still the one planned on, in one statement
    conflict  somebody moved the payment in between (a webhook, a snapshot):
              read it again and plan again on it as it is

Optimistic, with no lock held between the statements: each conflict means
another writer committed, and a payment only moves so far, so the loop ends.
"""

from __future__ import annotations

from payment_svc.domain.model import Payment, ProviderResult
from payment_svc.domain.payment_results import ResultPlanner, ResultWrite, plan_result
from payment_svc.domain.status import Source
from payment_svc.service_layer.ports import PaymentRepository


async def record_result(
    repo: PaymentRepository,
    payment: Payment,
    result: ProviderResult,
    *,
    source: Source,
    plan: ResultPlanner = plan_result,
) -> Payment:
    """The payment after the answer is recorded (moved, or as it is with
    the answer in its history)."""
    seen = payment
    while True:
        decided = plan(seen, result, source)
        if decided.write is ResultWrite.NOTHING:
            return seen
        written = await repo.write_result(seen, result, source=source, plan=decided)
        if written is not None:
            return written
        seen = await repo.get(seen.client_id, seen.id)
