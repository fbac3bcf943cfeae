"""ProviderSyncService over gRPC: translation only (the webhook gateway and
the reconciler are its callers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc

from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.inbox import EventOutcome
from payment_svc.domain.model import format_payment_id
from payment_svc.domain.reconciliation import DiscrepancyKind, ProviderFacts
from payment_svc.domain.records import Discrepancy, Quarantined, Run
from payment_svc.domain.refund_events import ProviderRefundWords
from payment_svc.domain.refunds import format_refund_id
from payment_svc.domain.status import Source
from payment_svc.entrypoints import convert, metrics
from payment_svc.entrypoints.interceptors import PRINCIPAL, call_deadline
from payment_svc.service_layer.corrections import CorrectionService
from payment_svc.service_layer.provider_sync import ApplyProviderEvent, ProviderSyncService
from payment_svc.service_layer.reconciliation import ReconciliationService
from payment_svc.service_layer.refund_sync import RefundSyncService
from payment_svc.settings import Role
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc

Context = grpc.aio.ServicerContext[Any, Any]

SOURCE_OF_ROLE = {Role.GATEWAY: Source.WEBHOOK, Role.RECONCILER: Source.RECONCILER}

KIND_TO_PB: dict[DiscrepancyKind, sync.DiscrepancyKind.ValueType] = {
    DiscrepancyKind.STUCK_PAYMENT: sync.DISCREPANCY_KIND_STUCK_PAYMENT,
    DiscrepancyKind.UNRECORDED_PROVIDER_PAYMENT: sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_PAYMENT,
    DiscrepancyKind.MISSING_AT_PROVIDER: sync.DISCREPANCY_KIND_MISSING_AT_PROVIDER,
    DiscrepancyKind.AMOUNT_MISMATCH: sync.DISCREPANCY_KIND_AMOUNT_MISMATCH,
    DiscrepancyKind.FINAL_STATE_CONTRADICTED: sync.DISCREPANCY_KIND_FINAL_STATE_CONTRADICTED,
    DiscrepancyKind.UNMATCHED_PROVIDER_EVENT: sync.DISCREPANCY_KIND_UNMATCHED_PROVIDER_EVENT,
    DiscrepancyKind.DUPLICATE_PROVIDER_PAYMENT: sync.DISCREPANCY_KIND_DUPLICATE_PROVIDER_PAYMENT,
    DiscrepancyKind.UNPROCESSABLE_PROVIDER_EVENT: (
        sync.DISCREPANCY_KIND_UNPROCESSABLE_PROVIDER_EVENT
    ),
    DiscrepancyKind.UNRECORDED_PROVIDER_REFUND: sync.DISCREPANCY_KIND_UNRECORDED_PROVIDER_REFUND,
    DiscrepancyKind.REFUND_AMOUNT_MISMATCH: sync.DISCREPANCY_KIND_REFUND_AMOUNT_MISMATCH,
    DiscrepancyKind.STUCK_REFUND: sync.DISCREPANCY_KIND_STUCK_REFUND,
    DiscrepancyKind.REFUND_MISSING_AT_PROVIDER: sync.DISCREPANCY_KIND_REFUND_MISSING_AT_PROVIDER,
}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}


def _kind(value: int, field: str = "kind") -> DiscrepancyKind:
    if value not in KIND_FROM_PB:
        raise InvalidArgument([FieldViolation(field, "must be a discrepancy kind")])
    return KIND_FROM_PB[value]  # type: ignore[index]


def snapshot(pb: sync.ProviderPaymentSnapshot) -> ProviderFacts:
    if pb.amount < 0 or pb.amount_refunded < 0:
        raise InvalidArgument(
            [FieldViolation("snapshot", "amount and amount_refunded must not be negative")]
        )
    return ProviderFacts(
        found=pb.found,
        provider_status=pb.provider_status,
        provider_payment_id=pb.provider_payment_id or None,
        amount=pb.amount,
        currency=pb.currency,
        amount_refunded=pb.amount_refunded,
        disputed=pb.disputed,
        failure_code=pb.failure_code or None,
        failure_message=pb.failure_message or None,
    )


def apply_response(outcome: EventOutcome) -> sync.ApplyProviderEventResponse:
    return sync.ApplyProviderEventResponse(
        duplicate=outcome.duplicate,
        payment_id=format_payment_id(outcome.payment_id) if outcome.payment_id else "",
        applied=outcome.applied,
        discrepancies=[KIND_TO_PB[outcome.discrepancy]] if outcome.discrepancy else [],
        quarantined=outcome.quarantine_id is not None,
        quarantine_id=outcome.quarantine_id or "",
    )


def quarantined_to_pb(q: Quarantined) -> sync.QuarantinedEvent:
    return sync.QuarantinedEvent(
        id=str(q.id),
        provider_event_id=q.provider_event_id or "",
        event_type=q.event_type or "",
        reason=q.reason,
        source=q.source,
        received_at=convert.timestamp(q.received_at),
        last_received_at=convert.timestamp(q.last_received_at),
        deliveries=q.deliveries,
        payload=q.payload,
        replayed_at=convert.timestamp(q.replayed_at),
    )


def discrepancy_to_pb(d: Discrepancy) -> sync.Discrepancy:
    return sync.Discrepancy(
        id=str(d.id),
        kind=KIND_TO_PB[d.kind],
        payment_id=format_payment_id(d.payment_id) if d.payment_id else "",
        provider_payment_id=d.provider_payment_id or "",
        details=dict(d.details),
        first_seen_at=convert.timestamp(d.first_seen_at),
        last_seen_at=convert.timestamp(d.last_seen_at),
        occurrences=d.occurrences,
        resolved_at=convert.timestamp(d.resolved_at),
        resolved_by=d.resolved_by or "",
        note=d.note or "",
        refund_id=format_refund_id(d.refund_id) if d.refund_id else "",
    )


def run_to_pb(r: Run) -> sync.ReconciliationRun:
    return sync.ReconciliationRun(
        id=str(r.id) if r.id else "",
        job=r.job,
        reconciler_id=r.reconciler_id,
        started_at=convert.timestamp(r.started_at),
        finished_at=convert.timestamp(r.finished_at),
        scanned=r.scanned,
        fixed=r.fixed,
        discrepancies=r.discrepancies,
        errors=r.errors,
        succeeded=r.succeeded,
        error_message=r.error_message or "",
    )


def run_from_pb(r: sync.ReconciliationRun, reconciler_id: str) -> Run:
    def at(field: str) -> datetime:
        if not r.HasField(field):  # type: ignore[arg-type]
            raise InvalidArgument([FieldViolation(f"run.{field}", "is required")])
        value: datetime = getattr(r, field).ToDatetime(tzinfo=UTC)
        return value

    return Run(
        job=r.job,
        reconciler_id=r.reconciler_id or reconciler_id,
        started_at=at("started_at"),
        finished_at=at("finished_at"),
        scanned=r.scanned,
        fixed=r.fixed,
        discrepancies=r.discrepancies,
        errors=r.errors,
        succeeded=r.succeeded,
        error_message=r.error_message or None,
    )


def refund_snapshot(pb: sync.ProviderRefundSnapshot) -> ProviderRefundWords | None:
    """The provider's refund in its own words; None when it does not know
    it (what the words mean is the provider adapter's: a RefundReader)."""
    if not pb.found:
        return None
    violations = []
    if not pb.provider_refund_id:
        violations.append(FieldViolation("snapshot.provider_refund_id", "is required"))
    if not 0 < pb.amount <= 10**15:
        violations.append(FieldViolation("snapshot.amount", "must be a positive amount"))
    if len(pb.currency) != 3:
        violations.append(FieldViolation("snapshot.currency", "must be an ISO 4217 code"))
    for name in ("provider_refund_id", "provider_status", "failure_reason", "reason"):
        if len(getattr(pb, name)) > 255:
            violations.append(FieldViolation(f"snapshot.{name}", "at most 255 characters"))
    if violations:
        raise InvalidArgument(violations)
    return ProviderRefundWords(
        provider_refund_id=pb.provider_refund_id,
        provider_status=pb.provider_status,
        amount=pb.amount,
        currency=pb.currency,
        failure_reason=pb.failure_reason,
        metadata_refund_id=pb.metadata_refund_id,
        reason=pb.reason,
    )


class ProviderSyncServicer(sync_grpc.ProviderSyncServiceServicer):
    def __init__(
        self,
        events: ProviderSyncService,
        reconciliation: ReconciliationService,
        refund_sync: RefundSyncService,
        corrections: CorrectionService,
    ) -> None:
        self._events = events
        self._rec = reconciliation
        self._refunds = refund_sync
        self._corrections = corrections

    async def ListRefundsToReconcile(
        self, request: sync.ListRefundsToReconcileRequest, context: Context
    ) -> sync.ListRefundsToReconcileResponse:
        work = await self._refunds.work_list(
            older_than_seconds=request.older_than.ToTimedelta().total_seconds(),
            page_size=request.page_size,
            page_token=request.page_token,
            owner=request.reconciler_id,
            lease_seconds=request.lease.ToTimedelta().total_seconds()
            if request.HasField("lease")
            else None,
        )
        return sync.ListRefundsToReconcileResponse(
            refunds=[
                sync.RefundToReconcile(
                    refund=convert.refund_to_pb(r), provider_payment_id=provider_payment_id or ""
                )
                for r, provider_payment_id in work.refunds
            ],
            next_page_token=work.next_page_token,
        )

    async def ReconcileRefund(
        self, request: sync.ReconcileRefundRequest, context: Context
    ) -> sync.ReconcileRefundResponse:
        result = await self._refunds.reconcile(
            request.refund_id, request.provider_payment_id, refund_snapshot(request.snapshot)
        )
        return sync.ReconcileRefundResponse(
            refund=convert.refund_to_pb(result.refund) if result.refund else None,
            changed=result.changed,
            recorded=result.recorded,
            discrepancies=[KIND_TO_PB[k] for k in result.discrepancies],
            payment=convert.payment_to_pb(result.payment) if result.payment else None,
        )

    async def RedriveRefund(
        self, request: sync.RedriveRefundRequest, context: Context
    ) -> sync.RedriveRefundResponse:
        refund = await self._refunds.redrive(request.refund_id, deadline=call_deadline(context))
        return sync.RedriveRefundResponse(refund=convert.refund_to_pb(refund))

    async def LookupRefunds(
        self, request: sync.LookupRefundsRequest, context: Context
    ) -> sync.LookupRefundsResponse:
        found = await self._refunds.lookup(
            list(request.refund_ids), list(request.provider_refund_ids), list(request.payment_ids)
        )
        return sync.LookupRefundsResponse(refunds=[convert.refund_to_pb(r) for r in found])

    async def ApplyProviderEvent(
        self, request: sync.ApplyProviderEventRequest, context: Context
    ) -> sync.ApplyProviderEventResponse:
        source = SOURCE_OF_ROLE[PRINCIPAL.get().role]
        try:
            outcome = await self._events.apply_event(
                ApplyProviderEvent(
                    provider_event_id=request.provider_event_id,
                    event_type=request.event_type,
                    payload=request.payload,
                    source=source,
                    unreadable_reason=request.unreadable_reason,
                )
            )
        except Exception as exc:
            label = getattr(exc, "reason", "error").lower()
            metrics.PROVIDER_EVENTS.labels(source.value, label).inc()
            raise
        if outcome.quarantine_id is not None:
            metrics.QUARANTINED_EVENTS.labels(source.value).inc()
        outcome_label = (
            "quarantined"
            if outcome.quarantine_id is not None
            else "duplicate"
            if outcome.duplicate
            else "applied"
            if outcome.applied
            else "recorded"
            if outcome.payment_id
            else "unmatched"
        )
        metrics.PROVIDER_EVENTS.labels(source.value, outcome_label).inc()
        return apply_response(outcome)

    async def ListQuarantinedEvents(
        self, request: sync.ListQuarantinedEventsRequest, context: Context
    ) -> sync.ListQuarantinedEventsResponse:
        if request.page_size < 0:
            raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
        entries = await self._events.quarantined(
            include_replayed=request.include_replayed, limit=min(request.page_size or 100, 500)
        )
        return sync.ListQuarantinedEventsResponse(events=[quarantined_to_pb(q) for q in entries])

    async def ReplayQuarantinedEvent(
        self, request: sync.ReplayQuarantinedEventRequest, context: Context
    ) -> sync.ReplayQuarantinedEventResponse:
        try:
            quarantine_id = uuid.UUID(request.quarantine_id)
        except ValueError:
            raise InvalidArgument(
                [FieldViolation("quarantine_id", "must be a quarantined event's id")]
            ) from None
        outcome, entry = await self._events.replay(quarantine_id, PRINCIPAL.get().client_id)
        return sync.ReplayQuarantinedEventResponse(
            outcome=apply_response(outcome) if outcome else None,
            event=quarantined_to_pb(entry),
            still_quarantined=outcome is None,
        )

    async def ReconcilePayment(
        self, request: sync.ReconcilePaymentRequest, context: Context
    ) -> sync.ReconcilePaymentResponse:
        result = await self._rec.reconcile(request.payment_id, snapshot(request.snapshot))
        return sync.ReconcilePaymentResponse(
            payment=convert.payment_to_pb(result.payment),
            changed=result.changed,
            discrepancies=[KIND_TO_PB[k] for k in result.discrepancies],
        )

    async def ReportDiscrepancy(
        self, request: sync.ReportDiscrepancyRequest, context: Context
    ) -> sync.ReportDiscrepancyResponse:
        reported = await self._rec.discrepancies.report(
            _kind(request.kind),
            request.payment_id,
            request.provider_payment_id,
            dict(request.details),
            refund_id=request.refund_id,
        )
        return sync.ReportDiscrepancyResponse(
            discrepancy_id=str(reported.id), occurrences=reported.occurrences
        )

    async def ListPaymentsToReconcile(
        self, request: sync.ListPaymentsToReconcileRequest, context: Context
    ) -> sync.ListPaymentsToReconcileResponse:
        work = await self._rec.work_list(
            older_than_seconds=request.older_than.ToTimedelta().total_seconds(),
            page_size=request.page_size,
            page_token=request.page_token,
            owner=request.reconciler_id,
            lease_seconds=request.lease.ToTimedelta().total_seconds()
            if request.HasField("lease")
            else None,
        )
        return sync.ListPaymentsToReconcileResponse(
            payments=[convert.payment_to_pb(p) for p in work.payments],
            next_page_token=work.next_page_token,
        )

    async def RedrivePayment(
        self, request: sync.RedrivePaymentRequest, context: Context
    ) -> sync.RedrivePaymentResponse:
        payment = await self._rec.redrive(request.payment_id, deadline=call_deadline(context))
        return sync.RedrivePaymentResponse(payment=convert.payment_to_pb(payment))

    async def LookupPayments(
        self, request: sync.LookupPaymentsRequest, context: Context
    ) -> sync.LookupPaymentsResponse:
        found = await self._rec.lookup(
            list(request.payment_ids), list(request.provider_payment_ids)
        )
        return sync.LookupPaymentsResponse(payments=[convert.payment_to_pb(p) for p in found])

    async def ListDiscrepancies(
        self, request: sync.ListDiscrepanciesRequest, context: Context
    ) -> sync.ListDiscrepanciesResponse:
        rows, token = await self._rec.discrepancies.discrepancies(
            kinds=frozenset(_kind(k, "kinds") for k in request.kinds),
            include_resolved=request.include_resolved,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return sync.ListDiscrepanciesResponse(
            discrepancies=[discrepancy_to_pb(d) for d in rows], next_page_token=token
        )

    async def ResolveDiscrepancy(
        self, request: sync.ResolveDiscrepancyRequest, context: Context
    ) -> sync.ResolveDiscrepancyResponse:
        resolved = await self._rec.discrepancies.resolve(
            request.discrepancy_id, PRINCIPAL.get().client_id, request.note
        )
        return sync.ResolveDiscrepancyResponse(discrepancy=discrepancy_to_pb(resolved))

    async def CorrectPayment(
        self, request: sync.CorrectPaymentRequest, context: Context
    ) -> sync.CorrectPaymentResponse:
        done = await self._corrections.correct(request.payment_id, request.reason)
        return sync.CorrectPaymentResponse(
            payment=convert.payment_to_pb(done.payment), changed=done.changed
        )

    async def RecordReconciliationRun(
        self, request: sync.RecordReconciliationRunRequest, context: Context
    ) -> sync.RecordReconciliationRunResponse:
        run = await self._rec.runs.record_run(run_from_pb(request.run, PRINCIPAL.get().client_id))
        return sync.RecordReconciliationRunResponse(run=run_to_pb(run))

    async def GetCheckpoint(
        self, request: sync.GetCheckpointRequest, context: Context
    ) -> sync.GetCheckpointResponse:
        found = await self._rec.runs.checkpoint(request.name)
        if found is None:
            return sync.GetCheckpointResponse()
        value, updated_at = found
        assert isinstance(updated_at, datetime)
        return sync.GetCheckpointResponse(value=value, updated_at=convert.timestamp(updated_at))

    async def SaveCheckpoint(
        self, request: sync.SaveCheckpointRequest, context: Context
    ) -> sync.SaveCheckpointResponse:
        await self._rec.runs.save_checkpoint(request.name, request.value)
        return sync.SaveCheckpointResponse()

    async def ListPaymentsCreated(
        self, request: sync.ListPaymentsCreatedRequest, context: Context
    ) -> sync.ListPaymentsCreatedResponse:
        page = await self._rec.created(convert.list_query(request))
        return sync.ListPaymentsCreatedResponse(
            payments=[convert.payment_to_pb(p) for p in page.payments],
            next_page_token=page.next_page_token,
        )

    async def GetReconciliationStatus(
        self, request: sync.GetReconciliationStatusRequest, context: Context
    ) -> sync.GetReconciliationStatusResponse:
        status = await self._rec.runs.status()
        return sync.GetReconciliationStatusResponse(
            open_discrepancies=[
                sync.DiscrepancyCount(kind=KIND_TO_PB[k], open=n)
                for k, n in sorted(status.open_by_kind.items(), key=lambda kv: kv[0].value)
            ],
            oldest_non_final_created_at=convert.timestamp(status.oldest_non_final_created_at),
            non_final_payments=status.non_final,
            oldest_non_final_refund_created_at=convert.timestamp(
                status.oldest_non_final_refund_created_at
            ),
            non_final_refunds=status.non_final_refunds,
            last_runs=[run_to_pb(r) for r in status.last_runs],
        )
