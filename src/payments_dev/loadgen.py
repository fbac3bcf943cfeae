"""Load generators of the benchmark and what they measure.

    closed_loop   N senders, each sends its next request when the last returns
    open_loop     requests sent on a fixed schedule, whatever the answers;
                  latency counts from the intended send time, so a stalled
                  service is not hidden by a stalled sender (coordinated omission)

What is sent is a `Send`, one per flow:

    payment_sender   CreatePayment over gRPC (pre-serialized bytes, the fixed
                     fields once, the idempotency key prepended per call)
    webhook_sender   a signed Stripe event POSTed to webhook-gateway over
                     keep-alive connections (StripeEvents: each payment's
                     intent serialized once; per event the evt_ id, `created`
                     and the signature)
    raw_sql          the statements payment-svc issues per payment, and
    raw_events       per event, straight through asyncpg: no gRPC, no HTTP

Each phase runs a warm-up, then a measured window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
from hdrh.histogram import HdrHistogram

from payment_svc.adapters.payment_store import PaymentStore
from payment_svc.adapters.stripe_observations import parse_event
from payment_svc.domain.errors import PaymentsError as ServiceError
from payment_svc.domain.inbox import EventOutcome, InboxEvent
from payment_svc.domain.model import NewPayment, ProviderResult, request_fingerprint
from payment_svc.domain.status import PaymentStatus, Source
from payment_svc.service_layer.ids import new_payment_uuid
from payment_svc.service_layer.payment_results import record_result
from payment_svc.service_layer.payments import record_new
from payment_svc.service_layer.provider_sync import apply_to_inbox
from payment_svc.service_layer.unit_of_work import AbstractUnitOfWork
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments_stripe.signature import HEADER as SIGNATURE_HEADER
from payments_stripe.signature import sign

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
    unit: str = "payments"  # what one call is: names the throughput in JSON
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _HIGHEST_US, 3))
    finished_ok: int = 0
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)  # code -> first message
    statuses: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] | None = None  # cores busy in the window, by process (Linux)

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
            f"{self.unit}_per_s": round(self.per_second, 1),
            "latency_us": self.latency_us(),
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "statuses": dict(self.statuses),
            "cpu_cores": self.cpu,
            "cpu_ms_per_op": self.cpu_ms_per_op(),
        }

    def cpu_ms_per_op(self) -> dict[str, float]:
        """Each process's CPU per operation completed (cores over rate):
        with the machine saturated, what one more operation costs where.
        The machine's total and unattributed CPU are left out."""
        rate = self.per_second
        if rate <= 0 or not self.cpu:
            return {}
        return {
            name: round(cores * 1000 / rate, 3)
            for name, cores in self.cpu.items()
            if name not in ("machine", "other") and cores > 0
        }


# -- where the CPU went (Linux /proc; elsewhere nothing is measured) ----------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks(pid: int) -> tuple[int, int] | None:
    """The parent pid and the CPU ticks (user + system) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _machine_ticks() -> tuple[int, int] | None:
    """Busy and all CPU ticks of the machine, every core summed."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, first[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def local_postmaster(backend_pid: int) -> int | None:
    """The postmaster of a Postgres backend of ours, when it runs on this
    machine (seen from here: its parent is a process named postgres)."""
    backend = _ticks(backend_pid)
    if backend is None:
        return None
    try:
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in (backend_pid, backend[0])}
    except OSError:
        return None
    return backend[0] if names == {"postgres"} else None


# name -> (pid, and its children too): Postgres backends are children of the postmaster.
ProcessGroups = dict[str, tuple[int, bool]]


def _snapshot(groups: ProcessGroups) -> dict[str, dict[int, int]]:
    """CPU ticks per pid of each group."""
    processes: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ticks := _ticks(int(entry.name))) is not None:
            processes[int(entry.name)] = ticks
    return {
        name: {
            pid: ticks
            for pid, (parent, ticks) in processes.items()
            if pid == root or (children and parent == root)
        }
        for name, (root, children) in groups.items()
    }


async def cpu_use(window: Window, groups: ProcessGroups) -> dict[str, float] | None:
    """Cores each group kept busy during the window, the machine's total
    (`machine`), and what none of the groups used (`other`)."""
    if _machine_ticks() is None:
        return None
    # In a thread: reading /proc takes milliseconds, the phase's loop keeps sending.
    await asyncio.sleep(max(0.0, (window.start_ns - time.perf_counter_ns()) / 1e9))
    before = await asyncio.to_thread(_snapshot, groups)
    machine_before = _machine_ticks()
    await asyncio.sleep(max(0.0, (window.end_ns - time.perf_counter_ns()) / 1e9))
    after = await asyncio.to_thread(_snapshot, groups)
    machine_after = _machine_ticks()
    seconds = window.seconds * _CLOCK_TICKS
    use = {
        name: sum(t - before[name].get(pid, t) for pid, t in after[name].items()) / seconds
        for name in groups
    }
    if machine_before is None or machine_after is None:
        return {name: round(cores, 2) for name, cores in use.items()}
    busy = machine_after[0] - machine_before[0]
    every = machine_after[1] - machine_before[1]
    cores = os.cpu_count() or 1
    machine = busy / every * cores if every else 0.0
    use["other"] = max(0.0, machine - sum(use.values()))
    use["machine"] = machine
    return {name: round(value, 2) for name, value in use.items()}


# Sends request number n, counted from started_ns (now, or when it was due),
# and records the outcome in the result.
Send = Callable[[int, int, PhaseResult], Coroutine[Any, Any, None]]


async def closed_loop(
    send: Send, concurrency: int, window: Window, *, unit: str = "payments"
) -> PhaseResult:
    result = PhaseResult(window, unit=unit)
    numbers = itertools.count()

    async def sender() -> None:
        while time.perf_counter_ns() < window.end_ns:
            await send(next(numbers), time.perf_counter_ns(), result)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return result


async def open_loop(
    send: Send, rate: float, window: Window, max_in_flight: int, *, unit: str = "payments"
) -> PhaseResult:
    result = PhaseResult(window, by_schedule=True, unit=unit)
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
        task = asyncio.create_task(send(n, due_ns, result))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    return result


# -- payments over gRPC ---------------------------------------------------------------


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


def payment_sender(callers: list[Create], requests: CreateRequests) -> Send:
    """Request n goes over channel n mod the channel count."""

    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        try:
            reply = await callers[n % len(callers)](requests(n))
        except grpc.aio.AioRpcError as err:
            result.failed(started_ns, time.perf_counter_ns(), err.code().name, err.details() or "")
        else:
            result.ok(started_ns, time.perf_counter_ns(), _STATUS_NAMES[reply.payment.status])

    return send


RAW_CLIENT_ID = "bench-raw"


def _new_payment(prefix: str, n: int, amount: int, currency: str, method: str) -> NewPayment:
    return NewPayment(
        id=new_payment_uuid(),
        client_id=RAW_CLIENT_ID,
        idempotency_key=f"{prefix}{n:010d}",
        fingerprint=request_fingerprint(amount, currency, method, "bench", {}),
        amount=amount,
        currency=currency,
        payment_method=method,
        description="bench",
        metadata={},
    )


async def raw_sql(
    store: PaymentStore,
    concurrency: int,
    window: Window,
    *,
    amount: int,
    currency: str,
    payment_method: str,
) -> PhaseResult:
    """insert_new, then record_result (service_layer/payment_results.py) with a
    SUCCEEDED answer: per payment, the statements payment-svc issues when
    the provider says yes."""
    prefix = f"bench-{secrets.token_hex(4)}-raw-"

    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        new = _new_payment(prefix, n, amount, currency, payment_method)
        answer = ProviderResult(
            status=PaymentStatus.SUCCEEDED,
            provider_payment_id=f"pi_raw_{n}",
            provider_status="succeeded",
            note="provider status succeeded",
        )
        try:
            payment = await record_result(
                store, await record_new(store, new), answer, source=Source.API
            )
        except ServiceError as exc:
            result.failed(started_ns, time.perf_counter_ns(), exc.reason, str(exc))
        except asyncpg.PostgresError as exc:
            result.failed(started_ns, time.perf_counter_ns(), type(exc).__name__, str(exc))
        else:
            status = f"PAYMENT_STATUS_{payment.status.value}"
            result.ok(started_ns, time.perf_counter_ns(), status)

    return await closed_loop(send, concurrency, window)


# -- webhook events --------------------------------------------------------------------

# Processing until the provider settles it: the events of the webhook phases
# are what moves these payments.
POOL_PAYMENT_METHOD = "pm_card_processing"
EVENT_TYPE = "payment_intent.succeeded"
STRIPE_API_VERSION = "2024-06-20"


@dataclass(frozen=True)
class PoolPayment:
    payment_id: str  # pay_...: the intent's metadata.payment_id
    provider_payment_id: str  # pi_...
    amount: int
    currency: str


@dataclass
class Pool:
    """The payments a webhook phase's events are about."""

    payments: list[PoolPayment] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # when created
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "payments": len(self.payments),
            "payment_method": POOL_PAYMENT_METHOD,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "created_in_s": round(self.seconds, 2),
        }


async def _fill(size: int, concurrency: int, make: Callable[[int], Awaitable[None]]) -> float:
    started = time.perf_counter()
    numbers = iter(range(size))

    async def worker() -> None:
        for n in numbers:
            await make(n)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, size)))))
    return time.perf_counter() - started


async def grpc_pool(
    callers: list[Create], requests: CreateRequests, size: int, concurrency: int
) -> Pool:
    """`size` payments created through payment-svc, as a merchant creates them."""
    pool = Pool()

    async def make(n: int) -> None:
        try:
            reply = await callers[n % len(callers)](requests(n))
        except grpc.aio.AioRpcError as err:
            pool.errors[err.code().name] += 1
            return
        payment = reply.payment
        if not payment.provider_payment_id:
            pool.errors["NO_PROVIDER_PAYMENT_ID"] += 1
            return
        pool.statuses[_STATUS_NAMES[payment.status]] += 1
        pool.payments.append(
            PoolPayment(payment.id, payment.provider_payment_id, payment.amount, payment.currency)
        )

    pool.seconds = await _fill(size, concurrency, make)
    return pool


async def store_pool(
    store: PaymentStore, size: int, concurrency: int, *, amount: int, currency: str
) -> Pool:
    """`size` payments written as payment-svc writes a processing answer, for
    the raw phase (its database may not be the stack's)."""
    pool = Pool()
    token = secrets.token_hex(4)
    prefix = f"bench-{token}-rawpool-"

    async def make(n: int) -> None:
        provider_id = f"pi_bench_{token}_{n:010d}"
        answer = ProviderResult(
            status=PaymentStatus.PENDING,
            provider_payment_id=provider_id,
            provider_status="processing",
            note="provider status processing",
        )
        try:
            new = _new_payment(prefix, n, amount, currency, POOL_PAYMENT_METHOD)
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


def _intent(payment: PoolPayment) -> dict[str, Any]:
    """The PaymentIntent as Stripe (and provider-sim) shows it once it succeeded."""
    suffix = payment.provider_payment_id.removeprefix("pi_")
    return {
        "id": payment.provider_payment_id,
        "object": "payment_intent",
        "amount": payment.amount,
        "amount_capturable": 0,
        "amount_received": payment.amount,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "confirmation_method": "automatic",
        "currency": payment.currency.lower(),
        "description": "bench",
        "last_payment_error": None,
        "latest_charge": f"ch_{suffix}",
        "livemode": False,
        "metadata": {"payment_id": payment.payment_id},
        "payment_method": POOL_PAYMENT_METHOD,
        "payment_method_types": ["card"],
        "status": "succeeded",
    }


class StripeEvents:
    """`payment_intent.succeeded` events about a pool's payments, round-robin:
    event n is about payment n mod N with a fresh id, so the first round
    settles every payment (PENDING -> SUCCEEDED) and later rounds confirm the
    state (recorded, status unchanged: the same statements). The envelope
    after `created` is serialized once per payment; per event only the id,
    `created` and (in `signed`) the signature are computed."""

    def __init__(self, phase: str, pool: Sequence[PoolPayment], secret: str) -> None:
        if not pool:
            raise ValueError("the pool has no payment")
        self.prefix = f"evt_bench_{secrets.token_hex(4)}_{phase}_"
        self._secret = secret
        self._tails = [
            b',"data":{"object":'
            + json.dumps(_intent(payment), separators=(",", ":")).encode()
            + b'},"livemode":false,"pending_webhooks":1,'
            + b'"request":{"id":null,"idempotency_key":null},"type":"'
            + EVENT_TYPE.encode()
            + b'"}'
            for payment in pool
        ]

    def event_id(self, n: int) -> str:
        return f"{self.prefix}{n:010d}"

    def body(self, n: int, created: int) -> bytes:
        head = b'{"id":"%s","object":"event","api_version":"%s","created":%d' % (
            self.event_id(n).encode(),
            STRIPE_API_VERSION.encode(),
            created,
        )
        return head + self._tails[n % len(self._tails)]

    def signed(self, n: int) -> tuple[bytes, dict[str, str]]:
        """The body and its headers, signed now (as the provider signs each attempt)."""
        now = int(time.time())
        body = self.body(n, now)
        return body, {
            SIGNATURE_HEADER: sign(body, self._secret, now),
            "Content-Type": "application/json; charset=utf-8",
        }


def _reply_kind(reply: bytes) -> str:
    try:
        duplicate = json.loads(reply).get("duplicate") is True
    except (ValueError, AttributeError):
        return "acknowledged (unreadable answer)"
    return "duplicate" if duplicate else "acknowledged"


def webhook_sender(
    session: aiohttp.ClientSession, url: str, events: StripeEvents, acknowledged: list[int]
) -> Send:
    """POSTs event n; any 2xx is an acknowledgement (n is appended to
    `acknowledged`, warm-up included), anything else an error by status."""

    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        body, headers = events.signed(n)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                reply = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = str(exc) or type(exc).__name__
            result.failed(started_ns, time.perf_counter_ns(), type(exc).__name__, message)
            return
        finished_ns = time.perf_counter_ns()
        if 200 <= response.status < 300:
            acknowledged.append(n)
            result.ok(started_ns, finished_ns, _reply_kind(reply))
        else:
            text = reply[:300].decode(errors="replace")
            result.failed(started_ns, finished_ns, f"HTTP_{response.status}", text)

    return send


def _outcome(outcome: EventOutcome) -> str:
    if outcome.duplicate:
        return "duplicate"
    if outcome.payment_id is None:
        return "unmatched"
    return "applied" if outcome.applied else "recorded"


async def raw_events(
    uow: Callable[[], AbstractUnitOfWork],
    events: StripeEvents,
    concurrency: int,
    window: Window,
) -> PhaseResult:
    """Per event what payment-svc does with a forwarded one: parse, then one
    unit of work of provider_sync.apply_to_inbox (its SQL, no gRPC)."""

    async def send(n: int, started_ns: int, result: PhaseResult) -> None:
        try:
            parsed = parse_event(events.body(n, int(time.time())))
            outcome = await apply_to_inbox(
                uow,
                InboxEvent(
                    provider_event_id=parsed.id,
                    event_type=parsed.type,
                    created=parsed.created,
                    stored_json=parsed.stored_json,
                    observation=parsed.observation,
                    source=Source.WEBHOOK,
                ),
            )
        except ServiceError as exc:
            result.failed(started_ns, time.perf_counter_ns(), exc.reason, str(exc))
        except asyncpg.PostgresError as exc:
            result.failed(started_ns, time.perf_counter_ns(), type(exc).__name__, str(exc))
        else:
            result.ok(started_ns, time.perf_counter_ns(), _outcome(outcome))

    return await closed_loop(send, concurrency, window, unit="events")
