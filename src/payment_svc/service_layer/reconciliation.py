"""The use cases of the reconciliation flow (ProviderSyncService, less
ApplyProviderEvent): snapshots, discrepancies, the sweep's work list with
leases, re-drives, runs, checkpoints and the figures behind the gauges.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from payment_svc.domain.binding import may_redrive
from payment_svc.domain.commands import ListPayments, PageCursor
from payment_svc.domain.errors import AlreadyAtProvider, FieldViolation, InvalidArgument
from payment_svc.domain.model import Payment
from payment_svc.domain.reconciliation import DiscrepancyKind, Snapshot
from payment_svc.domain.records import Discrepancy, Reconciled, Reported, Run, Status
from payment_svc.service_layer import pagination
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.payments import Page, PaymentsService, payment_uuid
from payment_svc.service_layer.ports import ReconciliationRepositories

log = structlog.get_logger("payment_svc.reconciliation")

MAX_PAGE = 500
# A run's counters (payments scanned, fixed...): a bound no run comes near.
MAX_RUN_COUNT = 1_000_000_000
DEFAULT_PAGE = 100
# Past these, `now() - older_than` and `now() + lease` leave Postgres's range.
MAX_OLDER_THAN_SECONDS = 100 * 366 * 86400.0
MAX_LEASE_SECONDS = 86400.0
MAX_JOB_CHARS = 64


@dataclass(frozen=True)
class WorkList:
    payments: list[Payment]
    next_page_token: str


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(value or DEFAULT_PAGE, MAX_PAGE)


def _uuid(field: str, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(
            [FieldViolation(field, "must be an id this service issued")]
        ) from None


class ReconciliationService:
    def __init__(
        self,
        store: ReconciliationRepositories,
        payments: PaymentsService,
        *,
        redrive_window: float,
        page_tokens: PageTokens,
    ) -> None:
        self._tokens = page_tokens
        self._store = store
        self._payments = payments
        self._redrive_window = redrive_window

    async def reconcile(self, payment_id: str, snapshot: Snapshot) -> Reconciled:
        # Never more reversed than charged: an amount beyond it is no refund
        # (and a number column must not take a card number from the wire).
        if not 0 <= snapshot.amount_reversed <= max(snapshot.amount, 0):
            raise InvalidArgument(
                [FieldViolation("snapshot.amount_refunded", "must be 0..the amount charged")]
            )
        result = await self._store.reconcile(payment_uuid(payment_id), snapshot)
        for kind in result.discrepancies:
            log.error("discrepancy", kind=kind.value, payment_id=payment_id)
        if result.changed:
            log.info(
                "payment_reconciled", payment_id=payment_id, status=result.payment.status.value
            )
        return result

    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: str,
        provider_payment_id: str,
        details: Mapping[str, str],
    ) -> Reported:
        if not payment_id and not provider_payment_id:
            raise InvalidArgument(
                [FieldViolation("payment_id", "a payment id or a provider payment id is needed")]
            )
        reported = await self._store.report(
            kind,
            payment_uuid(payment_id) if payment_id else None,
            provider_payment_id or None,
            details,
        )
        log.error(
            "discrepancy",
            kind=kind.value,
            payment_id=payment_id or None,
            provider_payment_id=provider_payment_id or None,
            occurrences=reported.occurrences,
        )
        return reported

    async def work_list(
        self,
        *,
        older_than_seconds: float,
        page_size: int,
        page_token: str,
        owner: str,
        lease_seconds: float | None,
    ) -> WorkList:
        if not 0 <= older_than_seconds <= MAX_OLDER_THAN_SECONDS:
            raise InvalidArgument([FieldViolation("older_than", "must be 0 to 100 years")])
        if lease_seconds is not None and not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument([FieldViolation("lease", "must be 0 to 86400 seconds")])
        if lease_seconds is not None and not owner:
            raise InvalidArgument([FieldViolation("reconciler_id", "is needed with a lease")])
        limit = _page_size(page_size)
        filters = pagination.filter_fingerprint("to_reconcile", older_than_seconds)
        after = self._tokens.decode(page_token, filters)
        payments = await self._store.to_reconcile(
            older_than_seconds=older_than_seconds,
            limit=limit,
            after=(after.sort_key, after.id) if after else None,
            owner=owner,
            lease_seconds=lease_seconds,
        )
        token = ""
        if len(payments) == limit:
            last = payments[-1]
            token = self._tokens.encode(PageCursor(sort_key=last.updated_at, id=last.id), filters)
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

    async def discrepancies(
        self,
        *,
        kinds: frozenset[DiscrepancyKind],
        include_resolved: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Discrepancy], str]:
        limit = _page_size(page_size)
        filters = pagination.filter_fingerprint(
            "discrepancies", sorted(k.value for k in kinds), include_resolved
        )
        after = self._tokens.decode(page_token, filters)
        rows = await self._store.discrepancies(
            kinds=kinds,
            include_resolved=include_resolved,
            limit=limit,
            after=(after.sort_key, after.id) if after else None,
        )
        token = ""
        if len(rows) == limit:
            token = self._tokens.encode(
                PageCursor(sort_key=rows[-1].first_seen_at, id=rows[-1].id), filters
            )
        return rows, token

    async def resolve(self, discrepancy_id: str, by: str, note: str) -> Discrepancy:
        if not note.strip():
            raise InvalidArgument([FieldViolation("note", "say what was done about it")])
        resolved = await self._store.resolve(_uuid("discrepancy_id", discrepancy_id), by, note)
        log.info("discrepancy_resolved", discrepancy_id=discrepancy_id, by=by)
        return resolved

    async def record_run(self, run: Run) -> Run:
        if not 1 <= len(run.job) <= MAX_JOB_CHARS:
            raise InvalidArgument(
                [FieldViolation("run.job", f"must name the job in 1..{MAX_JOB_CHARS} characters")]
            )
        counters = {
            "scanned": run.scanned,
            "fixed": run.fixed,
            "discrepancies": run.discrepancies,
            "errors": run.errors,
        }
        bad = [
            FieldViolation(f"run.{name}", f"must be 0..{MAX_RUN_COUNT}")
            for name, value in counters.items()
            if not 0 <= value <= MAX_RUN_COUNT
        ]
        if bad:
            raise InvalidArgument(bad)
        if run.finished_at < run.started_at:
            raise InvalidArgument(
                [FieldViolation("run.finished_at", "must not precede started_at")]
            )
        return await self._store.record_run(run)

    async def checkpoint(self, name: str) -> tuple[str, object] | None:
        if not name:
            raise InvalidArgument([FieldViolation("name", "must not be empty")])
        return await self._store.checkpoint(name)

    async def save_checkpoint(self, name: str, value: str) -> None:
        if not name:
            raise InvalidArgument([FieldViolation("name", "must not be empty")])
        await self._store.save_checkpoint(name, value)

    async def status(self) -> Status:
        return await self._store.status()
