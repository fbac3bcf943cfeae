"""Discrepancies: reported to payment-svc (which deduplicates and keeps them),
counted in reconciler_discrepancies_total{kind}, and logged at ERROR."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog

from payments.client import ProviderSyncClient
from payments.errors import PaymentsClientError
from payments.v1 import provider_sync_service_pb2 as sync
from reconciler.convert import kind_name
from reconciler.metrics import Metrics
from reconciler.retry import retrying
from reconciler.runs import Tally

log = structlog.get_logger("reconciler")


class Findings:
    def __init__(self, client: ProviderSyncClient, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    async def report(
        self,
        tally: Tally,
        kind: sync.DiscrepancyKind.ValueType,
        *,
        payment_id: str = "",
        provider_payment_id: str = "",
        details: Mapping[str, str] | None = None,
        refund_id: str = "",
    ) -> None:
        """Reports one finding (retried); one payment-svc refused or could
        not take is an error of the run, counted and logged, and the run goes
        on (the next one finds it again): every job reports this one way."""
        try:
            reply = await retrying(
                lambda: self._client.report_discrepancy(
                    kind,
                    payment_id=payment_id,
                    provider_payment_id=provider_payment_id,
                    details=details,
                    refund_id=refund_id,
                )
            )
        except PaymentsClientError as exc:
            tally.errors += 1
            log.warning(
                "report_discrepancy_failed",
                kind=kind_name(kind),
                payment_id=payment_id,
                provider_payment_id=provider_payment_id,
                refund_id=refund_id,
                error=str(exc),
            )
            return
        self._found(
            tally,
            kind,
            payment_id,
            provider_payment_id,
            discrepancy_id=reply.discrepancy_id,
            occurrences=reply.occurrences,
            refund_id=refund_id,
            details=dict(details or {}),
        )

    def recorded_by_payment_svc(
        self,
        tally: Tally,
        kinds: Iterable[sync.DiscrepancyKind.ValueType],
        payment_id: str,
        provider_payment_id: str,
    ) -> None:
        """Findings payment-svc recorded itself while applying a snapshot."""
        for kind in kinds:
            self._found(tally, kind, payment_id, provider_payment_id)

    def _found(
        self,
        tally: Tally,
        kind: sync.DiscrepancyKind.ValueType,
        payment_id: str,
        provider_payment_id: str,
        **fields: object,
    ) -> None:
        tally.discrepancies += 1
        self._metrics.finding(kind)
        log.error(
            "discrepancy",
            kind=kind_name(kind),
            payment_id=payment_id,
            provider_payment_id=provider_payment_id,
            **fields,
        )
