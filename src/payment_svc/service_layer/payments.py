"""The use cases of PaymentService.

Create: the payment is committed as PENDING first (a duplicate key stops
here), then the provider is asked with no transaction open, then its answer
is recorded. Create and re-drive share one attempt path: shielded from the
caller (a caller that goes away does not lose the provider's answer),
tracked, and drained on SIGTERM. The attempt spends the caller's deadline as
domain/deadlines.py says: the provider call is cut short in time to record
UNKNOWN and answer it; the answer's write is retried until the deadline, and
if the database stays away the caller gets ResultNotRecorded (the payment
converges through the webhook or the reconciler).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from payment_svc.domain.binding import within_redrive_window
from payment_svc.domain.commands import CreatePayment, ListPayments, PageCursor
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResultNotRecorded,
)
from payment_svc.domain.model import (
    NewPayment,
    Payment,
    PaymentEvent,
    ProviderCharge,
    ProviderResult,
    parse_payment_id,
    request_fingerprint,
)
from payment_svc.domain.payment_results import ExistingPayment, duplicate_of
from payment_svc.domain.status import Source
from payment_svc.service_layer import pagination
from payment_svc.service_layer.attempts import Attempts, left, write_until
from payment_svc.service_layer.ids import new_payment_uuid
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.ports import PaymentProvider, PaymentRepository

log = structlog.get_logger("payment_svc.payments")


@dataclass(frozen=True)
class Page:
    payments: list[Payment]
    next_page_token: str


def payment_uuid(text: str) -> uuid.UUID:
    value = parse_payment_id(text)
    if value is None:
        raise InvalidArgument([FieldViolation("payment_id", "must be a payment id (pay_...)")])
    return value


async def record_new(store: PaymentRepository, new: NewPayment) -> Payment:
    """The payment recorded PENDING before any provider call; a key its
    client used before is DuplicatePayment (the same request) or a reuse of
    the key (another one): domain/results.duplicate_of decides, here, never
    in the store."""
    found = await store.insert_new(new)
    if isinstance(found, ExistingPayment):
        raise duplicate_of(found, new)
    return found


class PaymentsService:
    def __init__(
        self,
        store: PaymentRepository,
        provider: PaymentProvider,
        budget: AttemptBudget,
        *,
        page_tokens: PageTokens,
    ) -> None:
        self._store = store
        self._provider = provider
        self._budget = budget
        self._tokens = page_tokens
        self._attempts = Attempts()

    async def create(
        self, client_id: str, cmd: CreatePayment, *, deadline: float | None = None
    ) -> Payment:
        """`deadline`: the caller's, on the running loop's clock (None: none)."""
        cmd.validate()
        payment = await record_new(
            self._store,
            NewPayment(
                id=new_payment_uuid(),
                client_id=client_id,
                idempotency_key=cmd.idempotency_key,
                fingerprint=request_fingerprint(
                    cmd.amount, cmd.currency, cmd.payment_method, cmd.description, cmd.metadata
                ),
                amount=cmd.amount,
                currency=cmd.currency,
                payment_method=cmd.payment_method,
                description=cmd.description,
                metadata=cmd.metadata,
            ),
        )
        structlog.contextvars.bind_contextvars(payment_id=payment.public_id)
        return await self._attempt(payment, Source.API, deadline)

    async def _attempt(self, payment: Payment, source: Source, deadline: float | None) -> Payment:
        """The one attempt path (service_layer/attempts.py): tracked, shielded."""
        return await self._attempts.run(self._ask_and_record(payment, source, deadline))

    async def _ask_and_record(
        self, payment: Payment, source: Source, deadline: float | None
    ) -> Payment:
        loop = asyncio.get_running_loop()
        result = await self._provider.create_payment(
            ProviderCharge(
                payment_id=payment.public_id,
                amount=payment.amount,
                currency=payment.currency,
                payment_method=payment.payment_method,
                description=payment.description,
                idempotency_key=payment.public_id,
            ),
            timeout=self._budget.provider_seconds(left(loop, deadline)),
        )
        recorded = await self._record(payment, result, source, deadline)
        log.info(
            "payment_attempted",
            payment_id=payment.public_id,
            status=recorded.status.value,
            provider_payment_id=recorded.provider_payment_id,
            failure_code=recorded.failure_code,
        )
        return recorded

    async def _record(
        self, payment: Payment, result: ProviderResult, source: Source, deadline: float | None
    ) -> Payment:
        """Records the provider's answer, retrying while the database is
        unavailable, until the caller's deadline (always one try, even past
        it: the caller may be gone, the answer is still worth keeping)."""

        def give_up(exc: BaseException) -> Exception:
            log.error(
                "provider_answer_not_recorded",
                payment_id=payment.public_id,
                status=result.status.value,
                provider_payment_id=result.provider_payment_id,
                error=str(exc) or type(exc).__name__,
            )
            return ResultNotRecorded(payment.public_id)

        loop = asyncio.get_running_loop()
        return await write_until(
            lambda: record_result(self._store, payment, result, source=source),
            self._budget.write_seconds(left(loop, deadline)),
            give_up,
        )

    async def redrive(
        self, payment: Payment, *, window_seconds: float, deadline: float | None = None
    ) -> Payment:
        """Attempts a payment again with its own provider idempotency key
        (the reconciler found the provider never heard of it). Past the
        provider's key retention a new key would charge anew: refused."""
        if payment.status.is_final:
            raise FailedPrecondition(f"payment is {payment.status.value}: nothing to re-drive")
        if not within_redrive_window(payment.created_at, datetime.now(UTC), window_seconds):
            raise FailedPrecondition(
                "payment is older than the provider's idempotency window: re-driving could "
                "charge twice"
            )
        return await self._attempt(payment, Source.RECONCILER, deadline)

    async def drain(self, timeout: float) -> None:
        """Waits for provider attempts still running (their callers may be
        gone), creations and re-drives alike."""
        await self._attempts.drain(timeout)

    async def get(self, client_id: str, payment_id: str) -> Payment:
        return await self._store.get(client_id, payment_uuid(payment_id))

    async def events(self, client_id: str, payment_id: str) -> list[PaymentEvent]:
        return await self._store.events(client_id, payment_uuid(payment_id))

    async def list(self, client_id: str | None, query: ListPayments) -> Page:
        """One client's payments, or (client_id None, the reconciler's view)
        every client's."""
        query.validate()
        filters = pagination.filter_fingerprint(
            sorted(s.value for s in query.statuses), query.created_after, query.created_before
        )
        after = self._tokens.decode(query.page_token, filters)
        limit = query.effective_page_size
        rows = await self._store.search(
            client_id,
            limit=limit + 1,
            statuses=query.statuses,
            created_after=query.created_after,
            created_before=query.created_before,
            after=after,
        )
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = self._tokens.encode(
                PageCursor(sort_key=rows[-1].created_at, id=rows[-1].id), filters
            )
        return Page(rows, token)


__all__ = ["Page", "PaymentProvider", "PaymentsService", "payment_uuid"]
