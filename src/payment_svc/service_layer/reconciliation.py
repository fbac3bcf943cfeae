"""The use cases of the reconciliation flow (ProviderSyncService, less
ApplyProviderEvent) about payments: snapshots applied (in a unit of
work: unit_of_work.py), the sweep's work list
with its leases, re-drives, look-ups. The rest of the flow lives by what it
owns:

    discrepancies.py    report (deduplicated while open), list, resolve
    runs.py             runs, checkpoints, the status figures
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from payment_svc.domain.binding import may_redrive
from payment_svc.domain.commands import ListPayments, PageCursor
from payment_svc.domain.errors import AlreadyAtProvider, FieldViolation, InvalidArgument
from payment_svc.domain.model import Payment
from payment_svc.domain.reconciliation import (
    ProviderFacts,
    Snapshot,
    plan_snapshot,
    snapshot_findings,
    snapshot_row,
)
from payment_svc.domain.records import Reconciled
from payment_svc.service_layer.discrepancies import DiscrepancyService
from payment_svc.service_layer.pagination import (
    LeasedPageQuery,
    PageTokens,
    leased_page,
)
from payment_svc.service_layer.payments import Page, PaymentsService, payment_uuid
from payment_svc.service_layer.ports import SnapshotReader, SnapshotRepository
from payment_svc.service_layer.runs import RunService
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork

log = structlog.get_logger("payment_svc.reconciliation")

# Past these, `now() - older_than` and `now() + lease` leave Postgres's range.


@dataclass(frozen=True)
class WorkList:
    payments: list[Payment]
    next_page_token: str


class ReconciliationService:
    def __init__(
        self,
        store: SnapshotRepository,
        payments: PaymentsService,
        *,
        uow: Callable[[], AbstractUnitOfWork],
        discrepancies: DiscrepancyService,
        runs: RunService,
        redrive_window: float,
        page_tokens: PageTokens,
        read_snapshot: SnapshotReader,
    ) -> None:
        self._read_snapshot = read_snapshot
        self._uow = uow
        self.discrepancies = discrepancies
        self.runs = runs
        self._tokens = page_tokens
        self._store = store
        self._payments = payments
        self._redrive_window = redrive_window

    async def reconcile(self, payment_id: str, facts: ProviderFacts) -> Reconciled:
        snapshot = self._read_snapshot(facts)
        # Never more reversed than charged: an amount beyond it is no refund
        # (and a number column must not take a card number from the wire).
        if not 0 <= snapshot.amount_reversed <= max(snapshot.amount, 0):
            raise InvalidArgument(
                [FieldViolation("snapshot.amount_refunded", "must be 0..the amount charged")]
            )
        result = await self._apply_snapshot(payment_uuid(payment_id), snapshot)
        for kind in result.discrepancies:
            log.error("discrepancy", kind=kind.value, payment_id=payment_id)
        if result.changed:
            log.info(
                "payment_reconciled", payment_id=payment_id, status=result.payment.status.value
            )
        return result

    async def _apply_snapshot(self, payment_id: uuid.UUID, snap: Snapshot) -> Reconciled:
        """Under the payment's row lock: plan with the domain rules, report
        what the snapshot reveals, write, release the sweep's lease. A
        snapshot that changes nothing writes nothing (two reconcilers racing
        over one payment leave one history entry)."""
        async with self._uow() as uow:
            target = await uow.payments.get_target_for_update(payment_id)
            payment = target.payment
            plan = plan_snapshot(
                payment.status,
                payment.amount,
                payment.currency,
                snap,
                bound_provider_id=payment.provider_payment_id,
                amount_reversed=payment.amount_reversed,
                amount_disputed=payment.amount_disputed,
            )
            found = snapshot_findings(payment, snap, plan)
            for kind, details in found:
                await uow.discrepancies.report(kind, payment.id, snap.provider_payment_id, details)
            moved = payment
            if plan.apply:
                row = snapshot_row(
                    payment, target.provider_state_at, target.provider_state_rank, snap, plan
                )
                moved = await uow.payments.apply_snapshot(payment, row, plan)
            await uow.payments.release_lease(payment.id)
            await uow.commit()
        return Reconciled(moved, plan.apply, [kind for kind, _ in found])

    async def work_list(
        self,
        *,
        older_than_seconds: float,
        page_size: int,
        page_token: str,
        owner: str,
        lease_seconds: float | None,
    ) -> WorkList:
        query = LeasedPageQuery(older_than_seconds, page_size, page_token, owner, lease_seconds)
        payments, token = await leased_page(
            self._tokens,
            "to_reconcile",
            query,
            lambda limit, after: self._store.to_reconcile(
                older_than_seconds=older_than_seconds,
                limit=limit,
                after=after,
                owner=owner,
                lease_seconds=lease_seconds,
            ),
            lambda p: PageCursor(sort_key=p.updated_at, id=p.id),
        )
        return WorkList(payments, token)

    async def created(self, query: ListPayments) -> Page:
        """Every client's payments created in a window (the settlement diff)."""
        return await self._payments.list(None, query)

    async def redrive(self, payment_id: str, *, deadline: float | None = None) -> Payment:
        """Through the same attempt path as creation (shielded, tracked,
        drained; the caller's deadline spent the same way)."""
        payment = await self._store.get_any(payment_uuid(payment_id))
        if not may_redrive(payment.provider_payment_id):
            raise AlreadyAtProvider(
                f"payment has provider payment {payment.provider_payment_id}: the provider "
                "has it, re-driving could charge twice"
            )
        return await self._payments.redrive(
            payment, window_seconds=self._redrive_window, deadline=deadline
        )

    async def lookup(self, payment_ids: list[str], provider_ids: list[str]) -> list[Payment]:
        if len(payment_ids) + len(provider_ids) > 1000:
            raise InvalidArgument([FieldViolation("payment_ids", "at most 1000 ids at once")])
        return await self._store.lookup([payment_uuid(p) for p in payment_ids], provider_ids)
