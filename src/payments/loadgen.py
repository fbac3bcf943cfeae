"""Load generators of the benchmark and what they measure.

    closed_loop   N callers, each sends its next payment when the last returns
    open_loop     payments sent on a fixed schedule, whatever the answers;
                  latency counts from the intended send time, so a stalled
                  service is not hidden by a stalled sender (coordinated omission)
    raw_sql       the statements payment-svc issues per payment, straight
                  through asyncpg: no gRPC, no provider

Each phase runs a warm-up, then a measured window. The client stays lean:
requests are pre-serialized bytes (the fixed fields once, the idempotency
key prepended per call), calls spread over a few channels.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from hdrh.histogram import HdrHistogram

from payment_svc.adapters.store import NewPayment, PaymentStore
from payment_svc.domain.errors import PaymentsError as ServiceError
from payment_svc.domain.model import ProviderResult, new_payment_uuid, request_fingerprint
from payment_svc.domain.status import PaymentStatus, Source
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc

CREATE_METHOD = "/payments.v1.PaymentService/CreatePayment"
_HIGHEST_US = 120_000_000  # two minutes, in microseconds


@dataclass
class Window:
    """The measured part of a phase, in perf_counter_ns time."""

    start_ns: int
    end_ns: int

    @classmethod
    def after_warmup(cls, warmup: float, duration: float) -> Window:
        start = time.perf_counter_ns() + int(warmup * 1e9)
        return cls(start, start + int(duration * 1e9))

    def __contains__(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class PhaseResult:
    """Latency is kept for calls *finished* in the window (closed loop, raw)
    or *scheduled* in it (open loop); throughput counts calls finished in it."""

    window: Window
    by_schedule: bool = False
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _HIGHEST_US, 3))
    finished_ok: int = 0
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)  # code -> first message
    statuses: Counter[str] = field(default_factory=Counter)

    def ok(self, started_ns: int, finished_ns: int, status: str) -> None:
        if finished_ns in self.window:
            self.finished_ok += 1
        if (started_ns if self.by_schedule else finished_ns) in self.window:
            micros = max(1, (finished_ns - started_ns) // 1000)
            self.histogram.record_value(min(micros, _HIGHEST_US))
            self.statuses[status] += 1

    def failed(self, started_ns: int, finished_ns: int, code: str, message: str = "") -> None:
        if (started_ns if self.by_schedule else finished_ns) in self.window:
            self.errors[code] += 1
            self.error_samples.setdefault(code, message)

    @property
    def per_second(self) -> float:
        return self.finished_ok / self.window.seconds

    def latency_us(self) -> dict[str, int | float]:
        h = self.histogram
        if h.get_total_count() == 0:
            return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
        return {
            "p50": h.get_value_at_percentile(50),
            "p90": h.get_value_at_percentile(90),
            "p99": h.get_value_at_percentile(99),
            "max": h.get_max_value(),
            "mean": round(h.get_mean_value(), 1),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.window.seconds, 3),
            "completed": self.finished_ok,
            "payments_per_s": round(self.per_second, 1),
            "latency_us": self.latency_us(),
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "statuses": dict(self.statuses),
        }


class CreateRequests:
    """Serialized CreatePaymentRequests with distinct idempotency keys: the
    fixed fields are encoded once, each key is prepended (protobuf merges
    fields in any order). Keys all have one length, so their tag and length
    prefix is a constant too."""

    def __init__(self, phase: str, amount: int, currency: str, payment_method: str) -> None:
        self._prefix = f"bench-{secrets.token_hex(4)}-{phase}-"
        fixed = svc.CreatePaymentRequest(
            amount=amount, currency=currency, payment_method=payment_method, description="bench"
        )
        self._fixed = fixed.SerializeToString()
        header = svc.CreatePaymentRequest(idempotency_key=self.key(0)).SerializeToString()
        self._header = header[: len(header) - len(self.key(0))]

    def key(self, n: int) -> str:
        return f"{self._prefix}{n:010d}"

    def __call__(self, n: int) -> bytes:
        return self._header + self.key(n).encode() + self._fixed


Create = Callable[[bytes], Awaitable[svc.CreatePaymentResponse]]
Method = grpc.aio.UnaryUnaryMultiCallable[bytes, svc.CreatePaymentResponse]


def create_callers(channels: list[grpc.aio.Channel], token: str, timeout: float) -> list[Create]:
    """One CreatePayment caller per channel, with the metadata built once."""
    metadata = (("authorization", f"Bearer {token}"),)
    callers: list[Create] = []
    for channel in channels:
        method: Method = channel.unary_unary(
            CREATE_METHOD,
            request_serializer=None,  # the requests are bytes already
            response_deserializer=svc.CreatePaymentResponse.FromString,
        )

        async def call(body: bytes, method: Method = method) -> svc.CreatePaymentResponse:
            return await method(body, metadata=metadata, timeout=timeout)

        callers.append(call)
    return callers


_STATUS_NAMES = {value: name for name, value in pb.PaymentStatus.items()}


async def _send(create: Create, body: bytes, started_ns: int, result: PhaseResult) -> None:
    try:
        reply = await create(body)
    except grpc.aio.AioRpcError as err:
        result.failed(started_ns, time.perf_counter_ns(), err.code().name, err.details() or "")
    else:
        result.ok(started_ns, time.perf_counter_ns(), _STATUS_NAMES[reply.payment.status])


async def closed_loop(
    callers: list[Create], requests: CreateRequests, concurrency: int, window: Window
) -> PhaseResult:
    result = PhaseResult(window)
    numbers = itertools.count()

    async def caller(create: Create) -> None:
        while time.perf_counter_ns() < window.end_ns:
            body = requests(next(numbers))
            await _send(create, body, time.perf_counter_ns(), result)

    await asyncio.gather(*(caller(callers[i % len(callers)]) for i in range(concurrency)))
    return result


async def open_loop(
    callers: list[Create],
    requests: CreateRequests,
    rate: float,
    window: Window,
    max_in_flight: int,
) -> PhaseResult:
    result = PhaseResult(window, by_schedule=True)
    interval_ns = 1e9 / rate
    first_ns = time.perf_counter_ns()
    in_flight: set[asyncio.Task[None]] = set()
    for n in itertools.count():
        due_ns = first_ns + int(n * interval_ns)
        if due_ns >= window.end_ns:
            break
        wait_ns = due_ns - time.perf_counter_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        if len(in_flight) >= max_in_flight:
            # The service is so far behind that the client would only pile up.
            result.failed(due_ns, due_ns, "CLIENT_BACKLOG", f"{max_in_flight} calls in flight")
            continue
        if due_ns in window:
            result.sent += 1
        task = asyncio.create_task(_send(callers[n % len(callers)], requests(n), due_ns, result))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    return result


RAW_CLIENT_ID = "bench-raw"


async def raw_sql(
    store: PaymentStore,
    concurrency: int,
    window: Window,
    *,
    amount: int,
    currency: str,
    payment_method: str,
) -> PhaseResult:
    """insert_new, then record_result with a SUCCEEDED answer: per payment,
    the statements payment-svc issues when the provider says yes."""
    result = PhaseResult(window)
    numbers = itertools.count()
    prefix = f"bench-{secrets.token_hex(4)}-raw-"
    fingerprint = request_fingerprint(amount, currency, payment_method, "bench", {})

    async def caller() -> None:
        while time.perf_counter_ns() < window.end_ns:
            n = next(numbers)
            new = NewPayment(
                id=new_payment_uuid(),
                client_id=RAW_CLIENT_ID,
                idempotency_key=f"{prefix}{n:010d}",
                fingerprint=fingerprint,
                amount=amount,
                currency=currency,
                payment_method=payment_method,
                description="bench",
                metadata={},
            )
            answer = ProviderResult(
                status=PaymentStatus.SUCCEEDED,
                provider_payment_id=f"pi_raw_{n}",
                provider_status="succeeded",
                note="provider status succeeded",
            )
            started = time.perf_counter_ns()
            try:
                payment = await store.record_result(
                    await store.insert_new(new), answer, source=Source.API
                )
            except ServiceError as exc:
                result.failed(started, time.perf_counter_ns(), exc.reason, str(exc))
            except asyncpg.PostgresError as exc:
                result.failed(started, time.perf_counter_ns(), type(exc).__name__, str(exc))
            else:
                status = f"PAYMENT_STATUS_{payment.status.value}"
                result.ok(started, time.perf_counter_ns(), status)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return result
