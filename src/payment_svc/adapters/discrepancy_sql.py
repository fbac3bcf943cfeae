"""One discrepancy written inside the caller's transaction, deduplicated while
open (repeats count up): shared by the reconciliation store, the inbox and the
payment store, which find discrepancies while they write."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import asyncpg

from payment_svc.adapters.db import Conn
from payment_svc.domain.errors import NotFound
from payment_svc.domain.model import format_payment_id
from payment_svc.domain.reconciliation import DiscrepancyKind, dedup_key
from payment_svc.domain.records import Reported

_REPORT = """
INSERT INTO discrepancies (id, kind, payment_id, provider_payment_id, details, dedup_key,
                           refund_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (dedup_key) WHERE resolved_at IS NULL DO UPDATE
SET last_seen_at = now(), occurrences = discrepancies.occurrences + 1,
    details = EXCLUDED.details
RETURNING id, occurrences
"""


async def report(
    conn: Conn,
    kind: DiscrepancyKind,
    payment_id: uuid.UUID | None,
    provider_payment_id: str | None,
    details: Mapping[str, str],
    *,
    dedup: str | None = None,
    refund_id: uuid.UUID | None = None,
) -> Reported:
    try:
        row = await conn.fetchrow(
            _REPORT,
            uuid.uuid4(),
            kind.value,
            payment_id,
            provider_payment_id,
            dict(details),
            dedup
            or dedup_key(
                kind,
                format_payment_id(payment_id) if payment_id else None,
                provider_payment_id,
                str(refund_id) if refund_id else None,
            ),
            refund_id,
        )
    except asyncpg.ForeignKeyViolationError:
        if refund_id is not None:
            raise NotFound(f"refund {refund_id} or its payment not found") from None
        assert payment_id is not None
        raise NotFound(f"payment {format_payment_id(payment_id)} not found") from None
    assert row is not None
    return Reported(row["id"], row["occurrences"])
