"""Discrepancies: reported (deduplicated while open: repeats count up),
listed newest first, resolved by an operator."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import structlog

from payment_svc.domain.commands import PageCursor
from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.domain.reconciliation import DiscrepancyKind
from payment_svc.domain.records import Discrepancy, Reported
from payment_svc.domain.refunds import parse_refund_id
from payment_svc.service_layer import pagination
from payment_svc.service_layer.pagination import PageTokens, bounded_page_size
from payment_svc.service_layer.payments import payment_uuid
from payment_svc.service_layer.ports import DiscrepancyRepository

log = structlog.get_logger("payment_svc.reconciliation")


def refund_uuid(text: str, field: str = "refund_id") -> uuid.UUID:
    value = parse_refund_id(text)
    if value is None:
        raise InvalidArgument([FieldViolation(field, "must be a refund id (rfd_...)")])
    return value


def _uuid(field: str, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(
            [FieldViolation(field, "must be an id this service issued")]
        ) from None


class DiscrepancyService:
    def __init__(self, store: DiscrepancyRepository, *, page_tokens: PageTokens) -> None:
        self._store = store
        self._tokens = page_tokens

    async def report(
        self,
        kind: DiscrepancyKind,
        payment_id: str,
        provider_payment_id: str,
        details: Mapping[str, str],
        *,
        refund_id: str = "",
    ) -> Reported:
        if not payment_id and not provider_payment_id and not refund_id:
            raise InvalidArgument(
                [FieldViolation("payment_id", "a payment id or a provider payment id is needed")]
            )
        reported = await self._store.report(
            kind,
            payment_uuid(payment_id) if payment_id else None,
            provider_payment_id or None,
            details,
            refund_id=refund_uuid(refund_id) if refund_id else None,
        )
        log.error(
            "discrepancy",
            kind=kind.value,
            payment_id=payment_id or None,
            provider_payment_id=provider_payment_id or None,
            refund_id=refund_id or None,
            occurrences=reported.occurrences,
        )
        return reported

    async def discrepancies(
        self,
        *,
        kinds: frozenset[DiscrepancyKind],
        include_resolved: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Discrepancy], str]:
        limit = bounded_page_size(page_size)
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
