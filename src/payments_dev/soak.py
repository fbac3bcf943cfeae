"""`payments soak`: payments under injected faults, then the money checked.

    stack        its own, in a temp dir on free ports, always on an embedded
                 Postgres (DATABASE_URL is not used: the soak crash-restarts
                 the server, so it must be one it controls); no scheduled
                 reconciler
    load         N payments started at --rate, at most --concurrency in flight;
                 each caller retries the same request (same idempotency key)
                 on UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, ... until it is
                 answered: a reply, or ALREADY_EXISTS naming the payment and
                 its status; some keys get a concurrent twin caller
    faults       provider-sim: latency, 5xx before charging, timeouts after
                 charging (longer than PROVIDER_TIMEOUT_SECONDS), webhooks
                 dropped (few attempts: some are lost for good), duplicated,
                 reordered; during the load, in order: payment-svc SIGKILLed
                 and restarted, Postgres stopped in immediate mode (a crash)
                 and started, payment-svc SIGKILLed and restarted
    settle       API faults off; processing intents settled at the provider
                 (succeeded or failed), some succeeded ones refunded (whole,
                 in part) or disputed, their webhooks still faulty
    refunds      RefundPayment through our API on other succeeded payments,
                 some left pending by the provider: whole, two partial, one
                 key sent by two callers at once, two keys racing for the
                 whole; provider-sim SIGKILLed and restarted (its books on
                 disk) while they are in flight; then its pending refunds
                 settle (some fail), and some refunds that succeeded fail
                 later (as on Stripe); then each caller asks GetPayment once
                 (more answers for I5)
    reconcile    one `reconciler --once` pass, grace 0
    check        the invariants (payments_dev.soak_invariants) against the
                 provider's ledger (GET /_sim/ledger) and our database

Every choice (amounts, currencies, cards, twins, when each fault strikes,
provider-sim's own faults) comes from --seed; timing still varies from run
to run, so a failing seed reproduces the same plan, and usually the failure.
Development tooling: imported only by `payments soak` (it needs pgserver).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc

from payments.errors import AlreadyExists, from_rpc_error
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments_dev.soak_invariants import (
    CrashRecord,
    Intent,
    OurRefund,
    Ours,
    Told,
    Verdict,
    check_all,
)
from payments_dev.stack import DEV_TOKENS, Stack, StackConfig, _bin, wait_serving
from payments_dev.supervisor import describe_failure

Progress = Callable[[str], None]

# What a caller retries: the call may or may not have happened.
RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        # Never the right answer (an outage is UNAVAILABLE), but a caller
        # would retry it; it is counted and shown.
        grpc.StatusCode.INTERNAL,
    }
)
CURRENCIES = ("USD", "USD", "EUR", "GBP", "JPY")
# Weighted: mostly successes, some declines, some settled later.
CARDS = (
    *("pm_card_visa",) * 6,
    "pm_card_mastercard",
    "pm_card_chargeDeclined",
    "pm_card_visa_chargeDeclinedInsufficientFunds",
    *("pm_card_processing",) * 2,
)
PROVIDER_TIMEOUT_S = 1.5
SIM_FAULTS: dict[str, Any] = {
    "latency_ms": 40,
    "error_rate": 0.02,
    "timeout_after_charge_rate": 0.03,
    # Longer than payment-svc's provider timeout: the payment becomes UNKNOWN
    # with the charge made.
    "timeout_after_charge_hold_ms": 3000,
    "webhook_drop_rate": 0.2,
    "webhook_duplicate_rate": 0.15,
    "webhook_reorder": True,
}
API_FAULTS_OFF = {"latency_ms": 0, "error_rate": 0.0, "timeout_after_charge_rate": 0.0}
_SIM_ENV = {
    # Two attempts, quickly: a dropped webhook is retried once, and one sent
    # while payment-svc is down is lost for good (the reconciler's job).
    "PROVIDER_SIM_WEBHOOK_MAX_ATTEMPTS": "2",
    "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "200",
    "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS": "1000",
    "PROVIDER_SIM_WEBHOOK_TIMEOUT_MS": "5000",
}
SETTLE_SUCCEEDS = 0.7
# Provider-side reversals of succeeded payments, made after the load with the
# webhook faults still on (a reversal's event may overtake the success's).
REVERSALS = (("refund", 0.04), ("partial_refund", 0.04), ("dispute", 0.02))
# A fault waits (a little) for this many calls in flight, so that it cuts some.
STRIKE_IN_FLIGHT = 3
STRIKE_WAIT_S = 3.0
QUIESCE_TIMEOUT_S = 60.0
PASS_TIMEOUT_S = 600.0


class SoakError(Exception):
    """The soak could not run (the stack did not start, a restart failed)."""


@dataclass(frozen=True)
class SoakOptions:
    payments: int = 200
    seed: int = 1
    rate: float = 20.0  # payments started per second
    concurrency: int = 32  # callers in flight at most
    twin_rate: float = 0.1  # keys sent by two callers at once
    call_timeout: float = 5.0  # deadline of one CreatePayment
    give_up_after: float = 180.0  # a caller stops retrying after this long
    keep_dir: Path | None = None  # keep the stack's logs and data here
    # Some succeeded payments refunded in part at the provider (they must stay
    # SUCCEEDED with amount_reversed, SPEC §4); off: those planned are skipped.
    partial_refunds: bool = True
    # Refunds through our API in flight while provider-sim restarts;
    # off: no refunds phase.
    refunds: bool = True


@dataclass(frozen=True)
class PaymentPlan:
    n: int
    key: str
    amount: int
    currency: str
    card: str
    twin: bool
    settle_outcome: str  # if it is still processing at the end
    reversal: str | None  # if it succeeded: refund, partial_refund, dispute

    def request(self) -> svc.CreatePaymentRequest:
        return svc.CreatePaymentRequest(
            idempotency_key=self.key,
            amount=self.amount,
            currency=self.currency,
            payment_method=self.card,
            description="soak",
        )


def _reversal(draw: float) -> str | None:
    for kind, share in REVERSALS:
        if draw < share:
            return kind
        draw -= share
    return None


@dataclass(frozen=True)
class FaultPlan:
    """At which started payment each fault strikes, and how long a killed
    payment-svc stays down."""

    kill_first_at: int
    crash_at: int
    kill_second_at: int
    downtimes: tuple[float, float]
    postgres_downtime: float


def plan(options: SoakOptions) -> tuple[list[PaymentPlan], FaultPlan]:
    n_total = options.payments
    payments = []
    for n in range(n_total):
        rng = random.Random(f"{options.seed}/{n}")
        currency = rng.choice(CURRENCIES)
        payments.append(
            PaymentPlan(
                n=n,
                key=f"soak-{options.seed}-{n:07d}",
                amount=rng.randint(50, 50_000) * (1 if currency != "JPY" else 10),
                currency=currency,
                card=rng.choice(CARDS),
                twin=rng.random() < options.twin_rate,
                settle_outcome="succeeded" if rng.random() < SETTLE_SUCCEEDS else "failed",
                reversal=_reversal(rng.random()),
            )
        )
    rng = random.Random(f"{options.seed}/faults")

    def at(fraction: float) -> int:
        return min(n_total - 1, int(n_total * (fraction + rng.uniform(-0.05, 0.05))))

    faults = FaultPlan(
        kill_first_at=at(0.2),
        crash_at=at(0.45),
        kill_second_at=at(0.7),
        downtimes=(rng.uniform(0.2, 1.5), rng.uniform(0.2, 1.5)),
        postgres_downtime=rng.uniform(0.2, 1.0),
    )
    return payments, faults


@dataclass
class Figures:
    started_at: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0
    calls: int = 0
    retries: int = 0
    twins: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # OK, ALREADY_EXISTS, UNAVAILABLE...
    told_statuses: Counter[str] = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)
    settled: Counter[str] = field(default_factory=Counter)
    webhooks: dict[str, Any] = field(default_factory=dict)
    made_unknown: int = 0
    reconciler_exit: int | None = None
    reconciler_runs: list[dict[str, Any]] = field(default_factory=list)
    discrepancies: dict[str, int] = field(default_factory=dict)
    # The refunds phase: what RefundPayment answered (status or reason), and
    # what the provider then did to refunds (settled, failed later).
    refund_answers: Counter[str] = field(default_factory=Counter)
    refund_moves: Counter[str] = field(default_factory=Counter)


@dataclass
class SoakReport:
    options: SoakOptions
    verdicts: list[Verdict]
    callers: Verdict
    figures: Figures
    seconds: float
    kept: Path | None

    @property
    def passed(self) -> bool:
        return self.callers.passed and all(v.passed for v in self.verdicts)

    def lines(self) -> list[str]:
        o, f = self.options, self.figures
        rate = o.payments / f.load_seconds if f.load_seconds else 0.0
        answers = ", ".join(f"{code} {n}" for code, n in f.answers.most_common())
        told = ", ".join(f"{s} {n}" for s, n in sorted(f.told_statuses.items()))
        hooks = f.webhooks
        runs = ", ".join(
            f"{r.get('job')} scanned {r.get('scanned')} fixed {r.get('fixed')}"
            f" discrepancies {r.get('discrepancies')} errors {r.get('errors')}"
            for r in f.reconciler_runs
        )
        open_kinds = ", ".join(f"{k} {n}" for k, n in sorted(f.discrepancies.items())) or "none"
        lines = [v.line() for v in self.verdicts]
        lines.append(self.callers.line())
        lines += [
            f"payments {o.payments} (seed {o.seed}, twin callers {f.twins}), "
            f"duration {self.seconds:.1f} s, load {f.load_seconds:.1f} s at {rate:.1f} payments/s"
            f" (asked {o.rate:g}/s, {o.concurrency} in flight at most)",
            f"calls {f.calls}, retries {f.retries}; answers: {answers}",
            f"told: {told}",
            f"faults: provider latency {SIM_FAULTS['latency_ms']} ms, 5xx before charging "
            f"{SIM_FAULTS['error_rate']:.0%}, timeout after charging "
            f"{SIM_FAULTS['timeout_after_charge_rate']:.0%}; payments that went UNKNOWN "
            f"{f.made_unknown}; webhooks dropped {hooks.get('dropped', 0)}, duplicated "
            f"{hooks.get('duplicated', 0)}, lost for good {hooks.get('gave_up', 0)}, "
            f"delivered {hooks.get('delivered', 0)}, reordered (on)",
            f"kills: {'; '.join(f.kills) or 'none'}",
            "settled and reversed at the provider: "
            + (", ".join(f"{k} {n}" for k, n in sorted(f.settled.items())) or "none"),
            "refunds through our API: "
            + (", ".join(f"{k} {n}" for k, n in sorted(f.refund_answers.items())) or "none")
            + "; then at the provider: "
            + (", ".join(f"{k} {n}" for k, n in sorted(f.refund_moves.items())) or "none"),
            f"reconciler pass: exit {f.reconciler_exit}; {runs or 'no runs reported'}; "
            f"open discrepancies: {open_kinds}",
        ]
        if not self.passed:
            lines.append(
                f"reproduce: payments soak --payments {o.payments} --seed {o.seed} "
                f"--rate {o.rate:g} --concurrency {o.concurrency}"
                + ("" if o.partial_refunds else " --no-partial-refunds")
                + ("" if o.refunds else " --no-refunds")
            )
        if self.kept is not None:
            lines.append(f"logs and data kept in {self.kept}")
        return lines


class Callers:
    """Every caller of the run, and every answer they got."""

    def __init__(self, channel: grpc.aio.Channel, options: SoakOptions, figures: Figures) -> None:
        self._stub = svc_grpc.PaymentServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {DEV_TOKENS['merchant']}"),)
        self._options = options
        self._figures = figures
        self.told: list[Told] = []
        self.unanswered: list[str] = []  # keys whose caller gave up, and why
        self.unexpected: list[str] = []  # answers a correct service never gives
        self.in_flight = 0  # CreatePayment calls awaiting an answer
        self._clock = 0  # ticks at every call sent and every answer received

    def acknowledged(self) -> dict[str, str]:
        """Payment id -> the latest status told, of every payment told so far."""
        latest: dict[str, str] = {}
        for t in self.told:
            latest[t.payment_id] = t.status
        return latest

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _tell(self, key: str, payment_id: str, status: str, sent: int) -> None:
        status = status.removeprefix("PAYMENT_STATUS_")
        self._figures.told_statuses[status or "(none)"] += 1
        self.told.append(Told(key, payment_id, status, self._tick(), sent))

    async def call(self, payment: PaymentPlan, rng: random.Random) -> None:
        request = payment.request()
        f = self._figures
        began = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            f.calls += 1
            self.in_flight += 1
            sent = self._tick()
            try:
                reply = await self._stub.CreatePayment(
                    request, metadata=self._metadata, timeout=self._options.call_timeout
                )
            except grpc.aio.AioRpcError as err:
                self.in_flight -= 1
                code = err.code()
                f.answers[code.name] += 1
                error = from_rpc_error(err)
                if isinstance(error, AlreadyExists) and error.payment_id:
                    if error.reason != "DUPLICATE_PAYMENT":
                        self.unexpected.append(f"{payment.key}: {error.reason} on a retry")
                    self._tell(
                        payment.key, error.payment_id, error.metadata.get("status", ""), sent
                    )
                    return
                if code == grpc.StatusCode.INTERNAL:
                    self.unexpected.append(f"{payment.key}: INTERNAL {err.details()}")
                if code not in RETRIED:
                    self.unexpected.append(f"{payment.key}: {code.name} {err.details()}")
                    return
                if time.monotonic() - began > self._options.give_up_after:
                    self.unanswered.append(f"{payment.key}: still {code.name} {err.details()}")
                    return
                f.retries += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + rng.random()))
                continue
            self.in_flight -= 1
            f.answers["OK"] += 1
            status = pb.PaymentStatus.Name(reply.payment.status)
            self._tell(payment.key, reply.payment.id, status, sent)
            return

    async def look(self, key: str, payment_id: str, rng: random.Random) -> None:
        """GetPayment, as a caller polls for the outcome: one more answer."""
        request = svc.GetPaymentRequest(payment_id=payment_id)
        for attempt in range(1, 20):
            self._figures.calls += 1
            sent = self._tick()
            try:
                reply = await self._stub.GetPayment(
                    request, metadata=self._metadata, timeout=self._options.call_timeout
                )
            except grpc.aio.AioRpcError as err:
                self._figures.answers[f"GetPayment {err.code().name}"] += 1
                if err.code() not in RETRIED:
                    self.unexpected.append(f"GetPayment {payment_id}: {err.code().name}")
                    return
                self._figures.retries += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + rng.random()))
                continue
            self._figures.answers["GetPayment OK"] += 1
            self._tell(key, reply.payment.id, pb.PaymentStatus.Name(reply.payment.status), sent)
            return
        self.unanswered.append(f"GetPayment {payment_id}: no answer after 19 attempts")

    async def look_all(self, concurrency: int, seed: int) -> None:
        """Every payment a caller was told of, asked for once more."""
        gate = asyncio.Semaphore(concurrency)
        told = {t.payment_id: t.key for t in self.told}

        async def one(payment_id: str, key: str) -> None:
            async with gate:
                await self.look(key, payment_id, random.Random(f"{seed}/look/{key}"))

        await asyncio.gather(*(one(pid, key) for pid, key in told.items()))

    def verdict(self, keys: int) -> Verdict:
        failures = [*self.unanswered, *self.unexpected]
        detail = (
            f"{keys} keys, {len(self.unanswered)} callers gave up, "
            f"{len(self.unexpected)} answers a correct service never gives"
        )
        if failures:
            shown = "; ".join(failures[:5])
            detail += f": {shown}" + (f" (+{len(failures) - 5} more)" if len(failures) > 5 else "")
        return Verdict("C", "every caller learned its outcome", not failures, detail)


# -- the stack and its faults ---------------------------------------------------------


class Harness:
    """The stack, and the blocking moves on it (run in threads: callers go on)."""

    def __init__(self, root: Path, options: SoakOptions) -> None:
        self.root = root
        self.options = options
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(
            StackConfig.on_free_ports(
                database_url=None,  # always our own: it is crash-restarted
                data_dir=root,
                log_dir=self.logs,
                # provider-sim's books on disk: it is SIGKILLed and restarted
                sim_state=root / "provider-sim.sqlite3",
                extra_env={
                    "PROVIDER_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT_S),
                    "PROVIDER_SIM_SEED": str(options.seed),
                    "LOG_LEVEL": "INFO",
                    **_SIM_ENV,
                },
            )
        )

    def start(self) -> None:
        self.stack.start_database()
        self.stack.start_payment_svc()
        self.stack.start_webhook_gateway()
        self.stack.start_provider_sim()

    def kill_payment_svc(self, downtime: float) -> None:
        proc = self.stack.processes["payment-svc"]
        proc.signal(signal.SIGKILL)
        proc.stop()  # reaps it, closes its log
        time.sleep(downtime)
        self.stack.start_payment_svc()

    def kill_provider_sim(self, downtime: float) -> None:
        """SIGKILL and restart: its books are on disk (the stack's sim_state)."""
        proc = self.stack.processes["provider-sim"]
        proc.signal(signal.SIGKILL)
        proc.stop()
        time.sleep(downtime)
        self.stack.start_provider_sim()

    def crash_postgres(self, downtime: float) -> None:
        assert self.stack.postgres is not None
        self.stack.postgres.stop("immediate")
        time.sleep(downtime)
        self.stack.postgres.start()

    def reconcile_once(self) -> tuple[int, list[dict[str, Any]]]:
        env = {
            **os.environ,
            **self.stack.env(),
            "RECONCILER_GRACE_SECONDS": "0",
            "RECONCILER_METRICS_LISTEN": "127.0.0.1:0",
        }
        with open(self.logs / "reconciler-once.log", "wb") as log:
            result = subprocess.run(
                [_bin("reconciler"), "--once"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=PASS_TIMEOUT_S,
                check=False,
            )
            log.write(result.stdout)
        runs: list[dict[str, Any]] = []
        for line in result.stdout.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if (
                    isinstance(record, dict)
                    and record.get("event") == "reconciliation_pass_finished"
                ):
                    runs = list(record.get("runs") or [])
        return result.returncode, runs

    def stop(self) -> None:
        self.stack.stop()

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


class Sim:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._http = session
        self._base = base

    async def get(self, path: str) -> Any:
        async with self._http.get(self._base + path) as r:
            r.raise_for_status()
            return await r.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self._http.post(self._base + path, json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def ledger(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (await self.get("/_sim/ledger"))["payment_intents"]
        return rows

    async def delivered_events(self) -> set[str]:
        rows = (await self.get("/_sim/events"))["events"]
        return {row["id"] for row in rows if row.get("delivered")}

    async def quiesce(self, progress: Progress) -> None:
        """Until no webhook delivery is pending (or QUIESCE_TIMEOUT_S)."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        while True:
            pending = int((await self.get("/_sim/webhooks"))["stats"]["pending"])
            if pending == 0:
                return
            if time.monotonic() > deadline:
                progress(f"{pending} webhook deliveries still pending; going on")
                return
            await asyncio.sleep(0.2)


# The refunds phase: each chosen payment gets one kind, in turn.
REFUND_KINDS = ("whole", "two_partial", "one_key_two_callers", "two_keys_racing", "whole")
REFUND_KINDS_N = len(REFUND_KINDS)
# RefundPayment's refusals a correct service gives in the refunds phase: a
# repeated key (the twin callers), and no more to refund (the racing keys).
REFUND_REFUSALS = frozenset(
    {"DUPLICATE_REFUND", "REFUND_EXCEEDS_REMAINING", "PAYMENT_NOT_REFUNDABLE"}
)


class Refunder:
    """RefundPayment callers: each retries its key until it is answered."""

    def __init__(
        self, channel: grpc.aio.Channel, options: SoakOptions, figures: Figures, callers: Callers
    ) -> None:
        self._stub = svc_grpc.PaymentServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {DEV_TOKENS['merchant']}"),)
        self._options = options
        self._figures = figures
        self._callers = callers

    async def refund(self, kind: str, p: Ours, seed: str) -> None:
        rng = random.Random(seed)
        key = f"soak-refund-{seed}"
        if kind == "whole":
            await self.call(p, key, 0, rng)
        elif kind == "two_partial":
            await self.call(p, key + "-a", max(1, p.amount // 3), rng)
            await self.call(p, key + "-b", max(1, p.amount // 3), rng)
        elif kind == "one_key_two_callers":
            amount = max(1, p.amount // 2)
            await asyncio.gather(self.call(p, key, amount, rng), self.call(p, key, amount, rng))
        else:  # two keys racing for the whole amount: one gets it
            await asyncio.gather(self.call(p, key + "-a", 0, rng), self.call(p, key + "-b", 0, rng))

    async def call(self, p: Ours, key: str, amount: int, rng: random.Random) -> None:
        request = svc.RefundPaymentRequest(
            payment_id=p.payment_id, idempotency_key=key, amount=amount
        )
        answers = self._figures.refund_answers
        began = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await self._stub.RefundPayment(
                    request, metadata=self._metadata, timeout=self._options.call_timeout
                )
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                reason = getattr(error, "reason", "") or err.code().name
                if err.code() in RETRIED and err.code() != grpc.StatusCode.INTERNAL:
                    if time.monotonic() - began > self._options.give_up_after:
                        answers[f"gave up ({reason})"] += 1
                        self._callers.unanswered.append(f"refund {key}: still {reason}")
                        return
                    await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + rng.random()))
                    continue
                if reason in REFUND_REFUSALS:
                    answers[reason] += 1
                else:
                    answers[f"UNEXPECTED {reason}"] += 1
                    self._callers.unexpected.append(f"refund {key}: {reason} {err.details()}")
                return
            answers[pb.RefundStatus.Name(reply.refund.status).removeprefix("REFUND_STATUS_")] += 1
            return


async def _until_answering(sim: Sim, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await sim.get("/_sim/faults")
            return
        except (aiohttp.ClientError, OSError):
            if time.monotonic() > deadline:
                raise SoakError("provider-sim did not answer after its restart") from None
            await asyncio.sleep(0.1)


_OUR_REFUNDS_SQL = """
SELECT 'rfd_' || replace(r.id::text, '-', '') AS refund_id,
       'pay_' || replace(r.payment_id::text, '-', '') AS payment_id,
       r.provider_refund_id, r.status, r.amount
FROM refunds r
"""


async def _our_refunds(dsn: str) -> list[OurRefund]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(_OUR_REFUNDS_SQL)
    finally:
        await conn.close()
    return [
        OurRefund(
            r["refund_id"], r["payment_id"], r["provider_refund_id"], r["status"], r["amount"]
        )
        for r in rows
    ]


_OURS_SQL = """
SELECT 'pay_' || replace(id::text, '-', '') AS payment_id, idempotency_key, status,
       amount, currency, provider_payment_id, amount_reversed
FROM payments
"""


async def _ours(dsn: str) -> list[Ours]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(_OURS_SQL)
    finally:
        await conn.close()
    return [
        Ours(
            r["payment_id"],
            r["idempotency_key"],
            r["status"],
            r["amount"],
            r["currency"].strip(),
            r["provider_payment_id"],
            r["amount_reversed"],
        )
        for r in rows
    ]


async def _after_restart(dsn: str, crash: CrashRecord) -> None:
    """What the restarted database holds of what was acknowledged before the
    crash, read before anything else writes (the reconciler is not running)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT 'pay_' || replace(id::text, '-', '') AS pid, status FROM payments"
            " WHERE 'pay_' || replace(id::text, '-', '') = any($1::text[])",
            list(crash.acknowledged),
        )
        crash.found = {r["pid"]: r["status"] for r in rows}
        events = await conn.fetch(
            "SELECT provider_event_id FROM provider_events WHERE provider_event_id = any($1)",
            list(crash.delivered_events),
        )
        crash.found_events = {r["provider_event_id"] for r in events}
    finally:
        await conn.close()


async def _extra_figures(dsn: str, figures: Figures) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        figures.made_unknown = await conn.fetchval(
            "SELECT count(DISTINCT payment_id) FROM payment_events WHERE to_status = 'UNKNOWN'"
        )
        rows = await conn.fetch(
            "SELECT kind, count(*) AS n FROM discrepancies WHERE resolved_at IS NULL GROUP BY kind"
        )
        figures.discrepancies = {r["kind"]: r["n"] for r in rows}
    finally:
        await conn.close()


class Soak:
    def __init__(self, options: SoakOptions, harness: Harness, progress: Progress) -> None:
        self.options = options
        self.harness = harness
        self.progress = progress
        self.figures = Figures()
        self.crash = CrashRecord()
        self.payments, self.faults = plan(options)
        self._started = asyncio.Event()  # set whenever another payment starts
        self._count = 0
        self.in_flight_at_faults: list[int] = []
        # Provider payments a refund of which the provider failed after it
        # had succeeded: REVERSED may go back to SUCCEEDED (I5).
        self.failed_later: set[str] = set()

    async def _until_started(self, n: int, callers: Callers) -> None:
        """Until payment n has started, then (for up to STRIKE_WAIT_S) until
        STRIKE_IN_FLIGHT calls are in flight: a fault strikes mid-call."""
        while self._count <= n:
            self._started.clear()
            await self._started.wait()
        deadline = time.monotonic() + STRIKE_WAIT_S
        # A counter polled for a few seconds at most, three times a run.
        while callers.in_flight < STRIKE_IN_FLIGHT and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        self.in_flight_at_faults.append(callers.in_flight)

    async def _inject(self, sim: Sim, callers: Callers) -> None:
        f = self.faults
        await self._until_started(f.kill_first_at, callers)
        await self._kill_payment_svc(1, f.kill_first_at, f.downtimes[0])
        await self._until_started(f.crash_at, callers)
        await self._crash_postgres(sim, callers)
        await self._until_started(f.kill_second_at, callers)
        await self._kill_payment_svc(2, f.kill_second_at, f.downtimes[1])

    async def _kill_payment_svc(self, number: int, at: int, downtime: float) -> None:
        self.progress(f"payment {at}: SIGKILL payment-svc, restart after {downtime:.1f}s")
        began = time.monotonic()
        await asyncio.to_thread(self.harness.kill_payment_svc, downtime)
        await wait_serving(self.harness.stack.grpc_target, 60)
        took = time.monotonic() - began
        self.figures.kills.append(
            f"payment-svc SIGKILL #{number} at payment {at}, {self.in_flight_at_faults[-1]} "
            f"calls in flight (serving again after {took:.1f} s)"
        )

    async def _crash_postgres(self, sim: Sim, callers: Callers) -> None:
        at = self.faults.crash_at
        downtime = self.faults.postgres_downtime
        self.progress(
            f"payment {at}: Postgres stopped in immediate mode, start after {downtime:.1f}s"
        )
        self.crash.delivered_events = await sim.delivered_events()
        self.crash.acknowledged = callers.acknowledged()
        began = time.monotonic()
        await asyncio.to_thread(self.harness.crash_postgres, downtime)
        self.crash.happened = True
        await _after_restart(self.harness.stack.database_url, self.crash)
        took = time.monotonic() - began
        self.figures.kills.append(
            f"Postgres immediate stop at payment {at}, {self.in_flight_at_faults[-1]} calls in "
            f"flight (accepting again after {took:.1f} s)"
        )

    async def _load(self, callers: Callers) -> None:
        o = self.options
        gate = asyncio.Semaphore(o.concurrency)
        interval = 1.0 / o.rate

        async def one(payment: PaymentPlan, caller: int) -> None:
            async with gate:
                await callers.call(payment, random.Random(f"{o.seed}/{payment.n}/{caller}"))

        tasks: list[asyncio.Task[None]] = []
        first = time.monotonic()
        for payment in self.payments:
            wait = first + payment.n * interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(payment, 0)))
            if payment.twin:
                self.figures.twins += 1
                tasks.append(asyncio.create_task(one(payment, 1)))
            self._count += 1
            self._started.set()
        await asyncio.gather(*tasks)
        self.figures.load_seconds = time.monotonic() - first

    async def _settle(self, sim: Sim) -> None:
        """Processing intents end as the plan of their payment says, then some
        succeeded ones are refunded (whole or in part) or disputed (the
        provider knows our payment id; its key is in our database)."""
        ours = await _ours(self.harness.stack.database_url)
        keys = {p.payment_id: p.idempotency_key for p in ours}
        plans = {p.key: p for p in self.payments}

        def plan_of(row: dict[str, Any]) -> PaymentPlan | None:
            payment_id = (row.get("metadata") or {}).get("payment_id", "")
            return plans.get(keys.get(payment_id, ""))

        for row in await sim.ledger():
            if row["status"] != "processing":
                continue
            payment = plan_of(row)
            outcome = payment.settle_outcome if payment is not None else "succeeded"
            await sim.post(f"/_sim/payment_intents/{row['id']}/settle", {"outcome": outcome})
            self.figures.settled[outcome] += 1
        for row in await sim.ledger():
            payment = plan_of(row)
            if row["status"] != "succeeded" or payment is None or payment.reversal is None:
                continue
            if payment.reversal == "partial_refund" and not self.options.partial_refunds:
                continue
            path = f"/_sim/payment_intents/{row['id']}"
            if payment.reversal == "dispute":
                await sim.post(f"{path}/dispute", {})
            elif payment.reversal == "refund":
                await sim.post(f"{path}/refund", {})
            else:
                await sim.post(f"{path}/refund", {"amount": max(1, row["amount"] // 3)})
            self.figures.settled[payment.reversal] += 1

    async def _refunds(self, sim: Sim, channel: grpc.aio.Channel, callers: Callers) -> None:
        """Refunds through our API on succeeded payments planned without a
        provider-side reversal, some left pending by the provider, with
        provider-sim SIGKILLed and restarted while they are in flight; then
        the provider settles the pending ones (some fail) and fails some
        that had succeeded (as Stripe does for a closed card)."""
        ours = [
            p
            for p in await _ours(self.harness.stack.database_url)
            if p.status == "SUCCEEDED" and p.amount_reversed == 0
        ]
        planned = {p.key for p in self.payments if p.reversal is None}
        chosen = sorted(
            (p for p in ours if p.idempotency_key in planned), key=lambda p: p.idempotency_key
        )[: max(REFUND_KINDS_N, self.options.payments // 8)]
        if not chosen:
            return
        self.progress(
            f"{len(chosen)} payments refunded through our API; provider-sim restarted meanwhile"
        )
        await sim.post("/_sim/faults", {"refund_pending_rate": 0.4, "latency_ms": 30})
        refunder = Refunder(channel, self.options, self.figures, callers)
        gate = asyncio.Semaphore(8)
        started = asyncio.Event()
        count = 0

        async def one(n: int, p: Ours) -> None:
            nonlocal count
            async with gate:
                count += 1
                if count >= len(chosen) // 2:
                    started.set()
                await refunder.refund(
                    REFUND_KINDS[n % REFUND_KINDS_N], p, f"{self.options.seed}/{n}"
                )

        async def restart() -> None:
            await started.wait()
            await asyncio.sleep(0.05)
            began = time.monotonic()
            await asyncio.to_thread(self.harness.kill_provider_sim, 0.5)
            await _until_answering(sim)
            self.figures.kills.append(
                f"provider-sim SIGKILL with refunds in flight (answering again after "
                f"{time.monotonic() - began:.1f} s)"
            )

        restarter = asyncio.create_task(restart())
        await asyncio.gather(*(one(n, p) for n, p in enumerate(chosen)))
        if not started.is_set():
            started.set()
        await restarter
        await sim.post("/_sim/faults", {"refund_pending_rate": 0.0, "latency_ms": 0})
        rng = random.Random(f"{self.options.seed}/refunds")
        fail_later = {p.provider_payment_id for n, p in enumerate(chosen) if n % 5 == 4}
        for row in await sim.ledger():
            for r in row.get("refunds") or []:
                if r["status"] == "pending":
                    outcome = "succeeded" if rng.random() < 0.7 else "failed"
                    await sim.post(f"/_sim/refunds/{r['id']}/settle", {"outcome": outcome})
                    self.figures.refund_moves[f"pending settled {outcome}"] += 1
        for row in await sim.ledger():
            if row["id"] not in fail_later:
                continue
            for r in row.get("refunds") or []:
                if r["status"] == "succeeded":
                    await sim.post(f"/_sim/refunds/{r['id']}/fail", {})
                    self.failed_later.add(row["id"])
                    self.figures.refund_moves["succeeded then failed"] += 1

    async def run(self) -> tuple[list[Verdict], Verdict]:
        stack = self.harness.stack
        timeout = aiohttp.ClientTimeout(total=30)
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            grpc.aio.insecure_channel(stack.grpc_target, options=options) as channel,
        ):
            sim = Sim(http, stack.sim_url)
            await sim.post("/_sim/faults", SIM_FAULTS)
            callers = Callers(channel, self.options, self.figures)
            self.progress(
                f"{self.options.payments} payments at {self.options.rate:g}/s; faults at "
                f"payments {self.faults.kill_first_at}, {self.faults.crash_at}, "
                f"{self.faults.kill_second_at}"
            )
            injector = asyncio.create_task(self._inject(sim, callers))
            try:
                await self._load(callers)
                self.progress(f"load done in {self.figures.load_seconds:.1f}s; faults finishing")
                await injector
            finally:
                if not injector.done():
                    injector.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await injector
            await sim.post("/_sim/faults", API_FAULTS_OFF)
            await sim.quiesce(self.progress)
            await self._settle(sim)
            await sim.quiesce(self.progress)
            if self.options.refunds:
                await self._refunds(sim, channel, callers)
                await sim.quiesce(self.progress)
            # Callers ask for their payments before the pass: the states the
            # webhooks brought are told too, and the pass must not undo them.
            await callers.look_all(self.options.concurrency, self.options.seed)
            self.progress("one reconciliation pass (grace 0)")
            code, runs = await asyncio.to_thread(self.harness.reconcile_once)
            self.figures.reconciler_exit, self.figures.reconciler_runs = code, runs
            await sim.quiesce(self.progress)
            intents = [Intent.from_ledger(row) for row in await sim.ledger()]
            self.figures.webhooks = dict((await sim.get("/_sim/webhooks"))["stats"])
        ours = await _ours(stack.database_url)
        our_refunds = await _our_refunds(stack.database_url)
        await _extra_figures(stack.database_url, self.figures)
        verdicts = check_all(
            intents,
            ours,
            callers.told,
            self.crash,
            self.figures.reconciler_exit,
            refunds=our_refunds,
            undone=[p.payment_id for p in ours if p.provider_payment_id in self.failed_later],
        )
        return verdicts, callers.verdict(len(self.payments))


def run_soak(options: SoakOptions, progress: Progress) -> SoakReport:
    if options.payments < 10:
        raise SoakError("--payments must be at least 10 (three faults strike during the load)")
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="payments-soak-"))
    harness = Harness(root, options)
    try:
        progress(f"starting the stack in {root} (embedded Postgres)")
        try:
            harness.start()
            asyncio.run(wait_serving(harness.stack.grpc_target, 60))
            soak = Soak(options, harness, progress)
            verdicts, callers = asyncio.run(soak.run())
        except (
            RuntimeError,
            TimeoutError,
            OSError,
            subprocess.SubprocessError,
            aiohttp.ClientError,
            asyncpg.PostgresError,
        ) as exc:
            raise SoakError(
                f"the soak broke off: {describe_failure(exc)}; logs in {root / 'logs'}\n"
                + harness.log_tails()
            ) from exc
        report = SoakReport(options, verdicts, callers, soak.figures, 0.0, None)
    finally:
        harness.stop()
    report.seconds = time.monotonic() - began
    report.kept = _keep(root, options.keep_dir, failed=not report.passed)
    return report


def _keep(root: Path, keep_dir: Path | None, *, failed: bool) -> Path | None:
    """The logs and the database stay after a failed run, or when asked to."""
    if keep_dir is not None:
        keep_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root), keep_dir)
        return keep_dir
    if failed:
        return root
    shutil.rmtree(root, ignore_errors=True)
    return None
