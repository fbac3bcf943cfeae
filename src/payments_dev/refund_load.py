"""Load generators of the benchmark's refunds phase (loadgen.py has the loops).

RefundRequests   serialized RefundPaymentRequests of 1 minor unit each:
                 request n refunds pool payment n mod the pool's size (a
                 pool larger than the callers, so that concurrent refunds
                 rarely wait for one payment's row lock), with a key of its own
refund_sender    RefundPayment over gRPC
raw_refunds      per refund, what payment-svc does without gRPC or the
                 provider: RefundsService on Postgres (the read, the key,
                 what remains, the insert; then the answer's record), the
                 provider answering at once
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import grpc

from payment_svc.adapters.db import Database
from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.adapters.refund_store import RefundStore
from payment_svc.domain.commands import RefundPayment
from payment_svc.domain.deadlines import AttemptBudget
from payment_svc.domain.errors import PaymentsError as ServiceError
from payment_svc.domain.model import (
    NewPayment,
    ProviderResult,
    request_fingerprint,
)
from payment_svc.domain.refunds import ProviderRefundRequest, RefundOutcome, RefundStatus
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ids import new_payment_uuid
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.payments import record_new
from payment_svc.service_layer.refunds import RefundsService
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_dev.loadgen import (
    RAW_CLIENT_ID,
    PhaseResult,
    Pool,
    PoolPayment,
    Send,
    Window,
    _fill,
    closed_loop,
)

REFUND_METHOD = "/payments.v1.PaymentService/RefundPayment"
REFUND_AMOUNT = 1  # minor units: a pool payment takes many refunds

Refund = Callable[[bytes], Awaitable[svc.RefundPaymentResponse]]
_REFUND_STATUS_NAMES = {value: name for name, value in pb.RefundStatus.items()}


class RefundRequests:
    """One serialized body per pool payment; each call prepends its own
    idempotency key (fixed length, so its tag and length prefix are constant)."""

    def __init__(self, phase: str, pool: Sequence[PoolPayment]) -> None:
        self._prefix = f"bench-{secrets.token_hex(4)}-{phase}-"
        self._bodies = [
            svc.RefundPaymentRequest(
                payment_id=p.payment_id, amount=REFUND_AMOUNT
            ).SerializeToString()
            for p in pool
        ]
        header = svc.RefundPaymentRequest(idempotency_key=self.key(0)).SerializeToString()
        self._header = header[: len(header) - len(self.key(0))]

    def key(self, n: int) -> str:
        return f"{self._prefix}{n:010d}"

    def __call__(self, n: int) -> bytes:
        return self._header + self.key(n).encode() + self._bodies[n % len(self._bodies)]


def refund_callers(channels: list[grpc.aio.Channel], token: str, timeout: float) -> list[Refund]:
    metadata = (("authorization", f"Bearer {token}"),)
    callers: list[Refund] = []
    for channel in channels:
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, svc.RefundPaymentResponse] = (
            channel.unary_unary(
                REFUND_METHOD,
                request_serializer=None,
                response_deserializer=svc.RefundPaymentResponse.FromString,
            )
        )

        async def call(
            body: bytes,
            method: grpc.aio.UnaryUnaryMultiCallable[bytes, svc.RefundPaymentResponse] = method,
        ) -> svc.RefundPaymentResponse:
            return await method(body, metadata=metadata, timeout=timeout)

        callers.append(call)
    return callers


def refund_sender(callers: list[Refund], requests: RefundRequests) -> Send:
    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        try:
            reply = await callers[n % len(callers)](requests(n))
        except grpc.aio.AioRpcError as err:
            result.failed(started_ns, time.perf_counter_ns(), err.code().name, err.details() or "")
        else:
            result.ok(started_ns, time.perf_counter_ns(), _REFUND_STATUS_NAMES[reply.refund.status])

    return send


class InstantProvider:
    """The provider of the raw phase: every refund made, at once."""

    async def create_refund(
        self, ask: ProviderRefundRequest, *, timeout: float | None = None
    ) -> RefundOutcome:
        return RefundOutcome(
            RefundStatus.SUCCEEDED, f"re_raw_{ask.refund_id}", "succeeded", note="raw phase"
        )


async def raw_pool(
    db: Database, size: int, concurrency: int, *, amount: int, currency: str
) -> Pool:
    """`size` succeeded payments written as payment-svc writes them."""
    store = PaymentStore(db)
    pool = Pool()
    token = secrets.token_hex(4)

    async def make(n: int) -> None:
        provider_id = f"pi_bench_{token}_refund_{n:010d}"
        new = NewPayment(
            id=new_payment_uuid(),
            client_id=RAW_CLIENT_ID,
            idempotency_key=f"bench-{token}-refundpool-{n:010d}",
            fingerprint=request_fingerprint(amount, currency, "pm_card_visa", "bench", {}),
            amount=amount,
            currency=currency,
            payment_method="pm_card_visa",
            description="bench",
            metadata={},
        )
        answer = ProviderResult(PaymentStatus.SUCCEEDED, provider_id, "succeeded")
        try:
            payment = await record_result(
                store, await record_new(store, new), answer, source=Source.API
            )
        except (ServiceError, asyncpg.PostgresError) as exc:
            pool.errors[getattr(exc, "reason", type(exc).__name__)] += 1
            return
        pool.statuses[f"PAYMENT_STATUS_{payment.status.value}"] += 1
        pool.payments.append(PoolPayment(payment.public_id, provider_id, amount, currency))

    pool.seconds = await _fill(size, concurrency, make)
    return pool


async def raw_refunds(
    db: Database, pool: Sequence[PoolPayment], concurrency: int, window: Window
) -> PhaseResult:
    service = RefundsService(
        RefundStore(db),
        InstantProvider(),
        AttemptBudget(provider_timeout=db.timeout, write_reserve=db.timeout),
    )
    prefix = f"bench-{secrets.token_hex(4)}-rawrefund-"

    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        cmd = RefundPayment(pool[n % len(pool)].payment_id, f"{prefix}{n:010d}", REFUND_AMOUNT)
        try:
            refund = await service.refund(RAW_CLIENT_ID, cmd)
        except ServiceError as exc:
            result.failed(started_ns, time.perf_counter_ns(), exc.reason, str(exc))
        except asyncpg.PostgresError as exc:
            result.failed(started_ns, time.perf_counter_ns(), type(exc).__name__, str(exc))
        else:
            result.ok(started_ns, time.perf_counter_ns(), f"REFUND_STATUS_{refund.status.value}")

    return await closed_loop(send, concurrency, window, unit="refunds")
